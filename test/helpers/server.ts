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

export interface TestServer extends RunningServer {
  config: Config;
  addUser(name: string, password: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-test-'));
  const config = loadConfig({
    XMPP_DOMAIN: 'localhost',
    XMPP_C2S_PORT: '0',
    XMPP_TLS_PORT: '0',
    XMPP_DATA_DIR: dataDir,
    XMPP_WORKERS: '2',
    XMPP_LOG_LEVEL: 'warn',
    ...env,
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
