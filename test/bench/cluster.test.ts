// The routing benchmark still runs, end to end, on a few messages: it uses
// the test helpers outside ava, and nothing else would notice it broke.
// Its figures are not judged here, only that each path delivered.
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

test('bench/cluster.ts measures every routing path and counts the Redis commands of a login', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['bench/cluster.ts', '300'], { cwd: ROOT, timeout: 50_000 });
  const paths = [...stdout.matchAll(/^(.+?)\s+(\d+) msg\/s .* one at a time: p50 ([\d.]+) ms/gm)].map((m) => m[1].trim());
  t.deepEqual(paths, ['same node, two workers (MessagePort)', 'same node, worker picked by the pool', 'cluster, same node (same worker)', 'cluster, across nodes (Redis pub/sub)'], stdout);
  // The credentials come from PostgreSQL: one script to bind.
  t.regex(stdout, /^Redis round trips for one login \(bind\): 1 -> \S+:cmd evalsha$/m);
});
