import test from 'ava';
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { loadConfig, componentsOf, s2sHostsOf, dnsServersOf, uploadTypesOf, extdiscoServicesOf, ConfigError, ROOT, SETTINGS } from '../src/config/index.ts';

test('defaults give a single node on the standard ports', (t) => {
  const c = loadConfig({});
  t.is(c.c2sPort, 5222);
  t.is(c.tlsPort, 5223);
  t.true(c.tlsRequired);
  t.is(c.redisUrl, '');
});

test('environment variables override defaults and are validated by name', (t) => {
  t.is(loadConfig({ XMPP_C2S_PORT: '15222' }).c2sPort, 15222);
  const err = t.throws(() => loadConfig({ XMPP_C2S_PORT: 'abc' }), { instanceOf: ConfigError });
  t.regex(err!.message, /XMPP_C2S_PORT/);
  t.regex(t.throws(() => loadConfig({ XMPP_SCRAM_ITERATIONS: '10' }))!.message, /XMPP_SCRAM_ITERATIONS.*at least 4096/);
  t.regex(t.throws(() => loadConfig({ XMPP_CONFLICT_POLICY: 'x' }))!.message, /XMPP_CONFLICT_POLICY/);
  // Durable stream management state is for a cluster: a single node has nothing to keep it for.
  t.regex(t.throws(() => loadConfig({ XMPP_SM_DURABLE: 'true' }), { instanceOf: ConfigError })!.message, /XMPP_SM_DURABLE needs a cluster/);
  t.is(loadConfig({ XMPP_SM_DURABLE: 'true', XMPP_REDIS_URL: 'redis://127.0.0.1:1', XMPP_DATABASE_URL: 'postgres://127.0.0.1:1/x' }).smDurable, true);
  // A cluster keeps its durable data in PostgreSQL, never in Redis.
  const cluster = t.throws(() => loadConfig({ XMPP_REDIS_URL: 'redis://127.0.0.1:1' }), { instanceOf: ConfigError })!.message;
  t.regex(cluster, /^XMPP_REDIS_URL \(a cluster\) needs XMPP_DATABASE_URL: .*PostgreSQL.*"Running a cluster" in README\.md.*db import-redis/);
  t.like(loadConfig({ XMPP_REDIS_URL: 'redis://127.0.0.1:1', XMPP_DATABASE_URL: 'postgres://127.0.0.1:1/x' }), { redisUrl: 'redis://127.0.0.1:1', databaseUrl: 'postgres://127.0.0.1:1/x' });
  // External components (XEP-0114) and client certificates: malformed values are refused at start.
  for (const [env, re] of [
    [{ XMPP_COMPONENT_PORT: 'abc' }, /XMPP_COMPONENT_PORT must be a port number/],
    [{ XMPP_COMPONENT_PORT: '70000' }, /XMPP_COMPONENT_PORT must be a port number/],
    [{ XMPP_COMPONENTS: 'bots.localhost' }, /XMPP_COMPONENTS must be 'domain=secret/],
    [{ XMPP_COMPONENTS: 'bots.localhost=' }, /XMPP_COMPONENTS must be 'domain=secret/],
    [{ XMPP_COMPONENTS: 'not a domain=x' }, /XMPP_COMPONENTS: "not a domain" is not a domain/],
    [{ XMPP_COMPONENTS: 'localhost=x' }, /the server's own domain/],
    [{ XMPP_TLS_CA: '/nonexistent/ca.pem' }, /XMPP_TLS_CA: no such file/],
    // Federation and the database: malformed values are refused at start too.
    [{ XMPP_S2S_TLS_PORT: 'x' }, /XMPP_S2S_TLS_PORT must be a port number/],
    [{ XMPP_S2S_HOSTS: 'peer.example' }, /XMPP_S2S_HOSTS must be 'domain=host:port/],
    [{ XMPP_S2S_HOSTS: 'peer.example=host' }, /XMPP_S2S_HOSTS must be 'domain=host:port/],
    [{ XMPP_S2S_HOSTS: 'peer.example=host:99999' }, /XMPP_S2S_HOSTS must be 'domain=host:port/],
    [{ XMPP_S2S_HOSTS: 'not a domain=h:1' }, /XMPP_S2S_HOSTS must be 'domain=host:port/],
    [{ XMPP_S2S_DNS_SERVERS: 'dns.example' }, /XMPP_S2S_DNS_SERVERS must be/],
    [{ XMPP_S2S_DNS_SERVERS: '[::1]:70000' }, /XMPP_S2S_DNS_SERVERS must be/],
    [{ XMPP_DATABASE_URL: 'mysql://x' }, /XMPP_DATABASE_URL must be a postgres:\/\/ URL/],
  ] as const) t.regex(t.throws(() => loadConfig(env), { instanceOf: ConfigError })!.message, re, JSON.stringify(env));
  t.deepEqual([...componentsOf(loadConfig({ XMPP_COMPONENTS: 'Bots.Localhost=s1, gw.localhost=s=2' })).entries()], [['bots.localhost', 's1'], ['gw.localhost', 's=2']]);
  t.deepEqual([...s2sHostsOf(loadConfig({ XMPP_S2S_HOSTS: 'Peer.Example=10.0.0.1:5269, v6.example=[::1]:5270' })).entries()], [['peer.example', { host: '10.0.0.1', port: 5269 }], ['v6.example', { host: '::1', port: 5270 }]]);
  t.deepEqual(dnsServersOf(loadConfig({ XMPP_S2S_DNS_SERVERS: '10.0.0.53, 10.0.0.54:5353, [::1]:53' })), ['10.0.0.53', '10.0.0.54:5353', '[::1]:53']);
});

test('XMPP_NODE_ID unset: each load, and each process, gets its own id in the documented form (node- + 8 hex digits)', (t) => {
  const FORM = /^node-[0-9a-f]{8}$/;
  const ids = Array.from({ length: 100 }, () => loadConfig({}).nodeId);
  for (const id of ids) t.regex(id, FORM);
  t.is(new Set(ids).size, ids.length, 'no two loads share an id');
  // Two processes, each loading the configuration the way a node does at start.
  const script = `import { loadConfig } from ${JSON.stringify(new URL('../src/config/index.ts', import.meta.url).pathname)}; process.stdout.write(loadConfig({}).nodeId);`;
  const run = () => execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  const [p1, p2] = [run(), run()];
  t.regex(p1, FORM);
  t.regex(p2, FORM);
  t.not(p1, p2, 'two processes, two ids');
  t.is(loadConfig({ XMPP_NODE_ID: 'edge-7' }).nodeId, 'edge-7', 'when set, it is used as is');
  for (const bad of ['', 'a b', 'x:y', 'n'.repeat(65)]) {
    t.throws(() => loadConfig({ XMPP_NODE_ID: bad }), { instanceOf: ConfigError, message: /^XMPP_NODE_ID must be 1 to 64 letters/ }, JSON.stringify(bad));
  }
});

test('relative paths never depend on the working directory: the installation directory for the environment and defaults, the file\'s directory for the config file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-config-'));
  const cwd = process.cwd();
  t.teardown(() => {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  });
  mkdirSync(join(dir, 'etc'));
  const file = join(dir, 'etc', 'xmpp.json');
  writeFileSync(file, JSON.stringify({ dataDir: 'state', tlsCert: '../tls/cert.pem', tlsKey: '/abs/key.pem' }));
  for (const where of [dir, '/', ROOT]) {
    process.chdir(where);
    const d = loadConfig({});
    t.is(d.dataDir, join(ROOT, 'data'), where);
    t.is(d.tlsCert, '', 'empty stays empty (no certificate configured)');
    const e = loadConfig({ XMPP_DATA_DIR: 'd', XMPP_TLS_CERT: 'c.pem', XMPP_TLS_KEY: 'k.pem' });
    t.deepEqual([e.dataDir, e.tlsCert, e.tlsKey], [join(ROOT, 'd'), join(ROOT, 'c.pem'), join(ROOT, 'k.pem')], where);
    // XMPP_CONFIG itself, relative: to the installation directory.
    for (const name of [file, relative(ROOT, file)]) {
      const f = loadConfig({ XMPP_CONFIG: name });
      t.deepEqual([f.dataDir, f.tlsCert, f.tlsKey], [join(dir, 'etc', 'state'), join(dir, 'tls', 'cert.pem'), '/abs/key.pem'], `${where}: ${name}`);
      // The environment wins, with its own base.
      t.is(loadConfig({ XMPP_CONFIG: name, XMPP_DATA_DIR: 'd' }).dataDir, join(ROOT, 'd'));
    }
  }
  t.true(existsSync(join(ROOT, 'package.json')), 'ROOT is the installation directory');
});

test('an unknown XMPP_ environment variable is a configuration error naming it, with the closest setting when one is close', (t) => {
  const message = (env: Record<string, string>) => t.throws(() => loadConfig(env), { instanceOf: ConfigError })!.message;
  t.is(message({ XMPP_DOMIAN: 'x' }), 'unknown environment variable XMPP_DOMIAN (did you mean XMPP_DOMAIN?); `config` lists the settings');
  // The config file key's spelling, turned into a variable name.
  t.is(message({ XMPP_MAX_OFFLINE_MESSAGES: '5' }), 'unknown environment variable XMPP_MAX_OFFLINE_MESSAGES (did you mean XMPP_MAX_OFFLINE?); `config` lists the settings');
  t.is(message({ XMPP_REDIS_STARTUP_TIMEOUT: '5' }), 'unknown environment variable XMPP_REDIS_STARTUP_TIMEOUT (did you mean XMPP_REDIS_STARTUP_TIMEOUT_MS?); `config` lists the settings');
  t.is(message({ XMPP_FROBNICATE: '1', XMPP_C2S_PROT: '1' }), 'unknown environment variables XMPP_C2S_PROT (did you mean XMPP_C2S_PORT?), XMPP_FROBNICATE; `config` lists the settings');
  // Every setting, and XMPP_CONFIG, is known; other prefixes are none of our business.
  const all: Record<string, string> = Object.fromEntries(SETTINGS.map((s) => [s.env, String(s.default({}))]));
  t.notThrows(() => loadConfig({ ...all, XMPP_DATA_DIR: 'data', XMPP_TLS_CERT: '', XMPP_TLS_KEY: '', XMPP_NODE_ID: 'n1', XMPP_CONFIG: relative(ROOT, emptyConfig(t)), XMPPX: '1', MY_XMPP_THING: '1' }));
});

/** An empty config file, removed after the test. */
function emptyConfig(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'x.json'), '{}');
  return join(dir, 'x.json');
}

test('nothing in the repository sets an XMPP_ variable that is not a setting', (t) => {
  const known = new Set([...SETTINGS.map((s) => s.env), 'XMPP_CONFIG', 'XMPP_TEST_FAULTS', 'XMPP_TEST_CHANGE_DELAY_MS']);
  // This file's and the CLI test's deliberate mistakes.
  const deliberate = new Set(['XMPP_DOMIAN', 'XMPP_MAX_OFFLINE_MESSAGES', 'XMPP_REDIS_STARTUP_TIMEOUT', 'XMPP_FROBNICATE', 'XMPP_C2S_PROT']);
  // The sources, tests, scripts and documents: not the dependencies, nor a local data directory.
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const path = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory() && !['node_modules', '.git', 'data'].includes(path)) walk(path);
      else if (e.isFile() && !/\.(sqlite|sqlite-wal|sqlite-shm|key|crt)$/.test(e.name)) files.push(path);
    }
  };
  walk('');
  t.true(files.includes('docker-compose.yml') && files.includes('cluster/node.env'), 'the scan sees the deployment files');
  const found = new Map<string, string>();
  for (const f of files) {
    for (const [name] of readFileSync(join(ROOT, f), 'utf8').matchAll(/\bXMPP_[A-Z0-9_]*[A-Z0-9]\b/g)) if (!found.has(name)) found.set(name, f);
  }
  t.true(found.has('XMPP_DOMAIN'), 'the scan finds the settings');
  const stray = [...found].filter(([name]) => !known.has(name) && !deliberate.has(name));
  t.deepEqual(stray, []);
});

