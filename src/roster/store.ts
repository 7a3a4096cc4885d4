// Roster storage contract (RFC 6121 §2). A roster belongs to one account
// (its normalised username); its items are keyed by the contact's normalised
// bare JID. Every change bumps the roster's version (§2.6), a per-user
// counter: version strings are opaque to clients and never repeat for one
// user, even after the roster was deleted and created again (each roster
// starts a new random epoch), so a client's cached version can never match
// a different roster's content.

/** RFC 6121 §2.1.2.5 */
export type Subscription = 'none' | 'to' | 'from' | 'both';
export const SUBSCRIPTIONS: readonly Subscription[] = ['none', 'to', 'from', 'both'];

export interface RosterItem {
  /** Normalised bare JID of the contact (RFC 7622), the item's key. */
  jid: string;
  name?: string;
  subscription: Subscription;
  /** A subscription request sent by the user is pending (§2.1.2.2). */
  ask?: 'subscribe';
  /** Distinct group names, in the order they were given. */
  groups: string[];
}

/** What a roster set (§2.1.5) may change: name and groups; the subscription state is the server's. */
export type RosterItemInput = Pick<RosterItem, 'jid' | 'name' | 'groups'>;

export interface RosterChange {
  /** The roster's version after the change. */
  version: string;
  item: RosterItem;
}

export interface SubscriptionChange extends RosterChange {
  /** False when the item already had that state: nothing was written, the version is unchanged. */
  changed: boolean;
}

/**
 * RFC 6121 Appendix A.1: the nine states of a user's subscription with one
 * contact, from the user's side. The part before '+' is the roster item's
 * subscription; '+out' is a request the user sent and the contact has not
 * answered (the item's ask="subscribe"); '+in' is a request from the contact
 * the user has not answered (kept apart from the roster: a pending-in
 * request alone is not a roster item, RFC 6121 §3.1.3).
 */
export type SubState = 'none' | 'none+out' | 'none+in' | 'none+out+in' | 'to' | 'to+in' | 'from' | 'from+out' | 'both';
export const SUB_STATES: readonly SubState[] = ['none', 'none+out', 'none+in', 'none+out+in', 'to', 'to+in', 'from', 'from+out', 'both'];

/** An event's effect (one table of RFC 6121 Appendix A): the state after it, from each state; states not listed do not change. */
export type TransitionTable = Partial<Record<SubState, SubState>>;

export interface TransitionResult {
  before: SubState;
  /** The state now: `before` when nothing changed (no change in the table, or `full`). */
  after: SubState;
  /** Set when the roster item's subscription or ask changed (or the item was created): the item as it is now and the new roster version, for a roster push. */
  change?: RosterChange;
  /**
   * The change needed room beyond a limit, and nothing was written: a new
   * roster item beyond `max` ('items'), a new pending request beyond
   * `maxPending` ('pending'), or a new outgoing request beyond `maxOutgoing`
   * ('outgoing').
   */
  full?: 'items' | 'pending' | 'outgoing';
}

/** Limits a subscription transition applies (see RosterStore.transition). */
export interface TransitionOptions {
  /** Items one roster may hold. */
  max: number;
  /** The request stanza kept with a new pending request. */
  request?: string;
  /**
   * Pending requests the user may hold; a request from a contact already in
   * the user's roster is let in beyond it (it is no stranger). Default: max.
   */
  maxPending?: number;
  /** Requests the user may have sent and not had answered (items with ask="subscribe"). Default: no limit. */
  maxOutgoing?: number;
}

export interface PendingRequest {
  /** The contact's normalised bare JID. */
  jid: string;
  /** The subscription request as received (a serialised presence stanza), to deliver again. */
  stanza: string;
}

/** The version of a roster that was never written (or was deleted): always empty. */
export const EMPTY_VERSION = '0';

export interface RosterStore {
  /** The whole roster, items sorted by JID (code point order). */
  get(user: string): Promise<{ version: string; items: RosterItem[] }>;
  /** One item, or undefined. */
  item(user: string, jid: string): Promise<RosterItem | undefined>;
  /**
   * Adds or updates an item: name and groups are replaced, subscription and
   * ask are kept (a new item has subscription "none"). Throws RosterFullError
   * when adding would make the roster hold more than `max` items (updating
   * an existing item never does), and RosterTooLargeError when the roster's
   * items would take more than `maxBytes` (rosterBytes of each item).
   */
  set(user: string, item: RosterItemInput, max: number, maxBytes?: number): Promise<RosterChange>;
  /** Removes an item, and any pending request from that contact; undefined (and no version change) when there was no item. */
  remove(user: string, jid: string): Promise<RosterChange | undefined>;
  /**
   * Sets an item's subscription state (RFC 6121 §3). When there is no such
   * item: undefined, unless `create` is given, in which case the item is
   * added (no name, no groups) within create.max (else RosterFullError).
   */
  setSubscription(user: string, jid: string, subscription: Subscription, ask: 'subscribe' | undefined, create?: { max: number }): Promise<SubscriptionChange | undefined>;
  /**
   * Applies one subscription event atomically (RFC 6121 Appendix A): reads
   * the pair's state, looks up the next state in `table`, and writes it,
   * whoever else changes the same roster at the same time. The item part
   * ('none' | 'to' | 'from' | 'both' and '+out' as ask) updates the roster
   * item, creating one (no name, no groups) when the state needs an item
   * and there is none, within `max` items (else `full`); the roster version
   * changes only when the item does. The '+in' part adds or drops the
   * pending request: a new one keeps `request`. The limits of `opts`
   * (pending and outgoing requests) are checked in the same step; a change
   * beyond one writes nothing and says which (`full`). The state of a pair
   * with no item and no pending request is 'none'.
   */
  transition(user: string, jid: string, table: TransitionTable, opts: TransitionOptions): Promise<TransitionResult>;
  /** The pair's current state (RFC 6121 Appendix A.1). */
  state(user: string, jid: string): Promise<SubState>;
  /** Subscription requests the user has not answered, in the order they came. */
  pendingRequests(user: string): Promise<PendingRequest[]>;
  /** Deletes the whole roster and the pending requests (account deletion). */
  removeAll(user: string): Promise<void>;
  /** Releases the store; idempotent. */
  close(): void | Promise<void>;
}

