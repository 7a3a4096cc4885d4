// Runs the load tool as a child process (`node src/main.ts load ...`), as a
// person would, and parses its --json summary.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
