// PEP (XEP-0163) figures of issue 18: how long a notification takes to reach
// 100 online contacts, on one node and across the two nodes of a cluster, and
// what an idle connection costs when its client advertises caps (XEP-0115)
// that the server has cached. Prints figures; it fails (exit code 1) when a
// contact misses a notification or a connection is lost, asserts nothing else.
//
//   npx node bench/pep.ts [--items 200] [--contacts 100] [--connections 2000] [--reps 2] [--only latency|memory]
//
// Latency: accounts `pub` and `c1`..`cN`, each contact subscribed both ways
// with `pub` (written directly in the roster store before anyone logs in).
// Every client is the load tool's lean client (src/load/client.ts) over
// direct TLS with SCRAM-SHA-1; each contact sends a presence whose caps
// advertise `http://jabber.org/protocol/tune+notify` (one ver for all) and
// answers the server's disco#info for it. `pub` publishes items to that node
// one at a time: the next publish leaves once every contact has the previous
// item's <event/> and `pub` its result. Per item, the time from writing the
// publish to each contact's receiving the event; p50/p99 over all deliveries,
// and of the time until the last contact has it. Three set-ups: one node
// (one worker); a cluster of two nodes (private redis-server and PostgreSQL,
// one worker each) with `pub` on node 1 and every contact on node 2; the same
// cluster with the contacts split (odd on node 1, even on node 2).
//
// Memory: the same method as `bench:compare`'s idle figure (docs/benchmarks.md):
// a freshly started server as that benchmark starts ours (one worker, pinned
// to core 0, this script on core 1), 15 s of quiet, then C accounts each
// logging in once at once (at most 1000 negotiations in flight), held for
// 6 s + 1 s per 100 connections from the start; (RSS − RSS before) / C, read
// 0.5 s after the last bind and at the end of the hold (settled). Once with a
// plain `<presence/>`, once with presence carrying the same caps ver for all
// (the server asks one of them and caches one entry), on a fresh server each,
// alternating, --reps times.
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { get as httpsGet } from 'node:https';
import { Conn, type ConnHandler, type Target, now } from '../src/load/client.ts';
import { attr, startTag } from '../src/load/tokenizer.ts';
import { SqliteAccountStore } from '../src/accounts/sqlite.ts';
import { PostgresAccountStore } from '../src/accounts/postgres.ts';
import { SqliteRosterStore } from '../src/roster/sqlite.ts';
import { PostgresRosterStore } from '../src/roster/postgres.ts';
import type { AccountStore } from '../src/accounts/store.ts';
import type { RosterStore } from '../src/roster/store.ts';
import { storeFile } from '../src/storage/sqlite.ts';
import { RedisServer } from '../test/helpers/redis.ts';
import { PostgresServer } from '../test/helpers/postgres.ts';
import { NodeProcess } from '../test/helpers/cluster.ts';
import { NS_EVENT, NS_PUBSUB, capsVer } from '../test/helpers/pep.ts';
import { DOMAIN as MEMORY_DOMAIN, SCRAM_ITERATIONS, ours, type Pins } from './compare/servers.ts';
import { killAllNow, which } from './compare/procs.ts';
import { atExit, pct, stopAtExit, tempDir } from './lib.ts';

const USAGE = `usage: npx node bench/pep.ts [options]     (npm run bench:pep -- [options])
  --items N         items published one at a time per set-up (default 200)
  --contacts N      online contacts subscribed to the publisher (default 100)
  --warmup N        items published before the measured ones (default 20)
  --connections C   idle connections for the memory figure (default 2000)
  --reps R          memory runs of each kind (plain presence, caps), alternating (default 2)
  --only WHAT       latency or memory: run only that part
  --help            this text`;

