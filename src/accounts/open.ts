// Picks the account store for this configuration: Redis in cluster mode
// (XMPP_REDIS_URL set), so every node sees the same accounts; otherwise the
// embedded SQLite file in the data directory.
import { join } from 'node:path';
import type { Config } from '../config/index.ts';
import type { AccountStore } from './store.ts';
import { SqliteAccountStore } from './sqlite.ts';
import { RedisAccountStore } from './redis.ts';

export type AccountStoreConfig = Pick<Config, 'redisUrl' | 'dataDir' | 'scramIterations'> & Partial<Pick<Config, 'nodeId' | 'redisStartupTimeoutMs'>>;

/** Rejects when Redis is configured but does not answer within redisStartupTimeoutMs (default 10 s). */
export async function openAccountStore(config: AccountStoreConfig): Promise<AccountStore> {
  if (config.redisUrl) {
    return RedisAccountStore.open(config.redisUrl, config.scramIterations, {
      name: config.nodeId ? `${config.nodeId}:accounts` : 'accounts',
      connectTimeoutMs: config.redisStartupTimeoutMs,
    });
  }
  return SqliteAccountStore.open(join(config.dataDir, 'accounts.sqlite'), config.scramIterations);
}
