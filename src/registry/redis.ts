// The cluster's session registry in Redis. Every write is one Lua script, so
// a bind is atomic cluster-wide and the conflict policy is applied exactly
// once, and every write is fenced: it checks that the writing node still
// holds its lease with the epoch it was given (a node that was paused or cut
// off, and declared dead, cannot write again as if nothing happened).
//
// Keys:  xmpp:s:<bare>   hash resource -> JSON {sid,node,worker,priority,available}
//        xmpp:n:<node>   set of full JIDs bound on that node (to clean up after it)
//        xmpp:nodes      zset node -> lease expiry (ms, Redis clock)
//        xmpp:epochs     hash node -> epoch (fencing token)
//        xmpp:dp:<sid>   JSON list of the entities a session sent directed presence to
//        xmpp:inv        channel: a bare JID whose records changed (cache invalidation)
//        xmpp:sm:<sid>, xmpp:smq:<sid>, xmpp:smj:<jid>
//                        XMPP_SM_DURABLE: a resumable session's state (session/durable.ts)
import type { Redis } from 'ioredis';
import type { BindOutcome, BindRequest, SessionRecord, SessionRegistry } from './registry.ts';
import { ONLINE_PAGE, randomResource } from './registry.ts';
import { flat } from '../xml/retain.ts';
import { log } from '../log.ts';
import { ready } from '../cluster/redis.ts';
import type { Departed } from '../presence/presence.ts';

export const K = {
  sessions: (bare: string) => `xmpp:s:${bare}`,
  node: (node: string) => `xmpp:n:${node}`,
  nodes: 'xmpp:nodes',
  epochs: 'xmpp:epochs',
  inv: 'xmpp:inv',
  /** channel: an account was removed (accounts/removal.ts), for every worker of every node */
  removed: 'xmpp:removed',
  /** channel: what a module keeps for an account changed (a blocklist, XEP-0191): every worker of every node drops its copy */
  changed: 'xmpp:changed',
  /** channel: administration questions (admin/cluster.ts) to every node's main thread */
  admin: 'xmpp:admin',
  /** channel: the answers to a node's administration questions */
  adminReply: (node: string) => `xmpp:ar:${node}`,
  /** channel: acknowledgements of this worker's change notices (the worker that applied one answers its id) */
  changeAck: (node: string, worker: number) => `xmpp:ca:${node}:${worker}`,
  directed: (sid: string) => `xmpp:dp:${sid}`,
  channel: (node: string, worker: number) => `xmpp:c:${node}:${worker}`,
  sm: (sid: string) => `xmpp:sm:${sid}`,
  smq: (sid: string) => `xmpp:smq:${sid}`,
  smj: (jid: string) => `xmpp:smj:${jid}`,
  /** the +notify nodes of a verified XEP-0115 ver (pep/caps.ts), for every worker of every node */
  // v2: vers verified before '<' in an answer was refused are not trusted.
  caps: (hashVer: string) => `xmpp:caps2:${hashVer}`,
  /** sorted set: the vers kept under caps(), by when one was last written or read (the least recently used go past the bound) */
  capsIndex: 'xmpp:caps2-index',
  /** an account's resources of contacts on other servers, with their caps (pep/remote.ts) */
  pepRemote: (owner: string) => `xmpp:pepr:${owner}`,
};

/** Lua: Redis's clock in ms as \`now\` (leases are judged by one clock, Redis's). */
export const NOW = `local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * Lua, for the scripts that remove session records (here and in
 * membership.ts): splitJid(full) gives bare and resource; forget(gone, full,
 * rec) deletes the session's directed-presence list and, when \`gone\` is a
 * table, appends what announcing its end takes (see parseGone): full JID,
 * available ('1'/'0'), the list (JSON). A session with durable stream
 * management state (session/durable.ts) keeps it for its resumption
 * window, then it expires.
 */
export const RECORDS = `
local function splitJid(full)
  local i = string.find(full, '/', 1, true)
  return string.sub(full, 1, i - 1), string.sub(full, i + 1)
