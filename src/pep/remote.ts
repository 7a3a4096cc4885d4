// Contacts of other servers for PEP (XEP-0163 §4.3): which of a remote
// contact's resources an account receives presence from, with the caps
// (XEP-0115) each advertised, so that a publish on any worker of any node can
// notify the ones that asked for the node. Learnt from the presence their
// server sends (modules/pep.ts), forgotten at their unavailable presence.
//
// Where it lives: wherever the account publishes, which is not where the
// remote presence came in (a peer's stream lands on any worker of any node).
// A single node keeps it in its hub (the main thread, acceptor/hub.ts), which
// every worker asks; a cluster keeps it in Redis, one hash per account
// (field: full JID; value: when it was last seen, and its caps), so that
// every node reads the same. Both are bounded: at most MAX_REMOTE_PER_ACCOUNT
// resources per account and, in the hub, MAX_REMOTE_TOTAL in all, the least
// recently seen dropped first (a resource whose server never said it left is
// dropped that way in the end); in Redis an account's hash expires
// REMOTE_TTL_S after its last change, and its total is bounded by the number
// of accounts times the per-account bound.
import type { Redis } from 'ioredis';
import { K } from '../registry/redis.ts';
import { CapsCache } from './caps.ts';
import type { Caps, SharedCaps } from './caps.ts';
import { HubCaller } from '../worker/hub-call.ts';

/** A resource of a contact on another server whose presence an account receives. */
export interface RemoteResource {
  /** Its full JID, normalised. */
  jid: string;
  /** The caps it last advertised (capsKey), or '' when its presence had none. */
  caps: string;
}

export const MAX_REMOTE_PER_ACCOUNT = 1000;
export const MAX_REMOTE_TOTAL = 100_000;
/** How long Redis keeps an account's remote resources after their last change. */
export const REMOTE_TTL_S = 30 * 86_400;

/** A caps key (capsKey) read back. */
export function capsOfKey(s: string): Pick<Caps, 'hash' | 'ver'> | undefined {
  const sp = s.indexOf(' ');
  return sp > 0 ? { hash: s.slice(0, sp), ver: s.slice(sp + 1) } : undefined;
}

export interface RemoteResources {
  /**
   * Available presence from `jid` (a full JID of another server) to `owner`,
   * advertising `caps` (capsKey, '' for none): it is kept, or refreshed.
   * Returns the caps it had before, or undefined when it was not kept (it
   * just became available, or was dropped meanwhile).
   */
  available(owner: string, jid: string, caps: string): Promise<string | undefined>;
  /** Unavailable presence from `jid`: that resource is forgotten, or every resource of it when it is a bare JID. */
  unavailable(owner: string, jid: string): Promise<void>;
  /** The account's remote resources. */
  list(owner: string): Promise<RemoteResource[]>;
}

const bareOf = (jid: string): string => {
  const slash = jid.indexOf('/');
  return slash < 0 ? jid : jid.slice(0, slash);
};

/** In memory (the hub of a single node; tests), least recently seen first in each map. */
export class MemoryRemoteResources implements RemoteResources {
  private readonly accounts = new Map<string, Map<string, string>>();
  /** Every kept resource, `owner\njid`, least recently seen first. */
  private readonly order = new Map<string, true>();
  private readonly perAccount: number;
  private readonly total: number;

  constructor(perAccount = MAX_REMOTE_PER_ACCOUNT, total = MAX_REMOTE_TOTAL) {
    this.perAccount = perAccount;
    this.total = total;
  }

  async available(owner: string, jid: string, caps: string): Promise<string | undefined> {
    let m = this.accounts.get(owner);
    if (!m) this.accounts.set(owner, (m = new Map()));
    const before = m.get(jid);
    m.delete(jid);
    m.set(jid, caps);
    const key = `${owner}\n${jid}`;
    this.order.delete(key);
    this.order.set(key, true);
    if (m.size > this.perAccount) this.drop(owner, m.keys().next().value!);
    if (this.order.size > this.total) {
      const oldest = this.order.keys().next().value!;
      const nl = oldest.indexOf('\n');
      this.drop(oldest.slice(0, nl), oldest.slice(nl + 1));
    }
    return before;
  }

  private drop(owner: string, jid: string): void {
    this.order.delete(`${owner}\n${jid}`);
    const m = this.accounts.get(owner);
    if (!m) return;
    m.delete(jid);
    if (m.size === 0) this.accounts.delete(owner);
  }

  async unavailable(owner: string, jid: string): Promise<void> {
    const m = this.accounts.get(owner);
    if (!m) return;
    if (jid.includes('/')) return this.drop(owner, jid);
    for (const k of [...m.keys()]) if (bareOf(k) === jid) this.drop(owner, k);
  }

  async list(owner: string): Promise<RemoteResource[]> {
    return [...(this.accounts.get(owner) ?? [])].map(([jid, caps]) => ({ jid, caps }));
  }

