// The message archive's query latency (XEP-0313): the last 50 messages of a
// conversation among 1,000,000 archived messages of one account, on both
// backends: SQLite (a single node: archive.sqlite in the data directory)
// and PostgreSQL (XMPP_DATABASE_URL, the cluster's store; a private server
// started here, never the machine's own).
//
// For each backend: --rows messages of `alice` are written through the
// ArchiveStore interface (append, in batches, oldest first, spread over the
// last year), exchanged with --peers correspondents: one of them, bob, has
// --big-share of them (a big conversation), the others share the rest
// (about 900 each by default). Then the same four queries are timed,
// first on the store directly (no XMPP: what the database and the store's
// code cost), then end to end through the real server (`node src/main.ts
// start`, its own process, on the seeded data) by one client logged in over
// direct TLS, from sending the iq until its result arrives after the 50
// result messages, one query at a time:
//
//   conversation   `with` a peer of ~900 messages, RSM <before/>: its last 50
//   big conv.      `with` bob (~100,000 messages): its last 50
//   whole archive  no `with`: the last 50 of all 1,000,000
//   page back      `with` a peer of ~900, <before>ID</before> from the
//                  middle of the conversation: the 50 before it
//
// A peer is drawn at random for every query. Every answer is checked: 50
// results, the last of them the message the query must end with (known
// from the seeding), and the iq a result; anything else stops the run.
//
//   npx node bench/mam-query.ts [--rows 1000000] [--queries 500] [--backends sqlite,postgres]
//   npx node bench/mam-query.ts --help
import { parseArgs } from 'node:util';
import { spawn, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { cpus, loadavg, userInfo } from 'node:os';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { atExit, pct, tempDir } from './lib.ts';
import { PostgresServer, postgresBin } from '../test/helpers/postgres.ts';
import { type ArchiveStore, type ArchivedMessage, idAt, sqlFilters } from '../src/mam/store.ts';
import { SqliteArchiveStore } from '../src/mam/sqlite.ts';
import { PostgresArchiveStore } from '../src/mam/postgres.ts';
import { SqliteAccountStore } from '../src/accounts/sqlite.ts';
import { PostgresAccountStore } from '../src/accounts/postgres.ts';
import { Conn } from '../src/load/client.ts';
import { attr, startTag } from '../src/load/tokenizer.ts';

const USAGE = `usage: npx node bench/mam-query.ts [options]      (or: npm run bench:mam -- [options])

Times XEP-0313 queries for the last 50 messages of a conversation among
--rows archived messages of one account, on SQLite and on PostgreSQL (a
private server started for the run): on the store directly, then end to end
through the real server over TLS. Prints the seeding time and a table of
p50/p99/max and queries/s (one query at a time).

  --rows N           archived messages of alice (default 1000000)
  --queries N        timed queries of each kind, per backend and level (default 500)
  --backends LIST    sqlite,postgres (default both)
  --peers N          correspondents (default 1000), bob among them
  --big-share F      bob's share of the messages (default 0.1)
  --batch N          messages per append (default 5000)
  --explain          print each query's plan (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE)
  --help             this text

Everything it starts (PostgreSQL, the server) and every temporary directory
is removed when it ends, fails or is interrupted.`;

const usage = (msg: string): never => {
  console.error(`error: ${msg}\n\n${USAGE}`);
  process.exit(2);
};
const opt = (() => {
  try {
    return parseArgs({
      options: {
        rows: { type: 'string', default: '1000000' },
        queries: { type: 'string', default: '500' },
        backends: { type: 'string', default: 'sqlite,postgres' },
        peers: { type: 'string', default: '1000' },
        'big-share': { type: 'string', default: '0.1' },
        batch: { type: 'string', default: '5000' },
        explain: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }).values;
  } catch (err) {
    return usage((err as Error).message);
  }
})();
if (opt.help) {
  console.log(USAGE);
  process.exit(0);
}
const ROWS = Number(opt.rows);
const QUERIES = Number(opt.queries);
const PEERS = Number(opt.peers);
const BIG_SHARE = Number(opt['big-share']);
const BATCH = Number(opt.batch);
const BACKENDS = opt.backends.split(',').map((b) => b.trim()).filter(Boolean);
const PAGE = 50;
const WARMUP = 20;
for (const [name, v] of [['--rows', ROWS], ['--queries', QUERIES], ['--peers', PEERS], ['--batch', BATCH]] as const) if (!Number.isSafeInteger(v) || v < 1) usage(`${name} must be a positive whole number`);
if (!(BIG_SHARE > 0 && BIG_SHARE < 1)) usage('--big-share must be between 0 and 1');
if (PEERS < 2) usage('--peers must be at least 2 (bob and another)');
for (const b of BACKENDS) if (b !== 'sqlite' && b !== 'postgres') usage(`unknown backend ${JSON.stringify(b)} (sqlite, postgres)`);
const PER_PEER = (ROWS * (1 - BIG_SHARE)) / (PEERS - 1);
// A conversation's middle must have a full page before it, and its end a full page: with margin for chance.
if (PER_PEER < 4 * PAGE || ROWS * BIG_SHARE < 4 * PAGE) usage(`--rows ${ROWS} over --peers ${PEERS} gives conversations of ~${Math.floor(PER_PEER)} messages; at least ${4 * PAGE} are needed`);

const ROOT = join(import.meta.dirname, '..');
const DOMAIN = 'localhost';
const OWNER = 'alice';
const ME = `${OWNER}@${DOMAIN}`;
const PASSWORD = 'bench-password';
const BOB = `bob@${DOMAIN}`;

// ---- the data -------------------------------------------------------------

/** A small seeded generator (mulberry32): the same messages every run (ids aside, which carry random bytes). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Correspondents: bob (the big conversation), then others, on our domain and elsewhere. */
const peers = [BOB, ...Array.from({ length: PEERS - 1 }, (_, i) => (i % 3 === 0 ? `friend${i}@example.net` : `user${i}@${DOMAIN}`))];

interface PeerState {
  count: number;
  last: string;
  /** The id of its message number `half`, and of the one before it: where paging back from the middle starts, and must end. */
  middle?: string;
  beforeMiddle?: string;
  half: number;
}

interface Seeded {
  byPeer: Map<string, PeerState>;
  last: string;
  /** Peers (bob aside) whose middle is known. */
  typical: string[];
  seedMs: number;
}

/** Writes ROWS messages through store.append, oldest first, spread over the year before now. */
async function seed(store: ArchiveStore, progress: (done: number) => void): Promise<Seeded> {
  const rand = rng(20261206);
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const vocab = Array.from({ length: 3000 }, () => Array.from({ length: 2 + Math.floor(rand() * 8) }, () => letters[Math.floor(rand() * 26)]).join(''));
  // Word frequencies skewed as in text: small indices far more often.
  const word = () => vocab[Math.floor(vocab.length * rand() * rand())];
  const byPeer = new Map<string, PeerState>(peers.map((p) => [p, { count: 0, last: '', half: Math.floor((p === BOB ? ROWS * BIG_SHARE : PER_PEER) / 2) }]));
  const end = Date.now() - 60_000;
  const span = 365 * 86_400_000;
  const startMs = end - span;
  let prevMs = -1;
  let seq = 0;
  let last = '';
  let batch: ArchivedMessage[] = [];
  const t0 = performance.now();
  for (let i = 0; i < ROWS; i++) {
    const ms = Math.floor(startMs + (i * span) / ROWS);
    seq = ms === prevMs ? seq + 1 : 0;
    prevMs = ms;
    const id = idAt(ms, seq);
    const peer = rand() < BIG_SHARE ? BOB : peers[1 + Math.floor(rand() * (PEERS - 1))];
    const outgoing = rand() < 0.5;
    const body = Array.from({ length: 1 + Math.floor(rand() * 20) }, word).join(' ');
    const msgId = Math.floor(rand() * 2 ** 48).toString(36);
    // As the server archives a stanza (ltx's serialisation of a copy, xmlns set): the sender's full JID, the recipient's as addressed.
    const xml = outgoing
      ? `<message from="${ME}/laptop" to="${peer}" type="chat" id="${msgId}" xmlns="jabber:client"><body>${body}</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>`
      : `<message from="${peer}/phone" to="${ME}" type="chat" id="${msgId}" xmlns="jabber:client"><body>${body}</body><active xmlns="http://jabber.org/protocol/chatstates"/><origin-id xmlns="urn:xmpp:sid:0" id="${msgId}"/></message>`;
    batch.push({ id, owner: OWNER, stamp: ms, withBare: peer, withResource: outgoing ? '' : 'phone', outgoing, body, xml });
    const s = byPeer.get(peer)!;
    if (s.count === s.half) {
      s.beforeMiddle = s.last;
      s.middle = id;
    }
    s.count++;
    s.last = id;
    last = id;
    if (batch.length === BATCH || i === ROWS - 1) {
      await store.append(batch);
      batch = [];
      progress(i + 1);
    }
  }
  const typical = peers.filter((p) => p !== BOB && byPeer.get(p)!.middle !== undefined && byPeer.get(p)!.count >= PAGE);
  return { byPeer, last, typical, seedMs: performance.now() - t0 };
}

// ---- the queries -------------------------------------------------------------

interface Target {
  withBare?: string;
  beforeId?: string;
  /** The id the page must end with. */
  lastId: string;
}

interface Kind {
  name: string;
  pick(): Target;
}

function kinds(s: Seeded): Kind[] {
  const pick = <T>(xs: T[]) => xs[Math.floor(Math.random() * xs.length)];
  const mean = Math.round(s.typical.reduce((n, p) => n + s.byPeer.get(p)!.count, 0) / s.typical.length);
  const bob = s.byPeer.get(BOB)!;
  return [
    {
      name: `conversation (~${mean} msgs), last 50`,
      pick: () => {
        const p = pick(s.typical);
        return { withBare: p, lastId: s.byPeer.get(p)!.last };
      },
    },
    { name: `big conversation (${bob.count} msgs), last 50`, pick: () => ({ withBare: BOB, lastId: bob.last }) },
    { name: `whole archive (${ROWS} msgs), last 50`, pick: () => ({ lastId: s.last }) },
    {
      name: `conversation (~${mean}), 50 before its middle`,
      pick: () => {
        const p = pick(s.typical);
        const st = s.byPeer.get(p)!;
        return { withBare: p, beforeId: st.middle, lastId: st.beforeMiddle! };
      },
    },
  ];
}

/** Runs every kind `n` times, round robin (so that a slow moment of the machine falls on all of them alike); latencies in ms per kind. */
async function timeAll(ks: Kind[], n: number, run: (t: Target) => Promise<void>): Promise<number[][]> {
  const out = ks.map(() => [] as number[]);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < ks.length; k++) {
      const t = ks[k].pick();
      const t0 = performance.now();
      await run(t);
      out[k].push(performance.now() - t0);
    }
  }
  return out;
}

