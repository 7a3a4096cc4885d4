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
import { splitState } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import { INBOUND, receivesFrom, sendsTo } from '../presence/subscription.ts';

/** What happened to one contact's roster: the stanzas it gets, in order, and the push for its item (if it changed). */
export interface ContactChange {
  /** The contact's bare JID. */
  jid: string;
  stanzas: ('unsubscribe' | 'unsubscribed')[];
  /** The contact's item for the removed account, as it is now, and the roster version. */
  push?: { item: RosterItem; version: string };
  /** The account's subscription to the contact's presence ended: the contact saw it available (§3.3.3 is for the other way). */
  sawPresence: boolean;
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

/** The roster and offline stores may be missing (the CLI on a data directory the server never fully made). */
export interface RemovalStores {
  accounts: AccountStore;
  roster?: RosterStore;
  offline?: OfflineStore;
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
  const pairs = new Map<string, SubState>();
  if (roster) {
    for (const item of (await roster.get(user)).items) pairs.set(item.jid, await roster.state(user, item.jid));
    for (const req of await roster.pendingRequests(user)) pairs.set(req.jid, await roster.state(user, req.jid));
  }
  // First the account itself: from now on nobody logs in as it.
  if (!(await stores.accounts.remove(user))) return undefined;
  const at = Date.now();
  const contacts: ContactChange[] = [];
  for (const [jid, before] of roster ? pairs : []) {
    const i = jid.indexOf('@');
    if (i === -1 || jid.slice(i + 1) !== domain) continue; // not one of ours: nobody to tell (no federation)
    const local = jid.slice(0, i);
    const { ask, pendingIn } = splitState(before);
    const change: ContactChange = { jid, stanzas: [], sawPresence: sendsTo(before) };
    if (receivesFrom(before) || ask) {
      const r = await roster!.transition(local, bare, INBOUND.unsubscribe, { max: maxRosterItems });
      if (r.after !== r.before) change.stanzas.push('unsubscribe');
      if (r.change) change.push = r.change;
    }
    if (sendsTo(before) || pendingIn) {
      const r = await roster!.transition(local, bare, INBOUND.unsubscribed, { max: maxRosterItems });
      if (r.after !== r.before) change.stanzas.push('unsubscribed');
      if (r.change) change.push = r.change;
    }
    if (change.stanzas.length > 0 || change.sawPresence) contacts.push(change);
  }
  await roster?.removeAll(user);
  await stores.offline?.removeAll(user);
  return { user, bare, at, contacts };
}
