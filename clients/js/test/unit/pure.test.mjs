// The client's pure decisions: backoff, close codes, state machine, id matching, room book, tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoffDelay, nextRetry, attemptAfterConnection, DEFAULT_BACKOFF,
  decideClose, decideUpgradeFailure, transition, PendingRequests, RoomBook, tokenExpiry, refreshDelay,
} from '../../dist/index.js';

test('backoff: full jitter under an exponential ceiling, capped', () => {
  const o = { ...DEFAULT_BACKOFF, baseMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, o, () => 0), 0);
  assert.equal(backoffDelay(0, o, () => 0.999999), 99);
  assert.equal(backoffDelay(3, o, () => 0.5), 400);
  assert.equal(backoffDelay(4, o, () => 0.999999), 999, 'ceiling 1000 (not 1600)');
  assert.equal(backoffDelay(1e9, o, () => 0.5), 500, 'huge attempt counts stay finite');
  for (let a = 0; a < 40; a++) {
    const d = backoffDelay(a, o, Math.random);
    assert.ok(d >= 0 && d < Math.min(1000, 100 * 2 ** a), `attempt ${a}: ${d}`);
  }
});

test('backoff: a drain retries promptly and resets; others count up; stable connections reset', () => {
  const o = { ...DEFAULT_BACKOFF, drainJitterMs: 1000 };
  assert.deepEqual(nextRetry(7, true, o, () => 0.5), { delayMs: 500, attempt: 0 });
  assert.deepEqual(nextRetry(2, false, o, () => 0.5), { delayMs: 1000, attempt: 3 });
  assert.equal(attemptAfterConnection(5, 9_999, o), 5);
  assert.equal(attemptAfterConnection(5, 10_000, o), 0);
});

test('close codes: final ones stop, 4001 needs a callback, the rest reconnect', () => {
  assert.equal(decideClose(1012, false), 'reconnect-drain');
  assert.equal(decideClose(4001, true), 'reconnect-new-token');
  assert.equal(decideClose(4001, false), 'final');
  assert.equal(decideClose(4003, true), 'final');
  assert.equal(decideClose(1008, true), 'final');
  for (const code of [1000, 1006, 1009, 1011, 4008]) assert.equal(decideClose(code, true), 'reconnect', String(code));
  assert.equal(decideUpgradeFailure(401), 'unauthorized');
  assert.equal(decideUpgradeFailure(403), 'forbidden');
  assert.equal(decideUpgradeFailure(503), 'busy');
  assert.equal(decideUpgradeFailure(null), 'unreachable');
  assert.equal(decideUpgradeFailure(400), 'fallback', 'the gateway answers HTTP: the WebSocket was blocked on the way');
  assert.equal(decideUpgradeFailure(426), 'fallback');
  assert.equal(decideUpgradeFailure(502), 'unreachable');
});

test('state machine', () => {
  assert.equal(transition('disconnected', 'connect'), 'connecting');
  assert.equal(transition('connecting', 'welcome'), 'connected');
  assert.equal(transition('connected', 'lost'), 'disconnected');
  assert.equal(transition('connecting', 'lost'), 'disconnected');
  assert.equal(transition('connected', 'final'), 'closed');
  assert.equal(transition('disconnected', 'close'), 'closed');
  assert.equal(transition('closed', 'connect'), 'connecting');
  assert.equal(transition('closed', 'lost'), null);
  assert.equal(transition('closed', 'close'), null);
  assert.equal(transition('connected', 'connect'), null);
  assert.equal(transition('disconnected', 'welcome'), null);
});

