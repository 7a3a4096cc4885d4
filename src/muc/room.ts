// One multi-user chat room (XEP-0045), as an actor: every stanza to the room
// or one of its occupants is handled here, one at a time and in arrival
// order, so that every occupant sees the room's presence and messages in
// the same order. Its durable part (configuration, subject, affiliations)
// is written through the room store before anything that depends on it is
// sent; its occupants are kept here (and, in a cluster, mirrored so that
// another node can take the room over, muc/occupants.ts: the room waits
// for each change to be written before its next stanza). What the room
// sends goes out through `send`, one stanza per recipient's full JID (the
// service groups them by node, modules/muc.ts).
//
// The moderation and ownership use cases (muc#admin, muc#owner,
// registration, voice requests, invitations) are in muc/admin.ts; history
// and the room's archive in muc/history.ts.
import { Element } from 'ltx';
import { createHmac } from 'node:crypto';
import type { Jid } from '../xmpp/jid.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { type Affiliation, type RoomConfig, type RoomStore, type StoredRoom, type Subject, DEFAULT_ROOM_CONFIG } from './store.ts';
import { type RoomArchive, present } from './history.ts';
import { log } from '../log.ts';
import type { MirroredSession } from './occupants.ts';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = `${NS_MUC}#user`;
export const NS_MUC_ADMIN = `${NS_MUC}#admin`;
export const NS_MUC_OWNER = `${NS_MUC}#owner`;
export const NS_OCCUPANT_ID = 'urn:xmpp:occupant-id:0';
export const NS_SID = 'urn:xmpp:sid:0';
export const NS_DELAY = 'urn:xmpp:delay';

/** XEP-0045 §5.1 roles. */
export type Role = 'moderator' | 'participant' | 'visitor' | 'none';

export interface Occupant {
  nick: string;
  /** The real bare JID. */
  bare: string;
  role: Role;
  /** Its sessions' full JIDs (one nickname may be joined from several resources of one account), with the presence each last sent. */
  sessions: Map<string, Element>;
}

/** What a room needs of its service. */
export interface RoomDeps {
  /** The service's domain (conference.<domain>). */
  service: string;
  /** The server's own domain: its users may create rooms. */
  serverDomain: string;
  store: RoomStore;
  /** Sends a stanza the room made to its 'to' (a full JID, or the room's own answers to anyone); awaited where order against what follows matters (MAM results before the query's answer). */
  send(el: Element): void | Promise<void>;
  /** The rooms' message archive (XEP-0313 on the room's JID, the history on entering). */
  archive: RoomArchive;
  /** Who administers the service (XMPP_ADMINS): owners of every room. */
  isServiceAdmin(bare: string): boolean;
  /** The occupants changed (a cluster mirrors them for another node to take the room over); the room's next stanza waits for what it returns. */
  occupantsChanged?(room: string, occupants: readonly Occupant[]): Promise<void> | void;
  /**
   * Whether this node may act for its rooms now (a cluster: its lease holds
   * by its own clock, muc/placement.ts); absent: always.
   */
  mayAct?(): boolean;
  /** The room stopped running here (its claim is another node's now): a stanza still queued for it is passed to wherever it runs. */
  elsewhere?(el: Element, from: Jid, nick: string | undefined): void;
  /** The room is gone (destroyed, or a temporary room whose last occupant left). */
  closed(room: string): void;
  /** A secret the whole service shares, for occupant ids (XEP-0421). */
  secret: string;
  /** The most occupants one room takes. */
  maxOccupants: number;
}

const bareOf = (j: Jid): string => (j.local ? `${j.local}@${j.domain}` : j.domain);
const fullOf = (j: Jid): string => (j.resource ? `${bareOf(j)}/${j.resource}` : bareOf(j));
const isEl = (c: Element | string): c is Element => typeof c !== 'string';
/** An XEP-0082 DateTime (a date alone is not one). */
const XEP82 = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;

/** An error stanza in answer to `el` from the address it was sent to (XEP-0045 errors, RFC 6120 §8.3). */
export function errorTo(el: Element, err: StanzaError): Element {
  const reply = new Element(el.name, { type: 'error', from: el.attrs.to, to: el.attrs.from, ...(el.attrs.id !== undefined ? { id: el.attrs.id } : {}) });
  // §7.2.6 and others: the <x/> of the request comes back with the error.
  for (const c of el.children) if (isEl(c) && c.attrs.xmlns === NS_MUC) reply.cnode(c);
  reply.cnode(err.toElement());
  return reply;
}

