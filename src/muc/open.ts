// Picks the MUC room store for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (a cluster), otherwise muc.sqlite in the data
// directory.
import type { Config } from '../config/index.ts';
import type { RoomStore } from './store.ts';
import { PostgresRoomStore } from './postgres.ts';
import { SqliteRoomStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export async function openMucStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions = {}): Promise<RoomStore> {
  if (config.databaseUrl) return PostgresRoomStore.open(config.databaseUrl);
  return SqliteRoomStore.open(storeFile(config.dataDir, 'muc', opts));
}
