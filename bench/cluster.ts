// Message latency and throughput on each routing path, and Redis round trips
// per login (the accounts are in PostgreSQL, as in any cluster). Prints
// figures; it asserts nothing.
//
//   npx node bench/cluster.ts [messages=20000] [--archive on|off]
//
// --archive: the message archive (XEP-0313, XMPP_MAM) on every node (the
// default, as the server's), or off: what archiving both sides of every
// message costs (SQLite on the single node, PostgreSQL in the cluster).
//
// Paths: same worker, two workers of one node (MessagePort), two nodes
// (Redis pub/sub). Each server is real: separate processes on loopback.
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { RedisServer } from '../test/helpers/redis.ts';
import { PostgresServer } from '../test/helpers/postgres.ts';
import { NodeProcess } from '../test/helpers/cluster.ts';
import { login } from '../test/helpers/raw.ts';
import type { RawClient } from '../test/helpers/raw.ts';
import { PostgresAccountStore } from '../src/accounts/postgres.ts';
import { SqliteAccountStore } from '../src/accounts/sqlite.ts';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { atExit, pct, socketOf, stopAtExit, tempDir } from './lib.ts';

const { values: flags, positionals } = parseArgs({ allowPositionals: true, options: { archive: { type: 'string', default: 'on' } } });
const N = Number(positionals[0] ?? 20000);
if (flags.archive !== 'on' && flags.archive !== 'off') throw new Error('--archive is on or off');

/**
 * Sends `count` messages from a to b and measures delivery. `window` bounds
 * the messages in flight: 1 measures latency alone, a large one throughput.
 */
async function run(a: RawClient, b: RawClient, to: string, count: number, window: number): Promise<{ perSec: number; p50: number; p99: number; max: number }> {
  const sa = socketOf(a);
  const sb = socketOf(b);
  sa.setNoDelay(true);
  let wake: (() => void) | undefined;
  sb.removeAllListeners('data');
  const lat: number[] = [];
  let pending = '';
  let received = 0;
  const done = new Promise<void>((resolve) => {
    sb.on('data', (d: string) => {
      pending += d;
      let end: number;
      while ((end = pending.indexOf('</message>')) !== -1) {
        const m = /<body>t(\d+\.\d+)<\/body>/.exec(pending.slice(0, end));
        if (m) lat.push(performance.now() - Number(m[1]));
        pending = pending.slice(end + 10);
        if (++received === count) resolve();
        wake?.();
      }
    });
  });
  const start = performance.now();
  for (let sent = 0; sent < count; ) {
    let chunk = '';
    while (sent - received < window && sent < count) {
      chunk += `<message to='${to}' type='chat'><body>t${performance.now().toFixed(3)}</body></message>`;
      sent++;
    }
    if (chunk && !sa.write(chunk)) await new Promise((r) => sa.once('drain', r));
    if (sent - received >= window) await new Promise<void>((r) => (wake = r));
  }
  await done;
  const secs = (performance.now() - start) / 1000;
  lat.sort((x, y) => x - y);
  return { perSec: Math.round(count / secs), p50: pct(lat, 50), p99: pct(lat, 99), max: lat[lat.length - 1] };
}

async function measure(label: string, a: RawClient, b: RawClient, to: string): Promise<void> {
  await run(a, b, to, 2000, 100); // warm-up
  const thr = await run(a, b, to, N, 1000);
  const lat = await run(a, b, to, 2000, 1);
  console.log(`${label.padEnd(40)} ${String(thr.perSec).padStart(7)} msg/s (p99 ${thr.p99.toFixed(1)} ms with 1000 in flight)   one at a time: p50 ${lat.p50.toFixed(3)} ms, p99 ${lat.p99.toFixed(3)} ms`);
}

const [redis, postgres] = await Promise.all([RedisServer.start(), PostgresServer.start()]);
// On a failure the finally below may not run (an uncaught 'error' event, a
// signal): then these do. stop() and destroy() signal at once; their waits
// cannot end in an exit handler, so the directories are removed here.
atExit(() => {
  void redis.stop();
  void postgres.destroy();
  rmSync(redis.dir, { recursive: true, force: true });
  rmSync(postgres.dir, { recursive: true, force: true });
});
const databaseUrl = await postgres.createDatabase('bench');
const common = { XMPP_READ_RATE_BYTES: '0', XMPP_MAM: flags.archive === 'on' ? 'true' : 'false' };
const singleDir = tempDir('xmpp-bench-cluster-');
const single = await NodeProcess.start('single', { ...common, XMPP_WORKERS: '2', XMPP_DATA_DIR: singleDir });
const c1 = await NodeProcess.start('c1', { ...common, XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: databaseUrl });
const c2 = await NodeProcess.start('c2', { ...common, XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: databaseUrl });
for (const node of [single, c1, c2]) stopAtExit(node);
try {
  const accounts = await PostgresAccountStore.open(databaseUrl, 4096);
  for (const u of ['a', 'b', 'c']) await accounts.create(u, 'pw');
  await accounts.close();
  const local = SqliteAccountStore.open(join(singleDir, 'accounts.sqlite'), 4096);
  for (const u of ['a', 'b', 'c']) await local.create(u, 'pw');
  local.close();

  console.log(`node ${process.version}, ${N} messages per throughput run, 1 worker per cluster node, message archive ${flags.archive}`);
  // Single node, 2 workers: the least busy worker takes each connection.
  const s1 = await login(single.c2sPort, 'a', 'pw', 'x');
  const s2 = await login(single.c2sPort, 'b', 'pw', 'y');
  const s3 = await login(single.c2sPort, 'c', 'pw', 'z');
  // s1 and s3 share a worker when the pool alternates; say which we measured.
  await measure('same node, two workers (MessagePort)', s1.c, s2.c, s2.jid);
  await measure('same node, worker picked by the pool', s1.c, s3.c, s3.jid);

  const x = await login(c1.c2sPort, 'a', 'pw', 'x');
  const y = await login(c1.c2sPort, 'b', 'pw', 'y');
  const z = await login(c2.c2sPort, 'c', 'pw', 'z');
  await measure('cluster, same node (same worker)', x.c, y.c, y.jid);
  await measure('cluster, across nodes (Redis pub/sub)', x.c, z.c, z.jid);

  // Redis round trips of one login (SASL + bind), from the node's connections: the credentials come from PostgreSQL.
  const mon = new Redis(redis.url);
  const admin = new Redis(redis.url);
  const names = new Map<string, string>();
  for (const line of (await admin.client('LIST') as string).split('\n')) {
    const addr = /addr=(\S+)/.exec(line)?.[1];
    const name = /name=(\S*)/.exec(line)?.[1];
    if (addr) names.set(addr, name ?? '');
  }
  const monitor = await mon.monitor();
  const seen: string[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    const name = names.get(source) ?? '';
    if (name.endsWith(':cmd')) seen.push(`${name} ${args[0]}`);
  });
  const l = await login(c1.c2sPort, 'c', 'pw', 'counted');
  await admin.ping();
  await new Promise((r) => setTimeout(r, 200));
  monitor.disconnect();
  console.log(`Redis round trips for one login (bind): ${seen.length} -> ${seen.join(', ')}`);
  l.c.destroy();
  admin.disconnect();
  for (const c of [s1, s2, s3, x, y, z]) c.c.destroy();
} finally {
  await Promise.all([single.stop('SIGKILL'), c1.stop('SIGKILL'), c2.stop('SIGKILL')]);
  await Promise.all([redis.destroy(), postgres.destroy()]);
}
process.exit(0);
