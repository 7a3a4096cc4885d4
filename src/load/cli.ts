// `xmpp-server load <workload>`: a load generator for any XMPP server. The
// main thread parses the options, checks the target, starts the worker
// threads (worker.ts) that hold the connections, steps them through the
// workload's phases, merges their figures and prints the summary.
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { Aggregate } from './stats.ts';
import type { LatencySummary, StatsDelta } from './stats.ts';
import { now } from './client.ts';
import type { MechanismName, TlsMode } from './client.ts';
import { WORKLOADS, webUrl } from './options.ts';
import { TRANSPORTS } from './web.ts';
import type { Transport } from './web.ts';
import type { FromWorker, LoadOptions, ToWorker, Workload } from './options.ts';
import { renderReport } from './report.ts';

export const LOAD_USAGE = `usage: xmpp-server load <login|chat|idle|storm|flap|muc> [options]

Workloads:
  login   logins arriving at --rate per second (ramped up over --ramp s):
          connect, TLS, SASL, bind, presence, close; latency: connect to bound
  chat    --users online users each sending --rate chat messages per second
          to random online peers; latency: sent to delivered
  idle    --connections authenticated connections held until --duration ends
          (with --pid: the server's memory per connection, 0.5 s after the
          last one is bound and again at the end of the hold)
  storm   --connections connections, then all dropped and reconnected at once:
          time until all are bound again
  flap    chat with stream management and resumption (XEP-0198); a third of
          the way into --duration, every connection is cut at once and its
          session resumed on a new one (at --resume-port, e.g. another node):
          time until all are resumed, messages lost (must be 0), duplicates
  muc     --rooms rooms (XEP-0045) of --occupants occupants each: the first
          creates the room (an instant room), the others enter it; then
          --rate groupchat messages per second per room, from its occupants
          in turn; latency: sent to received, for every occupant; deliveries
          fanned out per second, lost (after --drain) and duplicated

Options:
  --host H            server address (default 127.0.0.1); must be loopback
                      unless --allow-remote
  --port P            default 5222, or 5223 with --tls direct
  --domain D          XMPP domain (default localhost)
  --tls MODE          starttls | direct | none (default starttls); with
                      --transport websocket or bosh: direct (wss://,
                      https://, the default) or none (ws://, http://)
  --transport T       tcp | websocket | bosh (default tcp): XMPP over
                      WebSocket (RFC 7395) at /xmpp-websocket, or BOSH
                      (XEP-0124, XEP-0206) at /http-bind, on the server's
                      HTTP(S) port (--port, or --url); login, chat and idle
  --url URL           with --transport websocket or bosh: the endpoint
                      (ws:// or wss://; http:// or https://), instead of
                      --host, --port, --tls and the default path
  --mechanism M       SCRAM-SHA-1 | PLAIN | ANONYMOUS (default SCRAM-SHA-1)
  --sm                enable stream management (XEP-0198) after binding and
                      acknowledge what the server asks for
  --resume            with --sm: ask for resumption too (XEP-0198 §5), and keep
                      what is sent until the server acknowledges it (flap
                      always does)
  --resume-port P     flap: the port the cut connections resume on
                      (default --port)
  --remote-domain D   chat across servers (federation): every user is also
                      online on the server of domain D (same user names and
                      password), and each message goes from a user on --port
                      to a user of D, so that it crosses a server-to-server
                      connection; latency: sent to delivered at D
  --remote-host H     that server's address (default --host)
  --remote-port P     its client port (default 5222)
  --users N           accounts <prefix>1..<prefix>N (default 100; idle and
                      storm: one per connection; muc: one per occupant, and
                      at least --occupants)
  --user-prefix S     default "user"
  --password S        the accounts' password (default "password"); "%i" in it
                      stands for the user's number, as in Tsung's accounts
  --provision         register the accounts first (XEP-0077), existing ones kept
  --workers N         load worker threads (default 1)
  --duration S        hard time limit in seconds (default 60)
  --count N           hard limit of operations: logins, messages, connections
                      (default 1000000)
  --rate R            login: arrivals per second (default 100);
                      chat: messages per second per user (default 1);
                      muc: messages per second per room (default 1)
  --ramp S            login: seconds to ramp up to --rate (default 0)
  --connections C     idle, storm: connections (default 100)
  --rooms R           muc: rooms (default 10), named <room-prefix>1..R
  --occupants O       muc: occupants per room (default 10)
  --room-prefix S     muc: default "loadroom"
  --muc-domain D      muc: the rooms' service (default conference.<domain>)
  --drain S           muc: seconds what was sent may take to arrive once
                      sending stops, before it counts as lost (default 5)
  --concurrency N     negotiations in progress at once, per worker (default 1000)
  --timeout S         connect-to-bound time limit per connection (default 30)
  --pid PID           idle: the server's process, to read its memory
  --json              print the summary as one JSON object on stdout
  --report FILE       also write an HTML report with charts
  --allow-remote      allow a target that is not on this machine
  --quiet             no progress lines on stderr

Exit code: 0 when the run completed, 1 when more than 1% of the operations
failed, nothing completed or the target was unreachable, 2 on a usage error.`;

