// Picks the PEP store for this configuration: PostgreSQL when
// XMPP_DATABASE_URL is set (a cluster), otherwise pep.sqlite in the data
// directory.
import type { Config } from '../config/index.ts';
import type { PepStore } from './store.ts';
import { PostgresPepStore } from './postgres.ts';
import { SqlitePepStore } from './sqlite.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export async function openPepStore(config: Pick<Config, 'dataDir'> & Partial<Pick<Config, 'databaseUrl'>>, opts: OpenOptions = {}): Promise<PepStore> {
  if (config.databaseUrl) return PostgresPepStore.open(config.databaseUrl);
  return SqlitePepStore.open(storeFile(config.dataDir, 'pep', opts));
}
