// Password guessing from one address (issue 20, hardening): an attacker
// makes --attempts SASL PLAIN attempts with wrong passwords against one
// account, over --concurrency direct-TLS connections from --attacker
// (reconnecting whenever a connection is closed or refused), while
// legitimate users log in (direct TLS, PLAIN, bind) from --user at --rate
// a second, each with its own account, and a bystander session pings the
// server every 100 ms. Prints the legitimate logins' latency (connect to
// bound) before and during the attack, the bystander's ping round trips,
// and what the attacker got. The server is a child process (`node
// src/main.ts start`, free ports, a temporary data directory); --server DIR
// runs another checkout's server with the same client side, so that one
// command measures before and after. The server is pinned to core 0
// (taskset, when there), this process to core 1, and the attacker runs in a
// worker thread of its own, so that its event loop does not delay the
// legitimate logins it is measured against. Asserts nothing.
//
//   npx node bench/attack/brute-force.ts [--server DIR] [--attempts 2000]
//     [--concurrency 32] [--rate 20] [--quiet 5] [--workers 2]
//     [--attacker 127.0.0.2] [--user 127.0.0.3] [--env K=V ...] [--json]
//
// Linux: every 127/8 address is the loopback, so the attacker and the
// users have addresses of their own (127.0.0.1 is exempt from per-address
// limits by default, XMPP_PER_IP_EXEMPT).
import net from 'node:net';
import tls from 'node:tls';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { existsSync } from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { serverEnv } from '../../test/helpers/process.ts';
import { atExit, pct, tempDir } from '../lib.ts';
import { createAccounts } from '../server.ts';

const HERE = fileURLToPath(new URL('../..', import.meta.url));
const { values: o } = parseArgs({
  options: {
    server: { type: 'string', default: HERE },
    attempts: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '32' },
    rate: { type: 'string', default: '20' },
    quiet: { type: 'string', default: '5' },
    workers: { type: 'string', default: '2' },
    attacker: { type: 'string', default: '127.0.0.2' },
    user: { type: 'string', default: '127.0.0.3' },
    'max-seconds': { type: 'string', default: '120' },
    env: { type: 'string', multiple: true, default: [] },
    json: { type: 'boolean', default: false },
  },
});
const ATTEMPTS = Number(o.attempts);
const CONCURRENCY = Number(o.concurrency);
const RATE = Number(o.rate);
const QUIET_MS = Number(o.quiet) * 1000;
const MAX_MS = Number(o['max-seconds']) * 1000;
const PASSWORD = 'right-password';
const STEP_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HEADER = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`;
const plain = (user: string, pw: string) => `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${pw}`).toString('base64')}</auth>`;
const FEATURES = /<\/stream:features>/;
const OUTCOME = /<success[^>]*(?:\/>|<\/success>)|<failure[\s\S]*?<\/failure>|<stream:error[\s\S]*?<\/stream:error>/;

/** The server's direct-TLS port (the attacker thread is given it). */
let port = isMainThread ? 0 : (workerData as { port: number }).port;

// ---- a minimal client: direct TLS, PLAIN, bind ----

class Conn {
  readonly sock: tls.TLSSocket;
  private buf = '';
  private wake: (() => void) | undefined;
  closed = false;

  constructor(localAddress: string) {
    const tcp = net.connect({ port, host: '127.0.0.1', localAddress });
    tcp.on('error', () => {});
    this.sock = tls.connect({ socket: tcp, rejectUnauthorized: false, servername: 'localhost' });
    this.sock.setEncoding('utf8');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      this.wake?.();
    });
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  /** Waits for `re` in what arrived; null when the connection closed first (or STEP_MS passed). */
  async until(re: RegExp): Promise<RegExpExecArray | null> {
    const deadline = performance.now() + STEP_MS;
    for (;;) {
      const m = re.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m.index + m[0].length);
        return m;
      }
      if (this.closed || performance.now() > deadline) return null;
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 1000).unref();
      });
      this.wake = undefined;
    }
  }

  send(s: string): void {
    if (!this.closed) this.sock.write(s);
  }
}

// ---- the attacker (a worker thread): wrong passwords for 'victim', reconnecting when closed or refused ----

