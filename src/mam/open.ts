// Picks the message archive for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (a cluster), otherwise archive.sqlite in the
// data directory.
import type { Config } from '../config/index.ts';
import type { ArchiveStore } from './store.ts';
import { PostgresArchiveStore } from './postgres.ts';
import { SqliteArchiveStore, type ArchiveOpenOptions } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

/** `fulltext`: the server's XMPP_MAM_FULLTEXT (the index made or dropped); the CLI leaves it out, and the index as it is. */
export async function openArchiveStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions & ArchiveOpenOptions = {}): Promise<ArchiveStore> {
  if (config.databaseUrl) return PostgresArchiveStore.open(config.databaseUrl, { fulltext: opts.fulltext });
  return SqliteArchiveStore.open(storeFile(config.dataDir, 'archive', opts), { fulltext: opts.fulltext });
}
