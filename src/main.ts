#!/usr/bin/env node
// Composition root and CLI: `start` runs a node; `user add|remove|passwd|list`
// manages accounts in the same store the server uses; `load` generates load
// on a server (src/load/).
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { loadConfig, ConfigError, SETTINGS, RELOADABLE, pathRules } from './config/index.ts';
import type { Config } from './config/index.ts';
import type { RunningServer, ReloadOutcome } from './acceptor/server.ts';
import type { SessionInfo, WorkerStats } from './admin/tasks.ts';
import { parseJid } from './xmpp/jid.ts';
import type { AccountStore } from './accounts/store.ts';
import type { RemovalNotice } from './accounts/removal.ts';
import { StoreMissingError } from './storage/sqlite.ts';
import { openToOthers } from './storage/files.ts';
import { log, setLogLevel } from './log.ts';
// The server and the stores are imported by the commands that use them:
// help, usage and configuration errors answer without loading them.

const USAGE = `usage: xmpp-server <command>
  start                         run a server node (configuration: environment or xmpp.config.json)
  user add <name> [password]    create an account (password asked for, or read from stdin, when omitted)
  user passwd <name> [password] change a password
  user remove <name>            delete an account, its roster and its offline messages
  user list                     list accounts
  user export FILE              write every account (SCRAM hashes, never a password), its roster, pending
                                subscription requests, offline messages and message archive to FILE (XEP-0227)
  user import [--skip-existing|--dry-run] FILE|DIR...
                                import accounts, rosters, pending requests, offline messages and archives from XEP-0227
                                files (ours, Prosody's prosody-migrator, ejabberd's export_piefxis); refused
                                whole if an account exists here, unless --skip-existing; --dry-run checks only
  db migrate                    bring the PostgreSQL schema (XMPP_DATABASE_URL) up to date, as a node does at start
  db import-redis [--dry-run|--force]
                                move accounts, rosters and offline messages from Redis (XMPP_REDIS_URL)
                                into PostgreSQL (XMPP_DATABASE_URL), once (--force: again); --dry-run counts only
  reload                        make the running node read its config file and certificate files again (as SIGHUP)
  sessions list [--user JID] [--json]
                                the sessions online on every node: JID, address, since, node, worker, transport
  sessions kick JID             end a session (full JID), or every session of an account (bare JID), wherever it is
  stats [--json]                connections and sessions of every node and worker
  announce MESSAGE...           send a message to every session online (as XEP-0133's announcement)
  config                        print the settings and their environment variables
  load <workload> [options]     generate load on a server: login, chat, idle or storm (load --help)
  help                          print this text (also --help, -h)`;

/** One node's `stats` answer (acceptor/server.ts): its acceptor's counts and each worker's (or why a worker has none). */
interface NodeStats {
  connections: number;
  workers: (WorkerStats & { err?: string })[];
}

const HELP_FLAGS = ['--help', '-h'];
const HELP = ['help', ...HELP_FLAGS];

/** The arguments each `user` subcommand takes: at least, at most. */
const USER_ARGS = new Map<string | undefined, [number, number]>([['add', [1, 2]], ['passwd', [1, 2]], ['remove', [1, 1]], ['list', [0, 0]], ['export', [1, 1]], ['import', [1, Infinity]]]);
/** The flags `user import` takes. */
const IMPORT_FLAGS = ['--skip-existing', '--dry-run'];

/**
 * Asks twice on the terminal, showing nothing of what is typed: an unseen
 * typing mistake would otherwise lock the account out.
 */
