// XEP-0045 room ownership (§10: the configuration form, instant rooms,
// destruction) and the room's discovery (§6.4: disco#info with the room's
// features and the muc#roominfo form of XEP-0128); registered on Room's
// handler tables. Moderation and administration (§8, §9: muc#admin),
// registration (§7.10), voice requests (§7.13) and mediated invitations
// (§7.8.2) are in muc/moderation.ts.
import { Element } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import { type Jid, JidError, parseJid } from '../xmpp/jid.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { type Affiliation, type RoomConfig } from './store.ts';
import { NS_MUC, NS_MUC_OWNER, NS_MUC_USER, NS_OCCUPANT_ID, NS_SID, Room } from './room.ts';
import { affiliationChanged, keepsOwner } from './moderation.ts';
import { NS_FULLTEXT, NS_MAM, NS_MAM_EXTENDED } from '../mam/query.ts';

const NS_DATA = 'jabber:x:data';
const ROOMCONFIG = 'http://jabber.org/protocol/muc#roomconfig';
const ROOMINFO = 'http://jabber.org/protocol/muc#roominfo';
const isEl = (c: Element | string): c is Element => typeof c !== 'string';
const bareOf = (j: Jid): string => (j.local ? `${j.local}@${j.domain}` : j.domain);

/** The most characters of a room's name, description or password. */
const MAX_TEXT = 1024;

/** §10.2: the configuration form, filled with the room's values (and its owners and admins: each a full list when submitted). */
export function configForm(c: RoomConfig, maxOccupants: number, owners: string[] = [], admins: string[] = []): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
  x.c('title').t('Room configuration');
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(ROOMCONFIG);
  const field = (v: string, type: string, label: string, values: string[], options?: [string, string][]) => {
    const f = x.c('field', { var: v, type, label });
    for (const [value, l] of options ?? []) f.c('option', { label: l }).c('value').t(value);
    for (const val of values) f.c('value').t(val);
  };
  const b = (v: boolean) => (v ? '1' : '0');
  field('muc#roomconfig_roomname', 'text-single', 'Name', [c.name]);
  field('muc#roomconfig_roomdesc', 'text-single', 'Description', [c.description]);
  field('muc#roomconfig_persistentroom', 'boolean', 'Keep the room when it is empty', [b(c.persistent)]);
  field('muc#roomconfig_publicroom', 'boolean', 'List the room publicly', [b(c.public)]);
  field('muc#roomconfig_membersonly', 'boolean', 'Members only', [b(c.membersOnly)]);
  field('muc#roomconfig_moderatedroom', 'boolean', 'Moderated (visitors need voice)', [b(c.moderated)]);
  field('muc#roomconfig_passwordprotectedroom', 'boolean', 'Password needed to enter', [b(c.password !== '')]);
  field('muc#roomconfig_roomsecret', 'text-private', 'Password', [c.password]);
  field('muc#roomconfig_whois', 'list-single', 'Who may see real JIDs', [c.whois], [['moderators', 'Moderators'], ['anyone', 'Anyone']]);
  field('muc#roomconfig_maxusers', 'text-single', `Most occupants (0: ${maxOccupants})`, [String(c.maxUsers)]);
  field('muc#maxhistoryfetch', 'text-single', 'Messages of history sent on entering', [String(c.historyLength)]);
  field('muc#roomconfig_changesubject', 'boolean', 'Participants may change the subject', [b(c.changeSubject)]);
  field('muc#roomconfig_allowinvites', 'boolean', 'Participants may invite', [b(c.allowInvites)]);
  field('muc#roomconfig_allowpm', 'list-single', 'Who may send private messages', [c.allowPm], [['anyone', 'Anyone'], ['participants', 'Participants'], ['moderators', 'Moderators'], ['none', 'Nobody']]);
  field('muc#roomconfig_enablelogging', 'boolean', 'Archive the room (XEP-0313)', [b(c.archive)]);
  field('muc#roomconfig_roomowners', 'jid-multi', 'Owners', owners);
  field('muc#roomconfig_roomadmins', 'jid-multi', 'Admins', admins);
  return x;
}

/** The most JIDs in the owner or admin field of one form. */
const MAX_LISTED = 1000;

