// Accounts in Redis, for cluster mode: every node reads and writes the same
// accounts, so a user registered through one node logs in on any node.
// Like the SQLite store it keeps only SCRAM verifiers (salt, iterations,
// StoredKey, ServerKey for SHA-1 and SHA-256, each with its own salt), never
// a password: the password does not even travel to Redis.
//
// Keys (default namespace "xmpp:"):
//   xmpp:acct:<username>       hash  created, sha1:salt, sha1:iterations, sha1:storedKey,
//                                    sha1:serverKey, sha256:salt, ... (binary values)
//   xmpp:accounts              set   every username, for list()
//   xmpp:scram-fake-salt-key   string 32 random bytes keying SCRAM's fake salts
// <username> is the normalised localpart; it can never contain ':', so no
// account key can be mistaken for anything else.
//
// Every write is one Lua script, so the hash and the set change together and
// create() is atomic cluster-wide: two nodes creating the same user at the
// same instant get one success and one AccountExistsError.
//
// Losing Redis: the connection has no offline queue, no per-command retries
// and a command timeout, so while Redis is unreachable every operation
// rejects at once (at worst after the timeout) instead of waiting; SASL turns
// that into temporary-auth-failure. The client keeps reconnecting in the
// background and operations work again as soon as Redis is back.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { type Lua, closeClient, lua, runScript } from '../storage/redis.ts';
import { waitForRedis } from '../cluster/redis.ts';
import { connectRedis } from '../cluster/redis.ts';
import {
  type AccountStore, type ScramCredentials, type ScramHash,
  AccountExistsError, AccountNotFoundError,
  normalizeUsername, newUsername, normalizedOrUndefined, deriveScram, preparePassword, hashInfo,
} from './store.ts';

const FIELD_PREFIX: Record<ScramHash, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256' };
const PARTS = ['salt', 'iterations', 'storedKey', 'serverKey'] as const;
const FAKE_SALT_KEY_BYTES = 32;

export interface RedisAccountStoreOptions {
  /** Prepended to every key; default "xmpp:". */
  namespace?: string;
  /** open(): the connection name Redis shows (CLIENT LIST). */
  name?: string;
  /** open(): how long to wait for Redis to answer before giving up; default 10 s. */
  connectTimeoutMs?: number;
}


// HSET of all eight verifier fields; ARGV[3..10] are the values in FIELDS order.
const FIELDS = (['SHA-1', 'SHA-256'] as const).flatMap((h) => PARTS.map((p) => `${FIELD_PREFIX[h]}:${p}`));
const HSET_VERIFIERS = `redis.call('HSET', KEYS[1], ${FIELDS.map((f, i) => `'${f}', ARGV[${i + 3}]`).join(', ')})`;

