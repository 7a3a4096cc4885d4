// Multi-user chat (XEP-0045) on one node with two workers, over real
// sockets with real TLS: the service's discovery, room creation (201, the
// room locked until its owner configures it; instant rooms), entering (the
// order of the presence sequence, self-presence with 110, errors),
// groupchat messages reflected to everyone with the room's stanza id and
// occupant ids, history from the archive on entering (with <delay/>),
// subject, nickname change (303), private messages, leaving, temporary and
// persistent rooms, and self-ping (XEP-0410).
import test from 'ava';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError } from '../helpers/protocol.ts';
import { barrier, connect, expect, newUser } from '../helpers/im.ts';
import { before } from '../helpers/pep.ts';
import { NS_MUC_OWNER, NS_MUC_USER, codes, createRoom, freshRoom, iq, isGroupchat, isOccupant, isSelf, isSubject, itemOf, join, sendJoin } from '../helpers/muc.ts';

let server: TestServer;
let service: string;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
  service = `conference.${server.config.domain}`;
});
test.after.always(async () => {
  await server?.stop();
});

const NS_SID = 'urn:xmpp:sid:0';
const NS_OCCUPANT_ID = 'urn:xmpp:occupant-id:0';

test('the service: listed by the server, conference/text with the MUC feature; public rooms in its disco#items', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const items = await iq(alice, 'get', server.config.domain, `<query xmlns='http://jabber.org/protocol/disco#items'/>`);
  t.true(items.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === service), items.toString());
  const info = await iq(alice, 'get', service, `<query xmlns='http://jabber.org/protocol/disco#info'/>`);
  t.true(info.getChild('query')!.getChildren('identity').some((i) => i.attrs.category === 'conference' && i.attrs.type === 'text'));
  t.true(info.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === 'http://jabber.org/protocol/muc'));
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_roomname': 'Listed', 'muc#roomconfig_persistentroom': '1' });
  const list = await iq(alice, 'get', service, `<query xmlns='http://jabber.org/protocol/disco#items'/>`);
  t.true(list.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === room && i.attrs.name === 'Listed'), list.toString());
  const roomInfo = await iq(alice, 'get', room, `<query xmlns='http://jabber.org/protocol/disco#info'/>`);
  const features = roomInfo.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
  for (const f of ['http://jabber.org/protocol/muc', 'muc_persistent', 'muc_public', 'muc_open', 'muc_unmoderated', 'muc_semianonymous', 'muc_unsecured', 'urn:xmpp:mam:2', NS_OCCUPANT_ID]) t.true(features.includes(f), f);
  t.truthy(roomInfo.getChild('query')!.getChild('x', 'jabber:x:data'), 'the muc#roominfo form (XEP-0128)');
});

