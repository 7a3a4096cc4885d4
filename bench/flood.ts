// Issue 14, item 1, as a benchmark: a flood of idle connections from one
// host against a server with a given open-file limit. Prints figures; it
// asserts nothing.
//
//   npx node bench/flood.ts [options]
//
//   --server DIR      the checkout whose server runs (default: this one), so
//                     that the same command measures another version
//   --nofile N        the server's `ulimit -n` (default 1024)
//   --raw N           idle raw TCP connections in the flood (default 1500)
//   --auth N          authenticated idle connections in the flood, made by
//                     the load tool (`load idle`, this checkout's; default 0)
//   --tls MODE        the load tool's --tls (default direct)
//   --pairs N         bystander pairs chatting through the flood (default 4)
//   --rate R          messages per second each bystander sends (default 20)
//   --before S        seconds of chat before the flood (default 3)
//   --hold S          seconds the flood is held (default 10)
//   --after S         seconds measured after it ends (default 5)
//   --workers N       XMPP_WORKERS (default 2)
//   --env K=V         another server setting (repeatable)
//   --json            one JSON object instead of the table
//
// Phases: bystanders log in and chat (before); the flood connects and is
// held (during); it is dropped (after). In each phase: bystander message
// latency (sent to received, p50/p99/max) and messages lost (not received
// by the end), one login attempted every 250 ms (STARTTLS, PLAIN, bind;
// ok/failed and latency), and the server's RSS sampled every 250 ms. Also:
// whether the server survived, and what it logged.
import net from 'node:net';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { readRss } from '../src/load/cli.ts';
import { online } from '../test/helpers/protocol.ts';
import { serverEnv } from '../test/helpers/process.ts';
import type { RawClient } from '../test/helpers/raw.ts';
import { atExit, pct, socketOf, tempDir } from './lib.ts';
import { createAccounts } from './server.ts';

const HERE = fileURLToPath(new URL('..', import.meta.url));
const { values: o } = parseArgs({
  options: {
    server: { type: 'string', default: HERE },
    nofile: { type: 'string', default: '1024' },
    raw: { type: 'string', default: '1500' },
    auth: { type: 'string', default: '0' },
    tls: { type: 'string', default: 'direct' },
    pairs: { type: 'string', default: '4' },
    rate: { type: 'string', default: '20' },
    before: { type: 'string', default: '3' },
    hold: { type: 'string', default: '10' },
    after: { type: 'string', default: '5' },
    workers: { type: 'string', default: '2' },
    env: { type: 'string', multiple: true, default: [] },
    json: { type: 'boolean', default: false },
  },
});
const num = (k: keyof typeof o) => Number(o[k]);
const PASSWORD = 'password';
type Phase = 'before' | 'during' | 'after';
const PHASES: Phase[] = ['before', 'during', 'after'];
let phase: Phase = 'before';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// NaN, pct() of no samples, is null in the report as the missing figures are.
const round = (n: number | null) => (n === null || Number.isNaN(n) ? null : Math.round(n * 10) / 10);

// ---- the server ----

const dir = tempDir('xmpp-flood-');
const dataDir = join(dir, 'data');
const pairs = num('pairs');
const logins = Math.ceil(((num('before') + num('hold') + num('after')) * 1000) / 250) + 10;
{
  // Accounts straight into the store: bystanders b1.., login attempts l1..,
  // and user1.. for the load tool (its default prefix and password).
  const names = [...Array.from({ length: pairs * 2 }, (_, i) => `b${i + 1}`), ...Array.from({ length: logins }, (_, i) => `l${i + 1}`), ...Array.from({ length: num('auth') }, (_, i) => `user${i + 1}`)];
  await createAccounts(dataDir, names, PASSWORD);
}
// Ports picked by the server (read from its listening line): no other socket can take them meanwhile.
const env = serverEnv(dir, { XMPP_WORKERS: o.workers });
for (const kv of o.env) {
  const i = kv.indexOf('=');
  env[kv.slice(0, i)] = kv.slice(i + 1);
}
const serverDir = resolve(o.server);
const child = spawn('/bin/sh', ['-c', `ulimit -n ${o.nofile} && exec "$0" src/main.ts start`, process.execPath], { cwd: serverDir, env, stdio: ['ignore', 'ignore', 'pipe'] });
atExit(() => child.kill('SIGKILL')); // when the benchmark fails; at its end the server has exited
const logCounts = new Map<string, number>();
const crash: string[] = [];
let listening: Record<string, unknown> | undefined;
let exited: { code: number | null; signal: string | null; atS: number } | undefined;
const t0 = performance.now();
const since = () => round((performance.now() - t0) / 1000);
const up = new Promise<void>((resolveUp, reject) => {
  createInterface({ input: child.stderr! }).on('line', (line) => {
    try {
      const l = JSON.parse(line) as { msg: string; level: string };
      if (l.level !== 'info' || l.msg === 'listening') logCounts.set(`${l.level}: ${l.msg}`, (logCounts.get(`${l.level}: ${l.msg}`) ?? 0) + 1);
      if (l.msg === 'listening') {
        listening = l;
        resolveUp();
      }
    } catch {
      crash.push(line);
    }
  });
  child.on('exit', (code, signal) => {
    exited = { code, signal, atS: since()! };
    reject(new Error(`the server exited before listening: ${crash.join('\n')}`));
  });
});
await up;
const c2sPort = listening!.c2sPort as number;
const tlsPort = listening!.tlsPort as number;

