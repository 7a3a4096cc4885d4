// A room's archive (XEP-0313 on the room's JID, XEP-0045 §7.2.15 history),
// on one node with two workers, over real sockets with real TLS: its
// features on the room's disco#info while it archives; queries as for an
// account (with on nicknames, ids, paging, flip-page, counts, start/end,
// before-id/after-id, full text, metadata) from the room's JID to the
// asker's full JID, before the answer; who may read it (whoever may enter,
// joined or not); real JIDs only to who may see them, and a sender's own
// muc#user <x/> never kept; the stanza id of a reflected message as its
// archive id; an archive that goes with its room and is not inherited by a
// new room of that name; a room that does not archive keeps nothing; the
// history on entering and its limits (maxstanzas, maxchars counted on the
// stanzas' XML, seconds, since, the room's history length), without
// private messages or the subject; retention pruning rooms' archives.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { join as joinPath } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError } from '../helpers/protocol.ts';
import { NS_DELAY, STAMP, barrier, connect, expect, fresh, newUser, ready, type Peer } from '../helpers/im.ts';
import { NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, codes, createRoom, freshRoom, iq, isGroupchat, isSelf, isSubject, join, sendJoin } from '../helpers/muc.ts';
import { NS_MAM, fin, forwarded, mamIq, query } from '../helpers/mam.ts';
import { SqliteArchiveStore } from '../../src/mam/sqlite.ts';
import { SqliteRoomStore } from '../../src/muc/sqlite.ts';
import { DEFAULT_ROOM_CONFIG } from '../../src/muc/store.ts';
import { archiveId, idAt } from '../../src/mam/store.ts';

const NS_SID = 'urn:xmpp:sid:0';

let server: TestServer;
let service: string;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2', XMPP_MAM_FULLTEXT: 'true' });
  service = `conference.${server.config.domain}`;
});
test.after.always(async () => {
  await server?.stop();
});

/** p says `body` in the room (with `extra` inside the message); its reflection to p, once p has it. */
async function say(p: Peer, room: string, body: string, extra = ''): Promise<Element> {
  const from = p.c.items.length;
  p.c.send(`<message to='${room}' type='groupchat'><body>${body}</body>${extra}</message>`);
  return expect(p, `the reflection of ${body}`, isGroupchat(room, body), from);
}

/** The archive id a reflected message carries (XEP-0359, by the room). */
function sidOf(el: Element, room: string): string {
  const sids = el.getChildren('stanza-id', NS_SID).filter((s) => s.attrs.by === room);
  if (sids.length !== 1) throw new Error(`not one stanza-id by ${room}: ${el.toString()}`);
  return sids[0].attrs.id;
}

const features = async (p: Peer, jid: string): Promise<string[]> => (await iq(p, 'get', jid, `<query xmlns='http://jabber.org/protocol/disco#info'/>`)).getChild('query')!.getChildren('feature').map((f) => f.attrs.var);

