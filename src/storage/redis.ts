// What the Redis-backed stores (accounts, rosters, offline messages) share:
// Lua scripts run by SHA with a fallback after a SCRIPT FLUSH or a restart,
// and closing a connection politely (waiting for one is cluster/redis.ts's
// waitForRedis).
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