async function askTwice(): Promise<string> {
  // The terminal's line editing, without echo: readline puts the terminal in
  // raw mode and writes what is typed to an output that drops it. One
  // interface for both questions, so echo never comes back in between.
  const mute = new Writable({ write: (_chunk, _enc, done) => done() });
  const rl = createInterface({ input: process.stdin, output: mute, terminal: true });
  // Raw mode turns Ctrl-C into a key: it must still interrupt.
  rl.on('SIGINT', () => {
    rl.close();
    process.stderr.write('\n');
    process.exit(130);
  });
  const lines = rl[Symbol.asyncIterator]();
  const ask = async (prompt: string): Promise<string> => {
    process.stderr.write(prompt);
    const line = await lines.next();
    process.stderr.write('\n'); // the Enter that was not echoed
    if (line.done || !line.value) throw new Error('no password given');
    return line.value as string;
  };
  try {
    const first = await ask('password: ');
    if ((await ask('password again: ')) !== first) throw new Error('the passwords do not match');
    return first;
  } finally {
    rl.close();
  }
}

async function readPassword(given: string | undefined): Promise<string> {
  if (given) return given;
  if (process.stdin.isTTY) return askTwice();
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  throw new Error('no password given');
}

/**
 * Deletes an account and what the server keeps for it (roster, offline
 * messages), changes its contacts' rosters (RFC 6121 §2.5.2), and tells the
 * running server, which ends the account's sessions and tells its contacts.
 * False when there is no such account.
 */
async function removeUser(config: Config, accounts: AccountStore, name: string): Promise<boolean> {
  const { removeAccount } = await import('./accounts/removal.ts');
  const { openRosterStore } = await import('./roster/open.ts');
  const { openOfflineStore } = await import('./offline/open.ts');
  const { openArchiveStore } = await import('./mam/open.ts');
  const { openBlockStore } = await import('./blocking/open.ts');
  const { openPersonalStore } = await import('./personal/open.ts');
  const { openPepStore } = await import('./pep/open.ts');
  const { openMucStore } = await import('./muc/open.ts');
  const { openUploadStore } = await import('./upload/open.ts');
  // A store the server never created holds nothing for the account.
  const existing = { existing: true };
  const ifExists = <T,>(p: Promise<T>) => p.catch((err: unknown) => (err instanceof StoreMissingError ? undefined : Promise.reject(err)));
  const roster = await ifExists(openRosterStore(config, existing));
  const offline = await ifExists(openOfflineStore(config, existing));
  const archive = await ifExists(openArchiveStore(config, existing));
  const blocking = await ifExists(openBlockStore(config, existing));
  const personal = await ifExists(openPersonalStore(config, existing));
  const pep = await ifExists(openPepStore(config, existing));
  const muc = await ifExists(openMucStore(config, existing));
  const upload = await ifExists(openUploadStore(config, existing));
  let notice: RemovalNotice | undefined;
  try {
    notice = await removeAccount({ accounts, roster, offline, archive, blocking, personal, pep, muc, uploads: upload && { store: upload, dir: config.uploadDir } }, config.domain, name, config.maxRosterItems);
  } finally {
    await roster?.close();
    await offline?.close();
    await archive?.close();
    await blocking?.close();
    await personal?.close();
    await pep?.close();
    await muc?.close();
    await upload?.close();
  }
  if (!notice) return false;
  await announceRemoval(config, notice);
  return true;
}

/**
 * Tells the running server (a single node's admin socket) or every node
 * (Redis, on one connection made at the first notice) that what their
 * workers keep of an account changed in the stores.
 */
function changeAnnouncer(config: Config): { announce(kind: 'blocklist', user: string): Promise<void>; close(): void } {
  let redis: Promise<{ publish(channel: string, message: Buffer): Promise<unknown>; disconnect(): void }> | undefined;
  return {
    async announce(kind, user) {
      if (!config.redisUrl) {
        const { tellServer } = await import('./admin/socket.ts');
        await tellServer(config.dataDir, { op: 'changed', kind, user });
        return;
      }
      const { encodeBuffer } = await import('./worker/wire.ts');
      const { K } = await import('./registry/redis.ts');
      redis ??= (async () => {
        const { connectRedis, waitForRedis } = await import('./cluster/redis.ts');
        const r = connectRedis(config.redisUrl!, 'cli');
        await waitForRedis(r, { timeoutMs: config.redisStartupTimeoutMs });
        return r;
      })();
      await (await redis).publish(K.changed, encodeBuffer({ kind, user }));
    },
    close() {
      void redis?.then((r) => r.disconnect(), () => {});
    },
  };
}

