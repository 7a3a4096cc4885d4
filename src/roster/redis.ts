// Rosters in Redis, for cluster mode: every node reads and changes the same
// rosters. One hash per user holds the whole roster and its version, so each
// change is one Lua script: atomic cluster-wide (the item, the version and
// the size check move together). Subscription requests the user has not
// answered (the '+in' of RFC 6121 Appendix A) are a second hash per user; a
// subscription transition, remove and removeAll touch both keys in one
// script (or one DEL), so both must live on the same server (with Redis
// Cluster they would need a common hash tag).
//
// Keys (default namespace "xmpp:"):
//   xmpp:roster:<username>   hash  '#e'      the roster's epoch (random, set by its first change)
//                                  '#v'      change counter
//                                  'j:<jid>' "<subscription>[ subscribe]\n<JSON of name and groups>"
//   xmpp:pending:<username>  hash  '#n'      arrival counter (the key is deleted when no request is left)
//                                  'r:<jid>' "<arrival number>\n<the request stanza>"
// <username> is a normalised localpart and cannot contain ':'; JSON and the
// arrival number never hold a raw newline, so the first one ends the prefix.
//
// Like the account store, the connection fails fast while Redis is away
// (no offline queue, no retries, a command timeout): operations reject and
// the roster module answers with an error instead of waiting.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { type Lua, closeClient, lua, runScript } from '../storage/redis.ts';
import { waitForRedis } from '../cluster/redis.ts';
import { connectRedis } from '../cluster/redis.ts';
import {
  type RosterStore, type RosterItem, type RosterItemInput, type RosterChange, type Subscription, type SubscriptionChange,
  type SubState, type TransitionTable, type TransitionResult, type PendingRequest, type TransitionOptions,
  RosterFullError, RosterTooLargeError, EMPTY_VERSION, SUB_STATES, checkMax, checkSubscription, compareJids, composeState, decodeDetails, encodeDetails, makeItem, transitionLimits,
} from './store.ts';

export interface RedisRosterStoreOptions {
  /** Prepended to every key; default "xmpp:". */
  namespace?: string;
  /** open(): the connection name Redis shows (CLIENT LIST). */
  name?: string;
  /** open(): how long to wait for Redis to answer before giving up; default 10 s. */
  connectTimeoutMs?: number;
}


const HELPERS = `
local function bump(k, epoch)
  redis.call('HSETNX', k, '#e', epoch)
  local n = redis.call('HINCRBY', k, '#v', 1)
  return redis.call('HGET', k, '#e') .. '.' .. n
end
local function count(k)
  local n = redis.call('HLEN', k)
  if redis.call('HEXISTS', k, '#v') == 1 then n = n - 2 end
  return n
end
local function state(v)
  return string.sub(v, 1, string.find(v, '\\n', 1, true) - 1)
end
local function details(v)
  return string.sub(v, string.find(v, '\\n', 1, true) + 1)
end
local function pcount(k)
  local n = redis.call('HLEN', k)
  if redis.call('HEXISTS', k, '#n') == 1 then n = n - 1 end
  return n
end
-- Bytes of the roster's items (as itemBytes in store.ts), and how many ask.
local function sizes(k)
  local all = redis.call('HGETALL', k)
  local bytes, asking = 0, 0
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'j:' then
      bytes = bytes + string.len(all[i]) - 2 + string.len(details(all[i + 1]))
      local s = state(all[i + 1])
      if s == 'none subscribe' or s == 'from subscribe' then asking = asking + 1 end
    end
  end
  return bytes, asking
end
local function pdrop(k, field)
  if redis.call('HDEL', k, field) == 1 and pcount(k) == 0 then redis.call('DEL', k) end
end
`;

// KEYS: roster. ARGV: field, details, max, epoch, max bytes.
// {0}: full; {-1}: too large; {1, version, value}.
const SET = lua(`${HELPERS}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local s = 'none'
if cur then
  s = state(cur)
elseif count(KEYS[1]) >= tonumber(ARGV[3]) then
  return {0}
end
local bytes = sizes(KEYS[1])
if cur then bytes = bytes - (string.len(ARGV[1]) - 2 + string.len(details(cur))) end
if bytes + string.len(ARGV[1]) - 2 + string.len(ARGV[2]) > tonumber(ARGV[5]) then return {-1} end
local v = s .. '\\n' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], v)
return {1, bump(KEYS[1], ARGV[4]), v}`);

