// The client's behaviour against a fake transport (the test plays the gateway):
// states, id matching, reconnects, re-joins with `since`, final codes, token
// refresh, transport fallback, keep-alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastClient } from '../../dist/index.js';
import { fakeNetwork, FAST, record, until } from './fake.mjs';

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims) => `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;

function client(net, extra = {}) {
  return new RoomcastClient({
    url: 'http://gw.test',
    transportFactories: net.factories,
    backoff: FAST,
    requestTimeoutMs: 500,
    pingIntervalMs: 0,
    ...extra,
  });
}

test('states as events, requests matched by id, errors by code', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net);
  const states = record(c, 'state');
  c.connect();
  const l = await net.link(0);
  assert.equal(c.state, 'connecting');
  l.welcome();
  assert.equal(c.state, 'connected');
  assert.equal(c.session.node, 'gw-0');
  const ping = c.ping();
  const presence = c.presence('lobby');
  const p1 = await l.next((f) => f.type === 'ping');
  const p2 = await l.next((f) => f.type === 'presence');
  l.ok(p2, { members: ['a', 'b'] }); // answered out of order
  l.ok(p1, { ts: 42 });
  assert.equal(await ping, 42);
  assert.deepEqual(await presence, ['a', 'b']);
  const pub = c.publish('x', 1);
  l.frame({ type: 'error', id: (await l.next((f) => f.type === 'publish')).id, code: 'forbidden', message: 'no' });
  await assert.rejects(pub, (e) => e.code === 'forbidden');
  const late = c.send('u2', 'hi');
  await assert.rejects(late, (e) => e.code === 'timeout');
  c.close();
  assert.deepEqual(states.map((s) => s.state), ['connecting', 'connected', 'closed']);
});

test('a drain: in-flight requests fail, rooms are re-joined with since, the replay is de-duplicated', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net);
  const messages = record(c, 'message');
  const rejoined = record(c, 'rejoined');
  const disconnected = record(c, 'disconnected');
  c.connect();
  const a = await net.link(0);
  a.welcome();
  const joining = c.join('chat:1');
  const join = await a.next((f) => f.type === 'join');
  assert.equal(join.since, undefined);
  a.ok(join, { offset: 2, epoch: 'E' });
  assert.deepEqual(await joining, { offset: 2, epoch: 'E' });
  for (const o of [3, 4, 5]) a.frame({ type: 'message', room: 'chat:1', from: 'u9', data: o, offset: o, epoch: 'E' });
  const inflight = c.ping();
  await a.next((f) => f.type === 'ping');
  a.drop(1012);
  await assert.rejects(inflight, (e) => e.code === 'disconnected');
  assert.equal(c.state, 'disconnected');
  assert.equal(disconnected[0].code, 1012);
  const queued = c.publish('chat:1', 'while away'); // waits for the next link
  const b = await net.link(1);
  b.welcome();
  const rejoin = await b.next((f) => f.type === 'join');
  assert.deepEqual(rejoin.since, { offset: 5, epoch: 'E' });
  // The replay overlaps what arrived live (5), then continues.
  for (const o of [5, 6, 7]) b.frame({ type: 'message', room: 'chat:1', from: 'u9', data: o, offset: o, epoch: 'E' });
  b.ok(rejoin, { offset: 7, epoch: 'E', recovered: true });
  b.frame({ type: 'message', room: 'chat:1', from: 'u9', data: 8, offset: 8, epoch: 'E' });
  const pub = await b.next((f) => f.type === 'publish');
  b.ok(pub, { offset: 9, epoch: 'E' });
  assert.deepEqual(await queued, { offset: 9, epoch: 'E' });
  assert.deepEqual(messages.map((m) => m.data), [3, 4, 5, 6, 7, 8], 'each message once, in order');
  assert.deepEqual(rejoined, [{ room: 'chat:1', offset: 7, epoch: 'E', recovered: true }]);
  c.close();
});

test('recovered:false is surfaced; rooms without history re-join plainly', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net);
  const rejoined = record(c, 'rejoined');
  c.connect();
  const a = await net.link(0);
  a.welcome();
  const j1 = c.join('chat:1');
  const j2 = c.join('lobby', { presence: true });
  a.ok(await a.next((f) => f.type === 'join' && f.room === 'chat:1'), { offset: 10, epoch: 'E' });
  a.ok(await a.next((f) => f.type === 'join' && f.room === 'lobby'));
  await Promise.all([j1, j2]);
  a.drop(1006);
  const b = await net.link(1);
  b.welcome();
  const r1 = await b.next((f) => f.type === 'join' && f.room === 'chat:1');
  const r2 = await b.next((f) => f.type === 'join' && f.room === 'lobby');
  assert.deepEqual(r1.since, { offset: 10, epoch: 'E' });
  assert.deepEqual({ ...r2, id: 0 }, { type: 'join', room: 'lobby', presence: true, id: 0 });
  b.ok(r1, { offset: 3, epoch: 'F', recovered: false });
  b.ok(r2);
  await until(() => rejoined.length === 2, 'two rejoins');
  assert.deepEqual(rejoined[0], { room: 'chat:1', offset: 3, epoch: 'F', recovered: false });
  assert.deepEqual(rejoined[1], { room: 'lobby' });
  c.close();
});

test('final codes do not loop: 4003, 1008, 401 at the upgrade, 403', { timeout: 5000 }, async () => {
  for (const [how, expect, welcomed] of [
    [(l) => l.drop(4003), 4003, true],
    [(l) => l.drop(1008), 1008, true],
    [(l) => l.refuse(401), 4001, false],
    [(l) => l.refuse(403), 1008, false],
  ]) {
    const net = fakeNetwork();
    const c = client(net, { token: 'fixed' });
    const closed = record(c, 'closed');
    const joining = c.join('lobby');
    c.connect();
    const l = await net.link(0);
    if (welcomed) l.welcome();
    how(l);
    assert.equal(c.state, 'closed');
    assert.equal(closed[0].code, expect);
    await assert.rejects(joining, (e) => e.code === 'closed');
    await new Promise((r) => setTimeout(r, 60)); // several backoff periods (FAST: <= 20 ms)
    assert.equal(net.links.length, 1, 'no reconnect');
  }
});

test('4001 and a refused token ask the callback for a new one; a fixed token stops', { timeout: 5000 }, async () => {
  let n = 0;
  const net = fakeNetwork();
  const c = client(net, { token: () => `t${++n}` });
  c.connect();
  const a = await net.link(0);
  assert.equal(a.context.token(), 't1');
  a.welcome();
  a.drop(4001);
  const b = await net.link(1);
  assert.equal(b.context.token(), 't2');
  b.refuse(401); // a refused token: asked once more
  const d = await net.link(2);
  assert.equal(d.context.token(), 't3');
  d.refuse(401); // refused again: stop
  assert.equal(c.state, 'closed');

  const fixed = fakeNetwork();
  const f = client(fixed, { token: 'fixed' });
  const closed = record(f, 'closed');
  f.connect();
  const l = await fixed.link(0);
  l.welcome();
  l.drop(4001);
  assert.equal(closed[0].code, 4001);
});

test('the token is refreshed before expiry with a refresh frame, without reconnecting', { timeout: 8000 }, async () => {
  const now = Math.floor(Date.now() / 1000);
  let n = 0;
  const tokens = [jwt({ sub: 'u', exp: now + 2 }), jwt({ sub: 'u', exp: now + 3600 })];
  const net = fakeNetwork();
  const c = client(net, { token: () => tokens[n++] });
  const refreshed = record(c, 'token');
  c.connect();
  const l = await net.link(0);
  l.welcome();
  const refresh = await l.next((f) => f.type === 'refresh');
  assert.equal(refresh.token, tokens[1]);
  l.ok(refresh, { exp: now + 3600 });
  await until(() => refreshed.length === 1, 'token event');
  assert.equal(refreshed[0].exp, now + 3600);
  assert.equal(l.context.token(), tokens[1], 'later session requests carry the new token');
  assert.equal(net.links.length, 1);
  c.close();
});

test('transport fallback: WebSocket blocked on the way -> SSE -> long polling; unreachable backs off', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net);
  c.connect();
  (await net.link(0)).refuse(400); // the gateway answers HTTP, the WebSocket did not get through
  const sse = await net.link(1);
  assert.equal(sse.name, 'sse');
  sse.refuse(400);
  const poll = await net.link(2);
  assert.equal(poll.name, 'poll');
  poll.welcome();
  assert.equal(c.session.transport, 'poll');
  poll.drop(1012);
  const again = await net.link(3);
  assert.equal(again.name, 'websocket', 'a reconnect tries the preferred transport first');
  again.refuse(null); // nothing answers: back off, same order
  const after = await net.link(4);
  assert.equal(after.name, 'websocket');
  c.close();

  const forced = fakeNetwork();
  const f = client(forced, { transports: ['sse'] });
  f.connect();
  assert.equal((await forced.link(0)).name, 'sse');
  f.close();
});

test('a missing ping answer closes the link and reconnects', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net, { pingIntervalMs: 30, requestTimeoutMs: 60 });
  c.connect();
  const a = await net.link(0);
  a.welcome();
  const ping = await a.next((f) => f.type === 'ping');
  assert.ok(ping.id);
  const b = await net.link(1); // no answer: the link is given up
  assert.ok(a.closed);
  b.welcome();
  const p2 = await b.next((f) => f.type === 'ping');
  b.ok(p2, { ts: 1 });
  assert.equal(c.state, 'connected');
  c.close();
});

test('server-side unsubscribe and refused re-joins stop re-joining the room', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net);
  const unsub = record(c, 'unsubscribed');
  const errors = record(c, 'error');
  c.connect();
  const a = await net.link(0);
  a.welcome();
  const j = c.join('a');
  a.ok(await a.next((f) => f.type === 'join'));
  await j;
  const k = c.join('b');
  a.ok(await a.next((f) => f.type === 'join' && f.room === 'b'));
  await k;
  a.frame({ type: 'unsubscribed', room: 'a' });
  assert.deepEqual(unsub, [{ room: 'a' }]);
  assert.deepEqual(c.rooms, ['b']);
  a.drop(1006);
  const b = await net.link(1);
  b.welcome();
  const rejoin = await b.next((f) => f.type === 'join');
  assert.equal(rejoin.room, 'b');
  b.frame({ type: 'error', id: rejoin.id, code: 'forbidden', message: 'not any more' });
  await until(() => errors.length === 1, 'error event');
  assert.equal(errors[0].room, 'b');
  assert.deepEqual(c.rooms, []);
  c.close();
});

test('backoff grows while connecting fails and resets after a drain', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net, { random: () => 0.999, backoff: { baseMs: 4, maxMs: 16, stableAfterMs: 10_000, drainJitterMs: 2 } });
  const delays = [];
  c.on('disconnected', (d) => delays.push(d.reconnectInMs));
  c.connect();
  for (let i = 0; i < 4; i++) (await net.link(i)).refuse(null);
  const l = await net.link(4);
  l.welcome();
  l.drop(1012);
  await net.link(5);
  assert.deepEqual(delays, [3, 7, 15, 15, 1]);
  c.close();
});

test('a re-join refused for a transient reason (bus not ready) is retried; the room is kept', { timeout: 5000 }, async () => {
  const net = fakeNetwork();
  const c = client(net);
  const rejoined = record(c, 'rejoined');
  const errors = record(c, 'error');
  c.connect();
  const a = await net.link(0);
  a.welcome();
  const j = c.join('lobby');
  a.ok(await a.next((f) => f.type === 'join'));
  await j;
  a.drop(1012);
  const b = await net.link(1);
  b.welcome();
  const first = await b.next((f) => f.type === 'join');
  b.frame({ type: 'error', id: first.id, code: 'unavailable', message: 'the cluster bus is unavailable' });
  const again = await b.next((f) => f.type === 'join' && f.id !== first.id);
  b.ok(again);
  await until(() => rejoined.length === 1, 'the re-join');
  assert.equal(errors[0].error.code, 'unavailable');
  assert.deepEqual(c.rooms, ['lobby']);
  // A first join answered `unavailable` stays pending until it succeeds.
  const k = c.join('other');
  const other = await b.next((f) => f.type === 'join' && f.room === 'other');
  b.frame({ type: 'error', id: other.id, code: 'unavailable', message: 'x' });
  const other2 = await b.next((f) => f.type === 'join' && f.room === 'other' && f.id !== other.id);
  b.ok(other2);
  await k;
  c.close();
});