test('XMPP_DOMAIN must be a JID domainpart (RFC 7622 §3.2), kept in its normalised form', (t) => {
  t.is(loadConfig({ XMPP_DOMAIN: 'Chat.Example.' }).domain, 'chat.example');
  t.is(loadConfig({ XMPP_DOMAIN: 'xn--mnchen-3ya.de' }).domain, 'münchen.de', 'U-labels, as in JIDs');
  t.is(loadConfig({ XMPP_DOMAIN: '[::1]' }).domain, '[::1]');
  for (const bad of ['chat..example', 'localhost:5222', '[::1', 'my domain', 'a_b.example', '', 'bob@example.com', '\u{1f600}.example']) {
    t.throws(() => loadConfig({ XMPP_DOMAIN: bad }), { instanceOf: ConfigError, message: /^XMPP_DOMAIN must be a domain name/ }, JSON.stringify(bad));
  }
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-config-'));
  try {
    const file = join(dir, 'xmpp.config.json');
    writeFileSync(file, JSON.stringify({ domain: 'chat..example' }));
    t.throws(() => loadConfig({ XMPP_CONFIG: file }), { instanceOf: ConfigError, message: /^XMPP_DOMAIN must be a domain name.*empty label/ }, 'from the config file too');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('XMPP_PUBSUB_DOMAIN: pubsub.<domain> by default, none for an IP address or when a component has it, normalised, not the domain nor a component’s', (t) => {
  t.is(loadConfig({ XMPP_DOMAIN: 'Example.ORG' }).pubsubDomain, 'pubsub.example.org');
  t.is(loadConfig({ XMPP_DOMAIN: '127.0.0.1' }).pubsubDomain, '');
  t.is(loadConfig({ XMPP_DOMAIN: '[::1]' }).pubsubDomain, '');
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_PUBSUB_DOMAIN: 'PS.Example.org' }).pubsubDomain, 'ps.example.org');
  t.is(loadConfig({ XMPP_PUBSUB_DOMAIN: '' }).pubsubDomain, '');
  t.regex(t.throws(() => loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_PUBSUB_DOMAIN: 'example.org' }), { instanceOf: ConfigError })!.message, /XMPP_PUBSUB_DOMAIN must differ/);
  // An external component at pubsub.<domain> keeps it: the service is not started.
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_COMPONENTS: 'pubsub.example.org=s3cret' }).pubsubDomain, '');
  t.regex(t.throws(() => loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_COMPONENTS: 'ps.example.org=s3cret', XMPP_PUBSUB_DOMAIN: 'ps.example.org' }), { instanceOf: ConfigError })!.message, /XMPP_PUBSUB_DOMAIN ps\.example\.org is also an external component/);
});