  /** How many are kept, in all. */
  get size(): number {
    return this.order.size;
  }
}

/**
 * Lua: available() for one account's hash. KEYS[1] the hash; ARGV: the full
 * JID, its caps, the per-account bound, the TTL in seconds. Values are
 * "<n>|<caps>", n counting the hash's writes (its field '', which no JID
 * is); past the bound the least recently seen goes. Returns the caps it had,
 * or nil.
 */
const AVAILABLE = `
local n = redis.call('HINCRBY', KEYS[1], '', 1)
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old and redis.call('HLEN', KEYS[1]) > tonumber(ARGV[3]) then
  local all = redis.call('HGETALL', KEYS[1])
  local oldest, at = nil, nil
  for i = 1, #all, 2 do
    if all[i] ~= '' then
      local seen = tonumber(string.match(all[i + 1], '^(%d+)|'))
      if at == nil or seen < at then oldest, at = all[i], seen end
    end
  end
  if oldest then redis.call('HDEL', KEYS[1], oldest) end
end
redis.call('HSET', KEYS[1], ARGV[1], n .. '|' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if not old then return false end
return string.sub(old, string.find(old, '|', 1, true) + 1)
`;

type PepScripts = { xmppPepRemote(key: string, jid: string, caps: string, max: string, ttl: string): Promise<string | null> };

/** In Redis (a cluster): one hash per account, K.pepRemote(owner). */
export function redisRemoteResources(redis: Redis, perAccount = MAX_REMOTE_PER_ACCOUNT, ttlSeconds = REMOTE_TTL_S): RemoteResources {
  const r = redis as Redis & Partial<PepScripts>;
  if (!r.xmppPepRemote) redis.defineCommand('xmppPepRemote', { numberOfKeys: 1, lua: AVAILABLE });
  const scripts = redis as Redis & PepScripts;
  return {
    async available(owner, jid, caps) {
      return (await scripts.xmppPepRemote(K.pepRemote(owner), jid, caps, String(perAccount), String(ttlSeconds))) ?? undefined;
    },
    async unavailable(owner, jid) {
      const key = K.pepRemote(owner);
      if (jid.includes('/')) {
        await redis.hdel(key, jid);
        return;
      }
      const gone = (await redis.hkeys(key)).filter((k) => k !== '' && bareOf(k) === jid);
      if (gone.length > 0) await redis.hdel(key, ...gone);
    },
    async list(owner) {
      const all = await redis.hgetall(K.pepRemote(owner));
      return Object.entries(all).flatMap(([jid, v]) => (jid === '' ? [] : [{ jid, caps: v.slice(v.indexOf('|') + 1) }]));
    },
  };
}

/**
 * What a single node's workers share through the hub: the remote resources
 * and the verified caps (SharedCaps, so that a ver one worker verified is
 * not asked again by another, and a publish on any worker knows the nodes a
 * remote resource asked for). Called by name with plain arguments (HubPep).
 */
export class PepShared {
  readonly remote: MemoryRemoteResources;
  readonly caps = new CapsCache();

  constructor(remote = new MemoryRemoteResources()) {
    this.remote = remote;
  }

  async call(m: string, a: unknown[]): Promise<unknown> {
    const s = (i: number) => String(a[i]);
    switch (m) {
      case 'available':
        return this.remote.available(s(0), s(1), s(2));
      case 'unavailable':
        return this.remote.unavailable(s(0), s(1));
      case 'list':
        return this.remote.list(s(0));
      case 'capsGet': {
        const nodes = this.caps.get({ hash: s(0), ver: s(1) });
        return nodes ? [...nodes] : null;
      }
      case 'capsSet':
        this.caps.set({ hash: s(0), ver: s(1) }, new Set((a[2] as unknown[]).map(String)));
        return null;
      default:
        throw new TypeError(`no such call: ${m}`);
    }
  }
}

/** A worker's view of the hub's PepShared: each call a message to the main thread and its answer. */
export class HubPep extends HubCaller implements RemoteResources, SharedCaps {
  async available(owner: string, jid: string, caps: string): Promise<string | undefined> {
    return ((await this.call('available', [owner, jid, caps])) as string | null) ?? undefined;
  }

  async unavailable(owner: string, jid: string): Promise<void> {
    await this.call('unavailable', [owner, jid]);
  }

  async list(owner: string): Promise<RemoteResource[]> {
    return (await this.call('list', [owner])) as RemoteResource[];
  }

  async get(c: Pick<Caps, 'hash' | 'ver'>): Promise<ReadonlySet<string> | undefined> {
    const nodes = (await this.call('capsGet', [c.hash, c.ver])) as string[] | null;
    return nodes ? new Set(nodes) : undefined;
  }

  async set(c: Pick<Caps, 'hash' | 'ver'>, nodes: ReadonlySet<string>): Promise<void> {
    await this.call('capsSet', [c.hash, c.ver, [...nodes]]);
  }
}
