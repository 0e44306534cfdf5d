// The examples of docs/client.md, run as written: the code block after an
// `<!-- example: NAME` marker, and the package as a user gets it (`npm pack`,
// then `npm install` of the tarball into a scratch project).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE = fileURLToPath(new URL('..', import.meta.url));
const DOC = fileURLToPath(new URL('../../../docs/client.md', import.meta.url));
export const DOC_URL = 'http://127.0.0.1:8080';

/** The code of example `name`, with the doc's gateway URL replaced by `url`. */
export function example(name, url) {
  const text = readFileSync(DOC, 'utf8');
  const at = text.indexOf(`<!-- example: ${name}`);
  if (at < 0) throw new Error(`docs/client.md has no example ${name}`);
  const block = /```js\n([\s\S]*?)```/.exec(text.slice(at));
  if (!block || !block[1].includes(DOC_URL)) throw new Error(`example ${name} does not use ${DOC_URL}`);
  return block[1].replaceAll(DOC_URL, url);
}

/** A scratch project with the packed package installed; returns its directory. */
export function installPacked() {
  const dir = mkdtempSync(join(tmpdir(), 'roomcast-client-user-'));
  const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  run('npm', ['pack', '--silent', '--pack-destination', dir], PACKAGE);
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'user-app', private: true, type: 'module' }));
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--silent', `./${tarball}`], dir);
  return dir;
}
