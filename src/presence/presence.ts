// Presence (RFC 6121 §3, §4) for the accounts of this domain: subscription
// handling on both sides of a pair, broadcast of a session's presence to its
// subscribers and to the account's own resources, probes, directed presence,
// and the unavailable presence a session leaves behind however it ends.
// Pending subscription requests, contacts' presence and offline messages are
// handed over when a session becomes available, paced by its reading.
//
// When both parties are accounts of this server, the "user's server" and
// the "contact's server" of the RFC are this one: an outbound subscription
// stanza is applied to the sender's roster (Appendix A.2) and then, at once,
// to the addressee's (A.3), wherever either of them is connected. The
// rosters live in the shared store, and each transition is atomic there.
// When the other party is on a peer server (federation), our side of the
// pair is applied here and the stanza goes to that server, which applies
// its own; what it sends back (approvals, probes, presence) comes in
// through fromRemote.
//
// What presence routing needs of a roster (who is subscribed to the account,
// whom it is subscribed to) is kept in memory for each account with a
// session on this worker, dropped whenever a roster push for the account
// passes through here (every roster change sends one), and read again when
// next needed: a presence stanza does not read the roster.
import { Element, clone, parse as parseXml } from 'ltx';
import type { RosterItem, RosterStore, SubState, TransitionResult } from '../roster/store.ts';
import { splitState } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import { OfflineDelivery, CLAIM_MS } from '../offline/delivery.ts';
import type { SessionRecord, SessionRegistry } from '../registry/registry.ts';
import type { Only } from '../worker/wire.ts';
import type { Out, Paced } from '../session/session.ts';
import { pushQuery } from '../modules/roster.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { Jid } from '../xmpp/jid.ts';
import { parseJid } from '../xmpp/jid.ts';
import { INBOUND, OUTBOUND, isSubscriptionType, receivesFrom, sendsTo } from './subscription.ts';
import type { SubscriptionType } from './subscription.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { retain, flat } from '../xml/retain.ts';
import { log } from '../log.ts';

export const NS_NICK = 'http://jabber.org/protocol/nick';
/** What a subscription request may carry into the addressee's storage (UTF-16 units of text). */
const MAX_REQUEST_STATUS = 1024;
const MAX_REQUEST_NICK = 256;
/** Contacts probed at a time at login, and pending requests handed over at a time. */
const PROBE_BATCH = 32;
const REQUEST_BATCH = 16;

/**
 * RFC 6121 §4.7.2.3: an integer in -128..127, 0 when absent. Out of range is
 * clamped and unreadable taken as 0 rather than refused, as servers commonly do.
 */
export function priorityOf(el: Element): number {
  const p = Number.parseInt(el.getChildText('priority') ?? '0', 10);
  return Number.isFinite(p) ? Math.max(-128, Math.min(127, p)) : 0;
}

/** What the presence service needs of a session. */
export interface PresenceSession {
  readonly id: string;
  jid: string | undefined;
  bare: string | undefined;
  /** Normalised localpart of the account; null for ANONYMOUS (no roster). */
  username: string | null;
  available: boolean;
  priority: number;
  /** The last available presence broadcast, as sent (no 'to'); answers probes. */
  lastPresence: Element | undefined;
  /** Entities that got directed presence from this session while it was available (RFC 6121 §4.6); created on first use. */
  directed: Set<string> | undefined;
  deliver(xml: string, opts?: { live?: boolean }): boolean;
  /** Output read only as the client reads (login burst). */
  pace(src: Paced): void;
  /** False once the session has closed (it may close while a presence change is under way). */
  readonly open: boolean;
}

/** How a routed stanza is handed over (Router.deliver). */
export interface DeliverOptions {
  /** An answer the session asked for (a probe's answer): not counted against it as unsolicited output. */
  solicited?: boolean;
  /**
   * Available presence of a local session that makes it newly available to
   * the addressee (initial presence, §4.2.2; the first directed presence of
   * an availability, §4.6.2; the presence an approval or a probe brings,
   * §3.1.5, §4.3.2), not a change of one it already has: a hosted service
   * acts on it (XEP-0060 on_sub_and_presence) without keeping state.
   */
  arriving?: boolean;
}

