// Picks the blocklist store for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (a cluster), otherwise blocklist.sqlite in the
// data directory.
import type { Config } from '../config/index.ts';
import type { BlockStore } from './store.ts';
import { PostgresBlockStore } from './postgres.ts';
import { SqliteBlockStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export async function openBlockStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions = {}): Promise<BlockStore> {
  if (config.databaseUrl) return PostgresBlockStore.open(config.databaseUrl);
  return SqliteBlockStore.open(storeFile(config.dataDir, 'blocklist', opts));
}