function checkPage(items: { id: string; withBare: string }[], t: Target, where: string): void {
  if (items.length !== PAGE) throw new Error(`${where}: ${items.length} results instead of ${PAGE} for ${JSON.stringify(t)}`);
  if (items[PAGE - 1].id !== t.lastId) throw new Error(`${where}: the page ends with ${items[PAGE - 1].id}, not ${t.lastId}, for ${JSON.stringify(t)}`);
  if (t.withBare !== undefined && items.some((m) => m.withBare !== t.withBare)) throw new Error(`${where}: a result not with ${t.withBare}`);
}

const storeQuery = (store: ArchiveStore) => async (t: Target) => {
  const page = await store.query(OWNER, { withBare: t.withBare, beforeId: t.beforeId, max: PAGE, last: true });
  checkPage(page.items, t, 'store');
};

// ---- the client -------------------------------------------------------------

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

function queryIq(n: number, t: Target): string {
  const w = t.withBare === undefined ? '' : `<field var='with'><value>${xmlEscape(t.withBare)}</value></field>`;
  const before = t.beforeId === undefined ? '<before/>' : `<before>${t.beforeId}</before>`;
  return `<iq type='set' id='q${n}'><query xmlns='urn:xmpp:mam:2' queryid='q${n}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>${w}</x><set xmlns='http://jabber.org/protocol/rsm'><max>${PAGE}</max>${before}</set></query></iq>`;
}