/** An error that says the occupant's client (or its session) is not there any more, rather than that it refused one stanza. */
function kickable(el: Element): boolean {
  const cond = el.getChild('error')?.children.find(isEl)?.name;
  return cond === undefined || ['gone', 'internal-server-error', 'item-not-found', 'jid-malformed', 'recipient-unavailable', 'redirect', 'remote-server-not-found', 'remote-server-timeout', 'service-unavailable'].includes(cond);
}

/** A stanza's copy with new addresses. */
function copyOf(el: Element, from: string, to: string): Element {
  const c = new Element(el.name, { ...el.attrs, from, to });
  for (const ch of el.children) if (isEl(ch)) c.cnode(ch);
  return c;
}

/** Rank of affiliations and roles, for "may act on" checks (§5.1.2, §5.2.1). */
const AFF_RANK: Record<Affiliation | 'none', number> = { outcast: 0, none: 1, member: 2, admin: 3, owner: 4 };

export class Room {
  readonly name: string;
  readonly jid: string;
  readonly d: RoomDeps;
  stored: StoredRoom;
  /** Affiliations by bare JID (none: absent). */
  readonly affiliations = new Map<string, Affiliation>();
  /** Occupants by nickname. */
  readonly occupants = new Map<string, Occupant>();
  /** Full JID → nickname. */
  readonly byJid = new Map<string, string>();
  /** §10.1.1: a room just created waits, locked, for its owner's configuration (or an instant room's empty form). */
  locked = false;
  /** Whether it is written in the store (a room being created is not, until its first occupant is in). */
  saved: boolean;
  private queue: Promise<void> = Promise.resolve();
  /** Set once the room is destroyed: what arrives later is answered as for a room that does not exist. */
  gone = false;
  /** Set once the room runs elsewhere (a cluster: its claim was lost): what arrives later is passed on. */
  evicted = false;
  /** The mirror of the last change of occupants (a cluster), which the next stanza waits for. */
  private mirrored: Promise<void> | undefined;
  /** Stanzas and work queued or running. */
  private depth = 0;

  /** Whether anything is queued for the room or running in it. */
  get busy(): boolean {
    return this.depth > 0;
  }

  constructor(d: RoomDeps, stored: StoredRoom, saved: boolean) {
    this.d = d;
    this.name = stored.room;
    this.jid = `${stored.room}@${d.service}`;
    this.stored = stored;
    this.saved = saved;
    for (const a of stored.affiliations) this.affiliations.set(a.jid, a.affiliation);
  }

  static fresh(d: RoomDeps, room: string): Room {
    return new Room(d, { room, config: { ...DEFAULT_ROOM_CONFIG }, affiliations: [], created: Date.now() }, false);
  }

  get config(): RoomConfig {
    return this.stored.config;
  }

  /** Handles a stanza to the room (nick undefined) or to one of its occupants, after every one before it. */
  handle(el: Element, from: Jid, nick: string | undefined): Promise<void> {
    return this.enqueue(() => this.dispatch(el, from, nick), true);
  }

  /**
   * Runs `fn` in the room's order (for what the service does on its own: a
   * dead node's occupants removed); the next waits for the occupants it
   * changed to be mirrored. Skipped once the room runs elsewhere, unless
   * `always` (a stanza, which is then passed on).
   */
  enqueue(fn: () => Promise<void> | void, always = false): Promise<void> {
    this.depth++;
    const next = this.queue.then(async () => {
      try {
        if (this.evicted && !always) return;
        await fn();
      } finally {
        const m = this.mirrored;
        this.mirrored = undefined;
        await m?.catch(() => {});
        this.depth--;
      }
    });
    this.queue = next.catch(() => {});
    return next;
  }

  /** Occupants read back from the mirror (a room taken over from a node that died): they are in, as they were. */
  restore(sessions: readonly MirroredSession[]): void {
    for (const s of sessions) {
      let o = this.occupants.get(s.nick);
      // One nickname, one real JID (§7.2.8): a damaged mirror's second claimant is left out.
      if (o && o.bare !== s.bare) continue;
      if (!o) {
        o = { nick: s.nick, bare: s.bare, role: s.role, sessions: new Map() };
        this.occupants.set(s.nick, o);
      }
      o.sessions.set(s.full, s.presence);
      this.byJid.set(s.full, s.nick);
    }
  }

