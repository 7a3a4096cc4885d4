// Federation throughput: messages per second and latency across one
// server-to-server connection between two of our servers on loopback, next
// to the same between two Prosody servers (Debian's package) on the same
// machine. Each pair: a.bench and b.bench, each on its own loopback address
// (port 5269, found through XMPP_S2S_HOSTS or Prosody's hosts file), with
// certificates from one test CA both trust (so the streams use TLS and SASL
// EXTERNAL, as between two public servers). The load tool's chat workload
// with --remote-domain logs every user in on both servers and sends each
// message from a.bench to a user of b.bench, at each rate of --rates
// (messages per second in all); latency is from send to delivery.
//
//   node bench/s2s.ts [--users 50] [--rates 1000,2000,4000,8000] [--seconds 10] [--servers ours,prosody] [--workers 1]
import { parseArgs } from 'node:util';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { testCa, issue } from '../test/helpers/pki.ts';
import { loopbackAddresses } from '../test/helpers/s2s.ts';
import { startProsody } from '../test/helpers/prosody.ts';
import { SqliteAccountStore } from '../src/accounts/sqlite.ts';

const ROOT = join(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '50' },
    rates: { type: 'string', default: '1000,2000,4000,8000' },
    seconds: { type: 'string', default: '10' },
    servers: { type: 'string', default: 'ours,prosody' },
    workers: { type: 'string', default: '1' },
  },
});
const USERS = Number(values.users);
const RATES = values.rates.split(',').map(Number);
const SECONDS = Number(values.seconds);
const PASSWORD = 'password';

interface Pair {
  name: string;
  /** Client ports of a.bench and b.bench on 127.0.0.1. */
  a: number;
  b: number;
  stop(): Promise<void>;
}

const dir = mkdtempSync(join(tmpdir(), 'xmpp-bench-s2s-'));
// An empty config file: neither the repository's xmpp.config.json nor the caller's XMPP_ variables change what is measured.
writeFileSync(join(dir, 'none.json'), '{}\n');
const ca = testCa(dir, 'bench-ca');
const certs = { a: issue(dir, ca, 'a.bench', { dns: ['a.bench'] }), b: issue(dir, ca, 'b.bench', { dns: ['b.bench'] }) };

/** One of our servers as its own process (`node src/main.ts start`), its accounts created first. */
async function ourServer(domain: 'a' | 'b', address: string, hosts: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const data = join(dir, `ours-${domain}`);
  mkdirSync(data, { recursive: true });
  const store = SqliteAccountStore.open(join(data, 'accounts.sqlite'), 4096);
  for (let i = 1; i <= USERS; i++) await store.create(`user${i}`, PASSWORD);
  store.close();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) env[k] = v;
  Object.assign(env, {
    XMPP_CONFIG: join(dir, 'none.json'),
    XMPP_DOMAIN: `${domain}.bench`,
    XMPP_DATA_DIR: data,
    XMPP_C2S_PORT: '0',
    XMPP_TLS_PORT: '0',
    XMPP_S2S_PORT: '5269',
    XMPP_S2S_BIND_HOST: address,
    XMPP_S2S_HOSTS: hosts,
    XMPP_TLS_CERT: certs[domain].cert,
    XMPP_TLS_KEY: certs[domain].key,
    XMPP_TLS_CA: ca.cert,
    XMPP_WORKERS: values.workers,
    // info: the "listening" line says the port (and the log is read, not kept).
    XMPP_LOG_LEVEL: 'info',
    // The load tool sends as fast as asked; the read-rate shaper is per connection and not what is measured.
    XMPP_READ_RATE_BYTES: '0',
  });
  const child = spawn(process.execPath, [join(ROOT, 'src/main.ts'), 'start'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; c2sPort?: number };
        if (rec.msg === 'listening') resolve(rec.c2sPort!);
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => reject(new Error(`our ${domain}.bench exited (${code}) before listening`)));
  });
  return {
    port,
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

async function ours(): Promise<Pair> {
  const [aAddr, bAddr] = loopbackAddresses(2);
  const hosts = `a.bench=${aAddr}:5269,b.bench=${bAddr}:5269`;
  const a = await ourServer('a', aAddr, hosts);
  const b = await ourServer('b', bAddr, hosts);
  return { name: 'ours → ours', a: a.port, b: b.port, stop: async () => void (await Promise.all([a.stop(), b.stop()])) };
}

async function prosody(): Promise<Pair> {
  const [aAddr, bAddr] = loopbackAddresses(2);
  const users = Object.fromEntries(Array.from({ length: USERS }, (_, i) => [`user${i + 1}`, PASSWORD]));
  const hosts = { 'a.bench': aAddr, 'b.bench': bAddr };
  const a = await startProsody({ dir: join(dir, 'prosody-a'), address: aAddr, hosts, cafile: ca.cert, vhosts: [{ domain: 'a.bench', cert: certs.a, secureAuth: true, users }], logLevel: 'warn' });
  const b = await startProsody({ dir: join(dir, 'prosody-b'), address: bAddr, hosts, cafile: ca.cert, vhosts: [{ domain: 'b.bench', cert: certs.b, secureAuth: true, users }], logLevel: 'warn' });
  return { name: 'prosody → prosody', a: a.c2sPort, b: b.c2sPort, stop: async () => void (await Promise.all([a.stop(), b.stop()])) };
}

interface Summary {
  completed: number;
  failed: number;
  perSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
  errors: Record<string, number>;
}

/** One step of the load tool: `rate` messages per second in all, for SECONDS. */
function step(p: Pair, rate: number): Summary {
  // Exit code 1 is a run with more than 1% failed (a saturated pair): its summary is the figure.
  const { stdout: out } = spawnSync(
    process.execPath,
    [join(ROOT, 'src/main.ts'), 'load', 'chat', '--port', String(p.a), '--domain', 'a.bench', '--remote-domain', 'b.bench', '--remote-port', String(p.b),
      '--users', String(USERS), '--rate', String(rate / USERS), '--count', String(rate * SECONDS), '--duration', String(SECONDS + 20), '--timeout', '20', '--json', '--quiet'],
    { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
  );
  const last = out.trim().split('\n').pop();
  if (!last) throw new Error(`the load tool printed no summary at ${rate} msg/s`);
  return JSON.parse(last) as Summary;
}

const which = (cmd: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

const rows: string[] = [];
try {
  for (const kind of values.servers.split(',')) {
    if (kind === 'prosody' && !which('prosody')) {
      console.error('prosody is not installed (apt-get install prosody): skipped');
      continue;
    }
    const pair = kind === 'ours' ? await ours() : await prosody();
    try {
      // A first small step sets up the streams (TLS, EXTERNAL) so that the measured ones do not include it.
      step(pair, 100);
      for (const rate of RATES) {
        const s = step(pair, rate);
        const lost = s.errors ? Object.entries(s.errors).map(([k, v]) => `${k}:${v}`).join(' ') : '';
        rows.push(`| ${pair.name} | ${rate} | ${s.perSecond.toFixed(0)} | ${s.latencyMs.p50.toFixed(1)} | ${s.latencyMs.p99.toFixed(1)} | ${s.completed} | ${s.failed}${lost ? ` (${lost})` : ''} |`);
        // Past saturation the next steps only say the same, slower.
        if (s.failed > s.completed / 100) break;
        console.error(rows.at(-1));
      }
    } finally {
      await pair.stop();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${USERS} users on each side, ${SECONDS} s per step, one s2s connection each way\n`);
console.log("| pair | offered msg/s | delivered msg/s | p50 ms | p99 ms | delivered | failed ('lost': not delivered by the end of the step) |");
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
