// Presence with a large roster (issue 14, item 6): attacker accounts build
// big rosters (many items, many groups per item, as large as the server
// lets them), then flood presence; bystander pairs exchange messages and
// measure round trips; logins are timed during the flood and after it. The
// server is a child process (`node src/main.ts start` at debug level, free
// ports, a temporary data directory): its workers' event-loop delay comes
// from their 'event loop delay' log lines (where the server writes them),
// its RSS from /proc/<pid>/status. Prints figures; asserts nothing.
//
//   npx node bench/attack/roster.ts [--attackers 4] [--items 200] [--groups 245]
//     [--group-bytes 960] [--duration 20] [--bystanders 20] [--workers N]
//
// The issue's two cases: `--items 200 --groups 245` (a 47 MB roster where
// the server accepts it) and `--items 1000 --groups 1 --group-bytes 10` (an
// ordinary roster of 1,000 contacts).
import type { Element } from 'ltx';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { within } from '../../test/helpers/process.ts';
import { drainedOrClosed, login } from '../../test/helpers/raw.ts';
import type { RawClient } from '../../test/helpers/raw.ts';
import { readRss } from '../../src/load/cli.ts';
import { pct, socketOf } from '../lib.ts';
import { startWithAccounts } from '../server.ts';

const { values: opt } = parseArgs({
  options: {
    'attackers': { type: 'string', default: '4' },
    'items': { type: 'string', default: '200' },
    'groups': { type: 'string', default: '245' },
    'group-bytes': { type: 'string', default: '960' },
    'duration': { type: 'string', default: '20' },
    'bystanders': { type: 'string', default: '20' },
    'workers': { type: 'string' },
  },
});
const ATTACKERS = Number(opt.attackers);
const ITEMS = Number(opt.items);
const GROUPS = Number(opt.groups);
const GROUP_BYTES = Number(opt['group-bytes']);
const DURATION_MS = Number(opt.duration) * 1000;
const BYSTANDERS = Math.max(2, Number(opt.bystanders) & ~1);
const PASSWORD = 'bench-pw';
const TIMEOUT_MS = 60_000;

const mb = (b: number) => (b / 1024 / 1024).toFixed(0);
const fmt = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `p50 ${pct(s, 50).toFixed(0)} ms, p99 ${pct(s, 99).toFixed(0)} ms, max ${(s[s.length - 1] ?? NaN).toFixed(0)} ms (${s.length})`;
};

/** Sends and waits for the stanza with that id. */
function request(c: RawClient, xml: string, id: string): Promise<Element> {
  return within(c.request(xml, id), TIMEOUT_MS, id);
}

const users = [...Array.from({ length: ATTACKERS }, (_, i) => `attacker${i}`), ...Array.from({ length: BYSTANDERS }, (_, i) => `bystander${i}`), ...Array.from({ length: 40 }, (_, i) => `late${i}`)];
const env: Record<string, string> = { XMPP_LOG_LEVEL: 'debug', XMPP_READ_RATE_BYTES: '0' };
if (opt.workers) env.XMPP_WORKERS = opt.workers;
const server = await startWithAccounts('bench-roster', users, PASSWORD, env);
const pid = server.proc.pid!;
const port = server.c2sPort;
console.log(`server pid ${pid}; ${ATTACKERS} attackers with ${ITEMS} items x ${GROUPS} groups of ${GROUP_BYTES} bytes; ${BYSTANDERS} bystanders; ${DURATION_MS / 1000} s`);

// Attackers build their rosters (as far as the server lets them).
const attackers: RawClient[] = [];
let accepted = 0;
let refused = 0;
const t0 = performance.now();
for (let a = 0; a < ATTACKERS; a++) {
  const { c } = await login(port, `attacker${a}`, PASSWORD, 'flood');
  attackers.push(c);
  const groups = (i: number) => Array.from({ length: GROUPS }, (_, g) => `<group>${`${i}-${g}-`.padEnd(GROUP_BYTES, 'g')}</group>`).join('');
  for (let i = 0; i < ITEMS; i++) {
    const id = `set-${a}-${i}`;
    const r = await request(c, `<iq type='set' id='${id}'><query xmlns='jabber:iq:roster'><item jid='contact${i}@example.org' name='Contact ${i}'>${groups(i)}</item></query></iq>`, id);
    if (r.attrs.type === 'result') accepted++;
    else refused++;
    c.resetReader();
  }
}
console.log(`rosters built in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${accepted} items accepted, ${refused} refused; RSS ${mb(readRss(pid) ?? NaN)} MB`);
await new Promise((r) => setTimeout(r, 6000)); // a quiet period of event-loop figures before the flood
const logMark = server.log.length;

