// The demo page (gateway/src/demo/index.html) in real headless Chromium, against a running
// gateway: display names (messages and presence), the composer's explicit room, and a planned
// drain (1012) reading as "gateway restarting, reconnecting". Run by scripts/check-demo.
// Usage: node check.js <public URL> <admin URL> <screenshot dir>
'use strict';
const puppeteer = require('puppeteer-core');

const [base, admin, shots] = process.argv.slice(2);
const STEP_MS = 15000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The log as lines: one per entry, its parts joined by spaces.
function logText(page) {
  return page.$$eval('#log .entry', (es) =>
    es.map((e) => Array.from(e.children).map((c) => c.textContent).join(' ')).join('\n'));
}
async function waitLog(page, needle) {
  const until = Date.now() + STEP_MS;
  while (Date.now() < until) {
    if ((await logText(page)).includes(needle)) return (await logText(page)).split('\n').find((l) => l.includes(needle));
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${JSON.stringify(needle)} in:\n${await logText(page)}`);
}
function check(ok, what) {
  if (!ok) throw new Error(what);
  console.log('ok  ', what);
}
async function typeInto(page, selector, text) {
  await page.$eval(selector, (e) => { e.value = ''; });
  await page.type(selector, text);
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  try {
    const open = async (name) => {
      const page = await browser.newPage();
      await page.setViewport({ width: 1100, height: 700 });
      await page.goto(`${base}/?name=${name}`);
      await waitLog(page, 'joined #lobby');
      return page;
    };
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
    check(await alice.$eval('#target', (e) => e.value) === 'other', 'the composer shows its room (#other)');
    await alice.type('#text', 'hello other');
    await alice.click('#send');
    const seen = await waitLog(bob, 'hello other');
    check(seen.includes('#other') && seen.includes('alice'), `bob got it in #other from "alice": ${seen}`);

    await bob.bringToFront();
    await bob.type('#text', 'hi alice');
    await bob.click('#send');
    await waitLog(alice, 'hi alice');
    await alice.bringToFront();
    await typeInto(alice, '#room', 'other');
    await alice.click('#who');
    const who = await waitLog(alice, 'in #other (2)');
    check(who.includes('alice (you)') && who.includes('bob') && !/[0-9a-f]{32}/.test(who), `presence by name: ${who}`);
    await alice.screenshot({ path: `${shots}/demo-chat.png` });

    const drained = await fetch(`${admin}/drain`, { method: 'POST' });
    check(drained.status === 202, 'POST /drain answered 202');
    await waitLog(alice, 'gateway restarting, reconnecting');
    await sleep(3000); // a few reconnects, refused by the lone draining gateway
    const red = await alice.$$eval('.entry.err', (es) => es.map((e) => e.textContent));
    check(!red.some((t) => t.includes('unreachable')), 'no red "unreachable" line after the drain');
    const state = await alice.$eval('#state', (e) => e.textContent);
    check(state.startsWith('gateway restarting'), `header: ${state}`);
    await alice.screenshot({ path: `${shots}/demo-drain.png` });
    console.log(`demo checks passed; screenshots in ${shots}`);
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error('FAIL', e.message);
  process.exit(1);
});
