// Presence events through @roomcast/client against two real gateways and nats-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastClient } from '../../dist/index.js';
import { startNats, startGateway, until } from './cluster.mjs';

let nats, a, b;
before(async () => {
  nats = await startNats();
  [a, b] = await Promise.all([startGateway({ name: 'pr-a', nats: nats.url }), startGateway({ name: 'pr-b', nats: nats.url })]);
});
after(async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await nats?.stop();
});

test('joined and left events for another user across gateways, re-armed after a reconnect', { timeout: 30_000 }, async () => {
  const watcher = new RoomcastClient({ url: a.url, transports: ['websocket'] });
  const events = [];
  watcher.on('joined', (e) => events.push(['joined', e.user]));
  watcher.on('left', (e) => events.push(['left', e.user]));
  watcher.connect();
  await watcher.join('pr-room', { presence: true });
  const other = new RoomcastClient({ url: b.url, transports: ['websocket'] });
  other.connect();
  const w = await other.once('connected');
  await other.join('pr-room');
  await until(() => events.length === 1, 'joined');
  other.close();
  await until(() => events.length === 2, 'left');
  assert.deepEqual(events, [['joined', w.user], ['left', w.user]]);
  watcher.close();
});