// KEYS: roster, pending. ARGV: field, epoch, pending field. nil: no such item; {version, old value}.
const REMOVE = lua(`${HELPERS}
pdrop(KEYS[2], ARGV[3])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return {bump(KEYS[1], ARGV[2]), cur}`);

// KEYS: roster. ARGV: field, state, create ('1'/'0'), max, epoch, details of a new item.
// nil: no such item; {-1}: full; {0, version, value}: unchanged; {1, version, value}.
const SET_SUBSCRIPTION = lua(`${HELPERS}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local d = ARGV[6]
if cur then
  if state(cur) == ARGV[2] then
    return {0, redis.call('HGET', KEYS[1], '#e') .. '.' .. redis.call('HGET', KEYS[1], '#v'), cur}
  end
  d = details(cur)
else
  if ARGV[3] ~= '1' then return false end
  if count(KEYS[1]) >= tonumber(ARGV[4]) then return {-1} end
end
local v = ARGV[2] .. '\\n' .. d
redis.call('HSET', KEYS[1], ARGV[1], v)
return {1, bump(KEYS[1], ARGV[5]), v}`);

// KEYS: roster, pending. ARGV: field, pending field, max, epoch, request,
// details of a new item, max pending, max outgoing, then the table as
// pairs: state, next state, ... {before, after, 0}: no item change;
// {before, before, -1, what}: full (items, pending or outgoing);
// {before, after, 1, version, value}: the item changed.
const TRANSITION = lua(`${HELPERS}
local rk, pk = KEYS[1], KEYS[2]
local max = tonumber(ARGV[3])
local cur = redis.call('HGET', rk, ARGV[1])
local pending = redis.call('HEXISTS', pk, ARGV[2]) == 1
local sub, ask = 'none', false
if cur then
  local s = state(cur)
  local sp = string.find(s, ' ', 1, true)
  if sp then
    sub = string.sub(s, 1, sp - 1)
    ask = string.sub(s, sp + 1) == 'subscribe'
  else
    sub = s
  end
end
local before = sub
if ask and (sub == 'none' or sub == 'from') then before = before .. '+out' end
if pending and (sub == 'none' or sub == 'to') then before = before .. '+in' end
local after = before
for i = 9, #ARGV - 1, 2 do
  if ARGV[i] == before then
    after = ARGV[i + 1]
    break
  end
end
if after == before then return {before, after, 0} end
local nsub = after
local plus = string.find(after, '+', 1, true)
if plus then nsub = string.sub(after, 1, plus - 1) end
local nstate = nsub
if string.find(after, '+out', 1, true) then nstate = nsub .. ' subscribe' end
local nin = string.find(after, '+in', 1, true) ~= nil
local create = (not cur) and nstate ~= 'none'
local change = create or (cur and state(cur) ~= nstate)
-- A request the state did not count before (none, or a stale one) is a new arrival.
local add = nin and not string.find(before, '+in', 1, true)
local addAsk = string.find(after, '+out', 1, true) and not string.find(before, '+out', 1, true)
if create and count(rk) >= max then return {before, before, -1, 'items'} end
-- A contact already in the roster is no stranger: its request is let in beyond the limit.
if add and not pending and not cur and pcount(pk) >= tonumber(ARGV[7]) then return {before, before, -1, 'pending'} end
if addAsk then
  local _, asking = sizes(rk)
  if asking >= tonumber(ARGV[8]) then return {before, before, -1, 'outgoing'} end
end
if add then
  local n = redis.call('HINCRBY', pk, '#n', 1)
  redis.call('HSET', pk, ARGV[2], n .. '\\n' .. ARGV[5])
elseif pending and not nin then
  pdrop(pk, ARGV[2])
end
if not change then return {before, after, 0} end
local d = ARGV[6]
if cur then d = details(cur) end
local v = nstate .. '\\n' .. d
redis.call('HSET', rk, ARGV[1], v)
return {before, after, 1, bump(rk, ARGV[4]), v}`);

