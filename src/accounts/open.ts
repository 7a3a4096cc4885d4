// Picks the account store for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (which a cluster requires, so that every node sees
// the same accounts); otherwise the embedded SQLite file in the data directory.
import type { Config } from '../config/index.ts';
import { PostgresAccountStore } from './postgres.ts';
import type { AccountStore } from './store.ts';
import { SqliteAccountStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export type AccountStoreConfig = Pick<Config, 'dataDir' | 'scramIterations'> & Partial<Pick<Config, 'databaseUrl'>>;

export async function openAccountStore(config: AccountStoreConfig, opts: OpenOptions = {}): Promise<AccountStore> {
  if (config.databaseUrl) return PostgresAccountStore.open(config.databaseUrl, config.scramIterations);
  return SqliteAccountStore.open(storeFile(config.dataDir, 'accounts', opts), config.scramIterations);
}
