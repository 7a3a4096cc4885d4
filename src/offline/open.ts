// Picks the offline message store for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (which a cluster requires, so that a message
// stored through one node reaches the user on any node); otherwise
// offline.sqlite in the data directory.
import type { Config } from '../config/index.ts';
import { PostgresOfflineStore } from './postgres.ts';
import type { OfflineStore } from './store.ts';
import { SqliteOfflineStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export type OfflineStoreConfig = Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>;

export async function openOfflineStore(config: OfflineStoreConfig, opts: OpenOptions = {}): Promise<OfflineStore> {
  if (config.databaseUrl) return PostgresOfflineStore.open(config.databaseUrl);
  return SqliteOfflineStore.open(storeFile(config.dataDir, 'offline', opts));
}