/** Sends the owner's configuration form with these fields; fails the test unless it is taken. */
async function configure(t: ExecutionContext, owner: Peer, room: string, fields: Record<string, string>): Promise<void> {
  const f = Object.entries(fields).map(([k, v]) => `<field var='${k}'><value>${v}</value></field>`).join('');
  const res = await iq(owner, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>${f}</x></query>`);
  t.is(res.attrs.type, 'result', res.toString());
}

async function affiliate(t: ExecutionContext, admin: Peer, room: string, jid: string, affiliation: string): Promise<void> {
  const res = await iq(admin, 'set', room, `<query xmlns='${NS_MUC_ADMIN}'><item jid='${jid}' affiliation='${affiliation}'/></query>`);
  t.is(res.attrs.type, 'result', res.toString());
}

async function leave(p: Peer, room: string, nick: string): Promise<void> {
  const f = p.c.items.length;
  p.c.send(`<presence to='${room}/${nick}' type='unavailable'/>`);
  await expect(p, `leaving ${room}`, isSelf(room, 'unavailable'), f);
}

/** p enters (with `<history .../>` attributes, if any), takes the history it gets (with the bytes of each, as sent), and leaves. */
async function historyOf(p: Peer, room: string, nick: string, history?: string): Promise<{ el: Element; raw: string }[]> {
  const from = p.c.items.length;
  await join(p, room, nick, history === undefined ? '' : `<history ${history}/>`);
  const seq = p.c.items.slice(from).flatMap((it) => (it.kind === 'el' ? [{ el: it.el, raw: it.raw }] : []));
  const subject = seq.findIndex((it) => isSubject(room)(it.el));
  await leave(p, room, nick);
  return seq.slice(0, subject).filter((it) => it.el.name === 'message');
}
const bodies = (h: { el: Element }[]) => h.map((m) => m.el.getChildText('body'));

test('features (§7): mam:2, #extended, sid:0 and full text on a room that archives, none once it stops, none on the service; a query to a room that does not archive is service-unavailable', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const room = await createRoom(alice, service, 'Alice');
  const on = await features(alice, room);
  for (const f of [NS_MAM, `${NS_MAM}#extended`, NS_SID, 'urn:xmpp:fulltext:0']) t.true(on.includes(f), f);
  t.false((await features(alice, service)).includes(NS_MAM), 'the service itself keeps no archive');
  await configure(t, alice, room, { 'muc#roomconfig_enablelogging': '0' });
  const off = await features(alice, room);
  for (const f of [NS_MAM, `${NS_MAM}#extended`]) t.false(off.includes(f), f);
  const q = await query(alice, {}, '', '', room);
  t.is(stanzaError(q.iq).condition, 'service-unavailable');
});

test('a query to the room: results from the room to the asker, each from its occupant JID without to, by archive id = the stanza id reflected (XEP-0359); with on a nickname; no private messages nor subject', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  const one = await say(alice, room, 'one');
  const two = await say(bob, room, 'two');
  // Not for the archive: a private message and a subject.
  const fb = bob.c.items.length;
  alice.c.send(`<message to='${room}/Bob' type='chat'><body>just for bob</body></message>`);
  await expect(bob, 'the private message', (el) => el.getChildText('body') === 'just for bob', fb);
  alice.c.send(`<message to='${room}' type='groupchat'><subject>A topic</subject></message>`);
  await expect(bob, 'the subject', (el) => el.getChildText('subject') === 'A topic', fb);
  const three = await say(alice, room, 'three');
  // What bob got of 'two' carries the same id as bob's own reflection, and so does alice's copy.
  const twoAtAlice = await expect(alice, 'two at alice', isGroupchat(room, 'two'), 0);
  t.is(sidOf(twoAtAlice, room), sidOf(two, room), 'one archive id for every copy');

  const all = await query(bob, {}, '', '', room);
  t.is(all.iq.attrs.type, 'result', all.iq.toString());
  t.deepEqual(all.bodies, ['one', 'two', 'three']);
  t.deepEqual(all.ids, [sidOf(one, room), sidOf(two, room), sidOf(three, room)], 'the archive ids are the stanza ids the room gave');
  t.deepEqual(fin(all), { complete: 'true', first: all.ids[0], last: all.ids[2], count: '3' });
  for (const r of all.results) {
    t.is(r.attrs.from, room, 'from the room’s JID');
    t.is(r.attrs.to, bob.jid, 'to the asker’s full JID');
    t.regex(r.getChild('result', NS_MAM)!.getChild('forwarded', 'urn:xmpp:forward:0')!.getChild('delay', NS_DELAY)!.attrs.stamp, STAMP);
    t.false('to' in forwarded(r).attrs, 'XEP-0313 §6.1.2: no to');
    t.is(forwarded(r).attrs.type, 'groupchat');
  }
  t.deepEqual(all.results.map((r) => forwarded(r).attrs.from), [`${room}/Alice`, `${room}/Bob`, `${room}/Alice`]);

  t.deepEqual((await query(bob, { ids: [sidOf(two, room)] }, '', '', room)).bodies, ['two'], 'by the id bob saw');
  t.deepEqual((await query(bob, { with: `${room}/Alice` }, '', '', room)).bodies, ['one', 'three'], 'with: an occupant JID');
  t.deepEqual((await query(bob, { with: room }, '', '', room)).bodies, ['one', 'two', 'three'], 'with: the room');
  t.deepEqual((await query(bob, { with: alice.bare }, '', '', room)).bodies, [], 'with: a real JID is no occupant JID');
});

