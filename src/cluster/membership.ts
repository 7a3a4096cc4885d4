// Node membership with leases, in the main thread of each node. The node
// renews its lease on a heartbeat; survivors remove the sessions of a node
// whose lease lapsed and bump its epoch, which fences it: every write a node
// makes carries its epoch, so a node that comes back from a pause cannot
// write as if its sessions were still registered. It learns it was fenced
// from its next heartbeat, closes its sessions and rejoins with a clean slate.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Departed } from '../presence/presence.ts';
import { NOW, RECORDS, parseGone } from '../registry/redis.ts';
import { log, guarded } from '../log.ts';

/**
 * Removes every session record a node left behind; returns how many, and
 * appends to \`gone\` what the survivors need to announce each one's end:
 * {full JID, available, JSON list of directed presence recipients}.
 */
const CLEAN = `${RECORDS}
local function clean(node, gone)
  local members = redis.call('SMEMBERS', 'xmpp:n:' .. node)
  for _, full in ipairs(members) do
    local bare, res = splitJid(full)
    local cur = redis.call('HGET', 'xmpp:s:' .. bare, res)
    if cur then
      local rec = cjson.decode(cur)
      if rec.node == node then
        redis.call('HDEL', 'xmpp:s:' .. bare, res)
        redis.call('PUBLISH', 'xmpp:inv', bare)
        forget(gone, full, rec)
      end
    end
  end
  redis.call('DEL', 'xmpp:n:' .. node)
  return #members
end`;

// ARGV: node, leaseMs, instance, rejoin. A node (re)starting under a name
// starts from a clean slate; the process that holds the name is recorded.
// Returns {epoch, what clean() found}: sessions a crashed predecessor left.
// A fenced node rejoining finds {'superseded'} if another process has taken
// its name since: it must not clean that one's sessions.
const JOIN = `${NOW}${CLEAN}
if ARGV[4] == '1' then
  local holder = redis.call('HGET', 'xmpp:instances', ARGV[1])
  if holder and holder ~= ARGV[3] then return {'superseded'} end
end
local gone = {}
clean(ARGV[1], gone)
local epoch = redis.call('HINCRBY', 'xmpp:epochs', ARGV[1], 1)
redis.call('ZADD', 'xmpp:nodes', now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', 'xmpp:instances', ARGV[1], ARGV[3])
return {tostring(epoch), gone}`;

// ARGV: node, epoch, leaseMs, instance. 'superseded' when another process
// has joined under this node's name since (a restart while this one was
// paused, or two processes given one XMPP_NODE_ID).
const HEARTBEAT = `${NOW}
local e = redis.call('HGET', 'xmpp:epochs', ARGV[1])
if not e then
  -- Redis lost its data (restarted without persistence): re-establish.
  redis.call('HSET', 'xmpp:epochs', ARGV[1], ARGV[2])
  redis.call('HSET', 'xmpp:instances', ARGV[1], ARGV[4])
  redis.call('ZADD', 'xmpp:nodes', now + tonumber(ARGV[3]), ARGV[1])
  return 'reset'
end
local holder = redis.call('HGET', 'xmpp:instances', ARGV[1])
if holder and holder ~= ARGV[4] then return 'superseded' end
if e ~= ARGV[2] or not redis.call('ZSCORE', 'xmpp:nodes', ARGV[1]) then return 'fenced' end
redis.call('ZADD', 'xmpp:nodes', now + tonumber(ARGV[3]), ARGV[1])
return 'ok'`;

// ARGV: self. Cleans every node whose lease lapsed, and fences it.
const SWEEP = `${NOW}${CLEAN}
local dead = redis.call('ZRANGEBYSCORE', 'xmpp:nodes', '-inf', '(' .. now)
local out = {}
for _, node in ipairs(dead) do
  if node ~= ARGV[1] then
    local gone = {}
    local n = clean(node, gone)
    redis.call('ZREM', 'xmpp:nodes', node)
    redis.call('HINCRBY', 'xmpp:epochs', node, 1)
    table.insert(out, {node, tostring(n), gone})
  end
end
return out`;

// ARGV: node, epoch. A clean leave: the sessions were closed already.
const LEAVE = `${CLEAN}
if redis.call('HGET', 'xmpp:epochs', ARGV[1]) ~= ARGV[2] then return 0 end
clean(ARGV[1], nil)
redis.call('ZREM', 'xmpp:nodes', ARGV[1])
redis.call('HINCRBY', 'xmpp:epochs', ARGV[1], 1)
return 1`;

type Scripts = {
  xmppJoin(...args: string[]): Promise<[string, string[]?]>;
  xmppHeartbeat(...args: string[]): Promise<string>;
  xmppSweep(...args: string[]): Promise<[string, string, string[]][]>;
  xmppLeave(...args: string[]): Promise<number>;
};