  /** Whether this node may act for the room now; a StanzaError (wait) to throw if not. */
  private checkActing(): void {
    if (this.d.mayAct && !this.d.mayAct()) throw new StanzaError('service-unavailable', 'the room is moving to another node; try again shortly', 'wait');
  }

  // Set by muc/admin.ts, muc/moderation.ts and muc/mam.ts (kept apart to keep this file about occupants and messages).
  /** An iq handler's answer: the result's payload, null for an empty result, undefined when the handler answers on its own (later, off the room's turn). */
  static iqHandlers: Record<string, (room: Room, iq: Element, from: Jid) => Promise<Element | null | undefined>> = {};
  static messageHandlers: ((room: Room, el: Element, from: Jid) => Promise<boolean>)[] = [];

  private async dispatch(el: Element, from: Jid, nick: string | undefined): Promise<void> {
    if (this.evicted && this.d.elsewhere) return this.d.elsewhere(el, from, nick);
    if (this.gone) {
      if (el.attrs.type !== 'error' && el.attrs.type !== 'result') this.d.send(errorTo(el, new StanzaError('item-not-found', 'the room is gone')));
      return;
    }
    try {
      this.checkActing();
      if (el.name === 'presence') return await this.presence(el, from, nick);
      if (el.name === 'message') return await this.message(el, from, nick);
      if (el.name === 'iq') return await this.iq(el, from, nick);
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      if (el.attrs.type !== 'error' && el.attrs.type !== 'result') this.d.send(errorTo(el, err));
    }
  }

  // --- who is who ---------------------------------------------------------

  affiliationOf(bare: string): Affiliation | 'none' {
    if (this.d.isServiceAdmin(bare)) return 'owner';
    return this.affiliations.get(bare) ?? 'none';
  }

  /** §5.1.2: the role an affiliation gets on entering. */
  defaultRole(aff: Affiliation | 'none'): Role {
    if (aff === 'owner' || aff === 'admin') return 'moderator';
    if (aff === 'outcast') return 'none';
    if (this.config.moderated && aff === 'none') return 'visitor';
    return 'participant';
  }

  occupantOf(full: string): Occupant | undefined {
    const nick = this.byJid.get(full);
    return nick === undefined ? undefined : this.occupants.get(nick);
  }

  /** XEP-0421: an occupant's id, the same for the same real bare JID in the room, unguessable from it. */
  occupantId(o: Occupant): string {
    return createHmac('sha256', this.d.secret).update(`${this.jid}\0${o.bare}`).digest('base64url').slice(0, 22);
  }

  /** Whether `viewer` may see occupants' real JIDs (§7.2.3: non-anonymous rooms, or moderators of semi-anonymous ones). */
  seesJids(viewer: Occupant): boolean {
    return this.config.whois === 'anyone' || viewer.role === 'moderator';
  }

  /** The <x xmlns=muc#user/> of an occupant's presence as `viewer` sees it. */
  userX(o: Occupant, viewer: Occupant | undefined, session: string | undefined, codes: number[] = [], extra?: (item: Element) => void): Element {
    const x = new Element('x', { xmlns: NS_MUC_USER });
    const item = x.c('item', { affiliation: this.affiliationOf(o.bare), role: o.role });
    if (viewer && this.seesJids(viewer)) item.attrs.jid = session ?? o.bare;
    extra?.(item);
    for (const c of codes) x.c('status', { code: String(c) });
    return x;
  }

  /** An occupant's presence (the last one of `session`) as `viewer` gets it, to `to`. */
  presenceOf(o: Occupant, session: string, viewer: Occupant | undefined, to: string, codes: number[] = [], type?: string, extra?: (item: Element) => void): Element {
    const last = o.sessions.get(session);
    const p = new Element('presence', { from: `${this.jid}/${o.nick}`, to, ...(type ? { type } : {}) });
    if (last && type === undefined) {
      // What the occupant said of itself (show, status, priority, caps, vCard hash...), not its MUC or addressing.
      for (const c of last.children) if (isEl(c) && c.attrs.xmlns !== NS_MUC && c.attrs.xmlns !== NS_MUC_USER && c.attrs.xmlns !== NS_OCCUPANT_ID) p.cnode(c);
    }
    p.cnode(this.userX(o, viewer, session, codes, extra));
    if (this.config.occupantIds) p.c('occupant-id', { xmlns: NS_OCCUPANT_ID, id: this.occupantId(o) });
    return p;
  }

