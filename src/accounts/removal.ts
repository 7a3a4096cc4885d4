// Removing an account (the CLI's `user remove`, XEP-0077 §3.2 in-band
// cancellation): its data goes, and its contacts' rosters are changed as RFC
// 6121 §2.5.2 changes them for a removed item: whatever the pair had is
// cancelled on the contact's side as an unsubscribe (the account's
// subscription to the contact) and an unsubscribed (the contact's to the
// account) would. This is the stores' part, run wherever the removal starts
// (a worker, the CLI process); it returns a notice that every worker of every
// node acts on for the sessions it holds (Router.accountRemoved): the
// account's sessions end, its contacts' sessions get the unsubscribe and
// unsubscribed presence and their roster pushes.
import type { AccountStore } from './store.ts';
import { normalizedOrUndefined } from './store.ts';
import type { RosterStore, RosterItem, SubState } from '../roster/store.ts';
import { composeState, splitState } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import type { ArchiveStore } from '../mam/store.ts';
import type { BlockStore } from '../blocking/store.ts';
import type { PersonalStore } from '../personal/store.ts';
import type { PepStore } from '../pep/store.ts';
import type { RoomStore } from '../muc/store.ts';
import type { UploadStore } from '../upload/store.ts';
import { removeOwnerUploads } from '../upload/http.ts';
import { INBOUND, receivesFrom, sendsTo } from '../presence/subscription.ts';
import { log } from '../log.ts';

/** What happened to one contact's roster: the stanzas it gets, in order, and the push for its item (if it changed). */
export interface ContactChange {
  /** The contact's bare JID. */
  jid: string;
  stanzas: ('unsubscribe' | 'unsubscribed')[];
  /** The contact's item for the removed account, as it is now, and the roster version. */
  push?: { item: RosterItem; version: string };
  /** The account's subscription to the contact's presence ended: the contact saw it available (§3.3.3 is for the other way). */
  sawPresence: boolean;
  /** A contact of another server (federation): its server applies the stanzas to its roster; no push from here. */
  remote?: boolean;
}

/** Sent to every worker of every node once the stores' part is done. */
export interface RemovalNotice {
  /** The normalised username. */
  user: string;
  bare: string;
  /** When the account was removed (ms): a session that authenticated before this is ended wherever it is. */
  at: number;
  contacts: ContactChange[];
}

/** Whether a value from outside (the admin socket, Redis) is a notice this code can act on. */
export function isRemovalNotice(x: unknown): x is RemovalNotice {
  const n = x as RemovalNotice;
  if (typeof n !== 'object' || n === null || typeof n.user !== 'string' || typeof n.bare !== 'string' || typeof n.at !== 'number' || !Array.isArray(n.contacts)) return false;
  return n.contacts.every((c) => {
    if (typeof c !== 'object' || c === null || typeof c.jid !== 'string' || typeof c.sawPresence !== 'boolean' || !Array.isArray(c.stanzas)) return false;
    if (!c.stanzas.every((t) => t === 'unsubscribe' || t === 'unsubscribed')) return false;
    if (c.remote !== undefined && typeof c.remote !== 'boolean') return false;
    const p = c.push;
    return p === undefined || (typeof p === 'object' && p !== null && typeof p.version === 'string' && typeof p.item?.jid === 'string' && typeof p.item.subscription === 'string' && Array.isArray(p.item.groups));
  });
}

/** The roster, offline and archive stores may be missing (the CLI on a data directory the server never fully made). */
export interface RemovalStores {
  accounts: AccountStore;
  roster?: RosterStore;
  offline?: OfflineStore;
  archive?: ArchiveStore;
  blocking?: BlockStore;
  personal?: PersonalStore;
  pep?: PepStore;
  muc?: RoomStore;
  /** XEP-0363 slots, and XMPP_UPLOAD_DIR where their files are. */
  uploads?: { store: UploadStore; dir: string };
}

/**
 * Removes the account and its data, and applies the removal to its local
 * contacts' rosters. Undefined when there is no such account.
 */