end
local function forget(gone, full, rec)
  local dp = redis.call('GET', 'xmpp:dp:' .. rec.sid)
  redis.call('DEL', 'xmpp:dp:' .. rec.sid)
  local ms = redis.call('HGET', 'xmpp:sm:' .. rec.sid, 'resumeMs')
  if ms then
    redis.call('PEXPIRE', 'xmpp:sm:' .. rec.sid, ms)
    redis.call('PEXPIRE', 'xmpp:smq:' .. rec.sid, ms)
    redis.call('PEXPIRE', 'xmpp:smj:' .. full, ms)
  end
  if gone then
    table.insert(gone, full)
    table.insert(gone, rec.available and '1' or '0')
    table.insert(gone, dp or '[]')
  end
end`;

/** Fenced unless this node's epoch matches and its lease has not lapsed. */
const FENCE = `
local function fenced(node, epoch, now)
  if redis.call('HGET', 'xmpp:epochs', node) ~= epoch then return true end
  local lease = redis.call('ZSCORE', 'xmpp:nodes', node)
  return (not lease) or tonumber(lease) < now
end`;

// KEYS[1] sessions hash; ARGV: bare, resource, rec, policy, max, exclusive,
// node, epoch, alt, judging. Returns {status, resource, replaced record,
// dropped}: dropped lists (full JID, available, directed JSON) of the stale
// records it removed, whose end the caller announces.
const BIND = `${NOW}${FENCE}${RECORDS}
local bare, node = ARGV[1], ARGV[7]
if fenced(node, ARGV[8], now) then return {'fenced'} end
local all = redis.call('HGETALL', KEYS[1])
local live, count, fencedNow, dropped = {}, 0, {}, {}
for i = 1, #all, 2 do
  local rec = cjson.decode(all[i + 1])
  local lease = redis.call('ZSCORE', 'xmpp:nodes', rec.node)
  if (lease and tonumber(lease) >= now) or (lease and ARGV[10] ~= '1') then
    -- Live; or lapsed, but this node cannot tell a death from an outage
    -- it has just come back from itself: kept as live.
    live[all[i]] = all[i + 1]
    count = count + 1
  else
    -- A record of a dead node is stale: dropped on the way (its end
    -- announced by the caller), and that node fenced (a new epoch), so that
    -- if it was only paused, its next heartbeat tells it it lost them.
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('SREM', 'xmpp:n:' .. rec.node, bare .. '/' .. all[i])
    forget(dropped, bare .. '/' .. all[i], rec)
    if lease and not fencedNow[rec.node] then
      redis.call('HINCRBY', 'xmpp:epochs', rec.node, 1)
      fencedNow[rec.node] = true
    end
  end
end
if #dropped > 0 then redis.call('PUBLISH', 'xmpp:inv', bare) end
if ARGV[6] == '1' and count > 0 then return {'conflict', '', '', dropped} end
local resource, replaced = ARGV[2], false
if live[resource] then
  if ARGV[4] == 'old-wins' then return {'conflict', '', '', dropped} end
  if ARGV[4] == 'assign' then
    resource = ARGV[9]
    if live[resource] then return {'conflict', '', '', dropped} end
  else
    replaced = live[resource]
  end
end
if count - (replaced and 1 or 0) >= tonumber(ARGV[5]) then return {'resource-constraint', '', '', dropped} end
if replaced then
  local old = cjson.decode(replaced)
  redis.call('SREM', 'xmpp:n:' .. old.node, bare .. '/' .. resource)
  local lease = redis.call('ZSCORE', 'xmpp:nodes', old.node)
  if not lease or tonumber(lease) < now then
    -- Replaced while its node's lease has lapsed (kept as live, since this
    -- node is not judging): its kick may reach nobody, and no sweep will
    -- find it now. Its end is announced with the dropped ones.
    forget(dropped, bare .. '/' .. resource, old)
  end