const rssBy: Record<Phase, number[]> = { before: [], during: [], after: [] };
const rssTimer = setInterval(() => {
  const r = readRss(child.pid!);
  if (r !== null) rssBy[phase].push(r);
}, 250);

// ---- bystanders: pairs chatting, latency per phase ----

interface Sent {
  at: number;
  phase: Phase;
}
const sent = new Map<string, Sent>();
const latency: Record<Phase, number[]> = { before: [], during: [], after: [] };
const bystanders: { c: RawClient; jid: string }[] = [];
for (let i = 1; i <= pairs * 2; i++) bystanders.push(await online(c2sPort, `b${i}`, PASSWORD, 'bench'));
for (const b of bystanders) {
  const s = socketOf(b.c);
  s.setNoDelay(true);
  s.removeAllListeners('data');
  let pending = '';
  s.on('data', (d: string) => {
    pending += d;
    let end: number;
    while ((end = pending.indexOf('</message>')) !== -1) {
      const m = /id=["'](m\d+)["']/.exec(pending.slice(0, end));
      const was = m && sent.get(m[1]);
      if (was) {
        latency[was.phase].push(performance.now() - was.at);
        sent.delete(m[1]);
      }
      pending = pending.slice(end + 10);
    }
  });
}
let nextId = 0;
const lost: Record<Phase, number> = { before: 0, during: 0, after: 0 };
const chat = setInterval(() => {
  for (let i = 0; i < bystanders.length; i++) {
    const from = bystanders[i];
    const to = bystanders[i ^ 1];
    if (from.c.isClosed) continue;
    const id = `m${++nextId}`;
    sent.set(id, { at: performance.now(), phase });
    from.c.send(`<message to='${to.jid}' id='${id}' type='chat'><body>x</body></message>`);
  }
}, 1000 / num('rate'));

// ---- logins, one every 250 ms ----

const loginsBy: Record<Phase, { ok: number; failed: number; ms: number[] }> = { before: { ok: 0, failed: 0, ms: [] }, during: { ok: 0, failed: 0, ms: [] }, after: { ok: 0, failed: 0, ms: [] } };
let loginN = 0;
let firstLoginAfterS: number | null = null;
let floodEndedAt = 0;
const attempts = new Set<Promise<void>>();
const loginTimer = setInterval(() => {
  const p = phase;
  const start = performance.now();
  const attempt = Promise.race([online(c2sPort, `l${++loginN}`, PASSWORD, 'bench'), sleep(5000).then(() => Promise.reject(new Error('timeout')))]).then(
    (r) => {
      loginsBy[p].ok++;
      loginsBy[p].ms.push(performance.now() - start);
      if (p === 'after' && firstLoginAfterS === null) firstLoginAfterS = (performance.now() - floodEndedAt) / 1000;
      r.c.destroy();
    },
    () => {
      loginsBy[p].failed++;
    },
  );
  attempts.add(attempt);
  void attempt.finally(() => attempts.delete(attempt));
}, 250);

// ---- the flood ----

await sleep(num('before') * 1000);
phase = 'during';
const flood: net.Socket[] = [];
let refused = 0;
let connected = 0;
for (let i = 0; i < num('raw'); i++) {
  const s = net.connect({ port: c2sPort, host: '127.0.0.1' });
  s.on('connect', () => connected++);
  s.on('error', () => {});
  s.on('close', () => refused++);
  flood.push(s);
  if (i % 200 === 199) await new Promise((r) => setImmediate(r));
}
let authFlood: Promise<Record<string, unknown> | string> | undefined;
if (num('auth') > 0) {
  const port = o.tls === 'direct' ? tlsPort : c2sPort;
  const args = ['src/main.ts', 'load', 'idle', '--tls', o.tls!, '--port', String(port), '--connections', o.auth!, '--users', o.auth!, '--duration', o.hold!, '--json', '--quiet', '--mechanism', 'PLAIN'];
  authFlood = new Promise((done) => {
    const l = spawn(process.execPath, args, { cwd: HERE, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    l.stdout.on('data', (d: Buffer) => (out += d.toString()));
    l.on('close', () => {
      try {
        done(JSON.parse(out) as Record<string, unknown>);
      } catch {
        done(out.trim());
      }
    });
  });
}
await sleep(num('hold') * 1000);
const closedByServer = refused;
for (const s of flood) s.destroy();
const authResult = await authFlood;
phase = 'after';
floodEndedAt = performance.now();
await sleep(num('after') * 1000);

clearInterval(chat);
clearInterval(loginTimer);
clearInterval(rssTimer);
await Promise.allSettled([...attempts]);
// What was sent and never arrived, by the phase it was sent in.
await sleep(1000);
for (const s of sent.values()) lost[s.phase]++;
const survived = exited === undefined;
const bystandersConnected = bystanders.filter((b) => !b.c.isClosed).length;
for (const b of bystanders) b.c.destroy();
if (survived) child.kill('SIGTERM');
await new Promise((r) => (exited ? r(undefined) : child.once('exit', r)));

// ---- figures ----

const mb = (n: number | undefined) => (n === undefined ? null : Math.round(n / 2 ** 20));
const report = {
  server: serverDir,
  command: `npx node bench/flood.ts ${process.argv.slice(2).join(' ')}`.trim(),
  nofile: num('nofile'),
  maxConnections: listening?.maxConnections ?? 'not reported (no cap)',
  flood: { raw: num('raw'), rawConnectEvents: connected, rawClosedByServer: closedByServer, auth: authResult },
  survived,
  bystandersConnectedAtEnd: `${bystandersConnected}/${bystanders.length}`,
  exit: exited,
  crash: crash.slice(0, 6),
  phases: Object.fromEntries(
    PHASES.map((p) => {
      const l = latency[p].sort((a, b) => a - b);
      const lg = loginsBy[p].ms.sort((a, b) => a - b);
      return [
        p,
        {
          messages: { received: l.length, lost: lost[p], p50: round(pct(l, 50)), p99: round(pct(l, 99)), max: round(l.at(-1) ?? null) },
          logins: { ok: loginsBy[p].ok, failed: loginsBy[p].failed, p50: round(pct(lg, 50)), max: round(lg.at(-1) ?? null) },
          rssMB: rssBy[p].length === 0 ? { min: null, max: null, last: null } : { min: mb(Math.min(...rssBy[p])), max: mb(Math.max(...rssBy[p])), last: mb(rssBy[p].at(-1)) },
        },
      ];
    }),
  ),
  firstLoginAfterFloodS: firstLoginAfterS === null ? null : round(firstLoginAfterS),
  log: Object.fromEntries(logCounts),
};
if (o.json) console.log(JSON.stringify(report));
else {
  console.log(`server ${report.server}  ulimit -n ${report.nofile}  maxConnections ${report.maxConnections}  workers ${o.workers}`);
  console.log(`flood: ${num('raw')} raw TCP (${closedByServer} closed by the server while held)${num('auth') > 0 ? `, ${num('auth')} authenticated: ${JSON.stringify(authResult)}` : ''}`);
  console.log(`server process survived: ${survived}${survived ? '' : `  (exited ${JSON.stringify(exited)})`}; bystanders still connected at the end: ${report.bystandersConnectedAtEnd}`);
  for (const line of report.crash) console.log(`  | ${line}`);
  console.log('phase    msgs recv  lost  p50 ms  p99 ms  max ms   logins ok/failed  login p50  RSS MB min/max/last');
  for (const p of PHASES) {
    const f = report.phases[p] as { messages: Record<string, number | null>; logins: Record<string, number | null>; rssMB: Record<string, number | null> };
    console.log(
      `${p.padEnd(8)} ${String(f.messages.received).padStart(9)} ${String(f.messages.lost).padStart(5)} ${String(f.messages.p50).padStart(7)} ${String(f.messages.p99).padStart(7)} ${String(f.messages.max).padStart(7)}   ${`${f.logins.ok}/${f.logins.failed}`.padStart(16)} ${String(f.logins.p50).padStart(10)}  ${f.rssMB.min}/${f.rssMB.max}/${f.rssMB.last}`,
    );
  }
  console.log(`first login that worked after the flood ended: ${report.firstLoginAfterFloodS ?? 'none'} s`);
  console.log('server log (warn/error lines by message):');
  for (const [k, v] of logCounts) if (!k.endsWith('listening')) console.log(`  ${String(v).padStart(6)}  ${k}`);
}
process.exit(0);