/** A jid-multi field's values as normalised bare JIDs, each once. */
function jids(field: string, values: string[]): string[] {
  if (values.length > MAX_LISTED) throw new StanzaError('not-acceptable', `${field} holds at most ${MAX_LISTED} JIDs`);
  const out = new Set<string>();
  for (const v of values) {
    if (v.trim() === '') continue;
    let j: Jid;
    try {
      j = parseJid(v.trim());
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      throw new StanzaError('jid-malformed', `${v} in ${field} is not a JID`);
    }
    out.add(j.local ? `${j.local}@${j.domain}` : j.domain);
  }
  return [...out];
}

const bool = (v: string | undefined): boolean | undefined => (v === '1' || v === 'true' ? true : v === '0' || v === 'false' ? false : undefined);

/** A submitted configuration form applied (§10.2): fields not known are left alone (XEP-0004 §3.4 lets a form hold more); values not taken are not-acceptable. */
export function applyConfig(base: RoomConfig, x: Element, maxOccupants: number): { config: RoomConfig; owners: string[] | undefined; admins: string[] | undefined } {
  const c: RoomConfig = { ...base };
  let owners: string[] | undefined;
  let admins: string[] | undefined;
  let passwordOn: boolean | undefined;
  const bad = (why: string) => new StanzaError('not-acceptable', why);
  for (const f of x.getChildren('field')) {
    const values = f.getChildren('value').map((v) => v.getText());
    const v = values[0] ?? '';
    const flag = () => {
      const b = bool(v);
      if (b === undefined) throw bad(`${f.attrs.var} is a boolean`);
      return b;
    };
    const text = () => {
      if (v.length > MAX_TEXT) throw bad(`${f.attrs.var} is at most ${MAX_TEXT} characters`);
      return v;
    };
    const count = (max: number) => {
      if (!/^\d+$/.test(v) || Number(v) > max) throw bad(`${f.attrs.var} is 0 to ${max}`);
      return Number(v);
    };
    switch (f.attrs.var) {
      case 'muc#roomconfig_roomname': c.name = text(); break;
      case 'muc#roomconfig_roomdesc': c.description = text(); break;
      case 'muc#roomconfig_persistentroom': c.persistent = flag(); break;
      case 'muc#roomconfig_publicroom': c.public = flag(); break;
      case 'muc#roomconfig_membersonly': c.membersOnly = flag(); break;
      case 'muc#roomconfig_moderatedroom': c.moderated = flag(); break;
      case 'muc#roomconfig_passwordprotectedroom': passwordOn = flag(); break;
      case 'muc#roomconfig_roomsecret': c.password = text(); break;
      case 'muc#roomconfig_whois':
        if (v !== 'moderators' && v !== 'anyone') throw bad('muc#roomconfig_whois is moderators or anyone');
        c.whois = v;
        break;
      case 'muc#roomconfig_maxusers': c.maxUsers = v === '' || v === 'none' ? 0 : count(maxOccupants); break;
      case 'muc#maxhistoryfetch':
      case 'muc#roomconfig_historylength': c.historyLength = count(1000); break;
      case 'muc#roomconfig_changesubject': c.changeSubject = flag(); break;
      case 'muc#roomconfig_allowinvites': c.allowInvites = flag(); break;
      case 'muc#roomconfig_allowpm':
        if (v !== 'anyone' && v !== 'participants' && v !== 'moderators' && v !== 'none') throw bad('muc#roomconfig_allowpm is anyone, participants, moderators or none');
        c.allowPm = v;
        break;
      case 'muc#roomconfig_enablelogging': c.archive = flag(); break;
      case 'muc#roomconfig_roomowners': owners = jids(f.attrs.var, values); break;
      case 'muc#roomconfig_roomadmins': admins = jids(f.attrs.var, values); break;
      default:
        break;
    }
  }
  // A room said not to need a password has none.
  if (passwordOn === false) c.password = '';
  if (passwordOn === true && c.password === '') throw bad('a password-protected room needs muc#roomconfig_roomsecret');
  return { config: c, owners, admins };
}

