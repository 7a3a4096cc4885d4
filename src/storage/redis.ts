// What the Redis-backed stores (accounts, rosters, offline messages) share:
// Lua scripts run by SHA with a fallback after a SCRIPT FLUSH or a restart,
// waiting for a connection with a deadline, and closing one politely.
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

export interface Lua {
  text: string;
  sha: string;
}

export function lua(text: string): Lua {
  return { text, sha: createHash('sha1').update(text).digest('hex') };
}

/** EVALSHA, and EVAL when Redis no longer has the script (NOSCRIPT). */
export async function runScript(redis: Redis, script: Lua, keys: string[], args: (string | Buffer | number)[]): Promise<unknown> {
  try {
    return await redis.evalsha(script.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!/^NOSCRIPT/.test((err as Error).message)) throw err;
    return redis.eval(script.text, keys.length, ...keys, ...args);
  }
}

/** Resolves when the client is ready; rejects after timeoutMs or when it gives up. */
export function whenReady(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    let last: Error | undefined;
    const onError = (err: Error) => { last = err; };
    const onReady = () => { done(); resolve(); };
    const onEnd = () => { done(); reject(new Error(`redis connection closed${last ? `: ${last.message}` : ''}`)); };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`redis not ready within ${timeoutMs} ms${last ? `: ${last.message}` : ''}`));
    }, timeoutMs);
    function done() {
      clearTimeout(timer);
      redis.off('error', onError);
      redis.off('ready', onReady);
      redis.off('end', onEnd);
    }
    redis.on('error', onError);
    redis.once('ready', onReady);
    redis.once('end', onEnd);
  });
}

/** Quits a connection the store owns, resolving once it has ended; one it was lent is left open. */
export function closeClient(redis: Redis, owned: boolean): Promise<void> {
  if (!owned || redis.status === 'end') return Promise.resolve();
  if (redis.status !== 'ready') {
    redis.disconnect(); // stops reconnecting; nothing to say goodbye to
    return Promise.resolve();
  }
  const ended = new Promise<void>((resolve) => redis.once('end', () => resolve()));
  return redis.quit().then(() => ended, () => { redis.disconnect(); });
}