export interface MembershipEvents {
  epoch: [epoch: string];
  /** The node lost its lease: its sessions must close (without a word: join() announces them). */
  fenced: [];
  /** Another process took this node's name: this one must stop serving. */
  superseded: [];
  /** Redis came back empty: local sessions must be registered again. */
  reset: [];
  /** Redis came back with its data after an outage: local records must be reconciled. */
  recovered: [];
  /**
   * Whether this node may judge others dead (drop a lapsed node's records
   * when it binds): only after a whole lease of its own successful
   * heartbeats, so that right after an outage every node saw, nobody takes
   * the others' lapsed leases for deaths.
   */
  judging: [on: boolean];
  /**
   * The lease was taken or renewed: it holds at least until then, by this
   * process's clock (measured from before the command was sent, so never
   * later than what Redis holds, clocks running at the same rate).
   */
  lease: [until: number];
  dead: [node: string, sessions: number, departed: Departed[]];
}

export class Membership extends EventEmitter<MembershipEvents> {
  private readonly r: Redis & Scripts;
  readonly node: string;
  private readonly leaseMs: number;
  epoch = '';
  /** The last deadline of the lease this node knows (see the 'lease' event); 0 before it joined. */
  leaseUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Since when heartbeats have succeeded without a break (undefined: not now). */
  private healthySince: number | undefined;
  private beating = false;
  /** This process, as opposed to another one given the same node name. */
  private readonly instance = randomUUID();

  constructor(r: Redis, node: string, leaseMs: number) {
    super();
    r.defineCommand('xmppJoin', { numberOfKeys: 0, lua: JOIN });
    r.defineCommand('xmppHeartbeat', { numberOfKeys: 0, lua: HEARTBEAT });
    r.defineCommand('xmppSweep', { numberOfKeys: 0, lua: SWEEP });
    r.defineCommand('xmppLeave', { numberOfKeys: 0, lua: LEAVE });
    this.r = r as Redis & Scripts;
    this.node = node;
    this.leaseMs = leaseMs;
  }

  /**
   * Takes a lease under this node's name, from a clean slate: the sessions a
   * previous run under the same name left (it crashed before its lease
   * lapsed) are removed, and announced with the 'dead' event.
   */
  async join(rejoin = false): Promise<string> {
    const sent = Date.now();
    const [epoch, gone = []] = await this.r.xmppJoin(this.node, String(this.leaseMs), this.instance, rejoin ? '1' : '0');
    if (epoch === 'superseded') {
      this.supersede();
      return this.epoch;
    }
    this.epoch = epoch;
    this.setJudging(false);
    this.renewed(sent);
    const departed = parseGone(gone);
    if (departed.length > 0) {
      log.warn('removed the sessions a previous run of this node left', { node: this.node, sessions: departed.length });
      this.emit('dead', this.node, departed.length, departed);
    }
    this.healthySince = Date.now();
    log.info('joined the cluster', { node: this.node, epoch: this.epoch });
    this.emit('epoch', this.epoch);
    return this.epoch;
  }

  start(): void {
    const every = Math.max(50, Math.floor(this.leaseMs / 5));
    // beat() catches what Redis throws; guarded() also what a listener does.
    this.timer = setInterval(guarded('heartbeat', () => this.beat()), every);
    this.timer.unref();
  }

  async beat(): Promise<void> {
    if (this.beating) return;
    this.beating = true;
    try {
      const sent = Date.now();
      const res = await this.r.xmppHeartbeat(this.node, this.epoch, String(this.leaseMs), this.instance);
      const wasDown = this.healthySince === undefined;
      this.healthySince ??= Date.now();
      if (res === 'superseded') return this.supersede();
      if (res === 'fenced') {
        log.warn('this node lost its lease: closing its sessions and rejoining', { node: this.node, epoch: this.epoch });
        this.emit('fenced');
        await this.join(true);
        return;
      }
      this.renewed(sent);
      if (res === 'reset') {
        log.warn('the registry lost its data: re-registering local sessions', { node: this.node });
        this.emit('reset');
      } else if (wasDown) {
        log.info('the registry is back: reconciling local sessions with their records', { node: this.node });
        this.emit('recovered');
      }
      // Judge others only after a whole lease of our own health, so that a
      // Redis outage that every node saw does not make them kill each other.
      this.setJudging(Date.now() - this.healthySince >= this.leaseMs);
      if (this.judging) {
        for (const [node, n, gone] of await this.r.xmppSweep(this.node)) {
          log.warn('removed the sessions of a node whose lease lapsed', { node, sessions: Number(n) });
          this.emit('dead', node, Number(n), parseGone(gone));
        }
      }
    } catch (err) {
      if (this.healthySince !== undefined) log.warn('heartbeat failed', { node: this.node, err: (err as Error).message });
      this.healthySince = undefined;
      this.setJudging(false);
    } finally {
      this.beating = false;
    }
  }

  judging = false;

  private renewed(sent: number): void {
    this.leaseUntil = sent + this.leaseMs;
    this.emit('lease', this.leaseUntil);
  }

  private setJudging(on: boolean): void {
    if (on === this.judging) return;
    this.judging = on;
    this.emit('judging', on);
  }

  private supersede(): void {
    log.error("another process joined the cluster under this node's name (XMPP_NODE_ID); this one stops serving", { node: this.node });
    clearInterval(this.timer);
    this.setJudging(false);
    this.emit('superseded');
  }

  async leave(): Promise<void> {
    clearInterval(this.timer);
    await this.r.xmppLeave(this.node, this.epoch).catch(() => {});
    this.r.disconnect();
  }
}
