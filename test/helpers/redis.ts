// A real redis-server for one test file: random free port, its own temp
// directory, no persistence unless asked; stopped and restarted on demand.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as net.AddressInfo;
  srv.close();
  await once(srv, 'close');
  return port;
}

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
export function sharedRedisServer(): { readonly url: string; readonly port: number } {
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
