// Presence (RFC 6121 §3, §4) for the accounts of this domain: subscription
// handling on both sides of a pair, broadcast of a session's presence to its
// subscribers and to the account's own resources, probes, directed presence,
// and the unavailable presence a session leaves behind however it ends.
// Pending subscription requests and offline messages are handed over when a
// session becomes available.
//
// Both parties are accounts of this server, so the "user's server" and the
// "contact's server" of the RFC are this one: an outbound subscription
// stanza is applied to the sender's roster (Appendix A.2) and then, at once,
// to the addressee's (A.3), wherever either of them is connected. The
// rosters live in the shared store (SQLite file or Redis), and each
// transition is atomic there.
import { Element, clone } from 'ltx';
import type { RosterStore, SubState, TransitionResult } from '../roster/store.ts';
import { splitState } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import type { SessionRecord, SessionRegistry } from '../registry/registry.ts';
import { pushQuery } from '../modules/roster.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { Jid } from '../xmpp/jid.ts';
import { INBOUND, OUTBOUND, isSubscriptionType, receivesFrom, sendsTo } from './subscription.ts';
import type { SubscriptionType } from './subscription.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { log } from '../log.ts';

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
  deliver(xml: string): boolean;
  /** False once the session has closed (it may close while a presence change is under way). */
  readonly open: boolean;
}

/** The routing this service uses (the Router). */
export interface PresenceRouting {
  /** Available resources of a bare JID, wherever they are connected. */
  available(bare: string): Promise<SessionRecord[]>;
  deliver(rec: SessionRecord, el: Element): void;
  /** Asks a session to send its current presence to `answerTo` (RFC 6121 §4.3.2). */
  probe(rec: SessionRecord, answerTo: string): void;
  routeInternal(el: Element): Promise<void>;
  pushRoster(bare: string, query: Element): Promise<void>;
}

export interface PresenceDeps {
  domain: string;
  roster: RosterStore;
  offline: OfflineStore;
  registry: SessionRegistry;
  accountExists(local: string): Promise<boolean>;
  maxRosterItems: number;
  /** Directed presence recipients tracked per session. */
  maxDirected: number;
}

/** A session that ended in a place where no actor is left to speak for it (its node died). */
export interface Departed {
  jid: string;
  bare: string;
  available: boolean;
  directed: string[];
}

export class PresenceService {
  private readonly d: PresenceDeps;
  private readonly r: PresenceRouting;

  constructor(deps: PresenceDeps, routing: PresenceRouting) {
    this.d = deps;
    this.r = routing;
  }

