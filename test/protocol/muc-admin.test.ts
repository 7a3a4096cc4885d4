// Multi-user chat (XEP-0045) administration over raw streams, on one node
// with two workers: what moderators (§8: kick, voice, the voice list,
// voice requests), admins (§9: ban, membership, moderators, the lists) and
// owners (§10: configuration of a live room, admins and owners, a room
// that keeps an owner, destruction) do, nickname registration (§7.10),
// invitations (§7.8.2 mediated, with declines; XEP-0249 direct), an
// occupant whose session ends without leaving (RFC 6121 §4.6.3) or whose
// client bounces the room's messages (333), and the service's
// administrators (XMPP_ADMINS) owning every room.
import test from 'ava';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError, until } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, newUser, ready, type Peer } from '../helpers/im.ts';
import { NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, codes, createRoom, iq, isGroupchat, isOccupant, isSelf, itemOf, join, sendJoin } from '../helpers/muc.ts';

let server: TestServer;
let service: string;
/** An account named in XMPP_ADMINS. */
const BOSS = `mucboss${process.pid}`;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2', XMPP_ADMINS: `${BOSS}@localhost` });
  service = `conference.${server.config.domain}`;
  await server.addUser(BOSS, `${BOSS}-pw`);
});
test.after.always(async () => {
  await server?.stop();
});

const NS_DATA = 'jabber:x:data';
const NS_REGISTER = 'jabber:iq:register';
const MUC_REQUEST = 'http://jabber.org/protocol/muc#request';