/** Tells the running server (a single node's admin socket) or every node (Redis) that an account is gone. */
async function announceRemoval(config: Config, notice: RemovalNotice): Promise<void> {
  if (!config.redisUrl) {
    const { tellServer } = await import('./admin/socket.ts');
    await tellServer(config.dataDir, { op: 'removed', notice });
    return;
  }
  const { connectRedis, waitForRedis } = await import('./cluster/redis.ts');
  const { encodeBuffer } = await import('./worker/wire.ts');
  const { K } = await import('./registry/redis.ts');
  const r = connectRedis(config.redisUrl, 'cli');
  try {
    await waitForRedis(r, { timeoutMs: config.redisStartupTimeoutMs });
    await r.publish(K.removed, encodeBuffer(notice));
  } finally {
    r.disconnect();
  }
}

/** `user export` and `user import` (storage/xep0227.ts), on the stores the server uses. */
async function portable(config: Config, accounts: AccountStore, sub: 'export' | 'import', args: string[]): Promise<number> {
  const { openRosterStore } = await import('./roster/open.ts');
  const { openOfflineStore } = await import('./offline/open.ts');
  const { openArchiveStore } = await import('./mam/open.ts');
  const { openPersonalStore } = await import('./personal/open.ts');
  const { openPepStore } = await import('./pep/open.ts');
  const { openBlockStore } = await import('./blocking/open.ts');
  const { exportFile, importFiles, summary, Xep0227Error, ImportFailedError } = await import('./storage/xep0227.ts');
  const opened: { close(): void | Promise<void> }[] = [];
  const open = async <T extends { close(): void | Promise<void> }>(p: Promise<T>): Promise<T> => {
    try {
      const store = await p;
      opened.push(store);
      return store;
    } catch (err) {
      for (const s of opened) await s.close();
      throw err;
    }
  };
  const roster = await open(openRosterStore(config, { existing: true }));
  const offline = await open(openOfflineStore(config, { existing: true }));
  const archive = await open(openArchiveStore(config, { existing: true }));
  // Made if missing: a server from before vCards, PEP or blocking has none yet, and an import fills them.
  const personal = await open(openPersonalStore(config));
  const pep = await open(openPepStore(config));
  const blocking = await open(openBlockStore(config));
  const stores = { accounts, roster, offline, archive, personal, pep, blocking };
  const changes = changeAnnouncer(config);
  try {
    if (sub === 'export') {
      const c = await exportFile(args[0], stores, config.domain);
      console.log(`exported ${c.accounts} accounts, ${c.rosterItems} roster items, ${c.pending} pending subscription requests, ${c.offline} offline messages, ${c.archived} archived messages, ${c.vcards} vCards, ${c.privateXml} namespaces of private XML, ${c.pepNodes} PEP nodes with ${c.pepItems} items, ${c.blocked} blocked JIDs to ${args[0]}`);
      return 0;
    }
    const files = args.filter((a) => !IMPORT_FLAGS.includes(a));
    const dryRun = args.includes('--dry-run');
    try {
      const r = await importFiles(files, stores, {
        domain: config.domain,
        skipExisting: args.includes('--skip-existing'),
        dryRun,
        iterations: config.scramIterations,
        maxRosterItems: config.maxRosterItems,
        maxRosterBytes: config.maxRosterBytes,
        maxOfflineMessages: config.maxOfflineMessages,
        maxOfflineBytes: config.maxOfflineBytes,
        announceBlocklist: (user) => changes.announce('blocklist', user),
      });
      console.log(`${dryRun ? 'would import' : 'imported'} ${summary(r)}`);
      if (r.skipped.length > 0) console.log(`${dryRun ? 'would leave' : 'left'} ${r.skipped.length} existing account(s) as they were: ${r.skipped.join(', ')}`);
      for (const [host, n] of r.otherHosts) console.error(`note: ${n} user(s) of ${host} left out: this server is ${config.domain}`);
      if (r.leftOut.size > 0) console.error(`note: not kept by this server, left out: ${[...r.leftOut].map(([n, c]) => `<${n}> (${c} users)`).join(', ')}`);
      for (const [n, c] of r.notes) console.error(`note: ${n}: ${c} user(s)`);
      if (r.offlineDropped > 0) console.error(`warning: ${r.offlineDropped} offline message(s) beyond XMPP_MAX_OFFLINE / XMPP_MAX_OFFLINE_BYTES not kept`);
      if (r.pepDropped > 0) console.error(`warning: ${r.pepDropped} PEP item(s) not kept: beyond their node's pubsub#max_items, larger than 192 KiB, or without one payload in a namespace of its own`);
      return 0;
    } catch (err) {
      if (err instanceof Xep0227Error) {
        console.error(`error: ${err.message}`);
        return 1;
      }
      if (err instanceof ImportFailedError) {
        console.error(`error: ${err.message}`);
        return 1;
      }
      throw err;
    }
  } finally {
    changes.close();
    for (const s of opened) await s.close();
  }
}

