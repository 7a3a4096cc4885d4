// The side-by-side benchmark: ours, Prosody and ejabberd under the same
// workloads of the load tool (src/load: login, chat, idle, storm, and muc on
// each server's XEP-0045 service), each server alone on one core and
// the load tool on another, plus the chat workload through a bare TLS relay
// (bench/relay.ts) for the runtime's ceiling. See docs/benchmarks.md.
//
//   npm run bench:compare -- [--quick] [--out DIR] [--reps N] [--servers ours,prosody,ejabberd,relay] [--workloads idle,storm,chat,login,muc]
//
// It installs nothing: a missing prosody or ejabberd is reported with the
// command that installs it, and that server is skipped.
import { parseArgs } from 'node:util';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, copyFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { tmpdir, cpus, availableParallelism } from 'node:os';
import { join, resolve, relative } from 'node:path';
import { start, stopAll, killAllNow, cpuSeconds, coreBusySeconds, which, runQuiet } from './procs.ts';
import { KINDS, REPO, DOMAIN } from './servers.ts';
import type { Pins, Running, ServerKind } from './servers.ts';
import { renderTable, evaluateGoals, FIGURES } from './table.ts';
import type { Figure, RunRecord } from './table.ts';

const USAGE = `usage: npm run bench:compare -- [options]

  --quick             a smaller run (1 repetition, fewer connections, shorter steps)
  --out DIR           where the raw JSON results, logs and the table go
                      (default: a new directory under ${tmpdir()})
  --reps N            repetitions of everything (default 2; --quick: 1)
  --servers LIST      comma-separated subset of ours,prosody,ejabberd,relay
  --workloads LIST    comma-separated subset of idle,storm,chat,login,muc
                      (default: all; the relay only runs chat)
  --connections C     idle and storm connections (default 2000; --quick: 300)
  --chat-users N      chat workload users (default 100)
  --muc-rooms R       muc workload rooms (default 20)
  --muc-occupants O   occupants per room (default 20)
  --server-cpu N      core for the server under test (default: the first allowed)
  --load-cpu N        core for the load tool (default: the second allowed)
  --tls MODE          direct (XEP-0368, the default) or starttls for every client
                      (with starttls, the load tool counts a reset that follows
                      ejabberd's stream close as a 'tls' failure)
  --transport T       tcp (the default), websocket or bosh: every client of
                      our server over XMPP over WebSocket (RFC 7395) or BOSH
                      (XEP-0206) on its HTTPS listener instead of TCP; ours
                      only, and the idle, chat and login workloads only
  --login-p99-ms N    the login search's bound on p99 connect-to-bound (500 by
                      default; 50 for the figure at p99 < 50 ms)
  --keep              keep the servers' working directories (data, configs)`;

interface Settings {
  quick: boolean;
  reps: number;
  servers: string[];
  workloads: string[];
  connections: number;
  chatUsers: number;
  /** Seconds of sending per chat step, of arrivals per login step. */
  stepS: number;
  chatStart: number;
  loginStart: number;
  mucRooms: number;
  mucOccupants: number;
  /** Messages per second per room of the muc search's first step, and seconds of sending per step (longer than chat's: fewer messages fan out to as many deliveries, and p99 needs enough of them). */
  mucStart: number;
  mucStepS: number;
  maxSteps: number;
  idleHoldS: number;
  /** Quiet time before the idle run, so that "before" is a settled server too (not the registrations' garbage). */
  idleSettleS: number;
  /** Repeats of disturbed runs allowed per server and repetition. */
  retries: number;
  chatP99Ms: number;
  loginP99Ms: number;
  mucP99Ms: number;
  keep: boolean;
  tls: 'starttls' | 'direct';
  transport: 'tcp' | 'websocket' | 'bosh';
}

const WORKLOADS = ['idle', 'storm', 'chat', 'login', 'muc'];

