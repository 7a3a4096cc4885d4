// XEP-0045 moderation and administration (§8 moderators: kick, voice, the
// voice list; §9 admins: ban, membership, moderators, the lists; §10.3-10.7
// owners: owners and admins), nickname registration (§7.10), voice
// requests (§7.13, §8.6) and mediated invitations (§7.8.2, declines
// §7.8.3); registered on Room's handler tables.
import { Element } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import { type Jid, parseJid, JidError } from '../xmpp/jid.ts';
import { type Affiliation, AFFILIATIONS } from './store.ts';
import { NS_MUC_ADMIN, NS_MUC_USER, Room, type Occupant, type Role } from './room.ts';

const NS_DATA = 'jabber:x:data';
const NS_REGISTER = 'jabber:iq:register';
const MUC_REGISTER = 'http://jabber.org/protocol/muc#register';
const MUC_REQUEST = 'http://jabber.org/protocol/muc#request';
const ROLES: readonly Role[] = ['moderator', 'participant', 'visitor', 'none'];
const bareOf = (j: Jid): string => (j.local ? `${j.local}@${j.domain}` : j.domain);
const fullOf = (j: Jid): string => (j.resource ? `${bareOf(j)}/${j.resource}` : bareOf(j));
const rank = Room.rank;
/** The most characters of a nickname registered. */
const MAX_NICK = 1023;
/** The most items of one muc#admin request. */
const MAX_ITEMS = 100;

function jidOf(raw: string | undefined): Jid {
  try {
    return parseJid(raw ?? '');
  } catch (err) {
    if (!(err instanceof JidError)) throw err;
    throw new StanzaError('jid-malformed', `${raw ?? ''} is not a JID`);
  }
}
const bareJid = (raw: string | undefined): string => bareOf(jidOf(raw));

/** The values of a submitted form of that FORM_TYPE, by var; undefined when it is not one. */
function formValues(x: Element | undefined, type: string): Map<string, string[]> | undefined {
  if (!x) return undefined;
  const out = new Map<string, string[]>();
  for (const f of x.getChildren('field')) if (f.attrs.var) out.set(f.attrs.var, f.getChildren('value').map((v) => v.getText()));
  return out.get('FORM_TYPE')?.[0] === type ? out : undefined;
}

// --- muc#admin: roles and affiliations -------------------------------------

/** Sends every session in the room an occupant's presence, its role or affiliation changed (§8.4, §9.3...). */
function announce(room: Room, o: Occupant, actor?: string, reason?: string): void {
  room.broadcastPresence(o, undefined, () => [], (item) => {
    if (actor) item.c('actor', { nick: actor });
    if (reason) item.c('reason').t(reason);
  });
  room.changed();
}

/**
 * What an affiliation just set (and stored) means for the occupants of
 * that bare JID: banned ones are removed (§9.1, 301), so are those who are
 * no longer members of a members-only room (§9.4, 321); the others' role
 * follows (§5.1.2: owners and admins moderate, a member of a moderated room
 * has voice, a lost admin or owner is a participant again) and everyone
 * gets their new presence (§9.3, §10.3...).
 */
export function affiliationChanged(room: Room, bare: string, actor?: string, reason?: string): void {
  const aff = room.affiliationOf(bare);
  for (const o of room.occupantsOf(bare)) {
    if (aff === 'outcast') room.remove(o, [301], reason, actor);
    else if (aff === 'none' && room.config.membersOnly) room.remove(o, [321], reason, actor);
    else {
      const role = room.defaultRole(aff);
      if (role === 'moderator' || o.role === 'moderator' || (o.role === 'visitor' && role === 'participant')) o.role = role;
      announce(room, o, actor, reason);
    }
  }
}

/** The occupant an item names: by nick (§8), or by the full or bare JID of one of its sessions (§9.9: the moderator list by JID). */
function occupantNamed(room: Room, item: Element): Occupant | undefined {
  if (item.attrs.nick !== undefined) return room.occupants.get(item.attrs.nick);
  if (item.attrs.jid === undefined) return undefined;
  let j: Jid;
  try {
    j = parseJid(item.attrs.jid);
  } catch (err) {
    if (!(err instanceof JidError)) throw err;
    throw new StanzaError('jid-malformed', `${item.attrs.jid} is not a JID`);
  }
  if (j.resource) return room.occupantOf(fullOf(j));
  return room.occupantsOf(bareOf(j))[0];
}

