// Baseline for the Roomcast benchmarks: the classic design of the "scale your
// WebSockets with NATS" blog posts. One Node.js process per node, `ws` for the
// sockets, one NATS subject per room, every node subscribed to the rooms it has
// members of, local fan-out of every message it receives from NATS (its own
// publishes included, since NATS echoes them back).
//
// It speaks the core of Roomcast protocol v1 with the same JSON frames, so the
// same load generator drives both: welcome; join/leave (the join's ok is sent
// after the NATS subscription is flushed); publish with echo; message; ping.
//
// Usage: node server.js --port 8090 --node-name node-a --nats-url nats://127.0.0.1:4222
'use strict';

const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const { connect } = require('nats');

const ROOM_RE = /^[A-Za-z0-9_:@/-]{1,128}$/;
const HEARTBEAT_MS = 25000;
const MAX_FRAME_BYTES = 64 * 1024;
const MAX_ROOMS = 256;

function args(argv) {
  const opts = { port: 8090, host: '127.0.0.1', nodeName: 'baseline', natsUrl: 'nats://127.0.0.1:4222' };
  for (let i = 2; i < argv.length; i += 2) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--port': opts.port = Number(value); break;
      case '--host': opts.host = value; break;
      case '--node-name': opts.nodeName = value; break;
      case '--nats-url': opts.natsUrl = value; break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
  }
  return opts;
}

function send(ws, frame) {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
}

function reply(ws, id, extra) {
  if (id !== undefined) send(ws, { type: 'ok', id, ...extra });
}

function fail(ws, id, code, message) {
  const frame = { type: 'error', code, message };
  if (id !== undefined) frame.id = id;
  send(ws, frame);
}

async function main() {
  const opts = args(process.argv);
  const nc = await connect({ servers: opts.natsUrl, name: opts.nodeName });

  // room -> { members: Set<ws>, sub, ready: Promise }
  const rooms = new Map();

  function deliver(room, payload) {
    const entry = rooms.get(room);
    if (!entry) return;
    // Encode once per node, then fan out to the local members.
    const msg = JSON.parse(payload);
    const frame = JSON.stringify({ type: 'message', room, from: msg.from, data: msg.data });
    for (const ws of entry.members) {
      if (!msg.echo && ws.session === msg.sender) continue;
      if (ws.readyState === ws.OPEN) ws.send(frame);
    }
  }

  async function join(ws, room) {
    let entry = rooms.get(room);
    if (!entry) {
      const sub = nc.subscribe(`room.${room}`, {
        callback: (err, m) => { if (!err) deliver(room, m.string()); },
      });
      entry = { members: new Set(), sub, ready: nc.flush() };
      rooms.set(room, entry);
    }
    await entry.ready;
    entry.members.add(ws);
    ws.rooms.add(room);
  }

  function leave(ws, room) {
    ws.rooms.delete(room);
    const entry = rooms.get(room);
    if (!entry) return;
    entry.members.delete(ws);
    if (entry.members.size === 0) {
      entry.sub.unsubscribe();
      rooms.delete(room);
    }
  }

  async function handle(ws, raw) {
    let frame;
    try { frame = JSON.parse(raw); } catch { return fail(ws, undefined, 'bad_request', 'not JSON'); }
    if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
      return fail(ws, undefined, 'bad_request', 'not an object');
    }
    const { id } = frame;
    switch (frame.type) {
      case 'join':
        if (typeof frame.room !== 'string' || !ROOM_RE.test(frame.room)) return fail(ws, id, 'invalid_room', 'invalid room');
        if (!ws.rooms.has(frame.room) && ws.rooms.size >= MAX_ROOMS) return fail(ws, id, 'too_many_rooms', 'too many rooms');
        try { await join(ws, frame.room); } catch { return fail(ws, id, 'unavailable', 'bus unavailable'); }
        return reply(ws, id);
      case 'leave':
        if (typeof frame.room !== 'string' || !ROOM_RE.test(frame.room)) return fail(ws, id, 'invalid_room', 'invalid room');
        leave(ws, frame.room);
        return reply(ws, id);
      case 'publish': {
        if (typeof frame.room !== 'string' || !ROOM_RE.test(frame.room)) return fail(ws, id, 'invalid_room', 'invalid room');
        if (!('data' in frame)) return fail(ws, id, 'bad_request', 'missing data');
        const payload = JSON.stringify({
          from: ws.session, data: frame.data, sender: ws.session, echo: frame.echo !== false,
        });
        nc.publish(`room.${frame.room}`, payload);
        return reply(ws, id);
      }
      case 'ping':
        return reply(ws, id, { ts: Date.now() });
      default:
        return fail(ws, id, 'bad_request', 'unknown or unsupported type');
    }
  }

  const wss = new WebSocketServer({
    host: opts.host,
    port: opts.port,
    path: '/ws',
    maxPayload: MAX_FRAME_BYTES,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has('roomcast.v1') ? 'roomcast.v1' : false),
  });

  wss.on('connection', (ws) => {
    ws.session = crypto.randomUUID();
    ws.rooms = new Set();
    ws.alive = true;
    ws.on('pong', () => { ws.alive = true; });
    ws.on('message', (data, isBinary) => {
      ws.alive = true;
      if (isBinary) return fail(ws, undefined, 'bad_request', 'binary frame');
      handle(ws, data.toString()).catch(() => fail(ws, undefined, 'internal', 'internal error'));
    });
    ws.on('close', () => { for (const room of [...ws.rooms]) leave(ws, room); });
    ws.on('error', () => {});
    send(ws, { type: 'welcome', session: ws.session, user: ws.session, node: opts.nodeName, heartbeat_ms: HEARTBEAT_MS });
  });

  // Classic heartbeat: ping everyone, drop those that did not answer the last one.
  setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.alive) { ws.terminate(); continue; }
      ws.alive = false;
      ws.ping();
    }
  }, HEARTBEAT_MS).unref();

  wss.on('listening', () => console.error(`baseline ${opts.nodeName} listening on ${opts.host}:${opts.port}`));
  const stop = () => { wss.close(); nc.close().finally(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