/** The routing this service uses (the Router). */
export interface PresenceRouting {
  /** Every bound resource of a bare JID, wherever it is connected (the owners judge availability); `fresh`: not from a cache or replica. */
  resources(bare: string, fresh?: boolean): Promise<SessionRecord[]>;
  /** Available resources of a bare JID, as the registry has them. */
  available(bare: string): Promise<SessionRecord[]>;
  deliver(rec: SessionRecord, el: Element, only?: Only, opts?: DeliverOptions): void;
  /** A roster push (RFC 6121 §2.1.6) for one resource, only if it is interested. */
  pushTo(rec: SessionRecord, query: Element): void;
  /** A roster push to every interested resource of the account, wherever it lives. */
  pushRoster(bareJid: string, query: Element): Promise<void>;
  /** Asks a session to send its current presence to `answerTo` (RFC 6121 §4.3.2); `arriving`: DeliverOptions.arriving on the answer. */
  probe(rec: SessionRecord, answerTo: string, arriving?: boolean): void;
  /** Tells a session, wherever it lives, that offline messages wait for it (XEP-0160). */
  flushOffline(rec: SessionRecord): void;
  /** Tells every bound resource of an account but `except` that offline messages wait (a fresh read; never rejects). */
  offlineWaiting(bare: string, except?: string): Promise<void>;
  /** Work the worker must see done before its stores close at shutdown; its failure is logged. */
  track(work: () => Promise<void>): void;
  routeInternal(el: Element, opts?: DeliverOptions): Promise<void>;
  /** A departed session had sent directed presence to `to`: true when a hosted service says it is gone for it (XEP-0045 rooms). */
  sessionGone?(from: string, to: string): boolean;
  /**
   * Whether a domain is a hosted service's that may be a roster contact
   * (XEP-0060 pubsub.<domain>): subscription stanzas, probes and broadcast
   * presence go to it on this server, federation or not.
   */
  contactService?(domain: string): boolean;
}

export interface PresenceDeps {
  domain: string;
  roster: RosterStore;
  offline: OfflineStore;
  registry: SessionRegistry;
  accountExists(local: string): Promise<boolean>;
  maxRosterItems: number;
  /** Pending requests from strangers one user may hold (RosterStore.transition maxPending). */
  maxPendingRequests: number;
  /** Unanswered requests one user may have sent. */
  maxOutgoingRequests: number;
  /** Directed presence recipients tracked per session. */
  maxDirected: number;
  /** Whether stanzas to other domains go anywhere (XMPP_S2S). */
  federation: boolean;
  /** XEP-0191: whether presence from `from` to `to` is blocked, either way (the blocking module); synchronous when nothing needs reading. */
  blocked?: (from: string, to: string) => boolean | Promise<boolean>;
  /** XEP-0191: whether the account of `to` (a bare JID of ours) blocks `from`; synchronous when nothing needs reading. */
  refuses?: (to: string, from: string) => boolean | Promise<boolean>;
  /** `user` approved `item`'s subscription, now in its roster (the modules' approved hooks: PEP's last items on subscription). */
  approved?: (user: string, item: RosterItem) => void;
}

/** A session that ended in a place where no actor is left to speak for it (its node died). */
export interface Departed {
  jid: string;
  bare: string;
  available: boolean;
  directed: string[];
}

/** What presence routing needs of a roster. */
interface RosterView {
  /** Contacts with a subscription to the account's presence ('from', 'both'). */
  subscribers: string[];
  /** Contacts whose presence the account is subscribed to ('to', 'both'). */
  subscribedTo: string[];
  subscriberSet: Set<string>;
}

/** Per account with sessions on this worker: how many, and its roster view once read. */
interface Local {
  sessions: number;
  view?: RosterView;
  /** Bumped by every roster change: a read that started before one is not kept. */
  gen: number;
}

export class PresenceService {
  private readonly d: PresenceDeps;
  private readonly r: PresenceRouting;
  private readonly locals = new Map<string, Local>();
  /** Sessions delivering offline messages now, and those told meanwhile to take them. */
  private readonly delivering = new WeakMap<PresenceSession, OfflineDelivery>();
  private readonly again = new WeakSet<PresenceSession>();
  /** A later try at the offline messages, when another session's claim held them (it may have died) or the store failed. */
  private readonly retries = new WeakMap<PresenceSession, NodeJS.Timeout>();

  constructor(deps: PresenceDeps, routing: PresenceRouting) {
    this.d = deps;
    this.r = routing;
  }

  // ---- the roster view (what a presence stanza needs, kept in memory) ----

  /** A session of `username` bound on this worker. */
  attach(s: PresenceSession): void {
    if (s.username === null) return;
    const l = this.locals.get(s.username);
    if (l) l.sessions++;
    else this.locals.set(s.username, { sessions: 1, gen: 0 });
  }

  /** A session of this worker ended. */
  detach(s: PresenceSession): void {
    // A delivery done reading that waits for acknowledgements (XEP-0198) ends
    // with the session; one still writing ends when its connection closes.
    const d = this.delivering.get(s);
    if (d?.awaitingAcks) d.stop();
    if (s.username === null) return;
    const l = this.locals.get(s.username);
    if (l && --l.sessions <= 0) this.locals.delete(s.username);
  }

  /**
   * The session moves to another connection (XEP-0198 §5): its offline
   * delivery, if any, stops; resolves once its claim is released, so that
   * the session's next delivery, wherever it resumes, finds it free.
   */
  async stopDelivery(s: PresenceSession): Promise<void> {
    clearTimeout(this.retries.get(s));
    await this.delivering.get(s)?.stop();
  }

  /** The account's roster changed (a push for it passes through this worker). */
  rosterChanged(username: string): void {
    const l = this.locals.get(username);
    if (!l) return;
    l.view = undefined;
    l.gen++;
  }