/** §10.9: the room is destroyed; every occupant gets unavailable presence with <destroy/> (and the alternate venue). */
export async function destroy(room: Room, alternate?: string, reason?: string, password?: string): Promise<void> {
  for (const { o, full } of room.sessions()) {
    for (const s of o.sessions.keys()) {
      if (s !== full) continue;
      const p = new Element('presence', { type: 'unavailable', from: `${room.jid}/${o.nick}`, to: full });
      const x = p.c('x', { xmlns: NS_MUC_USER });
      x.c('item', { affiliation: 'none', role: 'none' });
      const d = x.c('destroy', alternate ? { jid: alternate } : {});
      if (reason) d.c('reason').t(reason);
      if (password) d.c('password').t(password);
      x.c('status', { code: '110' });
      room.d.send(p);
    }
  }
  room.occupants.clear();
  room.byJid.clear();
  room.changed();
  // Its archive goes with it (XEP-0313 on the room's JID, the history).
  await room.dispose();
}

/** §10.2 and §10.9: the owner's requests. */
async function ownerGet(room: Room, iq: Element, from: Jid): Promise<Element> {
  if (room.affiliationOf(bareOf(from)) !== 'owner') throw new StanzaError('forbidden', 'only owners configure the room');
  const q = new Element('query', { xmlns: NS_MUC_OWNER });
  const holding = (a: string) => [...room.affiliations].filter(([, x]) => x === a).map(([j]) => j);
  q.cnode(configForm(room.config, room.d.maxOccupants, holding('owner'), holding('admin')));
  return q;
}

async function ownerSet(room: Room, iq: Element, from: Jid): Promise<null> {
  const bare = bareOf(from);
  if (room.affiliationOf(bare) !== 'owner') throw new StanzaError('forbidden', 'only owners configure or destroy the room');
  const q = iq.getChild('query', NS_MUC_OWNER)!;
  const d = q.getChild('destroy');
  if (d) {
    await destroy(room, d.attrs.jid, d.getChildText('reason') ?? undefined, d.getChildText('password') ?? undefined);
    return null;
  }
  const x = q.getChild('x', NS_DATA);
  if (!x) throw new StanzaError('bad-request', 'a configuration form or <destroy/>');
  if (x.attrs.type === 'cancel') {
    // §10.1.3: cancelling a new room's configuration destroys it.
    if (room.locked) await destroy(room);
    return null;
  }
  if (x.attrs.type !== 'submit') throw new StanzaError('bad-request', 'submit the form');
  const formType = x.getChildren('field').find((f) => f.attrs.var === 'FORM_TYPE')?.getChildText('value');
  // §10.1.2: an empty form makes an instant room, with the defaults.
  if (formType !== undefined && formType !== ROOMCONFIG) throw new StanzaError('bad-request', `the form's FORM_TYPE is ${ROOMCONFIG}`);
  const before = room.config;
  const { config, owners, admins } = applyConfig(before, x, room.d.maxOccupants);
  // §10.2: muc#roomconfig_roomowners and _roomadmins are each the whole list (unlike muc#admin's deltas, §10.5);
  // those left out of a list lose that affiliation. Checked before anything is applied: the room keeps an owner.
  const changes = new Map<string, Affiliation | 'none'>();
  if (admins) {
    for (const [jid, a] of room.affiliations) if (a === 'admin' && !admins.includes(jid)) changes.set(jid, 'none');
    for (const jid of admins) if (room.affiliations.get(jid) !== 'admin') changes.set(jid, 'admin');
  }
  if (owners) {
    for (const [jid, a] of room.affiliations) if (a === 'owner' && !owners.includes(jid)) changes.set(jid, admins?.includes(jid) ? 'admin' : 'none');
    for (const jid of owners) if (room.affiliations.get(jid) !== 'owner') changes.set(jid, 'owner');
    else changes.delete(jid);
  }
  keepsOwner(room, [...changes].map(([jid, aff]) => ({ jid, aff })));
  room.stored.config = config;
  await room.save();
  const actor = room.occupantOf(`${bare}${from.resource ? `/${from.resource}` : ''}`)?.nick;
  for (const [jid, aff] of changes) {
    await room.setAffiliation(jid, aff);
    affiliationChanged(room, jid, actor);
  }
  const wasLocked = room.locked;
  room.locked = false;
  if (wasLocked) {
    // The creator, in since the room was made, gets the subject now (§7.2.15).
    for (const { full } of room.sessions()) room.sendSubject(full);
    return null;
  }
  // §10.2.1: occupants are told the configuration changed (104), and of logging and anonymity changes (170-173).
  const codes = [104];
  if (before.archive !== config.archive) codes.push(config.archive ? 170 : 171);
  if (before.whois !== config.whois) codes.push(config.whois === 'anyone' ? 172 : 173);
  for (const { full } of room.sessions()) {
    const m = new Element('message', { type: 'groupchat', from: room.jid, to: full });
    const ux = m.c('x', { xmlns: NS_MUC_USER });
    for (const c of codes) ux.c('status', { code: String(c) });
    room.d.send(m);
  }
  // §10.2: a room made members-only MUST remove who is not a member (322).
  if (!before.membersOnly && config.membersOnly) for (const o of [...room.occupants.values()]) if (room.affiliationOf(o.bare) === 'none') room.remove(o, [322]);
  return null;
}

