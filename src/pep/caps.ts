// XEP-0115 entity capabilities as PEP reads them: the <c/> a client puts in
// its presence names its disco#info by a hash (ver); the server asks a
// client for it once per ver (XEP-0115 §6.3), checks that the answer hashes
// to that ver (§5.4: a ver not verified is not cached for others, or a
// client could poison what every client with that ver gets), and keeps the
// nodes it asked notifications of ('NODE+notify', XEP-0163 §4.2). Kept per
// worker, one entry per ver whatever the number of sessions advertising it.
//
// What a client can make the server keep: a ver it makes up costs it one
// answer that hashes to it, so verified vers are as many as clients care
// to make. Each is bounded (MAX_NOTIFY_NODES names, MAX_NOTIFY_BYTES in
// all), and so is their number: CapsCache per worker and in a single
// node's hub, and in Redis (a cluster) MAX_SHARED_CAPS vers, the least
// recently written or read going first (an index in the order of their
// last use, kept with them by one script), each also expiring
// SHARED_CAPS_TTL_S after its last use. An unverified answer is never shared: it serves the session
// that gave it, in that worker's memory, until its caps change.
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import type { Redis } from 'ioredis';
import { K } from '../registry/redis.ts';

export const NS_CAPS = 'http://jabber.org/protocol/caps';
const NS_DATA = 'jabber:x:data';
const NOTIFY = '+notify';

/** The IANA hash names XEP-0115 §5.1 uses, as node:crypto names them. */
const HASHES: Record<string, string> = { 'sha-1': 'sha1', 'sha-224': 'sha224', 'sha-256': 'sha256', 'sha-384': 'sha384', 'sha-512': 'sha512' };

export interface Caps {
  hash: string;
  node: string;
  ver: string;
}

/** The caps a presence carries, if any. */
export function capsOf(presence: Element): Caps | undefined {
  const c = presence.getChild('c', NS_CAPS);
  const { hash, node, ver } = c?.attrs ?? {};
  if (typeof hash !== 'string' || typeof node !== 'string' || typeof ver !== 'string' || ver === '' || node === '') return undefined;
  return { hash, node, ver };
}

const isEl = (c: Element | string): c is Element => typeof c !== 'string';
/** i;octet ordering (RFC 4790), as §5.1 sorts by. */
const octets = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/**
 * XEP-0115 §5.1: the verification string of a disco#info <query/>, or
 * undefined when §5.4 says to reject it (duplicate identities, features or
 * forms; a form whose FORM_TYPE is not one hidden field).
 */
export function verificationString(query: Element): string | undefined {
  const kids = query.children.filter(isEl);
  // '<' separates the parts of the string: one inside a part would let another answer hash the same
  // (one identity name holding the features), the ambiguity XEP-0390 was made for. Refused.
  if (hasSeparator(query)) return undefined;
  const ids = kids.filter((k) => k.name === 'identity').map((i) => `${i.attrs.category ?? ''}/${i.attrs.type ?? ''}/${i.attrs['xml:lang'] ?? ''}/${i.attrs.name ?? ''}`);
  const features = kids.filter((k) => k.name === 'feature').map((f) => String(f.attrs.var ?? ''));
  if (new Set(ids).size !== ids.length || new Set(features).size !== features.length) return undefined;
  let s = [...ids].sort(octets).map((i) => `${i}<`).join('') + [...features].sort(octets).map((f) => `${f}<`).join('');
  const forms: { type: string; text: string }[] = [];
  for (const x of kids.filter((k) => k.name === 'x' && k.attrs.xmlns === NS_DATA)) {
    const fields = x.getChildren('field');
    const ft = fields.filter((f) => f.attrs.var === 'FORM_TYPE');
    // §5.4 3.6: a form without FORM_TYPE is ignored; with a FORM_TYPE that is not hidden, or several, rejected.
    if (ft.length === 0) continue;
    if (ft.length > 1 || ft[0].attrs.type !== 'hidden' || ft[0].getChildren('value').length !== 1) return undefined;
    const type = ft[0].getChildText('value') ?? '';
    const rest = fields.filter((f) => f.attrs.var !== 'FORM_TYPE').sort((a, b) => octets(String(a.attrs.var ?? ''), String(b.attrs.var ?? '')));
    const text = `${type}<` + rest.map((f) => `${f.attrs.var ?? ''}<` + f.getChildren('value').map((v) => v.getText()).sort(octets).map((v) => `${v}<`).join('')).join('');
    forms.push({ type, text });
  }
  if (new Set(forms.map((f) => f.type)).size !== forms.length) return undefined;
  s += forms.sort((a, b) => octets(a.type, b.type)).map((f) => f.text).join('');
  return s;
}

/** §5.1 steps 7-8: whether the answer hashes to the ver it was asked for. False for a hash function not known here. */
export function verifies(caps: Pick<Caps, 'hash' | 'ver'>, query: Element): boolean {
  const algo = HASHES[caps.hash.toLowerCase()];
  const s = algo ? verificationString(query) : undefined;
  return s !== undefined && createHash(algo).update(s, 'utf8').digest('base64') === caps.ver;
}

/** Whether any text the verification string is made of holds its separator '<'. */
function hasSeparator(query: Element): boolean {
  for (const k of query.children.filter(isEl)) {
    for (const v of Object.values(k.attrs)) if (typeof v === 'string' && v.includes('<')) return true;
    for (const f of k.getChildren('field')) {
      if (String(f.attrs.var ?? '').includes('<')) return true;
      for (const v of f.getChildren('value')) if (v.getText().includes('<')) return true;
    }
  }
  return false;
}