  /**
   * The account was removed and its roster with it: what its sessions here
   * still say (their last unavailable presence) goes to these subscribers.
   */
  primeView(username: string, subscribers: string[]): void {
    const l = this.locals.get(username);
    if (!l) return;
    l.gen++;
    l.view = { subscribers, subscribedTo: [], subscriberSet: new Set(subscribers) };
  }

  private async view(username: string | null): Promise<RosterView> {
    if (username === null) return { subscribers: [], subscribedTo: [], subscriberSet: new Set() };
    const l = this.locals.get(username);
    if (l?.view) return l.view;
    const gen = l?.gen;
    const items = (await this.d.roster.get(username)).items;
    const subscribers: string[] = [];
    const subscribedTo: string[] = [];
    for (const item of items) {
      if (item.subscription === 'from' || item.subscription === 'both') subscribers.push(item.jid);
      if (item.subscription === 'to' || item.subscription === 'both') subscribedTo.push(item.jid);
    }
    const v = { subscribers, subscribedTo, subscriberSet: new Set(subscribers) };
    const now = this.locals.get(username);
    if (now && now === l && now.gen === gen) now.view = v;
    return v;
  }

  /** A presence stanza from a client, 'from' already stamped with its full JID; `to` parsed when present. */
  /** `resumed`: a presence the server re-announces for a session resumed from its durable state (not new to anyone). */
  async fromClient(el: Element, s: PresenceSession, to: Jid | undefined, opts: { resumed?: boolean } = {}): Promise<void> {
    const type = el.attrs.type;
    if (isSubscriptionType(type)) {
      // §3: with an account, or with a service of this server's that takes them (XEP-0060 §12.4: a pubsub service learns its subscribers' presence so).
      if (!to || (!to.local && (to.resource || !this.isService(to.domain)))) throw new StanzaError('bad-request', 'a subscription request is addressed to an account');
      return this.outboundSubscription(el, type, s, to);
    }
    if (type === 'probe') {
      if (!to || !to.local || to.domain !== this.d.domain) return; // §4.3: probes are for accounts; none leave this server
      return this.probe(`${to.local}@${to.domain}`, to.local, s.jid!, s.bare!);
    }
    if (type !== undefined && type !== 'unavailable') {
      if (type === 'error') {
        if (to) await this.r.routeInternal(el);
        return;
      }
      throw new StanzaError('bad-request', `unknown presence type ${JSON.stringify(type)}`);
    }
    if (!to) return type === undefined ? this.broadcastAvailable(el, s, opts.resumed === true) : this.broadcastUnavailable(s, el);
    return this.directedPresence(el, s, to);
  }

  /**
   * Presence from a peer server's entity to an address of our domain: a
   * subscription stanza is applied to the addressee's roster (A.3, A.4),
   * and a probe is answered (§4.3.2); true when taken. Other presence is
   * routed as any stanza (to the available resources of a bare JID).
   */
  async fromRemote(el: Element, to: Jid): Promise<boolean> {
    return this.fromOther(el, to, false);
  }

  /**
   * A subscription stanza from a hosted service of this server's that may
   * be a contact (PresenceRouting.contactService) to an address of our
   * domain: applied to the addressee's roster as a peer's would be (A.3).
   */
  async fromService(el: Element, to: Jid): Promise<void> {
    await this.fromOther(el, to, true);
  }