async function user(config: Config, [sub, name, password, ...more]: string[]): Promise<number> {
  // The store the server uses (the SQLite file, or PostgreSQL with XMPP_DATABASE_URL),
  // never a new one: a store created here would be one the server never reads.
  const { openAccountStore } = await import('./accounts/open.ts');
  const store = await openAccountStore(config, { existing: true });
  try {
    switch (sub) {
      case 'export':
      case 'import':
        return await portable(config, store, sub, [name, password, ...more].filter((a) => a !== undefined));
      case 'add':
        await store.create(name, await readPassword(password));
        console.log(`added ${name}@${config.domain}`);
        return 0;
      case 'passwd':
        await store.setPassword(name, await readPassword(password));
        console.log(`changed the password of ${name}@${config.domain}`);
        return 0;
      case 'remove':
        if (!(await removeUser(config, store, name))) {
          console.error(`error: no account ${name}`);
          return 1;
        }
        console.log(`removed ${name}@${config.domain}`);
        return 0;
      default:
        for (const u of await store.list()) console.log(`${u}@${config.domain}`);
        return 0;
    }
  } finally {
    await store.close();
  }
}

async function start(config: Config): Promise<void> {
  // SIGHUP reloads what may change without a restart (the config file, the
  // certificate files); a reload that fails changes nothing and never stops
  // the server (a service manager's ExecReload must not be an outage).
  const now: { running?: RunningServer; ending?: boolean } = {};
  process.on('SIGHUP', () => {
    const { running, ending } = now;
    if (!running || ending) return log.warn('SIGHUP ignored: the server is starting or stopping', { signal: 'SIGHUP' });
    try {
      running.reload();
    } catch (err) {
      log.error('reload refused: nothing was changed', { signal: 'SIGHUP', err: (err as Error).message });
    }
  });
  for (const entry of openToOthers(config.dataDir)) log.warn('data directory entry open to other users', { ...entry });
  // The handlers go in before the server logs "listening": a signal sent as
  // soon as that line appears must still shut down gracefully. A signal while
  // starting abandons a wait for Redis at once; any other step of the start
  // runs to its end (bounded like a shutdown), then the server stops. A
  // second signal exits at once.
  const starting = new AbortController();
  let requested: string | undefined;
  let cutShort: NodeJS.Timeout | undefined;
  let stop = (signal: string, _code?: number) => {
    if (requested) process.exit(1);
    requested = signal;
    log.info('shutting down', { signal });
    starting.abort(new Error(`stopped by ${signal} while starting`));
    cutShort = setTimeout(() => {
      log.error('the start did not end in time after the stop request');
      process.exit(1);
    }, config.shutdownTimeoutMs + 5000);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  let server: RunningServer;
  try {
    const { startServer } = await import('./acceptor/server.ts');
    server = await startServer(config, { signal: starting.signal });
  } catch (err) {
    // Nothing was served yet: stopping now is the whole shutdown.
    if (starting.signal.aborted) process.exit(0);
    throw err;
  }
  clearTimeout(cutShort);
  now.running = server;
  let stopping = false;
  stop = (signal: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    now.ending = true;
    // After the deadline, leaving the cluster (a Redis command, 2 s at most)
    // and stopping the workers still take a moment: only a hang exits 1.
    const hard = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 5000);
    hard.unref();
    // close() shuts the listeners before it first waits: once this line is
    // out, no new connection gets in.
    const closed = server.close();
    if (signal !== requested) log.info('shutting down', { signal });
    closed.then(
      () => process.exit(code),
      (err: unknown) => {
        log.error('shutdown failed', { err: String(err) });
        process.exit(1);
      },
    );
  };
  if (requested) stop(requested);
  // Two processes must not serve under one node name: the older one yields.
  server.membership?.on('superseded', () => stop('superseded', 1));
}

