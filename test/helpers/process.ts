// A server run as its own process (`node src/main.ts start`), as in
// production: free ports, a fresh data directory, an optional open-file
// limit, and its JSON log lines read from stderr as they come.
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface LogLine {
  level: string;
  msg: string;
  thread: number;
  [field: string]: unknown;
}

/** Ports free right now: listen on port 0, then close. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen({ port: 0, host: '127.0.0.1' }, () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export class ServerProcess {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  /** stderr lines that are not JSON (a crash's stack). */
  readonly other: string[] = [];
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly c2sPort: number;
  readonly tlsPort: number;
  readonly dataDir: string;
  private waiters: (() => void)[] = [];
  private ended = false;

  private constructor(child: ChildProcess, ports: number[], dataDir: string) {
    this.child = child;
    [this.c2sPort, this.tlsPort] = ports;
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
    const ports = await freePorts(2);
    const full: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) full[k] = v;
    Object.assign(full, {
      XMPP_CONFIG: config,
      XMPP_DATA_DIR: join(dir, 'data'),
      XMPP_C2S_PORT: String(ports[0]),
      XMPP_TLS_PORT: String(ports[1]),
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
    const server = new ServerProcess(child, ports, join(dir, 'data'));
    t.teardown(() => server.kill());
    await server.waitForLog((l) => l.msg === 'listening');
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

  transcript(): string {
    return [...this.other, ...this.logs.slice(-200).map((l) => JSON.stringify(l))].join('\n');
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}