/** What one item counts toward the roster's byte limit: its JID and its stored name and groups (UTF-8). */
export function itemBytes(jid: string, details: string): number {
  return Buffer.byteLength(jid, 'utf8') + Buffer.byteLength(details, 'utf8');
}

export class RosterTooLargeError extends Error {
  override name = 'RosterTooLargeError';
  readonly maxBytes: number;
  constructor(maxBytes: number) {
    super(`the roster is too large (at most ${maxBytes} bytes of names and groups)`);
    this.maxBytes = maxBytes;
  }
}

export class RosterFullError extends Error {
  override name = 'RosterFullError';
  readonly max: number;
  constructor(max: number) {
    super(`the roster is full (at most ${max} items)`);
    this.max = max;
  }
}

/** Code point (UTF-8 byte) order, the same in every store. */
export function compareJids(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function checkSubscription(subscription: Subscription, ask: 'subscribe' | undefined): void {
  if (!SUBSCRIPTIONS.includes(subscription)) throw new TypeError(`invalid subscription ${JSON.stringify(subscription)}`);
  if (ask !== undefined && ask !== 'subscribe') throw new TypeError(`invalid ask ${JSON.stringify(ask)}`);
}

export function checkMax(max: number): void {
  if (!Number.isSafeInteger(max) || max < 0) throw new RangeError(`invalid roster size limit ${max}`);
}

/** The limits of a transition, defaults applied and checked. */
export function transitionLimits(opts: TransitionOptions): { max: number; maxPending: number; maxOutgoing: number } {
  const maxPending = opts.maxPending ?? opts.max;
  const maxOutgoing = opts.maxOutgoing ?? Number.MAX_SAFE_INTEGER;
  for (const n of [opts.max, maxPending, maxOutgoing]) checkMax(n);
  return { max: opts.max, maxPending, maxOutgoing };
}

/** The stored form of name and groups (without the subscription state). */
export function encodeDetails(item: Pick<RosterItem, 'name' | 'groups'>): string {
  return JSON.stringify(item.name === undefined ? { g: item.groups } : { n: item.name, g: item.groups });
}

export function decodeDetails(json: string): Pick<RosterItem, 'name' | 'groups'> {
  const d = JSON.parse(json) as { n?: string; g?: string[] };
  return d.n === undefined ? { groups: d.g ?? [] } : { name: d.n, groups: d.g ?? [] };
}

/** A RosterItem with absent optional fields left out (so deepEqual works), keys in interface order. */
export function makeItem(jid: string, details: Pick<RosterItem, 'name' | 'groups'>, subscription: Subscription, ask: 'subscribe' | undefined): RosterItem {
  return {
    jid,
    ...(details.name !== undefined ? { name: details.name } : {}),
    subscription,
    ...(ask !== undefined ? { ask } : {}),
    groups: [...details.groups],
  };
}

/** The state of a pair from its roster item (if any) and whether a request from the contact is pending. */
export function composeState(item: Pick<RosterItem, 'subscription' | 'ask'> | undefined, pendingIn: boolean): SubState {
  const sub = item?.subscription ?? 'none';
  const out = item?.ask === 'subscribe' && (sub === 'none' || sub === 'from');
  const inn = pendingIn && (sub === 'none' || sub === 'to');
  return `${sub}${out ? '+out' : ''}${inn ? '+in' : ''}` as SubState;
}

/** A state's parts: the item's subscription and ask, and whether a request is pending in. */
export function splitState(state: SubState): { subscription: Subscription; ask: 'subscribe' | undefined; pendingIn: boolean } {
  const [subscription, ...flags] = state.split('+') as [Subscription, ...string[]];
  return { subscription, ask: flags.includes('out') ? 'subscribe' : undefined, pendingIn: flags.includes('in') };
}

/** Throws for a table naming a state that is none of Appendix A.1's. */
export function checkTable(table: TransitionTable): void {
  for (const [from, to] of Object.entries(table)) {
    if (!SUB_STATES.includes(from as SubState) || !SUB_STATES.includes(to as SubState)) throw new TypeError(`invalid transition ${JSON.stringify(from)} -> ${JSON.stringify(to)}`);
  }
}

/** What one transition (RosterStore.transition) changes, worked out from the pair as it is; every store applies it under its own lock. */
export interface TransitionPlan {
  before: SubState;
  after: SubState;
  /** The item's part of `after`. */
  next: ReturnType<typeof splitState>;
  createItem: boolean;
  changeItem: boolean;
  /** A request the state did not count before (none, or a stale one) is a new arrival. */
  addPending: boolean;
  dropPending: boolean;
  addAsk: boolean;
}

export function planTransition(current: RosterItem | undefined, pending: boolean, table: TransitionTable): TransitionPlan {
  const before = composeState(current, pending);
  const after = table[before] ?? before;
  const next = splitState(after);
  const createItem = !current && (next.subscription !== 'none' || next.ask !== undefined);
  return {
    before,
    after,
    next,
    createItem,
    changeItem: current ? current.subscription !== next.subscription || current.ask !== next.ask : createItem,
    addPending: next.pendingIn && !splitState(before).pendingIn,
    dropPending: !next.pendingIn && pending,
    addAsk: next.ask !== undefined && !splitState(before).ask,
  };
}
