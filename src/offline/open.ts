// Picks the offline message store for this configuration: Redis in cluster
// mode (XMPP_REDIS_URL set), so a message stored through one node reaches the
// user on any node; otherwise offline.sqlite in the data directory.
import type { Config } from '../config/index.ts';
import { PostgresOfflineStore } from './postgres.ts';
import type { OfflineStore } from './store.ts';
import { SqliteOfflineStore } from './sqlite.ts';
import { RedisOfflineStore } from './redis.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export type OfflineStoreConfig = Pick<Config, 'redisUrl' | 'dataDir'> & Partial<Pick<Config, 'nodeId' | 'redisStartupTimeoutMs' | 'databaseUrl'>>;

/** Rejects when Redis is configured but does not answer within redisStartupTimeoutMs (default 10 s). */
export async function openOfflineStore(config: OfflineStoreConfig, opts: OpenOptions = {}): Promise<OfflineStore> {
  // PostgreSQL when configured (XMPP_DATABASE_URL), whatever else is.
  if (config.databaseUrl) return PostgresOfflineStore.open(config.databaseUrl);
  if (config.redisUrl) {
    return RedisOfflineStore.open(config.redisUrl, {
      name: config.nodeId ? `${config.nodeId}:offline` : 'offline',
      connectTimeoutMs: config.redisStartupTimeoutMs,
    });
  }
  return SqliteOfflineStore.open(storeFile(config.dataDir, 'offline', opts));
}