/** §6.4: the room's identity, features and muc#roominfo form. */
async function discoInfo(room: Room, iq: Element): Promise<Element> {
  const node = iq.getChild('query', NS_DISCO_INFO)!.attrs.node;
  if (node !== undefined) throw new StanzaError('item-not-found');
  const c = room.config;
  const q = new Element('query', { xmlns: NS_DISCO_INFO });
  q.c('identity', { category: 'conference', type: 'text', ...(c.name ? { name: c.name } : {}) });
  const features = [
    NS_MUC, NS_DISCO_INFO, NS_DISCO_ITEMS, 'urn:xmpp:ping', 'http://jabber.org/protocol/muc#stable_id', 'http://jabber.org/protocol/muc#self-ping-optimization',
    c.public ? 'muc_public' : 'muc_hidden',
    c.persistent ? 'muc_persistent' : 'muc_temporary',
    c.membersOnly ? 'muc_membersonly' : 'muc_open',
    c.moderated ? 'muc_moderated' : 'muc_unmoderated',
    c.password !== '' ? 'muc_passwordprotected' : 'muc_unsecured',
    c.whois === 'anyone' ? 'muc_nonanonymous' : 'muc_semianonymous',
    // XEP-0313 §7: the archive's features on the room's JID only while it archives (its ids, XEP-0359, with it).
    ...(c.archive ? [NS_MAM, NS_MAM_EXTENDED, NS_SID, ...(room.d.archive.access(room.name).fulltext ? [NS_FULLTEXT] : [])] : []),
    ...(c.occupantIds ? [NS_OCCUPANT_ID] : []),
    'jabber:iq:register',
  ];
  for (const f of [...new Set(features)].sort()) q.c('feature', { var: f });
  // XEP-0128 / XEP-0045 §15.5.4: muc#roominfo.
  const x = q.c('x', { xmlns: NS_DATA, type: 'result' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(ROOMINFO);
  x.c('field', { var: 'muc#roominfo_description', label: 'Description' }).c('value').t(c.description);
  x.c('field', { var: 'muc#roominfo_occupants', label: 'Occupants' }).c('value').t(String(room.occupants.size));
  x.c('field', { var: 'muc#roominfo_subject', label: 'Subject' }).c('value').t(room.stored.subject?.text ?? '');
  x.c('field', { var: 'muc#roomconfig_changesubject', label: 'Occupants may change the subject' }).c('value').t(c.changeSubject ? '1' : '0');
  x.c('field', { var: 'muc#roominfo_subjectmod', label: 'Occupants may change the subject' }).c('value').t(c.changeSubject ? '1' : '0');
  return q;
}

/** §6.5: the room's occupants, to those who may see them (occupants of a non-anonymous room... kept to occupants). */
async function discoItems(room: Room, iq: Element, from: Jid): Promise<Element> {
  const q = new Element('query', { xmlns: NS_DISCO_ITEMS });
  if (iq.getChild('query', NS_DISCO_ITEMS)!.attrs.node !== undefined) throw new StanzaError('item-not-found');
  const me = room.occupantOf(`${bareOf(from)}${from.resource ? `/${from.resource}` : ''}`);
  // §6.5: the service MAY return the occupants; only to occupants, as the list says who is there.
  if (me) for (const o of room.occupants.values()) q.c('item', { jid: `${room.jid}/${o.nick}` });
  return q;
}

Room.iqHandlers[`get ${NS_MUC_OWNER}`] = ownerGet;
Room.iqHandlers[`set ${NS_MUC_OWNER}`] = ownerSet;
Room.iqHandlers[`get ${NS_DISCO_INFO}`] = discoInfo;
Room.iqHandlers[`get ${NS_DISCO_ITEMS}`] = discoItems;
Room.iqHandlers['get urn:xmpp:ping'] = async () => null;

export { isEl };
