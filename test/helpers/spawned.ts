// A server run as its own process (`node src/main.ts start`), as in
// production, for the descriptor tests: ports it picks itself (read from its
// "listening" line, so that no other socket can take them in between), a
// fresh data directory, and an optional open-file limit. Its log and end are
// read as for every server process (ServerProcess in process.ts).
import type { ExecutionContext } from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { ServerProcess, environment } from './process.ts';

export type { LogLine } from './process.ts';

export class LimitedServer extends ServerProcess {
  dataDir = '';

  /**
   * Starts a server with these settings (XMPP_ variables of the test's own
   * environment are dropped), under `ulimit -n nofile` when given; resolves
   * once it logs "listening".
   */
  static async start(t: ExecutionContext, settings: Record<string, string>, opts: { nofile?: number } = {}): Promise<LimitedServer> {
    const { env, dir } = await environment(t);
    Object.assign(env, settings);
    // `ulimit -n` (POSIX sh) sets the soft and hard limits, which the server
    // cannot raise again; exec leaves node as the process the test watches.
    const args = ['src/main.ts', 'start'];
    const server = opts.nofile === undefined
      ? new LimitedServer(process.execPath, args, env)
      : new LimitedServer('/bin/sh', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, ...args], env);
    t.teardown(() => server.kill());
    server.dataDir = join(dir, 'data');
    await server.waitForLog('listening');
    return server;
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
  override transcript(): string {
    let fds = '';
    try {
      fds = `(${readdirSync(`/proc/${this.child.pid}/fd`).length} open descriptors now)\n`;
    } catch {
      // not Linux, or gone
    }
    return fds + [...this.other, ...this.logs.slice(-200).map((l) => JSON.stringify(l))].join('\n');
  }
}