/** One client logged in (direct TLS, SCRAM-SHA-1) that sends queries one at a time and collects their results. */
async function connect(tlsPort: number): Promise<{ query(t: Target): Promise<void>; close(): void }> {
  let current: { n: number; items: { id: string; withBare: string }[]; resolve(): void; reject(e: Error): void; t: Target } | undefined;
  let gone: Error | undefined;
  let n = 0;
  const conn = await new Promise<Conn>((resolve, reject) => {
    new Conn(
      { host: '127.0.0.1', port: tlsPort, domain: DOMAIN, tls: 'direct', mechanism: 'SCRAM-SHA-1', timeoutMs: 20_000 },
      { user: OWNER, password: PASSWORD, resource: 'bench', presence: true },
      {
        ready: (c) => resolve(c),
        stanza: (_c, name, raw) => {
          const q = current;
          if (!q) return;
          if (name === 'message') {
            const i = raw.indexOf('<result ');
            if (i < 0) return;
            const tag = startTag(raw.slice(i));
            if (attr(tag, 'queryid') !== `q${q.n}`) return;
            // The peer of a result: the other party of the forwarded message.
            const from = /<message[^>]* from="([^"/]+)/.exec(raw.slice(raw.indexOf('<forwarded')))?.[1] ?? '';
            const to = /<message[^>]* to="([^"/]+)/.exec(raw.slice(raw.indexOf('<forwarded')))?.[1] ?? '';
            q.items.push({ id: attr(tag, 'id') ?? '', withBare: from === ME ? to : from });
          } else if (name === 'iq' && attr(startTag(raw), 'id') === `q${q.n}`) {
            current = undefined;
            if (attr(startTag(raw), 'type') !== 'result') return q.reject(new Error(`query answered with an error: ${raw}`));
            const fin = /<last>([^<]+)<\/last>/.exec(raw)?.[1];
            try {
              checkPage(q.items, q.t, 'xmpp');
              if (fin !== q.t.lastId) throw new Error(`xmpp: <fin/> says the page ends with ${fin}, not ${q.t.lastId}`);
              q.resolve();
            } catch (err) {
              q.reject(err as Error);
            }
          }
        },
        end: (_c, error) => {
          gone = new Error(`the client's connection ended: ${error ?? 'closed'}`);
          reject(gone);
          current?.reject(gone);
        },
      },
    );
  });
  return {
    query: (t) =>
      new Promise<void>((resolve, reject) => {
        if (gone) return reject(gone);
        current = { n: ++n, items: [], resolve, reject, t };
        conn.write(queryIq(n, t));
      }),
    close: () => conn.close(),
  };
}