/** An address the administrator typed: a JID, or a bare username of the served domain. */
function accountJid(config: Config, raw: string): string {
  const j = parseJid(raw.includes('@') ? raw : `${raw}@${config.domain}`);
  if (!j.local || j.domain !== config.domain) throw new Error(`${JSON.stringify(raw)} is not the JID of an account of ${config.domain}`);
  return `${j.local}@${j.domain}${j.resource ? `/${j.resource}` : ''}`;
}

/** Columns, each as wide as its widest cell. */
function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n');
}

interface NodeAnswers<T> {
  answers: { node: string; v?: T; err?: string }[];
  missing: number;
}

/** What did not answer, on stderr: a list or a count that leaves nodes out must say so. */
function reportGaps(a: NodeAnswers<{ failed?: { worker: number; err: string }[] }>): boolean {
  let gaps = false;
  for (const n of a.answers) {
    if (n.err !== undefined) console.error(`warning: node ${n.node} could not answer: ${n.err}`);
    for (const f of n.v?.failed ?? []) console.error(`warning: node ${n.node}, worker ${f.worker} could not answer: ${f.err}`);
    gaps ||= n.err !== undefined || (n.v?.failed?.length ?? 0) > 0;
  }
  if (a.missing > 0) console.error(`warning: ${a.missing} node(s) did not answer in time: they are left out`);
  return gaps || a.missing > 0;
}

/**
 * Runtime administration (reload, sessions, stats, announce): asked of the
 * node running on this data directory, over its administration socket;
 * in a cluster that node asks the others (admin/cluster.ts) or acts
 * wherever the sessions are.
 */
