// What several benchmarks need alike: cleanups that run however the
// benchmark ends, percentiles of their samples. Only types are imported
// besides node's own modules: a benchmark that measures its own process
// should load nothing more than what it measures.
import { mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type net from 'node:net';
import type { NodeProcess } from '../test/helpers/cluster.ts';
import type { RawClient } from '../test/helpers/raw.ts';

let signalsHandled = false;

/**
 * Runs `fn` when this process exits, however it ends: at the end of the
 * script, at process.exit(), after an uncaught error, on SIGINT, SIGTERM
 * or SIGHUP (made an exit, so that the cleanups run). What is registered
 * last runs first, as cleanups undo in the reverse order of setting up.
 */
export function atExit(fn: () => void): void {
  if (!signalsHandled) {
    signalsHandled = true;
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => process.exit(128 + constants.signals[sig]));
  }
  process.prependListener('exit', fn);
}

/** A fresh directory under the system's temporary directory, removed when this process exits (see atExit). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  atExit(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * If this process exits while the server still runs (the benchmark failed),
 * the server is killed and its directory removed, as stop() does; otherwise
 * it would outlive the benchmark.
 */
export function stopAtExit(server: NodeProcess): void {
  atExit(() => {
    server.proc.kill('SIGKILL');
    rmSync(server.dataDir, { recursive: true, force: true });
  });
}

/** The socket under a test client (its current one: the TLS socket after STARTTLS), to write to or read from directly. */
export function socketOf(c: RawClient): net.Socket {
  return (c as unknown as { sock: net.Socket }).sock;
}

/** The p-th percentile (0 to 100) of `sorted` (ascending): the value at that rank, rounded down; NaN when there are none. */
export function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** The median of `xs`, in any order (of an even count, the upper middle one). */
export function median(xs: number[]): number {
  return pct([...xs].sort((a, b) => a - b), 50);
}