// ---- the server -------------------------------------------------------------

const liveChildren = new Set<ChildProcess>();
atExit(() => {
  for (const c of liveChildren) c.kill('SIGKILL');
});

/** Our server as its own process on `dataDir` (and PostgreSQL at `databaseUrl`), one worker; its direct-TLS port. */
async function startServer(dataDir: string, databaseUrl?: string): Promise<{ tlsPort: number; stop(): Promise<void> }> {
  // An empty config file: neither the repository's xmpp.config.json nor the caller's XMPP_ variables change what is measured.
  const none = join(dataDir, '..', `${process.pid}-none.json`);
  writeFileSync(none, '{}\n');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) env[k] = v;
  Object.assign(env, {
    XMPP_CONFIG: none,
    XMPP_DOMAIN: DOMAIN,
    XMPP_BIND_HOST: '127.0.0.1',
    XMPP_DATA_DIR: dataDir,
    XMPP_C2S_PORT: '0',
    XMPP_TLS_PORT: '0',
    XMPP_S2S: 'false',
    XMPP_S2S_PORT: '0',
    XMPP_WORKERS: '1',
    // info: the "listening" line says the ports.
    XMPP_LOG_LEVEL: 'info',
    ...(databaseUrl ? { XMPP_DATABASE_URL: databaseUrl } : {}),
  });
  const child = spawn(process.execPath, [join(ROOT, 'src/main.ts'), 'start'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  const lines: string[] = [];
  const tlsPort = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      lines.push(line);
      if (lines.length > 40) lines.shift();
      try {
        const rec = JSON.parse(line) as { msg?: string; tlsPort?: number; level?: string };
        if (rec.msg === 'listening') resolve(rec.tlsPort!);
        else if (rec.level === 'error' || rec.level === 'fatal') console.error(`server: ${line}`);
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => reject(new Error(`the server exited (${code}) before listening:\n${lines.join('\n')}`)));
  });
  return {
    tlsPort,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// ---- PostgreSQL -------------------------------------------------------------

/** Stops a private PostgreSQL at once and synchronously (an exit handler cannot wait), then removes its directory. */
function stopPostgresNow(server: PostgresServer): void {
  const bin = postgresBin()!;
  const args = [join(bin, 'pg_ctl'), '-D', join(server.dir, 'data'), 'stop', '-m', 'immediate', '-w', '-t', '10'];
  try {
    if (userInfo().uid === 0) execFileSync('runuser', ['-u', 'postgres', '--', ...args], { stdio: 'ignore' });
    else execFileSync(args[0], args.slice(1), { stdio: 'ignore' });
  } catch {
    // Not running (stopped already, or interrupted by the same Ctrl-C).
  }
  rmSync(server.dir, { recursive: true, force: true });
}

// ---- plans ------------------------------------------------------------------

/** The SELECT the store runs for `t` (store.ts's filters, as the stores build them), with its values. */
function selectFor(t: Target, param: (v: unknown) => string): string {
  const where = sqlFilters(OWNER, { withBare: t.withBare, beforeId: t.beforeId }, param, () => 'FALSE');
  return `SELECT id, owner, stamp, with_bare, with_resource, outgoing, body, stanza FROM archive WHERE ${where} ORDER BY id DESC LIMIT ${param(PAGE + 1)}`;
}

function explainSqlite(file: string, ks: Kind[]): void {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    for (const k of ks) {
      const values: (string | number)[] = [];
      const sql = selectFor(k.pick(), (v) => (values.push(v as string | number), '?'));
      const plan = db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...values) as { detail: string }[];
      console.log(`  ${k.name}:\n    ${sql}\n${plan.map((p) => `      ${p.detail}`).join('\n')}`);
    }
  } finally {
    db.close();
  }
}

