// The acceptor's caps on open connections: overall (XMPP_MAX_CONNECTIONS)
// and per address (XMPP_MAX_CONNECTIONS_PER_IP). A connection past a cap is
// closed at once, before it reaches a worker (the client gets no byte), and
// counted; the sessions already there are not disturbed; and once
// connections close, new ones are let in again.
import test from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { header } from '../helpers/raw.ts';
import { online, othersUnaffected, within } from '../helpers/protocol.ts';
import { addressKey, connectionCap, openFileLimit } from '../../src/acceptor/limits.ts';

const WAIT = 10_000;

/**
 * Connects (with direct TLS on the TLS port) from `localAddress` and opens
 * a stream: 'accepted' when the server answers with its stream header,
 * 'refused' when it closes the connection first. The socket is left open.
 */
function probe(t: { teardown(fn: () => void): void }, port: number, opts: { directTls?: boolean; localAddress?: string } = {}): Promise<{ outcome: 'accepted' | 'refused'; socket: net.Socket }> {
  const localAddress = opts.localAddress ?? '127.0.0.1';
  const tcp = net.connect({ port, host: '127.0.0.1', localAddress });
  const socket = opts.directTls ? tls.connect({ socket: tcp, rejectUnauthorized: false, servername: 'localhost' }) : tcp;
  t.teardown(() => socket.destroy());
  tcp.on('error', () => {});
  socket.on('error', () => {});
  return within(
    new Promise((resolve) => {
      socket.on(opts.directTls ? 'secureConnect' : 'connect', () => socket.write(header()));
      socket.once('data', () => resolve({ outcome: 'accepted', socket }));
      socket.on('close', () => resolve({ outcome: 'refused', socket }));
    }),
    WAIT,
    `a connection from ${localAddress}`,
  );
}

async function server(t: { teardown(fn: () => Promise<void>): void }, env: Record<string, string>): Promise<TestServer> {
  // Refusals are logged at warn: kept out of the test's output.
  const s = await startTestServer({ XMPP_LOG_LEVEL: 'error', ...env });
  t.teardown(() => s.stop());
  for (const name of ['alice', 'bob', 'carol']) await s.addUser(name, `${name}-pw`);
  return s;
}

/**
 * Closes `socket` and waits until the server has counted it gone. The count
 * changes on no event a test can wait on: it is read at every turn of the
 * event loop (the worker ends the connection on another thread), for at
 * most WAIT.
 */
async function release(s: TestServer, socket: net.Socket): Promise<void> {
  const before = s.stats().connections;
  socket.destroy();
  const deadline = Date.now() + WAIT;
  while (s.stats().connections >= before) {
    if (Date.now() > deadline) throw new Error(`the server still counts ${s.stats().connections} connections ${WAIT} ms after one of its ${before} closed`);
    await new Promise<void>((r) => setImmediate(r));
  }
}

test('XMPP_MAX_CONNECTIONS_PER_IP: connections from one address past the cap are closed at once; other addresses and the sessions already there are unaffected', async (t) => {
  const s = await server(t, { XMPP_MAX_CONNECTIONS_PER_IP: '3' });
  const alice = await within(online(s.c2sPort, 'alice', 'alice-pw'), WAIT, 'alice');
  t.teardown(() => alice.c.destroy());
  const bob = await within(online(s.c2sPort, 'bob', 'bob-pw'), WAIT, 'bob');
  t.teardown(() => bob.c.destroy());

  // 127.0.0.1 holds two; one more fits, the next ones do not.
  const third = await probe(t, s.c2sPort);
  t.is(third.outcome, 'accepted');
  for (let i = 0; i < 4; i++) t.is((await probe(t, s.c2sPort)).outcome, 'refused');
  // The direct-TLS port counts towards the same cap (the refusal comes before any handshake).
  t.is((await probe(t, s.tlsPort, { directTls: true })).outcome, 'refused');
  // Another address is not held to 127.0.0.1's count (all of 127/8 is loopback on Linux).
  if (process.platform === 'linux') t.is((await probe(t, s.c2sPort, { localAddress: '127.0.0.2' })).outcome, 'accepted');
  t.like(s.stats(), { refusedPerIp: 5, refusedFull: 0 });
  await othersUnaffected(t, alice, bob);
  await othersUnaffected(t, bob, alice);

  // Once one of them closes, the address may connect again.
  await release(s, third.socket);
  const carol = await within(online(s.c2sPort, 'carol', 'carol-pw'), WAIT, 'carol after a connection closed');
  t.teardown(() => carol.c.destroy());
  await othersUnaffected(t, carol, alice);
});

