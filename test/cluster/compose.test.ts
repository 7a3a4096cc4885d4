// docker-compose.yml, cluster/Dockerfile and cluster/haproxy.cfg cannot be run
// here (no Docker engine): check their structure, and that they say what
// cluster/spec.ts and cluster/node.env say, which is what the local launcher runs.
import test from 'ava';
import { execFile } from 'node:child_process';
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import {
  ROOT, NODE_COMMAND, CERTS_COMMAND, HEALTHCHECK_COMMAND, NODE_ENV_FILE, C2S_PORT, TLS_PORT, S2S_PORT, HTTPS_PORT, SERVICES, CERT_DIR, CERT_FILE, KEY_FILE,
  DATA_DIR, UPLOAD_DIR, REDIS_PORT, REDIS_ARGS, MAX_REPLICAS, HAPROXY_CFG_PATH, LAUNCHER_OVERRIDES, POSTGRES_PORT, POSTGRES_USER, POSTGRES_DB,
  nodeEnv, parseEnvFile, redisUrl, postgresUrl, haproxyConfig, composeHaproxyConfig,
} from '../../cluster/spec.ts';
import { nodeProcess, redisArgs, freePort } from '../../cluster/launch.ts';
import { SETTINGS, loadConfig, proxyProtocolFromOf } from '../../src/config/index.ts';

const run = promisify(execFile);
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');

/* eslint-disable @typescript-eslint/no-explicit-any -- a parsed YAML document */
const compose: any = parse(read('docker-compose.yml'));
const services: Record<string, any> = compose.services;
const env = nodeEnv();

/** Compose's short volume syntax: source:target[:mode]. */
function mounts(svc: any): { source: string; target: string; ro: boolean }[] {
  return (svc.volumes ?? []).map((v: string) => {
    const [source, target, mode] = v.split(':');
    return { source, target, ro: mode === 'ro' };
  });
}

