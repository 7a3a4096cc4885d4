// The chat workload of the load tool (src/load/worker.ts, chat), spoken to
// the bare TLS relay (bench/relay.ts) instead of an XMPP server: --users TLS
// connections, each sending --rate messages per second to random other
// users, in 5 ms ticks with one timestamp per tick, latency from send to
// receipt in the same HdrHistogram (src/load/stats.ts). Each message carries
// the bytes of the XMPP stanza the load tool would send, so the relay moves
// as many bytes as the server does. Prints the load tool's JSON summary.
//
//   node bench/compare/relay-driver.ts [chat] --port P --users 100 --rate 10 --count 50000 --duration 10 [--timeout 30] --json
import tls from 'node:tls';
import { parseLoadArgs, UsageError } from '../../src/load/cli.ts';
import type { LoadOptions } from '../../src/load/options.ts';
import { Aggregate, Recorder } from '../../src/load/stats.ts';
import { Framer, HEADER_BYTES, NO_SUCH_PEER, frame } from '../relay.ts';

const TICK_MS = 5;
const GRACE_MS = 5000;
const now = () => performance.now();
const wallNow = () => performance.timeOrigin + performance.now();

// The load tool's own command line (its chat options, same defaults and
// checks); the workload word may be left out.
const argv = process.argv.slice(2);
let o: LoadOptions;
try {
  const p = parseLoadArgs(argv[0] === 'chat' ? argv : ['chat', ...argv]);
  if (p === 'help' || p.workload !== 'chat') throw new UsageError('the relay driver runs the chat workload only');
  o = p;
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  console.error(`relay-driver: ${err.message}`);
  process.exit(2);
}
const { port, users, rate, count, durationS, domain } = o;
const timeoutMs = o.timeoutS * 1000;

const rec = new Recorder();
const start = now();
const deadline = start + durationS * 1000;
const agg = new Aggregate(start);
const flush = () => agg.add(0, rec.take(), now());
const statsTimer = setInterval(flush, 250);

interface Peer {
  id: number;
  sock: tls.TLSSocket;
  ready: boolean;
}

const context = tls.createSecureContext();

function connect(id: number): Promise<Peer | undefined> {
  return new Promise((resolve) => {
    const sock = tls.connect({ host: o.hostName, port, secureContext: context, rejectUnauthorized: false, servername: domain });
    const p: Peer = { id, sock, ready: false };
    sock.setNoDelay(true);
    const timer = setTimeout(() => {
      if (p.ready) return;
      rec.error('timeout');
      sock.destroy();
    }, timeoutMs);
    const framer = new Framer((f) => {
      const from = f.readUInt32BE(4);
      if (!p.ready) {
        p.ready = true;
        clearTimeout(timer);
        resolve(p);
        return;
      }
      if (from === NO_SUCH_PEER) {
        rec.error('message-error:no-such-peer');
        return;
      }
      rec.latency(wallNow() - f.readDoubleBE(HEADER_BYTES));
      rec.delivered++;
      rec.completed++;
    });
    sock.on('secureConnect', () => sock.write(frame(id)));
    sock.on('data', (chunk: Buffer) => {
      if (!framer.push(chunk)) sock.destroy(new Error('bad frame'));
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      rec.error(err.code ?? 'error');
      if (!p.ready) resolve(undefined);
    });
    sock.on('close', () => {
      if (!p.ready) resolve(undefined);
    });
  });
}

/** The stanza the load tool would send (ASCII: one byte a character). */
const stanzaFor = (to: number, seq: number, tsText: string) => `<message type='chat' to='user${to}@${domain}/load' id='m${seq}'><body>lt ${tsText}</body></message>`;

/** One sender's messages of a tick as frames in one buffer: header, 8-byte timestamp, stanza. */
function frames(list: { to: number; stanza: string }[], ts: number): Buffer {
  let size = 0;
  for (const m of list) size += HEADER_BYTES + 8 + m.stanza.length;
  const b = Buffer.allocUnsafe(size);
  let off = 0;
  for (const m of list) {
    b.writeUInt32BE(4 + 8 + m.stanza.length, off);
    b.writeUInt32BE(m.to, off + 4);
    b.writeDoubleBE(ts, off + 8);
    b.write(m.stanza, off + 16, 'latin1');
    off += HEADER_BYTES + 8 + m.stanza.length;
  }
  return b;
}

const peers = (await Promise.all(Array.from({ length: users }, (_, i) => connect(i + 1)))).filter((p): p is Peer => p !== undefined);
const ids = peers.map((p) => p.id);

let sent = 0;
let seq = 0;
const sendStart = now();
if (peers.length > 1) {
  const perSecond = rate * peers.length;
  await new Promise<void>((resolve) => {
    const batch = new Map<Peer, { to: number; stanza: string }[]>();
    const tick = () => {
      const due = Math.min(count, Math.floor((perSecond * (now() - sendStart)) / 1000) + 1);
      // One timestamp per tick, as the load tool does.
      const ts = wallNow();
      const tsText = ts.toFixed(3);
      const before = sent;
      while (sent < due) {
        const from = peers[(Math.random() * peers.length) | 0];
        let to = ids[(Math.random() * ids.length) | 0];
        while (to === from.id) to = ids[(Math.random() * ids.length) | 0];
        const m = { to, stanza: stanzaFor(to, ++seq, tsText) };
        const list = batch.get(from);
        if (list) list.push(m);
        else batch.set(from, [m]);
        sent++;
      }
      for (const [p, list] of batch) p.sock.write(frames(list, ts));
      batch.clear();
      rec.sent += sent - before;
      if (sent >= count || now() >= deadline) {
        clearInterval(ticker);
        resolve();
      }
    };
    const ticker = setInterval(tick, TICK_MS);
    tick();
  });
}
const windowMs = now() - sendStart;
// Let what is on its way arrive.
const graceEnd = now() + GRACE_MS;
while (now() < graceEnd) {
  flush();
  if (agg.delivered + (agg.errors['message-error:no-such-peer'] ?? 0) >= agg.sent) break;
  await new Promise((r) => setTimeout(r, 20));
}
flush();
clearInterval(statsTimer);
for (const p of peers) p.sock.destroy();
agg.addError('lost', agg.sent - agg.delivered - (agg.errors['message-error:no-such-peer'] ?? 0));
const durationS2 = Math.round(windowMs) / 1000;
const summary = {
  workload: 'chat',
  target: `${o.hostName}:${port}`,
  durationS: durationS2,
  completed: agg.completed,
  failed: agg.failed,
  perSecond: durationS2 > 0 ? Math.round((agg.completed / durationS2) * 10) / 10 : 0,
  latencyMs: agg.latency(),
  errors: agg.errors,
  sent: agg.sent,
  delivered: agg.delivered,
};
if (o.json) console.log(JSON.stringify(summary));
else console.log(summary);
process.exit(agg.completed === 0 || agg.failed > (agg.completed + agg.failed) * 0.01 ? 1 : 0);
