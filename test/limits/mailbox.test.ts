// A connection whose stanzas wait to be handled stops being read once they
// cost too much, counted in bytes, long before the mailbox's count bound.
// A real session on a real socket; only its handling is held back by the test.
import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { loadConfig } from '../../src/config/index.ts';
import { Session } from '../../src/session/session.ts';
import type { WorkerContext } from '../../src/worker/context.ts';
import { within } from '../helpers/protocol.ts';

const HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

type Ev = { k: string; el?: { attrs: Record<string, string> } };
interface Inside {
  handle(ev: Ev): Promise<void>;
  mailbox: Ev[];
  mailboxCost: number;
}

test('reading pauses once the waiting stanzas cost more than the bound, and everything is handled in order after', async (t) => {
  const config = loadConfig({ XMPP_DOMAIN: 'localhost', XMPP_READ_RATE_BYTES: '0', XMPP_LOG_LEVEL: 'error'});
  const ctx = { config, all: new Set() } as unknown as WorkerContext;

  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const n = 40;
  const handled: string[] = [];
  let allHandled!: () => void;
  const done = new Promise<void>((r) => (allHandled = r));
  let atPause: { events: number; cost: number } | undefined;
  let pausedOnce!: () => void;
  const paused = new Promise<void>((r) => (pausedOnce = r));
  const body = 'b'.repeat(100 * 1024);
  const stanzas = Array.from({ length: n }, (_, i) => `<message to='x@localhost' id='m${i}'><body>${body}</body></message>`);
  const total = Buffer.byteLength(HEADER + stanzas.join(''));
  let readAll!: () => void;
  const everythingRead = new Promise<void>((r) => (readAll = r));

  const server = net.createServer((sock) => {
    const session = new Session(ctx, sock, false);
    const inside = session as unknown as Inside;
    // The session's own handling is replaced by one that waits for the test.
    inside.handle = async (ev) => {
      await gate;
      if (ev.k === 'el' && handled.push(ev.el!.attrs.id) === n) allHandled();
    };
    sock.on('data', () => {
      if (sock.bytesRead >= total) readAll();
    });
    const pause = sock.pause.bind(sock);
    sock.pause = () => {
      atPause ??= { events: inside.mailbox.length, cost: inside.mailboxCost };
      pausedOnce();
      return pause();
    };
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());

  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => client.destroy());
  await once(client, 'connect');
  client.write(HEADER);
  for (const s of stanzas) client.write(s);

  const first = await within(Promise.race([paused.then(() => 'paused'), everythingRead.then(() => 'read everything')]), 10_000, 'the session to pause reading or to read everything');
  t.is(first, 'paused', 'reading went on while the handling was held back');
  // Paused by cost: about 512 KiB of 100 KiB stanzas, far below the 64 events the count allows.
  t.true(atPause!.cost > 512 * 1024, `cost at pause ${atPause!.cost}`);
  t.true(atPause!.events <= 8, `${atPause!.events} events waiting at pause`);
  release();
  await within(done, 10_000, `all ${n} stanzas handled once released`);
  t.deepEqual(handled, Array.from({ length: n }, (_, i) => `m${i}`));
});