const OPTIONS = {
  quick: { type: 'boolean', default: false },
  out: { type: 'string' },
  reps: { type: 'string' },
  servers: { type: 'string', default: 'ours,prosody,ejabberd,relay' },
  workloads: { type: 'string', default: 'idle,storm,chat,login,muc' },
  'muc-rooms': { type: 'string' },
  'muc-occupants': { type: 'string' },
  connections: { type: 'string' },
  'chat-users': { type: 'string' },
  'server-cpu': { type: 'string' },
  'load-cpu': { type: 'string' },
  keep: { type: 'boolean', default: false },
  tls: { type: 'string', default: 'direct' },
  transport: { type: 'string', default: 'tcp' },
  'login-p99-ms': { type: 'string', default: '500' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

function parseOptions() {
  try {
    return parseArgs({ options: OPTIONS });
  } catch (err) {
    console.error(`bench:compare: ${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
}
const { values: v } = parseOptions();
if (v.help) {
  console.log(USAGE);
  process.exit(0);
}

const quick = v.quick;
const S: Settings = {
  quick,
  reps: Number(v.reps ?? (quick ? 1 : 2)),
  servers: v.servers.split(',').map((s) => s.trim()).filter(Boolean),
  workloads: v.workloads.split(',').map((s) => s.trim()).filter(Boolean),
  connections: Number(v.connections ?? (quick ? 300 : 2000)),
  chatUsers: Number(v['chat-users'] ?? 100),
  stepS: quick ? 2 : 3,
  chatStart: 25,
  loginStart: 50,
  mucRooms: Number(v['muc-rooms'] ?? 20),
  mucOccupants: Number(v['muc-occupants'] ?? 20),
  mucStart: 5,
  mucStepS: quick ? 3 : 5,
  maxSteps: quick ? 6 : 7,
  idleHoldS: 6,
  idleSettleS: quick ? 5 : 15,
  retries: quick ? 2 : 5,
  chatP99Ms: 50,
  loginP99Ms: Number(v['login-p99-ms']),
  mucP99Ms: 50,
  keep: v.keep,
  tls: v.tls === 'starttls' ? 'starttls' : 'direct',
  transport: v.transport as Settings['transport'],
};
if (!(Number.isFinite(S.loginP99Ms) && S.loginP99Ms > 0)) {
  console.error(`bench:compare: --login-p99-ms: a positive number of milliseconds, not ${JSON.stringify(v['login-p99-ms'])}`);
  process.exit(2);
}
FIGURES.login.label = `logins/s (p99 connect-to-bound < ${S.loginP99Ms} ms)`;
if (!['tcp', 'websocket', 'bosh'].includes(S.transport)) {
  console.error(`bench:compare: --transport: tcp, websocket or bosh, not ${JSON.stringify(v.transport)}`);
  process.exit(2);
}
if (S.transport !== 'tcp' && (S.servers.some((s) => s !== 'ours') || S.workloads.some((w) => !['idle', 'chat', 'login'].includes(w)))) {
  console.error(`bench:compare: --transport ${S.transport}: --servers ours and --workloads among idle,chat,login`);
  process.exit(2);
}
if (v.tls !== 'starttls' && v.tls !== 'direct') {
  console.error(`bench:compare: --tls: starttls or direct, not ${JSON.stringify(v.tls)}`);
  process.exit(2);
}
for (const s of S.servers) {
  if (!KINDS.some((k) => k.name === s)) {
    console.error(`bench:compare: unknown server ${JSON.stringify(s)} (ours, prosody, ejabberd, relay)`);
    process.exit(2);
  }
}
for (const w of S.workloads) {
  if (!WORKLOADS.includes(w)) {
    console.error(`bench:compare: unknown workload ${JSON.stringify(w)} (${WORKLOADS.join(', ')})`);
    process.exit(2);
  }
}
if (!(S.reps >= 1) || !(S.connections >= 2) || !(S.chatUsers >= 2) || !Number.isInteger(S.mucRooms) || S.mucRooms < 1 || !Number.isInteger(S.mucOccupants) || S.mucOccupants < 2) {
  console.error(`bench:compare: bad --reps, --connections, --chat-users, --muc-rooms or --muc-occupants\n\n${USAGE}`);
  process.exit(2);
}

const say = (s: string) => process.stderr.write(`${s}\n`);
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s`;

// ---------------------------------------------------------------- clean-up

const work = mkdtempSync(join(tmpdir(), 'xmpp-bench-work-'));
const out = resolve(v.out ?? mkdtempSync(join(tmpdir(), 'xmpp-bench-results-')));
mkdirSync(join(out, 'raw'), { recursive: true });
mkdirSync(join(out, 'logs'), { recursive: true });

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await stopAll();
    // Keep every log with the results; the working directories only on --keep.
    try {
      for (const d of readdirSync(work)) {
        const dir = join(work, d);
        if (!statSync(dir).isDirectory()) continue;
        for (const f of readdirSync(dir)) if (f.endsWith('.log')) copyFileSync(join(dir, f), join(out, 'logs', `${d}-${f}`));
        const ej = join(dir, 'logs', 'ejabberd.log');
        if (existsSync(ej)) copyFileSync(ej, join(out, 'logs', `${d}-ejabberd-internal.log`));
      }
    } catch {
      // best effort
    }
    if (!S.keep) rmSync(work, { recursive: true, force: true });
    else say(`bench:compare: the servers' working directories are kept in ${work}`);
  })();
  return cleaning;
}
process.on('exit', () => killAllNow());
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    say(`\nbench:compare: ${sig}: stopping every process it started`);
    void cleanup().then(() => process.exit(130));
  });
}
process.on('uncaughtException', (err) => {
  say(`bench:compare: ${err.stack ?? err.message}`);
  void cleanup().then(() => process.exit(1));
});
process.on('unhandledRejection', (err) => {
  say(`bench:compare: ${(err as Error)?.stack ?? String(err)}`);
  void cleanup().then(() => process.exit(1));
});

// ---------------------------------------------------------------- preflight

const missingTools: string[] = [];
const taskset = which('taskset');
if (!taskset) missingTools.push('taskset: run `apt-get install util-linux`');
const openssl = which('openssl');
if (!openssl) missingTools.push('openssl: run `apt-get install openssl`');
if (missingTools.length > 0) {
  say(`bench:compare: cannot run: missing\n  ${missingTools.join('\n  ')}`);
  await cleanup();
  process.exit(1);
}

