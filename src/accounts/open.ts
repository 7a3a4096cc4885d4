// Picks the account store for this configuration: Redis in cluster mode
// (XMPP_REDIS_URL set), so every node sees the same accounts; otherwise the
// embedded SQLite file in the data directory.
import type { Config } from '../config/index.ts';
import { PostgresAccountStore } from './postgres.ts';
import type { AccountStore } from './store.ts';
import { SqliteAccountStore } from './sqlite.ts';
import { RedisAccountStore } from './redis.ts';
import { storeFile, type OpenOptions } from '../storage/sqlite.ts';

export type AccountStoreConfig = Pick<Config, 'redisUrl' | 'dataDir' | 'scramIterations'> & Partial<Pick<Config, 'nodeId' | 'redisStartupTimeoutMs' | 'databaseUrl'>>;

/** Rejects when Redis is configured but does not answer within redisStartupTimeoutMs (default 10 s). */
export async function openAccountStore(config: AccountStoreConfig, opts: OpenOptions = {}): Promise<AccountStore> {
  // PostgreSQL when configured (XMPP_DATABASE_URL), whatever else is.
  if (config.databaseUrl) return PostgresAccountStore.open(config.databaseUrl, config.scramIterations);
  if (config.redisUrl) {
    return RedisAccountStore.open(config.redisUrl, config.scramIterations, {
      name: config.nodeId ? `${config.nodeId}:accounts` : 'accounts',
      connectTimeoutMs: config.redisStartupTimeoutMs,
    });
  }
  return SqliteAccountStore.open(storeFile(config.dataDir, 'accounts', opts), config.scramIterations);
}
