import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, ConfigError } from '../src/config/index.ts';

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
