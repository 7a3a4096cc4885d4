// What an operator reads in the log of a running server (JSON lines on
// stderr, default level info): every authentication, success and failure,
// with the account, the mechanism, the client's address and the reason;
// every end of a session with its JID, duration and reason; and nothing at
// all, at the default level, for a load balancer's health checks (a stream
// opened and dropped, over TLS or not, or a connection closed at once).
import test from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { NodeProcess } from '../helpers/cluster.ts';
import { header } from '../helpers/raw.ts';
import { online, plainOutcome, within } from '../helpers/protocol.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';

interface Line {
  level: string;
  msg: string;
  [k: string]: unknown;
}

const lines = (node: NodeProcess): Line[] =>
  node.log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line);

/** A health check as HAProxy's tcp-check does it: connect (TLS or not), send a stream header, read the server's, drop the connection. */
async function healthCheck(port: number, useTls: boolean): Promise<void> {
  const sock = useTls ? tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect({ port, host: '127.0.0.1' });
  await once(sock, useTls ? 'secureConnect' : 'connect');
  sock.write(header());
  let got = '';
  sock.setEncoding('utf8');
  await within(new Promise<void>((resolve) => sock.on('data', (d: string) => (got += d).includes('<stream:stream') && resolve())), 10_000, 'the header');
  sock.destroy();
  await once(sock, 'close');
}

test('authentications, session ends and health checks in the log', async (t) => {
  const node = await NodeProcess.start('logs', { XMPP_LOG_LEVEL: 'info', XMPP_WORKERS: '1' });
  t.teardown(() => node.stop());
  const store = SqliteAccountStore.open(`${node.dataDir}/accounts.sqlite`, 4096);
  await store.create('alice', 'alice-pw');
  store.close();

  // Health checks, as the cluster's load balancer sends them every 2 s.
  for (let i = 0; i < 5; i++) {
    await healthCheck(node.c2sPort, false);
    await healthCheck(node.tlsPort, true);
    const bare = net.connect({ port: node.tlsPort, host: '127.0.0.1' });
    await once(bare, 'connect');
    bare.destroy();
  }
  // A failed login, then a good one that ends.
  t.is(await plainOutcome(node.c2sPort, 'alice', 'wrong'), 'not-authorized');
  const { c, jid } = await online(node.c2sPort, 'alice', 'alice-pw', 'r');
  c.end();
  await c.closed;
  await node.waitForLog(/"msg":"session ended"/);

  const log = lines(node);
  const fail = log.find((l) => l.msg === 'authentication failed');
  t.like(fail, { user: 'alice', mechanism: 'PLAIN', ip: '127.0.0.1', reason: 'not-authorized' });
  t.is(typeof fail?.port, 'number');
  const ok = log.find((l) => l.msg === 'authenticated');
  t.like(ok, { level: 'info', user: 'alice', mechanism: 'PLAIN', ip: '127.0.0.1' });
  t.is(typeof ok?.port, 'number');
  const end = log.find((l) => l.msg === 'session ended');
  t.like(end, { level: 'info', jid, ip: '127.0.0.1', reason: 'closed by the client' });
  t.is(typeof end?.durationMs, 'number');
  // Nothing else at info or above came from the health checks: only the
  // start, the login's lines and the end.
  const others = log.filter((l) => !['listening', 'generated a self-signed certificate', 'authenticated', 'authentication failed', 'session ended'].includes(l.msg) && l.level !== 'debug');
  t.deepEqual(others.map((l) => l.msg), [], JSON.stringify(others));
});
