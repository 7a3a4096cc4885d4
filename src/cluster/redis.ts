// Redis connections for cluster mode. Commands fail fast while Redis is
// unreachable (no offline queue), so a node never blocks on it: it keeps
// serving local sessions and refuses what needs the cluster.
import { Redis } from 'ioredis';
import { log } from '../log.ts';

export function connectRedis(url: string, name: string): Redis {
  const r = new Redis(url, {
    connectionName: name,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2000,
    retryStrategy: (times) => Math.min(50 * times, 500),
    lazyConnect: false,
  });
  let down = false;
  r.on('error', (err: Error) => {
    if (!down) log.warn('redis unreachable', { name, err: err.message });
    down = true;
  });
  r.on('ready', () => {
    if (down) log.info('redis reachable again', { name });
    down = false;
  });
  return r;
}

/** Resolves once the connection is ready (used at start, where waiting is right). */
export function ready(r: Redis): Promise<void> {
  if (r.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => r.once('ready', () => resolve()));
}