  private async fromOther(el: Element, to: Jid, service: boolean): Promise<boolean> {
    const type = el.attrs.type;
    const from = el.attrs.from;
    // Checked by the stream it came on (s2s/incoming.ts), or the service's own domain.
    const sender = parseJid(from);
    const fromBare = sender.local ? `${sender.local}@${sender.domain}` : sender.domain;
    if (isSubscriptionType(type)) {
      // §3: subscriptions are between accounts (and with this server's services that take them).
      if (!to.local || (!sender.local && !service)) return true;
      const contact = `${to.local}@${to.domain}`;
      const stanza = subscriptionStanza(el, fromBare, contact, type);
      const r = await this.inboundSubscription(stanza, type, to.local, contact, fromBare);
      if (r === 'pending-full') {
        const err = new Element('presence', { from: contact, to: fromBare, type: 'error' });
        err.c('error', { type: 'wait' }).c('resource-constraint', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' });
        await this.r.routeInternal(err);
      }
      return true;
    }
    if (type === 'probe') {
      if (to.local) await this.probe(`${to.local}@${to.domain}`, to.local, from, fromBare);
      return true;
    }
    return false;
  }

  // ---- subscriptions (RFC 6121 §3, Appendix A) ----

  /** Whether a bare JID is an account of this server. */
  private isLocal(bare: string): boolean {
    const at = bare.indexOf('@');
    return at > 0 && bare.slice(at + 1) === this.d.domain;
  }

  /** Whether a bare JID is the domain of a hosted service that may be a contact (reached with federation off too). */
  private isService(bare: string): boolean {
    return this.r.contactService?.(bare) === true;
  }

  /**
   * A subscription stanza to `toBare` from `fromBare`: applied to the
   * addressee's roster here (A.3) when it is an account of ours, else sent
   * to its server, which applies it there.
   */
  private async subscriptionTo(stanza: Element, type: SubscriptionType, toBare: string, fromBare: string): Promise<'pending-full' | undefined> {
    if (this.isLocal(toBare)) {
      // XEP-0191 §5.3: nothing from a JID the addressee blocked reaches it,
      // subscription stanzas included (a client's, a roster removal's, the
      // server's answers): its roster stays as it is, as the router's guard
      // has it for the same stanza from a peer server.
      const refused = this.d.refuses?.(toBare, fromBare);
      if (refused === true || (refused instanceof Promise && (await refused))) return undefined;
      return this.inboundSubscription(stanza, type, toBare.slice(0, toBare.indexOf('@')), toBare, fromBare);
    }
    await this.r.routeInternal(stanza);
    return undefined;
  }

  private async outboundSubscription(el: Element, type: SubscriptionType, s: PresenceSession, to: Jid): Promise<void> {
    const contact = to.local ? `${to.local}@${to.domain}` : to.domain;
    if (to.domain !== this.d.domain && !this.d.federation && !this.isService(contact)) throw new StanzaError('remote-server-not-found', `${to.domain} is not served here and federation is off`);
    const user = s.username;
    if (user === null) throw new StanzaError('not-allowed', 'anonymous sessions have no roster to subscribe with');
    if (contact === s.bare) throw new StanzaError('bad-request', 'an account does not subscribe to itself');
    // §3.1.2 and the like: the server stamps the bare JIDs of both parties.
    const stanza = subscriptionStanza(el, s.bare!, contact, type);

    let mine: TransitionResult;
    try {
      mine = await this.d.roster.transition(user, contact, OUTBOUND[type], { max: this.d.maxRosterItems, maxOutgoing: this.d.maxOutgoingRequests });
    } catch (err) {
      log.warn('subscription: roster store failed', { user, contact, err: String(err) });
      throw new StanzaError('internal-server-error', 'the roster cannot be changed now');
    }
    if (mine.change) this.rosterChanged(user); // here at once; elsewhere with the push
    if (mine.full === 'items') throw new StanzaError('policy-violation', `the roster is full (at most ${this.d.maxRosterItems} items)`);
    if (mine.full === 'outgoing') throw new StanzaError('policy-violation', `too many subscription requests are unanswered (at most ${this.d.maxOutgoingRequests})`);
    const pushMine = () => (mine.change ? this.r.pushRoster(s.bare!, pushQuery(mine.change.item, mine.change.version)) : Promise.resolve());

    if (type === 'subscribe' || type === 'unsubscribe') {
      // §3.1.2, §3.3.2: the user's roster shows the request (or its end), then the stanza goes.
      await pushMine();
      const theirs = await this.subscriptionTo(stanza, type, contact, s.bare!);
      if (theirs === 'pending-full') {
        // Not kept by the contact: the user's request is not pending either.
        const undo = await this.d.roster.transition(user, contact, { [mine.after]: mine.before }, { max: this.d.maxRosterItems });
        if (undo.change) await this.r.pushRoster(s.bare!, pushQuery(undo.change.item, undo.change.version));
        log.info('subscription request refused: the contact holds too many', { from: s.bare, to: contact });
        throw new StanzaError('resource-constraint', `${contact} has too many subscription requests waiting; try again later`);
      }
      return;
    }
    // §3.1.5, §3.2.2: the approval (or cancellation) goes first, then the
    // contact's own roster push.
    await this.subscriptionTo(stanza, type, contact, s.bare!);
    await pushMine();
    // §3.1.5: approving sends the approver's current presence; §3.2.2:
    // cancelling sends unavailable from each of the user's resources.
    // New to the contact only when the approval changed the roster (a repeated one re-sends presence, nothing new).
    if (type === 'subscribed' && sendsTo(mine.after)) await this.presenceOfAccount(s.bare!, contact, !sendsTo(mine.before));
    // An approval that changed the roster (not one repeated): what follows one is up to the modules.
    if (type === 'subscribed' && !sendsTo(mine.before) && sendsTo(mine.after) && mine.change) this.d.approved?.(user, mine.change.item);
    if (type === 'unsubscribed' && sendsTo(mine.before)) await this.unavailableOfAccount(s.bare!, contact);
  }

  /**
   * The addressee's side (A.3): state change, delivery, roster push,
   * auto-replies. 'pending-full' when a request was refused for the
   * addressee's limit on pending requests.
   */
  private async inboundSubscription(stanza: Element, type: SubscriptionType, local: string, contact: string, userBare: string): Promise<'pending-full' | undefined> {
    if (!(await this.d.accountExists(local))) {
      // §3.1.3: a request to an account that does not exist is answered "unsubscribed".
      if (type === 'subscribe') await this.subscriptionTo(new Element('presence', { from: contact, to: userBare, type: 'unsubscribed' }), 'unsubscribed', userBare, contact);
      return undefined;
    }
    if (type === 'subscribe') {
      const state = await this.d.roster.state(local, userBare);
      if (sendsTo(state)) {
        // §3.1.3: already subscribed: the server answers for the contact.
        const reply = new Element('presence', { from: contact, to: userBare, type: 'subscribed' });
        await this.subscriptionTo(reply, 'subscribed', userBare, contact);
        await this.presenceOfAccount(contact, userBare);
        return undefined;
      }
    }
    const theirs = await this.d.roster.transition(local, userBare, INBOUND[type], {
      max: this.d.maxRosterItems,
      maxPending: this.d.maxPendingRequests,
      ...(type === 'subscribe' ? { request: stanza.toString() } : {}),
    });
    if (theirs.change) this.rosterChanged(local);
    if (theirs.full === 'pending') return 'pending-full';
    if (theirs.full) {
      log.warn('subscription change not applied: the roster is full', { contact, from: userBare, type });
      return undefined;
    }
    if (theirs.after === theirs.before) return undefined; // A.3: no state change, nothing to deliver
    const query = theirs.change ? pushQuery(theirs.change.item, theirs.change.version) : undefined;
    // §3.1.3: a request goes to the available resources; §3.1.6, §3.2.3,
    // §3.3.3: an approval or cancellation goes to the interested resources,
    // and MUST arrive before the roster push it causes. Both go to each
    // resource in that order, over the same path.
    for (const rec of await this.r.resources(contact)) {
      this.r.deliver(rec, stanza, type === 'subscribe' ? 'available' : 'subscription');
      if (query) this.r.pushTo(rec, query);
    }
    // §3.3.3: an unsubscribe makes the unsubscribed-from contact appear offline.
    if (type === 'unsubscribe') await this.unavailableOfAccount(contact, userBare);
    return undefined;
  }

  /** Presence of each available resource of `bare`, sent to `to` (a bare or full JID). */
  /** The account's current presence to `to` (§3.1.5, §3.1.3); `arriving`: it makes the account newly available there (DeliverOptions). */
  private async presenceOfAccount(bare: string, to: string, arriving = false): Promise<void> {
    for (const rec of await this.r.resources(bare)) this.r.probe(rec, to, arriving);
  }

  private async unavailableOfAccount(bare: string, to: string): Promise<void> {
    for (const rec of await this.r.available(bare)) await this.r.routeInternal(new Element('presence', { from: rec.jid, to, type: 'unavailable' }));
  }

  /**
   * RFC 6121 §2.5.2: the user removed a contact's item: whatever the pair
   * had is cancelled on the contact's side as an unsubscribe (the user's
   * subscription to the contact) and an unsubscribed (the contact's to the
   * user) would.
   */
  async itemRemoved(username: string, contact: string, before: SubState): Promise<void> {
    const userBare = `${username}@${this.d.domain}`;
    // A contact of a peer server's hears it from there (federation); one of a domain we cannot reach, from nobody; a service of ours, here.
    if (!this.isLocal(contact) && !this.isService(contact) && (!this.d.federation || !contact.includes('@'))) return;
    const { ask, pendingIn } = splitState(before);
    if (receivesFrom(before) || ask) {
      await this.subscriptionTo(new Element('presence', { from: userBare, to: contact, type: 'unsubscribe' }), 'unsubscribe', contact, userBare);
    }
    if (sendsTo(before) || pendingIn) {
      await this.subscriptionTo(new Element('presence', { from: userBare, to: contact, type: 'unsubscribed' }), 'unsubscribed', contact, userBare);
      if (sendsTo(before)) await this.unavailableOfAccount(userBare, contact);
    }
  }

  // ---- probes (§4.3) ----

  /** A probe from `fromFull` (of account `fromBare`, here or on a peer server) for the presence of `contact`. */
  private async probe(contact: string, contactLocal: string, fromFull: string, fromBare: string): Promise<void> {
    if (!this.isLocal(contact)) {
      // §4.3.1: a contact on a peer server (or a service of ours) is probed there, from the user's bare JID.
      if ((this.d.federation || this.isService(contact)) && this.isLocal(fromBare)) await this.r.routeInternal(new Element('presence', { from: fromBare, to: contact, type: 'probe' }));
      return;
    }
    if (contact === fromBare) {
      for (const rec of await this.r.resources(contact)) if (rec.jid !== fromFull) this.r.probe(rec, fromFull);
      return;
    }
    if (!(await this.d.accountExists(contactLocal))) return;
    const state = await this.d.roster.state(contactLocal, fromBare);
    if (!sendsTo(state)) {
      // §4.3.2: no subscription, no presence. The "unsubscribed" tells the
      // prober its idea of the subscription is out of date.
      const reply = new Element('presence', { from: contact, to: fromBare, type: 'unsubscribed' });
      await this.subscriptionTo(reply, 'unsubscribed', fromBare, contact);
      return;
    }
    const recs = await this.r.resources(contact);
    if (!recs.some((r) => r.available)) {
      await this.r.routeInternal(new Element('presence', { from: contact, to: fromFull, type: 'unavailable' }), { solicited: true });
      return;
    }
    for (const rec of recs) this.r.probe(rec, fromFull);
  }

  /** A probe reached a session: its answer (§4.3.2), which the prober asked for. */
  answerProbe(s: PresenceSession, answerTo: string, arriving = false): void {
    if (!s.available || !s.lastPresence) return;
    const p = clone(s.lastPresence);
    p.attrs.from = s.jid!;
    p.attrs.to = answerTo;
    // Asked for: by a probe (§4.3.2), or by an approval (§3.1.5, presenceOfAccount), which alone may make it new to the addressee.
    void this.r.routeInternal(p, arriving ? { solicited: true, arriving } : { solicited: true });
  }

  // ---- broadcast (§4.2, §4.4, §4.5) ----

  /**
   * Sends `el` (from a full JID) to every available resource of each bare
   * JID (each resource's worker judges whether it is available now). The
   * sending session `self` gets it only when `echo` is set, whatever the
   * registry says of it yet (its own change may still be on the way there):
   * RFC 6121 §4.2.2 sends initial presence back to its sender too; an
   * unavailable one has no available resource left to go to. `arriving`:
   * the session's initial presence (DeliverOptions.arriving).
   */
  private async fanOut(el: Element, bares: string[], self?: PresenceSession, echo = false, arriving = false): Promise<void> {
    for (const bare of bares) {
      if (!this.isLocal(bare)) {
        // A subscriber on a peer server: one copy to its bare JID, which its server fans out (§4.2.2)
        // to every resource, one the user blocked by its full JID (XEP-0191) included: that server decides.
        // Or a service of ours the account shares its presence with (its roster has it 'from' or 'both').
        if ((this.d.federation || this.isService(bare)) && !(await this.isBlocked(el, bare))) {
          const copy = clone(el);
          copy.attrs.to = bare;
          await this.r.routeInternal(copy, { arriving });
        }
        continue;
      }
      const recs = await this.r.resources(bare);
      if (recs.length === 0) continue;
      // One copy per contact: delivery only reads it.
      const copy = clone(el);
      copy.attrs.to = bare;
      for (const rec of recs) {
        if (rec.sid === self?.id) continue;
        // Read nothing (no await) when neither side blocks anyone.
        const blocked = this.isBlocked(el, rec.jid);
        if (blocked === true || (blocked !== false && (await blocked))) continue;
        this.r.deliver(rec, copy, 'available');
      }
    }
    if (self && echo) {
      const copy = clone(el);
      copy.attrs.to = self.bare!;
      self.deliver(copy.toString(), { live: false });
    }
  }

  /** XEP-0191 §5.3: presence neither to nor from a blocked JID. */
  private isBlocked(el: Element, to: string): boolean | Promise<boolean> {
    return this.d.blocked ? this.d.blocked(el.attrs.from, to) : false;
  }

  private async broadcastAvailable(el: Element, s: PresenceSession, resumed = false): Promise<void> {
    // Read first: if the roster cannot be read, nothing has changed yet and
    // the client's next presence is handled in full (initial or not).
    const { subscribers, subscribedTo } = await this.view(s.username);
    const initial = !s.available;
    const wasNegative = s.priority < 0;
    const priority = priorityOf(el);
    // The registry first: a change it cannot record (Redis unreachable) is
    // refused whole, and the session stays as it was. Not to be announced
    // either when the session is fenced, or found replaced and closed.
    if (!(await this.d.registry.setPresence(s.jid!, s.id, true, priority)) || !s.open) return;
    s.priority = priority;
    s.available = true;
    delete el.attrs.to;
    // Kept for as long as the session: a copy, not slices of the chunk it came in.
    s.lastPresence = retain(el);

    // §4.2.2 and §4.4.2: to the subscribers, and to all of the account's
    // available resources, this one included.
    await this.fanOut(el, [...subscribers, s.bare!], s, true, initial && !resumed);
    if (initial) {
      // §4.2.2: probes for the presence of the account's other resources
      // and of the contacts it is subscribed to; §3.1.3: the requests that
      // came while it was away. Both handed over as the client reads.
      await this.probe(s.bare!, '', s.jid!, s.bare!);
      if (subscribedTo.length > 0) s.pace(this.probes(s, subscribedTo));
      if (s.username !== null) s.pace(this.pendingRequests(s.username));
    }
    // XEP-0160: offline messages go to the first resource that becomes
    // available with a non-negative priority (RFC 6121 §8.5.2.2.1).
    if ((initial || wasNegative) && s.priority >= 0 && s.username !== null) this.deliverOffline(s);
  }

  /** Probes the contacts a few at a time, as the client reads their answers (which it asked for). */
  private probes(s: PresenceSession, contacts: string[]): Paced {
    let i = 0;
    return {
      next: async () => {
        if (i >= contacts.length || !s.open) return null;
        const batch = contacts.slice(i, (i += PROBE_BATCH));
        for (const contact of batch) {
          try {
            await this.probe(contact, contact.split('@')[0], s.jid!, s.bare!);
          } catch (err) {
            log.debug('probe failed', { jid: s.jid, contact, err: String(err) });
          }
        }
        // Let the answers of this batch in before the next (those of
        // sessions on this node come within the turn).
        await new Promise<void>((r) => setImmediate(r));
        return [];
      },
    };
  }

  /** The pending subscription requests (§3.1.3), a batch at a time. */
  private pendingRequests(username: string): Paced {
    let reqs: string[] | undefined;
    let i = 0;
    return {
      next: async () => {
        reqs ??= await this.unblockedRequests(username);
        if (i >= reqs.length) return null;
        return reqs.slice(i, (i += REQUEST_BATCH)).map((xml): Out => ({ xml }));
      },
    };
  }

  /** The stored requests (§3.1.3) but those from a JID the user has blocked since (XEP-0191 §5.3: nothing of it reaches the user). */
  private async unblockedRequests(username: string): Promise<string[]> {
    const reqs = await this.d.roster.pendingRequests(username);
    if (!this.d.blocked) return reqs.map((r) => r.stanza);
    const bare = `${username}@${this.d.domain}`;
    const out: string[] = [];
    for (const r of reqs) {
      const blocked = this.d.blocked(r.jid, bare);
      if (!(blocked === true || (blocked !== false && (await blocked)))) out.push(r.stanza);
    }
    return out;
  }

  /** Offline messages stored after this available session took them (a race with its presence). */
  flushOffline(s: PresenceSession): void {
    if (s.available && s.priority >= 0 && s.username !== null) this.deliverOffline(s);
  }

  private deliverOffline(s: PresenceSession): void {
    if (this.delivering.has(s)) {
      // It reads on until the queue is empty; unless it found the queue
      // claimed by another, then it must try again once done.
      this.again.add(s);
      return;
    }
    clearTimeout(this.retries.get(s));
    const bare = `${s.username}@${this.d.domain}`;
    const blocked = this.d.blocked;
    const skip = blocked ? (xml: string) => blocked(parseXml(xml).attrs.from ?? '', bare) : undefined;
    const d = new OfflineDelivery(this.d.offline, s.username!, s.id, (work) => this.r.track(work), skip);
    this.delivering.set(s, d);
    d.onEnd = () => {
      this.delivering.delete(s);
      if (this.again.delete(s) && d.claimedByOther && !d.stopped) return this.deliverOffline(s);
      if ((d.claimedByOther || d.failed) && s.open) {
        // The one holding the claim tells the others when it lets go, but it
        // may have died with its worker or node: try again once its claim
        // has lapsed. A store that failed is tried again a little later.
        const retry = setTimeout(() => {
          if (s.open && s.available && s.priority >= 0) this.deliverOffline(s);
        }, d.failed ? 5000 : CLAIM_MS + 1000);
        retry.unref();
        this.retries.set(s, retry);
        return;
      }
      // Left: stored between the last read and the release, or not written
      // before this session went. Another available resource takes them
      // now, else the next one to come.
      void this.d.offline.count(s.username!).then(
        (n) => {
          if (n === 0) return;
          if (!d.stopped && s.open && s.available && s.priority >= 0) return this.deliverOffline(s);
          // Every other bound resource is told, read fresh: one that found
          // the queue claimed by this session has bound before this release,
          // and must hear of it (the claim's lapse is a minute away).
          return this.r.offlineWaiting(s.bare!, s.id);
        },
        () => {},
      );
    };
    s.pace(d);
  }

  /** Explicit unavailable presence, or (`ended`) the end of an available session (§4.5). */
  private async broadcastUnavailable(s: PresenceSession, el?: Element, ended = false): Promise<void> {
    const was = s.available;
    if (was && !ended) await this.d.registry.setPresence(s.jid!, s.id, false, s.priority);
    const directed = s.directed ? [...s.directed] : [];
    s.directed = undefined;
    const unavailable = el ?? new Element('presence', { from: s.jid!, type: 'unavailable' });
    delete unavailable.attrs.to;
    if (was) {
      s.available = false;
      s.lastPresence = undefined;
      const { subscribers } = await this.view(s.username);
      await this.fanOut(unavailable, [...subscribers, s.bare!], s);
    }
    // §4.6.3: whoever got directed presence learns it is over.
    for (const to of directed) {
      const copy = clone(unavailable);
      copy.attrs.to = to;
      await this.r.routeInternal(copy);
    }
    if (directed.length > 0 && !ended) await this.d.registry.noteDirected(s.jid!, s.id, null).catch(() => {});
  }

  /** A session ended without saying so (closed socket, error, kick): broadcast for it, before the worker's stores close. */
  sessionEnded(s: PresenceSession): void {
    clearTimeout(this.retries.get(s));
    if (!s.available && s.directed === undefined) return;
    this.r.track(async () => {
      try {
        await this.broadcastUnavailable(s, undefined, true);
      } catch (err) {
        log.warn('unavailable broadcast failed', { jid: s.jid, err: String(err) });
      }
    });
  }

  /** Sessions of a node that died: nobody else will say they are gone. */
  async departed(list: Departed[]): Promise<void> {
    for (const d of list) {
      // An external component's record (its domain, no account): nobody to tell.
      if (!d.bare.includes('@')) continue;
      const unavailable = new Element('presence', { from: d.jid, type: 'unavailable' });
      try {
        // Resumed elsewhere meanwhile (XMPP_SM_DURABLE), or its resource
        // bound by a new login: the full JID is live again and its own
        // presence is what its contacts are to see, not this end coming late.
        // (The registry away: the end is said, as before there was a check.)
        const again = d.available && (await this.d.registry.resources(d.bare, true).catch(() => [])).some((r) => r.jid === d.jid);
        if (d.available && !again) {
          const local = d.bare.split('@')[0];
          // No account starts with the anonymous prefix (newUsername).
          const username = local.startsWith(ANON_PREFIX) ? null : local;
          const { subscribers } = await this.view(username);
          await this.fanOut(unavailable, [...subscribers, d.bare]);
        }
        for (const to of d.directed) {
          // A room removes it with the status of an error (XEP-0045 333) rather than as if it had left.
          if (this.r.sessionGone?.(d.jid, to)) continue;
          const copy = clone(unavailable);
          copy.attrs.to = to;
          await this.r.routeInternal(copy);
        }
      } catch (err) {
        log.warn('unavailable broadcast for a departed session failed', { jid: d.jid, err: String(err) });
      }
    }
  }

  // ---- directed presence (§4.6) ----

  private async directedPresence(el: Element, s: PresenceSession, to: Jid): Promise<void> {
    const bareTo = to.local ? `${to.local}@${to.domain}` : to.domain;
    // A service of ours is tracked by its prepared domain (a spelling in capitals is the same address).
    const service = !to.local && !to.resource && this.isService(bareTo);
    const target = service ? bareTo : el.attrs.to;
    let arriving = false;
    if (el.attrs.type === undefined) {
      // §4.6.2: tracked only while available, and only for entities the
      // broadcast does not reach already.
      const trackable = s.available && bareTo !== s.bare && !s.directed?.has(target) && (s.directed?.size ?? 0) < this.d.maxDirected;
      // New to a service of ours (DeliverOptions.arriving): the first directed presence since the session became
      // available, one the service does not have through the broadcast. Not from a session that is not available
      // (not online), nor past maxDirected (nothing more is tracked): those would make each one new.
      arriving = service && trackable && !(s.username !== null && (await this.view(s.username)).subscriberSet.has(bareTo));
      // A subscriber (here or on a peer server) hears the broadcast's unavailable: not tracked twice.
      const subscriber = trackable && s.username !== null && to.local !== '' && (this.isLocal(bareTo) || this.d.federation) && (await this.view(s.username)).subscriberSet.has(bareTo);
      if (trackable && !subscriber) {
        (s.directed ??= new Set()).add(flat(target));
        await this.d.registry.noteDirected(s.jid!, s.id, [...s.directed]).catch(() => {});
      }
    } else if (s.directed?.delete(target)) {
      if (s.directed.size === 0) s.directed = undefined;
      await this.d.registry.noteDirected(s.jid!, s.id, s.directed ? [...s.directed] : null).catch(() => {});
    }
    await this.r.routeInternal(el, { arriving });
  }
}

/**
 * The subscription stanza as the server passes it on and keeps it (a
 * request waits in the addressee's storage until answered): the bare JIDs
 * of both parties (§3.1.2), and of what the sender put in, only a status
 * and a nickname (XEP-0172), each cut to a few hundred characters. A
 * stranger can make nothing large wait in another's account.
 */
export function subscriptionStanza(el: Element, from: string, to: string, type: SubscriptionType): Element {
  const stanza = new Element('presence', { from, to, type });
  if (el.attrs.id !== undefined) stanza.attrs.id = el.attrs.id;
  const status = el.getChild('status');
  if (status) stanza.c('status').t(cut(status.getText(), MAX_REQUEST_STATUS));
  const nick = el.getChild('nick', NS_NICK);
  if (nick) stanza.c('nick', { xmlns: NS_NICK }).t(cut(nick.getText(), MAX_REQUEST_NICK));
  return stanza;
}

/** At most `n` UTF-16 units, not splitting a surrogate pair; a copy (never a slice of the input). */
function cut(s: string, n: number): string {
  let end = Math.min(s.length, n);
  if (end < s.length && end > 0 && s.charCodeAt(end - 1) >= 0xd800 && s.charCodeAt(end - 1) <= 0xdbff) end--;
  return Buffer.from(s.slice(0, end), 'utf8').toString('utf8');
}