  /** A presence stanza from a client, 'from' already stamped with its full JID; `to` parsed when present. */
  async fromClient(el: Element, s: PresenceSession, to: Jid | undefined): Promise<void> {
    const type = el.attrs.type;
    if (isSubscriptionType(type)) {
      if (!to || !to.local) throw new StanzaError('bad-request', 'a subscription request is addressed to an account');
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
    if (!to) return type === undefined ? this.broadcastAvailable(el, s) : this.broadcastUnavailable(s, el);
    return this.directedPresence(el, s, to);
  }

  // ---- subscriptions (RFC 6121 §3, Appendix A) ----

  private async outboundSubscription(el: Element, type: SubscriptionType, s: PresenceSession, to: Jid): Promise<void> {
    const contact = `${to.local}@${to.domain}`;
    if (to.domain !== this.d.domain) throw new StanzaError('remote-server-not-found', `${to.domain} is not served here and federation is off`);
    const user = s.username;
    if (user === null) throw new StanzaError('not-allowed', 'anonymous sessions have no roster to subscribe with');
    if (contact === s.bare) throw new StanzaError('bad-request', 'an account does not subscribe to itself');
    // §3.1.2 and the like: the server stamps the bare JIDs of both parties.
    const stanza = new Element('presence', { from: s.bare!, to: contact, type });
    for (const c of el.children) if (typeof c !== 'string') stanza.cnode(clone(c));

    let mine: TransitionResult;
    try {
      mine = await this.d.roster.transition(user, contact, OUTBOUND[type], { max: this.d.maxRosterItems });
    } catch (err) {
      log.warn('subscription: roster store failed', { user, contact, err: String(err) });
      throw new StanzaError('internal-server-error', 'the roster cannot be changed now');
    }
    if (mine.full) throw new StanzaError('policy-violation', `the roster is full (at most ${this.d.maxRosterItems} items)`);
    if (mine.change) await this.r.pushRoster(s.bare!, pushQuery(mine.change.item, mine.change.version));

    await this.inboundSubscription(stanza, type, to.local, contact, s.bare!);

    // §3.1.5: approving sends the approver's current presence; §3.2.2:
    // cancelling sends unavailable from each of the user's resources.
    if (type === 'subscribed' && sendsTo(mine.after)) await this.presenceOfAccount(s.bare!, contact);
    if (type === 'unsubscribed' && sendsTo(mine.before)) await this.unavailableOfAccount(s.bare!, contact);
  }

  /** The addressee's side (A.3): state change, roster push, delivery, auto-replies. */
  private async inboundSubscription(stanza: Element, type: SubscriptionType, local: string, contact: string, userBare: string): Promise<void> {
    if (!(await this.d.accountExists(local))) {
      // §3.1.3: a request to an account that does not exist is answered "unsubscribed".
      if (type === 'subscribe') await this.inboundSubscription(new Element('presence', { from: contact, to: userBare, type: 'unsubscribed' }), 'unsubscribed', userBare.split('@')[0], userBare, contact);
      return;
    }
    if (type === 'subscribe') {
      const state = await this.d.roster.state(local, userBare);
      if (sendsTo(state)) {
        // §3.1.3: already subscribed: the server answers for the contact.
        const reply = new Element('presence', { from: contact, to: userBare, type: 'subscribed' });
        await this.inboundSubscription(reply, 'subscribed', userBare.split('@')[0], userBare, contact);
        await this.presenceOfAccount(contact, userBare);
        return;
      }
    }
    const theirs = await this.d.roster.transition(local, userBare, INBOUND[type], {
      max: this.d.maxRosterItems,
      ...(type === 'subscribe' ? { request: stanza.toString() } : {}),
    });
    if (theirs.full) {
      log.warn('subscription request dropped: the contact has too many pending requests', { contact, from: userBare });
      return;
    }
    if (theirs.after === theirs.before) return; // A.3: no state change, nothing to deliver
    if (theirs.change) await this.r.pushRoster(contact, pushQuery(theirs.change.item, theirs.change.version));
    for (const rec of await this.r.available(contact)) this.r.deliver(rec, stanza);
    // §3.3.3: an unsubscribe makes the unsubscribed-from contact appear offline.
    if (type === 'unsubscribe') await this.unavailableOfAccount(contact, userBare);
  }

  /** Presence of each available resource of `bare`, sent to `to` (a bare or full JID). */
  private async presenceOfAccount(bare: string, to: string): Promise<void> {
    for (const rec of await this.r.available(bare)) this.r.probe(rec, to);
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
    const at = contact.indexOf('@');
    if (at === -1 || contact.slice(at + 1) !== this.d.domain) return;
    const local = contact.slice(0, at);
    const { ask, pendingIn } = splitState(before);
    if (receivesFrom(before) || ask) {
      await this.inboundSubscription(new Element('presence', { from: userBare, to: contact, type: 'unsubscribe' }), 'unsubscribe', local, contact, userBare);
    }
    if (sendsTo(before) || pendingIn) {
      await this.inboundSubscription(new Element('presence', { from: userBare, to: contact, type: 'unsubscribed' }), 'unsubscribed', local, contact, userBare);
      if (sendsTo(before)) await this.unavailableOfAccount(userBare, contact);
    }
  }

  // ---- probes (§4.3) ----

  /** A probe from `fromFull` (of account `fromBare`) for the presence of `contact`. */
  private async probe(contact: string, contactLocal: string, fromFull: string, fromBare: string): Promise<void> {
    if (contact === fromBare) {
      for (const rec of await this.r.available(contact)) if (rec.jid !== fromFull) this.r.probe(rec, fromFull);
      return;
    }
    if (!(await this.d.accountExists(contactLocal))) return;
    const state = await this.d.roster.state(contactLocal, fromBare);
    if (!sendsTo(state)) {
      // §4.3.2: no subscription, no presence. The "unsubscribed" tells the
      // prober its idea of the subscription is out of date.
      const reply = new Element('presence', { from: contact, to: fromBare, type: 'unsubscribed' });
      return this.inboundSubscription(reply, 'unsubscribed', fromBare.split('@')[0], fromBare, contact);
    }
    const recs = await this.r.available(contact);
    if (recs.length === 0) return this.r.routeInternal(new Element('presence', { from: contact, to: fromFull, type: 'unavailable' }));
    for (const rec of recs) this.r.probe(rec, fromFull);
  }

  /** A probe reached a session: its answer (§4.3.2). */
  answerProbe(s: PresenceSession, answerTo: string): void {
    if (!s.available || !s.lastPresence) return;
    const p = clone(s.lastPresence);
    p.attrs.from = s.jid!;
    p.attrs.to = answerTo;
    void this.r.routeInternal(p);
  }

  // ---- broadcast (§4.2, §4.4, §4.5) ----

  /** Contacts with a subscription to this account's presence. */
  private async subscribers(username: string | null): Promise<{ subscribers: string[]; subscribedTo: string[] }> {
    if (username === null) return { subscribers: [], subscribedTo: [] };
    const items = (await this.d.roster.get(username)).items;
    const subscribers: string[] = [];
    const subscribedTo: string[] = [];
    for (const item of items) {
      if (item.subscription === 'from' || item.subscription === 'both') subscribers.push(item.jid);
      if (item.subscription === 'to' || item.subscription === 'both') subscribedTo.push(item.jid);
    }
    return { subscribers, subscribedTo };
  }

  /**
   * Sends `el` (from a full JID) to every available resource of each bare
   * JID. The sending session `self` gets it only when `echo` is set,
   * whatever the registry says of it yet (its own change may still be on the
   * way there): RFC 6121 §4.2.2 sends initial presence back to its sender
   * too; an unavailable one has no available resource left to go to.
   */
  private async fanOut(el: Element, bares: string[], self?: PresenceSession, echo = false): Promise<void> {
    for (const bare of bares) {
      const recs = bare.endsWith(`@${this.d.domain}`) ? await this.r.available(bare) : [];
      for (const rec of recs) {
        if (rec.sid === self?.id) continue;
        const copy = clone(el);
        copy.attrs.to = bare;
        this.r.deliver(rec, copy);
      }
    }
    if (self && echo) {
      const copy = clone(el);
      copy.attrs.to = self.bare!;
      self.deliver(copy.toString());
    }
  }

  private async broadcastAvailable(el: Element, s: PresenceSession): Promise<void> {
    // Read first: if the roster cannot be read, nothing has changed yet and
    // the client's next presence is handled in full (initial or not).
    const { subscribers, subscribedTo } = await this.subscribers(s.username);
    const initial = !s.available;
    const wasNegative = s.priority < 0;
    const p = Number.parseInt(el.getChildText('priority') ?? '0', 10);
    s.priority = Number.isFinite(p) ? Math.max(-128, Math.min(127, p)) : 0;
    s.available = true;
    delete el.attrs.to;
    s.lastPresence = el;
    // Not to be announced (fenced, or found replaced and closed on the way).
    if (!(await this.d.registry.setPresence(s.jid!, s.id, true, s.priority)) || !s.open) return;

    // §4.2.2 and §4.4.2: to the subscribers, and to all of the account's
    // available resources, this one included.
    await this.fanOut(el, [...subscribers, s.bare!], s, true);
    if (initial) {
      // §4.2.2: probes for the presence of the contacts this account is
      // subscribed to, and the presence of its other resources.
      await this.probe(s.bare!, '', s.jid!, s.bare!);
      for (const contact of subscribedTo) await this.probe(contact, contact.split('@')[0], s.jid!, s.bare!);
      // §3.1.3: requests that came while the account was away.
      if (s.username !== null) for (const req of await this.d.roster.pendingRequests(s.username)) s.deliver(req.stanza);
    }
    // XEP-0160: offline messages go to the first resource that becomes
    // available with a non-negative priority (RFC 6121 §8.5.2.2.1).
    if ((initial || wasNegative) && s.priority >= 0 && s.username !== null) await this.deliverOffline(s);
  }

  /** Offline messages stored after this available session took them (a race with its presence). */
  async flushOffline(s: PresenceSession): Promise<void> {
    if (s.available && s.priority >= 0 && s.username !== null) await this.deliverOffline(s);
  }

  private async deliverOffline(s: PresenceSession): Promise<void> {
    const stored = await this.d.offline.take(s.username!);
    for (let i = 0; i < stored.length; i++) {
      if (s.deliver(stored[i])) continue;
      // The session went away meanwhile: put the rest back, in order.
      for (const xml of stored.slice(i)) await this.d.offline.push(s.username!, xml, Number.MAX_SAFE_INTEGER);
      return;
    }
  }

  /** Explicit unavailable presence, or (`ended`) the end of an available session (§4.5). */
  private async broadcastUnavailable(s: PresenceSession, el?: Element, ended = false): Promise<void> {
    const was = s.available;
    const directed = s.directed ? [...s.directed] : [];
    s.directed = undefined;
    const unavailable = el ?? new Element('presence', { from: s.jid!, type: 'unavailable' });
    delete unavailable.attrs.to;
    if (was) {
      s.available = false;
      s.lastPresence = undefined;
      if (!ended) await this.d.registry.setPresence(s.jid!, s.id, false, s.priority);
      const { subscribers } = await this.subscribers(s.username);
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

  /** A session ended without saying so (closed socket, error, kick): broadcast for it. */
  async sessionEnded(s: PresenceSession): Promise<void> {
    if (!s.available && s.directed === undefined) return;
    try {
      await this.broadcastUnavailable(s, undefined, true);
    } catch (err) {
      log.warn('unavailable broadcast failed', { jid: s.jid, err: String(err) });
    }
  }

  /** Sessions of a node that died: nobody else will say they are gone. */
  async departed(list: Departed[]): Promise<void> {
    for (const d of list) {
      const unavailable = new Element('presence', { from: d.jid, type: 'unavailable' });
      try {
        if (d.available) {
          const local = d.bare.split('@')[0];
          // No account starts with the anonymous prefix (newUsername).
          const username = local.startsWith(ANON_PREFIX) ? null : local;
          const { subscribers } = await this.subscribers(username);
          await this.fanOut(unavailable, [...subscribers, d.bare]);
        }
        for (const to of d.directed) {
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
    const target = el.attrs.to;
    const bareTo = to.local ? `${to.local}@${to.domain}` : to.domain;
    if (el.attrs.type === undefined) {
      // §4.6.2: tracked only while available, and only for entities the
      // broadcast does not reach already.
      // The cheap conditions first: the roster is read only when tracking is possible.
      const trackable = s.available && bareTo !== s.bare && !s.directed?.has(target) && (s.directed?.size ?? 0) < this.d.maxDirected;
      const subscriber = trackable && s.username !== null && to.local !== '' && to.domain === this.d.domain && sendsTo(await this.d.roster.state(s.username, bareTo));
      if (trackable && !subscriber) {
        (s.directed ??= new Set()).add(target);
        await this.d.registry.noteDirected(s.jid!, s.id, [...s.directed]).catch(() => {});
      }
    } else if (s.directed?.delete(target)) {
      if (s.directed.size === 0) s.directed = undefined;
      await this.d.registry.noteDirected(s.jid!, s.id, s.directed ? [...s.directed] : null).catch(() => {});
    }
    await this.r.routeInternal(el);
  }
}