/** A muc#admin set with these <item/>s (raw XML); the answer. */
const adminSet = (p: Peer, room: string, items: string) => iq(p, 'set', room, `<query xmlns='${NS_MUC_ADMIN}'>${items}</query>`);
/** A muc#admin list (§8.5, §9.2...): the items of the answer, or the error condition. */
async function list(p: Peer, room: string, attr: string): Promise<Element[] | string> {
  const res = await iq(p, 'get', room, `<query xmlns='${NS_MUC_ADMIN}'><item ${attr}/></query>`);
  if (res.attrs.type !== 'result') return stanzaError(res).condition ?? res.toString();
  return res.getChild('query', NS_MUC_ADMIN)!.getChildren('item');
}
/** The condition of an error answer (undefined for a result). */
const cond = (el: Element) => (el.attrs.type === 'error' ? stanzaError(el).condition : undefined);
/** A configuration form submitted by the owner (§10.2). */
function configure(p: Peer, room: string, fields: Record<string, string | string[]>): Promise<Element> {
  const f = Object.entries(fields).map(([k, v]) => `<field var='${k}'>${(Array.isArray(v) ? v : [v]).map((x) => `<value>${x}</value>`).join('')}</field>`).join('');
  return iq(p, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><x xmlns='${NS_DATA}' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>${f}</x></query>`);
}
/** A presence error from the room after p tried to enter as `nick`: its condition. */
async function refused(p: Peer, room: string, nick: string, x = ''): Promise<string | undefined> {
  const f = p.c.items.length;
  sendJoin(p, room, nick, x);
  const el = await expect(p, `${nick} entering ${room}`, (e) => e.name === 'presence' && e.attrs.from?.startsWith(room) === true && (e.attrs.type === 'error' || (e.attrs.type === undefined && codes(e).includes(110))), f);
  return el.attrs.type === 'error' ? stanzaError(el).condition : 'entered';
}
/** An occupant's presence from the room with that role and affiliation in its item. */
const withItem = (room: string, nick: string, attrs: { role?: string; affiliation?: string }) => (el: Element) =>
  isOccupant(room, nick)(el) && (attrs.role === undefined || itemOf(el)?.attrs.role === attrs.role) && (attrs.affiliation === undefined || itemOf(el)?.attrs.affiliation === attrs.affiliation);

test('kick (§8.2): 307 to everyone, 110 too and the actor and reason to the kicked; a moderator cannot kick an owner or admin (not-allowed), a participant cannot kick (forbidden)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  await join(carol, room, 'Carol');
  const [fb, fc] = [bob.c.items.length, carol.c.items.length];
  // A participant may not kick.
  t.is(cond(await adminSet(carol, room, `<item nick='Bob' role='none'/>`)), 'forbidden');
  const res = await adminSet(alice, room, `<item nick='Bob' role='none'><reason>Avaunt</reason></item>`);
  t.is(res.attrs.type, 'result', res.toString());
  const kicked = await expect(bob, 'his removal', isSelf(room, 'unavailable'), fb);
  t.is(kicked.attrs.from, `${room}/Bob`);
  t.deepEqual(codes(kicked).sort(), [110, 307]);
  t.is(itemOf(kicked)?.attrs.role, 'none');
  t.is(itemOf(kicked)?.getChild('actor')?.attrs.nick, 'Alice', 'the actor');
  t.is(itemOf(kicked)?.getChildText('reason'), 'Avaunt');
  const seen = await expect(carol, 'Bob kicked', isOccupant(room, 'Bob', 'unavailable'), fc);
  t.deepEqual(codes(seen), [307]);
  // Bob is out: his self-ping says so.
  t.is(cond(await iq(bob, 'get', `${room}/Bob`, `<ping xmlns='urn:xmpp:ping'/>`)), 'not-acceptable');
  t.is(cond(await iq(carol, 'get', `${room}/Bob`, `<ping xmlns='urn:xmpp:ping'/>`)), 'item-not-found', 'nobody is Bob now');

  // Carol made a moderator (her affiliation none) kicks neither the owner nor an admin.
  const dave = await newUser(t, server, 'dave');
  await join(dave, room, 'Dave');
  t.is((await adminSet(alice, room, `<item nick='Carol' role='moderator'/>`)).attrs.type, 'result');
  t.is((await adminSet(alice, room, `<item jid='${dave.bare}' affiliation='admin'/>`)).attrs.type, 'result');
  t.is(cond(await adminSet(carol, room, `<item nick='Alice' role='none'/>`)), 'not-allowed', 'an owner');
  t.is(cond(await adminSet(carol, room, `<item nick='Dave' role='none'/>`)), 'not-allowed', 'an admin');
  t.is(cond(await adminSet(carol, room, `<item nick='Nobody' role='none'/>`)), 'item-not-found');
  // Both still there, for everyone.
  const occupants = await list(alice, room, `role='moderator'`);
  t.deepEqual(Array.isArray(occupants) ? occupants.map((i) => i.attrs.nick).sort() : occupants, ['Alice', 'Carol', 'Dave']);
});

test('ban (§9.1): 301 to everyone, the banned removed and refused on entering (forbidden); the ban list; unbanned, it may enter again; nobody bans himself or a higher affiliation', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  // Bob also in with a second resource: both of his sessions go.
  const bob2 = await connect(t, server.c2sPort, bob.name, 'other');
  await ready(bob2);
  await join(bob, room, 'Bob');
  await join(bob2, room, 'Bob');
  await join(carol, room, 'Carol');
  const [fb, fb2, fc] = [bob.c.items.length, bob2.c.items.length, carol.c.items.length];
  t.is(cond(await adminSet(carol, room, `<item jid='${bob.bare}' affiliation='outcast'/>`)), 'forbidden', 'a participant may not ban');
  t.is((await adminSet(alice, room, `<item jid='${bob.bare}' affiliation='outcast'><reason>Treason</reason></item>`)).attrs.type, 'result');
  for (const [p, f] of [[bob, fb], [bob2, fb2]] as const) {
    const own = await expect(p, 'his removal', isSelf(room, 'unavailable'), f);
    t.deepEqual(codes(own).sort(), [110, 301]);
    t.is(itemOf(own)?.attrs.affiliation, 'outcast');
    t.is(itemOf(own)?.attrs.role, 'none');
    t.is(itemOf(own)?.getChildText('reason'), 'Treason');
    t.is(itemOf(own)?.getChild('actor')?.attrs.nick, 'Alice');
  }
  const seen = await expect(carol, 'Bob banned', isOccupant(room, 'Bob', 'unavailable'), fc);
  t.deepEqual(codes(seen), [301]);
  t.is(await refused(bob, room, 'Bob'), 'forbidden', '§7.2.7: banned');
  t.is(await refused(bob, room, 'Robert'), 'forbidden', 'under any nickname');
  const outcasts = await list(alice, room, `affiliation='outcast'`);
  t.deepEqual(Array.isArray(outcasts) ? outcasts.map((i) => [i.attrs.jid, i.attrs.affiliation]) : outcasts, [[bob.bare, 'outcast']]);
  t.is(await list(carol, room, `affiliation='outcast'`), 'forbidden', 'only admins see it');
  // Unbanned: in again.
  t.is((await adminSet(alice, room, `<item jid='${bob.bare}' affiliation='none'/>`)).attrs.type, 'result');
  t.deepEqual(await list(alice, room, `affiliation='outcast'`), []);
  await join(bob, room, 'Bob');
  // §9.1: banning oneself is a conflict; an admin does not ban an owner.
  t.is((await adminSet(alice, room, `<item jid='${carol.bare}' affiliation='admin'/>`)).attrs.type, 'result');
  t.is(cond(await adminSet(carol, room, `<item jid='${carol.bare}' affiliation='outcast'/>`)), 'conflict');
  t.is(cond(await adminSet(carol, room, `<item jid='${alice.bare}' affiliation='outcast'/>`)), 'not-allowed');
  t.is(cond(await adminSet(alice, room, `<item jid='${alice.bare}' affiliation='outcast'/>`)), 'conflict');
});

test('membership (§9.3-§9.5): granted and revoked, presence to all; the member list; a members-only room admits members, removes one revoked (321) and refuses him after', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  // An open room: the affiliation changes, the occupant stays.
  const open = await createRoom(alice, service, 'Alice');
  await join(bob, open, 'Bob');
  let fc = bob.c.items.length;
  t.is((await adminSet(alice, open, `<item nick='Bob' affiliation='member'/>`)).attrs.type, 'result', 'by nick');
  await expect(bob, 'his membership', (el) => withItem(open, 'Bob', { affiliation: 'member', role: 'participant' })(el) && codes(el).includes(110), fc);
  const members = await list(alice, open, `affiliation='member'`);
  t.deepEqual(Array.isArray(members) ? members.map((i) => [i.attrs.jid, i.attrs.affiliation]) : members, [[bob.bare, 'member']]);
  fc = bob.c.items.length;
  t.is((await adminSet(alice, open, `<item jid='${bob.bare}' affiliation='none'/>`)).attrs.type, 'result');
  await expect(bob, 'membership gone, still in', withItem(open, 'Bob', { affiliation: 'none', role: 'participant' }), fc);
  t.is(await list(bob, open, `affiliation='member'`), 'forbidden', 'an open room’s member list is for admins');

  // A members-only room.
  const closed = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_membersonly': '1' });
  t.is(await refused(bob, closed, 'Bob'), 'registration-required');
  t.is((await adminSet(alice, closed, `<item jid='${bob.bare}' affiliation='member'/><item jid='${carol.bare}' affiliation='member'/>`)).attrs.type, 'result');
  await join(bob, closed, 'Bob');
  await join(carol, closed, 'Carol');
  // §9.5: occupants of a members-only room see its member list.
  const seen = await list(carol, closed, `affiliation='member'`);
  t.deepEqual(Array.isArray(seen) ? seen.map((i) => i.attrs.jid).sort() : seen, [bob.bare, carol.bare].sort());
  const [fb, fcar] = [bob.c.items.length, carol.c.items.length];
  t.is((await adminSet(alice, closed, `<item jid='${bob.bare}' affiliation='none'><reason>bye</reason></item>`)).attrs.type, 'result');
  const own = await expect(bob, 'his removal', isSelf(closed, 'unavailable'), fb);
  t.deepEqual(codes(own).sort(), [110, 321]);
  t.is(itemOf(own)?.attrs.affiliation, 'none');
  t.is(itemOf(own)?.attrs.role, 'none');
  const other = await expect(carol, 'Bob removed', isOccupant(closed, 'Bob', 'unavailable'), fcar);
  t.deepEqual(codes(other), [321]);
  t.is(await refused(bob, closed, 'Bob'), 'registration-required', 'no longer a member');
});

test('moderated room (§8.3-§8.6, §7.13): visitors may not speak; a voice request reaches the moderators as a form and their approval gives voice; voice granted and revoked; the voice list', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_moderatedroom': '1' });
  const { self } = await join(bob, room, 'Bob');
  t.is(itemOf(self)?.attrs.role, 'visitor', '§5.1.2: no voice by default');
  // A member has voice in a moderated room (§5.1.2).
  t.is((await adminSet(alice, room, `<item jid='${carol.bare}' affiliation='member'/>`)).attrs.type, 'result');
  t.is(itemOf((await join(carol, room, 'Carol')).self)?.attrs.role, 'participant');
  const speak = async (p: Peer, body: string): Promise<string | undefined> => {
    const f = p.c.items.length;
    p.c.send(`<message to='${room}' type='groupchat'><body>${body}</body></message>`);
    const el = await expect(p, `${body} reflected or refused`, (e) => e.name === 'message' && (isGroupchat(room, body)(e) || e.attrs.type === 'error'), f);
    return el.attrs.type === 'error' ? stanzaError(el).condition : 'spoke';
  };
  t.is(await speak(bob, 'may I?'), 'forbidden');

  // §7.13: Bob asks for voice; Alice, the only moderator, gets the form.
  const fa = alice.c.items.length;
  const fcar = carol.c.items.length;
  bob.c.send(`<message to='${room}'><x xmlns='${NS_DATA}' type='submit'><field var='FORM_TYPE'><value>${MUC_REQUEST}</value></field><field var='muc#role' type='list-single'><value>participant</value></field></x></message>`);
  const request = await expect(alice, 'the voice request', (el) => el.name === 'message' && el.attrs.from === room && el.getChild('x', NS_DATA) !== undefined, fa);
  const form = request.getChild('x', NS_DATA)!;
  t.is(form.attrs.type, 'form');
  const value = (v: string) => form.getChildren('field').find((f) => f.attrs.var === v)?.getChildText('value');
  t.is(value('FORM_TYPE'), MUC_REQUEST);
  t.is(value('muc#roomnick'), 'Bob');
  t.is(value('muc#role'), 'participant');
  t.is(value('muc#request_allow'), 'false');
  t.false((await barrier(carol, fcar)).some((el) => el.getChild('x', NS_DATA) !== undefined), 'only moderators get it');
  // §8.6: approved.
  const fb = bob.c.items.length;
  alice.c.send(`<message to='${room}'><x xmlns='${NS_DATA}' type='submit'><field var='FORM_TYPE'><value>${MUC_REQUEST}</value></field><field var='muc#role'><value>participant</value></field><field var='muc#jid'><value>${value('muc#jid')}</value></field><field var='muc#roomnick'><value>Bob</value></field><field var='muc#request_allow'><value>true</value></field></x></message>`);
  await expect(bob, 'voice', (el) => withItem(room, 'Bob', { role: 'participant' })(el) && codes(el).includes(110), fb);
  await expect(carol, 'Bob with voice', withItem(room, 'Bob', { role: 'participant' }), fcar);
  t.is(await speak(bob, 'thank you'), 'spoke');

  // §8.4: voice revoked; §8.3: granted again by the admin protocol, with a reason.
  let f = carol.c.items.length;
  t.is((await adminSet(alice, room, `<item nick='Bob' role='visitor'/>`)).attrs.type, 'result');
  await expect(carol, 'Bob a visitor', withItem(room, 'Bob', { role: 'visitor' }), f);
  t.is(await speak(bob, 'again?'), 'forbidden');
  t.is(cond(await adminSet(carol, room, `<item nick='Bob' role='participant'/>`)), 'forbidden', 'a participant gives no voice');
  t.is(cond(await adminSet(alice, room, `<item nick='Alice' role='visitor'/>`)), 'not-allowed', '§8.4: an owner keeps her voice');
  f = carol.c.items.length;
  t.is((await adminSet(alice, room, `<item nick='Bob' role='participant'><reason>worthy</reason></item>`)).attrs.type, 'result');
  const granted = await expect(carol, 'Bob with voice', withItem(room, 'Bob', { role: 'participant' }), f);
  t.is(itemOf(granted)?.getChildText('reason'), 'worthy');
  t.is(await speak(bob, 'heard'), 'spoke');
  // §8.5: the voice list, for moderators.
  const voices = await list(alice, room, `role='participant'`);
  t.deepEqual(Array.isArray(voices) ? voices.map((i) => [i.attrs.nick, i.attrs.role]).sort() : voices, [['Bob', 'participant'], ['Carol', 'participant']]);
  t.is(await list(bob, room, `role='participant'`), 'forbidden');
});

test('moderators (§9.6, §9.7), admins (§10.6, §10.7) and owners (§10.3-§10.5): who may grant what, presence to all, the lists; the room keeps an owner (conflict)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const dave = await newUser(t, server, 'dave');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  await join(carol, room, 'Carol');
  await join(dave, room, 'Dave');
  // Only owners make admins.
  t.is(cond(await adminSet(bob, room, `<item jid='${carol.bare}' affiliation='admin'/>`)), 'forbidden');
  let f = dave.c.items.length;
  t.is((await adminSet(alice, room, `<item jid='${bob.bare}' affiliation='admin'/>`)).attrs.type, 'result');
  await expect(dave, 'Bob an admin', withItem(room, 'Bob', { affiliation: 'admin', role: 'moderator' }), f);
  t.is(cond(await adminSet(bob, room, `<item jid='${carol.bare}' affiliation='admin'/>`)), 'forbidden', 'an admin makes no admins');
  t.is(await list(bob, room, `affiliation='admin'`), 'forbidden', '§10.8: the admin list is the owners’');
  t.is(await list(bob, room, `affiliation='owner'`), 'forbidden', '§10.5: the owner list too');
  // An admin makes and unmakes moderators; a mere moderator does not.
  f = dave.c.items.length;
  t.is((await adminSet(bob, room, `<item nick='Carol' role='moderator'/>`)).attrs.type, 'result');
  await expect(dave, 'Carol a moderator', withItem(room, 'Carol', { role: 'moderator', affiliation: 'none' }), f);
  t.is(cond(await adminSet(carol, room, `<item nick='Dave' role='moderator'/>`)), 'forbidden', 'moderators do not make moderators');
  t.is(cond(await adminSet(dave, room, `<item nick='Dave' role='moderator'/>`)), 'forbidden');
  // §9.9: the moderator list, and a change by JID rather than nick.
  const mods = await list(bob, room, `role='moderator'`);
  t.deepEqual(Array.isArray(mods) ? mods.map((i) => i.attrs.nick).sort() : mods, ['Alice', 'Bob', 'Carol']);
  f = dave.c.items.length;
  t.is((await adminSet(bob, room, `<item jid='${carol.jid}' role='participant'/>`)).attrs.type, 'result');
  await expect(dave, 'Carol no longer a moderator', withItem(room, 'Carol', { role: 'participant' }), f);
  // §9.7: nobody takes moderation from an owner or admin.
  t.is(cond(await adminSet(bob, room, `<item nick='Alice' role='participant'/>`)), 'not-allowed');
  t.is(cond(await adminSet(alice, room, `<item nick='Bob' role='participant'/>`)), 'not-allowed');
  // An admin changes no owner's affiliation.
  t.is(cond(await adminSet(bob, room, `<item jid='${alice.bare}' affiliation='member'/>`)), 'not-allowed');

  // §10.3: ownership granted; §10.4: revoked by its holder while another owner remains; §10.5: the last owner stays.
  f = dave.c.items.length;
  t.is((await adminSet(alice, room, `<item jid='${carol.bare}' affiliation='owner'/>`)).attrs.type, 'result');
  await expect(dave, 'Carol an owner', withItem(room, 'Carol', { affiliation: 'owner', role: 'moderator' }), f);
  const owners = await list(alice, room, `affiliation='owner'`);
  t.deepEqual(Array.isArray(owners) ? owners.map((i) => i.attrs.jid).sort() : owners, [alice.bare, carol.bare].sort());
  f = dave.c.items.length;
  t.is((await adminSet(alice, room, `<item jid='${alice.bare}' affiliation='admin'/>`)).attrs.type, 'result');
  await expect(dave, 'Alice an admin', withItem(room, 'Alice', { affiliation: 'admin', role: 'moderator' }), f);
  t.is(cond(await adminSet(carol, room, `<item jid='${carol.bare}' affiliation='none'/>`)), 'conflict', 'the last owner');
  t.is(cond(await adminSet(carol, room, `<item jid='${carol.bare}' affiliation='none'/><item jid='${alice.bare}' affiliation='none'/>`)), 'conflict', 'all or nothing');
  const admins = await list(carol, room, `affiliation='admin'`);
  t.deepEqual(Array.isArray(admins) ? admins.map((i) => i.attrs.jid).sort() : admins, [alice.bare, bob.bare].sort(), 'nothing of the refused request was applied');
  // Admin revoked: moderation goes with it.
  f = dave.c.items.length;
  t.is((await adminSet(carol, room, `<item jid='${bob.bare}' affiliation='none'/>`)).attrs.type, 'result');
  await expect(dave, 'Bob a participant', withItem(room, 'Bob', { affiliation: 'none', role: 'participant' }), f);
});

test('owner (§10.2): a live room reconfigured tells occupants (104; 172 and 173 for whois); made members-only, it removes non-members (322); the form shows the owners and admins', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  await join(carol, room, 'Carol');
  t.is(cond(await configure(bob, room, { 'muc#roomconfig_roomname': 'Mine' })), 'forbidden', 'owners only');
  const notice = async (fields: Record<string, string>): Promise<number[]> => {
    const f = bob.c.items.length;
    t.is((await configure(alice, room, fields)).attrs.type, 'result');
    const m = await expect(bob, 'the notice', (el) => el.name === 'message' && el.attrs.from === room && el.attrs.type === 'groupchat' && el.getChild('x', NS_MUC_USER) !== undefined, f);
    t.is(m.getChild('body'), undefined);
    return codes(m);
  };
  t.deepEqual(await notice({ 'muc#roomconfig_roomname': 'Renamed' }), [104]);
  const info = await iq(bob, 'get', room, `<query xmlns='http://jabber.org/protocol/disco#info'/>`);
  t.is(info.getChild('query')!.getChild('identity')?.attrs.name, 'Renamed');
  t.true((await notice({ 'muc#roomconfig_whois': 'anyone' })).includes(172), 'non-anonymous now');
  t.true((await notice({ 'muc#roomconfig_whois': 'moderators' })).includes(173), 'semi-anonymous again');
  // §10.2: the form says who owns and administers the room.
  t.is((await adminSet(alice, room, `<item jid='${bob.bare}' affiliation='member'/>`)).attrs.type, 'result');
  const form = (await iq(alice, 'get', room, `<query xmlns='${NS_MUC_OWNER}'/>`)).getChild('query')!.getChild('x', NS_DATA)!;
  const values = (v: string) => form.getChildren('field').find((x) => x.attrs.var === v)?.getChildren('value').map((x) => x.getText());
  t.deepEqual(values('muc#roomconfig_roomowners'), [alice.bare]);
  t.deepEqual(values('muc#roomconfig_roomadmins'), []);
  t.is(values('muc#roomconfig_roomname')?.[0], 'Renamed');
  // Members-only: Carol (no affiliation) goes with 322, Bob (a member) stays.
  const [fb, fc] = [bob.c.items.length, carol.c.items.length];
  t.is((await configure(alice, room, { 'muc#roomconfig_membersonly': '1' })).attrs.type, 'result');
  const own = await expect(carol, 'her removal', isSelf(room, 'unavailable'), fc);
  t.deepEqual(codes(own).sort(), [110, 322]);
  const other = await expect(bob, 'Carol removed', isOccupant(room, 'Carol', 'unavailable'), fb);
  t.deepEqual(codes(other), [322]);
  t.false((await barrier(bob, fb)).some(isSelf(room, 'unavailable')), 'the member stays');
  t.is(await refused(carol, room, 'Carol'), 'registration-required');
  // The owner and admin lists through the form: a full list each (§10.2), the room keeping an owner.
  t.is(cond(await configure(alice, room, { 'muc#roomconfig_roomowners': [] })), 'conflict');
  const f = bob.c.items.length;
  t.is((await configure(alice, room, { 'muc#roomconfig_roomowners': [alice.bare], 'muc#roomconfig_roomadmins': [bob.bare] })).attrs.type, 'result');
  await expect(bob, 'Bob an admin', (el) => withItem(room, 'Bob', { affiliation: 'admin', role: 'moderator' })(el) && codes(el).includes(110), f);
});

test('destroy (§10.9): every occupant gets unavailable with the alternate venue and reason; the room is gone (item-not-found)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_persistentroom': '1' });
  await join(bob, room, 'Bob');
  await join(carol, room, 'Carol');
  const alternate = `elsewhere${process.pid}@${service}`;
  t.is(cond(await iq(bob, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><destroy jid='${alternate}'/></query>`)), 'forbidden', 'owners only');
  const from = [alice, bob, carol].map((p) => p.c.items.length);
  const res = await iq(alice, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><destroy jid='${alternate}'><reason>Macbeth doth come</reason></destroy></query>`);
  t.is(res.attrs.type, 'result', res.toString());
  for (const [i, p] of [alice, bob, carol].entries()) {
    const gone = await expect(p, 'the room destroyed', (el) => el.name === 'presence' && el.attrs.type === 'unavailable' && el.attrs.from?.startsWith(`${room}/`) === true, from[i]);
    const d = gone.getChild('x', NS_MUC_USER)?.getChild('destroy');
    t.is(d?.attrs.jid, alternate, p.name);
    t.is(d?.getChildText('reason'), 'Macbeth doth come');
    t.is(itemOf(gone)?.attrs.role, 'none');
    // §10.9: one presence for each occupant, not everyone's departure.
    t.is((await barrier(p, from[i])).filter((el) => el.name === 'presence' && el.attrs.type === 'unavailable').length, 1, `${p.name} gets one`);
  }
  t.is(cond(await iq(bob, 'get', room, `<query xmlns='http://jabber.org/protocol/disco#info'/>`)), 'item-not-found');
  const f = bob.c.items.length;
  bob.c.send(`<message to='${room}' type='groupchat'><body>hello?</body></message>`);
  t.is(stanzaError(await expect(bob, 'refused', (el) => el.name === 'message' && el.attrs.type === 'error', f)).condition, 'item-not-found');
  const list = await iq(alice, 'get', service, `<query xmlns='http://jabber.org/protocol/disco#items'/>`);
  t.false(list.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === room), 'no longer listed');
});

test('registration (§7.10): the form, a nickname registered (member, presence to all), <registered/> after; another JID cannot take it (conflict); cancelled with <remove/>', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  const form = await iq(bob, 'get', room, `<query xmlns='${NS_REGISTER}'/>`);
  const x = form.getChild('query', NS_REGISTER)?.getChild('x', NS_DATA);
  t.is(x?.attrs.type, 'form');
  t.true(x!.getChildren('field').some((f) => f.attrs.var === 'muc#register_roomnick'));
  t.is(cond(await iq(bob, 'set', room, `<query xmlns='${NS_REGISTER}'><x xmlns='${NS_DATA}' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field></x></query>`)), 'not-acceptable', 'no nickname');
  const register = (p: Peer, nick: string) => iq(p, 'set', room, `<query xmlns='${NS_REGISTER}'><x xmlns='${NS_DATA}' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field><field var='muc#register_roomnick'><value>${nick}</value></field></x></query>`);
  const fa = alice.c.items.length;
  t.is((await register(bob, 'Bobby')).attrs.type, 'result');
  await expect(alice, 'Bob a member', withItem(room, 'Bob', { affiliation: 'member' }), fa);
  const again = (await iq(bob, 'get', room, `<query xmlns='${NS_REGISTER}'/>`)).getChild('query', NS_REGISTER)!;
  t.truthy(again.getChild('registered'), 'already registered');
  t.is(again.getChildText('username'), 'Bobby');
  t.is(cond(await register(carol, 'Bobby')), 'conflict', 'registered to someone else');
  t.is(await refused(carol, room, 'Bobby'), 'conflict', '§7.10: nobody else enters with it');
  // Bob takes his nickname.
  const fb = alice.c.items.length;
  bob.c.send(`<presence to='${room}/Bobby'/>`);
  await expect(alice, 'Bob now Bobby', isOccupant(room, 'Bobby'), fb);
  // Cancelled: the nickname is free, the membership gone.
  t.is((await iq(bob, 'set', room, `<query xmlns='${NS_REGISTER}'><remove/></query>`)).attrs.type, 'result');
  const after = (await iq(bob, 'get', room, `<query xmlns='${NS_REGISTER}'/>`)).getChild('query', NS_REGISTER)!;
  t.is(after.getChild('registered'), undefined);
  t.deepEqual(await list(alice, room, `affiliation='member'`), []);
  bob.c.send(`<presence to='${room}/Bob'/>`);
  await expect(alice, 'Bob again', isOccupant(room, 'Bob'), fb);
  await join(carol, room, 'Bobby');
});

test('invitations: mediated (§7.8.2) from the room with the inviter and the password, a members-only room’s invitee made a member, a decline passed to the inviter; direct (XEP-0249) routed as it is', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'cauldron' });
  let fb = bob.c.items.length;
  alice.c.send(`<message to='${room}'><x xmlns='${NS_MUC_USER}'><invite to='${bob.bare}'><reason>join us</reason></invite></x></message>`);
  const inv = await expect(bob, 'the invitation', (el) => el.name === 'message' && el.getChild('x', NS_MUC_USER)?.getChild('invite') !== undefined, fb);
  t.is(inv.attrs.from, room, 'from the room');
  const ux = inv.getChild('x', NS_MUC_USER)!;
  t.is(ux.getChild('invite')!.attrs.from, alice.bare, 'the inviter');
  t.is(ux.getChild('invite')!.getChildText('reason'), 'join us');
  t.is(ux.getChildText('password'), 'cauldron');
  // Declined (§7.8.2): the inviter hears of it from the room.
  const fa = alice.c.items.length;
  bob.c.send(`<message to='${room}'><x xmlns='${NS_MUC_USER}'><decline to='${ux.getChild('invite')!.attrs.from}'><reason>busy</reason></decline></x></message>`);
  const decline = await expect(alice, 'the decline', (el) => el.name === 'message' && el.getChild('x', NS_MUC_USER)?.getChild('decline') !== undefined, fa);
  t.is(decline.attrs.from, room);
  t.is(decline.getChild('x', NS_MUC_USER)!.getChild('decline')!.attrs.from, bob.bare);
  t.is(decline.getChild('x', NS_MUC_USER)!.getChild('decline')!.getChildText('reason'), 'busy');
  // Only occupants invite.
  const fc = carol.c.items.length;
  carol.c.send(`<message to='${room}'><x xmlns='${NS_MUC_USER}'><invite to='${bob.bare}'/></x></message>`);
  t.is(stanzaError(await expect(carol, 'refused', (el) => el.name === 'message' && el.attrs.type === 'error', fc)).condition, 'not-acceptable');

  // A members-only room: the invitee becomes a member and may enter; a mere member may not invite.
  const closed = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_membersonly': '1' });
  t.is(await refused(bob, closed, 'Bob'), 'registration-required');
  fb = bob.c.items.length;
  alice.c.send(`<message to='${closed}'><x xmlns='${NS_MUC_USER}'><invite to='${bob.bare}'/></x></message>`);
  await expect(bob, 'the invitation', (el) => el.name === 'message' && el.attrs.from === closed && el.getChild('x', NS_MUC_USER)?.getChild('invite') !== undefined, fb);
  const members = await list(alice, closed, `affiliation='member'`);
  t.deepEqual(Array.isArray(members) ? members.map((i) => i.attrs.jid) : members, [bob.bare]);
  await join(bob, closed, 'Bob');
  const f = bob.c.items.length;
  bob.c.send(`<message to='${closed}'><x xmlns='${NS_MUC_USER}'><invite to='${carol.bare}'/></x></message>`);
  t.is(stanzaError(await expect(bob, 'refused', (el) => el.name === 'message' && el.attrs.type === 'error', f)).condition, 'forbidden');

  // XEP-0249: from client to client, untouched.
  const fc2 = carol.c.items.length;
  alice.c.send(`<message to='${carol.jid}'><x xmlns='jabber:x:conference' jid='${room}' password='cauldron' reason='come'/></message>`);
  const direct = await expect(carol, 'the direct invitation', (el) => el.name === 'message' && el.getChild('x', 'jabber:x:conference') !== undefined, fc2);
  t.is(direct.attrs.from, alice.jid);
  t.is(direct.getChild('x', 'jabber:x:conference')!.attrs.jid, room);
  t.is(direct.getChild('x', 'jabber:x:conference')!.attrs.password, 'cauldron');
});

test('a session that ends without leaving is removed: its directed presence’s unavailable (RFC 6121 §4.6.3) reaches the room, the others see it go', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  // A nickname change on the way: the room knows him by his newest.
  let f = alice.c.items.length;
  bob.c.send(`<presence to='${room}/Robert'/>`);
  await expect(alice, 'Robert', isOccupant(room, 'Robert'), f);
  f = alice.c.items.length;
  bob.c.destroy();
  const gone = await expect(alice, 'Robert gone', isOccupant(room, 'Robert', 'unavailable'), f);
  t.is(itemOf(gone)?.attrs.role, 'none');
  t.is(cond(await iq(alice, 'get', `${room}/Robert`, `<ping xmlns='urn:xmpp:ping'/>`)), 'item-not-found', 'nobody is Robert now');
});

test('an occupant whose client answers the room’s messages with an error is removed with 333 (as is one whose session went unseen: its messages bounce)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  // An error that only refuses one stanza (a private message Bob's client will not take) goes back to its sender, Bob stays.
  let fa = alice.c.items.length;
  let fb = bob.c.items.length;
  alice.c.send(`<message to='${room}/Bob' type='chat' id='pm1'><body>psst</body></message>`);
  const pm = await expect(bob, 'the private message', (el) => el.attrs.id === 'pm1', fb);
  bob.c.send(`<message type='error' id='pm1' to='${pm.attrs.from}'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`);
  const bounced = await expect(alice, 'the refusal', (el) => el.name === 'message' && el.attrs.id === 'pm1' && el.attrs.type === 'error', fa);
  t.is(bounced.attrs.from, `${room}/Bob`);
  t.is(stanzaError(bounced).condition, 'not-acceptable');
  t.false((await barrier(alice, fa)).some(isOccupant(room, 'Bob', 'unavailable')), 'Bob is still in');
  // Bob's client answers a message from Alice's occupant JID with an error that says it is not there.
  fb = bob.c.items.length;
  alice.c.send(`<message to='${room}' type='groupchat'><body>anyone?</body></message>`);
  const msg = await expect(bob, 'the message', isGroupchat(room, 'anyone?'), fb);
  fa = alice.c.items.length;
  bob.c.send(`<message type='error' to='${msg.attrs.from}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`);
  const gone = await expect(alice, 'Bob removed', isOccupant(room, 'Bob', 'unavailable'), fa);
  t.deepEqual(codes(gone), [333]);
  const own = await expect(bob, 'his removal', isSelf(room, 'unavailable'), fb);
  t.deepEqual(codes(own).sort(), [110, 333]);

  // Carol enters without ever being available (no directed presence tracked), then her connection drops:
  // the room learns of it when its next message to her bounces.
  const carolName = (await newUser(t, server, 'carol')).name;
  const carol = await connect(t, server.c2sPort, carolName, 'silent');
  await join(carol, room, 'Carol');
  carol.c.destroy();
  // The server has let her session go (else the message would reach a closing stream, and be lost there).
  await until(() => server.hub.registry.lookup(carol.jid) === undefined, WAIT, 'her session unbound');
  const f = alice.c.items.length;
  alice.c.send(`<message to='${room}' type='groupchat'><body>still there?</body></message>`);
  const removed = await expect(alice, 'Carol removed', isOccupant(room, 'Carol', 'unavailable'), f);
  t.deepEqual(codes(removed), [333]);
});