test('paging and the other fields on a room’s archive, as on an account’s: RSM after/before, counts, flip-page, start/end, after-id/before-id, full text, metadata; an id not in it is item-not-found', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const room = await createRoom(alice, service, 'Alice');
  const ids: string[] = [];
  const stamps: string[] = [];
  for (const b of ['apple pie', 'banana split', 'cherry pie', 'date cake', 'elder wine']) ids.push(sidOf(await say(alice, room, b), room));
  const everything = await query(alice, {}, '', '', room);
  for (const r of everything.results) stamps.push(r.getChild('result', NS_MAM)!.getChild('forwarded', 'urn:xmpp:forward:0')!.getChild('delay', NS_DELAY)!.attrs.stamp);

  const p1 = await query(alice, {}, '<max>2</max>', '', room);
  t.deepEqual(p1.ids, ids.slice(0, 2));
  t.deepEqual(fin(p1), { complete: undefined, first: ids[0], last: ids[1], count: undefined });
  const p2 = await query(alice, {}, `<max>2</max><after>${p1.ids[1]}</after>`, '', room);
  t.deepEqual(p2.ids, ids.slice(2, 4));
  const lastPage = await query(alice, {}, '<max>2</max><before/>', '', room);
  t.deepEqual(lastPage.ids, ids.slice(3), 'the last page');
  t.is(lastPage.fin?.attrs.complete, undefined, 'paging back, the start not reached');
  t.is((await query(alice, {}, `<max>3</max><before>${ids[3]}</before>`, '', room)).fin?.attrs.complete, 'true', 'paging back to the start');
  const counted = await query(alice, {}, '<max>0</max>', '', room);
  t.deepEqual([counted.results.length, fin(counted).count], [0, '5']);
  t.deepEqual((await query(alice, {}, '<max>2</max><before/>', '<flip-page/>', room)).ids, [ids[4], ids[3]], 'flip-page');
  t.deepEqual((await query(alice, { 'after-id': ids[0], 'before-id': ids[3] }, '', '', room)).ids, ids.slice(1, 3));
  // start and end bound the time the room received them (inclusive).
  const expected = (lo: string, hi: string) => ids.filter((_, i) => stamps[i] >= lo && stamps[i] <= hi);
  t.deepEqual((await query(alice, { start: stamps[1], end: stamps[3] }, '', '', room)).ids, expected(stamps[1], stamps[3]));
  t.deepEqual((await query(alice, { '{urn:xmpp:fulltext:0}fulltext': 'PIE' }, '', '', room)).bodies, ['apple pie', 'cherry pie'], 'XEP-0431');

  const meta = await mamIq(alice, `<metadata xmlns='${NS_MAM}'/>`, 'get', room);
  const m = meta.iq.getChild('metadata', NS_MAM)!;
  t.deepEqual([m.getChild('start')?.attrs.id, m.getChild('end')?.attrs.id], [ids[0], ids[4]]);
  const form = await mamIq(alice, `<query xmlns='${NS_MAM}'/>`, 'get', room);
  const vars = form.iq.getChild('query', NS_MAM)!.getChild('x', 'jabber:x:data')!.getChildren('field').map((f) => f.attrs.var);
  for (const v of ['with', 'start', 'end', 'before-id', 'after-id', 'ids', '{urn:xmpp:fulltext:0}fulltext']) t.true(vars.includes(v), v);

  // A room's messages are written before they are sent: a fresh id not in it is not in it.
  const missing = ids[4].slice(0, -1) + (ids[4].endsWith('0') ? '1' : '0');
  t.is(stanzaError((await query(alice, {}, `<after>${missing}</after>`, '', room)).iq).condition, 'item-not-found');
  t.is(stanzaError((await query(alice, { with: 'not a jid@@' }, '', '', room)).iq).condition, 'jid-malformed');
  t.is(stanzaError((await query(alice, { nonsense: 'x' }, '', '', room)).iq).condition, 'bad-request');
});

