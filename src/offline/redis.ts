// Offline messages in Redis, for cluster mode: a message stored through one
// node is delivered by whichever node the user next logs in to.
//
// Keys (default namespace "xmpp:"):
//   xmpp:offq:<user>     stream  one entry per stanza (field 'x'), oldest first
//   xmpp:offb:<user>     string  bytes of the stanzas in the stream
//   xmpp:offc:<user>     string  the owner of the claim on the queue (expires)
//   xmpp:offline:<user>  list    the layout before claims and ids: moved into
//                                the stream by the first script that sees it
// <user> is the normalised localpart; the fixed prefixes keep these keys
// apart from every other key of the namespace.
//
// Each operation that reads and writes is one Lua script, atomic in Redis:
// push checks both limits and appends; fetch checks and renews the claim and
// reads; remove deletes entries and keeps the byte count. The keys of one
// user go together in every script, so they would need a common hash tag on
// a Redis Cluster.
//
// Durability is Redis's: without persistence (AOF) a Redis restart loses the
// queued messages. Like the account store, the connection fails fast while
// Redis is unreachable: operations reject instead of waiting.
import type { Redis } from 'ioredis';
import { type Lua, closeClient, lua, runScript } from '../storage/redis.ts';
import { waitForRedis } from '../cluster/redis.ts';
import { connectRedis } from '../cluster/redis.ts';
import { type OfflineLimits, type OfflineStore, type StoredMessage, checkFetch, checkLimits, utf8Bytes } from './store.ts';

export interface RedisOfflineStoreOptions {
  /** Prepended to every key; default "xmpp:". */
  namespace?: string;
  /** open(): the connection name Redis shows (CLIENT LIST). */
  name?: string;
  /** open(): how long to wait for Redis to answer before giving up; default 10 s. */
  connectTimeoutMs?: number;
}

// KEYS: stream, bytes, old list. Moves what the old layout holds into the stream.
const MIGRATE = `
local function migrate()
  if redis.call('EXISTS', KEYS[3]) == 0 then return end
  for _, x in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    redis.call('XADD', KEYS[1], '*', 'x', x)
    redis.call('INCRBY', KEYS[2], string.len(x))
  end
  redis.call('DEL', KEYS[3])
end
migrate()
`;

// KEYS: stream, bytes, old list. ARGV: stanza, max, max bytes. 1 when appended, 0 when full.
const PUSH = lua(`${MIGRATE}
local size = string.len(ARGV[1])
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') + size > tonumber(ARGV[3]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'x', ARGV[1])
redis.call('INCRBY', KEYS[2], size)
return 1`);

// KEYS: stream, bytes, old list, claim. ARGV: owner, after ('' for the start),
// count, lease ms. {0}: claimed by another; {1, id, stanza, id, stanza, ...}.
const FETCH = lua(`${MIGRATE}
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[1] then return {0} end
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local out = {1}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[3])) do
  table.insert(out, e[1])
  table.insert(out, e[2][2])
end
-- Nothing to deliver and no claim of its own: none is taken.
if #out > 1 or holder then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[4]) end
return out`);

// KEYS: stream, bytes. ARGV: ids. The byte count follows; an empty queue leaves no key.
const REMOVE = lua(`
for _, id in ipairs(ARGV) do
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 1 then
    redis.call('XDEL', KEYS[1], id)
    redis.call('DECRBY', KEYS[2], string.len(e[1][2][2]))
  end
end
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1`);

// KEYS: claim. ARGV: owner.
const RELEASE = lua(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`);

export class RedisOfflineStore implements OfflineStore {
  /** The connection in use (shared with the caller when given to fromClient). */
  readonly redis: Redis;
  private readonly owned: boolean;
  private readonly ns: string;
  private closed: Promise<void> | undefined;

  private constructor(redis: Redis, owned: boolean, namespace = 'xmpp:') {
    this.redis = redis;
    this.owned = owned;
    this.ns = namespace;
  }

  /**
   * Connects to Redis (fail-fast options: no offline queue, no retries, a
   * command timeout). Rejects when Redis does not answer within connectTimeoutMs.
   */
  static async open(url: string, options: RedisOfflineStoreOptions = {}): Promise<RedisOfflineStore> {
    const redis = connectRedis(url, options.name ?? 'offline');
    try {
      await waitForRedis(redis, { timeoutMs: options.connectTimeoutMs ?? 10_000 });
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

  /** The keys of a user's queue: the stream, its byte count, the old list, the claim. */
  keys(user: string): { queue: string; bytes: string; old: string; claim: string } {
    return { queue: `${this.ns}offq:${user}`, bytes: `${this.ns}offb:${user}`, old: `${this.ns}offline:${user}`, claim: `${this.ns}offc:${user}` };
  }

  private run(script: Lua, keys: string[], args: (string | number)[]): Promise<unknown> {
    return runScript(this.redis, script, keys, args);
  }

  async push(user: string, xml: string, limits: OfflineLimits): Promise<boolean> {
    const { max, maxBytes } = checkLimits(limits);
    if (max < 1 || utf8Bytes(xml) > maxBytes) return false;
    const k = this.keys(user);
    return (await this.run(PUSH, [k.queue, k.bytes, k.old], [xml, max, maxBytes])) === 1;
  }

  async fetch(user: string, owner: string, after: string, limit: number, leaseMs: number): Promise<StoredMessage[] | null> {
    checkFetch(limit, leaseMs);
    const k = this.keys(user);
    const r = await this.run(FETCH, [k.queue, k.bytes, k.old, k.claim], [owner, after, limit, leaseMs]);
    if (!Array.isArray(r)) throw new Error(`offline fetch: unexpected reply ${String(r)}`);
    if (r[0] === 0) return null;
    const out: StoredMessage[] = [];
    for (let i = 1; i + 1 < r.length; i += 2) out.push({ id: String(r[i]), xml: String(r[i + 1]) });
    return out;
  }

  async remove(user: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const k = this.keys(user);
    await this.run(REMOVE, [k.queue, k.bytes], ids);
  }

  async release(user: string, owner: string): Promise<void> {
    await this.run(RELEASE, [this.keys(user).claim], [owner]);
  }

  async count(user: string): Promise<number> {
    const k = this.keys(user);
    const [[e1, n], [e2, old]] = (await this.redis.multi().xlen(k.queue).llen(k.old).exec())!;
    if (e1) throw e1;
    if (e2) throw e2;
    return Number(n) + Number(old);
  }

  async removeAll(user: string): Promise<void> {
    const k = this.keys(user);
    await this.redis.del(k.queue, k.bytes, k.old, k.claim);
  }

  /** Quits the connection when open() made it (resolving once it has ended); idempotent. */
  close(): Promise<void> {
    if (this.closed) return this.closed;
    this.closed = closeClient(this.redis, this.owned);
    return this.closed;
  }
}
