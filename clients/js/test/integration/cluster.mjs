// Real processes for the integration tests: a nats-server (from .tools/bin,
// installed by scripts/install-deps) and roomcast-gateway binaries (from
// $CARGO_TARGET_DIR, built by `make test`), on ports chosen by the OS.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('../../../..', import.meta.url)));
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
export const GATEWAY = process.env.ROOMCAST_GATEWAY || join(TARGET, 'debug', 'roomcast-gateway');
const NATS = process.env.NATS_SERVER || join(ROOT, '.tools', 'bin', 'nats-server');
const BOOT_MS = 15_000;

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export async function until(pred, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function track(child, name) {
  children.add(child);
  let log = '';
  child.stdout?.on('data', (d) => (log += d));
  child.stderr?.on('data', (d) => (log += d));
  const exited = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  // A binary that is not there: say so in the log (the start-up wait reports it).
  child.on('error', (e) => {
    log += `cannot start ${name}: ${e.message}\n`;
    children.delete(child);
  });
  exited.then(() => children.delete(child));
  return { log: () => log, exited, name };
}

/** A nats-server with JetStream (the history store) on a free port. */
export async function startNats() {
  const dir = mkdtempSync(join(tmpdir(), 'roomcast-js-nats-'));
  const child = spawn(NATS, ['-a', '127.0.0.1', '-p', '-1', '-js', '--store_dir', join(dir, 'js'), '--ports_file_dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const t = track(child, 'nats-server');
  const ports = await until(() => {
    if (child.exitCode !== null) throw new Error(`nats-server exited:\n${t.log()}`);
    const file = readdirSync(dir).find((f) => f.endsWith('.ports'));
    if (!file) return null;
    try {
      return JSON.parse(readFileSync(join(dir, file), 'utf8'));
    } catch {
      return null;
    }
  }, 'nats-server ports file', BOOT_MS);
  return {
    url: ports.nats[0],
    async stop() {
      child.kill('SIGKILL');
      await t.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A gateway process. `listen` fixes its public address (a restart on the same
 * port); by default the OS picks one.
 */
export async function startGateway({ name, nats, listen = '127.0.0.1:0', args = [] }) {
  const argv = ['--listen', listen, '--admin-listen', '127.0.0.1:0', '--node-name', name, '--drain-seconds', '1', ...args];
  if (nats) argv.push('--nats-url', nats);
  const child = spawn(GATEWAY, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const t = track(child, name);
  const line = await until(() => {
    if (child.exitCode !== null || t.log().startsWith('cannot start')) throw new Error(`${name} exited:\n${t.log()}`);
    return /listening public=(\S+) admin=(\S+)\s/.exec(t.log());
  }, `${name} to listen`, BOOT_MS);
  const [, pub, admin] = line;
  // Ready once its bus is connected: before that, publishes answer `unavailable`.
  await until(async () => (await fetch(`http://${admin}/readyz`).catch(() => null))?.status === 200, `${name} to be ready`, BOOT_MS);
  return {
    name,
    url: `http://${pub}`,
    listen: pub,
    admin: `http://${admin}`,
    log: t.log,
    /** POST /drain: 1012 to every client, spread over --drain-seconds. */
    async drain() {
      const res = await fetch(`http://${admin}/drain`, { method: 'POST' });
      if (res.status !== 202) throw new Error(`drain answered ${res.status}`);
    },
    /** SIGTERM (drain, then exit) and wait for the exit. */
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await t.exited;
      clearTimeout(timer);
    },
    async kill() {
      child.kill('SIGKILL');
      await t.exited;
    },
  };
}

/** POST /v1/publish on a gateway; resolves with the parsed answer. */
export async function httpPublish(gateway, room, data) {
  const res = await fetch(`${gateway.url}/v1/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ room, data }),
    signal: AbortSignal.timeout(5000),
  });
  const body = await res.json().catch(() => ({}));
  return { status: res.status, body };
}
