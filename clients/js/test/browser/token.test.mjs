// The demo page with a short-lived token (`?token_url=`): it refreshes the token before it
// expires, on the same session, in headless Chromium against a gateway verifying JWTs.
// The token URL is answered by the test (request interception), as an app's backend would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import puppeteer from 'puppeteer-core';
import { startGateway } from '../integration/cluster.mjs';

const SECRET = 'demo-token-test-secret-0123456789abcdef';
let gateway, browser;
before(async () => {
  gateway = await startGateway({ name: 'demo-jwt', args: ['--auth-jwt-secret', SECRET] });
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
});
after(async () => {
  await browser?.close();
  await gateway?.kill();
});

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

test('a 6 s token given by token_url is refreshed before it expires, without reconnecting', { timeout: 60_000 }, async () => {
  const page = await browser.newPage();
  let minted = 0;
  await page.setRequestInterception(true);
  page.on('request', (req) => {
    if (new URL(req.url()).pathname !== '/app/token') return req.continue();
    minted += 1;
    req.respond({ status: 200, contentType: 'text/plain', body: jwt({ sub: 'carol', exp: Math.floor(Date.now() / 1000) + 6 }) });
  });
  await page.goto(`${gateway.url}/?name=carol&token_url=/app/token`);
  const log = () => page.$$eval('#log .entry', (es) => es.map((e) => e.textContent).join('\n'));
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('joined #lobby'), { timeout: 15_000 });
  const session = await page.$eval('#session', (e) => e.textContent);
  // Refreshed twice (each a third of the token's life, about 2 s, before
  // it expires), and never closed with 4001 meanwhile.
  await page.waitForFunction(
    () => (document.getElementById('log').textContent.match(/token refreshed without reconnecting/g) || []).length >= 2,
    { timeout: 30_000 },
  );
  const text = await log();
  assert.ok((text.match(/token refreshed without reconnecting/g) || []).length >= 2, text);
  assert.ok(!text.includes('4001') && !text.includes('closed'), text);
  assert.equal(await page.$eval('#session', (e) => e.textContent), session, 'the same session');
  assert.equal(await page.$eval('#user', (e) => e.title), 'carol');
  assert.ok(minted >= 3);
});
