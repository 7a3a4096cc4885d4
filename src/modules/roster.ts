// RFC 6121 §2: roster management. The account's own resources get (§2.1.3,
// with versioning §2.6), add and update (§2.3, §2.4) and remove (§2.5)
// roster items; every change is pushed to the account's interested
// resources (§2.1.6) through the `push` callback, with the new version.
// Subscription states are kept on the items but changed only by presence
// subscription handling (RFC 6121 §3), never by a roster set.
import { Element } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid, bare, JidError } from '../xmpp/jid.ts';
import type { ServerModule } from './module.ts';
import type { Session } from '../session/session.ts';
import type { RosterItem, RosterStore, SubState } from '../roster/store.ts';
import { EMPTY_VERSION } from '../roster/store.ts';
import { log } from '../log.ts';

export const NS_ROSTER = 'jabber:iq:roster';
/** The stream feature announcing roster versioning (RFC 6121 §2.6.1). */
export const NS_ROSTERVER = 'urn:xmpp:features:rosterver';

/** Default limits for the 'name' attribute and a <group/>'s text, in UTF-8 bytes (§2.3.3: server-configured). */
export const MAX_NAME_BYTES = 1023;
export const MAX_GROUP_BYTES = 1023;

/** What a push carries: the item as it now is, or its removal (§2.5.2). */
export type RosterPushItem = RosterItem | { jid: string; subscription: 'remove' };

export interface RosterDeps {
  store: RosterStore;
  /** Items one roster may hold; adding beyond it is refused. */
  maxItems: number;
  /** Sends the change to every interested resource of the account `user` (a normalised username). */
  push: (user: string, item: RosterPushItem, version: string) => void;
  /** An item was removed that had a subscription state other than 'none' (§2.5.2: the contact is told). */
  removed?: (user: string, jid: string, before: SubState) => Promise<void>;
  maxNameBytes?: number;
  maxGroupBytes?: number;
  /** Groups one item may be in. */
  maxGroups?: number;
  /** Bytes one roster's items may take (RosterStore.set). */
  maxBytes?: number;
}

/**
 * The session state this module relies on: a session that has requested the
 * roster is an "interested resource" (§2.1.6) and gets roster pushes.
 */
export interface RosterInterest {
  rosterRequested?: boolean;
}

export function isInterested(session: object): boolean {
  return (session as RosterInterest).rosterRequested === true;
}

function markInterested(session: Session): void {
  (session as RosterInterest).rosterRequested = true;
}

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

export function itemElement(item: RosterPushItem): Element {
  const el = new Element('item', { jid: item.jid });
  if (item.subscription === 'remove') {
    el.attrs.subscription = 'remove';
    return el;
  }
  if (item.name !== undefined) el.attrs.name = item.name;
  el.attrs.subscription = item.subscription;
  if (item.ask) el.attrs.ask = item.ask;
  for (const g of item.groups) el.c('group').t(g);
  return el;
}

/** <query xmlns='jabber:iq:roster' ver='...'> with the items (a roster result, or a push's one item). */
export function rosterQuery(items: RosterPushItem[], version?: string): Element {
  const q = new Element('query', version === undefined ? { xmlns: NS_ROSTER } : { xmlns: NS_ROSTER, ver: version });
  for (const item of items) q.cnode(itemElement(item));
  return q;
}

/** The payload of a roster push (§2.1.6): exactly one item, and the new version (§2.6.3). */
export function pushQuery(item: RosterPushItem, version: string): Element {
  return rosterQuery([item], version);
}

/** §2.1.5, §2.3.3: only the account itself may read or change its roster. */
function authorize(iq: Element, session: Session): void {
  const to = iq.attrs.to;
  if (to === undefined) return;
  let target: string;
  try {
    target = bare(parseJid(to));
  } catch {
    throw new StanzaError('forbidden', 'only the account itself may use its roster');
  }
  if (target !== session.bare) throw new StanzaError('forbidden', 'only the account itself may use its roster');
}

function query(iq: Element): Element {
  const q = iq.getChild('query', NS_ROSTER);
  if (!q) throw new StanzaError('bad-request', 'the roster payload is <query/>');
  return q;
}

/** The item's JID as a normalised bare JID (contact or domain). */
function itemJid(item: Element): string {
  const raw = item.attrs.jid;
  if (raw === undefined) throw new StanzaError('bad-request', `an <item/> needs a 'jid'`);
  let j;
  try {
    j = parseJid(raw);
  } catch (err) {
    if (err instanceof JidError) throw new StanzaError('jid-malformed', err.message);
    throw err;
  }
  // Roster items, like presence subscriptions (§3.1.1), are about bare JIDs.
  if (j.resource) throw new StanzaError('bad-request', 'a roster item is a bare JID, without a resource');
  return bare(j);
}