test('XMPP_UPLOAD_DOMAIN: upload.<domain> by default once uploads can be served over HTTPS, none otherwise; set without such a listener, an error', (t) => {
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org' }).uploadDomain, '', 'no HTTP listener');
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_HTTP_PORT: '5280' }).uploadDomain, '', 'plain HTTP alone is not TLS');
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_HTTPS_PORT: '5443' }).uploadDomain, 'upload.example.org');
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_HTTP_PORT: '5280', XMPP_HTTP_PUBLIC_URL: 'https://chat.example.org' }).uploadDomain, 'upload.example.org', 'behind a TLS-terminating proxy');
  t.is(loadConfig({ XMPP_DOMAIN: '127.0.0.1', XMPP_HTTPS_PORT: '5443' }).uploadDomain, '');
  t.is(loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_HTTPS_PORT: '5443', XMPP_UPLOAD_DOMAIN: 'Files.Example.org' }).uploadDomain, 'files.example.org');
  t.regex(t.throws(() => loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_UPLOAD_DOMAIN: 'files.example.org' }), { instanceOf: ConfigError })!.message, /XMPP_UPLOAD_DOMAIN needs an HTTPS listener/);
  t.regex(t.throws(() => loadConfig({ XMPP_DOMAIN: 'example.org', XMPP_HTTPS_PORT: '5443', XMPP_UPLOAD_DOMAIN: 'pubsub.example.org' }), { instanceOf: ConfigError })!.message, /must differ/);
  t.is(loadConfig({ XMPP_DATA_DIR: '/srv/xmpp' }).uploadDir, '/srv/xmpp/upload', 'in the data directory by default');
});

