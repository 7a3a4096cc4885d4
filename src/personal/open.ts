// Picks the personal data store (vCards, private XML) for this
// configuration: PostgreSQL when XMPP_DATABASE_URL is set (a cluster),
// otherwise personal.sqlite in the data directory.
import type { Config } from '../config/index.ts';
import type { PersonalStore } from './store.ts';
import { PostgresPersonalStore } from './postgres.ts';
import { SqlitePersonalStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export async function openPersonalStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions = {}): Promise<PersonalStore> {
  if (config.databaseUrl) return PostgresPersonalStore.open(config.databaseUrl);
  return SqlitePersonalStore.open(storeFile(config.dataDir, 'personal', opts));
}