export function roster(deps: RosterDeps): ServerModule {
  const maxName = deps.maxNameBytes ?? MAX_NAME_BYTES;
  const maxGroup = deps.maxGroupBytes ?? MAX_GROUP_BYTES;
  const push = (user: string, item: RosterPushItem, version: string) => {
    try {
      deps.push(user, item, version);
    } catch (err) {
      log.error('roster push failed', { user, jid: item.jid, err: String(err) });
    }
  };

  // §2.1.3 roster get; §2.6.3 with a version the client holds.
  const get = async (iq: Element, session: Session): Promise<Element | null> => {
    authorize(iq, session);
    const q = query(iq);
    if (q.getChildren('item', NS_ROSTER).length > 0) throw new StanzaError('bad-request', 'a roster get carries no items');
    const ver = q.attrs.ver;
    // An anonymous session (XEP-0175) has no stored roster: it is always empty.
    const { version, items } = session.username === null ? { version: EMPTY_VERSION, items: [] } : await deps.store.get(session.username);
    markInterested(session);
    if (ver !== undefined && ver === version) return null; // unchanged: changes come as pushes
    return rosterQuery(items, version);
  };

  // §2.1.5 roster set: add or update (§2.3, §2.4), remove (§2.5).
  const set = async (iq: Element, session: Session): Promise<Element | null> => {
    authorize(iq, session);
    const q = query(iq);
    const items = q.getChildren('item', NS_ROSTER);
    if (items.length !== 1) throw new StanzaError('bad-request', 'a roster set carries exactly one <item/>');
    const item = items[0];
    const jid = itemJid(item);
    const user = session.username;
    if (user === null) throw new StanzaError('not-allowed', 'anonymous sessions have no stored roster');

    // §2.1.2.5: in a roster set every 'subscription' value but "remove" is ignored.
    if (item.attrs.subscription === 'remove') {
      const before = deps.removed ? await deps.store.state(user, jid) : 'none';
      const removed = await deps.store.remove(user, jid);
      if (!removed) throw new StanzaError('item-not-found', `${jid} is not in the roster`); // §2.5.3
      push(user, { jid, subscription: 'remove' }, removed.version);
      // §2.5.2: the subscriptions go with the item, and the contact learns it.
      if (before !== 'none') await deps.removed?.(user, jid, before);
      return null;
    }

    if (jid === session.bare) throw new StanzaError('not-allowed', 'the account itself cannot be a roster item');
    const rawName = item.attrs.name;
    const name = rawName === undefined || rawName === '' ? undefined : rawName;
    if (name !== undefined && bytes(name) > maxName) throw new StanzaError('not-acceptable', `the name is longer than ${maxName} bytes`);
    const groups: string[] = [];
    const given = item.getChildren('group', NS_ROSTER);
    // §2.3.3: a roster set beyond the server's limits is not acceptable.
    // Read at each use: a reload (SIGHUP) may change the limits.
    const maxGroups = deps.maxGroups ?? Number.MAX_SAFE_INTEGER;
    const maxBytes = deps.maxBytes ?? Number.MAX_SAFE_INTEGER;
    if (given.length > maxGroups) throw new StanzaError('not-acceptable', `an item may be in at most ${maxGroups} groups`);
    for (const g of given) {
      const text = g.getText();
      if (text === '') throw new StanzaError('not-acceptable', 'a group name cannot be empty');
      if (bytes(text) > maxGroup) throw new StanzaError('not-acceptable', `a group name is longer than ${maxGroup} bytes`);
      if (groups.includes(text)) throw new StanzaError('bad-request', `the group ${JSON.stringify(text)} is given twice`);
      groups.push(text);
    }

    let change;
    try {
      change = await deps.store.set(user, name === undefined ? { jid, groups } : { jid, name, groups }, deps.maxItems, maxBytes);
    } catch (err) {
      if ((err as Error).name === 'RosterFullError') throw new StanzaError('policy-violation', `the roster is full (at most ${deps.maxItems} items)`);
      if ((err as Error).name === 'RosterTooLargeError') throw new StanzaError('policy-violation', `the roster is full (at most ${maxBytes} bytes of names and groups)`);
      throw err;
    }
    push(user, change.item, change.version);
    return null;
  };

  return {
    features: [NS_ROSTER],
    account: {
      [`get ${NS_ROSTER}`]: get,
      [`set ${NS_ROSTER}`]: set,
    },
  };
}