// Bystanders: pairs that ping-pong messages and time each round trip.
const pairs: [RawClient, string, RawClient, string][] = [];
for (let i = 0; i < BYSTANDERS; i += 2) {
  const a = await login(port, `bystander${i}`, PASSWORD, 'b');
  const b = await login(port, `bystander${i + 1}`, PASSWORD, 'b');
  pairs.push([a.c, a.jid, b.c, b.jid]);
}
let running = true;
const rtts: number[] = [];
let unanswered = 0;
const bystanding = pairs.map(async ([a, , b, bjid]) => {
  for (let n = 0; running; n++) {
    const id = `m${n}`;
    const t = performance.now();
    const got = b.find((el) => el.attrs.id === id);
    a.send(`<message to='${bjid}' id='${id}' type='chat'><body>ping</body></message>`);
    try {
      await within(got, 30_000, id);
      rtts.push(performance.now() - t);
    } catch {
      unanswered++;
    }
    a.resetReader();
    b.resetReader();
  }
});

// The flood: each attacker sends presence as fast as the server reads it.
const flooding = attackers.map(async (c) => {
  const sock = socketOf(c);
  sock.removeAllListeners('data');
  sock.on('data', () => {}); // reads and drops
  for (let n = 0; running && !sock.destroyed; n++) {
    if (!sock.write(`<presence><status>${n}</status></presence>`)) {
      await drainedOrClosed(sock);
    }
  }
});

// Logins during the flood.
const during: number[] = [];
let failedDuring = 0;
const logging = (async () => {
  for (let i = 0; running && i < 20; i++) {
    const t = performance.now();
    try {
      const { c } = await within(login(port, `late${i}`, PASSWORD, 'l'), TIMEOUT_MS, 'login');
      during.push(performance.now() - t);
      c.destroy();
    } catch {
      failedDuring++;
    }
  }
})();

const floodStart = performance.now();
let peak = 0;
const sampler = setInterval(() => (peak = Math.max(peak, readRss(pid) ?? NaN)), 200);
await new Promise((r) => setTimeout(r, DURATION_MS));
running = false;
clearInterval(sampler);
// The attack stops: the attackers go, whatever the server still has of theirs.
for (const c of attackers) c.destroy();
await Promise.allSettled([...bystanding, ...flooding, logging]);
const recoveredAt = performance.now();

const after: number[] = [];
const firstAfter = performance.now();
for (let i = 20; i < 30; i++) {
  const t = performance.now();
  const { c } = await within(login(port, `late${i}`, PASSWORD, 'l'), TIMEOUT_MS, 'login after');
  after.push(performance.now() - t);
  c.destroy();
}
const afterDone = performance.now();
await new Promise((r) => setTimeout(r, 5500)); // the last period's event-loop line
const delays = server.log
  .slice(logMark)
  .split('\n')
  .filter((l) => l.includes('"msg":"event loop delay"') && !l.includes('"thread":0'))
  .map((l) => JSON.parse(l) as { p99Ms: number; maxMs: number });

console.log(`bystanders: ${fmt(rtts)}, unanswered ${unanswered}`);
console.log(`logins during the flood: ${fmt(during)}, failed ${failedDuring}; after: ${fmt(after)} (bystanders done ${((recoveredAt - floodStart) / 1000 - DURATION_MS / 1000).toFixed(1)} s after the end, ten logins after it took ${((afterDone - firstAfter) / 1000).toFixed(1)} s)`);
console.log(`workers' event-loop delay in the flood: ${delays.length === 0 ? 'not logged by this server' : `p99 up to ${Math.max(...delays.map((d) => d.p99Ms))} ms, max ${Math.max(...delays.map((d) => d.maxMs))} ms (${delays.length} periods of 5 s)`}`);
console.log(`RSS peak ${mb(peak)} MB`);
for (const [a, , b] of pairs) {
  a.destroy();
  b.destroy();
}
await server.stop();
