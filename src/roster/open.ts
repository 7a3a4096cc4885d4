// Picks the roster store for this configuration, as for accounts: PostgreSQL
// when XMPP_DATABASE_URL is set (which a cluster requires, so that every node
// sees the same rosters); otherwise roster.sqlite in the data directory.
import type { Config } from '../config/index.ts';
import { PostgresRosterStore } from './postgres.ts';
import type { RosterStore } from './store.ts';
import { SqliteRosterStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export type RosterStoreConfig = Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>;

export async function openRosterStore(config: RosterStoreConfig, opts: OpenOptions = {}): Promise<RosterStore> {
  if (config.databaseUrl) return PostgresRosterStore.open(config.databaseUrl);
  return SqliteRosterStore.open(storeFile(config.dataDir, 'roster', opts));
}
