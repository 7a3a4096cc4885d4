// Where a room's actor runs in a cluster, and the room's occupants in
// Redis for the node that takes it over (XEP-0045 in a cluster).
//
// Placement. A room runs on one node at a time: the one whose claim is in
// `xmpp:muc:claim:<room>` ({node, epoch, worker}). The first stanza to a
// room that nobody holds claims it for the node that routes it, on the
// worker of that node its name hashes to among the live ones (rendezvous
// hashing, so that the choice is the same from any worker). A claim is
// worth what its node's lease is worth: it holds while the node's epoch is
// the one it was made under and the node's lease (`xmpp:nodes`) has not
// lapsed by Redis's clock. So a room on a node that died is free once that
// node's lease lapses (XMPP_NODE_LEASE_MS), or once the node was fenced or
// restarted (a new epoch), and the next stanza to it claims it elsewhere;
// the rooms that have occupants are claimed at once when the node is judged
// dead (MucService.nodeDead), without waiting for a stanza. Within a node a
// claim moves to another worker only when its worker died (its thread is
// gone: nothing of the room ran on it any more).
//
// Fencing: two nodes never run the same room. The room's claim is tied to
// its node's own lease and epoch, as every registry write is
// (registry/redis.ts), rather than to a token of its own:
//  - a claim is taken, and an occupant list written, only by a Lua script
//    that checks, in one step, that the writer's epoch is current and its
//    lease holds, and that the claim is its own; a node that lost its lease
//    can neither claim a room nor write an occupant list;
//  - a claim is taken from a node only once that node's lease has lapsed
//    by Redis's clock (or its epoch moved on);
//  - a node acts for its rooms (archives a message, fans it out, writes the
//    room store) only while its own lease is known to hold by its own clock:
//    the main thread gives the workers the deadline of each renewal
//    measured from before the heartbeat was sent (`lease` from the hub),
//    which is never later than the deadline Redis holds, and a room checks
//    it before each stanza, and again after its message is archived and
//    before it is fanned out.
// So, with clocks that run at the same rate (not synchronised ones), a node
// stops acting for a room before another one may claim it, however long it
// was paused: after a pause it finds its deadline passed and answers with
// an error (wait) until its heartbeat tells it it was fenced; then it drops
// its rooms. What this cannot prevent is a write already sent to the
// database before the pause that lands after the takeover: at most one
// message per room, archived but, by the check after the archive, neither
// fanned out by the old node nor confirmed to its sender (who gets an
// error). A per-room token checked inside every database write would close
// that too, at the price of the archive and room stores knowing of
// placement; the lease check keeps them as they are.
//
// Occupants. Occupants are not durable: the room's actor holds them, and
// mirrors each change into `xmpp:muc:occ:<room>` (a hash: full JID → JSON
// of nickname, real bare JID, role, the node and worker of the session,
// its last presence cut to MAX_PRESENCE characters; at most the room's
// occupant bound of fields), through a script fenced as above. A node that
// takes a room over reads the room from the store and its occupants from
// there, so occupants keep the room without entering again; those whose
// session was on a dead node are then removed (status 333). The sets
// `xmpp:muc:placed:<node>` (rooms claimed by a node) and `xmpp:muc:on:<node>`
// (rooms with an occupant whose session is on that node) say which rooms
// to look at when a node dies; an entry that is stale costs one look.
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { NOW } from '../registry/redis.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { log } from '../log.ts';

export const MK = {
  claim: (room: string) => `xmpp:muc:claim:${room}`,
  occupants: (room: string) => `xmpp:muc:occ:${room}`,
  placed: (node: string) => `xmpp:muc:placed:${node}`,
  on: (node: string) => `xmpp:muc:on:${node}`,
};

/** A worker somewhere in the cluster. */
export interface Place {
  node: string;
  worker: number;
}

/** Lua: whether a node's epoch is `epoch` and its lease holds (by Redis's clock, `now`). */
const LIVE = `
local function live(node, epoch)
  if redis.call('HGET', 'xmpp:epochs', node) ~= epoch then return false end
  local lease = redis.call('ZSCORE', 'xmpp:nodes', node)
  return lease ~= false and tonumber(lease) >= now
end`;

// KEYS[1] claim; ARGV: room, node, epoch, worker, dead worker ('' : none).
// The holder if its claim holds (unless it is this node's own claim on a
// worker that died), else this node's new claim; 'fenced' when this node's
// own lease does not hold.
const CLAIM = `${NOW}${LIVE}
local cur = redis.call('GET', KEYS[1])
local c = cur and cjson.decode(cur)
if c and live(c.node, c.epoch) then
  local deadHere = c.node == ARGV[2] and c.epoch == ARGV[3] and ARGV[5] ~= '' and tostring(c.worker) == ARGV[5]
  if not deadHere then return {'held', c.node, tostring(c.worker)} end
end
if not live(ARGV[2], ARGV[3]) then return {'fenced'} end
redis.call('SET', KEYS[1], cjson.encode({node = ARGV[2], epoch = ARGV[3], worker = tonumber(ARGV[4])}))
redis.call('SADD', 'xmpp:muc:placed:' .. ARGV[2], ARGV[1])
if c and c.node ~= ARGV[2] then redis.call('SREM', 'xmpp:muc:placed:' .. c.node, ARGV[1]) end
return {'claimed', ARGV[2], ARGV[4]}`;