/** Go-style durations as compose writes them: 1m30s, 10s, 500ms. */
function durationMs(s: string): number {
  let ms = 0;
  for (const [, n, unit] of s.matchAll(/(\d+)(ms|s|m|h)/g)) ms += Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!;
  return ms;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function dockerfile(): { op: string; arg: string }[] {
  const text = read('cluster/Dockerfile').replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .filter((l) => l.trim() && !l.trimStart().startsWith('#'))
    .map((l) => {
      const m = /^\s*(\w+)\s+(.*)$/.exec(l)!;
      return { op: m[1].toUpperCase(), arg: m[2].trim() };
    });
}

test('the services are redis, postgres, certs, xmpp (the nodes) and lb', (t) => {
  t.deepEqual(Object.keys(services).sort(), Object.values(SERVICES).sort());
  for (const [name, svc] of Object.entries(services)) t.is(svc.container_name, undefined, `${name}: no fixed container name`);
});

test('redis persists its data: append-only file in a named volume, and a health check', (t) => {
  const redis = services[SERVICES.redis];
  t.regex(redis.image, /^redis:7/);
  t.deepEqual(redis.command, ['redis-server', ...REDIS_ARGS]);
  t.deepEqual(REDIS_ARGS.slice(0, 2), ['--appendonly', 'yes']);
  const data = mounts(redis).find((m) => m.target === '/data');
  t.truthy(data, 'a volume at /data');
  t.true(data!.source in (compose.volumes ?? {}), 'a named volume, declared at the top level');
  t.false(data!.ro);
  t.deepEqual(redis.healthcheck.test, ['CMD', 'redis-cli', 'ping']);
  t.is(redis.ports, undefined, 'redis is not published');
  // The launcher runs redis-server with the same persistence arguments.
  t.deepEqual(redisArgs(6380, '/tmp/x').slice(-REDIS_ARGS.length), [...REDIS_ARGS]);
});

test('postgres keeps the durable data: the official image, a named volume, a pg_isready health check, not published', (t) => {
  const postgres = services[SERVICES.postgres];
  t.regex(postgres.image, /^postgres:\d+$/, 'the official image, its major version pinned');
  const data = mounts(postgres).find((m) => m.target === '/var/lib/postgresql/data');
  t.truthy(data, "a volume at the image's data directory");
  t.true(data!.source in (compose.volumes ?? {}), 'a named volume, declared at the top level');
  t.false(data!.ro);
  t.like(postgres.environment, { POSTGRES_USER, POSTGRES_DB });
  t.truthy(postgres.environment.POSTGRES_PASSWORD, 'the image needs a password');
  // Ready only once the real server listens on TCP, for the role and database the nodes use.
  t.deepEqual(postgres.healthcheck.test, ['CMD', 'pg_isready', '-h', '127.0.0.1', '-U', POSTGRES_USER, '-d', POSTGRES_DB]);
  t.is(postgres.ports, undefined, 'postgres is not published');
});

test('the xmpp service runs the spec command with node.env and scales: no names, ports or ids fixed', (t) => {
  const xmpp = services[SERVICES.node];
  t.deepEqual(xmpp.build, { context: '.', dockerfile: 'cluster/Dockerfile' });
  t.deepEqual(xmpp.command, [...NODE_COMMAND]);
  t.is(xmpp.env_file, NODE_ENV_FILE);
  t.deepEqual(xmpp.environment, {
    XMPP_REDIS_URL: redisUrl(SERVICES.redis, REDIS_PORT),
    XMPP_DATABASE_URL: postgresUrl(SERVICES.postgres, POSTGRES_PORT, services[SERVICES.postgres].environment.POSTGRES_PASSWORD),
  });
  // What a node container is given is a valid cluster configuration (a cluster requires its database).
  t.like(loadConfig({ ...env, ...xmpp.environment }), { redisUrl: xmpp.environment.XMPP_REDIS_URL, databaseUrl: xmpp.environment.XMPP_DATABASE_URL });
  t.is(xmpp.ports, undefined, 'no host ports: replicas would collide');
  t.is(xmpp.hostname, undefined);
  t.is(xmpp.deploy?.replicas, undefined, 'the replica count comes from --scale');
  t.false('XMPP_NODE_ID' in env, 'no node id in node.env: each replica picks a random one');
  // Data per replica: the image's anonymous volume, never a named (shared) one at the data directory.
  t.false(mounts(xmpp).some((m) => m.target === DATA_DIR), 'no shared volume at the data directory');
  // Uploads (XEP-0363): one named volume every replica shares, where node.env puts them.
  const uploads = mounts(xmpp).find((m) => m.target === UPLOAD_DIR);
  t.truthy(uploads, 'the shared uploads volume');
  t.false(uploads!.ro);
  t.true(uploads!.source in (compose.volumes ?? {}), 'a named volume, declared at the top level');
  t.is(env.XMPP_UPLOAD_DIR, UPLOAD_DIR);
  const certs = mounts(xmpp).find((m) => m.target === CERT_DIR);
  t.truthy(certs, 'the shared certificate volume');
  t.true(certs!.ro);
  t.true(certs!.source in (compose.volumes ?? {}));
  t.deepEqual(xmpp.depends_on, {
    [SERVICES.redis]: { condition: 'service_healthy' },
    [SERVICES.postgres]: { condition: 'service_healthy' },
    [SERVICES.certs]: { condition: 'service_completed_successfully' },
  });
  // Compose must not kill a node before its own graceful-shutdown bound.
  t.true(durationMs(xmpp.stop_grace_period) >= Number(env.XMPP_SHUTDOWN_TIMEOUT_MS) + 2000 + 1000, `stop_grace_period ${xmpp.stop_grace_period}`);
});

test('the certs service creates the one certificate the nodes are configured with', (t) => {
  const certs = services[SERVICES.certs];
  t.deepEqual(certs.build, services[SERVICES.node].build, 'the same image as the nodes');
  t.is(certs.image, services[SERVICES.node].image);
  t.deepEqual(certs.command, [...CERTS_COMMAND]);
  t.is(certs.env_file, NODE_ENV_FILE, 'it reads the certificate paths and the domain from node.env');
  const vol = mounts(certs).find((m) => m.target === CERT_DIR);
  t.truthy(vol);
  t.false(vol!.ro);
  t.is(vol!.source, mounts(services[SERVICES.node]).find((m) => m.target === CERT_DIR)!.source, 'the volume the nodes mount');
  t.is(env.XMPP_TLS_CERT, `${CERT_DIR}/${CERT_FILE}`);
  t.is(env.XMPP_TLS_KEY, `${CERT_DIR}/${KEY_FILE}`);
});

test('the load balancer publishes 5222, 5223, 5269 and 5443 and uses the checked-in haproxy.cfg', (t) => {
  const lb = services[SERVICES.lb];
  t.regex(lb.image, /^haproxy:/);
  t.deepEqual(lb.ports, [`${C2S_PORT}:${C2S_PORT}`, `${TLS_PORT}:${TLS_PORT}`, `${S2S_PORT}:${S2S_PORT}`, `${HTTPS_PORT}:${HTTPS_PORT}`]);
  t.deepEqual(mounts(lb), [{ source: './cluster/haproxy.cfg', target: HAPROXY_CFG_PATH, ro: true }]);
  t.is(lb.env_file, NODE_ENV_FILE, 'XMPP_DOMAIN for the health check');
  t.deepEqual(Object.keys(lb.depends_on), [SERVICES.node]);
});

test('cluster/haproxy.cfg is what the spec generates, finds the replicas through DNS, and HAProxy accepts it', async (t) => {
  const cfg = read('cluster/haproxy.cfg');
  t.is(cfg, composeHaproxyConfig(), 'out of date: npm run -s cluster -- --write-compose-haproxy');
  for (const port of [C2S_PORT, TLS_PORT, S2S_PORT, HTTPS_PORT]) {
    t.true(cfg.includes(`\n    bind :${port}\n`), `frontend on ${port}`);
    t.true(cfg.includes(`server-template ${SERVICES.node} 1-${MAX_REPLICAS} ${SERVICES.node}:${port} send-proxy-v2 check`), `replicas of ${SERVICES.node} on ${port}`);
  }
  t.regex(cfg, /nameserver \S+ 127\.0\.0\.11:53/);
  for (const line of ['mode tcp', 'balance leastconn', 'timeout client 1h', 'timeout server 1h', 'timeout tunnel 1h'])
    t.true(cfg.includes(line), line);
  // Every backend is checked by the node's /readyz on its HTTPS port (it
  // accepts, reaches Redis and PostgreSQL), not by opening an XMPP stream.
  for (const name of ['xmpp_c2s', 'xmpp_tls', 'xmpp_s2s', 'xmpp_https']) {
    const b = new RegExp(`^backend ${name}\\n((?: {4}.*\\n?)*)`, 'm').exec(cfg);
    t.truthy(b, `a ${name} backend`);
    t.true(b![1].includes('    option httpchk GET /readyz\n    http-check expect status 200\n'), name);
    // A PROXY protocol header before every connection's bytes, the health checks' too.
    t.true(b![1].includes(` send-proxy-v2 check port ${HTTPS_PORT} check-ssl verify none check-send-proxy resolvers`), name);
    t.false(b![1].includes('tcp-check'), name);
  }
  // The launcher's configuration differs only in where the servers are.
  const launcher = haproxyConfig({ bind: '127.0.0.1', c2sPort: 1, tlsPort: 2, s2sPort: 3, httpsPort: 7, servers: { static: [{ name: 'node-1', host: '127.0.0.1', c2sPort: 4, tlsPort: 5, s2sPort: 6, httpsPort: 8 }] } });
  const common = (s: string) => s.split('\n').filter((l) => !/^\s*(bind|server|server-template|nameserver|accepted_payload_size|hold)\b|^resolvers|^#/.test(l) && l.trim());
  t.deepEqual(common(launcher), common(cfg));
  t.true(launcher.includes('\n    server node-1 127.0.0.1:6 send-proxy-v2 check port 8 check-ssl verify none check-send-proxy\n'), "the node's s2s port, checked on its HTTPS port");
  // Federation and web clients off in the launcher: no s2s pair, and no
  // HTTPS port to ask: a check opens a stream (client namespace; over TLS
  // for direct TLS) and expects the node's header.
  const noS2s = haproxyConfig({ bind: '127.0.0.1', c2sPort: 1, tlsPort: 2, servers: { static: [{ name: 'node-1', host: '127.0.0.1', c2sPort: 4, tlsPort: 5 }] } });
  t.false(noS2s.includes('xmpp_s2s'));
  t.false(noS2s.includes('readyz'));
  t.true(noS2s.includes(`    tcp-check connect send-proxy\n    tcp-check send "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='\${XMPP_DOMAIN}' version='1.0'>"\n    tcp-check expect string "<stream:stream"\n    server node-1 127.0.0.1:4 send-proxy-v2 check\n`));
  t.true(noS2s.includes('    tcp-check connect send-proxy ssl\n'));
  t.true(noS2s.includes('    server node-1 127.0.0.1:5 send-proxy-v2 check verify none\n'));
  // HAProxy accepts that form too.
  const noS2sFile = join(mkdtempSync(join(tmpdir(), 'haproxy-')), 'haproxy.cfg');
  t.teardown(() => rmSync(dirname(noS2sFile), { recursive: true, force: true }));
  writeFileSync(noS2sFile, noS2s);
  const checked = await run('haproxy', ['-c', '-f', noS2sFile], { env: { ...process.env, XMPP_DOMAIN: env.XMPP_DOMAIN } });
  t.regex(checked.stdout + checked.stderr, /Configuration file is valid/);
  const { stdout, stderr } = await run('haproxy', ['-c', '-f', join(ROOT, 'cluster/haproxy.cfg')], { env: { ...process.env, XMPP_DOMAIN: env.XMPP_DOMAIN } });
  t.regex(stdout + stderr, /Configuration file is valid/);
});

test('node.env holds only known, valid settings and agrees with the spec', (t) => {
  t.deepEqual(parseEnvFile(read(NODE_ENV_FILE)), env);
  const known = new Set(SETTINGS.map((s) => s.env));
  for (const k of [...Object.keys(env), ...LAUNCHER_OVERRIDES]) t.true(known.has(k), `${k} is a setting`);
  // As a container sees it: the environment only (every key of node.env is set there).
  const config = loadConfig({ ...env });
  t.is(config.c2sPort, C2S_PORT);
  t.is(config.tlsPort, TLS_PORT);
  t.true(config.s2s, 'federation on');
  t.is(config.s2sPort, S2S_PORT);
  t.is(config.httpsPort, String(HTTPS_PORT), 'web clients, through the load balancer');
  t.is(config.s2sBindHost, '0.0.0.0', 'peer servers reach it from the load balancer container too');
  t.is(config.dataDir, DATA_DIR);
  t.is(config.bindHost, '0.0.0.0', 'reachable from the load balancer container');
  t.is(config.tlsCert, `${CERT_DIR}/${CERT_FILE}`);
  // The load balancer says whom each connection is from (PROXY protocol),
  // from some address of compose's network: Docker's private ranges.
  t.false('XMPP_PER_IP_EXEMPT' in env, 'per-address limits apply: the nodes see the clients');
  const balancers = proxyProtocolFromOf(config);
  for (const lb of ['172.18.0.5', '192.168.16.3', '10.5.0.2']) t.true(balancers.check(lb, 'ipv4'), lb);
  t.false(balancers.check('127.0.0.1', 'ipv4'), "a node's own health check (127.0.0.1) sends no header");
  t.throws(() => parseEnvFile('A="quoted"'), { message: /quotes/ });
  t.throws(() => parseEnvFile('A=1 # note'), { message: /trailing comments/ });
  t.throws(() => parseEnvFile('export A=1'), { message: /KEY=VALUE/ });
});

test('the launcher runs the spec command with node.env, overriding only its per-node settings', (t) => {
  const shared = nodeEnv();
  const specs = [0, 1].map((index) => nodeProcess({ index, dir: '/run/c', redisUrl: 'redis://127.0.0.1:1', databaseUrl: 'postgres://xmpp@127.0.0.1:2/xmpp', certFile: '/run/c/certs/cluster.crt', keyFile: '/run/c/certs/cluster.key', portBase: 7000, shared }));
  for (const s of specs) {
    t.is(s.command, process.execPath, '`node` is this Node.js');
    t.deepEqual(s.args, [join(ROOT, NODE_COMMAND[1]), ...NODE_COMMAND.slice(2)]);
    for (const [k, v] of Object.entries(shared)) if (!(LAUNCHER_OVERRIDES as readonly string[]).includes(k)) t.is(s.env[k], v, k);
    t.deepEqual(Object.keys(s.env).filter((k) => k.startsWith('XMPP_')).sort(), [...new Set([...Object.keys(shared), ...LAUNCHER_OVERRIDES])].sort());
  }
  t.deepEqual(specs.map((s) => s.env.XMPP_NODE_ID), ['node-1', 'node-2']);
  t.deepEqual(specs.map((s) => [s.env.XMPP_C2S_PORT, s.env.XMPP_TLS_PORT, s.env.XMPP_S2S_PORT, s.env.XMPP_HTTPS_PORT]), [['7000', '7001', '7002', '7003'], ['7004', '7005', '7006', '7007']]);
  // host-meta names the balancer's HTTPS port, which the launcher gives every node.
  const lb = nodeProcess({ index: 0, dir: '/run/c', redisUrl: 'redis://127.0.0.1:1', databaseUrl: 'postgres://xmpp@127.0.0.1:2/xmpp', certFile: 'c', keyFile: 'k', portBase: 0, shared, publicHttpsPort: 6443 });
  t.is(lb.env.XMPP_HTTP_PUBLIC_URL, `https://${shared.XMPP_DOMAIN}:6443`);
  // Without a base every node picks free ports.
  const free = nodeProcess({ index: 1, dir: '/run/c', redisUrl: 'redis://127.0.0.1:1', databaseUrl: 'postgres://xmpp@127.0.0.1:2/xmpp', certFile: 'c', keyFile: 'k', portBase: 0, shared });
  t.deepEqual([free.env.XMPP_C2S_PORT, free.env.XMPP_TLS_PORT, free.env.XMPP_S2S_PORT, free.env.XMPP_HTTPS_PORT], ['0', '0', '0', '0']);
  t.not(specs[0].env.XMPP_DATA_DIR, specs[1].env.XMPP_DATA_DIR);
  t.is(specs[0].env.XMPP_UPLOAD_DIR, specs[1].env.XMPP_UPLOAD_DIR, 'one uploads directory for every node');
  t.is(specs[0].env.XMPP_UPLOAD_DIR, '/run/c/uploads');
  t.is(specs[0].env.XMPP_PROXY_PROTOCOL_FROM, '127.0.0.1', "the launcher's HAProxy, on 127.0.0.1");
});

test('the Dockerfile: Node 26, the spec command, non-root, ports, data volume, health check', (t) => {
  const ins = dockerfile();
  const all = (op: string) => ins.filter((i) => i.op === op).map((i) => i.arg);
  t.deepEqual(all('FROM').length, 1);
  t.regex(all('FROM')[0], /^node:26(\.|-|$)/);
  t.deepEqual(JSON.parse(all('CMD').at(-1)!), [...NODE_COMMAND]);
  const hc = /^(?:--\S+\s+)*CMD\s+(\[.*\])$/.exec(all('HEALTHCHECK').at(-1)!);
  t.truthy(hc, 'HEALTHCHECK CMD [...]');
  t.deepEqual(JSON.parse(hc![1]), [...HEALTHCHECK_COMMAND]);
  t.is(all('STOPSIGNAL').at(-1), 'SIGTERM');
  t.deepEqual(all('EXPOSE').join(' ').split(/\s+/).map(Number).sort(), [C2S_PORT, TLS_PORT, S2S_PORT, HTTPS_PORT]);
  const user = all('USER').at(-1);
  t.truthy(user);
  t.not(user, 'root');
  t.not(user, '0');
  t.true(all('VOLUME').some((v) => v.includes(`"${DATA_DIR}"`) || v === DATA_DIR));
  // The shared uploads volume starts out writable by the node user (a named volume takes the image directory's owner).
  t.true(all('RUN').some((r) => new RegExp(`mkdir -p .*${UPLOAD_DIR}\\b.*chown node:node .*${UPLOAD_DIR}\\b`).test(r)), 'the uploads directory made and given to the node user');
  // ENV defaults agree with node.env where both set a value.
  const dockerEnv = Object.fromEntries(all('ENV').flatMap((a) => [...a.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1], m[2]])));
  t.is(dockerEnv.XMPP_DATA_DIR, DATA_DIR);
  for (const [k, v] of Object.entries(dockerEnv)) if (k in env) t.is(v, env[k], k);
  // What the containers run is in the image.
  const copied = all('COPY').join(' ');
  for (const file of [NODE_COMMAND[1], CERTS_COMMAND[1], HEALTHCHECK_COMMAND[1]]) {
    const dir = file.slice(0, file.indexOf('/') + 1);
    t.true(copied.includes(file) || copied.includes(`${dir} `), `${file} is copied`);
    t.true(existsSync(join(ROOT, file)), `${file} exists`);
  }
  t.true(copied.includes('package-lock.json'));
  t.true(all('RUN').some((r) => /npm ci --omit=dev/.test(r)));
});

