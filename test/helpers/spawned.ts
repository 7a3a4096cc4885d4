// A server run as its own process (`node src/main.ts start`), as in
// production, optionally under an open-file limit (the descriptor tests;
// test/helpers/process.ts serves the other process tests): ports it picks itself (read from its "listening" line, so
// that no other socket can take them in between), a fresh data directory,
// an optional open-file limit, and its JSON log lines read from stderr as
// they come.
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface LogLine {
  level: string;
  msg: string;
  thread: number;
  [field: string]: unknown;
}

export class ServerProcess {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  /** stderr lines that are not JSON (a crash's stack). */
  readonly other: string[] = [];
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  c2sPort = 0;
  tlsPort = 0;
  readonly dataDir: string;
  private waiters: (() => void)[] = [];
  private ended = false;

  private constructor(child: ChildProcess, dataDir: string) {
    this.child = child;
    this.dataDir = dataDir;
    createInterface({ input: child.stderr! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.other.push(line);
      }
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.ended = true;
        this.wake();
        resolve({ code, signal });
      });
    });
  }

  /**
   * Starts a server with these settings (XMPP_ variables of the test's own
   * environment are dropped), under `ulimit -n nofile` when given; resolves
   * once it logs "listening".
   */
  static async start(t: ExecutionContext, env: Record<string, string>, opts: { nofile?: number } = {}): Promise<ServerProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'xmpp-process-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const config = join(dir, 'xmpp.config.json');
    writeFileSync(config, '{}\n');
    const full: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) full[k] = v;
    Object.assign(full, {
      XMPP_CONFIG: config,
      XMPP_DATA_DIR: join(dir, 'data'),
      XMPP_C2S_PORT: '0',
      XMPP_TLS_PORT: '0',
      XMPP_WORKERS: '2',
      XMPP_LOG_LEVEL: 'info',
      ...env,
    });
    // `ulimit -n` (POSIX sh) sets the soft and hard limits, which the server
    // cannot raise again; exec leaves node as the process the test watches.
    const args = ['src/main.ts', 'start'];
    const child = opts.nofile === undefined
      ? spawn(process.execPath, args, { cwd: ROOT, env: full, stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn('/bin/sh', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, ...args], { cwd: ROOT, env: full, stdio: ['ignore', 'ignore', 'pipe'] });
    const server = new ServerProcess(child, join(dir, 'data'));
    t.teardown(() => server.kill());
    const listening = await server.waitForLog((l) => l.msg === 'listening');
    server.c2sPort = listening.c2sPort as number;
    server.tlsPort = listening.tlsPort as number;
    return server;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get running(): boolean {
    return !this.ended;
  }

  /** The first log line from index `from` on that matches; fails if the process ends first. */
  async waitForLog(pred: (l: LogLine) => boolean, from = 0): Promise<LogLine> {
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

  /** Creates an account in the server's SQLite store (it may be running). */
  async addUser(name: string, password: string): Promise<void> {
    const store = SqliteAccountStore.open(join(this.dataDir, 'accounts.sqlite'), 4096);
    try {
      await store.create(name, password);
    } finally {
      store.close();
    }
  }

  /** Its last log lines, and on Linux how many descriptors it holds. */
  transcript(): string {
    let fds = '';
    try {
      fds = `(${readdirSync(`/proc/${this.child.pid}/fd`).length} open descriptors now)\n`;
    } catch {
      // not Linux, or gone
    }
    return fds + [...this.other, ...this.logs.slice(-200).map((l) => JSON.stringify(l))].join('\n');
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}
