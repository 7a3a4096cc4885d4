// Runs the load tool as a child process (`node src/main.ts load ...`), as a
// person would, and parses its --json summary.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

export interface LoadRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The summary, when stdout is one JSON object. */
  json: Record<string, unknown> & {
    completed: number;
    failed: number;
    perSecond: number;
    durationS: number;
    latencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
    errors: Record<string, number>;
  };
}

export function runLoad(args: string[]): Promise<LoadRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'load', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => {
      let json = undefined as unknown as LoadRun['json'];
      try {
        json = JSON.parse(stdout);
      } catch {
        // not JSON: left undefined for the test to notice
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

/** A clean run: exit 0, nothing failed, latency figures present and in order. */
export function clean(t: ExecutionContext, r: LoadRun, workload: string): void {
  t.is(r.code, 0, `${r.stderr}\n${r.stdout}`);
  t.truthy(r.json, `stdout is one JSON object: ${r.stdout}`);
  t.is(r.json.workload, workload);
  t.is(r.json.failed, 0, JSON.stringify(r.json.errors));
  t.deepEqual(r.json.errors, {});
  const l = r.json.latencyMs;
  for (const k of ['p50', 'p95', 'p99', 'max', 'mean'] as const) t.is(typeof l[k], 'number', k);
  t.true(l.p50 > 0, `p50 ${l.p50}`);
  t.true(l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max, JSON.stringify(l));
  t.true(r.json.durationS > 0);
  t.true(r.json.perSecond > 0);
}
