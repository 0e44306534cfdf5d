// A fake transport for the client's unit tests: the test plays the gateway,
// reading what the client sent and handing it frames and closes.
export function fakeNetwork() {
  const links = [];
  const waiting = [];
  const factory = (name) => (context, handlers) => {
    const link = {
      name,
      context,
      handlers,
      sent: [],
      closed: false,
      sentWaiters: [],
      encoding: 'json',
      send(frame) {
        if (link.closed) throw new Error('closed');
        link.sent.push(frame);
        for (const w of link.sentWaiters.splice(0)) w();
      },
      close() {
        link.closed = true;
      },
      // gateway side
      frame(f) {
        handlers.onFrame(f);
      },
      welcome(extra = {}) {
        handlers.onFrame({ type: 'welcome', session: 's' + links.indexOf(link), user: 'u1', node: 'gw-' + links.indexOf(link), heartbeat_ms: 25000, ...extra });
      },
      drop(code = 1006, opts = {}) {
        handlers.onClose({ code, reason: '', beforeOpen: false, ...opts });
      },
      refuse(status) {
        handlers.onClose({ code: 1006, reason: '', beforeOpen: true, status });
      },
      // Resolves with the first sent frame (from `from` on) matching `pred`.
      async next(pred, from = 0) {
        const deadline = Date.now() + 2000;
        for (;;) {
          const found = link.sent.slice(from).find(pred);
          if (found) return found;
          if (Date.now() > deadline) throw new Error('frame not sent; sent: ' + JSON.stringify(link.sent));
          await new Promise((r) => {
            link.sentWaiters.push(r);
            setTimeout(r, 50);
          });
        }
      },
      ok(request, extra = {}) {
        handlers.onFrame({ type: 'ok', id: request.id, ...extra });
      },
    };
    links.push(link);
    for (const w of waiting.splice(0)) w();
    return link;
  };
  return {
    links,
    factories: { websocket: factory('websocket'), sse: factory('sse'), poll: factory('poll') },
    // Resolves with link number `n` (0-based) once the client opened it.
    async link(n) {
      const deadline = Date.now() + 3000;
      while (links.length <= n) {
        if (Date.now() > deadline) throw new Error(`link ${n} never opened (${links.length} opened)`);
        await new Promise((r) => {
          waiting.push(r);
          setTimeout(r, 50);
        });
      }
      return links[n];
    },
  };
}

export const FAST = { baseMs: 5, maxMs: 20, stableAfterMs: 10_000, drainJitterMs: 5 };

export function record(client, event) {
  const seen = [];
  client.on(event, (e) => seen.push(e));
  return seen;
}

export async function until(pred, what, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 5));
  }
}