  /** Every session of every occupant. */
  *sessions(): Generator<{ o: Occupant; full: string }> {
    for (const o of this.occupants.values()) for (const full of o.sessions.keys()) yield { o, full };
  }

  /** Sends an occupant's presence (each of its sessions') to every occupant; `codesFor` adds status codes per recipient. */
  broadcastPresence(o: Occupant, type?: string, codesFor: (to: Occupant, full: string) => number[] = () => [], extra?: (item: Element) => void, only?: string): void {
    // One presence per recipient: the session that changed (or the occupant's first); its own sessions each get their own.
    const shown = only ?? o.sessions.keys().next().value;
    if (shown === undefined) return;
    for (const { o: to, full } of this.sessions()) {
      const codes = codesFor(to, full);
      // §7.2.3: the occupant's own presence carries 110 (self), to each of its sessions.
      if (to === o && !codes.includes(110)) codes.unshift(110);
      this.d.send(this.presenceOf(o, to === o && o.sessions.has(full) && only === undefined ? full : shown, to, full, codes, type, extra));
    }
  }

  // --- presence: join, change, nickname change, leave ----------------------

  private async presence(el: Element, from: Jid, nick: string | undefined): Promise<void> {
    const full = fullOf(from);
    const type = el.attrs.type;
    if (type === 'error') {
      // An occupant whose client answers the room's presence with an error is gone (333, as for messages below).
      const o = this.occupantOf(full);
      if (o && kickable(el)) await this.leave(o, full, [333]);
      return;
    }
    if (type !== undefined && type !== 'unavailable') return; // subscriptions are not for rooms
    const o = this.occupantOf(full);
    if (type === 'unavailable') {
      if (o) await this.leave(o, full, [], el);
      return;
    }
    // §7.2.1: a nickname is needed to enter.
    if (nick === undefined || nick === '') throw new StanzaError('jid-malformed', 'a nickname is needed: send presence to room@service/nick');
    if (!o) return this.join(el, from, nick);
    o.sessions.set(full, el);
    if (o.nick === nick) {
      // §7.7: a change of availability or status, to everyone.
      this.broadcastPresence(o, undefined, undefined, undefined, full);
      this.changed();
      return;
    }
    return this.changeNick(o, full, nick, el);
  }

