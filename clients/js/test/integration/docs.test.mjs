// docs/client.md's Node example, as written, from the packed tarball installed
// into a scratch project, against a real gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway } from './cluster.mjs';
import { example, installPacked } from '../docs.mjs';

let gateway, dir;
before(async () => {
  gateway = await startGateway({ name: 'docs-node' });
  dir = installPacked();
});
after(async () => {
  await gateway?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the Node example of docs/client.md runs as written from the npm tarball', { timeout: 90_000 }, async () => {
  writeFileSync(join(dir, 'hello.mjs'), example('node', gateway.url));
  // As the reader runs it: with the flag Node 20 needs when this test has it.
  const flags = process.execArgv.filter((a) => a === '--experimental-websocket');
  const out = await new Promise((resolve, reject) =>
    execFile('node', [...flags, 'hello.mjs'], { cwd: dir, timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
  for (const line of ['state: connecting', 'state: connected', 'connected to docs-node as', 'via websocket',
    '#lobby: hello from Node', 'published {}', 'in the room: [', 'state: closed']) {
    assert.ok(out.includes(line), `output has ${JSON.stringify(line)}:\n${out}`);
  }
});