test('XMPP_MAX_CONNECTIONS: connections past the cap are closed at once, on both ports, and counted; logins work again once some close', async (t) => {
  const s = await server(t, { XMPP_MAX_CONNECTIONS: '4' });
  t.is(s.stats().maxConnections, 4);
  const alice = await within(online(s.c2sPort, 'alice', 'alice-pw'), WAIT, 'alice');
  t.teardown(() => alice.c.destroy());
  const bob = await within(online(s.c2sPort, 'bob', 'bob-pw'), WAIT, 'bob');
  t.teardown(() => bob.c.destroy());
  const idle = [await probe(t, s.c2sPort), await probe(t, s.tlsPort, { directTls: true })];
  t.deepEqual(idle.map((p) => p.outcome), ['accepted', 'accepted']);
  t.is(s.stats().connections, 4);
  t.is((await probe(t, s.c2sPort)).outcome, 'refused');
  t.is((await probe(t, s.tlsPort, { directTls: true })).outcome, 'refused');
  t.like(s.stats(), { refusedFull: 2, refusedPerIp: 0, connections: 4 });
  await othersUnaffected(t, alice, bob);

  for (const p of idle) await release(s, p.socket);
  const carol = await within(online(s.c2sPort, 'carol', 'carol-pw'), WAIT, 'carol once connections closed');
  t.teardown(() => carol.c.destroy());
  await othersUnaffected(t, carol, bob);
});

test('the default cap is the open-file limit less a reserve for the process, its workers and its peers', (t) => {
  // 64 + 32 per worker + a tenth of the limit (at most 4096).
  t.deepEqual(connectionCap({ maxConnections: 0, workers: 2 }, 20_000), { max: 20_000 - 128 - 2000, limit: 20_000, reserve: 2128 });
  t.deepEqual(connectionCap({ maxConnections: 0, workers: 4 }, 1_048_576), { max: 1_048_576 - 192 - 4096, limit: 1_048_576, reserve: 4288 });
  t.is(connectionCap({ maxConnections: 0, workers: 2 }, 1024).max, 1024 - 128 - 102);
  // A limit too low for the reserve still lets a few in (and the server warns).
  t.is(connectionCap({ maxConnections: 0, workers: 8 }, 256).max, 16);
  // Unknown: the usual default of 1024 is assumed.
  t.is(connectionCap({ maxConnections: 0, workers: 2 }, undefined).max, 1024 - 128 - 102);
  // Set: taken as it is, even above the limit.
  t.deepEqual(connectionCap({ maxConnections: 100_000, workers: 2 }, 256), { max: 100_000 });
  // On Linux the limit comes from /proc/self/limits.
  if (process.platform === 'linux') t.true((openFileLimit() ?? 0) > 0);
});

test('the per-address cap counts IPv4 addresses (also IPv4-mapped) one by one and IPv6 addresses by /64', (t) => {
  t.is(addressKey('203.0.113.7'), '203.0.113.7');
  t.is(addressKey('::ffff:203.0.113.7'), '203.0.113.7');
  t.is(addressKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  t.is(addressKey('2001:db8:1:2::9'), '2001:db8:1:2::/64');
  t.is(addressKey('2001:0db8:0001:0002:ffff::1'), '2001:db8:1:2::/64');
  t.is(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.is(addressKey('::1'), '0:0:0:0::/64');
  t.is(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  t.is(addressKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
});