test('the service’s administrators (XMPP_ADMINS) own every room: they enter as owners past a password and a member list, configure and destroy it', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const boss = await connect(t, server.c2sPort, BOSS, 'r');
  await ready(boss);
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_membersonly': '1', 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'sesame' });
  const { self } = await join(boss, room, 'Boss');
  t.is(itemOf(self)?.attrs.affiliation, 'owner');
  t.is(itemOf(self)?.attrs.role, 'moderator');
  t.is((await iq(boss, 'get', room, `<query xmlns='${NS_MUC_OWNER}'/>`)).attrs.type, 'result');
  t.is((await configure(boss, room, { 'muc#roomconfig_roomname': 'Seized' })).attrs.type, 'result');
  t.is((await adminSet(boss, room, `<item nick='Alice' role='none'/>`)).attrs.type, 'result', 'even the room’s owner may be kicked by them');
  const f = boss.c.items.length;
  t.is((await iq(boss, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><destroy/></query>`)).attrs.type, 'result');
  await expect(boss, 'the room destroyed', (el) => isSelf(room, 'unavailable')(el) || (el.name === 'presence' && el.attrs.type === 'unavailable' && el.getChild('x', NS_MUC_USER)?.getChild('destroy') !== undefined), f);
  t.is(cond(await iq(alice, 'get', room, `<query xmlns='http://jabber.org/protocol/disco#info'/>`)), 'item-not-found');
});
