// MessagePack opt-in through @roomcast/client against a real gateway: binary frames,
// binary data both ways, and a JSON client of the same room getting base64.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '@msgpack/msgpack';
import { RoomcastClient } from '../../dist/index.js';
import { startGateway, until } from './cluster.mjs';

let gw;
before(async () => {
  gw = await startGateway({ name: 'mp' });
});
after(async () => {
  await gw?.kill();
});

test('a codec opts in to roomcast.v1.msgpack: binary data arrives as bytes, as base64 for JSON clients', { timeout: 20_000 }, async () => {
  const mp = new RoomcastClient({ url: gw.url, transports: ['websocket'], codec: { encode, decode } });
  const js = new RoomcastClient({ url: gw.url, transports: ['websocket'] });
  const gotMp = [];
  const gotJs = [];
  mp.on('message', (m) => gotMp.push(m.data));
  js.on('message', (m) => gotJs.push(m.data));
  // Both waits are registered before either connects: an event has no replay.
  const connected = Promise.all([mp.once('connected'), js.once('connected')]);
  mp.connect();
  js.connect();
  const [wMp, wJs] = await connected;
  assert.equal(wMp.encoding, 'msgpack');
  assert.equal(wJs.encoding, 'json');
  await Promise.all([mp.join('mp'), js.join('mp')]);
  await mp.publish('mp', new Uint8Array([0, 1, 255]));
  await js.publish('mp', { n: 1 });
  await until(() => gotMp.length === 2 && gotJs.length === 2, 'both messages on both clients');
  assert.deepEqual(gotMp[0], new Uint8Array([0, 1, 255]));
  assert.equal(gotJs[0], Buffer.from([0, 1, 255]).toString('base64'));
  assert.deepEqual(gotMp[1], { n: 1 });
  mp.close();
  js.close();
});