async function administer(config: Config, cmd: string, rest: string[]): Promise<number> {
  const { askServer, NoServerError } = await import('./admin/socket.ts');
  const json = rest.includes('--json');
  const args = rest.filter((a) => a !== '--json');
  try {
    switch (cmd) {
      case 'reload': {
        const r = (await askServer(config.dataDir, { op: 'reload' }, 30_000)) as unknown as ReloadOutcome;
        if (json) {
          console.log(JSON.stringify(r));
          return 0;
        }
        console.log(`reloaded; applied: ${r.applied.length > 0 ? r.applied.join(', ') : 'no setting changed'}`);
        console.log(`certificate: ${r.certificate.subject.replace(/\n/g, ', ')}, valid to ${r.certificate.validTo}, SHA-256 ${r.certificate.fingerprint256}`);
        if (r.needRestart.length > 0) console.error(`warning: changed but not applied until a restart: ${r.needRestart.join(', ')}`);
        if (r.overridden.length > 0) console.error(`warning: set in the config file but overridden by the environment: ${r.overridden.join(', ')}`);
        return 0;
      }
      case 'sessions': {
        if (args[0] === 'kick') {
          const jid = accountJid(config, args[1]);
          const { ended } = (await askServer(config.dataDir, { op: 'kick', jid }, 30_000)) as { ended: number };
          if (json) console.log(JSON.stringify({ jid, ended }));
          else console.log(`ended ${ended} session(s) of ${jid}`);
          if (ended === 0) console.error(`error: no session of ${jid} is online`);
          return ended > 0 ? 0 : 1;
        }
        const user = args[1] === '--user' ? accountJid(config, args[2]) : undefined;
        const a = (await askServer(config.dataDir, { op: 'sessions', ...(user ? { user } : {}) }, 30_000)) as unknown as NodeAnswers<{ sessions: SessionInfo[]; total: number; failed?: { worker: number; err: string }[] }>;
        const all = a.answers.flatMap((n) => n.v?.sessions ?? []).sort((x, y) => (x.jid < y.jid ? -1 : x.jid > y.jid ? 1 : 0));
        if (json) console.log(JSON.stringify({ sessions: all, nodes: a.answers.map((n) => ({ node: n.node, total: n.v?.total ?? 0, ...(n.err !== undefined ? { err: n.err } : {}) })), missing: a.missing }));
        else if (all.length > 0) {
          console.log(table([
            ['JID', 'ADDRESS', 'SINCE', 'NODE', 'WORKER', 'TRANSPORT'],
            ...all.map((x) => [x.jid, x.detached ? '(detached)' : `${x.ip ?? '?'}:${x.port ?? '?'}`, x.since, x.node, String(x.worker), `${x.transport}${x.secure ? '' : ' (plain)'}${x.resumable ? ', resumable' : ''}`]),
          ]));
        }
        for (const n of a.answers) if (n.v && n.v.total > n.v.sessions.length) console.error(`note: node ${n.node} has ${n.v.total} sessions; ${n.v.sessions.length} listed`);
        if (!json) console.error(`${all.length} session(s)${user ? ` of ${user}` : ''} on ${a.answers.length} node(s)`);
        return reportGaps(a) ? 1 : 0;
      }
      case 'stats': {
        const a = (await askServer(config.dataDir, { op: 'stats' }, 30_000)) as unknown as NodeAnswers<NodeStats>;
        if (json) console.log(JSON.stringify(a));
        else {
          const columns: ((w: WorkerStats) => number)[] = [(w) => w.connections, (w) => w.sessions, (w) => w.detached, (w) => w.s2sIncoming, (w) => w.s2sOutgoing, (w) => w.components];
          const answered = (n: NodeStats) => n.workers.filter((w) => w.err === undefined);
          const rows = [['NODE', 'WORKER', 'CONNECTIONS', 'SESSIONS', 'DETACHED', 'S2S IN', 'S2S OUT', 'COMPONENTS']];
          for (const n of a.answers) {
            if (!n.v) continue;
            const v = n.v;
            rows.push([n.node, 'all', ...columns.map((f) => String(answered(v).reduce((t, w) => t + f(w), 0)))]);
            for (const w of v.workers) rows.push(['', String(w.worker), ...(w.err !== undefined ? [`(${w.err})`, '', '', '', '', ''] : columns.map((f) => String(f(w))))]);
          }
          console.log(table(rows));
          const total = (f: (w: WorkerStats) => number) => a.answers.reduce((t, n) => t + (n.v ? answered(n.v).reduce((u, w) => u + f(w), 0) : 0), 0);
          console.log(`total: ${total((w) => w.connections)} connections, ${total((w) => w.sessions)} sessions on ${a.answers.length} node(s)`);
        }
        const failed = (n: NodeStats) => n.workers.filter((w) => w.err !== undefined).map((w) => ({ worker: w.worker, err: w.err! }));
        return reportGaps({ missing: a.missing, answers: a.answers.map((n) => ({ node: n.node, err: n.err, ...(n.v ? { v: { failed: failed(n.v) } } : {}) })) }) ? 1 : 0;
      }
      default: {
        const text = args.join(' ');
        const r = (await askServer(config.dataDir, { op: 'announce', text }, 6 * 60_000)) as { sent: number; failed: number };
        if (json) console.log(JSON.stringify(r));
        else console.log(`announced to ${r.sent} session(s)${r.failed > 0 ? `; ${r.failed} could not be sent it` : ''}`);
        return r.failed > 0 ? 1 : 0;
      }
    }
  } catch (err) {
    if (err instanceof NoServerError) console.error(`error: ${err.message}. Run this command where the node runs, with its configuration (XMPP_DATA_DIR); the node creates its administration socket when it starts`);
    else console.error(`error: ${(err as Error).message}`);
    return 1;
  }
}