end
redis.call('HSET', KEYS[1], resource, ARGV[3])
redis.call('SADD', 'xmpp:n:' .. node, bare .. '/' .. resource)
redis.call('PUBLISH', 'xmpp:inv', bare)
return {'ok', resource, replaced or '', dropped}`;

// KEYS[1] sessions hash; ARGV: bare, resource, sid, node. Not fenced by
// epoch: it removes only the record of the very session that ends (its sid),
// which can never shadow another session, while a fenced unbind would leave
// the record behind for nobody to remove.
const UNBIND = `
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then return 0 end
local rec = cjson.decode(cur)
if rec.sid ~= ARGV[3] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('DEL', 'xmpp:dp:' .. ARGV[3])
redis.call('SREM', 'xmpp:n:' .. ARGV[4], ARGV[1] .. '/' .. ARGV[2])
redis.call('PUBLISH', 'xmpp:inv', ARGV[1])
return 1`;

// KEYS[1] sessions hash; ARGV: bare, resource, sid, available, priority, node, epoch
const PRESENCE = `${NOW}${FENCE}
if fenced(ARGV[6], ARGV[7], now) then return -1 end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then return 0 end
local rec = cjson.decode(cur)
-- Another session holds the resource now: this one was replaced and its
-- kick was lost (pub/sub delivers at most once). The caller ends it.
if rec.sid ~= ARGV[3] then return -2 end
rec.available = ARGV[4] == '1'
rec.priority = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(rec))
redis.call('PUBLISH', 'xmpp:inv', ARGV[1])
return 1`;

// KEYS[1] sessions hash; ARGV: bare, resource, sid, node, worker, epoch. A
// session resumed on another node (XEP-0198 §5): its record, if still that
// session's, now names the node and worker that hold it, and is listed
// under that node (for the cleanup after a node's death). Fenced: a node
// declared dead cannot take sessions.
const MOVE = `${NOW}${FENCE}
if fenced(ARGV[4], ARGV[6], now) then return -1 end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then return 0 end
local rec = cjson.decode(cur)
if rec.sid ~= ARGV[3] then return 0 end
local full = ARGV[1] .. '/' .. ARGV[2]
redis.call('SREM', 'xmpp:n:' .. rec.node, full)
rec.node = ARGV[4]
rec.worker = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(rec))
redis.call('SADD', 'xmpp:n:' .. ARGV[4], full)
redis.call('PUBLISH', 'xmpp:inv', ARGV[1])
return 1`;

// ARGV: node. 1 while its lease has not lapsed (by Redis's clock), else 0.
const LEASE = `${NOW}
local lease = redis.call('ZSCORE', 'xmpp:nodes', ARGV[1])
if lease and tonumber(lease) >= now then return 1 end
return 0`;

// KEYS[1] sessions hash; ARGV: resource, sid, JSON list ('' forgets). Only
// for a session that still holds its record: a late write after its record
// was removed (its node swept) would leave a key nobody removes.
const DIRECTED = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or cjson.decode(cur).sid ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('DEL', 'xmpp:dp:' .. ARGV[2])
else redis.call('SET', 'xmpp:dp:' .. ARGV[2], ARGV[3]) end
return 1`;

// After a Redis outage in which Redis kept its data, one worker's sessions
// against their records. ARGV: node, epoch, worker, n, then n sids of
// sessions that may be binding (their records are left alone: a bind may be
// written before its answer arrives), then per live session: full JID, sid,
// available ('1'/'0'), priority. Returns
// {'ok', gone, replaced}: gone lists (full JID, available, directed JSON) of
// records of sessions that ended while their unbind could not be written;
// replaced lists (full JID, sid) of live sessions whose resource another
// session took meanwhile (their kick was lost). A record missing altogether
// is written again; one whose presence is out of date is brought up to date.
const RECONCILE = `${NOW}${FENCE}${RECORDS}
local node, worker = ARGV[1], tonumber(ARGV[3])
if fenced(node, ARGV[2], now) then return {'fenced'} end
local binding, first = {}, 5 + tonumber(ARGV[4])
for i = 5, first - 1 do binding[ARGV[i]] = true end
local live = {}
for i = first, #ARGV, 4 do live[ARGV[i]] = ARGV[i + 1] end
local gone, replaced = {}, {}
for _, full in ipairs(redis.call('SMEMBERS', 'xmpp:n:' .. node)) do
  local bare, res = splitJid(full)
  local cur = redis.call('HGET', 'xmpp:s:' .. bare, res)
  local rec = cur and cjson.decode(cur)
  if not rec or rec.node ~= node then
    redis.call('SREM', 'xmpp:n:' .. node, full)
  elseif rec.worker == worker and live[full] ~= rec.sid and not binding[rec.sid] then
    redis.call('HDEL', 'xmpp:s:' .. bare, res)
    redis.call('SREM', 'xmpp:n:' .. node, full)
    redis.call('PUBLISH', 'xmpp:inv', bare)
    forget(gone, full, rec)
  end
end
for i = first, #ARGV, 4 do
  local full, sid = ARGV[i], ARGV[i + 1]
  local bare, res = splitJid(full)
  local cur = redis.call('HGET', 'xmpp:s:' .. bare, res)
  local rec = cur and cjson.decode(cur)
  if rec and rec.sid ~= sid then
    table.insert(replaced, full)
    table.insert(replaced, sid)
  else
    local available, priority = ARGV[i + 2] == '1', tonumber(ARGV[i + 3])
    if not rec or rec.available ~= available or rec.priority ~= priority then
      redis.call('HSET', 'xmpp:s:' .. bare, res, cjson.encode({sid = sid, node = node, worker = worker, priority = priority, available = available}))
      redis.call('SADD', 'xmpp:n:' .. node, full)
      redis.call('PUBLISH', 'xmpp:inv', bare)
    end
  end
end
return {'ok', gone, replaced}`;

