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
import { run } from '../helpers/process.ts';

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

/**
 * The logger's own contract, in a process of its own (as a thread's logger
 * is per process): one JSON line per event with the level as a word, the
 * time, the thread; credentials never printed, wherever they are passed;
 * child loggers' bindings on their lines, and a level change reaching the
 * children made before it; a worker thread's lines on the same stderr.
 */
test('log lines: format, redaction of credentials, child loggers, levels, worker threads', async (t) => {
  const script = `
    import { log, setLogLevel } from ${JSON.stringify(new URL('../../src/log.ts', import.meta.url).href)};
    import { Worker } from 'node:worker_threads';
    log.info('login', { user: 'alice', password: 'hunter2', payload: 'AGFsaWNlAGh1bnRlcjI=' });
    log.warn('nested', { req: { password: 'hunter3', token: 'tok-1' }, url: 'redis://app:redis-pw@db:6379/0', s2sSecret: 'dialback-secret' });
    const child = log.child({ sid: 'S1' });
    child.debug('hidden at info');
    setLogLevel('debug');
    child.debug('shown at debug', { jid: 'alice@localhost/r' });
    setLogLevel('warn');
    child.info('hidden at warn');
    const w = new Worker("import { log } from " + JSON.stringify(${JSON.stringify(new URL('../../src/log.ts', import.meta.url).href)}) + "; log.info('from a worker', { password: 'in-thread' });", { eval: true, env: { XMPP_LOG_LEVEL: 'info' } });
    w.on('exit', () => {});
  `;
  const r = await run(process.execPath, ['--input-type=module', '-e', script], { ...process.env, XMPP_LOG_LEVEL: 'info' });
  t.is(r.code, 0, r.stderr);
  for (const secret of ['hunter2', 'hunter3', 'AGFsaWNlAGh1bnRlcjI=', 'tok-1', 'redis-pw', 'dialback-secret', 'in-thread']) t.false(r.stderr.includes(secret), `${secret} printed:\n${r.stderr}`);
  const got = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as Line);
  t.deepEqual(got.map((l) => l.msg), ['login', 'nested', 'shown at debug', 'from a worker'], r.stderr);
  const [login, nested, debug, worker] = got;
  t.like(login, { level: 'info', thread: 0, user: 'alice', password: '[redacted]', payload: '[redacted]' });
  t.true(!Number.isNaN(Date.parse(String(login.t))), 'an ISO time');
  t.like(nested, { level: 'warn', req: { password: '[redacted]', token: '[redacted]' }, url: 'redis://app:***@db:6379/0', s2sSecret: '[redacted]' });
  t.like(debug, { level: 'debug', sid: 'S1', jid: 'alice@localhost/r' });
  t.like(worker, { level: 'info', password: '[redacted]' });
  t.not(worker.thread, 0, "a worker's thread id");
});
