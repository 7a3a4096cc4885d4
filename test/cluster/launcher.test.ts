// The local cluster launcher for real: redis-server, PostgreSQL, two nodes
// and HAProxy on free ports; clients log in through the load balancer only.
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { watch } from 'node:fs/promises';
import net from 'node:net';
import https from 'node:https';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { launchCluster, LaunchError, freePort } from '../../cluster/launch.ts';
import type { ClusterProcess } from '../../cluster/launch.ts';
import { ROOT, HEALTHCHECK_COMMAND } from '../../cluster/spec.ts';
import { login, RawClient, header, parseAttrs, plainAuth } from '../helpers/raw.ts';
import { NS_FRAMING, WsClient, openStream, scramLogin, wsBind } from '../helpers/ws.ts';
import { within, secured, saslCondition } from '../helpers/protocol.ts';
import { BoshClient, boshBind, boshScram } from '../helpers/bosh.ts';
import { reply } from '../helpers/http.ts';

const run = promisify(execFile);
// Generous for a loaded CI machine; the failover below does not wait for it.
// Two failed authentications lock an address out, to see the per-address
// limits apply behind the balancer.
const env = { XMPP_WORKERS: '1', XMPP_NODE_LEASE_MS: '3000', XMPP_AUTH_FAILURES_PER_IP: '2' };
const onLinux = process.platform === 'linux';

/** Is a process with this pid still there? */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

async function refused(port: number): Promise<boolean> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  try {
    await once(sock, 'connect');
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  } finally {
    sock.destroy();
  }
}

/** Resolves once `file` (a process's log) holds a line matching `re`, read again each time it changes. */
async function logged(file: string, re: RegExp, what: string): Promise<void> {
  const stop = new AbortController();
  const seen = (async () => {
    if (re.test(readFileSync(file, 'utf8'))) return;
    for await (const _ of watch(file, { signal: stop.signal })) if (re.test(readFileSync(file, 'utf8'))) return;
  })();
  try {
    await within(seen, 30_000, what);
  } finally {
    stop.abort();
    await seen.catch(() => {});
  }
}

async function record(r: Redis, bare: string, resource: string): Promise<{ node: string }> {
  const raw = await r.hget(`xmpp:s:${bare}`, resource);
  if (!raw) throw new Error(`no registry record for ${bare}/${resource}`);
  return JSON.parse(raw);
}

