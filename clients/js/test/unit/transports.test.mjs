// The HTTP fallback transports against a fake fetch (the test plays the gateway):
// the event-stream parser, SSE and long polling sessions, posting client frames,
// `close` frames and refusals. The WebSocket transport is exercised by the
// integration and browser tests against real gateways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readEvents, sseTransport } from '../../dist/transport/sse.js';
import { pollTransport } from '../../dist/transport/poll.js';
import { until } from './fake.mjs';

function stream(chunks) {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const chunk of chunks) c.enqueue(enc.encode(chunk));
      c.close();
    },
  });
}

test('event stream: data lines across chunk splits, comments skipped, bad JSON ignored', async () => {
  const frames = [];
  await readEvents(stream([': hello\n\ndata: {"type":"wel', 'come"}\n', '\n', 'data: not json\n\n:hb\n\ndata: {"type":"ok",\r\ndata: "id":1}\r\n\r\n']), (f) => frames.push(f));
  assert.deepEqual(frames, [{ type: 'welcome' }, { type: 'ok', id: 1 }]);
});

function context(fetch) {
  return { url: 'http://gw.test', token: () => 'tok', fetch, requestTimeoutMs: 1000 };
}
function handlers() {
  const h = { frames: [], closes: [] };
  h.onFrame = (f) => h.frames.push(f);
  h.onClose = (c) => h.closes.push(c);
  return h;
}

test('SSE: welcome, frames, client frames posted in order, the close frame ends it', { timeout: 5000 }, async () => {
  const posts = [];
  let push;
  const body = new ReadableStream({ start(c) { push = (s) => c.enqueue(new TextEncoder().encode(s)); } });
  const fetch = async (url, init = {}) => {
    if ((init.method ?? 'GET') === 'GET') {
      assert.equal(url, 'http://gw.test/sse?token=tok');
      return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
    }
    posts.push({ url, body: JSON.parse(init.body) });
    return new Response(null, { status: 202 });
  };
  const h = handlers();
  const t = sseTransport(context(fetch), h);
  assert.throws(() => t.send({ type: 'ping' }), /not open/);
  push('data: {"type":"welcome","session":"S1"}\n\n');
  await until(() => h.frames.length === 1, 'welcome');
  t.send({ type: 'join', room: 'a', id: 1 });
  push('data: {"type":"ok","id":1}\n\n');
  await until(() => posts.length === 1 && h.frames.length === 2, 'post and ok');
  assert.deepEqual(posts[0], { url: 'http://gw.test/session/S1?token=tok', body: { type: 'join', room: 'a', id: 1 } });
  push('data: {"type":"close","code":1012}\n\n');
  await until(() => h.closes.length === 1, 'close');
  assert.deepEqual(h.closes[0], { code: 1012, reason: 'session closed', beforeOpen: false });
});

test('SSE: a refusal reports its status before any frame', { timeout: 5000 }, async () => {
  const h = handlers();
  sseTransport(context(async () => new Response('no', { status: 401 })), h);
  await until(() => h.closes.length === 1, 'close');
  assert.deepEqual(h.closes[0], { code: 1006, reason: 'HTTP 401', beforeOpen: true, status: 401 });
  const u = handlers();
  sseTransport(context(async () => { throw new TypeError('fetch failed'); }), u);
  await until(() => u.closes.length === 1, 'close');
  assert.equal(u.closes[0].status, null);
});

test('long polling: POST /poll welcomes, GET /poll/{session} delivers batches, 404 ends the session', { timeout: 5000 }, async () => {
  const batches = [[{ type: 'message', room: 'a', data: 1 }, { type: 'message', room: 'a', data: 2 }], []];
  const seen = [];
  const fetch = async (url, init = {}) => {
    seen.push(`${init.method} ${url}`);
    if (init.method === 'POST' && url.startsWith('http://gw.test/poll')) return Response.json({ type: 'welcome', session: 'P1' });
    if (init.method === 'GET') return batches.length ? Response.json(batches.shift()) : new Response(null, { status: 404 });
    return new Response(null, { status: 202 });
  };
  const h = handlers();
  pollTransport(context(fetch), h);
  await until(() => h.closes.length === 1, 'end');
  assert.deepEqual(h.frames.map((f) => f.data ?? f.type), ['welcome', 1, 2]);
  assert.deepEqual(h.closes[0], { code: 1006, reason: 'session ended', beforeOpen: false });
  assert.deepEqual(seen.slice(0, 2), ['POST http://gw.test/poll?token=tok', 'GET http://gw.test/poll/P1?token=tok']);
});

test('long polling: a close frame in a batch ends the session with its code', { timeout: 5000 }, async () => {
  const fetch = async (url, init = {}) =>
    init.method === 'POST' ? Response.json({ type: 'welcome', session: 'P2' }) : Response.json([{ type: 'close', code: 4003 }]);
  const h = handlers();
  pollTransport(context(fetch), h);
  await until(() => h.closes.length === 1, 'end');
  assert.equal(h.closes[0].code, 4003);
});
