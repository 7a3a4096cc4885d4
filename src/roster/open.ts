// Picks the roster store for this configuration, as for accounts: Redis in
// cluster mode (XMPP_REDIS_URL set), so every node sees the same rosters;
// otherwise roster.sqlite in the data directory.
import type { Config } from '../config/index.ts';
import { PostgresRosterStore } from './postgres.ts';
import type { RosterStore } from './store.ts';
import { SqliteRosterStore } from './sqlite.ts';
import { RedisRosterStore } from './redis.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export type RosterStoreConfig = Pick<Config, 'redisUrl' | 'dataDir'> & Partial<Pick<Config, 'nodeId' | 'redisStartupTimeoutMs' | 'databaseUrl'>>;

/** Rejects when Redis is configured but does not answer within redisStartupTimeoutMs (default 10 s). */
export async function openRosterStore(config: RosterStoreConfig, opts: OpenOptions = {}): Promise<RosterStore> {
  // PostgreSQL when configured (XMPP_DATABASE_URL), whatever else is.
  if (config.databaseUrl) return PostgresRosterStore.open(config.databaseUrl);
  if (config.redisUrl) {
    return RedisRosterStore.open(config.redisUrl, {
      name: config.nodeId ? `${config.nodeId}:roster` : 'roster',
      connectTimeoutMs: config.redisStartupTimeoutMs,
    });
  }
  return SqliteRosterStore.open(storeFile(config.dataDir, 'roster', opts));
}
