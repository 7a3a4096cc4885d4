// Picks the upload slot store for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (a cluster), otherwise upload.sqlite in the data
// directory.
import type { Config } from '../config/index.ts';
import type { UploadStore } from './store.ts';
import { PostgresUploadStore } from './postgres.ts';
import { SqliteUploadStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export async function openUploadStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions = {}): Promise<UploadStore> {
  if (config.databaseUrl) return PostgresUploadStore.open(config.databaseUrl);
  return SqliteUploadStore.open(storeFile(config.dataDir, 'upload', opts));
}
