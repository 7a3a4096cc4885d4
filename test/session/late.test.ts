// What reaches a session after it closed, while its last writes are still
// under way (a client that does not read, a node stopping): rerouted after
// those writes, never ahead of them, so that offline storage keeps the order
// the messages were sent in (RFC 6120 §10.1). A real session on a real
// socket; the router is replaced by one that records what is rerouted, and
// that, like the real one, reroutes at once what the session refuses.
import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { loadConfig } from '../../src/config/index.ts';
import { Session } from '../../src/session/session.ts';
import type { WorkerContext } from '../../src/worker/context.ts';
import { within } from '../helpers/protocol.ts';

test('a message that comes while a closed session still writes is rerouted after what it was writing', async (t) => {
  const config = loadConfig({ XMPP_DOMAIN: 'localhost', XMPP_MAX_OUTBOUND_BYTES: String(1 << 30), XMPP_READ_RATE_BYTES: '0', XMPP_LOG_LEVEL: 'error' });
  const rerouted: string[] = [];
  let lateRerouted!: () => void;
  const done = new Promise<void>((r) => (lateRerouted = r));
  const reroute = (id: string) => {
    rerouted.push(id);
    if (id === 'late') lateRerouted();
  };
  const ctx = {
    config,
    all: new Set(),
    sessions: new Map(),
    closing: new Map(),
    local: new Map(),
    registry: { unbind: async () => {} },
    hooks: { streamFeatures: [], nonzas: new Map(), outbound: [] },
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
  const session = new Session(ctx, sock, false);
  // Bound, as far as delivery is concerned.
  Object.assign(session, { state: 'established', jid: 'victim@localhost/r' });
  const deliver = (id: string, body: string) => {
    // As Router.take and undeliverable: what the session refuses is rerouted now.
    if (!session.deliver(`<message id='${id}' type='chat'><body>${body}</body></message>`, { reroute: 'message' })) reroute(id);
  };

  // Far more than the kernel's buffers take from a reader that reads nothing.
  const body = 'x'.repeat(1 << 20);
  const ids = Array.from({ length: 64 }, (_, i) => `m${i}`);
  for (const id of ids) deliver(id, body);
  session.close();
  deliver('late', 'after the close');
  const closed = new Promise((r) => sock.once('close', r)); // (once() would reject on the reset's error)
  client.destroy(); // the writes under way fail
  // Every write has ended with the socket's close (Session's 'close' handler).
  await within(Promise.all([done, closed]), 10_000, 'the late message rerouted and the connection closed');

  const failed = rerouted.filter((id) => id !== 'late');
  t.true(failed.length > 0, 'writes were under way at the close');
  t.deepEqual(rerouted, [...ids.slice(ids.length - failed.length), 'late'], 'in the order they were delivered');
});

test('a connection reset with output still queued reroutes all of it, in order: what was in the socket, then what waited for room there', async (t) => {
  const config = loadConfig({ XMPP_DOMAIN: 'localhost', XMPP_MAX_OUTBOUND_BYTES: String(1 << 30), XMPP_READ_RATE_BYTES: '0', XMPP_LOG_LEVEL: 'error' });
  const rerouted: string[] = [];
  const ctx = {
    config,
    all: new Set(),
    sessions: new Map(),
    closing: new Map(),
    local: new Map(),
    registry: { unbind: async () => {} },
    hooks: { streamFeatures: [], nonzas: new Map(), outbound: [] },
    router: {
      rerouted: (xml: string) => rerouted.push(/id='([^']*)'/.exec(xml)![1]),
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
  client.pause();
  const [sock] = (await accepted) as [net.Socket];
  const session = new Session(ctx, sock, false);
  Object.assign(session, { state: 'established', jid: 'victim@localhost/r' });
  const body = 'x'.repeat(1 << 20);
  const ids = Array.from({ length: 64 }, (_, i) => `m${i}`);
  for (const id of ids) t.true(session.deliver(`<message id='${id}' type='chat'><body>${body}</body></message>`, { reroute: 'message' }));
  const closed = new Promise((r) => sock.once('close', r));
  await once(client, 'connect');
  client.resetAndDestroy(); // no end of stream: the server's socket just closes
  await within(closed, 10_000, 'the reset to close the connection');
  t.true(rerouted.length > 0 && rerouted.length < ids.length, `some written, the rest rerouted (${rerouted.length})`);
  t.deepEqual(rerouted, ids.slice(ids.length - rerouted.length), 'every message not written, in order');
});