test('who may read it (XEP-0313 §6.1.2): whoever may enter, joined or not; not outcasts; members only in a members-only room; in a password-protected room those in it; real JIDs only to who may see them, and a sender’s own muc#user <x/> is not kept', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const room = await createRoom(alice, service, 'Alice');
  await join(bob, room, 'Bob');
  // bob claims alice's JID in his message: gone from the live copies and from the archive.
  const fa = alice.c.items.length;
  await say(bob, room, 'hi all', `<x xmlns='${NS_MUC_USER}'><item jid='${alice.jid}'/></x>`);
  const live = await expect(alice, 'bob’s message', isGroupchat(room, 'hi all'), fa);
  t.is(live.getChild('x', NS_MUC_USER), undefined, 'the sender’s <x/> is not passed on');

  // carol never entered: an open room's archive is hers to read, without real JIDs (semi-anonymous, and she is no moderator).
  const byCarol = await query(carol, {}, '', '', room);
  t.deepEqual(byCarol.bodies, ['hi all']);
  t.is(forwarded(byCarol.results[0]).getChild('x', NS_MUC_USER), undefined, 'no real JID to a non-moderator');
  // alice owns the room: she sees bob's real JID, once, his own.
  const byAlice = await query(alice, {}, '', '', room);
  const xs = forwarded(byAlice.results[0]).getChildren('x', NS_MUC_USER);
  t.is(xs.length, 1);
  t.is(xs[0].getChild('item')?.attrs.jid, bob.jid, 'the real JID that sent it');
  // bob, a participant, does not see his own either (only moderators in a semi-anonymous room).
  t.is(forwarded((await query(bob, {}, '', '', room)).results[0]).getChild('x', NS_MUC_USER), undefined);

  // Banned: forbidden.
  await affiliate(t, alice, room, carol.bare, 'outcast');
  t.is(stanzaError((await query(carol, {}, '', '', room)).iq).condition, 'forbidden', 'an outcast');

  // Members only: bob, no member, may not any more (he is removed from the room too); made a member, he may.
  await configure(t, alice, room, { 'muc#roomconfig_membersonly': '1' });
  t.is(stanzaError((await query(bob, {}, '', '', room)).iq).condition, 'forbidden', 'not a member');
  await affiliate(t, alice, room, bob.bare, 'member');
  t.deepEqual((await query(bob, {}, '', '', room)).bodies, ['hi all'], 'a member, not in the room');

  // A non-anonymous, password-protected room: dave must be in it (he gave the password) to read it; then he sees real JIDs.
  const dave = await newUser(t, server, 'dave');
  const secret = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'sesame', 'muc#roomconfig_whois': 'anyone' });
  await say(alice, secret, 'psst');
  t.is(stanzaError((await query(dave, {}, '', '', secret)).iq).condition, 'forbidden', 'no password given');
  await join(dave, secret, 'Dave', '<password>sesame</password>');
  const byDave = await query(dave, {}, '', '', secret);
  t.deepEqual(byDave.bodies, ['psst']);
  t.is(forwarded(byDave.results[0]).getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.jid, alice.jid, 'non-anonymous: real JIDs to all');
});