// The nodes whose lease holds (a dead node's records are stale until
// swept), by Redis's clock; their sessions are then read a page at a time.
const LIVE_NODES = `${NOW}
return redis.call('ZRANGEBYSCORE', 'xmpp:nodes', now, '+inf')`;

interface Stored {
  sid: string;
  node: string;
  worker: number;
  priority: number;
  available: boolean;
}

type Scripts = {
  xmppBind(key: string, ...args: string[]): Promise<[string, string?, string?, string[]?]>;
  xmppUnbind(key: string, ...args: string[]): Promise<number>;
  xmppPresence(key: string, ...args: string[]): Promise<number>;
  xmppDirected(key: string, ...args: string[]): Promise<number>;
  xmppMove(key: string, ...args: string[]): Promise<number>;
  xmppLease(node: string): Promise<number>;
  xmppReconcile(...args: string[]): Promise<[string, string[]?, string[]?]>;
  xmppLiveNodes(): Promise<string[]>;
};

export function defineScripts(r: Redis): Redis & Scripts {
  r.defineCommand('xmppBind', { numberOfKeys: 1, lua: BIND });
  r.defineCommand('xmppUnbind', { numberOfKeys: 1, lua: UNBIND });
  r.defineCommand('xmppPresence', { numberOfKeys: 1, lua: PRESENCE });
  r.defineCommand('xmppDirected', { numberOfKeys: 1, lua: DIRECTED });
  r.defineCommand('xmppMove', { numberOfKeys: 1, lua: MOVE });
  r.defineCommand('xmppLease', { numberOfKeys: 0, lua: LEASE });
  r.defineCommand('xmppReconcile', { numberOfKeys: 0, lua: RECONCILE });
  r.defineCommand('xmppLiveNodes', { numberOfKeys: 0, lua: LIVE_NODES });
  return r as Redis & Scripts;
}

function split(full: string): [string, string] {
  const i = full.indexOf('/');
  return [full.slice(0, i), full.slice(i + 1)];
}

function toRecord(bare: string, resource: string, json: string): SessionRecord {
  const s = JSON.parse(json) as Stored;
  return { jid: `${bare}/${resource}`, bare, sid: s.sid, node: s.node, worker: s.worker, priority: s.priority, available: s.available };
}

/**
 * One worker's view of the cluster registry. Lookups of a bare JID are
 * cached until Redis says (on xmpp:inv) that its records changed; a fetch
 * that raced with an invalidation is not cached.
 */
/** Accounts whose records one worker keeps in its cache. */
const MAX_CACHED = 100_000;

export class RedisRegistry implements SessionRegistry {
  private readonly r: Redis & Scripts;
  private readonly node: string;
  private readonly epoch: () => string;
  /** Bare JIDs with sessions, as last read (bounded: cleared when full). */
  private readonly cache = new Map<string, SessionRecord[]>();
  /** Bare JIDs being read now, with a count of the changes announced meanwhile. */
  private readonly reading = new Map<string, { n: number; changes: number }>();
  /** Redis round trips made, for the figures the benchmarks report. */
  roundTrips = 0;
  /** Whether this node may take other nodes' lapsed leases for deaths (Membership 'judging'). */
  judging = false;
  /** A session of this worker whose resource another session took (its kick was lost). */
  onReplaced: ((jid: string, sid: string) => void) | undefined;

