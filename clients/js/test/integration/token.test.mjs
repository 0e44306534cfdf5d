// Tokens through @roomcast/client against a real gateway with JWT verification:
// a short-lived token refreshed before it expires without reconnecting, and the
// server API's disconnect (4003) is final.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { RoomcastClient } from '../../dist/index.js';
import { startGateway } from './cluster.mjs';

const SECRET = 'sdk-token-test-secret-0123456789abcdef';
const API_KEY = 'sdk-api-key';
let gw;
before(async () => {
  gw = await startGateway({ name: 'tok', args: ['--auth-jwt-secret', SECRET, '--auth-api-key', API_KEY] });
});
after(async () => {
  await gw?.kill();
});

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

test('a 3 s token is refreshed before it expires, on the same session', { timeout: 30_000 }, async () => {
  let minted = 0;
  const c = new RoomcastClient({
    url: gw.url,
    transports: ['websocket'],
    token: () => {
      minted += 1;
      return jwt({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3 });
    },
  });
  const disconnects = [];
  c.on('disconnected', (d) => disconnects.push(d));
  c.connect();
  const w = await c.once('connected');
  assert.equal(w.user, 'alice');
  const refreshed = [];
  c.on('token', (t) => refreshed.push(t));
  // Past two original lifetimes: each token was replaced before its exp (no 4001).
  await new Promise((r) => setTimeout(r, 7_000));
  assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
  assert.deepEqual(disconnects, []);
  assert.equal(c.session.session, w.session, 'the same session');
  assert.ok(minted >= 3);
  c.close();
});

test('POST /v1/disconnect closes with 4003: final, no reconnect', { timeout: 30_000 }, async () => {
  const c = new RoomcastClient({ url: gw.url, transports: ['websocket'], token: () => jwt({ sub: 'bob', exp: Math.floor(Date.now() / 1000) + 600 }) });
  c.connect();
  await c.once('connected');
  const closed = c.once('closed');
  const res = await fetch(`${gw.url}/v1/disconnect`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: 'bob' }),
  });
  assert.equal(res.status, 202);
  assert.equal((await closed).code, 4003);
  assert.equal(c.state, 'closed');
});