const FIELD = 'j:';
const PENDING_FIELD = 'r:';

function encodeState(subscription: Subscription, ask: 'subscribe' | undefined): string {
  return ask ? `${subscription} ${ask}` : subscription;
}

function decodeItem(jid: string, value: string): RosterItem {
  const nl = value.indexOf('\n');
  if (nl === -1) throw new Error(`roster item ${jid}: damaged value in redis`);
  const [subscription, ask] = value.slice(0, nl).split(' ');
  return makeItem(jid, decodeDetails(value.slice(nl + 1)), subscription as Subscription, ask === 'subscribe' ? 'subscribe' : undefined);
}

function epoch(): string {
  return randomBytes(6).toString('base64url');
}

function checkUser(user: string): void {
  if (typeof user !== 'string' || user.length === 0) throw new TypeError('a roster needs a username');
}

/** The table as the script's flat list of pairs; throws on anything that is not a state. */
function tableArgs(table: TransitionTable): string[] {
  const args: string[] = [];
  for (const [from, to] of Object.entries(table)) {
    if (!SUB_STATES.includes(from as SubState) || !SUB_STATES.includes(to as SubState)) {
      throw new TypeError(`invalid transition ${JSON.stringify(from)} -> ${JSON.stringify(to)}`);
    }
    args.push(from, to);
  }
  return args;
}

/** A pending request's stored value: its arrival number and the stanza. */
function decodePending(jid: string, value: string): { seq: number; request: PendingRequest } {
  const nl = value.indexOf('\n');
  const seq = Number(value.slice(0, nl));
  if (nl === -1 || !Number.isSafeInteger(seq)) throw new Error(`pending request from ${jid}: damaged value in redis`);
  return { seq, request: { jid, stanza: value.slice(nl + 1) } };
}


export class RedisRosterStore implements RosterStore {
  /** The connection in use (shared with the caller when given to fromClient). */
  readonly redis: Redis;
  private readonly owned: boolean;
  private readonly namespace: string;
  private closed: Promise<void> | undefined;

  private constructor(redis: Redis, owned: boolean, namespace: string) {
    this.redis = redis;
    this.owned = owned;
    this.namespace = namespace;
  }

  /** Connects (fail-fast options); rejects when Redis does not answer within connectTimeoutMs. */
  static async open(url: string, options: RedisRosterStoreOptions = {}): Promise<RedisRosterStore> {
    const redis = connectRedis(url, options.name ?? 'roster');
    try {
      await waitForRedis(redis, { timeoutMs: options.connectTimeoutMs ?? 10_000 });
    } catch (err) {
      redis.disconnect();
      throw err;
    }
    return new RedisRosterStore(redis, true, options.namespace ?? 'xmpp:');
  }

  /** Uses a connection the caller owns (and closes): close() leaves it open. */
  static fromClient(redis: Redis, options: Pick<RedisRosterStoreOptions, 'namespace'> = {}): RedisRosterStore {
    return new RedisRosterStore(redis, false, options.namespace ?? 'xmpp:');
  }

  /** The key of a user's roster. */
  key(user: string): string {
    return `${this.namespace}roster:${user}`;
  }

  /** The key of a user's pending subscription requests. */
  pendingKey(user: string): string {
    return `${this.namespace}pending:${user}`;
  }

  private run(script: Lua, keys: string[], args: (string | number)[]): Promise<unknown> {
    return runScript(this.redis, script, keys, args);
  }

  async get(user: string): Promise<{ version: string; items: RosterItem[] }> {
    checkUser(user);
    const all = await this.redis.hgetall(this.key(user));
    const items: RosterItem[] = [];
    for (const [field, value] of Object.entries(all)) {
      if (field.startsWith(FIELD)) items.push(decodeItem(field.slice(FIELD.length), value));
    }
    items.sort((a, b) => compareJids(a.jid, b.jid));
    const version = all['#e'] !== undefined && all['#v'] !== undefined ? `${all['#e']}.${all['#v']}` : EMPTY_VERSION;
    return { version, items };
  }