/** The CPUs this process may run on (from its affinity), in order. */
function allowedCpus(): number[] {
  const text = runQuiet(taskset!, ['-cp', String(process.pid)]) ?? '';
  const list = /list:\s*([\d,\s-]+)/.exec(text)?.[1] ?? '';
  const cpusOut: number[] = [];
  for (const part of list.split(',')) {
    const [a, b] = part.trim().split('-').map(Number);
    if (!Number.isFinite(a)) continue;
    for (let c = a; c <= (Number.isFinite(b) ? b : a); c++) cpusOut.push(c);
  }
  return cpusOut.length > 0 ? cpusOut : [...Array(availableParallelism()).keys()];
}
const allowed = allowedCpus();
const pins: Pins = {
  taskset,
  serverCpu: v['server-cpu'] ?? String(allowed[0]),
  loadCpu: v['load-cpu'] ?? String(allowed[1] ?? allowed[0]),
};
if (pins.serverCpu === pins.loadCpu) say(`bench:compare: warning: only one core (${pins.serverCpu}) available: server and load tool share it; figures will be low and not comparable with a 2-core run`);

const kinds: ServerKind[] = [];
let oursMissing = false;
for (const name of S.servers) {
  const k = KINDS.find((x) => x.name === name)!;
  const miss = k.missing();
  if (miss.length > 0) {
    say(`bench:compare: skipping ${name}: ${miss.join('; ')}`);
    if (name === 'ours') oursMissing = true;
    continue;
  }
  kinds.push(k);
}
if (oursMissing || !kinds.some((k) => k.name === 'ours')) {
  say('bench:compare: our server cannot run (or was not selected); nothing to compare against');
  await cleanup();
  process.exit(1);
}

