// docs/client.md's browser example, as written: bundled with esbuild from the packed
// package installed into a scratch project, served from its own origin, in Chromium,
// against a real gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import puppeteer from 'puppeteer-core';
import { startGateway } from '../integration/cluster.mjs';
import { example, installPacked } from '../docs.mjs';

let gateway, dir, server, browser;
before(async () => {
  gateway = await startGateway({ name: 'docs-browser' });
  dir = installPacked();
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
});
after(async () => {
  await browser?.close();
  server?.close();
  await gateway?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the browser example of docs/client.md works as written', { timeout: 90_000 }, async () => {
  writeFileSync(join(dir, 'app.js'), example('browser', gateway.url));
  writeFileSync(join(dir, 'index.html'), '<!doctype html>\n<ul id="log"></ul>\n<script type="module" src="bundle.js"></script>\n');
  await build({ entryPoints: [join(dir, 'app.js')], bundle: true, format: 'esm', outfile: join(dir, 'bundle.js'), absWorkingDir: dir, logLevel: 'error' });
  server = createServer((req, res) => {
    const file = req.url === '/' ? 'index.html' : req.url.slice(1);
    if (!['index.html', 'bundle.js'].includes(file)) return res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': file.endsWith('.js') ? 'text/javascript' : 'text/html' });
    res.end(readFileSync(join(dir, file)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('#lobby hello from the browser'), { timeout: 15_000 });
  const lines = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(lines.slice(0, 2), ['state: connecting', 'state: connected']);
  assert.ok(lines.includes('#lobby hello from the browser'), lines.join('\n'));
  assert.deepEqual(errors, []);
});