async function explainPostgres(url: string, ks: Kind[]): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (const k of ks) {
      const values: unknown[] = [];
      const sql = selectFor(k.pick(), (v) => `$${values.push(v)}`);
      const plan = await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, values);
      console.log(`  ${k.name}:\n    ${sql}\n${plan.rows.map((r) => `      ${r['QUERY PLAN']}`).join('\n')}`);
    }
  } finally {
    await c.end();
  }
}

// ---- one backend ------------------------------------------------------------

interface Row {
  backend: string;
  kind: string;
  level: 'store' | 'xmpp';
  ms: number[];
}

const rows: Row[] = [];
const notes: string[] = [];

function progressPrinter(label: string): (done: number) => void {
  let lastPrint = 0;
  return (done) => {
    const now = performance.now();
    if (now - lastPrint < 5000 && done < ROWS) return;
    lastPrint = now;
    console.error(`  ${label}: ${done} / ${ROWS} messages written`);
  };
}

async function measure(backend: string, store: ArchiveStore, ks: Kind[]): Promise<void> {
  const q = storeQuery(store);
  await timeAll(ks, WARMUP, q);
  const ms = await timeAll(ks, QUERIES, q);
  ks.forEach((k, i) => rows.push({ backend, kind: k.name, level: 'store', ms: ms[i] }));
}

async function overXmpp(backend: string, dataDir: string, ks: Kind[], databaseUrl?: string): Promise<void> {
  const server = await startServer(dataDir, databaseUrl);
  try {
    const client = await connect(server.tlsPort);
    try {
      await timeAll(ks, WARMUP, client.query);
      const xmpp = await timeAll(ks, QUERIES, client.query);
      ks.forEach((k, i) => rows.push({ backend, kind: k.name, level: 'xmpp', ms: xmpp[i] }));
    } finally {
      client.close();
    }
  } finally {
    await server.stop();
  }
}

async function runSqlite(): Promise<void> {
  const dataDir = join(tempDir('xmpp-bench-mam-sqlite-'), 'data');
  const file = join(dataDir, 'archive.sqlite');
  console.error(`sqlite: seeding ${ROWS} messages into ${file}`);
  const store = SqliteArchiveStore.open(file);
  let ks: Kind[];
  try {
    const seeded = await seed(store, progressPrinter('sqlite'));
    notes.push(`sqlite: seeded ${ROWS} messages in ${(seeded.seedMs / 1000).toFixed(1)} s (${Math.round(ROWS / (seeded.seedMs / 1000))} messages/s, batches of ${BATCH}); archive.sqlite ${fileMiB(file)} MiB`);
    console.error(notes.at(-1));
    ks = kinds(seeded);
    console.error('sqlite: queries on the store');
    await measure('sqlite', store, ks);
  } finally {
    store.close();
  }
  if (opt.explain) {
    console.log('\nsqlite: EXPLAIN QUERY PLAN');
    explainSqlite(file, ks);
  }
  const accounts = SqliteAccountStore.open(join(dataDir, 'accounts.sqlite'), 4096);
  try {
    await accounts.create(OWNER, PASSWORD);
  } finally {
    accounts.close();
  }
  console.error('sqlite: queries through the server');
  await overXmpp('sqlite', dataDir, ks);
  rmSync(join(dataDir, '..'), { recursive: true, force: true });
}

