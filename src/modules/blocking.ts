// XEP-0191 Blocking Command (urn:xmpp:blocking): each account's blocklist,
// read and changed on its bare JID (§5.2-§5.5), pushed to the account's
// resources that requested it, wherever they are; and enforced for every
// stanza, both ways, on every node: what a user sends to a blocked JID is
// refused (message, iq: not-acceptable with <blocked/>) or dropped
// (presence), what a blocked JID sends the user is refused as if the user
// did not exist (message, iq get/set: service-unavailable) or dropped.
//
// Subscription cancellations (RFC 6121 §3.2, §3.3, and those a roster
// removal sends, §2.5.2) are where blocking and the rosters meet, and are
// treated alike on every path (a client's presence, a roster removal; to an
// account here or on a peer server):
// - the user's own cancellations to a JID it blocked go: they are not
//   communication but the end of the relation the block is about, and
//   without them the other side's roster would go on claiming a
//   subscription the user ended (RFC 6121 MUSTs, which §5.3's "MUST NOT
//   route" is read as not overriding for these two types only);
// - nothing from a JID the user blocked reaches the user, cancellations
//   included (§5.3: "MUST NOT deliver any XML stanzas from the contact to
//   the user", presence subscriptions named): the sender's roster changes
//   as it asked, the user's stays as it was and hears nothing, as when the
//   sender is on a peer server.
//
// Enforcement must cost nothing for the accounts that block nobody: each
// worker keeps the set of accounts whose blocklist is not empty (read once
// at start), so that a stanza to or from anyone else is let through on two
// set lookups. The lists of those accounts are read once and kept; a change
// reaches every other worker and node (Router.changed), and each drops its
// copy (and counts the account as a blocker until it reads the list again)
// and acknowledges it before the client is answered (worker.ts
// announceChange says what is guaranteed when one does not in time).
import { randomBytes } from 'node:crypto';
import { Element, clone } from 'ltx';
import type { ServerModule, IqHandler, Verdict } from './module.ts';
import type { Session } from '../session/session.ts';
import type { SessionRecord } from '../registry/registry.ts';
import type { RosterStore } from '../roster/store.ts';
import type { Only } from '../worker/wire.ts';
import type { DeliverOptions } from '../presence/presence.ts';
import { StanzaError, errorReply } from '../xmpp/errors.ts';
import type { Jid } from '../xmpp/jid.ts';
import { JidError } from '../xmpp/jid.ts';
import { type BlockStore, BlocklistFullError, blocks, normalizeBlocked } from '../blocking/store.ts';
import { log } from '../log.ts';

export const NS_BLOCKING = 'urn:xmpp:blocking';
export const NS_BLOCKING_ERRORS = 'urn:xmpp:blocking:errors';
/**
 * What the blocklists kept per worker (those of the accounts that block
 * someone, read lately) may hold in all: JIDs, and bytes as counted by
 * listBytes. Lists are dropped from the least recently used until a new one
 * fits; the count of lists follows (a list costs LIST_BYTES at least).
 */
