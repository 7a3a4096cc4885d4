// The descriptor-flood benchmark still runs, end to end, on a small flood:
// it uses the test helpers outside ava, and nothing else would notice it
// broke. Its figures are not judged here, only that every phase was measured.
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

test('bench/flood.ts floods a server under a low open-file limit and reports each phase', async (t) => {
  const args = ['bench/flood.ts', '--nofile', '256', '--raw', '300', '--pairs', '1', '--before', '1', '--hold', '1', '--after', '1', '--json'];
  const { stdout } = await promisify(execFile)(process.execPath, args, { cwd: ROOT, timeout: 50_000 });
  const r = JSON.parse(stdout) as { survived: boolean; maxConnections: number; phases: Record<string, { messages: { received: number }; logins: { ok: number } }> };
  t.true(r.survived, stdout);
  t.true(r.maxConnections > 0 && r.maxConnections < 256);
  for (const phase of ['before', 'during', 'after']) t.true(r.phases[phase].messages.received > 0, `${phase}: ${stdout}`);
  t.true(r.phases.after.logins.ok > 0, stdout);
});