async function runPostgres(): Promise<void> {
  if (!postgresBin()) {
    console.error('postgres: PostgreSQL is not installed (apt-get install postgresql): skipped');
    return;
  }
  const server = await PostgresServer.start();
  let stopped = false;
  atExit(() => {
    if (!stopped) stopPostgresNow(server);
  });
  try {
    const url = await server.createDatabase('mam_bench');
    console.error(`postgres: seeding ${ROWS} messages into a private PostgreSQL on port ${server.port}`);
    const store = await PostgresArchiveStore.open(url);
    let ks: Kind[];
    try {
      const seeded = await seed(store, progressPrinter('postgres'));
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      let vacuumMs: number;
      let size: string;
      try {
        // What autovacuum does to a table that grew this much (statistics and visibility map), at once rather than within a minute or so.
        const t0 = performance.now();
        await c.query('VACUUM (ANALYZE) archive');
        vacuumMs = performance.now() - t0;
        size = (await c.query<{ s: string }>("SELECT pg_size_pretty(pg_total_relation_size('archive')) AS s")).rows[0].s;
      } finally {
        await c.end();
      }
      notes.push(`postgres: seeded ${ROWS} messages in ${(seeded.seedMs / 1000).toFixed(1)} s (${Math.round(ROWS / (seeded.seedMs / 1000))} messages/s, batches of ${BATCH}), then VACUUM (ANALYZE) in ${(vacuumMs / 1000).toFixed(1)} s; table and indexes ${size}`);
      console.error(notes.at(-1));
      ks = kinds(seeded);
      console.error('postgres: queries on the store');
      await measure('postgres', store, ks);
    } finally {
      await store.close();
    }
    if (opt.explain) {
      console.log('\npostgres: EXPLAIN (ANALYZE, BUFFERS)');
      await explainPostgres(url, ks);
    }
    const accounts = await PostgresAccountStore.open(url, 4096);
    try {
      await accounts.create(OWNER, PASSWORD);
    } finally {
      await accounts.close();
    }
    console.error('postgres: queries through the server');
    const dataDir = join(tempDir('xmpp-bench-mam-pg-'), 'data');
    await overXmpp('postgres', dataDir, ks, url);
  } finally {
    stopped = true;
    await server.destroy();
  }
}

function fileMiB(file: string): string {
  let bytes = 0;
  for (const f of [file, `${file}-wal`]) {
    try {
      bytes += statSync(f).size;
    } catch {
      // no WAL
    }
  }
  return (bytes / 2 ** 20).toFixed(0);
}

// ---- main -------------------------------------------------------------------

const started = new Date();
const load0 = loadavg()[0];
for (const b of BACKENDS) {
  if (b === 'sqlite') await runSqlite();
  else await runPostgres();
}

const f = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
console.log(`\nXEP-0313 queries, ${ROWS} messages of one account with ${PEERS} peers, ${QUERIES} timed queries of each kind (after ${WARMUP} untimed), one at a time`);
console.log(`${started.toISOString()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Node.js ${process.version}, load average ${load0.toFixed(1)} at the start, ${loadavg()[0].toFixed(1)} at the end`);
for (const n of notes) console.log(`- ${n}`);
console.log('\n| backend | query | level | p50 ms | p99 ms | max ms | queries/s |');
console.log('|---|---|---|---:|---:|---:|---:|');
for (const r of rows) {
  const s = [...r.ms].sort((a, b) => a - b);
  const total = r.ms.reduce((a, b) => a + b, 0);
  console.log(`| ${r.backend} | ${r.kind} | ${r.level} | ${f(pct(s, 50))} | ${f(pct(s, 99))} | ${f(s[s.length - 1])} | ${Math.round((r.ms.length / total) * 1000)} |`);
}
console.log('\nstore: ArchiveStore.query in this process (SQLite in this thread; PostgreSQL through a pool); xmpp: the iq sent by a client over TLS until its result, after the 50 result messages, through the server (one worker).');