test('creation (§10.1): 201, locked to others until the owner configures it; the configuration form; an instant room', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = `${freshRoom()}@${service}`;
  sendJoin(alice, room, 'Alice');
  const self = await expect(alice, 'the creation presence', isSelf(room), 0);
  t.true(codes(self).includes(201), self.toString());
  t.is(itemOf(self)?.attrs.affiliation, 'owner');
  t.is(itemOf(self)?.attrs.role, 'moderator');
  const f = bob.c.items.length;
  sendJoin(bob, room, 'Bob');
  const refused = await expect(bob, 'refused while locked', (el) => el.name === 'presence' && el.attrs.type === 'error', f);
  t.is(stanzaError(refused).condition, 'item-not-found', '§7.2.9: locked');
  const form = await iq(alice, 'get', room, `<query xmlns='${NS_MUC_OWNER}'/>`);
  const vars = form.getChild('query')!.getChild('x', 'jabber:x:data')!.getChildren('field').map((x) => x.attrs.var);
  for (const v of ['muc#roomconfig_roomname', 'muc#roomconfig_persistentroom', 'muc#roomconfig_membersonly', 'muc#roomconfig_roomsecret', 'muc#roomconfig_whois']) t.true(vars.includes(v), v);
  t.is((await iq(bob, 'get', room, `<query xmlns='${NS_MUC_OWNER}'/>`)).attrs.type, 'error', 'only owners');
  t.is((await iq(alice, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>`)).attrs.type, 'result', 'instant room');
  await join(bob, room, 'Bob');
});

test('entering (§7.2.3): others’ presence first, then one’s own with 110 last; everyone sees the newcomer; the subject ends the sequence', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  const fa = alice.c.items.length;
  const from = carol.c.items.length;
  sendJoin(carol, room, 'Carol');
  await expect(carol, 'the subject', isSubject(room), from);
  const seq = (await barrier(carol, from)).filter((el) => el.name === 'presence' || el.name === 'message');
  const presences = seq.filter((el) => el.name === 'presence').map((el) => el.attrs.from);
  t.is(presences.at(-1), `${room}/Carol`, 'one’s own presence last');
  t.deepEqual(presences.slice(0, -1).sort(), [`${room}/Alice`, `${room}/Bob`].sort(), 'the others before it');
  const own = seq.find(isOccupant(room, 'Carol'))!;
  t.true(codes(own).includes(110));
  t.is(itemOf(own)?.attrs.role, 'participant');
  t.is(itemOf(own)?.attrs.affiliation, 'none');
  const seen = await expect(alice, 'carol entering', isOccupant(room, 'Carol'), fa);
  t.is(itemOf(seen)?.attrs.jid, carol.jid, 'a moderator sees the real JID (semi-anonymous room)');
  const seenByBob = await expect(bob, 'carol entering', isOccupant(room, 'Carol'), 0);
  t.is(itemOf(seenByBob)?.attrs.jid, undefined, 'a participant does not');
  t.truthy(seenByBob.getChild('occupant-id', NS_OCCUPANT_ID)?.attrs.id, 'XEP-0421');
});

test('entering refused (§7.2): nickname in use (conflict), password (not-authorized), members-only (registration-required); no nickname (jid-malformed)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'sesame' });
  const error = async (nick: string | undefined, x = '') => {
    const f = bob.c.items.length;
    bob.c.send(`<presence to='${room}${nick === undefined ? '' : `/${nick}`}'><x xmlns='http://jabber.org/protocol/muc'>${x}</x></presence>`);
    return stanzaError(await expect(bob, 'an error', (el) => el.name === 'presence' && el.attrs.type === 'error', f)).condition;
  };
  t.is(await error('Bob'), 'not-authorized');
  t.is(await error('Alice', '<password>sesame</password>'), 'conflict');
  t.is(await error(undefined), 'jid-malformed');
  await join(bob, room, 'Bob', '<password>sesame</password>');
  const closed = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_membersonly': '1' });
  const f = bob.c.items.length;
  sendJoin(bob, closed, 'Bob');
  t.is(stanzaError(await expect(bob, 'members only', (el) => el.name === 'presence' && el.attrs.type === 'error' && el.attrs.from?.startsWith(closed), f)).condition, 'registration-required');
});

test('groupchat (§7.4): to everyone, the sender too, from the occupant JID, with the room’s stanza id and an occupant id; non-occupants refused; history with <delay/> on entering', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  const { next } = await join(bob, room, 'Bob');
  alice.c.send(`<message to='${room}' type='groupchat' id='m1'><body>hello room</body><stanza-id xmlns='${NS_SID}' id='forged' by='${room}'/></message>`);
  const got = await expect(bob, 'the message', isGroupchat(room, 'hello room'), next);
  t.is(got.attrs.from, `${room}/Alice`);
  const sids = got.getChildren('stanza-id', NS_SID);
  t.is(sids.length, 1, 'a forged stanza id by the room is removed');
  t.is(sids[0].attrs.by, room);
  t.not(sids[0].attrs.id, 'forged');
  t.truthy(got.getChild('occupant-id', NS_OCCUPANT_ID));
  const echo = await expect(alice, 'the reflection', isGroupchat(room, 'hello room'), 0);
  t.is(echo.attrs.id, 'm1', 'the sender’s id kept (clients match their reflection)');
  const f = carol.c.items.length;
  carol.c.send(`<message to='${room}' type='groupchat'><body>not in</body></message>`);
  t.is(stanzaError(await expect(carol, 'refused', (el) => el.name === 'message' && el.attrs.type === 'error', f)).condition, 'not-acceptable');
  // History: carol enters and gets the message, with its delay, before the subject.
  const from = carol.c.items.length;
  sendJoin(carol, room, 'Carol');
  await expect(carol, 'the subject', isSubject(room), from);
  const seq = await barrier(carol, from);
  const hist = seq.find(isGroupchat(room, 'hello room'));
  t.truthy(hist, 'history on entering');
  t.truthy(hist!.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp);
  t.true(seq.indexOf(hist!) < seq.findIndex(isSubject(room)), 'history before the subject (§7.2.15)');
  // <history maxstanzas='0'/>: none.
  const dave = await newUser(t, server, 'dave');
  const f2 = dave.c.items.length;
  sendJoin(dave, room, 'Dave', `<history maxstanzas='0'/>`);
  await expect(dave, 'the subject', isSubject(room), f2);
  t.false((await barrier(dave, f2)).some(isGroupchat(room, 'hello room')), 'maxstanzas 0: no history');
});

test('subject (§8.1), nickname change (§7.6, 303), private messages (§7.5), leaving (§7.14), self-ping (XEP-0410)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice');
  const { next } = await join(bob, room, 'Bob');
  alice.c.send(`<message to='${room}' type='groupchat'><subject>Today</subject></message>`);
  const subj = await expect(bob, 'the subject', (el) => el.getChildText('subject') === 'Today', next);
  t.is(subj.attrs.from, `${room}/Alice`);
  const f0 = bob.c.items.length;
  bob.c.send(`<message to='${room}' type='groupchat'><subject>Mine</subject></message>`);
  t.is(stanzaError(await expect(bob, 'refused', (el) => el.name === 'message' && el.attrs.type === 'error', f0)).condition, 'forbidden', 'participants may not by default');
  // Nickname change.
  const fa = alice.c.items.length;
  bob.c.send(`<presence to='${room}/Robert'/>`);
  const gone = await expect(alice, 'Bob unavailable with 303', isOccupant(room, 'Bob', 'unavailable'), fa);
  t.true(codes(gone).includes(303));
  t.is(itemOf(gone)?.attrs.nick, 'Robert');
  await expect(alice, 'Robert available', isOccupant(room, 'Robert'), fa);
  // Private message, from the occupant JID, marked as through the room.
  alice.c.send(`<message to='${room}/Robert' type='chat'><body>psst</body></message>`);
  const pm = await expect(bob, 'the private message', (el) => el.getChildText('body') === 'psst', f0);
  t.is(pm.attrs.from, `${room}/Alice`);
  t.truthy(pm.getChild('x', NS_MUC_USER));
  // Self-ping: joined.
  const ping = await iq(bob, 'get', `${room}/Robert`, `<ping xmlns='urn:xmpp:ping'/>`);
  t.is(ping.attrs.type, 'result', ping.toString());
  // Leaving.
  const f1 = alice.c.items.length;
  bob.c.send(`<presence to='${room}/Robert' type='unavailable'/>`);
  await expect(alice, 'Robert leaving', isOccupant(room, 'Robert', 'unavailable'), f1);
  const after = await iq(bob, 'get', `${room}/Robert`, `<ping xmlns='urn:xmpp:ping'/>`);
  t.is(stanzaError(after).condition, 'not-acceptable', 'XEP-0410: not joined any more');
});

test('a temporary room goes with its last occupant; a persistent one stays', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const temp = await createRoom(alice, service, 'Alice');
  const kept = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_persistentroom': '1' });
  for (const room of [temp, kept]) {
    const f = alice.c.items.length;
    alice.c.send(`<presence to='${room}/Alice' type='unavailable'/>`);
    await expect(alice, 'left', isSelf(room, 'unavailable'), f);
  }
  const gone = await iq(alice, 'get', temp, `<query xmlns='http://jabber.org/protocol/disco#info'/>`);
  t.is(stanzaError(gone).condition, 'item-not-found');
  const still = await iq(alice, 'get', kept, `<query xmlns='http://jabber.org/protocol/disco#info'/>`);
  t.is(still.attrs.type, 'result');
});

test('one account in a room from two resources under one nickname: the others see one occupant, who leaves with the last session', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const phone = await connect(t, server.c2sPort, bob.name, 'phone');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  const fa = alice.c.items.length;
  await join(phone, room, 'Bob');
  // Control: alice's own message reflected after the second session came in.
  alice.c.send(`<message to='${room}' type='groupchat'><body>control</body></message>`);
  await expect(alice, 'the control', isGroupchat(room, 'control'), fa);
  const fb = alice.c.items.length;
  phone.c.send(`<presence to='${room}/Bob' type='unavailable'/>`);
  await expect(phone, 'its own unavailable', isSelf(room, 'unavailable'), 0);
  alice.c.send(`<message to='${room}' type='groupchat'><body>control2</body></message>`);
  t.false((await before(alice, 'the second control', isGroupchat(room, 'control2'), fb)).some(isOccupant(room, 'Bob', 'unavailable')), 'Bob is still in through his other session');
  const f2 = alice.c.items.length;
  bob.c.send(`<presence to='${room}/Bob' type='unavailable'/>`);
  await expect(alice, 'Bob leaving with his last session', isOccupant(room, 'Bob', 'unavailable'), f2);
});
