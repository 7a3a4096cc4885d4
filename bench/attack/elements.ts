// Memory attack by element count (issue 14, item 5): attacker connections
// each send themselves, in a loop, stanzas of a few hundred KB made of tens
// of thousands of empty elements, while bystander pairs exchange messages
// and measure their round trips; a login is tried during the attack and
// after it. The server is a child process (`node src/main.ts start`, its
// defaults, free ports, a temporary data directory); its RSS is sampled
// from /proc/<pid>/status. Prints figures; asserts nothing.
//
//   npx node bench/attack/elements.ts [--connections 40] [--stanza-bytes 245760]
//     [--children 60000] [--duration 20] [--bystanders 4] [--reconnect true]
//     [--max-rss-mb 6000] [--workers N]
//
// An attacker whose stream the server closes logs in again when
// --reconnect is true (what a real attacker does), so the pressure stays.
// The server is killed, and that reported, if its RSS passes --max-rss-mb.
import type net from 'node:net';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { within } from '../../test/helpers/process.ts';
import { login } from '../../test/helpers/raw.ts';
import type { RawClient } from '../../test/helpers/raw.ts';
import { readRss } from '../../src/load/cli.ts';
import { pct, socketOf } from '../lib.ts';
import { startWithAccounts } from '../server.ts';

const { values: opt } = parseArgs({
  options: {
    'connections': { type: 'string', default: '40' },
    'stanza-bytes': { type: 'string', default: String(240 * 1024) },
    'children': { type: 'string', default: '60000' },
    'duration': { type: 'string', default: '20' },
    'bystanders': { type: 'string', default: '4' },
    'reconnect': { type: 'string', default: 'true' },
    'max-rss-mb': { type: 'string', default: '6000' },
    'workers': { type: 'string' },
  },
});
const CONNECTIONS = Number(opt.connections);
const STANZA_BYTES = Number(opt['stanza-bytes']);
const CHILDREN = Number(opt.children);
const DURATION_MS = Number(opt.duration) * 1000;
const BYSTANDERS = Math.max(2, Number(opt.bystanders) & ~1);
const RECONNECT = opt.reconnect === 'true';
const MAX_RSS = Number(opt['max-rss-mb']) * 1024 * 1024;
const LOGIN_TIMEOUT_MS = 60_000;
const PASSWORD = 'bench-pw';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mb = (b: number) => (b / 1024 / 1024).toFixed(0);

/** A login timed, or why it failed. */
async function timedLogin(port: number, user: string): Promise<string> {
  const t0 = performance.now();
  try {
    const { c } = await within(login(port, user, PASSWORD, `r${Date.now()}`), LOGIN_TIMEOUT_MS, 'login');
    c.destroy();
    return `${(performance.now() - t0).toFixed(0)} ms`;
  } catch (err) {
    return `FAILED after ${(performance.now() - t0).toFixed(0)} ms (${(err as Error).message.slice(0, 80)})`;
  }
}

/** Drops what a RawClient would keep (it buffers everything it receives): counts bytes instead. */
function discardInput(c: RawClient, onData: (s: string) => void = () => {}): net.Socket {
  const sock = socketOf(c);
  sock.removeAllListeners('data');
  c.buffer = '';
  sock.on('data', (d: string | Buffer) => onData(typeof d === 'string' ? d : d.toString()));
  return sock;
}

const users = [...Array.from({ length: CONNECTIONS }, (_, i) => `attacker${i}`), ...Array.from({ length: BYSTANDERS }, (_, i) => `bystander${i}`), 'late'];
const env: Record<string, string> = { XMPP_LOG_LEVEL: 'info' };
if (opt.workers) env.XMPP_WORKERS = opt.workers;
const server = await startWithAccounts('bench-elements', users, PASSWORD, env);
const pid = server.proc.pid!;
const port = server.c2sPort;
let killedForRss = false;
let peakSampled = 0;
const baseline = readRss(pid)!;
const sampler = setInterval(() => {
  const rss = readRss(pid);
  if (rss === null) return;
  peakSampled = Math.max(peakSampled, rss);
  if (rss > MAX_RSS && !killedForRss) {
    killedForRss = true;
    server.proc.kill('SIGKILL');
  }
}, 100);

console.log(
  `server pid ${pid}, port ${port}; ${CONNECTIONS} attackers, stanzas of ${STANZA_BYTES} bytes with ${CHILDREN} children, ` +
    `${DURATION_MS / 1000} s, ${BYSTANDERS} bystanders, reconnect ${RECONNECT}; baseline RSS ${mb(baseline)} MB`,
);