/** A bad command line: exit code 2 with the usage text. */
export class UsageError extends Error {}

function num(name: string, v: string | undefined, opts: { int?: boolean; min?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || n < (opts.min ?? 0)) {
    throw new UsageError(`--${name}: ${JSON.stringify(v)} is not ${opts.int ? 'a whole number' : 'a number'}${opts.min !== undefined ? ` of at least ${opts.min}` : ''}`);
  }
  return n;
}

export function parseLoadArgs(argv: string[]): LoadOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string' },
        domain: { type: 'string', default: 'localhost' },
        tls: { type: 'string' },
        transport: { type: 'string', default: 'tcp' },
        url: { type: 'string' },
        mechanism: { type: 'string', default: 'SCRAM-SHA-1' },
        sm: { type: 'boolean', default: false },
        users: { type: 'string' },
        'user-prefix': { type: 'string', default: 'user' },
        password: { type: 'string', default: 'password' },
        provision: { type: 'boolean', default: false },
        workers: { type: 'string', default: '1' },
        duration: { type: 'string', default: '60' },
        count: { type: 'string' },
        rate: { type: 'string' },
        ramp: { type: 'string', default: '0' },
        connections: { type: 'string', default: '100' },
        rooms: { type: 'string', default: '10' },
        occupants: { type: 'string', default: '10' },
        'room-prefix': { type: 'string', default: 'loadroom' },
        'muc-domain': { type: 'string' },
        drain: { type: 'string', default: '5' },
        concurrency: { type: 'string', default: '1000' },
        timeout: { type: 'string', default: '30' },
        pid: { type: 'string' },
        'resume-port': { type: 'string' },
        'remote-domain': { type: 'string' },
        'remote-host': { type: 'string' },
        'remote-port': { type: 'string' },
        resume: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        report: { type: 'string' },
        'allow-remote': { type: 'boolean', default: false },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) return 'help';
  const [workload, ...extra] = parsed.positionals;
  if (!WORKLOADS.includes(workload as Workload)) throw new UsageError(workload ? `unknown workload ${JSON.stringify(workload)}` : 'which workload? login, chat, idle, storm, flap or muc');
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  const transport = v.transport as Transport;
  if (!TRANSPORTS.includes(transport)) throw new UsageError(`--transport: tcp, websocket or bosh, not ${JSON.stringify(v.transport)}`);
  const webT = transport !== 'tcp';
  let tlsMode = (v.tls ?? (webT ? 'direct' : 'starttls')) as TlsMode;
  if (!['starttls', 'direct', 'none'].includes(tlsMode)) throw new UsageError(`--tls: starttls, direct or none, not ${JSON.stringify(v.tls)}`);
  if (webT && tlsMode === 'starttls') throw new UsageError(`--tls: direct or none with --transport ${transport} (no STARTTLS over HTTP)`);
  if (v.url !== undefined && !webT) throw new UsageError('--url goes with --transport websocket or bosh');
  let host = v.host;
  let urlPort: number | undefined;
  let web: LoadOptions['web'];
  if (webT) {
    if (!['login', 'chat', 'idle'].includes(workload!)) throw new UsageError(`--transport ${transport}: the login, chat and idle workloads only`);
    if (v['remote-domain'] !== undefined || v['resume-port'] !== undefined) throw new UsageError(`--transport ${transport}: not with --remote-domain or --resume-port`);
    if (v.url !== undefined) {
      let u: URL;
      try {
        u = new URL(v.url);
      } catch {
        throw new UsageError(`--url: not a URL: ${JSON.stringify(v.url)}`);
      }
      const schemes = transport === 'websocket' ? ['ws:', 'wss:'] : ['http:', 'https:'];
      if (!schemes.includes(u.protocol)) throw new UsageError(`--url: ${schemes.map((x) => `${x}//`).join(' or ')} for --transport ${transport}`);
      const secure = u.protocol === 'wss:' || u.protocol === 'https:';
      tlsMode = secure ? 'direct' : 'none';
      host = u.hostname.replace(/^\[|\]$/g, '');
      urlPort = u.port === '' ? (secure ? 443 : 80) : Number(u.port);
      web = { secure, path: u.pathname + u.search };
    } else {
      if (v.port === undefined) throw new UsageError(`--transport ${transport}: which HTTP port? --port (the server's XMPP_HTTPS_PORT, or XMPP_HTTP_PORT with --tls none) or --url`);
      web = { secure: tlsMode === 'direct', path: transport === 'websocket' ? '/xmpp-websocket' : '/http-bind' };
    }
  }
  const mechanism = v.mechanism.toUpperCase() as MechanismName;
  if (!['SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS'].includes(mechanism)) throw new UsageError(`--mechanism: SCRAM-SHA-1, PLAIN or ANONYMOUS, not ${JSON.stringify(v.mechanism)}`);
  const wl = workload as Workload;
  const connections = num('connections', v.connections, { int: true, min: 1 })!;
  const port = urlPort ?? num('port', v.port, { int: true, min: 1 }) ?? (tlsMode === 'direct' ? 5223 : 5222);
  if (port > 65535) throw new UsageError('--port: at most 65535');
  const pid = num('pid', v.pid, { int: true, min: 1 });
  const resumePort = num('resume-port', v['resume-port'], { int: true, min: 1 });
  if (resumePort !== undefined && resumePort > 65535) throw new UsageError('--resume-port: at most 65535');
  if (!/^[^\s"&'/:<>@]*$/.test(v['user-prefix'])) throw new UsageError('--user-prefix: not a valid localpart');
  const remotePort = num('remote-port', v['remote-port'], { int: true, min: 1 }) ?? 5222;
  if (remotePort > 65535) throw new UsageError('--remote-port: at most 65535');
  if ((v['remote-host'] !== undefined || v['remote-port'] !== undefined) && v['remote-domain'] === undefined) throw new UsageError('--remote-host and --remote-port go with --remote-domain');
  if (v['remote-domain'] !== undefined && wl !== 'chat') throw new UsageError('--remote-domain: the chat workload only');
  const rooms = num('rooms', v.rooms, { int: true, min: 1 })!;
  const occupants = num('occupants', v.occupants, { int: true, min: 1 })!;
  // Room names and nicknames go into JIDs unescaped: a plain lowercase localpart.
  if (!/^[a-z0-9._-]+$/.test(v['room-prefix'])) throw new UsageError('--room-prefix: lowercase letters, digits, ".", "_" or "-"');
  const mucDomain = v['muc-domain'] ?? `conference.${v.domain}`;
  if (!/^[^\s"&'/:<>@]+$/.test(mucDomain)) throw new UsageError('--muc-domain: not a domain');
  const users = num('users', v.users, { int: true, min: 1 }) ?? (wl === 'idle' || wl === 'storm' ? connections : wl === 'muc' ? rooms * occupants : 100);
  // One account is in a room once: the occupants of a room are distinct accounts.
  if (wl === 'muc' && users < occupants) throw new UsageError(`--users: at least --occupants (${occupants}), so that no account is twice in one room`);
  return {
    workload: wl,
    host,
    hostName: host,
    port,
    domain: v.domain,
    tls: tlsMode,
    transport,
    web,
    mechanism,
    sm: v.sm || v.resume || wl === 'flap',
    resume: v.resume || wl === 'flap',
    resumePort,
    remote: v['remote-domain'] === undefined ? undefined : { domain: v['remote-domain'], host: v['remote-host'] ?? v.host, port: remotePort },
    users,
    userPrefix: v['user-prefix'],
    password: v.password,
    provision: v.provision,
    workers: num('workers', v.workers, { int: true, min: 1 })!,
    durationS: num('duration', v.duration, { min: 0.1 })!,
    count: num('count', v.count, { int: true, min: 1 }) ?? 1_000_000,
    rate: num('rate', v.rate, { min: 0.001 }) ?? (wl === 'chat' || wl === 'flap' || wl === 'muc' ? 1 : 100),
    rampS: num('ramp', v.ramp)!,
    connections,
    rooms,
    occupants,
    roomPrefix: v['room-prefix'],
    mucDomain,
    drainS: num('drain', v.drain)!,
    concurrency: num('concurrency', v.concurrency, { int: true, min: 1 })!,
    timeoutS: num('timeout', v.timeout, { min: 0.1 })!,
    pid,
    json: v.json,
    report: v.report,
    allowRemote: v['allow-remote'],
    quiet: v.quiet,
  };
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1' || address.toLowerCase().startsWith('::ffff:127.');
}

/** Connects once to each address in turn; the first that accepts, or undefined. */
async function reachable(addresses: string[], port: number): Promise<{ address?: string; error?: string }> {
  let error = 'no address';
  for (const address of addresses) {
    const r = await new Promise<string | undefined>((resolve) => {
      const s = net.connect({ host: address, port });
      s.setTimeout(5000, () => s.destroy(new Error('timed out')));
      s.on('connect', () => {
        s.destroy();
        resolve(undefined);
      });
      s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    if (r === undefined) return { address };
    error = r;
  }
  return { error };
}

/**
 * A process's resident memory in bytes from /proc/<pid>/status (`field`
 * VmHWM: its peak so far); null when the process is gone or there is no
 * /proc. The benchmarks read their server's with it too.
 */
export function readRss(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export interface Summary {
  workload: Workload;
  target: string;
  durationS: number;
  completed: number;
  failed: number;
  perSecond: number;
  latencyMs: LatencySummary;
  errors: Record<string, number>;
  sent?: number;
  delivered?: number;
  connections?: number;
  serverRssBytesBefore?: number | null;
  serverRssBytesAfter?: number | null;
  bytesPerConnection?: number | null;
  /** At the end of the hold: what the server keeps for connections that have been idle since. */
  serverRssBytesSettled?: number | null;
  bytesPerConnectionSettled?: number | null;
  rebindMs?: number | null;
  /** flap: from the cut to the last session resumed; how many were, and were not. */
  resumeMs?: number | null;
  resumed?: number;
  resumeFailed?: number;
  duplicates?: number;
  /** muc: rooms and occupants per room; occupants in their rooms, and when the last got in (ms from the start). */
  rooms?: number;
  occupants?: number;
  joined?: number;
  joinMs?: number | null;
  /** muc: deliveries the rooms owed (messages sent × occupants), those never received, and groupchat messages sent per second. */
  expected?: number;
  lost?: number;
  messagesPerSecond?: number;
}

/** Calls `f` once performance.now() has reached `deadline` (a timer may fire a little early), never synchronously; returns a cancel function. */
function at(deadline: number, f: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    const left = deadline - now();
    if (left <= 0) f();
    else timer = setTimeout(arm, Math.ceil(left));
  };
  timer = setTimeout(arm, Math.max(0, Math.ceil(deadline - now()))); // never synchronously
  return () => clearTimeout(timer);
}

interface Waiter {
  t: FromWorker['t'];
  done: (v: FromWorker[] | null) => void;
}

/** The workers, and waiting for all of them to say something. */
class Crew {
  readonly workers: Worker[] = [];
  private readonly seen = new Map<string, FromWorker[]>();
  private waiters: Waiter[] = [];
  private listeners: (() => void)[] = [];
  /** A worker's uncaught error: every wait ends at once. */
  failure: Error | undefined;

  constructor(n: number, opts: LoadOptions, onStats: (w: number, d: StatsDelta) => void) {
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL('./worker.ts', import.meta.url), { workerData: { opts, index: i } });
      w.on('message', (m: FromWorker) => {
        if (m.t === 'stats' || m.t === 'final') onStats(i, m.d);
        const list = this.seen.get(m.t) ?? [];
        list.push(m);
        this.seen.set(m.t, list);
        for (const waiter of [...this.waiters]) if (waiter.t === m.t && list.length >= this.workers.length) waiter.done(list);
        for (const l of [...this.listeners]) l();
      });
      w.on('error', (err) => {
        this.failure ??= err instanceof Error ? err : new Error(String(err));
        for (const waiter of [...this.waiters]) waiter.done(null);
        for (const l of [...this.listeners]) l();
      });
      this.workers.push(w);
    }
  }

  send(m: ToWorker): void {
    for (const w of this.workers) w.postMessage(m);
  }

  /** Every worker's message of type t, or null when `deadline` (performance.now()) passes first or a worker failed. */
  all(t: FromWorker['t'], deadline = Infinity): Promise<FromWorker[] | null> {
    const list = this.seen.get(t) ?? [];
    if (list.length >= this.workers.length) return Promise.resolve(list);
    if (this.failure) return Promise.resolve(null);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        t,
        done: (v) => {
          cancel();
          this.waiters = this.waiters.filter((x) => x !== waiter);
          resolve(v);
        },
      };
      this.waiters.push(waiter);
      const cancel = deadline === Infinity ? () => {} : at(deadline, () => waiter.done(null));
    });
  }

  /** Resolves true when `cond` holds (checked on every message), false at `deadline` or when a worker failed. */
  until(cond: () => boolean, deadline: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    if (this.failure) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = (v: boolean) => {
        cancel();
        this.listeners = this.listeners.filter((x) => x !== check);
        resolve(v);
      };
      const check = () => {
        if (this.failure) finish(false);
        else if (cond()) finish(true);
      };
      this.listeners.push(check);
      const cancel = at(deadline, () => finish(false));
    });
  }

  sleepUntil(deadline: number): Promise<void> {
    if (this.failure) return Promise.resolve();
    return new Promise((r) => at(deadline, r));
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

const GRACE_MS = 5000;
/** flap: how long the cut connections have to resume, from the cut. */
const RESUME_WAIT_MS = 30_000;

const rate = (n: number, seconds: number) => (seconds > 0 ? Math.round((n / seconds) * 10) / 10 : 0);

function progressLine(o: LoadOptions, agg: Aggregate, elapsedS: number, rate: number, rate2: number): string {
  const t = `${elapsedS.toFixed(0).padStart(4)}s`;
  if (o.workload === 'chat' || o.workload === 'flap' || o.workload === 'muc') return `[${o.workload}] ${t}  sent ${agg.sent} (${rate2.toFixed(0)}/s)  delivered ${agg.delivered} (${rate.toFixed(0)}/s)  connections ${agg.inflight}  errors ${agg.failed}`;
  if (o.workload === 'login') return `[login] ${t}  ${rate.toFixed(0)} logins/s  done ${agg.completed}  in flight ${agg.inflight}  errors ${agg.failed}`;
  return `[${o.workload}] ${t}  connections ${agg.inflight}  done ${agg.completed}  errors ${agg.failed}`;
}

const LATENCY_LABEL: Record<Workload, string> = { login: 'connect to bound', chat: 'sent to delivered', idle: 'connect to bound', storm: 'drop to bound again', flap: 'sent to delivered', muc: 'sent to received, per occupant' };

function human(s: Summary, o: LoadOptions): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(12)}${v}`);
  row('workload', `${s.workload}  target ${s.target} (${o.transport === 'tcp' ? o.tls : o.transport}, ${o.mechanism}${o.sm ? ', stream management' : ''}), ${o.workers} worker(s)`);
  row('duration', `${s.durationS.toFixed(2)} s`);
  const what = { login: 'logins', chat: 'messages delivered', idle: 'connections', storm: 'reconnections', flap: 'messages delivered', muc: 'deliveries (fanned out)' }[s.workload];
  row('completed', `${s.completed} ${what} (${s.perSecond.toFixed(1)}/s)`);
  row('failed', String(s.failed));
  if (s.sent !== undefined) row('sent', `${s.sent}, delivered ${s.delivered}`);
  const l = s.latencyMs;
  const label = LATENCY_LABEL[s.workload];
  row('latency', `p50 ${l.p50} ms  p95 ${l.p95} ms  p99 ${l.p99} ms  max ${l.max} ms  mean ${l.mean} ms  (${label})`);
  if (s.workload === 'idle') {
    const mb = (b: number | null | undefined) => (b == null ? 'n/a' : `${(b / 1048576).toFixed(1)} MiB`);
    const per = (b: number | null | undefined) => (b == null ? 'n/a' : `${b} bytes`);
    row('server RSS', `before ${mb(s.serverRssBytesBefore)}, after ${mb(s.serverRssBytesAfter)}, ${per(s.bytesPerConnection)} per connection`);
    row('settled', `at the end of the hold ${mb(s.serverRssBytesSettled)}, ${per(s.bytesPerConnectionSettled)} per connection`);
  }
  if (s.workload === 'flap') {
    row('resume', s.resumeMs == null ? `not all resumed before the time limit (${s.resumed ?? 0} resumed, ${s.resumeFailed ?? 0} failed)` : `all ${s.resumed} resumed ${s.resumeMs} ms after the cut (${s.resumeFailed} failed)`);
    row('lost', `${s.errors.lost ?? 0}, duplicates ${s.duplicates ?? 0}`);
  }
  if (s.workload === 'muc') {
    row('rooms', `${s.rooms} × ${s.occupants} occupants: ${s.joined} of ${s.rooms! * s.occupants!} in their rooms ${s.joinMs == null ? 'before the time limit' : `after ${(s.joinMs / 1000).toFixed(2)} s`}`);
    row('messages', `${s.sent} sent (${s.messagesPerSecond?.toFixed(1)}/s), ${s.expected} deliveries owed, ${s.delivered} made`);
    row('lost', `${s.lost}, duplicates ${s.duplicates}`);
  }
  if (s.workload === 'storm') row('rebind', s.rebindMs == null ? 'not all bound again before the time limit' : `all ${s.completed} bound again after ${s.rebindMs} ms`);
  const errs = Object.entries(s.errors).sort((a, b) => b[1] - a[1]);
  row('errors', errs.length === 0 ? 'none' : errs.map(([k, v]) => `${k}: ${v}`).join(', '));
  return lines.join('\n');
}

/** Runs the load tool with the arguments after `load`; resolves to the exit code. */
export async function runLoad(argv: string[]): Promise<number> {
  let o: LoadOptions;
  try {
    const p = parseLoadArgs(argv);
    if (p === 'help') {
      console.log(LOAD_USAGE);
      return 0;
    }
    o = p;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`load: ${err.message}\n\n${LOAD_USAGE}`);
    return 2;
  }
  const target = webUrl({ ...o, host: o.hostName }) ?? `${o.hostName}:${o.port}`;
  const fail = (message: string, kind: string): number => {
    console.error(`load: ${message}`);
    if (o.json) {
      const s: Summary = { workload: o.workload, target, durationS: 0, completed: 0, failed: 1, perSecond: 0, latencyMs: { p50: 0, p95: 0, p99: 0, max: 0, mean: 0 }, errors: { [kind]: 1 } };
      console.log(JSON.stringify(s));
    }
    return 1;
  };

  // The target: it must be on this machine unless --allow-remote says otherwise.
  let addresses: string[];
  try {
    addresses = (await lookup(o.host, { all: true })).map((a) => a.address);
  } catch (err) {
    return fail(`cannot resolve ${o.host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'resolve');
  }
  if (!o.allowRemote && !addresses.every(isLoopback)) {
    console.error(`load: refusing ${o.host} (${addresses.join(', ')}): not a loopback address; a load test targets this machine unless --allow-remote is given`);
    return 2;
  }
  const reach = await reachable(addresses, o.port);
  if (!reach.address) return fail(`cannot reach ${target}: ${reach.error}`, 'connect');
  o.host = reach.address; // resolved once, not once per connection
  if (o.remote) {
    let remote: string[];
    try {
      remote = (await lookup(o.remote.host, { all: true })).map((a) => a.address);
    } catch (err) {
      return fail(`cannot resolve ${o.remote.host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'resolve');
    }
    if (!o.allowRemote && !remote.every(isLoopback)) {
      console.error(`load: refusing --remote-host ${o.remote.host}: not a loopback address (see --allow-remote)`);
      return 2;
    }
    const r = await reachable(remote, o.remote.port);
    if (!r.address) return fail(`cannot reach ${o.remote.host}:${o.remote.port}: ${r.error}`, 'connect');
    o.remote.host = r.address;
  }
  if (o.workload === 'idle' && o.pid !== undefined && readRss(o.pid) === null) {
    console.error(`load: cannot read /proc/${o.pid}/status`);
    return 2;
  }

  const started = now();
  const agg = new Aggregate(started);
  const crew = new Crew(o.workers, o, (w, d) => agg.add(w, d, now()));
  const say = (s: string) => {
    if (!o.quiet) process.stderr.write(`${s}\n`);
  };

  // Provisioning, when asked, is its own phase, not timed as the workload.
  const prov = await crew.all('provisioned', now() + Math.max(60, o.durationS) * 1000 * 2);
  if (prov === null) {
    await crew.stop();
    return fail(crew.failure ? `a worker failed: ${crew.failure.stack ?? crew.failure.message}` : 'provisioning did not finish in time', 'provision');
  }
  if (o.provision && o.mechanism !== 'ANONYMOUS') {
    let created = 0;
    let existed = 0;
    let failed = 0;
    const errors: Record<string, number> = {};
    for (const m of prov) {
      if (m.t !== 'provisioned') continue;
      created += m.created;
      existed += m.existed;
      failed += m.failed;
      for (const [k, v] of Object.entries(m.errors)) errors[k] = (errors[k] ?? 0) + v;
    }
    say(`provisioned ${o.users} accounts: ${created} created, ${existed} already there, ${failed} failed${failed ? ` (${Object.entries(errors).map(([k, v]) => `${k}: ${v}`).join(', ')})` : ''}`);
  }

  const rssBefore = o.workload === 'idle' && o.pid !== undefined ? readRss(o.pid) : null;
  let rssAfter: number | null = null;
  let rssSettled: number | null = null;

  const go = now();
  agg.origin = go;
  const deadline = go + o.durationS * 1000;

  // Progress: a line rewritten every second on a terminal, a plain line every 5 s otherwise.
  const tty = process.stderr.isTTY === true;
  const every = tty ? 1 : 5;
  let last = { t: go, completed: 0, sent: 0 };
  let ticks = 0;
  const progress = setInterval(() => {
    if (++ticks % every !== 0 || o.quiet) return;
    const t = now();
    const dt = (t - last.t) / 1000;
    const line = progressLine(o, agg, (t - go) / 1000, (agg.completed - last.completed) / dt, (agg.sent - last.sent) / dt);
    last = { t, completed: agg.completed, sent: agg.sent };
    if (tty) process.stderr.write(`\r\x1b[K${line}`);
    else say(line);
  }, 1000);

  let windowMs = 0;
  let connectMs = 0;
  let rebindMs: number | null = null;
  let flapped: { ok: number; failed: number; ms: number | null } | undefined;
  let joined = 0;
  let joinMs: number | null = null;
  let expected = 0;
  crew.send({ t: 'go' });

  if (o.workload === 'login') {
    await crew.all('done', deadline);
    windowMs = now() - go;
    crew.send({ t: 'stop' });
    await crew.all('idle', now() + GRACE_MS);
  } else if (o.workload === 'chat' || o.workload === 'flap') {
    const ready = await crew.all('ready', deadline);
    if (ready) {
      const peers = ready.flatMap((m) => (m.t === 'ready' ? m.online : []));
      const sendStart = now();
      crew.send({ t: 'send', peers });
      if (o.workload === 'flap') {
        // A third of the way in: traffic flows before, during and after the cut.
        await crew.sleepUntil(sendStart + (deadline - sendStart) / 3);
        say(`flap: cutting ${agg.inflight} connections at once; each resumes its session${o.resumePort !== undefined ? ` on port ${o.resumePort}` : ''}`);
        const cut = agg.inflight;
        crew.send({ t: 'flap' });
        // The resumptions are waited for on their own bound, not the traffic's
        // end: on a loaded machine they may finish after it, and a resumption
        // that never answers is a failure, not nothing.
        const resumed = await crew.all('resumed', Math.max(deadline, now() + RESUME_WAIT_MS));
        flapped = { ok: 0, failed: resumed ? 0 : cut, ms: null };
        if (resumed) {
          let first = Infinity;
          let lastAt = -Infinity;
          for (const m of resumed) {
            if (m.t !== 'resumed') continue;
            first = Math.min(first, m.first);
            lastAt = Math.max(lastAt, m.last);
            flapped.ok += m.ok;
            flapped.failed += m.failed;
          }
          flapped.ms = Math.round((lastAt - first) * 1000) / 1000;
        }
      }
      await crew.all('done', deadline);
      windowMs = now() - sendStart;
    }
    crew.send({ t: 'stop' });
    await crew.all('stopped', now() + GRACE_MS);
    // Let what is on its way arrive.
    const bounced = () => Object.entries(agg.errors).reduce((n, [k, v]) => (k.startsWith('message-error:') ? n + v : n), 0);
    await crew.until(() => agg.delivered + bounced() >= agg.sent, now() + GRACE_MS);
  } else if (o.workload === 'muc') {
    const ready = await crew.all('ready', deadline);
    if (ready) {
      joinMs = Math.round(now() - go);
      for (const m of ready) if (m.t === 'ready') joined += m.joined ?? 0;
      const sendStart = now();
      crew.send({ t: 'send', peers: [] });
      await crew.all('done', deadline);
      windowMs = now() - sendStart;
    }
    // Each worker waits (up to --drain) for what its rooms still owe, then says what they owed.
    crew.send({ t: 'stop' });
    const stopped = await crew.all('stopped', now() + o.drainS * 1000 + GRACE_MS);
    for (const m of stopped ?? []) if (m.t === 'stopped') expected += m.expected ?? 0;
  } else if (o.workload === 'idle') {
    const ready = await crew.all('ready', deadline);
    connectMs = now() - go;
    if (ready && o.pid !== undefined) {
      // Let the server settle what the last connections started.
      await crew.sleepUntil(Math.min(deadline, now() + 500));
      rssAfter = readRss(o.pid);
    }
    await crew.sleepUntil(deadline);
    if (ready && o.pid !== undefined) rssSettled = readRss(o.pid);
  } else {
    const ready = await crew.all('ready', deadline);
    if (ready) {
      say(`storm: ${agg.inflight} connected after ${((now() - go) / 1000).toFixed(1)} s; dropping them all`);
      crew.send({ t: 'storm' });
      const rebound = await crew.all('rebound', deadline);
      if (rebound) {
        let first = Infinity;
        let lastBound = -Infinity;
        for (const m of rebound) {
          if (m.t !== 'rebound') continue;
          first = Math.min(first, m.first);
          lastBound = Math.max(lastBound, m.last);
        }
        rebindMs = Math.round((lastBound - first) * 1000) / 1000;
        windowMs = rebindMs;
      }
    }
  }

  crew.send({ t: 'close' });
  await crew.all('final', now() + GRACE_MS);
  clearInterval(progress);
  if (tty && !o.quiet) process.stderr.write('\r\x1b[K');
  const failure = crew.failure;
  await crew.stop();
  if (failure) return fail(`a worker failed: ${failure.stack ?? failure.message}`, 'internal');

  if (o.workload === 'chat' || o.workload === 'flap') agg.addError('lost', agg.sent - agg.delivered - Object.entries(agg.errors).reduce((n, [k, v]) => (k.startsWith('message-error:') ? n + v : n), 0));
  // idle: the whole hold; storm without a complete rebind: up to the end.
  if (o.workload === 'idle' || (o.workload === 'storm' && rebindMs === null)) windowMs = now() - go;

  const durationS = Math.round(windowMs) / 1000;
  const summary: Summary = {
    workload: o.workload,
    target,
    durationS,
    completed: agg.completed,
    failed: agg.failed,
    // idle: the rate at which the connections were established.
    perSecond: rate(agg.completed, o.workload === 'idle' ? connectMs / 1000 : durationS),
    latencyMs: agg.latency(),
    errors: agg.errors,
  };
  if (o.workload === 'chat' || o.workload === 'flap') {
    summary.sent = agg.sent;
    summary.delivered = agg.delivered;
  }
  if (o.workload === 'flap') {
    summary.resumeMs = flapped?.ms ?? null;
    summary.resumed = flapped?.ok ?? 0;
    summary.resumeFailed = flapped?.failed ?? 0;
    summary.duplicates = agg.errors.duplicate ?? 0;
  }
  if (o.workload === 'idle') {
    summary.connections = agg.completed;
    summary.serverRssBytesBefore = rssBefore;
    summary.serverRssBytesAfter = rssAfter;
    const perConn = (rss: number | null) => (rssBefore !== null && rss !== null && agg.completed > 0 ? Math.round((rss - rssBefore) / agg.completed) : null);
    summary.bytesPerConnection = perConn(rssAfter);
    summary.serverRssBytesSettled = rssSettled;
    summary.bytesPerConnectionSettled = perConn(rssSettled);
  }
  if (o.workload === 'muc') {
    summary.rooms = o.rooms;
    summary.occupants = o.occupants;
    summary.joined = joined;
    summary.joinMs = joinMs;
    summary.sent = agg.sent;
    summary.delivered = agg.delivered;
    summary.expected = expected;
    summary.lost = agg.errors.lost ?? 0;
    summary.duplicates = agg.errors.duplicate ?? 0;
    summary.messagesPerSecond = rate(agg.sent, durationS);
  }
  if (o.workload === 'storm') {
    summary.connections = Math.min(o.connections, o.count);
    summary.rebindMs = rebindMs;
  }

  if (o.json) console.log(JSON.stringify(summary));
  else console.log(human(summary, o));
  if (o.report) {
    const throughput =
      o.workload === 'chat' || o.workload === 'flap' || o.workload === 'muc'
        ? [
            { key: 'sent' as const, label: 'sent' },
            { key: 'delivered' as const, label: 'delivered' },
            { key: 'failed' as const, label: 'failed' },
          ]
        : [
            { key: 'completed' as const, label: 'completed' },
            { key: 'failed' as const, label: 'failed' },
          ];
    writeFileSync(o.report, renderReport({ title: `XMPP load: ${o.workload} on ${target} (${new Date().toISOString()})`, summary: { ...summary }, series: agg.series(), throughput, latencyLabel: LATENCY_LABEL[o.workload] }));
    say(`report written to ${o.report}`);
  }
  const attempted = agg.completed + agg.failed;
  return agg.completed === 0 || agg.failed > attempted * 0.01 ? 1 : 0;
}

