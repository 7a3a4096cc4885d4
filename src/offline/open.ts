// Picks the offline message store for this configuration: Redis in cluster
// mode (XMPP_REDIS_URL set), so a message stored through one node reaches the
// user on any node; otherwise offline.sqlite in the data directory.
import { join } from 'node:path';
import type { Config } from '../config/index.ts';
import type { OfflineStore } from './store.ts';
import { SqliteOfflineStore } from './sqlite.ts';
import { RedisOfflineStore } from './redis.ts';
import { requireDatabase } from '../storage/sqlite.ts';
import type { OpenOptions } from '../accounts/open.ts';

export type OfflineStoreConfig = Pick<Config, 'redisUrl' | 'dataDir'> & Partial<Pick<Config, 'nodeId' | 'redisStartupTimeoutMs'>>;

/** Rejects when Redis is configured but does not answer within redisStartupTimeoutMs (default 10 s). */
export async function openOfflineStore(config: OfflineStoreConfig, { existing = false }: OpenOptions = {}): Promise<OfflineStore> {
  if (config.redisUrl) {
    return RedisOfflineStore.open(config.redisUrl, {
      name: config.nodeId ? `${config.nodeId}:offline` : 'offline',
      connectTimeoutMs: config.redisStartupTimeoutMs,
    });
  }
  const file = join(config.dataDir, 'offline.sqlite');
  if (existing) requireDatabase(file);
  return SqliteOfflineStore.open(file);
}