test('two nodes behind haproxy: CLI account, logins spread by the balancer, messages, failover, clean stop', async (t) => {
  const cluster = await launchCluster({ nodes: 2, c2sPort: 0, tlsPort: 0, s2sPort: 0, httpsPort: 0, env });
  t.teardown(() => cluster.stop());
  const all: ClusterProcess[] = [...cluster.nodes, cluster.redis, cluster.postgres, cluster.haproxy];
  t.regex(cluster.databaseUrl, /^postgres:\/\/xmpp@127\.0\.0\.1:\d+\/xmpp$/);
  t.deepEqual(cluster.nodes.map((n) => n.name), ['node-1', 'node-2']);
  t.is(new Set(cluster.nodes.flatMap((n) => [n.c2sPort, n.tlsPort, n.s2sPort, n.httpsPort])).size, 8, 'distinct node ports');

  // A cluster-wide account through the CLI, as the launcher's summary says: in PostgreSQL, nothing of it in Redis.
  for (const u of ['alice', 'bob']) {
    const { stdout } = await run(process.execPath, [join(ROOT, 'src/main.ts'), 'user', 'add', u, `${u}-pw`], {
      cwd: cluster.dir,
      env: { ...process.env, XMPP_REDIS_URL: cluster.redisUrl, XMPP_DATABASE_URL: cluster.databaseUrl, XMPP_DOMAIN: cluster.domain },
    });
    t.is(stdout.trim(), `added ${u}@localhost`);
  }
  const db = new pg.Client({ connectionString: cluster.databaseUrl });
  await db.connect();
  t.deepEqual((await db.query<{ username: string }>('SELECT username FROM accounts ORDER BY username')).rows.map((row) => row.username), ['alice', 'bob']);
  await db.end();

  // The container health check passes through the balancer, with a stream and with the nodes' /readyz.
  await t.notThrowsAsync(run(process.execPath, [join(ROOT, HEALTHCHECK_COMMAND[1])], { env: { ...process.env, XMPP_C2S_PORT: String(cluster.c2sPort), XMPP_HTTP_PORT: '', XMPP_HTTPS_PORT: '' } }));
  await t.notThrowsAsync(run(process.execPath, [join(ROOT, HEALTHCHECK_COMMAND[1])], { env: { ...process.env, XMPP_HTTPS_PORT: String(cluster.httpsPort), XMPP_C2S_PORT: '1' } }));
  // The nodes take connections from 127.0.0.1 (the balancer's address) only
  // with a PROXY protocol header: a stream straight to a node is closed unanswered.
  const around = await RawClient.connect(cluster.nodes[0].c2sPort);
  t.teardown(() => around.destroy());
  around.send(header());
  await within(around.closed, 30_000, 'a stream around the balancer to be closed');
  t.is(around.buffer, '');

  // Both logins go through the load balancer; leastconn puts the second
  // (while the first is open) on the other node.
  const { c: a } = await login(cluster.c2sPort, 'alice', 'alice-pw', 'one');
  t.teardown(() => a.destroy());
  const { c: b, jid: jb } = await login(cluster.c2sPort, 'bob', 'bob-pw', 'two');
  t.teardown(() => b.destroy());
  const r = new Redis(cluster.redisUrl);
  t.teardown(() => r.disconnect());
  t.deepEqual(await r.keys('xmpp:acct:*'), [], 'no account in Redis');
  const onA = (await record(r, 'alice@localhost', 'one')).node;
  const onB = (await record(r, 'bob@localhost', 'two')).node;
  t.deepEqual([onA, onB].sort(), ['node-1', 'node-2'], 'one session on each node');

  // A message between the two nodes, both ends behind the load balancer.
  const mark = b.buffer.length;
  a.send(`<message to='${jb}' type='chat'><body>through the balancer</body></message>`);
  await b.waitFor(/<body>through the balancer<\/body>/, mark);

  // Direct TLS through the load balancer reaches a node too.
  const d = await RawClient.connect(cluster.tlsPort, { directTls: true });
  t.teardown(() => d.destroy());
  t.truthy(d.tlsProtocol);
  await d.exchange(header(), /<mechanism>PLAIN<\/mechanism>[\s\S]*<\/stream:features>/);
  d.destroy();

  // A web client through the load balancer: host-meta names the balancer's
  // wss:// endpoint, and a WebSocket session there talks to a TCP one (on
  // whichever node each landed).
  const ca = readFileSync(cluster.certFile);
  const meta = (await reply(https.request({ host: '127.0.0.1', port: cluster.httpsPort, path: '/.well-known/host-meta.json', servername: cluster.domain, ca }), 'host-meta through the balancer')).body;
  t.deepEqual(JSON.parse(meta).links, [
    { rel: 'urn:xmpp:alt-connections:websocket', href: `wss://${cluster.domain}:${cluster.httpsPort}/xmpp-websocket` },
    { rel: 'urn:xmpp:alt-connections:xbosh', href: `https://${cluster.domain}:${cluster.httpsPort}/http-bind` },
  ]);
  const web = await WsClient.connect(`wss://${cluster.domain}:${cluster.httpsPort}/xmpp-websocket`, { ca });
  t.teardown(() => web.close());
  await openStream(web);
  await scramLogin(web, 'alice', 'alice-pw');
  const webJid = await wsBind(web, 'web');
  const markW = b.buffer.length;
  web.send(`<message xmlns='jabber:client' to='${jb}' type='chat'><body>from the web</body></message>`);
  await b.waitFor(/<body>from the web<\/body>/, markW);
  b.send(`<message to='${webJid}' type='chat'><body>to the web</body></message>`);
  t.is((await web.find((el) => el.name === 'message')).getChildText('body'), 'to the web');
  await web.close();

  // BOSH through the load balancer: its connections go to any node, and
  // each request reaches the node its session lives on (forwarded there).
  const bosh = new BoshClient(`https://${cluster.domain}:${cluster.httpsPort}/http-bind`, { ca, agents: 3 });
  t.teardown(() => bosh.close());
  await bosh.create({ to: cluster.domain });
  await boshScram(bosh, 'alice', 'alice-pw');
  const boshJid = await boshBind(bosh, 'bosh');
  for (let i = 0; i < 6; i++) {
    await bosh.send(`<iq xmlns='jabber:client' type='get' id='lb${i}'><ping xmlns='urn:xmpp:ping'/></iq>`);
    t.is((await bosh.find((el) => el.attrs.id === `lb${i}`)).attrs.type, 'result');
  }
  const markB = b.buffer.length;
  const sending = bosh.send(`<message xmlns='jabber:client' to='${jb}' type='chat'><body>from BOSH</body></message>`);
  await b.waitFor(/<body>from BOSH<\/body>/, markB);
  b.send(`<message to='${boshJid}' type='chat'><body>to BOSH</body></message>`);
  t.is((await bosh.find((el) => el.name === 'message')).getChildText('body'), 'to BOSH');
  await sending;

  // A peer server's stream through the load balancer reaches a node, which
  // answers as the cluster's domain (STARTTLS would follow, end to end).
  const s = await RawClient.connect(cluster.s2sPort!);
  t.teardown(() => s.destroy());
  const [opened] = await s.exchange(
    `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='peer.example' to='${cluster.domain}' version='1.0'>`,
    /<stream:stream\b[^>]*>/,
  );
  t.like(parseAttrs(opened), { xmlns: 'jabber:server', from: cluster.domain });
  s.destroy();

  // The nodes see each client's address, which the balancer's PROXY header
  // names (every 127/8 address is the loopback on Linux; without the header
  // they would all be 127.0.0.1): their logs name it, and their per-address
  // limits count it. 127.0.0.3 is refused once it has failed twice on a node
  // (each node counts its own: within 2 x 2 + 1 attempts), while 127.0.0.1
  // (exempt by default) and 127.0.0.2 log in.
  if (onLinux) {
    const named = await within(secured(cluster.c2sPort, undefined, undefined, '127.0.0.2'), 30_000, 'a stream from 127.0.0.2');
    t.teardown(() => named.c.destroy());
    named.c.send(plainAuth('bob', 'bob-pw'));
    t.is((await named.c.nextEl()).name, 'success');
    const line = /^(?=.*"msg":"authenticated")(?=.*"user":"bob")(?=.*"ip":"127\.0\.0\.2").*$/m;
    await Promise.any(cluster.nodes.map((n) => logged(n.logFile, line, `a node to log bob's login from 127.0.0.2`)));
    named.c.destroy();
    const outcomes: (string | undefined)[] = [];
    while (outcomes.length < 5 && !outcomes.includes('temporary-auth-failure')) {
      const { c } = await within(secured(cluster.c2sPort, undefined, undefined, '127.0.0.3'), 30_000, 'a stream from 127.0.0.3');
      c.send(plainAuth('alice', `guess-${outcomes.length}`));
      outcomes.push(saslCondition(await c.nextEl()));
      c.destroy();
    }
    t.is(outcomes.at(-1), 'temporary-auth-failure', `outcomes from 127.0.0.3: ${outcomes.join(', ')}`);
    t.true(outcomes.slice(0, -1).every((o) => o === 'not-authorized'));
    await Promise.any(cluster.nodes.map((n) => logged(n.logFile, /^(?=.*too many failed authentications from one address)(?=.*"ip":"127\.0\.0\.3").*$/m, 'a node to log the lock-out of 127.0.0.3')));
    const again = await within(secured(cluster.c2sPort, undefined, undefined, '127.0.0.2'), 30_000, 'a stream from 127.0.0.2');
    again.c.send(plainAuth('alice', 'alice-pw'));
    t.is((await again.c.nextEl()).name, 'success');
    again.c.destroy();
  }

  // The balancer asks every node's /readyz: with PostgreSQL refusing
  // connections, each node says 503 and is taken out of every backend;
  // once PostgreSQL is back, they are put back. Sessions stay where they are.
  const admin = new pg.Client({ connectionString: cluster.databaseUrl.replace(/\/xmpp$/, '/postgres') });
  admin.on('error', () => {});
  await admin.connect();
  await admin.query('ALTER DATABASE xmpp WITH ALLOW_CONNECTIONS false');
  await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'xmpp'");
  for (const n of cluster.nodes) await logged(cluster.haproxy.logFile, new RegExp(`xmpp_c2s/${n.name} is DOWN, reason: Layer7 wrong status, code: 503`), `haproxy to take ${n.name} out`);
  await admin.query('ALTER DATABASE xmpp WITH ALLOW_CONNECTIONS true');
  await admin.end();
  for (const n of cluster.nodes) await logged(cluster.haproxy.logFile, new RegExp(`xmpp_c2s/${n.name} is UP`), `haproxy to put ${n.name} back`);
  const mark1 = b.buffer.length;
  a.send(`<message to='${jb}' type='chat'><body>still here</body></message>`);
  await b.waitFor(/<body>still here<\/body>/, mark1);

  // Failover: kill -9 the node holding bob. His connection ends; logging in
  // again through the balancer lands on the survivor at once (the refused
  // connection is retried on another node), without waiting for the lease.
  const doomed = cluster.nodes.find((n) => n.name === onB)!;
  doomed.kill('SIGKILL');
  t.is((await doomed.exited).signal, 'SIGKILL');
  await b.closed;
  const { c: b2, jid: jb2 } = await login(cluster.c2sPort, 'bob', 'bob-pw', 'three');
  t.teardown(() => b2.destroy());
  t.is((await record(r, 'bob@localhost', 'three')).node, onA);
  const mark2 = b2.buffer.length;
  a.send(`<message to='${jb2}' type='chat'><body>after failover</body></message>`);
  await b2.waitFor(/<body>after failover<\/body>/, mark2);

  // Stop: every process exits, the survivor gracefully (streams closed with
  // system-shutdown; a web client's with <close see-other-uri/> naming the
  // balancer's endpoint, RFC 7395 §3.6.1).
  // (Through the balancer: the survivor is the only node left.)
  const web2 = await WsClient.connect(`wss://${cluster.domain}:${cluster.httpsPort}/xmpp-websocket`, { ca });
  t.teardown(() => web2.close());
  await openStream(web2);
  await scramLogin(web2, 'alice', 'alice-pw');
  await wsBind(web2, 'web2');
  const closing = a.waitFor(/<system-shutdown/);
  const redirected = web2.find((el) => el.name === 'close', 30_000);
  r.disconnect();
  await cluster.stop();
  await closing;
  const close = await redirected;
  t.is(close.attrs.xmlns, NS_FRAMING);
  t.is(close.attrs['see-other-uri'], `wss://${cluster.domain}:${cluster.httpsPort}/xmpp-websocket`);
  for (const p of all) {
    t.false(p.running, `${p.name} exited`);
    t.false(alive(p.pid), `${p.name} (pid ${p.pid}) is gone`);
  }
  const survivor = cluster.nodes.find((n) => n.name === onA)!;
  t.deepEqual(await survivor.exited, { code: 0, signal: null });
  t.false(existsSync(cluster.dir), 'the temporary run directory is removed');
  t.true(await refused(cluster.c2sPort), 'nothing listens on the balancer port any more');
});