// KEYS[1] claim, KEYS[2] occupants; ARGV: room, node, epoch. The room is
// gone (destroyed, emptied, or there was none): its claim and occupants go,
// if the claim is still this node's.
const RELEASE = `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if c.node ~= ARGV[2] or c.epoch ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', 'xmpp:muc:placed:' .. ARGV[2], ARGV[1])
return 1`;

// KEYS[1] claim, KEYS[2] occupants; ARGV: room, node, epoch, change (JSON:
// replace, set [[field, value]...], del [field...], on [node...], off
// [node...]). 0, and nothing written, unless the claim is this node's and
// its lease holds. A replacement starts from an empty hash, and takes the
// room out of the 'on' set of the nodes its old entries named.
const MIRROR = `${NOW}${LIVE}
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if c.node ~= ARGV[2] or c.epoch ~= ARGV[3] or not live(ARGV[2], ARGV[3]) then return 0 end
local ch = cjson.decode(ARGV[4])
if ch.replace then
  local keep = {}
  for _, n in ipairs(ch.on) do keep[n] = true end
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
    local ok, e = pcall(cjson.decode, v)
    if ok and type(e) == 'table' and type(e.w) == 'string' and e.w ~= '' and not keep[e.w] then
      redis.call('SREM', 'xmpp:muc:on:' .. e.w, ARGV[1])
    end
  end
  redis.call('DEL', KEYS[2])
end
for _, kv in ipairs(ch.set) do redis.call('HSET', KEYS[2], kv[1], kv[2]) end
for _, f in ipairs(ch.del) do redis.call('HDEL', KEYS[2], f) end
for _, n in ipairs(ch.on) do redis.call('SADD', 'xmpp:muc:on:' .. n, ARGV[1]) end
for _, n in ipairs(ch.off) do redis.call('SREM', 'xmpp:muc:on:' .. n, ARGV[1]) end
return 1`;

type Scripts = {
  mucClaim(key: string, ...args: string[]): Promise<[string, string?, string?]>;
  mucRelease(claim: string, occupants: string, ...args: string[]): Promise<number>;
  mucMirror(claim: string, occupants: string, ...args: string[]): Promise<number>;
};

/** One change of a room's occupant list, as MIRROR applies it. */
export interface MirrorChange {
  replace: boolean;
  set: [string, string][];
  del: string[];
  on: string[];
  off: string[];
}

/** Where a room's occupants are kept for another node (the Redis side of muc/occupants.ts). */
export interface MirrorStore {
  /** Writes a change; false when the claim is no longer this node's (the room must stop here). Rejects when Redis cannot be reached. */
  write(room: string, change: MirrorChange): Promise<boolean>;
  /** The room's occupant entries, full JID → JSON. */
  read(room: string): Promise<Map<string, string>>;
}

/** Where a room's actor runs: this worker ('here'), or another (the stanza is passed on there). */
export interface RoomPlacement {
  /** `fresh`: not from what this worker remembers (a stanza passed there was not taken). */
  place(room: string, opts?: { fresh?: boolean }): Promise<'here' | Place>;
  /** What passed to `place` was not taken: forgotten, so that the next place() asks again. */
  forget?(room: string): void;
  /** The room is gone (or there was none): its claim goes, if it is still this node's. */
  release?(room: string): Promise<void>;
}

/** Entries of a worker's memory of claims (cleared when full: it is only a cache). */
const MAX_CACHED = 100_000;

/** The live worker of `workers` a room hashes to (rendezvous: the same answer from every worker that knows the same workers). */
export function workerFor(room: string, workers: readonly number[]): number {
  let best = workers[0];
  let top = -1;
  for (const w of workers) {
    const score = createHash('sha1').update(`${room}\0${w}`).digest().readUInt32BE(0);
    if (score > top) {
      top = score;
      best = w;
    }
  }
  return best;
}

export interface ClusterPlacementDeps {
  redis: Redis;
  node: string;
  epoch: () => string;
  /** This worker's index. */
  worker: () => number;
  /** The indexes of this node's live workers, this one's included. */
  workers: () => number[];
}

/** A cluster's placement and occupant store, for one worker. */
export class ClusterRooms implements RoomPlacement, MirrorStore {
  private readonly r: Redis & Scripts;
  private readonly d: ClusterPlacementDeps;
  /** What this worker last learnt of claims: room → place. */
  private readonly known = new Map<string, Place>();