test('destroying a room removes its archive; a temporary room emptied too; a new room of the same name starts with none', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const store = SqliteArchiveStore.open(joinPath(server.config.dataDir, 'archive.sqlite'));
  t.teardown(() => store.close());
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_persistentroom': '1' });
  await say(alice, room, 'before the end');
  t.is(await store.count(room, {}), 1, 'archived under the room’s JID');
  const res = await iq(alice, 'set', room, `<query xmlns='${NS_MUC_OWNER}'><destroy/></query>`);
  t.is(res.attrs.type, 'result', res.toString());
  t.is(await store.count(room, {}), 0, 'gone with the room');
  // The same name again: a new room, no old messages in its archive or history.
  const again = await createRoom(alice, service, 'Alice', {}, room.split('@')[0]);
  t.is(again, room);
  t.deepEqual((await query(alice, {}, '', '', room)).bodies, []);
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob')), []);

  // What a former room left in the archive (had its removal failed) is no new room's: cleared as the room is made.
  const orphan = `${freshRoom('orphan')}@${service}`;
  await store.append([{ id: archiveId(), owner: orphan, stamp: Date.now(), withBare: orphan, withResource: 'Ghost', outgoing: false, body: 'left over', xml: `<message xmlns='jabber:client' type='groupchat' from='${orphan}/Ghost'><body>left over</body></message>` }]);
  await createRoom(alice, service, 'Alice', {}, orphan.split('@')[0]);
  t.deepEqual((await query(alice, {}, '', '', orphan)).bodies, []);
  t.is(await store.count(orphan, {}), 0);

  const temp = await createRoom(alice, service, 'Alice');
  await say(alice, temp, 'fleeting');
  t.is(await store.count(temp, {}), 1);
  await leave(alice, temp, 'Alice');
  // Asked after it went, the room is not there (nor back from the store while it went).
  t.is(stanzaError(await iq(alice, 'get', temp, `<query xmlns='http://jabber.org/protocol/disco#info'/>`)).condition, 'item-not-found');
  t.is(await store.count(temp, {}), 0, 'a temporary room’s archive goes with it');
});

test('a room that does not archive keeps nothing: no stanza id, no 170, no history; archiving turned on later starts from then', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice', { 'muc#roomconfig_enablelogging': '0' });
  const said = await say(alice, room, 'off the record');
  t.deepEqual(said.getChildren('stanza-id', NS_SID), [], 'nothing archived, no archive id');
  const f = bob.c.items.length;
  sendJoin(bob, room, 'Bob');
  const self = await expect(bob, 'bob’s own presence', isSelf(room), f);
  t.false(codes(self).includes(170), 'XEP-0045 room logging: no 170');
  await expect(bob, 'the subject', isSubject(room), f);
  t.false((await barrier(bob, f)).some(isGroupchat(room, 'off the record')), 'no history');
  await leave(bob, room, 'Bob');
  await configure(t, alice, room, { 'muc#roomconfig_enablelogging': '1' });
  const kept = await say(alice, room, 'on the record');
  const q = await query(alice, {}, '', '', room);
  t.deepEqual(q.bodies, ['on the record']);
  t.deepEqual(q.ids, [sidOf(kept, room)]);
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob')), ['on the record']);
});

