// A real redis-server for one test file: random free port, its own temp
// directory, no persistence unless asked; stopped and restarted on demand.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
// Types only: benchmark scripts use these helpers outside ava.
import type { ExecutionContext, TestFn } from 'ava';
import { Redis } from 'ioredis';

/** A port to give a server that cannot pick its own (redis-server, Prosody): the launcher's, outside the kernel's ephemeral range. */
export { freePort } from '../../cluster/launch.ts';
import { freePort } from '../../cluster/launch.ts';

export class RedisServer {
  readonly port: number;
  readonly dir: string;
  private proc: ChildProcess | undefined;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
  }

  static async start(): Promise<RedisServer> {
    const r = new RedisServer(await freePort(), mkdtempSync(join(tmpdir(), 'xmpp-redis-')));
    await r.resume();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts (again) on the same port; resolves once it accepts commands. */
  async resume(): Promise<void> {
    const proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc = proc;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (/Ready to accept connections/.test(out)) resolve();
      });
      proc.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
    });
    proc.stdout!.resume();
  }

  /** Writes the data to disk, so that the next resume() starts with it (as a Redis with persistence does). */
  async save(): Promise<void> {
    const c = new Redis(this.url, { maxRetriesPerRequest: 0 });
    try {
      await c.save();
    } finally {
      c.disconnect();
    }
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, commands wait unanswered. */
  signal(sig: 'SIGSTOP' | 'SIGCONT'): void {
    this.proc?.kill(sig);
  }

  /** Stops the server (SIGKILL: no goodbye to clients) and waits for its exit. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await exited;
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The redis-server one test file shares: started before its tests, destroyed after them. */
export function sharedRedisServer(test: TestFn): { readonly url: string; readonly port: number } {
  let server: RedisServer | undefined;
  test.before(async () => {
    server = await RedisServer.start();
  });
  test.after.always(async () => {
    await server?.destroy();
  });
  return {
    get url() {
      return server!.url;
    },
    get port() {
      return server!.port;
    },
  };
}

/** A plain client for looking at what a store wrote; closed at teardown. */
export function inspector(t: ExecutionContext, url: string): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: 0 });
  t.teardown(() => {
    r.disconnect();
  });
  return r;
}

/** One command as MONITOR reports it; `source` is the client's address, or 'lua' inside a script. */
export interface MonitorEntry {
  args: string[];
  source: string;
}

const REPR_ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b', '"': '"', '\\': '\\' };

/** One MONITOR line: `<time> [<db> <source>] "arg" "arg" ...`, arguments quoted as Redis's sdscatrepr does. */
function parseMonitorLine(line: string): MonitorEntry | undefined {
  const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
  if (!m) return undefined;
  const args: string[] = [];
  const rest = m[2];
  for (let i = 0; i < rest.length; ) {
    if (rest[i] !== '"') {
      i++;
      continue;
    }
    let arg = '';
    for (i++; i < rest.length && rest[i] !== '"'; i++) {
      if (rest[i] !== '\\') {
        arg += rest[i];
        continue;
      }
      const e = rest[++i];
      if (e === 'x') {
        arg += String.fromCharCode(parseInt(rest.slice(i + 1, i + 3), 16));
        i += 2;
      } else arg += REPR_ESCAPES[e] ?? e;
    }
    i++;
    args.push(arg);
  }
  return { args, source: m[1] };
}

/**
 * A MONITOR connection: every command Redis executes, in the order it
 * executes them, including those a Lua script runs (source 'lua'). To know
 * that everything a connection sent before some point has been seen, send a
 * mark (`ECHO`) on it and wait for that. (A plain socket: ioredis's monitor
 * mode loses the race between its OK and the first reported commands.)
 */
export class RedisMonitor {
  readonly entries: MonitorEntry[] = [];
  private readonly sock: net.Socket;
  private waiters: (() => void)[] = [];

  private constructor(sock: net.Socket) {
    this.sock = sock;
  }

  static async open(port: number): Promise<RedisMonitor> {
    const sock = net.connect({ port, host: '127.0.0.1' });
    await once(sock, 'connect');
    const mon = new RedisMonitor(sock);
    let pending = '';
    let ok!: () => void;
    const started = new Promise<void>((r) => (ok = r));
    sock.setEncoding('latin1'); // bytes as they are: non-ASCII arrives \x-escaped anyway
    sock.on('data', (d: string) => {
      pending += d;
      let nl: number;
      while ((nl = pending.indexOf('\r\n')) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 2);
        if (line === '+OK') ok();
        const e = line.startsWith('+') ? parseMonitorLine(line.slice(1)) : undefined;
        if (e) mon.entries.push(e);
      }
      for (const w of mon.waiters.splice(0)) w();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      for (const w of mon.waiters.splice(0)) w();
    });
    sock.write('MONITOR\r\n');
    await started;
    return mon;
  }

  /** The index of the first entry from `from` on that satisfies `pred`, once it arrives. */
  async waitFor(pred: (e: MonitorEntry) => boolean, from = 0): Promise<number> {
    for (let i = from; ; ) {
      for (; i < this.entries.length; i++) if (pred(this.entries[i])) return i;
      if (this.sock.destroyed) throw new Error('the MONITOR connection closed');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** Sends `ECHO mark` on `conn` and resolves, with its index, once MONITOR has reported it: all that `conn` sent before is in `entries`. */
  async mark(conn: Redis, mark: string, from = 0): Promise<number> {
    await conn.echo(mark);
    return this.waitFor((e) => e.args[0].toLowerCase() === 'echo' && e.args[1] === mark, from);
  }

  close(): void {
    this.sock.destroy();
  }
}

/** This connection's address as Redis sees it (the `source` of its MONITOR entries). */
export async function clientAddress(conn: Redis): Promise<string> {
  const info = String(await conn.client('INFO'));
  const m = /(?:^|\s)addr=(\S+)/.exec(info);
  if (!m) throw new Error(`no addr in CLIENT INFO: ${info}`);
  return m[1];
}