// KEYS: account hash, accounts set. ARGV: username, created, verifiers...
const CREATE = lua(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
${HSET_VERIFIERS}
redis.call('HSET', KEYS[1], 'created', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1`);

// KEYS: account hash, accounts set. ARGV: username, (unused), verifiers...
const SET_PASSWORD = lua(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
${HSET_VERIFIERS}
redis.call('SADD', KEYS[2], ARGV[1])
return 1`);

// KEYS: account hash, accounts set. ARGV: username.
const REMOVE = lua(`
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n`);


function checkIterations(iterations: number): void {
  if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError(`invalid iteration count ${iterations}`);
}


export class RedisAccountStore implements AccountStore {
  readonly iterations: number;
  /** The connection in use (shared with the caller when given to fromClient). */
  readonly redis: Redis;
  private readonly owned: boolean;
  private readonly keys: { account: (user: string) => string; set: string; secret: string };
  private secret: Buffer;
  /** The latest re-assertion of the fake-salt key after a reconnect. */
  private secretSync: Promise<void> = Promise.resolve();
  private readonly onReady = () => {
    this.secretSync = this.syncSecret().catch(() => { /* keep the cached key; retried on the next reconnect */ });
  };
  private closed: Promise<void> | undefined;

  private constructor(redis: Redis, iterations: number, owned: boolean, namespace: string) {
    this.redis = redis;
    this.iterations = iterations;
    this.owned = owned;
    this.keys = {
      account: (user) => `${namespace}acct:${user}`,
      set: `${namespace}accounts`,
      secret: `${namespace}scram-fake-salt-key`,
    };
    this.secret = Buffer.alloc(0);
  }

  /**
   * Connects to Redis (fail-fast options: no offline queue, no retries, a
   * command timeout) and loads the cluster's fake-salt key. Rejects when
   * Redis does not answer within connectTimeoutMs.
   */
  static async open(url: string, iterations: number, options: RedisAccountStoreOptions = {}): Promise<RedisAccountStore> {
    checkIterations(iterations);
    const redis = connectRedis(url, options.name ?? 'accounts');
    try {
      await waitForRedis(redis, { timeoutMs: options.connectTimeoutMs ?? 10_000 });
      return await RedisAccountStore.start(redis, iterations, true, options.namespace);
    } catch (err) {
      redis.disconnect();
      throw err;
    }
  }

  /**
   * Uses a connection the caller owns (and closes): close() leaves it open.
   * It should be set up to fail fast, like connectRedis() does.
   */
  static async fromClient(redis: Redis, iterations: number, options: Pick<RedisAccountStoreOptions, 'namespace'> = {}): Promise<RedisAccountStore> {
    checkIterations(iterations);
    return RedisAccountStore.start(redis, iterations, false, options.namespace);
  }

  private static async start(redis: Redis, iterations: number, owned: boolean, namespace = 'xmpp:'): Promise<RedisAccountStore> {
    const store = new RedisAccountStore(redis, iterations, owned, namespace);
    await store.syncSecret();
    // Redis may come back empty (no persistence): put the key back, or adopt
    // the one another node put back first, so the cluster keeps agreeing.
    redis.on('ready', store.onReady);
    return store;
  }

  /** SET NX our key (or a new one), then adopt whatever Redis holds. */
  private async syncSecret(): Promise<void> {
    const mine = this.secret.length > 0 ? this.secret : randomBytes(FAKE_SALT_KEY_BYTES);
    await this.redis.set(this.keys.secret, mine, 'NX');
    const held = await this.redis.getBuffer(this.keys.secret);
    if (!held || held.length === 0) throw new Error('the SCRAM fake-salt key vanished from redis');
    this.secret = held;
  }

  fakeSaltKey(): Buffer {
    return this.secret;
  }

  private run(script: Lua, keys: string[], args: (string | Buffer | number)[]): Promise<unknown> {
    return runScript(this.redis, script, keys, args);
  }

  private async derive(password: string): Promise<Buffer[]> {
    preparePassword(password, true); // stored string rules: no unassigned code points
    const both = await Promise.all([deriveScram(password, 'SHA-1', this.iterations), deriveScram(password, 'SHA-256', this.iterations)]);
    return both.flatMap((c) => [c.salt, Buffer.from(String(c.iterations)), c.storedKey, c.serverKey]);
  }

  async create(username: string, password: string): Promise<void> {
    const user = newUsername(username);
    // Cheap early answer before the PBKDF2 work; the script decides for real.
    if (await this.redis.exists(this.keys.account(user))) throw new AccountExistsError(`account ${user} already exists`);
    const verifiers = await this.derive(password);
    const created = await this.run(CREATE, [this.keys.account(user), this.keys.set], [user, Date.now(), ...verifiers]);
    if (created !== 1) throw new AccountExistsError(`account ${user} already exists`);
  }

  async remove(username: string): Promise<boolean> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return false;
    return (await this.run(REMOVE, [this.keys.account(user), this.keys.set], [user])) === 1;
  }

  async setPassword(username: string, password: string): Promise<void> {
    const user = normalizeUsername(username);
    if (!(await this.redis.exists(this.keys.account(user)))) throw new AccountNotFoundError(`no account ${user}`);
    const verifiers = await this.derive(password);
    const updated = await this.run(SET_PASSWORD, [this.keys.account(user), this.keys.set], [user, '', ...verifiers]);
    if (updated !== 1) throw new AccountNotFoundError(`no account ${user}`);
  }

  async exists(username: string): Promise<boolean> {
    const user = normalizedOrUndefined(username);
    return user !== undefined && (await this.redis.exists(this.keys.account(user))) === 1;
  }

  /** Sorted by code point (UTF-8 byte order), as SQLite's ORDER BY sorts. */
  async list(): Promise<string[]> {
    const names = await this.redis.smembersBuffer(this.keys.set);
    return names.sort(Buffer.compare).map((b) => b.toString('utf8'));
  }

  async scram(username: string, hash: ScramHash): Promise<ScramCredentials | undefined> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return undefined;
    const { length } = hashInfo(hash); // throws on an unknown hash
    const prefix = FIELD_PREFIX[hash];
    const [salt, iterations, storedKey, serverKey] = await this.redis.hmgetBuffer(this.keys.account(user), ...PARTS.map((p) => `${prefix}:${p}`));
    if (!salt && !iterations && !storedKey && !serverKey) {
      // No such account: SCRAM answers with a fake salt next, keyed by the
      // cluster-wide secret; let a re-assertion under way finish first.
      await this.secretSync;
      return undefined;
    }
    const i = Number(iterations?.toString());
    if (!salt || !storedKey || !serverKey || storedKey.length !== length || serverKey.length !== length || !Number.isSafeInteger(i) || i < 1) {
      throw new Error(`account ${user}: damaged ${hash} verifier in redis`);
    }
    return { salt, iterations: i, storedKey, serverKey };
  }

  /** Quits the connection when open() made it (resolving once it has ended); idempotent. */
  close(): Promise<void> {
    if (this.closed) return this.closed;
    this.redis.off('ready', this.onReady);
    this.closed = closeClient(this.redis, this.owned);
    return this.closed;
  }
}