export async function removeAccount(stores: RemovalStores, domain: string, name: string, maxRosterItems = Number.MAX_SAFE_INTEGER): Promise<RemovalNotice | undefined> {
  const user = normalizedOrUndefined(name);
  if (user === undefined) return undefined;
  const bare = `${user}@${domain}`;
  // Every pair with a state: roster items, and requests from contacts not in the roster.
  const roster = stores.roster;
  const pairs = roster ? await pairStates(roster, user) : new Map<string, SubState>();
  // First the account itself: from now on nobody logs in as it.
  if (!(await stores.accounts.remove(user))) return undefined;
  const notice: RemovalNotice = { user, bare, at: Date.now(), contacts: [] };
  try {
    if (roster) {
      for (const [jid, before] of pairs) {
        const change = await cancel(roster, domain, bare, jid, before, maxRosterItems);
        if (change) notice.contacts.push(change);
      }
      await roster.removeAll(user);
    }
    await stores.offline?.removeAll(user);
    // XEP-0313 archive: the account's own copy of its conversations (its contacts keep theirs).
    await stores.archive?.removeAll(user);
    // XEP-0191: its blocklist (every worker drops its copy through the modules' removed hook).
    await stores.blocking?.unblockAll(user);
    // Its vCard and private XML (XEP-0054, XEP-0049).
    await stores.personal?.removeAll(user);
    // Its PEP nodes and items (XEP-0163).
    await stores.pep?.removeAll(user);
    // Its subscriptions and affiliations on others' nodes (the pubsub service, XEP-0060).
    await stores.pep?.forget(bare);
    // Its affiliations and registered nicknames in chat rooms (XEP-0045): a new account of the same name is someone else.
    await stores.muc?.forget(bare);
    // Its uploaded files (XEP-0363), which its URLs no longer get.
    if (stores.uploads) await removeOwnerUploads(stores.uploads.store, stores.uploads.dir, user);
  } catch (err) {
    // The account is gone: its sessions must end all the same. What could
    // not be changed for its contacts is reported, not undone.
    log.error('account removed, but its data and contacts were not all updated', { user, err: String(err) });
  }
  return notice;
}

/**
 * Every pair of the user's with a state (roster items, and requests from
 * contacts not in the roster), as RosterStore.state gives it: two reads, not
 * one per contact.
 */
export async function pairStates(roster: RosterStore, user: string): Promise<Map<string, SubState>> {
  const pairs = new Map<string, SubState>();
  const { items } = await roster.get(user);
  const requests = new Set((await roster.pendingRequests(user)).map((r) => r.jid));
  for (const item of items) pairs.set(item.jid, composeState(item, requests.has(item.jid)));
  for (const jid of requests) if (!pairs.has(jid)) pairs.set(jid, composeState(undefined, true));
  return pairs;
}

/** RFC 6121 §2.5.2 on the contact's side of one pair; undefined when there is nobody to tell. */
async function cancel(roster: RosterStore, domain: string, bare: string, jid: string, before: SubState, maxRosterItems: number): Promise<ContactChange | undefined> {
  const i = jid.indexOf('@');
  if (i === -1) return undefined; // a server's JID: nobody to tell
  const { ask, pendingIn } = splitState(before);
  if (jid.slice(i + 1) !== domain) {
    // A contact of another server: the stanzas go there (with federation on), which applies them.
    const stanzas: ContactChange['stanzas'] = [];
    if (receivesFrom(before) || ask) stanzas.push('unsubscribe');
    if (sendsTo(before) || pendingIn) stanzas.push('unsubscribed');
    return stanzas.length > 0 || sendsTo(before) ? { jid, stanzas, sawPresence: sendsTo(before), remote: true } : undefined;
  }
  const local = jid.slice(0, i);
  const change: ContactChange = { jid, stanzas: [], sawPresence: sendsTo(before) };
  if (receivesFrom(before) || ask) {
    const r = await roster.transition(local, bare, INBOUND.unsubscribe, { max: maxRosterItems });
    if (r.after !== r.before) change.stanzas.push('unsubscribe');
    if (r.change) change.push = r.change;
  }
  if (sendsTo(before) || pendingIn) {
    const r = await roster.transition(local, bare, INBOUND.unsubscribed, { max: maxRosterItems });
    if (r.after !== r.before) change.stanzas.push('unsubscribed');
    if (r.change) change.push = r.change;
  }
  return change.stanzas.length > 0 || change.sawPresence ? change : undefined;
}
