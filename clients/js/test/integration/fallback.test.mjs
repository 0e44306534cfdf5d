// @roomcast/client over the HTTP fallbacks against real gateways and nats-server:
// SSE and long polling forced, and the automatic fallback when WebSocket is blocked
// on the way (a WebSocket that never connects, as behind a proxy that drops upgrades).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastClient } from '../../dist/index.js';
import { startNats, startGateway, until } from './cluster.mjs';

let nats, a, b;
const clients = [];
before(async () => {
  nats = await startNats();
  [a, b] = await Promise.all([startGateway({ name: 'fb-a', nats: nats.url }), startGateway({ name: 'fb-b', nats: nats.url })]);
});
after(async () => {
  for (const c of clients) c.close();
  await Promise.all([a?.kill(), b?.kill()]);
  await nats?.stop();
});
function client(options) {
  const c = new RoomcastClient({ backoff: { baseMs: 50, maxMs: 500 }, ...options });
  clients.push(c);
  return c;
}

for (const transport of ['sse', 'poll']) {
  test(`${transport}: the same API (join, publish, presence, direct) across gateways`, { timeout: 30_000 }, async () => {
    const x = client({ url: a.url, transports: [transport] });
    const y = client({ url: b.url, transports: ['websocket'] });
    const got = [];
    x.on('message', (m) => got.push(m.data));
    const directs = [];
    x.on('direct', (d) => directs.push(d.data));
    x.connect();
    y.connect();
    const [wx, wy] = await Promise.all([x.once('connected'), y.once('connected')]);
    assert.equal(wx.transport, transport);
    await Promise.all([x.join(`fb-${transport}`), y.join(`fb-${transport}`)]);
    await y.publish(`fb-${transport}`, 'to the fallback');
    await x.publish(`fb-${transport}`, 'from the fallback');
    await until(() => got.length === 2, 'both messages');
    assert.deepEqual(got, ['to the fallback', 'from the fallback']);
    assert.deepEqual((await x.presence(`fb-${transport}`)).sort(), [wx.user, wy.user].sort());
    await y.send(wx.user, 'psst');
    await until(() => directs.length === 1, 'the direct message');
  });
}

test('a WebSocket blocked on the way: the client falls back to SSE by itself', { timeout: 30_000 }, async () => {
  // The gateway is reachable over HTTP but no WebSocket gets through.
  class Blocked {
    constructor() {
      setTimeout(() => this.onerror?.({}), 10);
    }
    close() {}
  }
  const c = client({ url: a.url, WebSocket: Blocked });
  const disconnects = [];
  c.on('disconnected', (d) => disconnects.push(d));
  c.connect();
  const w = await c.once('connected');
  assert.equal(w.transport, 'sse');
  assert.match(disconnects[0].reason, /websocket failed .*trying sse/);
  await c.join('fb-auto');
  assert.deepEqual(await c.presence('fb-auto'), [w.user]);
});

test('a drain ends a fallback session with close 1012; the client reconnects on the other gateway', { timeout: 30_000 }, async () => {
  const drained = await startGateway({ name: 'fb-c', nats: nats.url });
  let n = 0;
  const c = client({ url: () => (n++ === 0 ? drained.url : b.url), transports: ['poll'] });
  c.connect();
  assert.equal((await c.once('connected')).node, 'fb-c');
  await c.join('fb-drain');
  const back = c.once('connected');
  const gone = c.once('disconnected');
  await drained.drain();
  assert.equal((await gone).code, 1012);
  assert.equal((await back).node, 'fb-b');
  await until(async () => (await c.presence('fb-drain')).length === 1, 're-joined');
  await drained.kill();
});