/** Nodes one ver may ask notifications of, the longest name kept, and their names' bytes in all: a client's features are not a store. */
export const MAX_NOTIFY_NODES = 64;
export const MAX_NOTIFY_NAME = 1024;
export const MAX_NOTIFY_BYTES = 8 * 1024;

/** The nodes a disco#info <query/> asks notifications of (XEP-0163 §4.2: features 'NODE+notify'); undefined past the bounds (such an answer is not cached). */
export function notifyNodes(query: Element): Set<string> | undefined {
  const out = new Set<string>();
  let bytes = 0;
  for (const f of query.getChildren('feature')) {
    const v = String(f.attrs.var ?? '');
    if (v.endsWith(NOTIFY) && v.length > NOTIFY.length) {
      const name = v.slice(0, -NOTIFY.length);
      bytes += Buffer.byteLength(name, 'utf8');
      if (name.length > MAX_NOTIFY_NAME || out.size >= MAX_NOTIFY_NODES || bytes > MAX_NOTIFY_BYTES) return undefined;
      out.add(name);
    }
  }
  return out;
}

/** The key of a ver, whatever the case of its hash's name. */
export const capsKey = (c: Pick<Caps, 'hash' | 'ver'>): string => `${c.hash.toLowerCase()} ${c.ver}`;

/** Verified vers and their +notify nodes, shared by every worker of a cluster: what one asked, none asks again. */
export interface SharedCaps {
  get(c: Pick<Caps, 'hash' | 'ver'>): Promise<ReadonlySet<string> | undefined>;
  set(c: Pick<Caps, 'hash' | 'ver'>, nodes: ReadonlySet<string>): Promise<void>;
}

/** How long Redis keeps a ver no worker wrote or read (clients change their ver with each release). */
export const SHARED_CAPS_TTL_S = 7 * 86_400;
/** How many vers Redis keeps for the cluster (each at most MAX_NOTIFY_BYTES of names): the least recently used go first. */
export const MAX_SHARED_CAPS = 10_000;

/**
 * Lua: the ver ARGV[1] marked as the most recently used in the index
 * KEYS[1] (its score one above the highest: an order, not a clock, so that
 * two uses in one millisecond are told apart), which lives as long as the
 * vers do (ARGV[2], seconds).
 */
const TOUCH = `
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[1], (top[2] and tonumber(top[2]) or 0) + 1, ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
`;

/**
 * Lua: set() of one ver. KEYS[1] the index, KEYS[2] the ver's key; ARGV:
 * capsKey, the TTL in seconds, the nodes (JSON), the bound, the prefix of
 * the vers' keys. Past the bound the least recently used go, with their
 * keys (those expired meanwhile are the least recently used: they go
 * first).
 */
const SET = `
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[2]))
${TOUCH}
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[1], over)
  for i = 1, #gone, 2 do redis.call('DEL', ARGV[5] .. gone[i]) end
end
`;

/** Lua: get() of one ver, which counts as a use (its place in the index, its TTL). KEYS, ARGV[1] and ARGV[2] as SET's. */
const GET = `
local v = redis.call('GET', KEYS[2])
if not v then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return false
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
${TOUCH}
return v
`;

type CapsScripts = {
  xmppCapsSet(index: string, key: string, hashVer: string, ttl: string, nodes: string, max: string, prefix: string): Promise<unknown>;
  xmppCapsGet(index: string, key: string, hashVer: string, ttl: string): Promise<string | null>;
};

/**
 * SharedCaps in Redis (cluster mode): one key per ver, its nodes as JSON,
 * expiring `ttlSeconds` after it was last written or read, at most `max`
 * of them (K.capsIndex). Only verified vers are written.
 */
export function redisCaps(redis: Redis, ttlSeconds = SHARED_CAPS_TTL_S, max = MAX_SHARED_CAPS): SharedCaps {
  const r = redis as Redis & Partial<CapsScripts>;
  if (!r.xmppCapsSet) redis.defineCommand('xmppCapsSet', { numberOfKeys: 2, lua: SET });
  if (!r.xmppCapsGet) redis.defineCommand('xmppCapsGet', { numberOfKeys: 2, lua: GET });
  const scripts = redis as Redis & CapsScripts;
  return {
    async get(c) {
      const k = capsKey(c);
      const v = await scripts.xmppCapsGet(K.capsIndex, K.caps(k), k, String(ttlSeconds));
      if (v === null) return undefined;
      const list = JSON.parse(v) as unknown;
      return Array.isArray(list) ? new Set(list.filter((x): x is string => typeof x === 'string')) : undefined;
    },
    async set(c, nodes) {
      const k = capsKey(c);
      await scripts.xmppCapsSet(K.capsIndex, K.caps(k), k, String(ttlSeconds), JSON.stringify([...nodes]), String(max), K.caps(''));
    },
  };
}

/** Verified vers and their +notify nodes, the least recently used dropped past `max`. */
export class CapsCache {
  private readonly map = new Map<string, ReadonlySet<string>>();
  private readonly max: number;
  constructor(max = 10_000) {
    this.max = max;
  }
  get(c: Pick<Caps, 'hash' | 'ver'>): ReadonlySet<string> | undefined {
    const k = capsKey(c);
    const v = this.map.get(k);
    if (v) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(c: Pick<Caps, 'hash' | 'ver'>, nodes: ReadonlySet<string>): void {
    const k = capsKey(c);
    this.map.delete(k);
    this.map.set(k, nodes);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }
  get size(): number {
    return this.map.size;
  }
}