/**
 * Whether the sender may give `o` that role; throws the XEP's error when
 * not. §8 (intro): role changes are for moderators (forbidden); §8.2 kick:
 * not an occupant of a higher affiliation (not-allowed); §9.6, §9.7:
 * granting or revoking moderator is for admins and owners (forbidden),
 * never from an admin or owner (not-allowed); §8.4: voice is never revoked
 * from an admin or owner, nor from a higher affiliation (not-allowed).
 */
function mayGiveRole(room: Room, me: Occupant | undefined, myAff: Affiliation | 'none', o: Occupant, role: Role): void {
  if (me?.role !== 'moderator' && rank[myAff] < rank.admin) throw new StanzaError('forbidden', 'only moderators change roles');
  const theirs = room.affiliationOf(o.bare);
  const higher = rank[theirs] > rank[myAff];
  if (role === 'none') {
    if (higher) throw new StanzaError('not-allowed', `${o.nick} has a higher affiliation than yours`);
    return;
  }
  const moderation = role === 'moderator' || o.role === 'moderator';
  if (moderation && rank[myAff] < rank.admin) throw new StanzaError('forbidden', 'only admins and owners grant or revoke moderator');
  if (role !== 'moderator' && (theirs === 'owner' || theirs === 'admin')) throw new StanzaError('not-allowed', `${o.nick} is an ${theirs}: a moderator with voice`);
  if (role === 'visitor' && higher) throw new StanzaError('not-allowed', `${o.nick} has a higher affiliation than yours`);
}

/**
 * Whether the sender may set that affiliation of `jid`; throws the XEP's
 * error when not. §9: admins and owners change affiliations (forbidden);
 * §10.3, §10.6: only owners make owners and admins (forbidden); §9.1, §10.4,
 * §10.7: only owners change those of owners and admins (not-allowed);
 * §9.1: nobody bans himself (conflict).
 */
function mayGiveAffiliation(room: Room, myBare: string, myAff: Affiliation | 'none', jid: string, aff: Affiliation | 'none'): void {
  if (rank[myAff] < rank.admin) throw new StanzaError('forbidden', 'only admins and owners change affiliations');
  if ((aff === 'owner' || aff === 'admin') && myAff !== 'owner') throw new StanzaError('forbidden', 'only owners make owners and admins');
  if (aff === 'outcast' && jid === myBare) throw new StanzaError('conflict', 'you cannot ban yourself');
  const theirs = room.affiliationOf(jid);
  if ((theirs === 'owner' || theirs === 'admin') && myAff !== 'owner') throw new StanzaError('not-allowed', `${jid} is an ${theirs}`);
}

/** §10.5, §10.2: whether the room keeps an owner once these affiliations are set; conflict when not. */
export function keepsOwner(room: Room, changes: Iterable<{ jid: string; aff: Affiliation | 'none' }>): void {
  const owners = new Set([...room.affiliations].filter(([, a]) => a === 'owner').map(([j]) => j));
  for (const c of changes) {
    if (c.aff === 'owner') owners.add(c.jid);
    else owners.delete(c.jid);
  }
  if (owners.size === 0) throw new StanzaError('conflict', 'the room would have no owner');
}