test('cluster/certs.ts (the certs service) creates the pair once, then keeps it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-certs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cenv = { ...process.env, XMPP_DOMAIN: 'chat.example.org', XMPP_TLS_CERT: join(dir, 'c', CERT_FILE), XMPP_TLS_KEY: join(dir, 'c', KEY_FILE) };
  const first = await run(process.execPath, [join(ROOT, CERTS_COMMAND[1])], { env: cenv });
  t.regex(first.stdout, /created/);
  const made = statSync(cenv.XMPP_TLS_CERT).mtimeMs;
  const { stdout: text } = await run('openssl', ['x509', '-in', cenv.XMPP_TLS_CERT, '-noout', '-subject', '-ext', 'subjectAltName']);
  t.regex(text, /DNS:chat\.example\.org, DNS:\*\.chat\.example\.org/);
  const again = await run(process.execPath, [join(ROOT, CERTS_COMMAND[1])], { env: cenv });
  t.regex(again.stdout, /exists, kept/);
  t.is(statSync(cenv.XMPP_TLS_CERT).mtimeMs, made);
});

test('cluster/healthcheck.ts (the container health check) fails when nothing answers', async (t) => {
  const port = await freePort();
  const err = await t.throwsAsync(run(process.execPath, [join(ROOT, HEALTHCHECK_COMMAND[1])], { env: { ...process.env, XMPP_C2S_PORT: String(port), XMPP_HTTP_PORT: '', XMPP_HTTPS_PORT: '' } }));
  t.is((err as unknown as { code: number }).code, 1);
  t.regex((err as unknown as { stderr: string }).stderr, /unhealthy: .*ECONNREFUSED/);
});

test('cluster/healthcheck.ts asks /readyz when the node has an HTTP listener: 200 is healthy, 503 is not', async (t) => {
  // What a node answers, ready or not (the node's own answers are tested in test/cluster/health.test.ts).
  let status = 200;
  const asked: string[] = [];
  const server = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    res.writeHead(status, { 'Content-Type': 'text/plain' }).end(status === 200 ? 'ready\n' : 'not ready: database unreachable\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = String((server.address() as AddressInfo).port);
  // No stream is opened: the c2s port given leads nowhere.
  const env = { ...process.env, XMPP_HTTP_PORT: port, XMPP_HTTPS_PORT: '', XMPP_C2S_PORT: String(await freePort()) };
  await run(process.execPath, [join(ROOT, HEALTHCHECK_COMMAND[1])], { env });
  t.deepEqual(asked, ['GET /readyz']);
  status = 503;
  const err = await t.throwsAsync(run(process.execPath, [join(ROOT, HEALTHCHECK_COMMAND[1])], { env }));
  t.is((err as unknown as { code: number }).code, 1);
  t.regex((err as unknown as { stderr: string }).stderr, /unhealthy: .*\/readyz answered 503: not ready: database unreachable/);
});