test('id matching: ok resolves, error rejects with its code, unknown ids are not ours, timeouts reject', async () => {
  const p = new PendingRequests();
  const a = p.open(1000);
  const b = p.open(1000);
  assert.notEqual(a.id, b.id);
  assert.equal(p.settle({ type: 'ok', id: 999 }), false);
  assert.equal(p.settle({ type: 'ok', id: '1' }), false, 'string ids are not the client\'s');
  assert.equal(p.settle({ type: 'error', id: b.id, code: 'forbidden', message: 'no' }), true);
  assert.equal(p.settle({ type: 'ok', id: a.id, members: ['x'] }), true);
  assert.deepEqual((await a.answer).members, ['x']);
  await assert.rejects(b.answer, (e) => e.code === 'forbidden');
  assert.equal(p.settle({ type: 'ok', id: a.id }), false, 'answered once');
  const c = p.open(20);
  await assert.rejects(c.answer, (e) => e.code === 'timeout');
  assert.equal(p.size, 0);
  const d = p.open(1000);
  p.failAll(Object.assign(new Error('x'), { code: 'disconnected' }));
  await assert.rejects(d.answer, (e) => e.code === 'disconnected');
});

test('room book: since after history, duplicates dropped, epochs reset, left rooms dropped', () => {
  const book = new RoomBook();
  book.want('chat:1', { presence: true });
  assert.deepEqual(book.joinFrame('chat:1'), { type: 'join', room: 'chat:1', presence: true });
  assert.deepEqual(book.joined('chat:1', { offset: 4, epoch: 'e1' }, false), { offset: 4, epoch: 'e1' });
  assert.equal(book.accept({ room: 'chat:1', offset: 4, epoch: 'e1' }), false, 'at the join offset: already before us');
  assert.equal(book.accept({ room: 'chat:1', offset: 6, epoch: 'e1' }), true);
  assert.deepEqual(book.joinFrame('chat:1').since, { offset: 6, epoch: 'e1' });
  // A replay overlapping what arrived live:
  assert.equal(book.accept({ room: 'chat:1', offset: 6, epoch: 'e1' }), false);
  assert.equal(book.accept({ room: 'chat:1', offset: 9, epoch: 'e1' }), true);
  assert.deepEqual(book.joined('chat:1', { offset: 9, epoch: 'e1', recovered: true }, true), { offset: 9, epoch: 'e1', recovered: true });
  // History lost: another epoch, nothing replayed.
  assert.deepEqual(book.joined('chat:1', { offset: 2, epoch: 'e2', recovered: false }, true), { offset: 2, epoch: 'e2', recovered: false });
  assert.equal(book.accept({ room: 'chat:1', offset: 3, epoch: 'e2' }), true);
  // Rooms without history: no since, everything passes.
  book.want('lobby', {});
  assert.deepEqual(book.joined('lobby', {}, false), {});
  assert.deepEqual(book.joinFrame('lobby'), { type: 'join', room: 'lobby' });
  assert.equal(book.accept({ room: 'lobby' }), true);
  assert.equal(book.accept({ room: 'lobby' }), true);
  book.want('chat:2', { since: { offset: 7, epoch: 'e1' } });
  assert.deepEqual(book.joinFrame('chat:2').since, { offset: 7, epoch: 'e1' }, 'a join resuming after a history() read');
  book.drop('lobby');
  assert.equal(book.accept({ room: 'lobby' }), false, 'a room left gets nothing');
});

test('tokens: exp read from a JWT, refresh before it', () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  assert.equal(tokenExpiry(`${b64({ alg: 'HS256' })}.${b64({ sub: 'a', exp: 1700000000 })}.sig`), 1700000000);
  assert.equal(tokenExpiry(`${b64({ alg: 'HS256' })}.${b64({ sub: 'a' })}.sig`), null);
  assert.equal(tokenExpiry('not-a-jwt'), null);
  assert.equal(tokenExpiry('a.%%%.c'), null);
  const now = 1_000_000_000;
  assert.equal(refreshDelay(null, now, 30_000), null);
  assert.equal(refreshDelay(now / 1000 + 3600, now, 30_000), 3600_000 - 30_000, 'long token: the full margin');
  assert.equal(refreshDelay(now / 1000 + 60, now, 30_000), 40_000, 'short token: a third of its life');
  assert.equal(refreshDelay(now / 1000 + 2, now, 30_000), 1_000, 'at least 1 s early');
  assert.equal(refreshDelay(now / 1000 - 5, now, 30_000), 0, 'expired: now');
});