// ---- bystanders: pairs, A sends to B, B echoes, A measures the round trip ----
let running = true;
const rtts: number[] = [];
let bystanderFailures = 0;
const pairs: Promise<void>[] = [];
for (let i = 0; i < BYSTANDERS; i += 2) {
  const a = await login(port, `bystander${i}`, PASSWORD, 'a');
  const b = await login(port, `bystander${i + 1}`, PASSWORD, 'b');
  // Only whole tags are searched: an id may be split between reads.
  let pendingB = '';
  const sb = discardInput(b.c, (s) => {
    pendingB += s;
    const end = pendingB.lastIndexOf('>') + 1;
    for (const m of pendingB.slice(0, end).matchAll(/<message [^>]*id=["'](e\d+x\d+)["']/g)) sb.write(`<message to='${a.jid}' id='${m[1]}' type='chat'><body>pong</body></message>`);
    pendingB = pendingB.slice(end);
  });
  let waiting: { id: string; resolve: () => void } | undefined;
  let pendingA = '';
  discardInput(a.c, (s) => {
    pendingA += s;
    const end = pendingA.lastIndexOf('>') + 1;
    if (waiting && pendingA.slice(0, end).includes(waiting.id)) waiting.resolve();
    pendingA = pendingA.slice(end);
  });
  const sa = socketOf(a.c);
  pairs.push(
    (async () => {
      for (let k = 0; running && !sa.destroyed; k++) {
        const id = `e${i}x${k}`;
        const t0 = performance.now();
        // The server writes attributes in double quotes.
        const echoed = new Promise<void>((resolve) => (waiting = { id: `id="${id}"`, resolve }));
        sa.write(`<message to='${b.jid}' id='${id}' type='chat'><body>ping</body></message>`);
        try {
          await within(echoed, 60_000, 'echo');
          rtts.push(performance.now() - t0);
        } catch {
          bystanderFailures++;
        }
        await sleep(50);
      }
      sa.destroy();
      sb.destroy();
    })(),
  );
}

// ---- attackers ----
let stanzasSent = 0;
let bytesSent = 0;
let closedByServer = 0;
let attackerLogins = 0;
let attackerLoginFailures = 0;
const pad = Math.max(0, STANZA_BYTES - CHILDREN * 4 - 120);
async function attacker(i: number): Promise<void> {
  while (running) {
    let c: RawClient;
    let jid: string;
    try {
      ({ c, jid } = await within(login(port, `attacker${i}`, PASSWORD, 'x'), LOGIN_TIMEOUT_MS, 'attacker login'));
      attackerLogins++;
    } catch {
      attackerLoginFailures++;
      if (!RECONNECT) return;
      await sleep(100);
      continue;
    }
    const stanza = Buffer.from(`<message to='${jid}' type='chat' id='attack'><body>${'p'.repeat(pad)}</body>${'<a/>'.repeat(CHILDREN)}</message>`);
    const sock = discardInput(c);
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    while (running && !isClosed) {
      stanzasSent++;
      bytesSent += stanza.length;
      if (!sock.write(stanza)) await Promise.race([new Promise<void>((r) => sock.once('drain', () => r())), closed]);
    }
    if (isClosed && running) closedByServer++;
    sock.destroy();
    if (!RECONNECT) return;
  }
}

const t0 = performance.now();
const attackers = Array.from({ length: CONNECTIONS }, (_, i) => attacker(i));
await sleep(DURATION_MS / 2);
const loginDuring = await timedLogin(port, 'late');
const elapsed = performance.now() - t0;
if (elapsed < DURATION_MS) await sleep(DURATION_MS - elapsed);
const rssAtEnd = readRss(pid) ?? NaN;
running = false;
await Promise.all(attackers);
const duringRtts = [...rtts].sort((x, y) => x - y);
const loginAfter = killedForRss ? 'server killed' : await timedLogin(port, 'late');
await Promise.all(pairs);
clearInterval(sampler);
const hwm = readRss(pid, 'VmHWM') ?? NaN;
const exit = server.proc.exitCode ?? server.proc.signalCode;

console.log(`attack: ${stanzasSent} stanzas handed to the attackers' sockets (${mb(bytesSent)} MB), ${attackerLogins} attacker logins (${attackerLoginFailures} failed), ${closedByServer} attacker streams closed by the server`);
console.log(`bystander round trips: ${duringRtts.length} (${bystanderFailures} lost), p50 ${pct(duringRtts, 50).toFixed(1)} ms, p99 ${pct(duringRtts, 99).toFixed(1)} ms, max ${(duringRtts.at(-1) ?? NaN).toFixed(1)} ms`);
console.log(`login during the attack: ${loginDuring}; after: ${loginAfter}`);
console.log(`server RSS: baseline ${mb(baseline)} MB, peak sampled ${mb(peakSampled)} MB, VmHWM ${mb(hwm)} MB, at the end of the attack ${mb(rssAtEnd)} MB${killedForRss ? `; KILLED above --max-rss-mb` : ''}${exit !== null ? `; server exited (${exit})` : ''}`);
await server.stop('SIGKILL');
process.exit(0);