async function adminSet(room: Room, iq: Element, from: Jid): Promise<null> {
  const myBare = bareOf(from);
  const me = room.occupantOf(fullOf(from));
  const myAff = room.affiliationOf(myBare);
  const items = iq.getChild('query', NS_MUC_ADMIN)!.getChildren('item');
  if (items.length === 0) throw new StanzaError('bad-request', 'no <item/>');
  if (items.length > MAX_ITEMS) throw new StanzaError('policy-violation', `at most ${MAX_ITEMS} items at once`);
  // Every change checked before any is made: one request is all or nothing.
  const roleChanges: { o: Occupant; role: Role; reason?: string }[] = [];
  const affChanges: { jid: string; aff: Affiliation | 'none'; reason?: string }[] = [];
  for (const item of items) {
    const reason = item.getChildText('reason') ?? undefined;
    if (item.attrs.role !== undefined && item.attrs.affiliation === undefined) {
      const role = item.attrs.role as Role;
      if (!ROLES.includes(role)) throw new StanzaError('bad-request', `no role ${item.attrs.role}`);
      const o = occupantNamed(room, item);
      if (!o) throw new StanzaError('item-not-found', `${item.attrs.nick ?? item.attrs.jid ?? 'nobody'} is not in this room`);
      mayGiveRole(room, me, myAff, o, role);
      roleChanges.push({ o, role, reason });
    } else if (item.attrs.affiliation !== undefined) {
      const aff = item.attrs.affiliation as Affiliation | 'none';
      if (aff !== 'none' && !AFFILIATIONS.includes(aff)) throw new StanzaError('bad-request', `no affiliation ${item.attrs.affiliation}`);
      // §9: by bare JID; §9.3: or by the nick of an occupant.
      const jid = item.attrs.jid !== undefined ? bareJid(item.attrs.jid) : room.occupants.get(item.attrs.nick ?? '')?.bare;
      if (jid === undefined) throw new StanzaError(item.attrs.nick !== undefined ? 'item-not-found' : 'bad-request', 'an affiliation item names a jid (or an occupant’s nick)');
      mayGiveAffiliation(room, myBare, myAff, jid, aff);
      affChanges.push({ jid, aff, reason });
    } else throw new StanzaError('bad-request', 'an item sets a role or an affiliation');
  }
  // §10.4, §10.5: the room keeps an owner.
  if (affChanges.length > 0) keepsOwner(room, affChanges);
  const actor = me?.nick;
  for (const c of roleChanges) {
    if (!room.occupants.has(c.o.nick) || room.occupants.get(c.o.nick) !== c.o) continue; // removed by an item before
    if (c.role === 'none') {
      room.remove(c.o, [307], c.reason, actor); // §8.2: kicked
      continue;
    }
    c.o.role = c.role;
    announce(room, c.o, actor, c.reason);
  }
  for (const c of affChanges) {
    await room.setAffiliation(c.jid, c.aff, c.reason);
    // §9.1: SHOULD remove a banned user's registered nickname.
    if (c.aff === 'outcast') await room.d.store.registerNick(room.name, c.jid, undefined);
    affiliationChanged(room, c.jid, actor, c.reason);
  }
  return null;
}

async function adminGet(room: Room, iq: Element, from: Jid): Promise<Element> {
  const me = room.occupantOf(fullOf(from));
  const myAff = room.affiliationOf(bareOf(from));
  const want = iq.getChild('query', NS_MUC_ADMIN)!.getChild('item');
  const q = new Element('query', { xmlns: NS_MUC_ADMIN });
  if (want?.attrs.role !== undefined) {
    // §8.5, §9.8: the voice and moderator lists, for moderators.
    if (!ROLES.includes(want.attrs.role as Role)) throw new StanzaError('bad-request', `no role ${want.attrs.role}`);
    if (me?.role !== 'moderator' && rank[myAff] < rank.admin) throw new StanzaError('forbidden', 'only moderators see the role lists');
    for (const o of room.occupants.values()) if (o.role === want.attrs.role) q.c('item', { nick: o.nick, role: o.role, affiliation: room.affiliationOf(o.bare), jid: o.bare });
    return q;
  }
  const aff = want?.attrs.affiliation;
  if (aff === undefined || !AFFILIATIONS.includes(aff as Affiliation)) throw new StanzaError('bad-request', 'ask for a role or an affiliation list');
  if (aff === 'owner' || aff === 'admin') {
    // §10.5, §10.8: the owner and admin lists are the owners'.
    if (myAff !== 'owner') throw new StanzaError('forbidden', 'only owners see the owner and admin lists');
  } else if (rank[myAff] < rank.admin) {
    // §9.2, §9.5: the ban and member lists are the admins'; §9.5: a members-only room's member list is its occupants' too.
    if (!(aff === 'member' && room.config.membersOnly && me)) throw new StanzaError('forbidden', 'only admins and owners see this list');
  }
  for (const [jid, a] of room.affiliations) {
    if (a !== aff) continue;
    const item = q.c('item', { jid, affiliation: a });
    const there = room.occupantsOf(jid)[0];
    if (there) Object.assign(item.attrs, { nick: there.nick, role: there.role });
  }
  return q;
}