  constructor(r: Redis, node: string, epoch: () => string) {
    this.r = defineScripts(r);
    this.node = node;
    this.epoch = epoch;
  }

  /** The nodes whose lease holds now, by Redis's clock. */
  liveNodes(): Promise<string[]> {
    this.roundTrips++;
    return this.r.xmppLiveNodes();
  }

  invalidate(bare: string): void {
    this.cache.delete(bare);
    const r = this.reading.get(bare);
    if (r) r.changes++;
  }

  invalidateAll(): void {
    this.cache.clear();
    for (const r of this.reading.values()) r.changes++;
  }

  async bind(req: BindRequest): Promise<BindOutcome> {
    const { rec } = req;
    const [, resource] = split(rec.jid);
    const stored: Stored = { sid: rec.sid, node: rec.node, worker: rec.worker, priority: rec.priority, available: rec.available };
    let res: [string, string?, string?, string[]?];
    try {
      this.roundTrips++;
      res = await this.r.xmppBind(K.sessions(rec.bare), rec.bare, resource, JSON.stringify(stored), req.policy, String(req.maxResources), req.exclusiveBare ? '1' : '0', this.node, this.epoch(), randomResource(), this.judging ? '1' : '0');
    } catch (err) {
      log.warn('bind failed: registry unreachable', { jid: rec.jid, err: (err as Error).message });
      return { ok: false, condition: 'unavailable' };
    }
    this.invalidate(rec.bare);
    const [status, bound = '', replaced = '', gone = []] = res;
    const dropped = gone.length > 0 ? { dropped: parseGone(gone) } : {};
    switch (status) {
      case 'ok': {
        const rec2 = { ...rec, jid: `${rec.bare}/${bound}` };
        return replaced ? { ok: true, rec: rec2, replaced: toRecord(rec.bare, bound, replaced), ...dropped } : { ok: true, rec: rec2, ...dropped };
      }
      case 'conflict':
      case 'resource-constraint':
        return { ok: false, condition: status, ...dropped };
      default:
        log.warn('bind refused: this node is fenced until it rejoins', { jid: rec.jid, epoch: this.epoch() });
        return { ok: false, condition: 'unavailable' };
    }
  }

  async unbind(jid: string, sid: string): Promise<void> {
    const [bare, resource] = split(jid);
    this.invalidate(bare);
    this.roundTrips++;
    await this.r.xmppUnbind(K.sessions(bare), bare, resource, sid, this.node).catch(() => {});
  }

  /**
   * Rejects while Redis is unreachable: the caller refuses the change (and
   * reconcile() brings the record in line with the session once Redis is
   * back). A session found replaced is reported to onReplaced.
   */
  async setPresence(jid: string, sid: string, available: boolean, priority: number): Promise<boolean> {
    const [bare, resource] = split(jid);
    this.invalidate(bare);
    this.roundTrips++;
    const res = await this.r.xmppPresence(K.sessions(bare), bare, resource, sid, available ? '1' : '0', String(priority), this.node, this.epoch());
    if (res === -2) this.onReplaced?.(jid, sid);
    // -1: this node is fenced; its heartbeat closes the session soon, and its
    // end was (or will be) announced by whoever removed its record.
    return res !== -1 && res !== -2;
  }

  async noteDirected(jid: string, sid: string, recipients: string[] | null): Promise<void> {
    const [bare, resource] = split(jid);
    this.roundTrips++;
    await this.r.xmppDirected(K.sessions(bare), resource, sid, recipients && recipients.length > 0 ? JSON.stringify(recipients) : '');
  }

  async move(jid: string, sid: string, node: string, worker: number): Promise<boolean> {
    const [bare, resource] = split(jid);
    this.invalidate(bare);
    this.roundTrips++;
    return (await this.r.xmppMove(K.sessions(bare), bare, resource, sid, node, String(worker), this.epoch())) === 1;
  }