  private async join(el: Element, from: Jid, nick: string): Promise<void> {
    const full = fullOf(from);
    const bare = bareOf(from);
    const creating = !this.saved;
    if (creating) {
      // §10.1.1: the server's own users create rooms; the creator is the owner.
      if (from.domain !== this.d.serverDomain || !from.local) throw new StanzaError('not-allowed', 'only users of this server create rooms here');
      this.affiliations.set(bare, 'owner');
      this.stored.affiliations = [{ jid: bare, affiliation: 'owner' }];
      // The room and its owner in one write.
      let made: boolean;
      try {
        made = await this.d.store.save(this.stored);
      } catch (err) {
        if ((err as Error).name !== 'RoomListFullError') throw err;
        made = false;
      }
      if (!made) {
        this.affiliations.clear();
        throw new StanzaError('resource-constraint', 'this service holds all the rooms it can', 'wait');
      }
      this.saved = true;
      // Whatever a former room of this name left in the archive (its removal failed) is not this room's.
      await this.d.archive.removeAll(this.name);
      // §10.1.2: locked until configured, unless the client asks for an instant room (an empty form) at once.
      this.locked = true;
    }
    const aff = this.affiliationOf(bare);
    // §7.2.9: the room is locked to all but its owner until configured.
    if (this.locked && aff !== 'owner') throw new StanzaError('item-not-found', 'the room is being created; try again once its owner configured it');
    // §7.2.7: banned.
    if (aff === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
    // §7.2.6: members only.
    if (this.config.membersOnly && aff === 'none') throw new StanzaError('registration-required', 'this room is for members only');
    // §7.2.5: password.
    if (this.config.password !== '' && aff !== 'owner' && aff !== 'admin') {
      const given = el.getChild('x', NS_MUC)?.getChildText('password');
      if (given !== this.config.password) throw new StanzaError('not-authorized', 'a password is needed to enter this room');
    }
    const holder = this.occupants.get(nick);
    // §7.2.8: a nickname taken by someone else; one's own from another resource is joined as another session.
    if (holder && holder.bare !== bare) throw new StanzaError('conflict', 'that nickname is taken in this room');
    if (!holder) {
      // §7.10: a nickname registered by another JID is theirs.
      const owner = await this.d.store.nickOwner(this.name, nick);
      if (owner !== undefined && owner !== bare) throw new StanzaError('conflict', 'that nickname is registered to someone else');
    }
    // §7.2.10: the room is full (owners and admins still enter).
    const max = this.config.maxUsers > 0 ? Math.min(this.config.maxUsers, this.d.maxOccupants) : this.d.maxOccupants;
    if (!holder && this.occupants.size >= max && AFF_RANK[aff] < AFF_RANK.admin) throw new StanzaError('service-unavailable', 'the room is full', 'wait');

    // §7.2.3: the presence of those in the room, to the newcomer first.
    let o = holder;
    const viewerRole = o?.role ?? this.defaultRole(aff);
    const viewer: Occupant = o ?? { nick, bare, role: viewerRole, sessions: new Map() };
    for (const other of this.occupants.values()) {
      if (other === o) continue;
      for (const s of other.sessions.keys()) this.d.send(this.presenceOf(other, s, viewer, full));
    }
    if (!o) {
      o = viewer;
      this.occupants.set(nick, o);
    }
    o.sessions.set(full, el);
    this.byJid.set(full, nick);
    // Then the newcomer's, to everyone; its own copy (the last presence of the sequence) with the status codes about the room.
    const selfCodes: number[] = [110];
    if (this.config.whois === 'anyone') selfCodes.push(100);
    if (this.config.archive) selfCodes.push(170);
    if (creating) selfCodes.push(201);
    for (const { o: to, full: toFull } of this.sessions()) {
      if (toFull === full) continue;
      this.d.send(this.presenceOf(o, full, to, toFull, to === o ? [110] : []));
    }
    this.d.send(this.presenceOf(o, full, o, full, selfCodes));
    this.changed();
    if (creating) return; // §10.1.2: nothing more until the room is configured
    await this.sendHistory(el, full);
    this.sendSubject(full);
  }

  /**
   * §7.2.15, §7.2.16: the room's recent messages, from its archive, as the
   * room's history length and the joining client's <history/> limit them:
   * the fewest that meet every limit given (maxstanzas, seconds, since,
   * maxchars), the newest kept. Each as the occupants got it, with its
   * archive id (XEP-0359) and <delay/> (XEP-0203) by the room. A room that
   * does not archive has none.
   */
  private async sendHistory(el: Element, full: string): Promise<void> {
    if (!this.config.archive) return;
    const h = el.getChild('x', NS_MUC)?.getChild('history');
    const count = (v: string | undefined): number | undefined => (v !== undefined && /^\d{1,9}$/.test(v.trim()) ? Number(v.trim()) : undefined);
    let max = this.config.historyLength;
    const maxStanzas = count(h?.attrs.maxstanzas);
    if (maxStanzas !== undefined) max = Math.min(max, maxStanzas);
    const maxChars = count(h?.attrs.maxchars);
    // §7.2.16: maxchars='0' is how a client asks for none.
    if (max <= 0 || maxChars === 0) return;
    let since: number | undefined;
    const seconds = count(h?.attrs.seconds);
    if (seconds !== undefined) since = Date.now() - seconds * 1000;
    // A 'since' that is no XEP-0082 DateTime limits nothing.
    const t = h?.attrs.since !== undefined && XEP82.test(h.attrs.since.trim()) ? Date.parse(h.attrs.since.trim()) : NaN;
    if (Number.isFinite(t)) since = Math.max(since ?? -Infinity, t);
    const out: Element[] = [];
    for (const m of await this.d.archive.recent(this.name, max, since)) {
      const stored = present(m.el, false);
      const msg = new Element('message', { ...stored.attrs, to: full });
      for (const c of stored.children) if (isEl(c) && !(c.name === 'stanza-id' && c.attrs.xmlns === NS_SID)) msg.cnode(c);
      msg.c('stanza-id', { xmlns: NS_SID, id: m.id, by: this.jid });
      msg.c('delay', { xmlns: NS_DELAY, from: this.jid, stamp: new Date(m.stamp).toISOString() });
      out.push(msg);
    }
    let first = 0;
    if (maxChars !== undefined) {
      // §7.2.16: whole stanzas only, counted as the client gets them (their XML, not only their text), the newest that fit.
      let total = 0;
      first = out.length;
      while (first > 0 && total + out[first - 1].toString().length <= maxChars) total += out[--first].toString().length;
    }
    for (const msg of out.slice(first)) this.d.send(msg);
  }

  /** §7.2.15: the subject, after the history (an empty one when there is none), to one session or all. */
  sendSubject(full: string): void {
    const s: Subject | undefined = this.stored.subject;
    const m = new Element('message', { type: 'groupchat', from: s && s.by ? `${this.jid}/${s.by}` : this.jid, to: full });
    m.c('subject').t(s?.text ?? '');
    if (s) m.c('delay', { xmlns: NS_DELAY, from: this.jid, stamp: new Date(s.stamp).toISOString() });
    this.d.send(m);
  }

  /** §7.6: a new nickname; §7.6.3: unavailable with 303 and the new nick, then available under it. */
  private async changeNick(o: Occupant, full: string, nick: string, el: Element): Promise<void> {
    const holder = this.occupants.get(nick);
    if (holder) throw new StanzaError('conflict', 'that nickname is taken in this room');
    const owner = await this.d.store.nickOwner(this.name, nick);
    if (owner !== undefined && owner !== o.bare) throw new StanzaError('conflict', 'that nickname is registered to someone else');
    const old = o.nick;
    this.broadcastPresence(o, 'unavailable', () => [303], (item) => (item.attrs.nick = nick));
    this.occupants.delete(old);
    o.nick = nick;
    o.sessions.set(full, el);
    this.occupants.set(nick, o);
    for (const s of o.sessions.keys()) this.byJid.set(s, nick);
    this.broadcastPresence(o);
    this.changed();
  }

  /**
   * §7.14: a session leaves: it gets its unavailable presence (110, role
   * none). The occupant goes with its last session, and everyone is told.
   */
  async leave(o: Occupant, full: string, codes: number[], el?: Element): Promise<void> {
    if (!o.sessions.has(full)) return;
    const status = el?.getChildText('status');
    const gone = (item: Element) => (item.attrs.role = 'none');
    const unavailable = (to: string, viewer: Occupant) => {
      const p = this.presenceOf(o, full, viewer, to, to === full ? [110, ...codes] : [...codes], 'unavailable', gone);
      if (status) p.c('status').t(status);
      return p;
    };
    this.d.send(unavailable(full, o));
    o.sessions.delete(full);
    this.byJid.delete(full);
    // The occupant stays while another of its sessions is in: the others see nothing leave.
    if (o.sessions.size > 0) {
      this.changed();
      return;
    }
    this.occupants.delete(o.nick);
    for (const { o: to, full: toFull } of this.sessions()) this.d.send(unavailable(toFull, to));
    this.changed();
    await this.emptied();
  }

  /**
   * Removes an occupant altogether (kick §8.2, ban §9.1, membership lost
   * §9.4, a room made members-only §10.2): each of its sessions gets its
   * unavailable presence with 110, the codes, the actor and the reason;
   * every other occupant gets one.
   */
  remove(o: Occupant, codes: number[], reason?: string, actor?: string): void {
    const extra = (item: Element) => {
      if (actor) item.c('actor', { nick: actor });
      if (reason) item.c('reason').t(reason);
    };
    o.role = 'none';
    const shown = o.sessions.keys().next().value ?? '';
    for (const { o: to, full } of this.sessions()) this.d.send(this.presenceOf(o, to === o ? full : shown, to, full, to === o ? [110, ...codes] : [...codes], 'unavailable', extra));
    for (const s of o.sessions.keys()) this.byJid.delete(s);
    this.occupants.delete(o.nick);
    this.changed();
  }

  /** A temporary room whose last occupant left is destroyed (§10.1.3); a persistent one stays. */
  async emptied(): Promise<void> {
    if (this.occupants.size > 0) return;
    if (this.config.persistent && !this.locked) return;
    await this.dispose();
  }

  /**
   * The room goes (destroyed, or temporary and empty), its archive with it:
   * first, while the room still holds its name in the store, so that a new
   * room of the same name (created only once the name is free) never loses
   * messages to this removal. Should the archive's removal fail, a new room
   * of that name clears it before it keeps anything (join).
   */
  async dispose(): Promise<void> {
    this.gone = true;
    try {
      await this.d.archive.removeAll(this.name);
    } catch (err) {
      log.warn('MUC: the archive of a room that is gone was not removed', { room: this.jid, err: String(err) });
    }
    await this.d.store.remove(this.name);
    this.d.closed(this.name);
  }

  changed(): void {
    const m = this.d.occupantsChanged?.(this.name, [...this.occupants.values()]);
    if (m) this.mirrored = m;
  }

  // --- messages --------------------------------------------------------------

  private async message(el: Element, from: Jid, nick: string | undefined): Promise<void> {
    const type = el.attrs.type ?? 'normal';
    const full = fullOf(from);
    const o = this.occupantOf(full);
    if (type === 'error') {
      if (!o) return;
      // A message of the room bounced by the occupant's client, or by its
      // server for a session that is gone (RFC 6121 §8.5.3.2.1: groupchat
      // to a resource that is not there gets service-unavailable, from that
      // full JID to the sender's occupant JID): the occupant is removed, with
      // 333 (XEP-0045 status codes: removed because of an error reply).
      if (kickable(el)) return this.leave(o, full, [333]);
      // Another error (a private message refused by its client): to the occupant it answers, from this one.
      const to = nick === undefined ? undefined : this.occupants.get(nick);
      if (to) for (const s of to.sessions.keys()) this.d.send(copyOf(el, `${this.jid}/${o.nick}`, s));
      return;
    }
    if (nick !== undefined) {
      // §7.5: private messages go to an occupant; groupchat to one is an error.
      if (type === 'groupchat') throw new StanzaError('bad-request', 'groupchat messages go to the room');
      return this.privateMessage(el, o, nick);
    }
    if (type !== 'groupchat') {
      for (const h of Room.messageHandlers) if (await h(this, el, from)) return;
      throw new StanzaError('bad-request', 'messages to the room are groupchat, invitations or voice requests');
    }
    // §7.4: only occupants speak; visitors not in a moderated room (§7.4, §8.4).
    if (!o) throw new StanzaError('not-acceptable', 'only occupants may send messages to the room');
    if (o.role === 'visitor' || o.role === 'none') throw new StanzaError('forbidden', 'you have no voice in this room');
    const subject = el.getChild('subject');
    if (subject && !el.getChild('body')) return this.changeSubject(el, o, subject.getText());
    await this.groupchat(el, o, full);
  }

  /** §8.1: a new subject, by moderators, or participants when the room allows it; kept and sent to all. */
  private async changeSubject(el: Element, o: Occupant, text: string): Promise<void> {
    if (o.role !== 'moderator' && !(this.config.changeSubject && o.role === 'participant')) throw new StanzaError('forbidden', 'only moderators change the subject here');
    this.stored.subject = { text, by: o.nick, stamp: Date.now() };
    await this.d.store.save(this.stored);
    for (const { full } of this.sessions()) {
      const m = new Element('message', { type: 'groupchat', from: `${this.jid}/${o.nick}`, to: full, ...(el.attrs.id ? { id: el.attrs.id } : {}) });
      m.c('subject').t(text);
      this.d.send(m);
    }
  }

  /** §7.4: a message to all occupants, from the sender's occupant JID, archived first (XEP-0313, with its XEP-0359 id by the room). */
  private async groupchat(el: Element, o: Occupant, sender: string): Promise<void> {
    const msg = new Element('message', { type: 'groupchat', from: `${this.jid}/${o.nick}`, ...(el.attrs.id ? { id: el.attrs.id } : {}), ...(el.attrs['xml:lang'] ? { 'xml:lang': el.attrs['xml:lang'] } : {}) });
    for (const c of el.children) {
      if (!isEl(c)) continue;
      // XEP-0359 §5 and XEP-0421 §5: ids by the room are the room's to give; a sender's would be forged.
      if (c.name === 'stanza-id' && c.attrs.xmlns === NS_SID && c.attrs.by?.toLowerCase() === this.jid) continue;
      if (c.attrs.xmlns === NS_OCCUPANT_ID) continue;
      // XEP-0313 §8.4: a muc#user <x/> is the room's to give (the real JID of MAM results); a sender's could claim anyone's.
      if (c.name === 'x' && c.attrs.xmlns === NS_MUC_USER) continue;
      msg.cnode(c);
    }
    if (this.config.occupantIds) msg.c('occupant-id', { xmlns: NS_OCCUPANT_ID, id: this.occupantId(o) });
    // Kept before anyone gets it: a message the room accepted survives the death of the node it runs on.
    // XEP-0313 §3.5 and XEP-0359: the archive id, by the room's bare JID, on every copy (the sender's too).
    if (this.config.archive) {
      const id = await this.d.archive.keep(this.name, msg, sender);
      msg.c('stanza-id', { xmlns: NS_SID, id, by: this.jid });
    }
    // The archive write took a while: if another node may have taken the room meanwhile, only it fans out (muc/placement.ts).
    this.checkActing();
    for (const { full } of this.sessions()) {
      const copy = new Element('message', { ...msg.attrs, to: full });
      for (const c of msg.children) copy.cnode(c as Element);
      this.d.send(copy);
    }
  }

  /** §7.5: a private message, to every session of the occupant it names, from the sender's occupant JID. */
  private privateMessage(el: Element, o: Occupant | undefined, nick: string): void {
    if (!o) throw new StanzaError('not-acceptable', 'only occupants may send private messages');
    const pm = this.config.allowPm;
    const may = pm === 'anyone' || (pm === 'participants' && o.role !== 'visitor') || (pm === 'moderators' && o.role === 'moderator');
    if (!may) throw new StanzaError('forbidden', 'private messages are not allowed here');
    const to = this.occupants.get(nick);
    if (!to) throw new StanzaError('item-not-found', `nobody is called ${nick} here`);
    for (const s of to.sessions.keys()) {
      const m = new Element('message', { ...el.attrs, from: `${this.jid}/${o.nick}`, to: s });
      for (const c of el.children) if (isEl(c) && c.attrs.xmlns !== NS_MUC_USER) m.cnode(c);
      // §7.5: marked as coming through the room.
      m.c('x', { xmlns: NS_MUC_USER });
      this.d.send(m);
    }
  }

  // --- iq ----------------------------------------------------------------------

  private async iq(el: Element, from: Jid, nick: string | undefined): Promise<void> {
    const type = el.attrs.type;
    if (type !== 'get' && type !== 'set') return;
    const payload = el.children.find(isEl);
    const ns = payload?.attrs.xmlns;
    const full = fullOf(from);
    if (nick !== undefined) {
      const o = this.occupantOf(full);
      // XEP-0410 §3: a ping to one's own occupant JID is answered by the room: joined, or not-acceptable.
      if (ns === 'urn:xmpp:ping') {
        if (!o) throw new StanzaError('not-acceptable', 'you are not joined to this room');
        if (o.nick === nick) return this.result(el);
      }
      // §7.? iq to another occupant: not relayed by this service.
      throw new StanzaError(this.occupants.has(nick) ? 'service-unavailable' : 'item-not-found');
    }
    const handler = Room.iqHandlers[`${type} ${ns}`];
    if (!handler) throw new StanzaError('service-unavailable');
    const answer = await handler(this, el, from);
    if (answer !== undefined) this.result(el, answer ?? undefined);
  }

  result(iq: Element, payload?: Element): void {
    const r = new Element('iq', { type: 'result', id: iq.attrs.id, from: iq.attrs.to, to: iq.attrs.from });
    if (payload) r.cnode(payload);
    this.d.send(r);
  }

  /** Saves the configuration and subject (after a change of them). */
  async save(): Promise<void> {
    await this.d.store.save(this.stored);
  }

  /** Sets an affiliation, stored first; occupants' presence follows as the caller decides. */
  async setAffiliation(bare: string, aff: Affiliation | 'none', reason?: string): Promise<void> {
    let ok: boolean;
    try {
      ok = await this.d.store.setAffiliation(this.name, bare, aff, reason);
    } catch (err) {
      if ((err as Error).name === 'RoomListFullError') throw new StanzaError('policy-violation', 'the room keeps no more affiliations');
      throw err;
    }
    if (!ok) throw new StanzaError('item-not-found', 'the room is gone');
    if (aff === 'none') this.affiliations.delete(bare);
    else this.affiliations.set(bare, aff);
    this.stored.affiliations = [...this.affiliations].map(([jid, affiliation]) => ({ jid, affiliation }));
  }

  /** Occupants of a real bare JID. */
  occupantsOf(bare: string): Occupant[] {
    return [...this.occupants.values()].filter((o) => o.bare === bare);
  }

  static rank = AFF_RANK;
}