test('history on entering (§7.2.15, §7.2.16): maxstanzas, maxchars on the stanzas as sent, seconds, since, together the fewest; the room’s history length; each with its archive id and delay; no private message, no subject', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const room = await createRoom(alice, service, 'Alice');
  const said: Element[] = [];
  for (const b of ['first', 'second, a little longer', 'third', 'fourth, the longest of them all by far', 'fifth']) said.push(await say(alice, room, b));
  alice.c.send(`<message to='${room}' type='groupchat'><subject>Not history</subject></message>`);
  // A private message, to bob while he is in: not history.
  const fb = bob.c.items.length;
  await join(bob, room, 'Bob');
  alice.c.send(`<message to='${room}/Bob' type='chat'><body>private</body></message>`);
  await expect(bob, 'the private message', (el) => el.getChildText('body') === 'private', fb);
  await leave(bob, room, 'Bob');

  const full = await historyOf(bob, room, 'Bob');
  t.deepEqual(bodies(full), ['first', 'second, a little longer', 'third', 'fourth, the longest of them all by far', 'fifth'], 'neither the private message nor the subject');
  for (const [i, m] of full.entries()) {
    t.is(m.el.attrs.from, `${room}/Alice`);
    t.is(m.el.attrs.to, bob.jid);
    t.is(sidOf(m.el, room), sidOf(said[i], room), 'the archive id the live message carried');
    const delay = m.el.getChild('delay', NS_DELAY)!;
    t.is(delay.attrs.from, room);
    t.regex(delay.attrs.stamp, STAMP);
    t.is(m.el.getChild('subject'), undefined);
    t.is(m.el.getChild('x', NS_MUC_USER), undefined, 'no real JID in history');
  }
  // The subject comes once, after the history, and it is the current one.
  const fj = bob.c.items.length;
  await join(bob, room, 'Bob');
  const subjects = (await barrier(bob, fj)).filter((el) => el.getChild('subject') !== undefined);
  t.deepEqual(subjects.map((el) => el.getChildText('subject')), ['Not history']);
  await leave(bob, room, 'Bob');

  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `maxstanzas='2'`)), bodies(full).slice(3));
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `maxchars='0'`)), [], 'maxchars 0: none');
  // maxchars counts the whole stanzas as bob gets them (the same 'to' each time): the last two fit exactly, one character less and only the last does.
  const two = full[3].raw.length + full[4].raw.length;
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `maxchars='${two}'`)), bodies(full).slice(3));
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `maxchars='${two - 1}'`)), bodies(full).slice(4));
  // since: what the room received from then on (by the stamps it gave), inclusive; with maxstanzas, the fewer.
  const stamps = full.map((m) => m.el.getChild('delay', NS_DELAY)!.attrs.stamp);
  const from = (s: string) => bodies(full).filter((_, i) => stamps[i] >= s);
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `since='${stamps[2]}'`)), from(stamps[2]));
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `since='${stamps[1]}' maxstanzas='1'`)), bodies(full).slice(4));
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `since='not a date'`)), bodies(full), 'a since that is no DateTime limits nothing');
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `seconds='3600'`)), bodies(full));
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `seconds='0'`)), [], 'nothing in the last 0 seconds');
  // The room's history length bounds what a client asks.
  await configure(t, alice, room, { 'muc#maxhistoryfetch': '3' });
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob', `maxstanzas='10'`)), bodies(full).slice(2));
  await configure(t, alice, room, { 'muc#maxhistoryfetch': '0' });
  t.deepEqual(bodies(await historyOf(bob, room, 'Bob')), [], 'history length 0: none');
  t.deepEqual((await query(bob, {}, '', '', room)).bodies, bodies(full), 'the archive still has them all');
});

test('retention (XMPP_MAM_RETENTION_DAYS) prunes rooms’ archives too, with XMPP_MAM off', async (t) => {
  const dir = mkdtempSync(joinPath(tmpdir(), 'xmpp-muc-retention-'));
  const owner = fresh('olga');
  const room = `kept${process.pid}`;
  const roomJid = `${room}@conference.localhost`;
  const rooms = SqliteRoomStore.open(joinPath(dir, 'muc.sqlite'));
  t.true(await rooms.save({ room, config: { ...DEFAULT_ROOM_CONFIG, persistent: true }, affiliations: [{ jid: `${owner}@localhost`, affiliation: 'owner' }], created: Date.now() }));
  rooms.close();
  const seed = SqliteArchiveStore.open(joinPath(dir, 'archive.sqlite'));
  const row = (at: number, body: string) => ({ id: idAt(at, 0), owner: roomJid, stamp: at, withBare: roomJid, withResource: 'Old', outgoing: false, body, xml: `<message xmlns='jabber:client' type='groupchat' from='${roomJid}/Old'><body>${body}</body></message>` });
  await seed.append([row(Date.now() - 3 * 86_400_000, 'three days old'), row(Date.now() - 3600_000, 'an hour old')]);
  seed.close();
  const s = await startTestServer({ XMPP_WORKERS: '1', XMPP_DATA_DIR: dir, XMPP_MAM: 'false', XMPP_MAM_RETENTION_DAYS: '2' });
  t.teardown(() => s.stop());
  await s.addUser(owner, `${owner}-pw`);
  const olga = await connect(t, s.c2sPort, owner, 'r');
  await ready(olga);
  // Pruning starts as the worker joins, before any client: its requests reach the storage thread in order.
  t.deepEqual((await query(olga, {}, '', '', roomJid)).bodies, ['an hour old']);
  t.deepEqual(bodies(await historyOf(olga, roomJid, 'Olga')), ['an hour old']);
});