test('a node that cannot start fails the launch, and what was started is stopped', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-launch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [redisPort, postgresPort] = [await freePort(), await freePort()];
  const err = await t.throwsAsync(launchCluster({ nodes: 2, c2sPort: 0, tlsPort: 0, s2sPort: 0, httpsPort: 0, redisPort, postgresPort, dir, env: { XMPP_WORKERS: '0' } }), { instanceOf: LaunchError });
  t.regex(err!.message, /node-\d exited before listening[\s\S]*XMPP_WORKERS must be at least 1/);
  t.true(await refused(redisPort), 'redis-server was stopped');
  t.true(await refused(postgresPort), 'postgres was stopped');
  t.true(existsSync(join(dir, 'node-1.log')), 'a given run directory is kept, logs included');
});

test('settings the launcher owns cannot be passed through env', async (t) => {
  await t.throwsAsync(launchCluster({ nodes: 1, env: { XMPP_NODE_ID: 'x' } }), { instanceOf: LaunchError, message: /sets XMPP_NODE_ID itself/ });
});

test('npm run cluster: prints the summary, and on SIGINT stops everything and exits 0', async (t) => {
  const cli = spawn(process.execPath, [join(ROOT, 'cluster/launch.ts'), '--nodes', '1', '--c2s-port', '0', '--tls-port', '0', '--s2s-port', '0', '--https-port', '0', '--env', 'XMPP_WORKERS=1'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(cli, 'exit');
  t.teardown(() => {
    if (cli.exitCode === null && cli.signalCode === null) cli.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    cli.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ctrl-C stops the cluster.')) resolve();
    });
    cli.once('exit', (code) => reject(new Error(`launcher exited with ${code}:\n${out}${err}`)));
  });
  const command = /XMPP_REDIS_URL=redis:\/\/127\.0\.0\.1:\d+ XMPP_DATABASE_URL=postgres:\/\/xmpp@127\.0\.0\.1:\d+\/xmpp XMPP_DOMAIN=localhost npm run -s cli -- user add alice/.exec(out);
  t.truthy(command, 'the exact command to add a user');
  t.regex(out, /peer servers connect to {2}127\.0\.0\.1:\d+\n/);
  t.regex(out, /web clients connect to {2}wss:\/\/localhost:\d+\/xmpp-websocket\n/);
  t.regex(out, /^ {2}node-1 .* 127\.0\.0\.1:\d+ \/ \d+ \/ s2s \d+ \/ https \d+ /m);
  const pids = [...out.matchAll(/^\s+(node-1|redis|postgres|haproxy)\s+pid (\d+)/gm)].map((m) => Number(m[2]));
  t.is(pids.length, 4, out);
  // Should the launcher fail to stop them, they do not outlive the test.
  t.teardown(() => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  for (const pid of pids) t.true(alive(pid));
  cli.kill('SIGINT');
  const [code, signal] = await exited;
  t.deepEqual({ code, signal }, { code: 0, signal: null }, err);
  t.regex(err, /cluster stopped/);
  for (const pid of pids) t.false(alive(pid), `pid ${pid} is gone`);
});

test('npm run cluster without redis-server and haproxy: says what to install, installs nothing', async (t) => {
  const err = await t.throwsAsync(run(process.execPath, [join(ROOT, 'cluster/launch.ts')], { env: { ...process.env, PATH: '/nonexistent' } }));
  const e = err as unknown as { code: number; stderr: string };
  t.is(e.code, 1);
  t.regex(e.stderr, /missing on PATH: redis-server, haproxy, openssl\. On Debian or Ubuntu: sudo apt-get install redis-server haproxy openssl/);
});

test('a run directory given with dir keeps the accounts (PostgreSQL data directory) and the certificate across launches', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-launch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cli = (c: { redisUrl: string; databaseUrl: string }, ...args: string[]) =>
    run(process.execPath, [join(ROOT, 'src/main.ts'), 'user', ...args], { cwd: dir, env: { ...process.env, XMPP_REDIS_URL: c.redisUrl, XMPP_DATABASE_URL: c.databaseUrl } });
  const first = await launchCluster({ nodes: 1, c2sPort: 0, tlsPort: 0, s2sPort: 0, httpsPort: 0, dir, env });
  t.teardown(() => first.stop());
  await cli(first, 'add', 'carol', 'carol-pw');
  const cert = readFileSync(first.certFile, 'utf8');
  await first.stop();
  t.true(existsSync(join(dir, 'postgres', 'PG_VERSION')), 'the database is kept in the run directory');

  const second = await launchCluster({ nodes: 1, c2sPort: 0, tlsPort: 0, s2sPort: 0, httpsPort: 0, dir, env });
  t.teardown(() => second.stop());
  t.is((await cli(second, 'list')).stdout, 'carol@localhost\n');
  t.is(readFileSync(second.certFile, 'utf8'), cert, 'the same certificate');
  const { c } = await login(second.c2sPort, 'carol', 'carol-pw');
  c.destroy();
  await second.stop();
});

test('a load balancer port in use fails the launch before anything starts', async (t) => {
  const busy = net.createServer();
  busy.listen(0, '127.0.0.1');
  await once(busy, 'listening');
  t.teardown(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  await t.throwsAsync(launchCluster({ nodes: 1, c2sPort: port, tlsPort: 0, s2sPort: 0, httpsPort: 0, env }), { instanceOf: LaunchError, message: new RegExp(`port ${port} is not available .*--c2s-port`) });
  await t.throwsAsync(launchCluster({ nodes: 1, c2sPort: 0, tlsPort: 0, s2sPort: port, httpsPort: 0, env }), { instanceOf: LaunchError, message: new RegExp(`port ${port} is not available .*--s2s-port`) });
});
