// What a session does with routed stanzas it cannot write: after it closed
// with writes still under way (a client that does not read, a node
// stopping), or when its connection is reset with output still queued.
// They are rerouted, never dropped, and never ahead of what came before them,
// so that offline storage keeps the order they were sent in (RFC 6120 §10.1).
// A real session on a real socket whose client reads nothing; the router is
// replaced by one that records what is rerouted, and that, like the real
// one, reroutes at once what the session refuses.
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { loadConfig } from '../../src/config/index.ts';
import { Session } from '../../src/session/session.ts';
import type { WorkerContext } from '../../src/worker/context.ts';
import { within } from '../helpers/protocol.ts';

/** A bound session whose client reads nothing; `rerouted` lists the ids of what it rerouted, in order. */
async function stalled(t: ExecutionContext) {
  const config = loadConfig({ XMPP_DOMAIN: 'localhost', XMPP_MAX_OUTBOUND_BYTES: String(1 << 30), XMPP_READ_RATE_BYTES: '0', XMPP_LOG_LEVEL: 'error' });
  const rerouted: string[] = [];
  const watchers: ((id: string) => void)[] = [];
  const reroute = (id: string) => {
    rerouted.push(id);
    for (const w of watchers) w(id);
  };
  const ctx = {
    config,
    all: new Set(),
    sessions: new Map(),
    closing: new Map(),
    local: new Map(),
    registry: { unbind: async () => {} },
    hooks: { streamFeatures: [], nonzas: new Map(), immediate: new Map(), outbound: [] },
    router: {
      rerouted: (xml: string) => reroute(/id='([^']*)'/.exec(xml)![1]),
      presence: { sessionEnded() {}, detach() {} },
    },
  } as unknown as WorkerContext;
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const accepted = once(server, 'connection');
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => client.destroy());
  client.pause(); // reads nothing
  const [sock] = (await accepted) as [net.Socket];
  if (client.connecting) await once(client, 'connect');
  const session = new Session(ctx, sock, false);
  // Bound, as far as delivery is concerned.
  Object.assign(session, { state: 'established', jid: 'victim@localhost/r' });
  return {
    session,
    client,
    rerouted,
    /** Resolves once `id` was rerouted. */
    reroutedOf: (id: string) => new Promise<void>((r) => watchers.push((x) => x === id && r())),
    /** Resolves when the server's side of the connection has closed (once() would reject on a reset's error). */
    closed: new Promise((r) => sock.once('close', r)),
    /** As Router.take and undeliverable: what the session refuses is rerouted now. */
    deliver: (id: string, body: string) => {
      if (!session.deliver(`<message id='${id}' type='chat'><body>${body}</body></message>`, { reroute: 'message' })) reroute(id);
    },
  };
}

// Far more than the kernel's buffers take from a reader that reads nothing.
const BODY = 'x'.repeat(1 << 20);
const IDS = Array.from({ length: 64 }, (_, i) => `m${i}`);

test('a message that comes while a closed session still writes is rerouted after what it was writing', async (t) => {
  const s = await stalled(t);
  const late = s.reroutedOf('late');
  for (const id of IDS) s.deliver(id, BODY);
  s.session.close();
  s.deliver('late', 'after the close');
  s.client.destroy(); // the writes under way fail
  // Every write has ended with the socket's close (Session's 'close' handler).
  await within(Promise.all([late, s.closed]), 10_000, 'the late message rerouted and the connection closed');
  const failed = s.rerouted.filter((id) => id !== 'late');
  t.true(failed.length > 0, 'writes were under way at the close');
  t.deepEqual(s.rerouted, [...IDS.slice(IDS.length - failed.length), 'late'], 'in the order they were delivered');
});

test('a connection reset with output still queued reroutes all of it, in order: what was in the socket, then what waited for room there', async (t) => {
  const s = await stalled(t);
  for (const id of IDS) s.deliver(id, BODY);
  s.client.resetAndDestroy(); // no end of stream: the server's socket just closes
  await within(s.closed, 10_000, 'the reset to close the connection');
  t.true(s.rerouted.length > 0 && s.rerouted.length < IDS.length, `some written, the rest rerouted (${s.rerouted.length})`);
  t.deepEqual(s.rerouted, IDS.slice(IDS.length - s.rerouted.length), 'every message not written, in order');
});
