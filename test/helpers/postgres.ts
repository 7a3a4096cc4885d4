// A private PostgreSQL for tests (Debian's postgresql package): initdb in a
// temp directory and postgres on a free port of 127.0.0.1, never the
// machine's own server. PostgreSQL refuses to run as root; when the tests
// do (CI), the server runs as the `postgres` user, in a directory it owns.
import { spawn, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import type { TestFn } from 'ava';
import { freePort } from '../../cluster/launch.ts';

/** The directory of Debian's PostgreSQL binaries (the newest installed), or undefined. */
export function postgresBin(): string | undefined {
  try {
    const versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    return versions.length > 0 ? join('/usr/lib/postgresql', versions[0], 'bin') : undefined;
  } catch {
    return undefined;
  }
}

export class PostgresServer {
  readonly port: number;
  readonly dir: string;
  private readonly proc: ChildProcess;
  private readonly exited: Promise<unknown>;

  private constructor(port: number, dir: string, proc: ChildProcess) {
    this.port = port;
    this.dir = dir;
    this.proc = proc;
    this.exited = once(proc, 'exit');
  }

  /** A connection URL for a database of its own (created on demand by `database`). */
  url(database = 'postgres'): string {
    return `postgres://xmpp@127.0.0.1:${this.port}/${database}`;
  }

  static async start(): Promise<PostgresServer> {
    const bin = postgresBin();
    if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
    const dir = mkdtempSync(join(tmpdir(), 'xmpp-postgres-'));
    const data = join(dir, 'data');
    const root = userInfo().uid === 0;
    // As root, everything runs as postgres, which must own the directory.
    const asUser = (cmd: string, args: string[]): [string, string[]] => (root ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
    if (root) {
      const pw = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gr = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      chownSync(dir, pw, gr);
      chmodSync(dir, 0o700);
    }
    const [initCmd, initArgs] = asUser(join(bin, 'initdb'), ['-D', data, '-U', 'xmpp', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
    execFileSync(initCmd, initArgs, { stdio: 'ignore' });
    const port = await freePort();
    // No fsync: a test's database is thrown away; the socket in the temp directory, not /var/run.
    const [cmd, args] = asUser(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-h', '127.0.0.1', '-k', dir, '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200']);
    const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const ready = new Promise<void>((resolve, reject) => {
      proc.stderr!.on('data', (d: Buffer) => {
        log += d.toString();
        if (log.includes('ready to accept connections')) resolve();
      });
      proc.once('exit', (code) => reject(new Error(`postgres exited with ${code}: ${log}`)));
    });
    await ready;
    return new PostgresServer(port, dir, proc);
  }

  /** Creates a database (a fresh one per test file or test). */
  async createDatabase(name: string): Promise<string> {
    const { default: pg } = await import('pg');
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE "${name.replace(/"/g, '')}"`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  async destroy(): Promise<void> {
    this.proc.kill('SIGTERM');
    await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * One private PostgreSQL for a test file, started before its tests and
 * destroyed after them; `database()` gives each test a fresh empty database
 * on it.
 */
export function sharedPostgresServer(test: TestFn): { database(): Promise<string>; readonly server: PostgresServer } {
  let server: PostgresServer | undefined;
  let n = 0;
  test.before(async () => {
    server = await PostgresServer.start();
  });
  test.after.always(async () => {
    await server?.destroy();
  });
  return {
    database: () => server!.createDatabase(`t${++n}_${process.pid}`),
    get server() {
      return server!;
    },
  };
}
