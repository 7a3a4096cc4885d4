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
   * when adding would make the roster hold more than `max` items; updating
   * an existing item never does.
   */
  set(user: string, item: RosterItemInput, max: number): Promise<RosterChange>;
  /** Removes an item; undefined (and no version change) when there was none. */
  remove(user: string, jid: string): Promise<RosterChange | undefined>;
  /**
   * Sets an item's subscription state (RFC 6121 §3). When there is no such
   * item: undefined, unless `create` is given, in which case the item is
   * added (no name, no groups) within create.max (else RosterFullError).
   */
  setSubscription(user: string, jid: string, subscription: Subscription, ask: 'subscribe' | undefined, create?: { max: number }): Promise<SubscriptionChange | undefined>;
  /** Deletes the whole roster (account deletion). */
  removeAll(user: string): Promise<void>;
  /** Releases the store; idempotent. */
  close(): void | Promise<void>;
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