const { values: v } = parseArgs({
  options: {
    items: { type: 'string', default: '200' },
    contacts: { type: 'string', default: '100' },
    warmup: { type: 'string', default: '20' },
    connections: { type: 'string', default: '2000' },
    reps: { type: 'string', default: '2' },
    only: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (v.help) {
  console.log(USAGE);
  process.exit(0);
}
const int = (name: string, s: string, min: number): number => {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`--${name}: an integer of at least ${min}, not ${JSON.stringify(s)}\n${USAGE}`);
    process.exit(2);
  }
  return n;
};
const ITEMS = int('items', v.items, 1);
const CONTACTS = int('contacts', v.contacts, 1);
const WARMUP = int('warmup', v.warmup, 0);
const CONNECTIONS = int('connections', v.connections, 1);
const REPS = int('reps', v.reps, 1);
if (v.only !== undefined && v.only !== 'latency' && v.only !== 'memory') {
  console.error(`--only: latency or memory\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------- clients

const TUNE = 'http://jabber.org/protocol/tune';
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const CAPS_NODE = 'https://xmpp-server.invalid/bench-pep';
const FEATURES = [NS_DISCO_INFO, 'http://jabber.org/protocol/caps', `${TUNE}+notify`];
// XEP-0115 §5.1 for identity client/pc//pep test (the one test/helpers/pep.ts hashes) and FEATURES.
const VER = capsVer(FEATURES);
const CAPS_PRESENCE = `<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='${CAPS_NODE}' ver='${VER}'/></presence>`;
const DISCO_ANSWER = `<query xmlns='${NS_DISCO_INFO}' node='${CAPS_NODE}#${VER}'><identity category='client' type='pc' name='pep test'/>${FEATURES.map((f) => `<feature var='${f}'/>`).join('')}</query>`;
const PASSWORD = 'bench-password';

/** The server's disco#info questions for our caps, over all clients so far. */
let capsAsked = 0;
/** Connections that ended without being asked to. */
const lost: string[] = [];
let closing = false;
const listeners = new WeakMap<Conn, (name: string, raw: string) => void>();

/** Answers what the server asks: disco#info of our caps node, ping; anything else service-unavailable. */
function answerIq(c: Conn, raw: string): void {
  const tag = startTag(raw);
  const type = attr(tag, 'type');
  if (type !== 'get' && type !== 'set') return;
  const id = attr(tag, 'id') ?? '';
  const from = attr(tag, 'from');
  const to = from ? ` to='${from}'` : '';
  if (type === 'get' && raw.includes(NS_DISCO_INFO) && raw.includes(`${CAPS_NODE}#${VER}`)) {
    capsAsked++;
    c.write(`<iq type='result' id='${id}'${to}>${DISCO_ANSWER}</iq>`);
  } else if (raw.includes('urn:xmpp:ping')) c.write(`<iq type='result' id='${id}'${to}/>`);
  else c.write(`<iq type='error' id='${id}'${to}><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);
}

/** One client logged in (SCRAM-SHA-1, bound), its initial presence sent: with our caps, or plain. */
function login(target: Target, user: string, resource: string, presence: 'caps' | 'plain', onStanza?: (name: string, raw: string) => void): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const h: ConnHandler = {
      ready(c) {
        if (onStanza) listeners.set(c, onStanza);
        c.write(presence === 'caps' ? CAPS_PRESENCE : '<presence/>');
        resolve(c);
      },
      stanza(c, name, raw) {
        if (name === 'iq') answerIq(c, raw);
        listeners.get(c)?.(name, raw);
      },
      end(c, error) {
        if (c.boundAt === 0) reject(new Error(`${user}/${resource}: login failed: ${error ?? 'closed'}`));
        else if (!closing) lost.push(`${user}/${resource}: ${error ?? 'closed'}`);
      },
    };
    new Conn(target, { user, password: PASSWORD, resource, presence: false }, h);
  });
}

/** Logs all of them in, at most `limit` negotiating at once; in the order given. */
async function loginMany(specs: { target: Target; user: string; resource: string; onStanza?: (name: string, raw: string) => void }[], presence: 'caps' | 'plain', limit: number): Promise<Conn[]> {
  const out: Conn[] = new Array<Conn>(specs.length);
  let next = 0;
  const lane = async () => {
    while (next < specs.length) {
      const k = next++;
      const s = specs[k];
      out[k] = await login(s.target, s.user, s.resource, presence, s.onStanza);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, specs.length) }, lane));
  return out;
}

function dropAll(conns: Conn[]): void {
  closing = true;
  for (const c of conns) c.drop();
  closing = false;
}

const target = (port: number, domain: string): Target => ({ host: '127.0.0.1', port, domain, tls: 'direct', mechanism: 'SCRAM-SHA-1', timeoutMs: 120_000 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ms = (x: number) => x.toFixed(2);

/** Accounts created through the store (the server's own code), `iterations` as the server's default. */
async function createAccounts(store: AccountStore, users: string[]): Promise<void> {
  for (let i = 0; i < users.length; i += 64) await Promise.all(users.slice(i, i + 64).map((u) => store.create(u, PASSWORD)));
}

/** `pub` and every contact subscribed both ways, as an approved subscription leaves both rosters. */
async function subscribeBoth(roster: RosterStore, domain: string, contacts: string[]): Promise<void> {
  for (const c of contacts) {
    await roster.setSubscription('pub', `${c}@${domain}`, 'both', undefined, { max: 10_000 });
    await roster.setSubscription(c, `pub@${domain}`, 'both', undefined, { max: 10_000 });
  }
}

// ---------------------------------------------------------------- latency

interface LatencyResult {
  label: string;
  deliveries: number[];
  /** Per item: until the last contact had it. */
  lasts: number[];
  /** Per item: until `pub` had the publish's result. */
  results: number[];
}

/**
 * Logs `pub` in on `pubPort` and contact i on `contactPort(i)`, waits until
 * every contact gets notifications (their caps known to the server), then
 * measures ITEMS publishes. Fails when a contact misses or repeats an item.
 */
async function measureLatency(label: string, tag: string, domain: string, pubPort: number, contactPort: (i: number) => number): Promise<LatencyResult> {
  const contacts = Array.from({ length: CONTACTS }, (_, i) => `c${i + 1}`);
  /** Per contact: the ids of our items it received. */
  const got = contacts.map(() => new Set<string>());
  /** The item being waited for, its write time, and what is still missing. */
  let current: { id: string; at: number; missing: number; resultAt: number; done: () => void; deliveries: number[] } | undefined;
  const problems: string[] = [];
  let earlyRepeats = 0;
  const onEvent = (i: number) => (name: string, raw: string) => {
    if (name !== 'message' || !raw.includes(NS_EVENT)) return;
    const t = now();
    for (const m of raw.matchAll(/<item\s+id=["']([^"']+)["']/g)) {
      const id = m[1];
      if (!id.startsWith(`${tag}-`)) continue; // the last item of an earlier set-up, sent on presence
      if (got[i].has(id)) {
        // Before the measured items, a contact whose caps the server learnt during a publish once got that item twice (as
        // the last published item on its presence and as the notification); the server no longer sends one publish twice.
        // Counted and printed there (the items are not measured); a repeat of a measured item is a failure.
        if (id.startsWith(`${tag}-i`)) problems.push(`${contacts[i]} received ${id} twice`);
        else earlyRepeats++;
        continue;
      }
      got[i].add(id);
      if (current && id === current.id) {
        current.deliveries.push(t - current.at);
        if (--current.missing === 0 && current.resultAt !== 0) current.done();
      }
    }
  };
  const pub = await login(target(pubPort, domain), 'pub', `${tag}-pub`, 'plain', (name, raw) => {
    if (name !== 'iq' || !current) return;
    const tagEl = startTag(raw);
    if (attr(tagEl, 'id') !== `p-${current.id}`) return;
    if (attr(tagEl, 'type') !== 'result') problems.push(`publish ${current.id} failed: ${raw}`);
    current.resultAt = now();
    if (current.missing === 0) current.done();
  });
  const conns = await loginMany(contacts.map((u, i) => ({ target: target(contactPort(i), domain), user: u, resource: `${tag}-r`, onStanza: onEvent(i) })), 'caps', CONTACTS);
  const results: number[] = [];
  const lasts: number[] = [];
  const deliveries: number[] = [];
  /** Publishes one item, waits (at most timeoutMs) until every contact and `pub` have had it; true if so. */
  const publishOne = async (id: string, measured: boolean, timeoutMs: number): Promise<boolean> => {
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const at = now();
    const item = { id, at, missing: CONTACTS, resultAt: 0, done: () => done(), deliveries: [] as number[] };
    current = item;
    pub.write(`<iq type='set' id='p-${id}'><pubsub xmlns='${NS_PUBSUB}'><publish node='${TUNE}'><item id='${id}'><tune xmlns='${TUNE}'><artist>Bench</artist><length>240</length><title>${id}</title></tune></item></publish></pubsub></iq>`);
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs).unref());
    const outcome = await Promise.race([finished, timer]);
    current = undefined;
    if (outcome === 'timeout') return false;
    if (measured) {
      deliveries.push(...item.deliveries);
      lasts.push(Math.max(...item.deliveries));
      results.push(item.resultAt - at);
    }
    return true;
  };
  try {
    // Until the server knows every contact's caps, some get nothing: publish until one item reaches all.
    let ready = false;
    for (let k = 0; k < 30 && !ready; k++) ready = await publishOne(`${tag}-ready${k}`, false, 2000);
    if (!ready) throw new Error(`${label}: after 30 items, some contacts still get no notification (caps asked ${capsAsked} times)`);
    for (let k = 0; k < WARMUP; k++) if (!(await publishOne(`${tag}-w${k}`, false, 10_000))) throw new Error(`${label}: warm-up item ${k} did not reach every contact within 10 s`);
    for (let k = 0; k < ITEMS; k++) {
      const id = `${tag}-i${k}`;
      if (!(await publishOne(id, true, 10_000))) {
        const missing = contacts.filter((_, i) => !got[i].has(id));
        throw new Error(`${label}: item ${k} did not reach ${missing.length} contacts within 10 s: ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''}`);
      }
    }
    await sleep(300); // a duplicate would come now
    // Every contact, every measured item, once.
    for (let i = 0; i < CONTACTS; i++) {
      const measured = [...got[i]].filter((id) => id.startsWith(`${tag}-i`)).length;
      if (measured !== ITEMS) problems.push(`${contacts[i]} got ${measured} of ${ITEMS} items`);
    }
    if (deliveries.length !== ITEMS * CONTACTS) problems.push(`${deliveries.length} deliveries timed, ${ITEMS * CONTACTS} expected`);
    if (lost.length > 0) problems.push(`connections lost: ${lost.join('; ')}`);
    if (problems.length > 0) throw new Error(`${label}:\n  ${problems.slice(0, 20).join('\n  ')}`);
  } finally {
    dropAll([pub, ...conns]);
  }
  if (earlyRepeats > 0) console.log(`(${label}: ${earlyRepeats} repeated notifications of the items before the warm-up, sent while the server learnt the caps)`);
  return { label, deliveries, lasts, results };
}

function latencyRow(r: LatencyResult): string {
  const d = [...r.deliveries].sort((a, b) => a - b);
  const l = [...r.lasts].sort((a, b) => a - b);
  const p = [...r.results].sort((a, b) => a - b);
  return `| ${r.label} | ${d.length} | ${ms(pct(d, 50))} | ${ms(pct(d, 99))} | ${ms(d[d.length - 1])} | ${ms(pct(l, 50))} | ${ms(pct(l, 99))} | ${ms(pct(p, 50))} |`;
}

async function latency(): Promise<LatencyResult[]> {
  const out: LatencyResult[] = [];
  const contacts = Array.from({ length: CONTACTS }, (_, i) => `c${i + 1}`);

  // One node, one worker; accounts and rosters in its SQLite stores before it starts.
  const dir = tempDir('xmpp-bench-pep-single-');
  const accounts = SqliteAccountStore.open(storeFile(dir, 'accounts'), SCRAM_ITERATIONS);
  await createAccounts(accounts, ['pub', ...contacts]);
  accounts.close();
  const roster = SqliteRosterStore.open(storeFile(dir, 'roster'));
  await subscribeBoth(roster, 'localhost', contacts);
  roster.close();
  const single = await NodeProcess.start('pep-single', { XMPP_DATA_DIR: dir, XMPP_READ_RATE_BYTES: '0' });
  stopAtExit(single);
  try {
    const asked = capsAsked;
    const r = await measureLatency('one node', 'single', 'localhost', single.tlsPort, () => single.tlsPort);
    console.log(`${latencyRow(r)} caps asked ${capsAsked - asked} time(s) |`);
    out.push(r);
  } finally {
    await single.stop('SIGKILL');
  }

  // Two nodes, one worker each, joined through a private redis-server, accounts and rosters in a private PostgreSQL.
  const [redis, postgres] = await Promise.all([RedisServer.start(), PostgresServer.start()]);
  atExit(() => {
    void redis.stop();
    void postgres.destroy();
    rmSync(redis.dir, { recursive: true, force: true });
    rmSync(postgres.dir, { recursive: true, force: true });
  });
  try {
    const databaseUrl = await postgres.createDatabase('pep');
    const env = { XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: databaseUrl, XMPP_READ_RATE_BYTES: '0' };
    const n1 = await NodeProcess.start('pep-n1', env);
    stopAtExit(n1);
    const n2 = await NodeProcess.start('pep-n2', env);
    stopAtExit(n2);
    try {
      const pa = await PostgresAccountStore.open(databaseUrl, SCRAM_ITERATIONS);
      await createAccounts(pa, ['pub', ...contacts]);
      await pa.close();
      const pr = await PostgresRosterStore.open(databaseUrl);
      await subscribeBoth(pr, 'localhost', contacts);
      await pr.close();
      let asked = capsAsked;
      const across = await measureLatency('cluster: publisher on node 1, all contacts on node 2', 'across', 'localhost', n1.tlsPort, () => n2.tlsPort);
      console.log(`${latencyRow(across)} caps asked ${capsAsked - asked} time(s) |`);
      out.push(across);
      asked = capsAsked;
      const split = await measureLatency('cluster: publisher on node 1, contacts half on each node', 'split', 'localhost', n1.tlsPort, (i) => (i % 2 === 0 ? n1.tlsPort : n2.tlsPort));
      console.log(`${latencyRow(split)} caps asked ${capsAsked - asked} time(s) |`);
      out.push(split);
    } finally {
      await Promise.all([n1.stop('SIGKILL'), n2.stop('SIGKILL')]);
    }
  } finally {
    await Promise.all([redis.destroy(), postgres.destroy()]);
  }
  return out;
}

// ---------------------------------------------------------------- memory

const statusKiB = (pid: number, field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

/**
 * The worker's JavaScript heap in use, from its /metrics gauge
 * (xmpp_worker_heap_used_bytes): after 2 s of quiet the worker has run a full
 * collection (XMPP_IDLE_GC_MS), so this is what it keeps, where RSS also
 * holds what the allocator has not given back, and varies by megabytes
 * between runs of the same kind. Bytes.
 */
async function workerHeap(httpsPort: number): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    const req = httpsGet({ host: '127.0.0.1', port: httpsPort, path: '/metrics', rejectUnauthorized: false, servername: MEMORY_DOMAIN }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
  });
  const m = /^xmpp_worker_heap_used_bytes(?:\{[^}]*\})? (\S+)$/m.exec(text);
  if (!m) throw new Error('/metrics: no xmpp_worker_heap_used_bytes');
  return Number(m[1]);
}

interface MemoryResult {
  presence: 'caps' | 'plain';
  before: number;
  after: number;
  settled: number;
  asked: number;
  /** The worker's heap in use before the logins and at the end of the hold, bytes. */
  heapBefore: number;
  heapSettled: number;
}

async function memory(): Promise<MemoryResult[]> {
  const cpus = availableParallelism();
  const taskset = cpus >= 2 ? which('taskset') : undefined;
  const pins: Pins = { taskset, serverCpu: '0', loadCpu: '1' };
  // This process (all its threads) on the other core, as bench:compare runs its load tool.
  if (taskset) execFileSync(taskset, ['-a', '-cp', pins.loadCpu, String(process.pid)], { stdio: 'ignore' });
  const dir = tempDir('xmpp-bench-pep-memory-');
  const data = join(dir, 'data');
  mkdirSync(data);
  const certDir = join(dir, 'cert');
  mkdirSync(certDir);
  const cert = { cert: join(certDir, 'cert.pem'), key: join(certDir, 'key.pem') };
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', cert.key, '-out', cert.cert, '-days', '2', '-subj', `/CN=${MEMORY_DOMAIN}`, '-addext', `subjectAltName=DNS:${MEMORY_DOMAIN},DNS:*.${MEMORY_DOMAIN}`], { stdio: 'ignore' });
  const users = Array.from({ length: CONNECTIONS }, (_, i) => `user${i + 1}`);
  const t0 = now();
  const store = SqliteAccountStore.open(storeFile(data, 'accounts'), SCRAM_ITERATIONS);
  await createAccounts(store, users);
  store.close();
  console.log(`memory: ${CONNECTIONS} accounts created in ${((now() - t0) / 1000).toFixed(1)} s; server pinned to core ${pins.serverCpu}${taskset ? `, this script to core ${pins.loadCpu}` : ' (no taskset or one core: unpinned)'}`);
  const out: MemoryResult[] = [];
  const holdMs = (6 + CONNECTIONS / 100) * 1000;
  for (let rep = 0; rep < REPS; rep++) {
    for (const presence of ['plain', 'caps'] as const) {
      const server = await ours.start(dir, cert, pins, { XMPP_METRICS: '127.0.0.1' });
      let conns: Conn[] = [];
      try {
        await sleep(15_000);
        const before = statusKiB(server.pid, 'VmRSS');
        const heapBefore = await workerHeap(server.httpsPort!);
        const asked = capsAsked;
        const start = now();
        const tg = target(server.directPort, MEMORY_DOMAIN);
        conns = await loginMany(users.map((u) => ({ target: tg, user: u, resource: 'idle' })), presence, 1000);
        const boundMs = now() - start;
        await sleep(500);
        const after = statusKiB(server.pid, 'VmRSS');
        await sleep(Math.max(0, start + holdMs - now()));
        const settled = statusKiB(server.pid, 'VmRSS');
        const heapSettled = await workerHeap(server.httpsPort!);
        if (lost.length > 0) throw new Error(`memory (${presence}): connections lost: ${lost.slice(0, 10).join('; ')}`);
        const r: MemoryResult = { presence, before, after, settled, asked: capsAsked - asked, heapBefore, heapSettled };
        out.push(r);
        const per = (x: number) => ((x - before) / CONNECTIONS).toFixed(1);
        console.log(`memory, ${presence === 'caps' ? 'caps in presence' : 'plain presence '} (run ${rep + 1}): ${CONNECTIONS} bound in ${(boundMs / 1000).toFixed(1)} s; RSS ${(before / 1024).toFixed(1)} MiB before, ${(after / 1024).toFixed(1)} 0.5 s after the last bind, ${(settled / 1024).toFixed(1)} settled: ${per(after)} / ${per(settled)} KiB per connection; worker heap ${((heapSettled - heapBefore) / CONNECTIONS).toFixed(0)} bytes per connection${presence === 'caps' ? `; caps asked ${r.asked} time(s)` : ''}`);
        if (presence === 'caps' && r.asked < 1) throw new Error('memory (caps): the server never asked for the caps: are they read?');
      } finally {
        dropAll(conns);
        await server.stop();
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- main

atExit(killAllNow);
console.log(`node ${process.version}, ${availableParallelism()} CPUs, ${new Date().toISOString()}; ${CONTACTS} contacts, ${ITEMS} items (+${WARMUP} warm-up), caps ver ${VER}`);
try {
  if (v.only !== 'memory') {
    console.log('\n| set-up | deliveries | p50 ms | p99 ms | max ms | last of the contacts, p50 ms | last, p99 ms | publish result p50 ms | caps |\n|---|---:|---:|---:|---:|---:|---:|---:|---|');
    await latency();
  }
  if (v.only !== 'latency') {
    console.log('');
    const rs = await memory();
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    console.log(`\n| presence | runs | KiB per connection, 0.5 s after the last bind | settled | RSS before, MiB | worker heap, bytes per connection |\n|---|---:|---|---|---:|---|`);
    for (const presence of ['plain', 'caps'] as const) {
      const of = rs.filter((r) => r.presence === presence);
      const per = (f: (r: MemoryResult) => number) => of.map((r) => ((f(r) - r.before) / CONNECTIONS).toFixed(1)).join(' / ');
      console.log(`| ${presence === 'caps' ? 'caps (one ver for all)' : 'plain <presence/>'} | ${of.length} | ${per((r) => r.after)} | ${per((r) => r.settled)} | ${(mean(of.map((r) => r.before)) / 1024).toFixed(1)} | ${of.map((r) => ((r.heapSettled - r.heapBefore) / CONNECTIONS).toFixed(0)).join(' / ')} |`);
    }
  }
} catch (err) {
  console.error(`bench/pep.ts: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
process.exit(0);
