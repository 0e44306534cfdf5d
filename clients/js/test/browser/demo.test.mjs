// The demo page (gateway/src/demo/, built on @roomcast/client) in real headless Chromium
// against a real gateway and nats-server: display names, the composer's room, presence,
// a drain reading as a restart, and two pages chatting across a gateway restart without
// a reload. Needs Debian's chromium (CHROMIUM=/path overrides); run by scripts/check-demo.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';
import { startNats, startGateway } from '../integration/cluster.mjs';

const STEP_MS = 20_000;
const SHOTS = process.env.DEMO_SHOTS || '';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nats, gateway, browser;

before(async () => {
  nats = await startNats();
  gateway = await startGateway({ name: 'demo-a', nats: nats.url, args: ['--namespace', 'chat:history_size=100'] });
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
});
after(async () => {
  await browser?.close();
  await gateway?.kill();
  await nats?.stop();
});

// The log as lines: one per entry, its parts joined by spaces.
function logText(page) {
  return page.$$eval('#log .entry', (es) =>
    es.map((e) => Array.from(e.children).map((c) => c.textContent).join(' ')).join('\n'));
}
async function waitLog(page, needle, from = 0) {
  const until = Date.now() + STEP_MS;
  while (Date.now() < until) {
    const lines = (await logText(page)).split('\n').slice(from);
    const found = lines.find((l) => [].concat(needle).every((n) => l.includes(n)));
    if (found) return found;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${JSON.stringify(needle)} in:\n${await logText(page)}`);
}
async function logLength(page) {
  return page.$$eval('#log .entry', (es) => es.length);
}
async function typeInto(page, selector, text) {
  await page.$eval(selector, (e) => { e.value = ''; });
  await page.type(selector, text);
}
async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png` });
}
async function open(name, room = 'lobby') {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  await page.setViewport({ width: 1100, height: 700 });
  await page.goto(`${gateway.url}/?name=${name}&room=${room}`);
  await waitLog(page, `joined #${room}`);
  // A reload would lose this: its presence at the end proves the page recovered in place.
  await page.evaluate(() => { window.notReloaded = true; });
  return page;
}

test('two pages chat by name, in the composer\'s room, and see presence', { timeout: 60_000 }, async () => {
  const alice = await open('alice');
  const bob = await open('bob');
  for (const page of [alice, bob]) {
    await page.bringToFront();
    await typeInto(page, '#room', 'other');
    await page.click('#join');
    await waitLog(page, 'joined #other');
  }
  await alice.bringToFront();
  await typeInto(alice, '#room', 'lobby'); // typed, not joined: must not redirect the composer
  assert.equal(await alice.$eval('#target', (e) => e.value), 'other', 'the composer shows its room (#other)');
  await alice.type('#text', 'hello other');
  await alice.click('#send');
  const seen = await waitLog(bob, 'hello other');
  assert.ok(seen.includes('#other') && seen.includes('alice'), `bob got it in #other from "alice": ${seen}`);
  await bob.bringToFront();
  await bob.type('#text', 'hi alice');
  await bob.click('#send');
  await waitLog(alice, 'hi alice');
  await alice.bringToFront();
  await typeInto(alice, '#room', 'other');
  await alice.click('#who');
  const who = await waitLog(alice, 'in #other (2)');
  assert.ok(who.includes('alice (you)') && who.includes('bob') && !/[0-9a-f]{32}/.test(who), `presence by name: ${who}`);
  // Presence events (join with presence:true): bob's arrival, then his departure by name.
  await waitLog(alice, ['presence: ', ' joined #other']);
  assert.equal(await alice.$eval('#via', (e) => e.textContent), 'websocket');
  await shot(alice, 'demo-chat');
  await bob.close();
  await waitLog(alice, 'presence: bob left #other');
  await alice.close();
});

test('a gateway restart: both pages read it as a restart, reconnect, re-join and chat on, without a reload', { timeout: 90_000 }, async () => {
  const alice = await open('alice', 'chat:demo');
  const bob = await open('bob', 'chat:demo');
  await alice.bringToFront();
  await alice.type('#text', 'before the restart');
  await alice.click('#send');
  await waitLog(bob, 'before the restart');
  const marks = [await logLength(alice), await logLength(bob)];

  await gateway.drain(); // POST /drain answered 202: 1012 to both pages
  await waitLog(alice, 'gateway restarting, reconnecting', marks[0]);
  await waitLog(bob, 'gateway restarting, reconnecting', marks[1]);
  await gateway.stop(); // SIGTERM: the process exits
  await sleep(1500); // a few reconnects refused while no gateway listens
  const red = await alice.$$eval('.entry.err', (es) => es.map((e) => e.textContent));
  assert.ok(!red.some((t) => t.includes('unreachable') || t.includes('closed 1006')), `no red error line for the restart: ${red}`);
  const state = await alice.$eval('#state', (e) => e.textContent);
  assert.ok(state.startsWith('gateway restarting'), `header: ${state}`);
  await shot(alice, 'demo-restarting');

  gateway = await startGateway({ name: 'demo-b', nats: nats.url, listen: gateway.listen, args: ['--namespace', 'chat:history_size=100'] });
  for (const [page, mark] of [[alice, marks[0]], [bob, marks[1]]]) {
    await waitLog(page, 'reconnected after the restart: node demo-b', mark);
    await waitLog(page, 'rejoined #chat:demo', mark);
  }
  await alice.bringToFront();
  await alice.type('#text', 'hello again');
  await alice.click('#send');
  const got = await waitLog(bob, 'hello again', marks[1]);
  assert.ok(got.includes('alice'), got);
  await bob.bringToFront();
  await bob.type('#text', 'still here');
  await bob.click('#send');
  await waitLog(alice, 'still here', marks[0]);
  for (const page of [alice, bob]) {
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'recovered without a reload');
    assert.equal(await page.$eval('#state', (e) => e.textContent), 'connected');
  }
  await shot(alice, 'demo-recovered');
});