  constructor(d: ClusterPlacementDeps) {
    d.redis.defineCommand('mucClaim', { numberOfKeys: 1, lua: CLAIM });
    d.redis.defineCommand('mucRelease', { numberOfKeys: 2, lua: RELEASE });
    d.redis.defineCommand('mucMirror', { numberOfKeys: 2, lua: MIRROR });
    this.r = d.redis as Redis & Scripts;
    this.d = d;
  }

  async place(room: string, opts: { fresh?: boolean } = {}): Promise<'here' | Place> {
    const me = this.d.node;
    const live = this.d.workers();
    let dead = '';
    const known = opts.fresh ? undefined : this.known.get(room);
    if (known) {
      if (known.node !== me || live.includes(known.worker)) return this.answer(known);
      // Our own claim, on a worker of ours that died: another of ours takes it.
      dead = String(known.worker);
    }
    const [status, node = '', worker = ''] = await this.r.mucClaim(MK.claim(room), room, me, this.d.epoch(), String(workerFor(room, live)), dead);
    if (status === 'fenced') throw new StanzaError('service-unavailable', 'this node is rejoining the cluster; try again shortly', 'wait');
    const place = { node, worker: Number(worker) };
    if (status === 'held' && node === me && !live.includes(place.worker)) {
      // Held by a worker of ours that died (learnt from Redis, not remembered).
      const [again, n2 = '', w2 = ''] = await this.r.mucClaim(MK.claim(room), room, me, this.d.epoch(), String(workerFor(room, live)), worker);
      if (again === 'fenced') throw new StanzaError('service-unavailable', 'this node is rejoining the cluster; try again shortly', 'wait');
      return this.answer(this.remember(room, { node: n2, worker: Number(w2) }));
    }
    return this.answer(this.remember(room, place));
  }

  private remember(room: string, place: Place): Place {
    if (this.known.size >= MAX_CACHED) this.known.clear();
    this.known.set(room, place);
    return place;
  }

  private answer(place: Place): 'here' | Place {
    return place.node === this.d.node && place.worker === this.d.worker() ? 'here' : place;
  }

  forget(room: string): void {
    this.known.delete(room);
  }

  /** A node died, or this one was fenced: nothing remembered of its claims holds. */
  forgetNode(node: string): void {
    for (const [room, p] of this.known) if (p.node === node) this.known.delete(room);
  }

  forgetAll(): void {
    this.known.clear();
  }

  async release(room: string): Promise<void> {
    this.known.delete(room);
    await this.r.mucRelease(MK.claim(room), MK.occupants(room), room, this.d.node, this.d.epoch()).catch((err: unknown) => log.debug('MUC: a room claim could not be released', { room, err: String(err) }));
  }

  async write(room: string, change: MirrorChange): Promise<boolean> {
    return (await this.r.mucMirror(MK.claim(room), MK.occupants(room), room, this.d.node, this.d.epoch(), JSON.stringify(change))) === 1;
  }

  async read(room: string): Promise<Map<string, string>> {
    return new Map(Object.entries(await this.r.hgetall(MK.occupants(room))));
  }

  /**
   * The rooms to look at when `node` died or lost its epoch: those it
   * claimed that have occupants, and those where one of its sessions was an
   * occupant; a page at a time.
   */
  async *roomsOf(node: string): AsyncGenerator<string[]> {
    for (const key of [MK.placed(node), MK.on(node)]) {
      let cursor = '0';
      do {
        const [next, page] = await this.r.sscan(key, cursor, 'COUNT', 500);
        cursor = next;
        if (page.length === 0) continue;
        if (key === MK.on(node)) {
          yield page;
          continue;
        }
        // Claimed rooms with nobody in them wait for their next stanza.
        const sizes = await Promise.all(page.map((room) => this.r.hlen(MK.occupants(room))));
        const busy = page.filter((_, i) => sizes[i] > 0);
        if (busy.length > 0) yield busy;
      } while (cursor !== '0');
    }
  }

  /** This node's rooms whose claim names `worker` (it died): a page at a time. */
  async *roomsOfWorker(worker: number): AsyncGenerator<string[]> {
    let cursor = '0';
    do {
      const [next, page] = await this.r.sscan(MK.placed(this.d.node), cursor, 'COUNT', 500);
      cursor = next;
      if (page.length === 0) continue;
      const claims = await Promise.all(page.map((room) => this.r.get(MK.claim(room))));
      const theirs = page.filter((_, i) => {
        try {
          const c = JSON.parse(claims[i] ?? 'null') as { node?: string; worker?: number } | null;
          return c?.node === this.d.node && c.worker === worker;
        } catch {
          return false;
        }
      });
      if (theirs.length > 0) yield theirs;
    } while (cursor !== '0');
  }
}
