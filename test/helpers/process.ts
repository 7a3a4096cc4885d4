// A server process as a user runs it, driven from outside through ports,
// logs and signals: fresh data directory and free ports, the JSON log lines
// it writes on stderr, its end.
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
// Bounds on waits for events that should come quickly; they turn a hang
// into a failure with a message, they are never waited out on success.
export const START_MS = 30_000;
export const STEP_MS = 15_000;
// The same bound as the protocol tests' (one implementation).
export { within } from './protocol.ts';

export interface Env {
  dir: string;
  env: NodeJS.ProcessEnv;
}

/**
 * A fresh data directory, and ports the server picks itself when it listens
 * (its "listening" line tells them: see ServerProcess.c2sPort): a port
 * picked beforehand is free until the server binds it, and another test may
 * take it meanwhile. The inherited environment is kept (PATH, npm's
 * variables) but every XMPP_ variable is dropped and an empty config file is
 * named, so that neither the developer's shell nor an xmpp.config.json in
 * the repository changes what is tested.
 */
export async function environment(t: ExecutionContext): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-process-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The default is one worker per CPU; two keep the test light on big machines.
  return { dir, env: serverEnv(dir, { XMPP_WORKERS: '2' }) };
}

/**
 * The environment of a server process whose files are in `dir` (an empty
 * config file there, data in dir/data, ports of its own choosing, info
 * level): the caller's without its XMPP_ variables, then `settings`.
 */
export function serverEnv(dir: string, settings: Record<string, string> = {}): NodeJS.ProcessEnv {
  const config = join(dir, 'xmpp.config.json');
  writeFileSync(config, '{}\n');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) env[k] = v;
  return Object.assign(env, {
    XMPP_CONFIG: config,
    XMPP_DATA_DIR: join(dir, 'data'),
    XMPP_C2S_PORT: '0',
    XMPP_TLS_PORT: '0',
    XMPP_S2S_PORT: '0',
    XMPP_LOG_LEVEL: 'info',
    ...settings,
  });
}

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** A spawned server: its JSON log lines from stderr, and its end. */
export class ServerProcess {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  /** stderr lines that are not JSON (npm's warnings, a crash's stack). */
  readonly other: string[] = [];
  /** Settles once the process has exited and every holder of its pipes has too. */
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: (() => void)[] = [];
  private ended = false;

  constructor(command: string, args: string[], env: NodeJS.ProcessEnv, cwd = ROOT) {
    // Its own process group, so that a signal can reach npm, the shell it
    // runs the script with, and node, as Ctrl-C in a terminal does.
    this.child = spawn(command, args, { cwd, env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    createInterface({ input: this.child.stderr! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.other.push(line);
      }
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.ended = true;
        this.wake();
        resolve({ code, signal });
      });
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get running(): boolean {
    return !this.ended;
  }

  /** The port it listens on for STARTTLS, from its "listening" line (wait for that first). */
  get c2sPort(): number {
    return this.listening('c2sPort');
  }

  /** The port it listens on for direct TLS, from its "listening" line. */
  get tlsPort(): number {
    return this.listening('tlsPort');
  }

  private listening(field: 'c2sPort' | 'tlsPort'): number {
    const line = this.logs.find((l) => l.msg === 'listening');
    if (typeof line?.[field] !== 'number') throw new Error(`no "listening" line with ${field} yet`);
    return line[field];
  }

  /** The first log line with this message; fails if the process ends first. */
  async waitForLog(msg: string): Promise<LogLine> {
    return (await this.waitForLogs(msg, 1))[0];
  }

  /** The first log line from index `from` on that matches; fails if the process ends first. */
  async waitForMatch(pred: (l: LogLine) => boolean, from = 0): Promise<LogLine> {
    for (;;) {
      const line = this.logs.slice(from).find(pred);
      if (line) return line;
      if (this.ended) throw new Error(`the server ended before the awaited log line; stderr:\n${this.transcript()}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Resolves once `cond()` holds, checking at each new log line; fails if the process ends first. */
  async waitUntil(cond: () => boolean, what: string): Promise<void> {
    while (!cond()) {
      if (this.ended) throw new Error(`the server ended before ${what}; stderr:\n${this.transcript()}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** The first `n` log lines with this message, once there are that many; fails if the process ends first. */
  async waitForLogs(msg: string, n: number): Promise<LogLine[]> {
    for (;;) {
      const lines = this.logs.filter((l) => l.msg === msg);
      if (lines.length >= n) return lines.slice(0, n);
      if (this.ended) throw new Error(`the server ended before logging "${msg}" ${n} times; stderr:\n${this.transcript()}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Signals the whole process group (npm, sh, node). */
  signalGroup(signal: NodeJS.Signals): void {
    process.kill(-this.child.pid!, signal);
  }

  transcript(): string {
    return [...this.other, ...this.logs.map((l) => JSON.stringify(l))].join('\n');
  }

  /** Leaves nothing behind, whatever the test did. */
  kill(): void {
    if (!this.running) return;
    try {
      process.kill(-this.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export function spawnServer(t: ExecutionContext, command: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): ServerProcess {
  const server = new ServerProcess(command, args, env, cwd);
  t.teardown(() => server.kill());
  return server;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion: exit code and output. */
export function run(command: string, args: string[], env: NodeJS.ProcessEnv, opts: { cwd?: string; stdin?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: opts.cwd ?? ROOT, env, stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    child.stdin?.end(opts.stdin);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