// A self-signed certificate for this run, shared by every server.
const certDir = join(work, 'cert');
mkdirSync(certDir);
const cert = { cert: join(certDir, 'cert.pem'), key: join(certDir, 'key.pem') };
const gen = runQuiet(openssl!, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', cert.key, '-out', cert.cert, '-days', '2', '-subj', `/CN=${DOMAIN}`, '-addext', `subjectAltName=DNS:${DOMAIN},DNS:*.${DOMAIN}`], 60000);
if (gen === undefined || !existsSync(cert.cert)) {
  say('bench:compare: openssl could not generate a certificate');
  await cleanup();
  process.exit(1);
}

const cpuModel = cpus()[0]?.model ?? 'unknown';
const meta = {
  date: new Date().toISOString(),
  nproc: availableParallelism(),
  cpuModel,
  loadavgAtStart: readFileSync('/proc/loadavg', 'utf8').trim(),
  node: process.version,
  versions: Object.fromEntries(kinds.map((k) => [k.name, k.version()])),
  pins: { server: pins.serverCpu, load: pins.loadCpu },
  settings: S,
  serverSettings: Object.fromEntries(kinds.map((k) => [k.name, k.settings])),
  command: `npm run bench:compare -- ${process.argv.slice(2).join(' ')}`.trim(),
};
writeFileSync(join(out, 'meta.json'), JSON.stringify(meta, null, 2));
say(`bench:compare: ${meta.date}, ${meta.nproc} CPUs (${cpuModel}), node ${meta.node}, ${kinds.map((k) => `${k.name} ${meta.versions[k.name]}`).join(', ')}`);
say(`bench:compare: server on core ${pins.serverCpu}, load tool on core ${pins.loadCpu}; clients over ${S.transport === 'tcp' ? `TCP (${S.tls} TLS)` : `${S.transport} (TLS)`}; results in ${out}`);

// ---------------------------------------------------------------- one load run

interface LoadResult {
  summary: Record<string, unknown> & { completed: number; failed: number; perSecond: number; latencyMs: { p50: number; p99: number }; errors: Record<string, number> };
  /** The server's CPU use over the whole run, and its busiest second, in % of one core. */
  serverCpuPct: number | undefined;
  serverCpuPeakPct: number | undefined;
  loadCpuPct: number | undefined;
  loadCpuPeakPct: number | undefined;
  /** CPU time other processes took on the server's and the load tool's cores, in % of the run. */
  foreignServerCorePct: number | undefined;
  foreignLoadCorePct: number | undefined;
  wallS: number;
  stderr: string;
}

/** Another process took this much (%) of a pinned core: the run is disturbed and worth repeating. */
const DISTURBED_PCT = 10;
const disturbed = (r: LoadResult) => (r.foreignServerCorePct ?? 0) > DISTURBED_PCT || (r.foreignLoadCorePct ?? 0) > DISTURBED_PCT;
const pct1 = (x: number) => Math.round(x * 10) / 10;

interface Sample {
  t: number;
  server: number | undefined;
  load: number | undefined;
  cores: Map<number, number>;
}

/** Seconds left for waiting on other processes' load before runs (for the whole benchmark). */
let quietBudgetS = quick ? 30 : 120;
let waitedS = 0;
/**
 * Waits (at most 20 s, within quietBudgetS) until other processes leave the
 * two pinned cores mostly idle: less than DISTURBED_PCT of either taken by
 * anything but the server under test, over 0.3 s.
 */
async function awaitQuiet(server: Running): Promise<void> {
  if (pins.serverCpu === pins.loadCpu) return;
  const t0 = performance.now();
  while (quietBudgetS > 0) {
    const a = { cores: coreBusySeconds(), server: cpuSeconds(server.pid) ?? 0, t: performance.now() };
    await new Promise((r) => setTimeout(r, 300));
    const b = { cores: coreBusySeconds(), server: cpuSeconds(server.pid) ?? 0, t: performance.now() };
    const dt = (b.t - a.t) / 1000;
    const used = (cpu: string) => ((b.cores.get(Number(cpu)) ?? 0) - (a.cores.get(Number(cpu)) ?? 0)) / dt;
    const foreignServer = (used(pins.serverCpu) - (b.server - a.server) / dt) * 100;
    const foreignLoad = used(pins.loadCpu) * 100;
    if (foreignServer < DISTURBED_PCT && foreignLoad < DISTURBED_PCT) break;
    const spent = (performance.now() - t0) / 1000;
    if (spent > 20) break;
    quietBudgetS -= dt;
  }
  waitedS += (performance.now() - t0) / 1000;
}

let runSeq = 0;
/** Runs the load tool (or, for the relay, its driver) pinned to the load core and returns its JSON summary. */
async function load(server: Running, args: string[], label: string, record: RunRecord['context']): Promise<LoadResult> {
  const isRelay = server.name === 'relay';
  const script = isRelay ? [join(REPO, 'bench', 'compare', 'relay-driver.ts')] : [join(REPO, 'src', 'main.ts'), 'load'];
  const direct = !isRelay && S.tls === 'direct';
  const web = !isRelay && S.transport !== 'tcp';
  if (web && server.httpsPort === undefined) throw new Error(`${server.name} has no HTTPS listener for --transport ${S.transport}`);
  const full = [...script, ...args, '--host', '127.0.0.1', '--port', String(web ? server.httpsPort : direct ? server.directPort : server.port), '--domain', DOMAIN, '--json'];
  // The web transports are over TLS (wss://, https://) by default.
  if (web) full.push('--transport', S.transport);
  else if (direct) full.push('--tls', 'direct');
  const cmd = pins.taskset ? [pins.taskset, '-c', pins.loadCpu, process.execPath, ...full] : [process.execPath, ...full];
  const logFile = join(out, 'logs', `load-${String(++runSeq).padStart(3, '0')}-${server.name}-${label}.log`);
  await awaitQuiet(server);
  const child = start(cmd[0], cmd.slice(1), { cwd: REPO, logFile, capture: true });
  const samples: Sample[] = [];
  const sample = () => samples.push({ t: performance.now(), server: cpuSeconds(server.pid), load: cpuSeconds(child.pid), cores: coreBusySeconds() });
  sample();
  const sampler = setInterval(sample, 250);
  await child.exited;
  clearInterval(sampler);
  const last: Sample = { t: performance.now(), server: cpuSeconds(server.pid), load: undefined, cores: coreBusySeconds() };
  const first = samples[0];
  const wallS = (last.t - first.t) / 1000;
  const lastLoad = [...samples].reverse().find((x) => x.load !== undefined)?.load;
  const srvUsed = last.server !== undefined && first.server !== undefined ? last.server - first.server : undefined;
  const loadUsed = lastLoad !== undefined && first.load !== undefined ? lastLoad - first.load : lastLoad;
  // The busiest second (4 samples apart) of a process.
  const peakOf = (key: 'server' | 'load') => {
    let peak: number | undefined;
    for (let i = 0; i + 4 < samples.length; i++) {
      const a = samples[i][key];
      const b = samples[i + 4][key];
      if (a === undefined || b === undefined) continue;
      const p = ((b - a) / ((samples[i + 4].t - samples[i].t) / 1000)) * 100;
      peak = peak === undefined ? p : Math.max(peak, p);
    }
    return peak === undefined ? undefined : pct1(peak);
  };
  const coreUsed = (cpu: string) => {
    const a = first.cores.get(Number(cpu));
    const b = last.cores.get(Number(cpu));
    return a !== undefined && b !== undefined ? b - a : undefined;
  };
  const foreign = (core: number | undefined, ours: number | undefined) => (core !== undefined && ours !== undefined && wallS > 0 ? pct1(Math.max(0, ((core - ours) / wallS) * 100)) : undefined);
  const sameCore = pins.serverCpu === pins.loadCpu;
  const line = child
    .stdout()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${label} on ${server.name}: the load tool printed no result (log ${logFile}):\n${child.stderr().slice(-2000)}`);
  const summary = JSON.parse(line) as LoadResult['summary'];
  const res: LoadResult = {
    summary,
    serverCpuPct: srvUsed !== undefined && wallS > 0 ? pct1((srvUsed / wallS) * 100) : undefined,
    serverCpuPeakPct: peakOf('server'),
    loadCpuPct: loadUsed !== undefined && wallS > 0 ? pct1((loadUsed / wallS) * 100) : undefined,
    loadCpuPeakPct: peakOf('load'),
    foreignServerCorePct: sameCore ? undefined : foreign(coreUsed(pins.serverCpu), srvUsed),
    foreignLoadCorePct: sameCore ? undefined : foreign(coreUsed(pins.loadCpu), loadUsed),
    wallS: Math.round(wallS * 100) / 100,
    stderr: child.stderr(),
  };
  const shown = cmd.map((c) => (c.startsWith(REPO) ? relative(REPO, c) : c === process.execPath ? 'node' : c)).join(' ');
  const { stderr: _stderr, summary: _summary, ...figures } = res;
  writeFileSync(join(out, 'raw', `${String(runSeq).padStart(3, '0')}-${server.name}-rep${record.rep}-${label}.json`), JSON.stringify({ server: server.name, ...record, label, command: shown, ...figures, result: summary }, null, 2));
  return res;
}

let retriesLeft = 0;
/**
 * A run repeated (at most `tries` times in all, within the budget of
 * retriesLeft) while it fails `ok` and another process disturbed it.
 */
async function steady(run: () => Promise<LoadResult>, ok: (r: LoadResult) => boolean, what: string, tries = 3): Promise<LoadResult> {
  let r = await run();
  for (let k = 1; k < tries && retriesLeft > 0 && !ok(r) && disturbed(r); k++) {
    retriesLeft--;
    say(`${elapsed()}   (${what}: other processes took ${r.foreignServerCorePct}% of the server core, ${r.foreignLoadCorePct}% of the load core: again)`);
    r = await run();
  }
  return r;
}

// ---------------------------------------------------------------- step searches

interface Step {
  rate: number;
  pass: boolean;
  figure: number;
  why: string;
  res: LoadResult;
}

/**
 * The highest rate that passes: doubling from `startRate` until a step fails
 * (halving first if the start fails), then bisecting (geometrically) until
 * the bracket is within 15 % or `maxSteps` steps are spent.
 */
async function search(startRate: number, maxSteps: number, round: (r: number) => number, probe: (rate: number) => Promise<Step>): Promise<{ best: Step | undefined; steps: Step[] }> {
  const steps: Step[] = [];
  let lo: Step | undefined;
  let hi: Step | undefined;
  let rate = round(startRate);
  while (steps.length < maxSteps) {
    const s = await probe(rate);
    steps.push(s);
    if (s.pass) lo = !lo || s.figure >= lo.figure ? s : lo;
    else if (!hi || s.rate < hi.rate) hi = s;
    let next: number;
    if (lo && hi) {
      if (hi.rate / lo.rate <= 1.15) break;
      next = round(Math.sqrt(lo.rate * hi.rate));
    } else if (lo) next = round(lo.rate * 2);
    else next = round(hi!.rate / 2);
    if (next <= 0 || steps.some((x) => x.rate === next)) break;
    rate = next;
  }
  return { best: lo, steps };
}

// ---------------------------------------------------------------- workloads

const records: RunRecord[] = [];
const failures: string[] = [];

function note(server: string, rep: number, figure: Figure, value: number | null, detail: Record<string, unknown>, flag?: string): void {
  records.push({ server, figure, value, context: { rep }, detail, ...(flag ? { flag } : {}) });
  const f = FIGURES[figure];
  say(`${elapsed()} ${server} rep ${rep}: ${f.label} = ${value === null ? 'n/a' : `${value} ${f.unit}`}${flag ? ` (${flag})` : ''}`);
}

async function provision(server: Running, rep: number, users: number): Promise<void> {
  const r = await load(server, ['login', '--provision', '--users', String(users), '--count', '1', '--rate', '1', '--duration', '300', '--timeout', '30'], 'provision', { rep });
  const m = /provisioned (\d+) accounts: (\d+) created, (\d+) already there, (\d+) failed/.exec(r.stderr);
  if (!m) throw new Error(`provisioning on ${server.name}: no report from the load tool`);
  if (Number(m[4]) > 0) throw new Error(`provisioning on ${server.name}: ${m[0]}`);
  say(`${elapsed()} ${server.name} rep ${rep}: ${m[0]} (${r.wallS} s)`);
}

const cpuNote = (r: LoadResult) => `server CPU ${r.serverCpuPct}% (peak ${r.serverCpuPeakPct}%), load CPU ${r.loadCpuPct}% (peak ${r.loadCpuPeakPct}%)${disturbed(r) ? `, others took ${r.foreignServerCorePct}%/${r.foreignLoadCorePct}% of the two cores` : ''}`;
const cpuDetail = (r: LoadResult | undefined) => (r ? { serverCpuPct: r.serverCpuPct, serverCpuPeakPct: r.serverCpuPeakPct, loadCpuPct: r.loadCpuPct, loadCpuPeakPct: r.loadCpuPeakPct, foreignServerCorePct: r.foreignServerCorePct, foreignLoadCorePct: r.foreignLoadCorePct } : {});

async function idle(server: Running, rep: number): Promise<void> {
  const c = S.connections;
  type Idle = LoadResult['summary'] & { bytesPerConnection?: number | null; bytesPerConnectionSettled?: number | null; connections?: number; serverRssBytesBefore?: number; serverRssBytesAfter?: number; serverRssBytesSettled?: number };
  // The settled figure compares two settled states: without this pause the
  // "before" of a server that collects when idle would still hold the
  // registrations' garbage, which the end of the hold no longer does.
  await new Promise((r) => setTimeout(r, S.idleSettleS * 1000));
  const r = await steady(
    () => load(server, ['idle', '--connections', String(c), '--users', String(c), '--pid', String(server.pid), '--duration', String(S.idleHoldS + Math.ceil(c / 100)), '--timeout', '30'], 'idle', { rep }),
    (x) => x.summary.failed === 0 && (x.summary as Idle).bytesPerConnection != null,
    'idle',
    2,
  );
  const s = r.summary as Idle;
  const ok = s.failed === 0 && s.bytesPerConnection != null;
  const detail = { connections: s.connections, failed: s.failed, errors: s.errors, rssBefore: s.serverRssBytesBefore, rssAfter: s.serverRssBytesAfter, rssSettled: s.serverRssBytesSettled, connectPerSecond: s.perSecond, connectP99Ms: s.latencyMs.p99, ...cpuDetail(r) };
  const kib = (b: number | null | undefined) => (ok && b != null ? Math.round(b / 102.4) / 10 : null);
  note(server.name, rep, 'idle', kib(s.bytesPerConnection), detail);
  note(server.name, rep, 'idleSettled', kib(s.bytesPerConnectionSettled), detail);
  if (!ok) failures.push(`${server.name} rep ${rep} idle: ${s.failed} failed ${JSON.stringify(s.errors)}`);
}

async function storm(server: Running, rep: number): Promise<void> {
  const c = S.connections;
  type Storm = LoadResult['summary'] & { rebindMs?: number | null };
  const r = await steady(
    () => load(server, ['storm', '--connections', String(c), '--users', String(c), '--duration', String(quick ? 60 : 120), '--timeout', '60'], 'storm', { rep }),
    // A disturbed storm is repeated whatever its result: its figure is a time.
    () => false,
    'storm',
    2,
  );
  const s = r.summary as Storm;
  const ok = s.rebindMs != null && s.completed >= c;
  // Not everyone back: the time until the last of those that came back, flagged.
  const flag = s.rebindMs != null && !ok ? `${c - s.completed} of ${c} connections did not come back (${Object.entries(s.errors).map(([k, v]) => `${k}: ${v}`).join(', ')})` : undefined;
  note(server.name, rep, 'storm', s.rebindMs != null && s.completed > 0 ? Math.round(s.rebindMs) : null, { connections: c, completed: s.completed, failed: s.failed, errors: s.errors, p50Ms: s.latencyMs.p50, p99Ms: s.latencyMs.p99, ...cpuDetail(r) }, flag);
  if (!ok) failures.push(`${server.name} rep ${rep} storm: ${s.completed}/${c} rebound ${JSON.stringify(s.errors)}`);
}

/** A step passes when no more than 1 % of its operations failed (the load tool's own criterion, which also absorbs stray closing errors). */
const FAIL_SHARE = 0.01;

async function login(server: Running, rep: number): Promise<void> {
  const users = loginUsers();
  const { best, steps } = await search(S.loginStart, S.maxSteps, (r) => Math.max(1, Math.round(r)), async (rate) => {
    const count = Math.max(1, Math.round(rate * S.stepS));
    const verdict = (r: LoadResult) => {
      const s = r.summary;
      const why: string[] = [];
      if (s.failed > count * FAIL_SHARE) why.push(`${s.failed} failed ${JSON.stringify(s.errors)}`);
      if (s.completed + s.failed < count) why.push(`${s.completed + s.failed}/${count} attempted`);
      if (s.latencyMs.p99 > S.loginP99Ms) why.push(`p99 ${s.latencyMs.p99} ms > ${S.loginP99Ms}`);
      if (s.perSecond < rate * 0.9) why.push(`${s.perSecond}/s < 90% of ${rate}/s`);
      return why;
    };
    const r = await steady(() => load(server, ['login', '--users', String(users), '--rate', String(rate), '--count', String(count), '--duration', String(Math.ceil(S.stepS * 3 + 20)), '--timeout', '15'], `login-${rate}`, { rep, rate }), (x) => verdict(x).length === 0, `login ${rate}/s`);
    const s = r.summary;
    const why = verdict(r);
    say(`${elapsed()}   ${server.name} login ${rate}/s: ${s.perSecond}/s p99 ${s.latencyMs.p99} ms, ${cpuNote(r)}${why.length ? ` -- ${why.join(', ')}` : ''}`);
    return { rate, pass: why.length === 0, figure: s.perSecond, why: why.join(', '), res: r };
  });
  note(server.name, rep, 'login', best ? best.figure : null, {
    bestRate: best?.rate,
    p50Ms: best?.res.summary.latencyMs.p50,
    p99Ms: best?.res.summary.latencyMs.p99,
    ...cpuDetail(best?.res),
    steps: steps.map((s) => ({ rate: s.rate, perSecond: s.res.summary.perSecond, p99Ms: s.res.summary.latencyMs.p99, failed: s.res.summary.failed, errors: s.res.summary.errors, pass: s.pass, why: s.why, ...cpuDetail(s.res) })),
  });
}

async function chat(server: Running, rep: number): Promise<void> {
  const u = S.chatUsers;
  // The relay starts higher: it is expected an order of magnitude above the servers.
  const startRate = server.name === 'relay' ? S.chatStart * 8 : S.chatStart;
  const { best, steps } = await search(startRate, S.maxSteps, (r) => Math.round(r * 10) / 10, async (rate) => {
    const count = Math.max(1, Math.round(rate * u * S.stepS));
    type Chat = LoadResult['summary'] & { sent?: number; delivered?: number };
    const verdict = (r: LoadResult) => {
      const s = r.summary as Chat;
      const why: string[] = [];
      if (s.failed > count * FAIL_SHARE) why.push(`${s.failed} failed ${JSON.stringify(s.errors)}`);
      if ((s.sent ?? 0) < count) why.push(`${s.sent}/${count} sent`);
      if (s.latencyMs.p99 >= S.chatP99Ms) why.push(`p99 ${s.latencyMs.p99} ms >= ${S.chatP99Ms}`);
      if (s.perSecond < rate * u * 0.9) why.push(`${s.perSecond}/s < 90% of ${Math.round(rate * u)}/s`);
      return why;
    };
    const r = await steady(() => load(server, ['chat', '--users', String(u), '--rate', String(rate), '--count', String(count), '--duration', String(Math.ceil(S.stepS * 3 + 20)), '--timeout', '15'], `chat-${rate}`, { rep, rate }), (x) => verdict(x).length === 0, `chat ${rate}/s/user`);
    const s = r.summary;
    const why = verdict(r);
    say(`${elapsed()}   ${server.name} chat ${rate}/s/user (${Math.round(rate * u)}/s): ${s.perSecond}/s delivered, p99 ${s.latencyMs.p99} ms, ${cpuNote(r)}${why.length ? ` -- ${why.join(', ')}` : ''}`);
    return { rate, pass: why.length === 0, figure: s.perSecond, why: why.join(', '), res: r };
  });
  note(server.name, rep, 'chat', best ? best.figure : null, {
    users: u,
    bestRatePerUser: best?.rate,
    p50Ms: best?.res.summary.latencyMs.p50,
    p99Ms: best?.res.summary.latencyMs.p99,
    ...cpuDetail(best?.res),
    steps: steps.map((s) => ({ ratePerUser: s.rate, perSecond: s.res.summary.perSecond, p99Ms: s.res.summary.latencyMs.p99, failed: s.res.summary.failed, errors: s.res.summary.errors, pass: s.pass, why: s.why, ...cpuDetail(s.res) })),
  });
}

/**
 * muc: R rooms of O occupants on the server's XEP-0045 service; the same
 * search on the rate per room, passing when p99 sent-to-received latency
 * (per occupant) is under 50 ms, every occupant is in its room, nothing is
 * lost or duplicated, at most 1 % of the deliveries fail otherwise, and 90 %
 * of the deliveries owed are made within the step's time. The figure is the
 * deliveries fanned out per second (messages × occupants).
 */
async function muc(server: Running, rep: number): Promise<void> {
  const R = S.mucRooms;
  const O = S.mucOccupants;
  let step = 0;
  const { best, steps } = await search(S.mucStart, S.maxSteps, (r) => Math.round(r * 10) / 10, async (rate) => {
    const count = Math.max(1, Math.round(rate * R * S.mucStepS));
    type Muc = LoadResult['summary'] & { sent?: number; delivered?: number; joined?: number; lost?: number; duplicates?: number; messagesPerSecond?: number };
    const verdict = (r: LoadResult) => {
      const s = r.summary as Muc;
      const why: string[] = [];
      if ((s.joined ?? 0) < R * O) why.push(`${s.joined}/${R * O} in their rooms`);
      if ((s.lost ?? 0) > 0 || (s.duplicates ?? 0) > 0) why.push(`${s.lost} lost, ${s.duplicates} duplicated`);
      if (s.failed > count * O * FAIL_SHARE) why.push(`${s.failed} failed ${JSON.stringify(s.errors)}`);
      if ((s.sent ?? 0) < count) why.push(`${s.sent}/${count} sent`);
      if (s.latencyMs.p99 >= S.mucP99Ms) why.push(`p99 ${s.latencyMs.p99} ms >= ${S.mucP99Ms}`);
      if (s.perSecond < rate * R * O * 0.9) why.push(`${s.perSecond}/s < 90% of ${Math.round(rate * R * O)}/s`);
      return why;
    };
    // Fresh room names for every step: nothing of the last one (occupants still leaving) is in the way.
    const args = () => ['muc', '--users', String(R * O), '--rooms', String(R), '--occupants', String(O), '--room-prefix', `s${++step}r`, '--rate', String(rate), '--count', String(count), '--duration', String(Math.ceil(S.mucStepS * 3 + 40)), '--timeout', '15'];
    const r = await steady(() => load(server, args(), `muc-${rate}`, { rep, rate }), (x) => verdict(x).length === 0, `muc ${rate}/s/room`);
    const s = r.summary as Muc;
    const why = verdict(r);
    say(`${elapsed()}   ${server.name} muc ${rate}/s/room (${Math.round(rate * R)} msg/s, ${Math.round(rate * R * O)} deliveries/s): ${s.perSecond}/s delivered, p99 ${s.latencyMs.p99} ms, ${cpuNote(r)}${why.length ? ` -- ${why.join(', ')}` : ''}`);
    return { rate, pass: why.length === 0, figure: s.perSecond, why: why.join(', '), res: r };
  });
  const detail = (x: Step) => {
    const s = x.res.summary as LoadResult['summary'] & { messagesPerSecond?: number; lost?: number; duplicates?: number; joinMs?: number };
    return { ratePerRoom: x.rate, perSecond: s.perSecond, messagesPerSecond: s.messagesPerSecond, p50Ms: s.latencyMs.p50, p99Ms: s.latencyMs.p99, lost: s.lost, duplicates: s.duplicates, joinMs: s.joinMs, failed: s.failed, errors: s.errors, pass: x.pass, why: x.why, ...cpuDetail(x.res) };
  };
  note(server.name, rep, 'muc', best ? best.figure : null, { rooms: R, occupants: O, best: best ? detail(best) : undefined, steps: steps.map(detail) });
}

const settle = () => new Promise((r) => setTimeout(r, 1000));

/** Accounts for the login workload (the chat users are the first of them). */
const loginUsers = () => Math.max(S.chatUsers, Math.min(S.connections, 500));

/**
 * One server, one repetition, in up to three lives (those of the selected
 * workloads), each from a fresh directory: idle and storm on the first,
 * chat, then login, on the second, muc on the third (so that the
 * throughput figures are not weighed down by what thousands of connections
 * left behind: Prosody, for one, delivers with a much higher p95 after an
 * idle phase of 2000 connections than before it). On the first, the server is
 * restarted between provisioning and idle, so that the memory figure is the
 * growth of a freshly started server (the same for all three): measured from
 * a server that had just registered 2000 accounts, it depended on how much of
 * that burst each server kept (room the idle connections then reused rather
 * than cost), not only on what an idle connection holds.
 */
async function runServer(kind: ServerKind, rep: number): Promise<void> {
  retriesLeft = S.retries;
  type Life = { tag: string; users: number; restart: boolean; workloads: [string, (s: Running, rep: number) => Promise<void>][] };
  const all: Life[] =
    kind.name === 'relay'
      ? [{ tag: 'a', users: 0, restart: false, workloads: [['chat', chat]] }]
      : [
          { tag: 'a', users: S.connections, restart: true, workloads: [['idle', idle], ['storm', storm]] },
          { tag: 'b', users: loginUsers(), restart: false, workloads: [['chat', chat], ['login', login]] },
          // A server of its own: rooms and their occupants, nothing left by the others.
          { tag: 'c', users: S.mucRooms * S.mucOccupants, restart: false, workloads: [['muc', muc]] },
        ];
  const lives = all.map((l) => ({ ...l, workloads: l.workloads.filter(([n]) => S.workloads.includes(n)) })).filter((l) => l.workloads.length > 0);
  for (const life of lives) {
    const dir = join(work, `${kind.name}-rep${rep}${life.tag}`);
    mkdirSync(dir);
    say(`${elapsed()} ${kind.name} rep ${rep}: starting (${life.workloads.map(([n]) => n).join(', ')})`);
    let server: Running | undefined;
    const alive = () => {
      try {
        process.kill(server!.pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    try {
      server = await kind.start(dir, cert, pins);
      if (life.users > 0) await provision(server, rep, life.users);
      if (life.restart) {
        await server.stop();
        server = undefined;
        say(`${elapsed()} ${kind.name} rep ${rep}: restarting on the same data`);
        server = await kind.start(dir, cert, pins);
      }
      for (const [name, fn] of life.workloads) {
        if (!alive()) throw new Error(`${kind.name} is no longer running (before ${name}); see ${server.log}`);
        await settle();
        await fn(server, rep);
      }
    } catch (err) {
      const msg = `${kind.name} rep ${rep}: ${(err as Error).message}`;
      failures.push(msg);
      say(`${elapsed()} ${msg}`);
    } finally {
      await server?.stop();
    }
  }
}

for (let rep = 1; rep <= S.reps; rep++) {
  for (const kind of kinds) await runServer(kind, rep);
}

// ---------------------------------------------------------------- report

const table = renderTable(records, kinds.map((k) => k.name), S.reps);
const goals = evaluateGoals(records);
const summary = { meta: { ...meta, loadavgAtEnd: readFileSync('/proc/loadavg', 'utf8').trim(), waitedForQuietS: Math.round(waitedS) }, records, failures, goals, durationS: Math.round((Date.now() - t0) / 1000) };
writeFileSync(join(out, 'results.json'), JSON.stringify(summary, null, 2));
writeFileSync(join(out, 'table.md'), `${table.markdown}\n\n${goals.lines.map((l) => `- ${l}`).join('\n')}\n`);
console.log(table.text);
console.log('');
for (const l of goals.lines) console.log(l);
if (failures.length > 0) {
  console.log('\nproblems:');
  for (const f of failures) console.log(`  ${f}`);
}
console.log(`\nraw results, logs and table.md in ${out} (${summary.durationS} s, of which ${Math.round(waitedS)} s waiting for other processes to leave the cores)`);
await cleanup();
process.exit(records.some((r) => r.server === 'ours' && r.value !== null) ? 0 : 1);
