// Picks the account store for this configuration: Redis in cluster mode
// (XMPP_REDIS_URL set), so every node sees the same accounts; otherwise the
// embedded SQLite file in the data directory.
import { join } from 'node:path';
import type { Config } from '../config/index.ts';
import type { AccountStore } from './store.ts';
import { SqliteAccountStore } from './sqlite.ts';
import { RedisAccountStore } from './redis.ts';
import { requireDatabase } from '../storage/sqlite.ts';

export type AccountStoreConfig = Pick<Config, 'redisUrl' | 'dataDir' | 'scramIterations'> & Partial<Pick<Config, 'nodeId' | 'redisStartupTimeoutMs'>>;

export interface OpenOptions {
  /** Only open a store that exists (StoreMissingError otherwise): the CLI must not create one the server never reads. */
  existing?: boolean;
}

/** The SQLite file of a single node's accounts. */
export function accountDatabase(config: Pick<Config, 'dataDir'>): string {
  return join(config.dataDir, 'accounts.sqlite');
}

/** Rejects when Redis is configured but does not answer within redisStartupTimeoutMs (default 10 s). */
export async function openAccountStore(config: AccountStoreConfig, { existing = false }: OpenOptions = {}): Promise<AccountStore> {
  if (config.redisUrl) {
    return RedisAccountStore.open(config.redisUrl, config.scramIterations, {
      name: config.nodeId ? `${config.nodeId}:accounts` : 'accounts',
      connectTimeoutMs: config.redisStartupTimeoutMs,
    });
  }
  const file = accountDatabase(config);
  if (existing) requireDatabase(file);
  return SqliteAccountStore.open(file, config.scramIterations);
}
