// The server of a benchmark, with its accounts written straight into the
// store before it starts (no registration to time or to allow).
import { join } from 'node:path';
import { SqliteAccountStore } from '../src/accounts/sqlite.ts';
import { NodeProcess } from '../test/helpers/cluster.ts';
import { stopAtExit, tempDir } from './lib.ts';

/** Creates the accounts in the SQLite store of `dataDir` (made if it is not there), all with one password. */
export async function createAccounts(dataDir: string, users: string[], password: string): Promise<void> {
  const store = SqliteAccountStore.open(join(dataDir, 'accounts.sqlite'), 4096);
  for (const u of users) await store.create(u, password);
  store.close();
}

/**
 * NodeProcess.start with these accounts. The data directory is made here,
 * since the accounts go into it before the server starts (NodeProcess
 * makes its own in start()); it is removed when this process exits, and
 * the server killed if it still runs then (see stopAtExit).
 */
export async function startWithAccounts(name: string, users: string[], password: string, env: Record<string, string>): Promise<NodeProcess> {
  const dataDir = tempDir(`xmpp-${name}-`);
  await createAccounts(dataDir, users, password);
  const server = await NodeProcess.start(name, { XMPP_DATA_DIR: dataDir, ...env });
  stopAtExit(server);
  return server;
}
