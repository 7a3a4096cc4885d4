// Starts a real server (acceptor + piscina workers) on free ports with a
// fresh data directory, for one test file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/index.ts';
import type { Config } from '../../src/config/index.ts';
import { startServer } from '../../src/acceptor/server.ts';
import type { RunningServer } from '../../src/acceptor/server.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import type { RawClient } from './raw.ts';
import { online } from './protocol.ts';

export interface TestServer extends RunningServer {
  config: Config;
  addUser(name: string, password: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  // A data directory of the test's own (prepared before the start) is used, and removed with the server.
  const dataDir = env.XMPP_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'xmpp-test-'));
  const config = loadConfig({
    XMPP_DOMAIN: 'localhost',
    XMPP_C2S_PORT: '0',
    XMPP_TLS_PORT: '0',
    // Federation is for the tests that say so (test/s2s): elsewhere other domains get remote-server-not-found at once.
    XMPP_S2S: 'false',
    XMPP_S2S_PORT: '0',
    XMPP_WORKERS: '2',
    XMPP_LOG_LEVEL: 'warn',
    ...env,
    XMPP_DATA_DIR: dataDir,
  });
  const server = await startServer(config);
  return {
    ...server,
    config,
    async addUser(name, password) {
      const store = SqliteAccountStore.open(join(dataDir, 'accounts.sqlite'), config.scramIterations);
      try {
        await store.create(name, password);
      } finally {
        store.close();
      }
    },
    async stop() {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A logged-in client of a test server. */
export interface Online {
  c: RawClient;
  jid: string;
}

/**
 * A server for a file's tests with these accounts (password `<name>-pw`)
 * and two bystanders logged in throughout, `watcher` and `talker`, for
 * othersUnaffected; `stop()` ends them all.
 */
export async function startWithBystanders(env: Record<string, string>, users: string[]): Promise<{ server: TestServer; watcher: Online; talker: Online; stop: () => Promise<void> }> {
  const server = await startTestServer(env);
  for (const u of [...users, 'watcher', 'talker']) await server.addUser(u, `${u}-pw`);
  const watcher = await online(server.c2sPort, 'watcher', 'watcher-pw', 'w');
  const talker = await online(server.c2sPort, 'talker', 'talker-pw', 't');
  return {
    server,
    watcher,
    talker,
    async stop() {
      watcher.c.destroy();
      talker.c.destroy();
      await server.stop();
    },
  };
}