if (!isMainThread) {
  const outcomes = new Map<string, number>();
  let attempts = 0;
  let connections = 0;
  let refusedConnections = 0;
  const attackStart = performance.now();
  const attackOver = () => attempts >= ATTEMPTS || performance.now() - attackStart > MAX_MS;
  const attacker = async (n: number): Promise<void> => {
    let guess = 0;
    while (!attackOver()) {
      const c = new Conn(o.attacker);
      connections++;
      c.send(HEADER);
      if (!(await c.until(FEATURES))) {
        refusedConnections++;
        c.sock.destroy();
        await sleep(10);
        continue;
      }
      while (!attackOver()) {
        attempts++;
        c.send(plain('victim', `guess-${n}-${guess++}`));
        const r = await c.until(OUTCOME);
        if (!r) break;
        const cond = /<(?:failure|stream:error)[^>]*>\s*<([\w-]+)/.exec(r[0])?.[1] ?? (r[0].startsWith('<success') ? 'success' : 'other');
        outcomes.set(cond, (outcomes.get(cond) ?? 0) + 1);
        if (r[0].startsWith('<stream:error')) break;
      }
      c.sock.destroy();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, (_, n) => attacker(n)));
  parentPort!.postMessage({ attempts, ms: performance.now() - attackStart, connections, refusedConnections, outcomes: Object.fromEntries(outcomes) });
  process.exit(0);
}

// ---- the server ----

const dir = tempDir('xmpp-brute-');
const dataDir = join(dir, 'data');
const LOGINS = Math.ceil(((QUIET_MS + MAX_MS) / 1000) * RATE) + 10;
await createAccounts(dataDir, ['victim', 'bystander', ...Array.from({ length: LOGINS }, (_, i) => `u${i}`)], PASSWORD);
// Info: the 'listening' line says the ports; only warnings and errors are counted.
const env = serverEnv(dir, { XMPP_WORKERS: o.workers, XMPP_LOG_LEVEL: 'info' });
for (const kv of o.env) {
  const i = kv.indexOf('=');
  env[kv.slice(0, i)] = kv.slice(i + 1);
}
const pin = existsSync('/usr/bin/taskset');
const child = pin
  ? spawn('/usr/bin/taskset', ['-c', '0', process.execPath, 'src/main.ts', 'start'], { cwd: resolve(o.server), env, stdio: ['ignore', 'ignore', 'pipe'] })
  : spawn(process.execPath, ['src/main.ts', 'start'], { cwd: resolve(o.server), env, stdio: ['ignore', 'ignore', 'pipe'] });
if (pin) spawn('/usr/bin/taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
atExit(() => child.kill('SIGKILL'));
const warnings = new Map<string, number>();
let listening: Record<string, unknown> | undefined;
await new Promise<void>((up, fail) => {
  createInterface({ input: child.stderr! }).on('line', (line) => {
    try {
      const l = JSON.parse(line) as { msg: string; level: string };
      if (l.msg === 'listening') {
        listening = l;
        up();
      } else if (l.level !== 'info' && l.level !== 'debug') warnings.set(`${l.level}: ${l.msg}`, (warnings.get(`${l.level}: ${l.msg}`) ?? 0) + 1);
    } catch {
      // not a log line
    }
  });
  child.on('exit', (code) => fail(new Error(`the server exited (${code}) before listening`)));
});
port = listening!.tlsPort as number;

/** A whole login; its time from connect to bound, or the reason it failed. */
async function login(user: string): Promise<{ ms: number } | { failed: string }> {
  const t0 = performance.now();
  const c = new Conn(o.user);
  try {
    c.send(HEADER);
    if (!(await c.until(FEATURES))) return { failed: 'no features' };
    c.send(plain(user, PASSWORD));
    const r = await c.until(OUTCOME);
    if (!r || !r[0].startsWith('<success')) return { failed: r ? (/<(?:failure|stream:error)[^>]*>\s*<([\w-]+)/.exec(r[0])?.[1] ?? r[0]) : 'closed' };
    c.send(HEADER);
    if (!(await c.until(FEATURES))) return { failed: 'no features after SASL' };
    c.send(`<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>`);
    if (!(await c.until(/<jid>/))) return { failed: 'no bind' };
    return { ms: performance.now() - t0 };
  } finally {
    c.sock.destroy();
  }
}

interface Phase {
  ms: number[];
  failed: Map<string, number>;
}
const newPhase = (): Phase => ({ ms: [], failed: new Map() });
let userSeq = 0;

/** Logins at RATE a second until `stop()` says so; each runs on its own. */
async function loginsWhile(phase: Phase, stop: () => boolean): Promise<void> {
  const running: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; !stop(); i++) {
    running.push(
      login(`u${userSeq++}`).then((r) => {
        if ('ms' in r) phase.ms.push(r.ms);
        else phase.failed.set(r.failed, (phase.failed.get(r.failed) ?? 0) + 1);
      }),
    );
    const next = t0 + ((i + 1) * 1000) / RATE;
    await sleep(Math.max(0, next - performance.now()));
  }
  await Promise.all(running);
}