  async item(user: string, jid: string): Promise<RosterItem | undefined> {
    checkUser(user);
    const value = await this.redis.hget(this.key(user), FIELD + jid);
    return value === null ? undefined : decodeItem(jid, value);
  }

  async set(user: string, input: RosterItemInput, max: number, maxBytes = Number.MAX_SAFE_INTEGER): Promise<RosterChange> {
    checkUser(user);
    checkMax(max);
    checkMax(maxBytes);
    const r = (await this.run(SET, [this.key(user)], [FIELD + input.jid, encodeDetails(input), max, epoch(), maxBytes])) as [number, string?, string?];
    if (r[0] === 0) throw new RosterFullError(max);
    if (r[0] === -1) throw new RosterTooLargeError(maxBytes);
    return { version: r[1]!, item: decodeItem(input.jid, r[2]!) };
  }

  async remove(user: string, jid: string): Promise<RosterChange | undefined> {
    checkUser(user);
    const r = (await this.run(REMOVE, [this.key(user), this.pendingKey(user)], [FIELD + jid, epoch(), PENDING_FIELD + jid])) as [string, string] | null;
    return r === null ? undefined : { version: r[0], item: decodeItem(jid, r[1]) };
  }

  async setSubscription(user: string, jid: string, subscription: Subscription, ask: 'subscribe' | undefined, create?: { max: number }): Promise<SubscriptionChange | undefined> {
    checkUser(user);
    checkSubscription(subscription, ask);
    if (create) checkMax(create.max);
    const args = [FIELD + jid, encodeState(subscription, ask), create ? '1' : '0', create?.max ?? 0, epoch(), encodeDetails({ groups: [] })];
    const r = (await this.run(SET_SUBSCRIPTION, [this.key(user)], args)) as [number, string?, string?] | null;
    if (r === null) return undefined;
    if (r[0] === -1) throw new RosterFullError(create!.max);
    return { version: r[1]!, item: decodeItem(jid, r[2]!), changed: r[0] === 1 };
  }

  async removeAll(user: string): Promise<void> {
    checkUser(user);
    await this.redis.del(this.key(user), this.pendingKey(user));
  }

  async transition(user: string, jid: string, table: TransitionTable, opts: TransitionOptions): Promise<TransitionResult> {
    checkUser(user);
    const { max, maxPending, maxOutgoing } = transitionLimits(opts);
    const args = [FIELD + jid, PENDING_FIELD + jid, max, epoch(), opts.request ?? '', encodeDetails({ groups: [] }), maxPending, maxOutgoing, ...tableArgs(table)];
    const r = (await this.run(TRANSITION, [this.key(user), this.pendingKey(user)], args)) as [SubState, SubState, number, string?, string?];
    const [before, after, kind] = r;
    if (kind === -1) return { before, after: before, full: r[3] as 'items' | 'pending' | 'outgoing' };
    if (kind === 0) return { before, after };
    return { before, after, change: { version: r[3]!, item: decodeItem(jid, r[4]!) } };
  }

  async state(user: string, jid: string): Promise<SubState> {
    checkUser(user);
    const [[itemErr, value], [pendingErr, pending]] = (await this.redis.multi()
      .hget(this.key(user), FIELD + jid)
      .hexists(this.pendingKey(user), PENDING_FIELD + jid)
      .exec())!;
    if (itemErr) throw itemErr;
    if (pendingErr) throw pendingErr;
    return composeState(value === null ? undefined : decodeItem(jid, value as string), pending === 1);
  }

  async pendingRequests(user: string): Promise<PendingRequest[]> {
    checkUser(user);
    const all = await this.redis.hgetall(this.pendingKey(user));
    const found: { seq: number; request: PendingRequest }[] = [];
    for (const [field, value] of Object.entries(all)) {
      if (field.startsWith(PENDING_FIELD)) found.push(decodePending(field.slice(PENDING_FIELD.length), value));
    }
    return found.sort((a, b) => a.seq - b.seq).map((p) => p.request);
  }

  /** Quits the connection when open() made it (resolving once it has ended); idempotent. */
  close(): Promise<void> {
    if (this.closed) return this.closed;
    this.closed = closeClient(this.redis, this.owned);
    return this.closed;
  }
}