  /** Whether `node` still holds its lease (by Redis's clock): a node that lapsed is dead to the cluster. */
  async leaseHeld(node: string): Promise<boolean> {
    this.roundTrips++;
    return (await this.r.xmppLease(node)) === 1;
  }

  /** Resolves once this registry's connection is up (it may come back after the one that saw Redis return). */
  connected(): Promise<void> {
    return ready(this.r);
  }

  /**
   * Brings this worker's records in line with its live sessions after an
   * outage in which Redis kept its data (see RECONCILE). Undefined when this
   * node is fenced: its heartbeat deals with that.
   */
  async reconcile(worker: number, live: { jid: string; sid: string; available: boolean; priority: number }[], binding: string[] = []): Promise<{ gone: Departed[]; replaced: { jid: string; sid: string }[] } | undefined> {
    const args = [this.node, this.epoch(), String(worker), String(binding.length), ...binding];
    for (const s of live) args.push(s.jid, s.sid, s.available ? '1' : '0', String(s.priority));
    this.roundTrips++;
    const [status, gone = [], replaced = []] = await this.r.xmppReconcile(...args);
    this.invalidateAll();
    if (status !== 'ok') return undefined;
    const pairs: { jid: string; sid: string }[] = [];
    for (let i = 0; i + 1 < replaced.length; i += 2) pairs.push({ jid: replaced[i], sid: replaced[i + 1] });
    return { gone: parseGone(gone), replaced: pairs };
  }

  /**
   * One SSCAN per page of each live node's set of sessions: Redis serves
   * other clients between pages, however many sessions there are. SSCAN
   * returns every element present throughout the scan at least once (one
   * may come twice if the set is resized meanwhile); COUNT is a hint, and
   * a small set (listpack) comes whole in one page.
   */
  async *onlinePages(pageSize = ONLINE_PAGE): AsyncGenerator<string[]> {
    this.roundTrips++;
    for (const node of await this.r.xmppLiveNodes()) {
      let cursor = '0';
      do {
        this.roundTrips++;
        const [next, page] = await this.r.sscan(K.node(node), cursor, 'COUNT', pageSize);
        cursor = next;
        if (page.length > 0) yield page;
      } while (cursor !== '0');
    }
  }

  async lookup(jid: string): Promise<SessionRecord | undefined> {
    const [bare] = split(jid);
    return (await this.resources(bare)).find((r) => r.jid === jid);
  }

  async resources(bare: string, fresh = false): Promise<SessionRecord[]> {
    const hit = fresh ? undefined : this.cache.get(bare);
    if (hit) return hit;
    let r = this.reading.get(bare);
    if (!r) this.reading.set(flat(bare), (r = { n: 0, changes: 0 }));
    r.n++;
    const before = r.changes;
    let recs: SessionRecord[];
    try {
      // Unreachable: the caller must not take "no session" for an answer
      // (it would store a message offline for a user who is online).
      this.roundTrips++;
      const all = await this.r.hgetall(K.sessions(bare));
      recs = Object.entries(all).map(([res, json]) => toRecord(bare, res, json));
    } finally {
      if (--r.n === 0) this.reading.delete(bare);
    }
    // Kept unless it changed while being read; an account with no session is
    // not kept (any address can be asked for: the cache would grow without
    // bound); nor beyond MAX_CACHED accounts. The key is a copy, not a
    // slice of the stanza's input.
    if (r.changes === before && recs.length > 0) {
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(flat(bare), recs);
    }
    return recs;
  }
}

/** The flat list forget() builds (clean() in membership.ts, BIND, RECONCILE): full JID, available ('1'/'0'), JSON list of directed presence recipients. */
export function parseGone(gone: string[]): Departed[] {
  const departed: Departed[] = [];
  for (let i = 0; i + 2 < gone.length; i += 3) {
    const jid = gone[i];
    let directed: string[] = [];
    try {
      const list: unknown = JSON.parse(gone[i + 2]);
      if (Array.isArray(list)) directed = list.filter((x): x is string => typeof x === 'string');
    } catch {
      // a damaged list: nobody to tell
    }
    departed.push({ jid, bare: jid.slice(0, jid.indexOf('/')), available: gone[i + 1] === '1', directed });
  }
  return departed;
}