// --- §7.10 registration ----------------------------------------------------

async function registerGet(room: Room, _iq: Element, from: Jid): Promise<Element> {
  const q = new Element('query', { xmlns: NS_REGISTER });
  const nick = await room.d.store.nickOf(room.name, bareOf(from));
  if (nick !== undefined) {
    // §7.10.1: already registered.
    q.c('registered');
    q.c('username').t(nick);
    return q;
  }
  q.c('instructions').t('Register a nickname in this room');
  const x = q.c('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(MUC_REGISTER);
  x.c('field', { var: 'muc#register_roomnick', type: 'text-single', label: 'Nickname' }).c('required');
  return q;
}

async function registerSet(room: Room, iq: Element, from: Jid): Promise<null> {
  const bare = bareOf(from);
  const q = iq.getChild('query', NS_REGISTER)!;
  const aff = room.affiliationOf(bare);
  if (q.getChild('remove')) {
    // XEP-0077 §3.2 in a room: the registration, and the membership it gave, go.
    await room.d.store.registerNick(room.name, bare, undefined);
    if (aff === 'member') {
      await room.setAffiliation(bare, 'none');
      affiliationChanged(room, bare);
    }
    return null;
  }
  if (aff === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
  // A members-only room admits members through its admins, not by registration.
  if (room.config.membersOnly && aff === 'none') throw new StanzaError('not-allowed', 'membership of this room is given by its admins');
  const values = formValues(q.getChild('x', NS_DATA), MUC_REGISTER);
  const nick = values?.get('muc#register_roomnick')?.[0];
  if (!nick) throw new StanzaError('not-acceptable', 'muc#register_roomnick is required');
  if (Buffer.byteLength(nick) > MAX_NICK) throw new StanzaError('not-acceptable', `a nickname is at most ${MAX_NICK} bytes`);
  let normal: string;
  try {
    normal = parseJid(`x@y/${nick}`).resource;
  } catch {
    throw new StanzaError('jid-malformed', 'not a nickname');
  }
  const holder = room.occupants.get(normal);
  if (holder && holder.bare !== bare) throw new StanzaError('conflict', 'that nickname is in use');
  let registered: boolean;
  try {
    registered = await room.d.store.registerNick(room.name, bare, normal);
  } catch (err) {
    if ((err as Error).name === 'RoomListFullError') throw new StanzaError('policy-violation', 'the room keeps no more registered nicknames');
    if (err instanceof RangeError) throw new StanzaError('not-acceptable', err.message);
    throw err;
  }
  if (!registered) throw new StanzaError('conflict', 'that nickname is registered to someone else');
  // §7.10: registering makes one a member, and the room says so if one is in it.
  if (aff === 'none') {
    await room.setAffiliation(bare, 'member');
    affiliationChanged(room, bare);
  }
  return null;
}

// --- messages: voice requests, invitations, declines -------------------------

async function roomMessage(room: Room, el: Element, from: Jid): Promise<boolean> {
  const full = fullOf(from);
  const me = room.occupantOf(full);
  const request = formValues(el.getChild('x', NS_DATA), MUC_REQUEST);
  if (request) {
    if (!me) throw new StanzaError('not-acceptable', 'only occupants ask for voice');
    const allow = request.get('muc#request_allow')?.[0];
    if (allow !== undefined && el.getChild('x', NS_DATA)?.attrs.type === 'submit' && (request.has('muc#roomnick') || request.has('muc#jid'))) {
      // §8.6: a moderator's answer.
      if (me.role !== 'moderator') throw new StanzaError('forbidden', 'only moderators approve voice requests');
      if (allow === '1' || allow === 'true') {
        const nick = request.get('muc#roomnick')?.[0];
        const jid = request.get('muc#jid')?.[0];
        let o = nick !== undefined ? room.occupants.get(nick) : undefined;
        if (!o && jid !== undefined) o = room.occupantOf(jid) ?? room.occupantsOf(jid)[0];
        if (o && o.role === 'visitor') {
          o.role = 'participant';
          announce(room, o, me.nick);
        }
      }
      return true;
    }
    // §7.13: a visitor asks; every moderator gets the approval form.
    if (me.role !== 'visitor') return true;
    for (const { o, full: to } of room.sessions()) {
      if (o.role !== 'moderator') continue;
      const m = new Element('message', { from: room.jid, to });
      const x = m.c('x', { xmlns: NS_DATA, type: 'form' });
      x.c('title').t('Voice request');
      x.c('instructions').t(`${me.nick} asks for voice: allow it?`);
      x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(MUC_REQUEST);
      x.c('field', { var: 'muc#role', type: 'list-single', label: 'Requested role' }).c('value').t('participant');
      x.c('field', { var: 'muc#jid', type: 'jid-single', label: 'User ID' }).c('value').t(room.seesJids(o) ? full : me.bare);
      x.c('field', { var: 'muc#roomnick', type: 'text-single', label: 'Room nickname' }).c('value').t(me.nick);
      x.c('field', { var: 'muc#request_allow', type: 'boolean', label: 'Grant voice to this person?' }).c('value').t('false');
      room.d.send(m);
    }
    return true;
  }
  const ux = el.getChild('x', NS_MUC_USER);
  if (!ux) return false;
  const invites = ux.getChildren('invite');
  if (invites.length > 0) {
    // §7.8.2: occupants invite; in a members-only room, admins and owners, or anyone when the room allows it.
    if (!me) throw new StanzaError('not-acceptable', 'only occupants invite');
    const aff = room.affiliationOf(me.bare);
    if (room.config.membersOnly && rank[aff] < rank.admin && !room.config.allowInvites) throw new StanzaError('forbidden', 'only admins invite to this room');
    if (invites.length > 20) throw new StanzaError('policy-violation', 'at most 20 invitations at once');
    for (const inv of invites) {
      // §7.8.2: to the invitee's bare or full JID, as given; in a members-only room the invitee becomes a member (§9.5).
      const to = jidOf(inv.attrs.to);
      const toBare = bareOf(to);
      const reason = inv.getChildText('reason') ?? undefined;
      if (room.config.membersOnly && room.affiliationOf(toBare) === 'none') {
        await room.setAffiliation(toBare, 'member');
        affiliationChanged(room, toBare, me.nick);
      }
      const m = new Element('message', { from: room.jid, to: fullOf(to) });
      const x = m.c('x', { xmlns: NS_MUC_USER });
      // The inviter by its bare JID: an invitee outside the room could do nothing with an occupant JID, and declines go there.
      const i = x.c('invite', { from: me.bare });
      if (reason) i.c('reason').t(reason);
      if (inv.getChild('continue')) i.c('continue');
      // §7.8.2: the password of a password-protected room.
      if (room.config.password) x.c('password').t(room.config.password);
      m.c('body').t(`${me.nick} invites you to the room ${room.jid}${reason ? `: ${reason}` : ''}`);
      room.d.send(m);
    }
    return true;
  }
  const decline = ux.getChild('decline');
  if (decline) {
    // §7.8.2: passed on to the inviter, from the room, with the decliner's bare JID; an occupant named by its occupant JID gets it at its sessions.
    const to = jidOf(decline.attrs.to);
    const occupant = bareOf(to) === room.jid ? room.occupants.get(to.resource) : undefined;
    if (bareOf(to) === room.jid && !occupant) throw new StanzaError('item-not-found', 'nobody is called that in this room');
    const targets = occupant ? [...occupant.sessions.keys()] : [fullOf(to)];
    for (const target of targets) {
      const m = new Element('message', { from: room.jid, to: target });
      const d = m.c('x', { xmlns: NS_MUC_USER }).c('decline', { from: bareOf(from) });
      const reason = decline.getChildText('reason');
      if (reason) d.c('reason').t(reason);
      room.d.send(m);
    }
    return true;
  }
  return false;
}

Room.iqHandlers[`get ${NS_MUC_ADMIN}`] = adminGet;
Room.iqHandlers[`set ${NS_MUC_ADMIN}`] = adminSet;
Room.iqHandlers[`get ${NS_REGISTER}`] = registerGet;
Room.iqHandlers[`set ${NS_REGISTER}`] = registerSet;
Room.messageHandlers.push(roomMessage);