export const CACHE_MAX_ENTRIES = 200_000;
export const CACHE_MAX_BYTES = 16 * 1024 * 1024;
/** What one JID kept costs besides its characters (the set's slot, the string's header), and one list besides its JIDs. */
const ENTRY_BYTES = 48;
const LIST_BYTES = 256;
/** An estimate of what a list holds in memory: its JIDs' UTF-16 units, two bytes each, and the overheads. */
export function listBytes(user: string, list: ReadonlySet<string>): number {
  let n = LIST_BYTES + 2 * user.length;
  for (const j of list) n += ENTRY_BYTES + 2 * j.length;
  return n;
}
const CANCELLATIONS = new Set(['unsubscribe', 'unsubscribed']);
const SUBSCRIPTIONS = new Set(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed']);
/** How long a stanza waits for the blocklists to be read at start before it gets a temporary error. */
const LOAD_WAIT_MS = 2000;

/** §5.3: not-acceptable, with the application condition <blocked/>. */
export class BlockedError extends StanzaError {
  constructor() {
    super('not-acceptable', 'this address is blocked; unblock it first');
  }
  override toElement(by?: string): Element {
    const el = super.toElement(by);
    el.c('blocked', { xmlns: NS_BLOCKING_ERRORS });
    return el;
  }
}

/** What blocking needs of the router. */
export interface BlockingRouting {
  resources(bare: string): Promise<SessionRecord[]>;
  available(bare: string): Promise<SessionRecord[]>;
  deliver(rec: SessionRecord, el: Element, only?: Only): void;
  routeInternal(el: Element, opts?: DeliverOptions): Promise<void>;
  probe(rec: SessionRecord, answerTo: string): void;
}

export interface BlockingOptions {
  domain: string;
  store: BlockStore;
  roster: RosterStore;
  /** JIDs one account may block. */
  max: number;
  routing: () => BlockingRouting;
  /** Tells every other worker and node that the account's blocklist changed; resolves once they will see it before anything sent after. */
  announce: (user: string) => Promise<void>;
  /** The bounds on the lists kept (CACHE_MAX_ENTRIES, CACHE_MAX_BYTES by default). */
  cache?: { maxEntries: number; maxBytes: number };
}

export interface BlockingModule extends ServerModule {
  /** Whether presence from `from` to `to` (JIDs) is blocked either way, by an account of this server. */
  denies(from: string, to: string): boolean | Promise<boolean>;
  /** Whether the account of `to` (an address of this server) blocks `from`: nothing from `from` reaches it, subscription stanzas included. */
  refuses(to: string, from: string): boolean | Promise<boolean>;
  /** What the lists kept on this worker hold now (within the cache bounds). */
  cached(): { lists: number; entries: number; bytes: number };
}

const isElement = (c: Element | string): c is Element => typeof c !== 'string';

/** A JID as a blocklist compares it (normalised); undefined for one that does not parse. */
function normalized(jid: string | undefined): string | undefined {
  if (jid === undefined) return undefined;
  try {
    return normalizeBlocked(jid);
  } catch (err) {
    if (err instanceof JidError) return undefined;
    throw err;
  }
}

const bareOf = (jid: string): string => {
  const slash = jid.indexOf('/');
  return slash < 0 ? jid : jid.slice(0, slash);
};

/** §5.3: what the user's server does with a stanza from a JID the user blocked. */
function inboundVerdict(el: Element): Verdict {
  const type = el.attrs.type;
  // Presence (notifications, subscriptions, probes): no answer, no error.
  if (el.name === 'message') return type === 'error' ? 'drop' : new StanzaError('service-unavailable');
  if (el.name === 'iq') return type === 'get' || type === 'set' ? new StanzaError('service-unavailable') : 'drop';
  return 'drop';
}

export function blocking(o: BlockingOptions): BlockingModule {
  /** Accounts whose blocklist is (or may be, since a change) not empty. */
  const blockers = new Set<string>();
  /** Their lists, as read (most recently used last), each with its size (listBytes); bounded in all by `maxEntries` and `maxBytes`. */
  const lists = new Map<string, { set: Set<string>; bytes: number }>();
  const { maxEntries, maxBytes } = o.cache ?? { maxEntries: CACHE_MAX_ENTRIES, maxBytes: CACHE_MAX_BYTES };
  let entries = 0;
  let bytes = 0;
  const drop = (user: string): void => {
    const c = lists.get(user);
    if (!c) return;
    lists.delete(user);
    entries -= c.set.size;
    bytes -= c.bytes;
  };
  const clearLists = (): void => {
    lists.clear();
    entries = 0;
    bytes = 0;
  };
  /** Keeps a list read, the least recently used going until it fits; one larger than the whole bound is not kept (read again when needed). */
  const keep = (user: string, set: Set<string>): void => {
    drop(user);
    const size = listBytes(user, set);
    if (set.size > maxEntries || size > maxBytes) return;
    while (lists.size > 0 && (entries + set.size > maxEntries || bytes + size > maxBytes)) drop(lists.keys().next().value!);
    lists.set(user, { set, bytes: size });
    entries += set.size;
    bytes += size;
  };
  const reading = new Map<string, Promise<Set<string>>>();
  /** Bumped by every change: a read that began before one is not kept. */
  let changes = 0;
  /** Stanzas the module sends itself that its own guard must let through (§5.3's unavailable presence). */
  const exempt = new WeakSet<Element>();

  let loaded = false;
  let loading: Promise<void> = Promise.resolve();
  const load = (): Promise<void> => {
    const p = o.store.blockers().then(
      (owners) => {
        // What changed meanwhile was added already: a union errs on the side of reading a list.
        for (const u of owners) blockers.add(u);
        loaded = true;
      },
      (err: unknown) => {
        log.error('blocking: the accounts that block someone cannot be read; trying again', { err: String(err) });
        return new Promise<void>((r) => setTimeout(r, 1000).unref()).then(load);
      },
    );
    loading = p;
    return p;
  };
  void load();
  const withinLoad = (p: Promise<void>): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StanzaError('internal-server-error', 'blocklists cannot be read now; try again shortly', 'wait')), LOAD_WAIT_MS);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  };

  const forget = (user: string): void => {
    changes++;
    drop(user);
    reading.delete(user);
  };

  const read = (user: string): Promise<Set<string>> => {
    const pending = reading.get(user);
    if (pending) return pending;
    const at = changes;
    const p = o.store.list(user).then((jids) => {
      const set = new Set(jids);
      if (reading.get(user) === p) reading.delete(user);
      if (changes === at) {
        if (set.size === 0) blockers.delete(user);
        else keep(user, set);
      }
      return set;
    });
    reading.set(user, p);
    p.catch(() => reading.delete(user));
    return p;
  };

  /** The account's blocklist when it has one: synchronous once read; undefined (at once) for an account that blocks nobody. */
  const listOf = (user: string): Set<string> | undefined | Promise<Set<string> | undefined> => {
    // Not read yet (the database is away at start): a bounded wait, then the stanza gets a temporary error rather than waiting for ever.
    if (!loaded) return withinLoad(loading).then(() => listOf(user));
    if (!blockers.has(user)) return undefined;
    const hit = lists.get(user);
    if (hit) {
      lists.delete(user);
      lists.set(user, hit);
      return hit.set;
    }
    return read(user);
  };

  /** The localpart of an address of this server's accounts (as stanzas carry it), if it is one. */
  const localOf = (jid: string | undefined): string | undefined => {
    if (jid === undefined) return undefined;
    const at = jid.indexOf('@');
    if (at <= 0) return undefined;
    const slash = jid.indexOf('/', at);
    const domain = slash < 0 ? jid.slice(at + 1) : jid.slice(at + 1, slash);
    return domain === o.domain ? jid.slice(0, at) : undefined;
  };

  /** Whether `user`'s list blocks the address `jid` (raw). */
  const userBlocks = (user: string | undefined, jid: string | undefined): boolean | Promise<boolean> => {
    if (user === undefined || jid === undefined) return false;
    if (loaded && !blockers.has(user)) return false;
    const decide = (list: Set<string> | undefined): boolean => {
      if (!list || list.size === 0) return false;
      const j = normalized(jid);
      // An account never blocks itself (its own resources, a list holding its own JID).
      return j !== undefined && bareOf(j) !== `${user}@${o.domain}` && blocks(list, j);
    };
    const list = listOf(user);
    return list instanceof Promise ? list.then(decide) : decide(list);
  };

  /** Either way between two JIDs: `from`'s account blocks `to`, or `to`'s blocks `from`. */
  const denies = (from: string, to: string): boolean | Promise<boolean> => {
    const out = userBlocks(localOf(from), to);
    if (out === true) return true;
    const back = () => userBlocks(localOf(to), from);
    return out instanceof Promise ? out.then((b) => b || back()) : back();
  };

  const guard = (el: Element, to: Jid): Verdict | Promise<Verdict> => {
    if (exempt.has(el)) return undefined;
    const from = el.attrs.from as string | undefined;
    // §5.3: nothing from a blocked JID reaches the user.
    const inbound = to.local && to.domain === o.domain ? userBlocks(to.local, from) : false;
    const outbound = (): Verdict | Promise<Verdict> => {
      // Presence the server sends on a user's behalf (probe answers, directed
      // and unavailable presence) does not go to a JID the user blocked; a
      // client's message or iq was refused before routing (inbound hook).
      if (el.name !== 'presence') return undefined;
      // The user's cancellations go (see the file's head).
      if (CANCELLATIONS.has(el.attrs.type)) return undefined;
      const b = userBlocks(localOf(from), el.attrs.to);
      return b instanceof Promise ? b.then((x) => (x ? 'drop' : undefined)) : b ? 'drop' : undefined;
    };
    if (inbound === true) return inboundVerdict(el);
    if (inbound instanceof Promise) return inbound.then((b) => (b ? inboundVerdict(el) : outbound()));
    return outbound();
  };

  /** The blocklist asked about must be the asker's own (an iq without 'to', or to its bare JID). */
  const own = (iq: Element, session: Session): { user: string | null; payload: Element } => {
    const to = iq.attrs.to;
    if (to !== undefined && bareOf(normalized(to) ?? '') !== session.bare) throw new StanzaError('forbidden', "only the account's own blocklist can be read or changed");
    return { user: session.username, payload: iq.children.find(isElement)! };
  };

  /** The items' JIDs, normalised; §5.3: bad-request for an item without one, jid-malformed for one that is no JID. */
  const itemsOf = (payload: Element): string[] => {
    const jids: string[] = [];
    for (const item of payload.getChildren('item')) {
      const raw = item.attrs.jid;
      if (typeof raw !== 'string' || raw.trim() === '') throw new StanzaError('bad-request', 'an <item/> needs a jid');
      try {
        jids.push(normalizeBlocked(raw));
      } catch (err) {
        if (err instanceof JidError) throw new StanzaError('jid-malformed', `${raw}: ${err.message}`);
        throw err;
      }
    }
    return jids;
  };

  const listElement = (name: string, jids: string[]): Element => {
    const el = new Element(name, { xmlns: NS_BLOCKING });
    for (const j of jids) el.c('item', { jid: j });
    return el;
  };

  /** §5.3, §5.4: a push to every resource of the account that requested the blocklist, wherever it is. */
  const push = async (bare: string, payload: Element): Promise<void> => {
    const r = o.routing();
    for (const rec of await r.resources(bare)) {
      const iq = new Element('iq', { type: 'set', id: `push-${randomBytes(6).toString('base64url')}`, to: rec.jid });
      iq.cnode(clone(payload));
      r.deliver(rec, iq, 'blocklist');
    }
  };

  /**
   * §5.3, §5.4: where the presence sent on a block or an unblock goes: the
   * contacts allowed to receive the user's presence (subscription from or
   * both, RFC 6121 §4.2.2) that the JIDs cover. A JID that covers the whole
   * contact (its bare JID, its domain) sends to the contact's bare JID, which
   * reaches every resource; a full JID (or domain/resource) only to that
   * address, the one resource it blocks, be it here or on a peer server.
   */
  const presenceTargets = async (user: string, jids: string[]): Promise<string[]> => {
    const { items } = await o.roster.get(user);
    const subscribers = items.filter((i) => i.subscription === 'from' || i.subscription === 'both').map((i) => i.jid);
    const set = new Set(jids);
    const whole = subscribers.filter((s) => blocks(set, s));
    const covered = new Set(whole);
    const allowed = new Set(subscribers);
    // One resource of a subscriber that is not covered whole already.
    const resources = jids.filter((j) => j.includes('/') && allowed.has(bareOf(j)) && !covered.has(bareOf(j)));
    return [...whole, ...resources];
  };

  /** After a change here: every other worker and node drops its copy before the client hears of it. */
  const changed = async (user: string): Promise<void> => {
    forget(user);
    blockers.add(user);
    await o.announce(user);
  };

  const get: IqHandler = async (iq, session) => {
    const { user, payload } = own(iq, session);
    if (payload.name !== 'blocklist') throw new StanzaError('bad-request', `<${payload.name}/> is not read with iq get`);
    session.blocklistRequested = true;
    // An anonymous session blocks nobody.
    return listElement('blocklist', user === null ? [] : await o.store.list(user));
  };

  const set: IqHandler = async (iq, session) => {
    const { user, payload } = own(iq, session);
    if (user === null) throw new StanzaError('not-allowed', 'anonymous sessions have no blocklist');
    const bare = `${user}@${o.domain}`;
    const r = o.routing();
    if (payload.name === 'block') {
      const jids = itemsOf(payload);
      // §5.3: a block without an item is a bad request.
      if (jids.length === 0) throw new StanzaError('bad-request', '<block/> needs at least one <item/>');
      let added: string[];
      try {
        added = await o.store.block(user, jids, o.max);
      } catch (err) {
        if (err instanceof BlocklistFullError || (err as Error).name === 'BlocklistFullError') throw new StanzaError('policy-violation', `at most ${o.max} JIDs can be blocked`);
        throw err;
      }
      // §5.3: unavailable presence from each available resource to the contacts now blocked that could see it.
      const contacts = added.length > 0 ? await presenceTargets(user, added) : [];
      const resources = contacts.length > 0 ? await r.available(bare) : [];
      for (const contact of contacts) {
        for (const rec of resources) {
          const p = new Element('presence', { from: rec.jid, to: contact, type: 'unavailable' });
          exempt.add(p);
          await r.routeInternal(p);
        }
      }
      await changed(user);
      return { payload: null, after: () => void push(bare, listElement('block', jids)).catch((err: unknown) => log.warn('blocking: push failed', { err: String(err) })) };
    }
    if (payload.name === 'unblock') {
      const jids = itemsOf(payload);
      // §5.5: an empty unblock unblocks every JID.
      const removed = jids.length === 0 ? await o.store.unblockAll(user) : await o.store.unblock(user, jids);
      await changed(user);
      // §5.4: the user's current presence to the contacts unblocked that may see it (each resource answers as to a probe).
      if (removed.length > 0) {
        const contacts = await presenceTargets(user, removed);
        if (contacts.length > 0) {
          const resources = await r.available(bare);
          for (const contact of contacts) for (const rec of resources) r.probe(rec, contact);
        }
      }
      return { payload: null, after: () => void push(bare, listElement('unblock', jids)).catch((err: unknown) => log.warn('blocking: push failed', { err: String(err) })) };
    }
    throw new StanzaError('bad-request', `<${payload.name}/> is not changed with iq set`);
  };

  return {
    // §5.1: the server's disco#info says it; so does the account's.
    features: [NS_BLOCKING],
    accountFeatures: [NS_BLOCKING],
    account: { [`get ${NS_BLOCKING}`]: get, [`set ${NS_BLOCKING}`]: set },
    // §5.3: what the user sends to a JID it blocked goes nowhere.
    inbound: async (el, session) => {
      const user = session.username ?? undefined;
      const to = el.attrs.to as string | undefined;
      if (to === undefined) return;
      let out = userBlocks(user, to);
      if (out instanceof Promise) out = await out;
      if (out) {
        // The user cancelling a subscription with a JID it blocked (RFC 6121 §3.2, §3.3): the presence
        // service changes both rosters as asked (see the file's head).
        if (el.name === 'presence' && CANCELLATIONS.has(el.attrs.type)) return;
        const type = el.attrs.type;
        if ((el.name === 'message' && type !== 'error') || (el.name === 'iq' && (type === 'get' || type === 'set'))) {
          const reply = errorReply(el, new BlockedError());
          if (reply) session.send(reply);
        }
        return true; // presence, iq results and errors: dropped
      }
      if (el.name !== 'presence') {
        // To an account here that blocked the user: refused now, as the
        // router's guard would refuse it, and not later: the modules after
        // this one (the archive, carbons) would have taken the sender's copy
        // of a message that is not sent (§5.3). One to a peer server's user
        // is that server's to refuse.
        let back = userBlocks(localOf(normalized(to)), el.attrs.from);
        if (back instanceof Promise) back = await back;
        if (!back) return;
        const v = inboundVerdict(el);
        if (v instanceof StanzaError) {
          const reply = errorReply(el, v);
          if (reply) session.send(reply);
        }
        return true;
      }
      // A subscription stanza to an account of ours that blocked the user:
      // the presence service changes the user's own roster as asked and
      // refuses the other side (refuses(), see the file's head).
      if (SUBSCRIPTIONS.has(el.attrs.type)) return;
      // Other presence to an account of ours that blocked the user (probes
      // the presence service answers without routing): dropped.
      let back = userBlocks(localOf(normalized(to)), el.attrs.from);
      if (back instanceof Promise) back = await back;
      return back || undefined;
    },
    guard,
    denies,
    refuses: (to, from) => userBlocks(localOf(to), from),
    cached: () => ({ lists: lists.size, entries, bytes }),
    changed: (kind, user) => {
      if (kind === '*') {
        // Notices may have been lost (Redis reconnected): everything is read again.
        changes++;
        clearLists();
        reading.clear();
        void load();
        return;
      }
      if (kind !== 'blocklist') return;
      forget(user);
      blockers.add(user);
    },
    removed: (user) => {
      forget(user);
      blockers.delete(user);
    },
  };
}