/** `db migrate`: the schema up to date (one node or command at a time: storage/postgres.ts). */
async function migrateDatabase(config: Config): Promise<number> {
  if (!config.databaseUrl) {
    console.error('error: no database to migrate: XMPP_DATABASE_URL is not set (the SQLite files of a single node need no migration)');
    return 1;
  }
  const { openPool, migrate, schemaVersion } = await import('./storage/postgres.ts');
  const pool = openPool(config.databaseUrl, 1);
  try {
    const applied = await migrate(pool);
    const at = await schemaVersion(pool);
    console.log(applied.length > 0 ? `applied ${applied.map((v) => `version ${v}`).join(', ')}; the schema is at version ${at}` : `the schema is at version ${at}: nothing to apply`);
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  } finally {
    await pool.end();
  }
}

/** `db import-redis`: the cluster's durable data from Redis into PostgreSQL (storage/import-redis.ts). */
async function importFromRedis(config: Config, dryRun: boolean, force: boolean): Promise<number> {
  if (!config.databaseUrl || !config.redisUrl) {
    console.error('error: db import-redis moves data from XMPP_REDIS_URL into XMPP_DATABASE_URL: set both');
    return 1;
  }
  const { openPool, migrate, schemaVersion } = await import('./storage/postgres.ts');
  const { MIGRATIONS } = await import('./storage/postgres-schema.ts');
  const { importRedis } = await import('./storage/import-redis.ts');
  const { connectRedis, waitForRedis } = await import('./cluster/redis.ts');
  const pool = openPool(config.databaseUrl, 2);
  const redis = connectRedis(config.redisUrl, 'import');
  try {
    await waitForRedis(redis, { timeoutMs: config.redisStartupTimeoutMs });
    // A dry run writes nothing, not even the schema: on a database without one, everything would move.
    let empty = false;
    if (dryRun) {
      const at = await schemaVersion(pool);
      const newest = MIGRATIONS.at(-1)!.version;
      if (at > newest) throw new Error(`the database schema is at version ${at}, newer than this command knows (${newest})`);
      if (at !== 0 && at < newest) throw new Error(`the database schema is at version ${at}: run db migrate first`);
      empty = at === 0;
    } else await migrate(pool);
    const c = await importRedis(redis, pool, { dryRun, empty, force });
    const what = `${c.accounts} accounts, ${c.rosterItems} roster items, ${c.pending} pending subscription requests, ${c.offline} offline messages`;
    console.log(dryRun ? `would move ${what}; ${c.skipped} already in the database` : `moved ${what}; ${c.skipped} already in the database, left as they were`);
    if (c.fakeSaltKeyDiffers) console.error("note: the database had its own key for SCRAM's fake salts, kept: unknown users' fake salts differ from before the move");
    return 0;
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    return 1;
  } finally {
    redis.disconnect();
    await pool.end();
  }
}