// ---- the bystander: one session pinging every 100 ms ----

const pings: Record<'quiet' | 'attack', number[]> = { quiet: [], attack: [] };
let pingPhase: 'quiet' | 'attack' | undefined = 'quiet';
const bystander = new Conn('127.0.0.1');
bystander.send(HEADER);
await bystander.until(FEATURES);
bystander.send(plain('bystander', PASSWORD));
await bystander.until(OUTCOME);
bystander.send(HEADER);
await bystander.until(FEATURES);
bystander.send(`<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>`);
await bystander.until(/<jid>/);
const pinger = (async () => {
  for (let i = 0; pingPhase; i++) {
    const t = performance.now();
    const at = pingPhase;
    bystander.send(`<iq type='get' id='p${i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    if (!(await bystander.until(new RegExp(`id=['"]p${i}['"]`)))) break;
    pings[at].push(performance.now() - t);
    await sleep(100);
  }
})();

// ---- quiet, then the attack ----

const quiet = newPhase();
{
  const end = performance.now() + QUIET_MS;
  await loginsWhile(quiet, () => performance.now() > end);
}

pingPhase = 'attack';
const during = newPhase();
let result: { attempts: number; ms: number; connections: number; refusedConnections: number; outcomes: Record<string, number> } | undefined;
const attackThread = new Worker(new URL(import.meta.url), { argv: process.argv.slice(2), workerData: { port } });
const attack = new Promise<void>((done, fail) => {
  attackThread.once('message', (m: typeof result) => {
    result = m;
    done();
  });
  attackThread.once('error', fail);
});
await loginsWhile(during, () => result !== undefined);
await attack;
const { attempts, connections, refusedConnections } = result!;
const attackMs = result!.ms;
const outcomes = new Map(Object.entries(result!.outcomes));
pingPhase = undefined;
await pinger;
bystander.sock.destroy();
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));

// ---- report ----

const figures = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const r = (n: number) => Math.round(n * 10) / 10;
  return { n: s.length, p50: r(pct(s, 50)), p99: r(pct(s, 99)), max: r(s[s.length - 1] ?? NaN) };
};
const report = {
  server: resolve(o.server),
  workers: Number(o.workers),
  env: o.env,
  attack: { attempts, seconds: Math.round(attackMs / 100) / 10, perSecond: Math.round(attempts / (attackMs / 1000)), connections, refusedConnections, outcomes: Object.fromEntries(outcomes) },
  loginsQuiet: { ...figures(quiet.ms), failed: Object.fromEntries(quiet.failed) },
  loginsDuring: { ...figures(during.ms), failed: Object.fromEntries(during.failed) },
  pingQuiet: figures(pings.quiet),
  pingDuring: figures(pings.attack),
  serverLog: Object.fromEntries(warnings),
};
if (o.json) console.log(JSON.stringify(report, null, 2));
else {
  const f = (x: ReturnType<typeof figures>) => `p50 ${x.p50} ms, p99 ${x.p99} ms, max ${x.max} ms (${x.n})`;
  console.log(`server ${report.server}  workers ${report.workers}  ${report.env.join(' ')}`);
  console.log(`attack: ${attempts} PLAIN attempts in ${report.attack.seconds} s (${report.attack.perSecond}/s) over ${connections} connections (${refusedConnections} refused before any XML); answers ${JSON.stringify(report.attack.outcomes)}`);
  console.log(`legitimate logins, quiet:  ${f(report.loginsQuiet)}  failed ${JSON.stringify(report.loginsQuiet.failed)}`);
  console.log(`legitimate logins, attack: ${f(report.loginsDuring)}  failed ${JSON.stringify(report.loginsDuring.failed)}`);
  console.log(`bystander ping, quiet: ${f(report.pingQuiet)};  attack: ${f(report.pingDuring)}`);
  console.log(`server log: ${JSON.stringify(report.serverLog)}`);
}
