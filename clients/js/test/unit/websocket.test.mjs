// The WebSocket transport against a fake WebSocket class: subprotocols offered,
// MessagePack opt-in (binary frames when the gateway selects roomcast.v1.msgpack,
// JSON when it does not), and a refused upgrade probed for its HTTP status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '@msgpack/msgpack';
import { websocketTransport } from '../../dist/transport/websocket.js';
import { until } from './fake.mjs';

function fakeSocketClass(selected) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = '';
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    accept() {
      this.protocol = selected;
      this.readyState = 1;
      this.onopen?.({});
    }
    send(data) { this.sent.push(data); }
    close() { this.readyState = 3; }
  }
  return { FakeWebSocket, sockets };
}
function handlers() {
  const h = { frames: [], closes: [] };
  h.onFrame = (f) => h.frames.push(f);
  h.onClose = (c) => h.closes.push(c);
  return h;
}
const codec = { encode, decode };

test('MessagePack when the gateway selects it: binary frames both ways', () => {
  const { FakeWebSocket, sockets } = fakeSocketClass('roomcast.v1.msgpack');
  const h = handlers();
  const t = websocketTransport({ url: 'https://gw.test', token: () => 't k', codec, WebSocket: FakeWebSocket, fetch, requestTimeoutMs: 100 }, h);
  const ws = sockets[0];
  assert.equal(ws.url, 'wss://gw.test/ws?token=t+k');
  assert.deepEqual(ws.protocols, ['roomcast.v1.msgpack', 'roomcast.v1']);
  ws.accept();
  assert.equal(t.encoding, 'msgpack');
  t.send({ type: 'publish', room: 'a', data: new Uint8Array([1, 2]), id: 1 });
  assert.ok(ws.sent[0] instanceof Uint8Array);
  assert.deepEqual(decode(ws.sent[0]), { type: 'publish', room: 'a', data: new Uint8Array([1, 2]), id: 1 });
  const bytes = encode({ type: 'message', room: 'a', from: 'u', data: new Uint8Array([3]) });
  ws.onmessage({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  assert.deepEqual(h.frames[0].data, new Uint8Array([3]));
});

test('JSON when the gateway selects roomcast.v1, or no codec is given', () => {
  for (const [selected, withCodec] of [['roomcast.v1', true], ['roomcast.v1', false]]) {
    const { FakeWebSocket, sockets } = fakeSocketClass(selected);
    const h = handlers();
    const t = websocketTransport({ url: 'http://gw.test', token: () => null, codec: withCodec ? codec : undefined, WebSocket: FakeWebSocket, fetch, requestTimeoutMs: 100 }, h);
    const ws = sockets[0];
    assert.equal(ws.url, 'ws://gw.test/ws');
    if (!withCodec) assert.deepEqual(ws.protocols, ['roomcast.v1']);
    ws.accept();
    assert.equal(t.encoding, 'json');
    t.send({ type: 'ping', id: 2 });
    assert.equal(ws.sent[0], '{"type":"ping","id":2}');
    ws.onmessage({ data: '{"type":"ok","id":2}' });
    ws.onmessage({ data: 'not json' });
    ws.onmessage({ data: '{"no":"type"}' });
    assert.deepEqual(h.frames, [{ type: 'ok', id: 2 }]);
  }
});

test('a refused upgrade (error without close, as in Node 20) is probed for its status, reported once', { timeout: 5000 }, async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass('roomcast.v1');
  const probes = [];
  const fetch = async (url) => { probes.push(url); return new Response('invalid or missing token\n', { status: 401 }); };
  const h = handlers();
  websocketTransport({ url: 'http://gw.test', token: () => 'bad', WebSocket: FakeWebSocket, fetch, requestTimeoutMs: 100 }, h);
  sockets[0].onerror({});
  sockets[0].onclose?.({ code: 1006, reason: '' });
  await until(() => h.closes.length === 1, 'close');
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(h.closes, [{ code: 1006, reason: 'connection failed', beforeOpen: true, status: 401 }]);
  assert.deepEqual(probes, ['http://gw.test/ws?token=bad']);
});

test('a close after the open is reported with its code, no probe', { timeout: 5000 }, async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass('roomcast.v1');
  const h = handlers();
  websocketTransport({ url: 'http://gw.test', token: () => null, WebSocket: FakeWebSocket, fetch: () => assert.fail('no probe'), requestTimeoutMs: 100 }, h);
  sockets[0].accept();
  sockets[0].onclose({ code: 1012, reason: 'draining' });
  await until(() => h.closes.length === 1, 'close');
  assert.deepEqual(h.closes, [{ code: 1012, reason: 'draining', beforeOpen: false }]);
});