/** What is wrong with the command line, if anything (the usage is then printed). */
function usageError(cmd: string, rest: string[]): boolean {
  switch (cmd) {
    case 'start':
    case 'config':
      return rest.length > 0;
    case 'db':
      return !((rest.length === 1 && rest[0] === 'migrate') || (rest[0] === 'import-redis' && (rest.length === 1 || (rest.length === 2 && (rest[1] === '--dry-run' || rest[1] === '--force')))));
    case 'reload':
      return rest.filter((a) => a !== '--json').length > 0;
    case 'stats':
      return rest.filter((a) => a !== '--json').length > 0;
    case 'announce':
      return rest.length === 0 || rest.join(' ').trim() === '';
    case 'sessions': {
      const args = rest.filter((a) => a !== '--json');
      if (args[0] === 'kick') return args.length !== 2;
      return !(args[0] === 'list' && (args.length === 1 || (args.length === 3 && args[1] === '--user')));
    }
    case 'user': {
      const bounds = USER_ARGS.get(rest[0]);
      const args = rest[0] === 'import' ? rest.slice(1).filter((a) => !IMPORT_FLAGS.includes(a)) : rest.slice(1);
      return !bounds || args.length < bounds[0] || args.length > bounds[1];
    }
    default:
      return true;
  }
}

function wantsHelp(cmd: string, rest: string[]): boolean {
  if (HELP.includes(cmd)) return true;
  if (cmd === 'start' || cmd === 'config' || cmd === 'reload' || cmd === 'stats') return rest.length === 1 && HELP_FLAGS.includes(rest[0]);
  if (cmd === 'sessions' || cmd === 'announce') return HELP.includes(rest[0]) || (['list', 'kick'].includes(rest[0]) && HELP_FLAGS.includes(rest[1]));
  // `user help`, `user --help`, `user add --help` (a flag, not a name).
  if (cmd === 'user') return HELP.includes(rest[0]) || (USER_ARGS.has(rest[0]) && HELP_FLAGS.includes(rest[1]));
  return false;
}

async function main(argv: string[]): Promise<number | undefined> {
  const [cmd = 'start', ...rest] = argv;
  if (cmd === 'load') {
    // The load tool needs no server configuration; loaded only when used.
    const { runLoad } = await import('./load/cli.ts');
    return runLoad(rest);
  }
  if (wantsHelp(cmd, rest)) {
    console.log(USAGE);
    return 0;
  }
  if (usageError(cmd, rest)) {
    console.error(USAGE);
    return 2;
  }
  if (cmd === 'config') {
    // (reload): a reload (SIGHUP, `reload`) applies it to the running server.
    for (const s of SETTINGS) console.log(`${s.env.padEnd(26)} ${s.key.padEnd(24)} ${s.doc}${RELOADABLE.has(s.key) ? ' (reload)' : ''}`);
    console.log(['', ...pathRules()].join('\n'));
    return 0;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`configuration error: ${err.message}`);
      return 78; // EX_CONFIG
    }
    throw err;
  }
  setLogLevel(config.logLevel);
  if (cmd === 'start') {
    try {
      await start(config);
    } catch (err) {
      // A port in use, no openssl, an unreadable certificate, no Redis: one
      // clear line, and an exit that does not wait for the worker threads.
      console.error(`cannot start: ${(err as Error).message}`);
      process.exit(1);
    }
    return undefined;
  }
  if (cmd === 'db') return rest[0] === 'migrate' ? migrateDatabase(config) : importFromRedis(config, rest[1] === '--dry-run', rest[1] === '--force');
  if (['reload', 'sessions', 'stats', 'announce'].includes(cmd)) return administer(config, cmd, rest);
  try {
    return await user(config, rest);
  } catch (err) {
    if (err instanceof StoreMissingError) {
      console.error(`error: no account database at ${err.path}. The server creates it when it starts (npm start); if the server uses another data directory, set XMPP_DATA_DIR (or "dataDir" in the config file) to it`);
    } else console.error(`error: ${(err as Error).message}`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  if (code !== undefined) process.exitCode = code;
});
