// Offline messages in Redis, for cluster mode: a message stored through one
// node is delivered by whichever node the user next logs in to.
//
// Keys (default namespace "xmpp:"):
//   xmpp:offline:<user>   list   serialised stanzas, oldest first
// <user> is the normalised localpart; the fixed prefix keeps these keys
// apart from every other key of the namespace.
//
// push and take are Lua scripts, each atomic in Redis: push checks the limit
// and appends in one step (concurrent pushes from many nodes never exceed
// it), take reads and deletes the list in one step (of two nodes taking at
// once, one gets the messages and the other what came after: no message is
// handed out twice).
// One key per script, so they also work on a Redis Cluster.
//
// Durability is Redis's: without persistence (AOF) a Redis restart loses the
// queued messages. Like the account store, the connection fails fast while
// Redis is unreachable: operations reject instead of waiting.
import type { Redis } from 'ioredis';
import { type Lua, closeClient, lua, runScript, whenReady } from '../storage/redis.ts';
import { connectRedis } from '../cluster/redis.ts';
import { type OfflineStore, checkMax } from './store.ts';

export interface RedisOfflineStoreOptions {
  /** Prepended to every key; default "xmpp:". */
  namespace?: string;
  /** open(): the connection name Redis shows (CLIENT LIST). */
  name?: string;
  /** open(): how long to wait for Redis to answer before giving up; default 10 s. */
  connectTimeoutMs?: number;
}


// KEYS: the user's list. ARGV: stanza, limit. 1 when appended, 0 when full.
const PUSH = lua(`
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1`);

// KEYS: the user's list. The whole list, oldest first; the list is gone.
const TAKE = lua(`
local all = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return all`);


export class RedisOfflineStore implements OfflineStore {
  /** The connection in use (shared with the caller when given to fromClient). */
  readonly redis: Redis;
  private readonly owned: boolean;
  private readonly prefix: string;
  private closed: Promise<void> | undefined;

  private constructor(redis: Redis, owned: boolean, namespace = 'xmpp:') {
    this.redis = redis;
    this.owned = owned;
    this.prefix = `${namespace}offline:`;
  }

  /**
   * Connects to Redis (fail-fast options: no offline queue, no retries, a
   * command timeout). Rejects when Redis does not answer within connectTimeoutMs.
   */
  static async open(url: string, options: RedisOfflineStoreOptions = {}): Promise<RedisOfflineStore> {
    const redis = connectRedis(url, options.name ?? 'offline');
    try {
      await whenReady(redis, options.connectTimeoutMs ?? 10_000);
    } catch (err) {
      redis.disconnect();
      throw err;
    }
    return new RedisOfflineStore(redis, true, options.namespace);
  }

  /** Uses a connection the caller owns (and closes): close() leaves it open. */
  static fromClient(redis: Redis, options: Pick<RedisOfflineStoreOptions, 'namespace'> = {}): RedisOfflineStore {
    return new RedisOfflineStore(redis, false, options.namespace);
  }

  /** The key of a user's queue. */
  key(user: string): string {
    return this.prefix + user;
  }

  private run(script: Lua, key: string, args: (string | number)[]): Promise<unknown> {
    return runScript(this.redis, script, [key], args);
  }

  async push(user: string, xml: string, max: number): Promise<boolean> {
    if (checkMax(max) < 1) return false;
    return (await this.run(PUSH, this.key(user), [xml, max])) === 1;
  }

  async take(user: string): Promise<string[]> {
    const all = await this.run(TAKE, this.key(user), []);
    if (!Array.isArray(all)) throw new Error(`offline take: unexpected reply ${String(all)}`);
    return all.map(String);
  }

  async count(user: string): Promise<number> {
    return this.redis.llen(this.key(user));
  }

  async removeAll(user: string): Promise<void> {
    await this.redis.del(this.key(user));
  }

  /** Quits the connection when open() made it (resolving once it has ended); idempotent. */
  close(): Promise<void> {
    if (this.closed) return this.closed;
    this.closed = closeClient(this.redis, this.owned);
    return this.closed;
  }
}
