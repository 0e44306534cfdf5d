// History rooms through @roomcast/client against real gateways and a nats-server
// with JetStream: a drain mid-stream where the application sees every message once,
// in order; history() and joining from it; recovered:false surfaced.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastClient } from '../../dist/index.js';
import { startNats, startGateway, httpPublish, until } from './cluster.mjs';

const HISTORY = ['--namespace', 'hist:history_size=10000'];
let nats, b;
const clients = [];
before(async () => {
  nats = await startNats();
  b = await startGateway({ name: 'hist-b', nats: nats.url, args: HISTORY });
});
after(async () => {
  for (const c of clients) c.close();
  await b?.kill();
  await nats?.stop();
});
function client(options) {
  const c = new RoomcastClient({ transports: ['websocket'], backoff: { baseMs: 50, maxMs: 500 }, ...options });
  clients.push(c);
  return c;
}

test('a drain mid-stream: the application sees every message once, in order, and recovered:true', { timeout: 60_000 }, async () => {
  const drained = await startGateway({ name: 'hist-a', nats: nats.url, args: HISTORY });
  let connects = 0;
  const c = client({ url: () => (connects++ === 0 ? drained.url : b.url) });
  const seen = [];
  c.on('message', (m) => seen.push(m.data));
  const rejoined = [];
  c.on('rejoined', (r) => rejoined.push(r));
  c.connect();
  assert.equal((await c.once('connected')).node, 'hist-a');
  const joined = await c.join('hist:stream');
  assert.equal(typeof joined.offset, 'number');
  assert.equal(typeof joined.epoch, 'string');
  let n = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      const r = await httpPublish(b, 'hist:stream', n + 1);
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(typeof r.body.offset, 'number');
      n += 1;
    }
  })();
  await until(() => seen.length >= 50, '50 messages before the drain');
  const gone = c.once('disconnected');
  await drained.drain();
  assert.equal((await gone).code, 1012);
  await until(() => rejoined.length === 1, 'the re-join on hist-b', 20_000);
  assert.equal(rejoined[0].recovered, true);
  const mark = n;
  await until(() => seen.length >= mark + 50, 'messages after the re-join', 20_000);
  publishing = false;
  await publisher;
  await until(() => seen.length >= n, `all ${n} messages`, 20_000);
  assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i + 1), 'every message once, in order');
  await drained.kill();
});

test('history(): the last messages, then a join from there replays what came after, once', { timeout: 30_000 }, async () => {
  for (let i = 1; i <= 5; i++) assert.equal((await httpPublish(b, 'hist:feed', `m${i}`)).status, 202);
  const c = client({ url: b.url });
  c.connect();
  const h = await c.history('hist:feed', { limit: 3 });
  assert.deepEqual(h.messages.map((m) => m.data), ['m3', 'm4', 'm5']);
  assert.equal(h.offset, h.messages.at(-1).offset);
  await httpPublish(b, 'hist:feed', 'm6'); // between the read and the join
  const seen = [];
  c.on('message', (m) => seen.push(m.data));
  const outcome = await c.join('hist:feed', { since: { offset: h.offset, epoch: h.epoch } });
  assert.equal(outcome.recovered, true);
  await httpPublish(b, 'hist:feed', 'm7');
  await until(() => seen.length === 2, 'm6 and m7');
  assert.deepEqual(seen, ['m6', 'm7']);
  await assert.rejects(c.history('lobby'), (e) => e.code === 'no_history');
});

test('a join from another epoch is recovered:false', { timeout: 30_000 }, async () => {
  await httpPublish(b, 'hist:epochs', 'x');
  const c = client({ url: b.url });
  c.connect();
  const outcome = await c.join('hist:epochs', { since: { offset: 1, epoch: 'not-this-epoch' } });
  assert.equal(outcome.recovered, false);
  assert.equal(typeof outcome.epoch, 'string');
});
