// Picks the message archive for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (a cluster), otherwise archive.sqlite in the
// data directory.
import type { Config } from '../config/index.ts';
import type { ArchiveStore } from './store.ts';
import { PostgresArchiveStore } from './postgres.ts';
import { SqliteArchiveStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export async function openArchiveStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions = {}): Promise<ArchiveStore> {
  if (config.databaseUrl) return PostgresArchiveStore.open(config.databaseUrl);
  return SqliteArchiveStore.open(storeFile(config.dataDir, 'archive', opts));
}
