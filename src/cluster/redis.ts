// Redis connections for cluster mode. Commands fail fast while Redis is
// unreachable (no offline queue), so a node never blocks on it: it keeps
// serving local sessions and refuses what needs the cluster. Only a start
// waits for Redis (waitForRedis), saying what it waits for.
import { Redis } from 'ioredis';
import type { Command } from 'ioredis';
import { performance } from 'node:perf_hooks';
import { log } from '../log.ts';
import { redisCommand } from '../metrics/metrics.ts';

/** How often a start still waiting for Redis says so. */
export const WAIT_LOG_MS = 5000;

/** Where each connection made here goes, as it may be shown (no password). */
const shown = new WeakMap<Redis, string>();

/** The URL as it may appear in logs and errors: without its password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//');
  }
}

export function connectRedis(url: string, name: string): Redis {
  const r = new Redis(url, {
    connectionName: name,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2000,
    retryStrategy: (times) => Math.min(50 * times, 500),
    lazyConnect: false,
  });
  shown.set(r, redactUrl(url));
  timeCommands(r);
  // Before the first connection, whoever waits for it (waitForRedis) reports.
  let connected = false;
  let down = false;
  r.on('error', (err: Error) => {
    if (connected && !down) log.warn('redis unreachable', { name, err: err.message });
    down = true;
  });
  r.on('ready', () => {
    if (connected && down) log.info('redis reachable again', { name });
    connected = true;
    down = false;
  });
  return r;
}

/**
 * Every command of the connection, timed from when it is sent to its answer
 * or failure, for /metrics: ioredis sends each one through sendCommand
 * (pipelines and transactions too). A command sent again after a
 * reconnection is timed once, from its first sending.
 */
function timeCommands(r: Redis): void {
  const send = r.sendCommand.bind(r) as (command: Command, stream?: unknown) => unknown;
  const timed = new WeakSet<Command>();
  r.sendCommand = ((command: Command, stream?: unknown) => {
    if (timed.has(command)) return send(command, stream);
    timed.add(command);
    const start = performance.now();
    const out = send(command, stream);
    command.promise.then(
      () => redisCommand((performance.now() - start) / 1000, false),
      () => redisCommand((performance.now() - start) / 1000, true),
    );
    return out;
  }) as Redis['sendCommand'];
}

/** Resolves once the connection is ready, however long it takes. */
export function ready(r: Redis): Promise<void> {
  if (r.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => r.once('ready', () => resolve()));
}

export interface WaitOptions {
  /** Give up after this long; 0: never. */
  timeoutMs: number;
  /** Stops waiting (rejecting with the signal's reason), as a signal to the process must. */
  signal?: AbortSignal;
  /** Names what bounds the wait, for the error (the setting an operator would change). */
  bound?: string;
}

/**
 * Resolves when the connection is ready. Meanwhile it logs what it waits for
 * (the URL without password) at the first failure and every WAIT_LOG_MS;
 * rejects after timeoutMs, when the connection ends, or on abort.
 */
export function waitForRedis(redis: Redis, { timeoutMs, signal, bound }: WaitOptions): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  if (signal?.aborted) return Promise.reject(signal.reason as Error);
  const url = shown.get(redis) ?? `${redis.options.host}:${redis.options.port}`;
  const name = redis.options.connectionName;
  const since = Date.now();
  return new Promise((resolve, reject) => {
    let last: Error | undefined;
    const say = () => log.warn('waiting for redis', { url, name, err: last?.message ?? 'no answer yet', waitedMs: Date.now() - since, timeoutMs });
    const onError = (err: Error) => {
      const first = !last;
      last = err;
      if (first) say();
    };
    const onReady = () => {
      done();
      if (last) log.info('redis reachable', { url, name, waitedMs: Date.now() - since });
      resolve();
    };
    const onEnd = () => {
      done();
      reject(new Error(`redis connection to ${url} closed${last ? `: ${last.message}` : ''}`));
    };
    const onAbort = () => {
      done();
      reject(signal!.reason as Error);
    };
    const ticker = setInterval(say, WAIT_LOG_MS);
    const timer = timeoutMs > 0
      ? setTimeout(() => {
        done();
        reject(new Error(`redis not ready within ${timeoutMs} ms at ${url}${bound ? ` (${bound})` : ''}${last ? `: ${last.message}` : ''}`));
      }, timeoutMs)
      : undefined;
    function done() {
      clearInterval(ticker);
      clearTimeout(timer);
      redis.off('error', onError);
      redis.off('ready', onReady);
      redis.off('end', onEnd);
      signal?.removeEventListener('abort', onAbort);
    }
    redis.on('error', onError);
    redis.once('ready', onReady);
    redis.once('end', onEnd);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