test('XMPP_UPLOAD_TYPES: media types or whole types, lowercase; anything else refused at start', (t) => {
  t.deepEqual(uploadTypesOf({ uploadTypes: '' }), []);
  t.deepEqual(uploadTypesOf({ uploadTypes: 'Image/*, application/PDF' }), [{ type: 'image', subtype: '*' }, { type: 'application', subtype: 'pdf' }]);
  for (const bad of ['image', '*/*', 'image/', 'a b/c', 'image/png,']) t.throws(() => loadConfig({ XMPP_UPLOAD_TYPES: bad }), { instanceOf: ConfigError, message: /XMPP_UPLOAD_TYPES/ }, bad);
});

test('XMPP_EXTDISCO_SERVICES: STUN and TURN URIs (RFC 7064, RFC 7065), with their default ports and transports', (t) => {
  t.deepEqual(extdiscoServicesOf({ extdiscoServices: 'stun:stun.example.org, turn:turn.example.org:3479?transport=tcp,turns:[2001:db8::1],STUNS:s.example.org:443,turn:192.0.2.1' }), [
    { type: 'stun', host: 'stun.example.org', port: 3478, transport: 'udp' },
    { type: 'turn', host: 'turn.example.org', port: 3479, transport: 'tcp' },
    { type: 'turns', host: '2001:db8::1', port: 5349, transport: 'tcp' },
    { type: 'stuns', host: 's.example.org', port: 443, transport: 'tcp' },
    { type: 'turn', host: '192.0.2.1', port: 3478, transport: 'udp' },
  ]);
  for (const bad of ['stun.example.org', 'http://x', 'stun:x?transport=udp', 'turns:x?transport=udp', 'turn:x:0', 'turn:x:99999', 'turn:user@x', 'turn:']) {
    t.throws(() => loadConfig({ XMPP_EXTDISCO_SERVICES: bad }), { instanceOf: ConfigError, message: /XMPP_EXTDISCO_SERVICES/ }, bad);
  }
});
