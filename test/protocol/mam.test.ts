// XEP-0313 Message Archive Management end to end, over real sockets with
// real TLS: what is archived (live, carbons, offline, once), the XEP-0359
// stamp and the forged ones removed, queries with every form field, RSM
// paging, flip-page, metadata, preferences, and errors.
//
// The servers run one worker: a message archived by the sender's worker is
// then in every later query (the query waits for its worker's writes). With
// several workers a row lands within a database round trip; the
// multi-worker and cluster tests wait for it.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { stanzaError, uid } from '../helpers/protocol.ts';
import { NS_CARBONS, NS_FORWARD, NS_DELAY, STAMP, barrier, connect, expect, fresh, isBody, ready, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteArchiveStore } from '../../src/mam/sqlite.ts';
import { idAt } from '../../src/mam/store.ts';
import { NS_MAM, fin, form, forwarded, mamIq, query, rsm } from '../helpers/mam.ts';

const NS_SID = 'urn:xmpp:sid:0';
const NS_HINTS = 'urn:xmpp:hints';

let server: TestServer;
let roster: TestServer; // XMPP_MAM_DEFAULT=roster, full-text search off (the default)

test.before(async () => {
  [server, roster] = await Promise.all([startTestServer({ XMPP_WORKERS: '1', XMPP_MAM_FULLTEXT: 'true' }), startTestServer({ XMPP_WORKERS: '1', XMPP_MAM_DEFAULT: 'roster' })]);
});
test.after.always(async () => {
  await Promise.all([server?.stop(), roster?.stop()]);
});

async function user(t: ExecutionContext, s: TestServer, base: string, resource = 'r', presence = true): Promise<Peer> {
  const name = fresh(base);
  await s.addUser(name, `${name}-pw`);
  const p = await connect(t, s.c2sPort, name, resource);
  if (presence) await ready(p);
  return p;
}

async function login(t: ExecutionContext, s: TestServer, name: string, resource: string): Promise<Peer> {
  return connect(t, s.c2sPort, name, resource);
}

const chat = (to: string, body: string, extra = '', type = 'chat') => `<message to='${to}' type='${type}' id='${uid('m')}'><body>${body}</body>${extra}</message>`;

const stanzaIds = (m: Element) => m.getChildren('stanza-id', NS_SID);

test('a message is archived on both sides; the recipient gets its archive id (XEP-0359) and a query finds it', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'hello bob'));
  const got = await expect(bob, 'the message', isBody('hello bob'), from);
  const sids = stanzaIds(got);
  t.is(sids.length, 1);
  t.is(sids[0].attrs.by, bob.bare, "stamped by the recipient's archive (its bare JID)");
  t.regex(sids[0].attrs.id, /^[0-9a-f]{24}$/);

  const b = await query(bob);
  t.deepEqual(b.bodies, ['hello bob']);
  t.deepEqual(b.ids, [sids[0].attrs.id], 'the archive id is the one the message carried');
  const r = b.results[0];
  t.is(r.attrs.to, bob.jid);
  const inner = forwarded(r);
  t.is(inner.attrs.from, alice.jid);
  t.is(inner.attrs.to, bob.bare);
  t.regex(r.getChild('result', NS_MAM)!.getChild('forwarded', NS_FORWARD)!.getChild('delay', NS_DELAY)!.attrs.stamp, STAMP);
  t.deepEqual(fin(b), { complete: 'true', first: sids[0].attrs.id, last: sids[0].attrs.id, count: '1' });

  // The sender's own copy, in its archive, with an id of its own.
  const a = await query(alice);
  t.deepEqual(a.bodies, ['hello bob']);
  t.not(a.ids[0], sids[0].attrs.id);
  t.is(forwarded(a.results[0]).attrs.to, bob.bare);
  // The 'with' filter sees both directions of one conversation.
  t.deepEqual((await query(alice, { with: bob.bare })).bodies, ['hello bob']);
  t.deepEqual((await query(alice, { with: `${bob.bare}/other` })).bodies, []);
  t.deepEqual((await query(bob, { with: alice.jid })).bodies, ['hello bob'], 'a full JID matches that resource');
});

test('disco#info on the account lists mam:2, #extended, sid:0 and fulltext', async (t) => {
  const alice = await user(t, server, 'alice');
  const id = uid('disco');
  const res = await alice.c.request(`<iq type='get' id='${id}' to='${alice.bare}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, id);
  const features = res.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
  for (const f of [NS_MAM, `${NS_MAM}#extended`, NS_SID, 'urn:xmpp:fulltext:0']) t.true(features.includes(f), f);
});

test('archived once: a message stored offline, and one copied by carbons, are in the archive one time', async (t) => {
  const alice = await user(t, server, 'alice');
  const carolName = fresh('carol');
  await server.addUser(carolName, `${carolName}-pw`);
  const carolBare = `${carolName}@localhost`;
  await barrier(alice, alice.c.items.length);
  alice.c.send(chat(carolBare, 'while you were out'));
  await barrier(alice, alice.c.items.length);
  const carol = await login(t, server, carolName, 'c1');
  const from = carol.c.items.length;
  carol.c.send('<presence/>');
  const stored = await expect(carol, 'the offline message', isBody('while you were out'), from);
  t.is(stanzaIds(stored).length, 1, 'the offline copy carries the archive id');
  t.truthy(stored.getChild('delay', NS_DELAY));

  // Carbons: a second resource gets a copy; the archive still one row.
  const carol2 = await login(t, server, carolName, 'c2');
  await ready(carol2);
  const cid = uid('carbons');
  await carol2.c.request(`<iq type='set' id='${cid}'><enable xmlns='${NS_CARBONS}'/></iq>`, cid);
  const f2 = carol2.c.items.length;
  alice.c.send(chat(`${carolBare}/c1`, 'to one resource'));
  const copy = await expect(carol2, 'the carbon', (el) => el.getChild('received', NS_CARBONS) !== undefined, f2);
  const inner = copy.getChild('received', NS_CARBONS)!.getChild('forwarded', NS_FORWARD)!.getChild('message')!;
  t.is(stanzaIds(inner)[0]?.attrs.by, carolBare, 'the carbon carries the archive id too');
  const q = await query(carol2);
  t.deepEqual(q.bodies, ['while you were out', 'to one resource']);
  t.is(q.ids[1], stanzaIds(inner)[0].attrs.id);
});

test('a stanza-id a sender forged in our name is removed; one by another entity is left alone', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'forged', `<stanza-id xmlns='${NS_SID}' id='fake1' by='${bob.bare}'/><stanza-id xmlns='${NS_SID}' id='fake2' by='localhost'/><stanza-id xmlns='${NS_SID}' id='theirs' by='room@muc.example.org'/>`));
  const got = await expect(bob, 'the message', isBody('forged'), from);
  const sids = stanzaIds(got);
  t.deepEqual(sids.map((s) => s.attrs.by).sort(), [bob.bare, 'room@muc.example.org'].sort());
  t.not(sids.find((s) => s.attrs.by === bob.bare)!.attrs.id, 'fake1');
  t.deepEqual((await query(bob)).bodies, ['forged'], 'archived, since the forged id was no sign of it');
});

test('what is not archived: headlines, chat states, <no-store/>, <no-permanent-store/>; <store/> without a body is', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'news', '', 'headline'));
  alice.c.send(`<message to='${bob.bare}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`);
  alice.c.send(chat(bob.bare, 'secret', `<no-store xmlns='${NS_HINTS}'/>`));
  alice.c.send(chat(bob.bare, 'ephemeral', `<no-permanent-store xmlns='${NS_HINTS}'/>`));
  alice.c.send(`<message to='${bob.bare}' type='chat' id='keep'><store xmlns='${NS_HINTS}'/><x xmlns='urn:example:payload'/></message>`);
  alice.c.send(chat(bob.bare, 'last'));
  await expect(bob, 'the last message', isBody('last'), from);
  const secret = bob.c.items.slice(from).find((it) => it.kind === 'el' && it.el.getChildText('body') === 'secret');
  t.truthy(secret, 'the no-store message was delivered');
  t.is(secret?.kind === 'el' ? stanzaIds(secret.el).length : -1, 0, 'but not archived (no archive id)');
  const q = await query(bob);
  t.deepEqual(q.bodies, ['', 'last']);
  t.truthy(forwarded(q.results[0]).getChild('x', 'urn:example:payload'));
  t.deepEqual((await query(alice)).bodies, ['', 'last']);
});

test('RSM paging forwards and from the end, flip-page, counts, and the fields start, end, ids, before-id, after-id', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const from = bob.c.items.length;
  for (let i = 0; i < 7; i++) alice.c.send(chat(bob.bare, `m${i}`));
  await expect(bob, 'the last message', isBody('m6'), from);
  const all = await query(bob, {}, '<max>3</max>');
  t.deepEqual(all.bodies, ['m0', 'm1', 'm2']);
  t.deepEqual(fin(all), { complete: undefined, first: all.ids[0], last: all.ids[2], count: undefined });
  const next = await query(bob, {}, `<max>3</max><after>${all.ids[2]}</after>`);
  t.deepEqual(next.bodies, ['m3', 'm4', 'm5']);
  const end = await query(bob, {}, `<max>3</max><after>${next.ids[2]}</after>`);
  t.deepEqual(end.bodies, ['m6']);
  t.is(fin(end).complete, 'true');
  // <before/> empty: the last page; then the one before it.
  const last = await query(bob, {}, '<max>3</max><before/>');
  t.deepEqual(last.bodies, ['m4', 'm5', 'm6']);
  t.is(fin(last).complete, undefined);
  const earlier = await query(bob, {}, `<max>3</max><before>${last.ids[0]}</before>`);
  t.deepEqual(earlier.bodies, ['m1', 'm2', 'm3']);
  const first = await query(bob, {}, `<max>3</max><before>${earlier.ids[0]}</before>`);
  t.deepEqual(first.bodies, ['m0']);
  t.is(fin(first).complete, 'true', 'paging backwards reached the start');
  // flip-page: the page in reverse order.
  const flipped = await query(bob, {}, '<max>3</max><before/>', '<flip-page/>');
  t.deepEqual(flipped.bodies, ['m6', 'm5', 'm4']);
  // XEP-0059 §2.7: max 0 is a count.
  const count = await query(bob, {}, '<max>0</max>');
  t.deepEqual(count.bodies, []);
  t.is(fin(count).count, '7');
  // The count is the whole set's: RSM paging does not cut it, the form's after-id does.
  t.is(fin(await query(bob, {}, `<max>0</max><after>${all.ids[2]}</after>`)).count, '7');
  t.is(fin(await query(bob, { 'after-id': all.ids[2] }, '<max>0</max>')).count, '4');
  // Form fields.
  const ids = [...all.ids, ...next.ids, ...end.ids];
  t.deepEqual((await query(bob, { 'after-id': ids[1], 'before-id': ids[5] })).bodies, ['m2', 'm3', 'm4']);
  t.deepEqual((await query(bob, { ids: [ids[6], ids[0], ids[3]] })).bodies, ['m0', 'm3', 'm6']);
  const stampOf = (r: Element) => r.getChild('result', NS_MAM)!.getChild('forwarded', NS_FORWARD)!.getChild('delay', NS_DELAY)!.attrs.stamp;
  const firstStamp = stampOf(all.results[0]);
  t.deepEqual((await query(bob, { start: firstStamp })).bodies.length, 7);
  t.deepEqual((await query(bob, { end: '2000-01-01T00:00:00Z' })).bodies, []);
  t.deepEqual((await query(bob, { start: '2999-01-01T00:00:00Z' })).bodies, []);
});

test('full-text search over bodies (XEP-0431)', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const from = bob.c.items.length;
  for (const b of ['Shall we meet for lunch?', 'The weather is fine', 'lunch at noon then']) alice.c.send(chat(bob.bare, b));
  await expect(bob, 'the last message', isBody('lunch at noon then'), from);
  t.deepEqual((await query(bob, { '{urn:xmpp:fulltext:0}fulltext': 'LUNCH' })).bodies, ['Shall we meet for lunch?', 'lunch at noon then']);
  t.deepEqual((await query(bob, { '{urn:xmpp:fulltext:0}fulltext': 'lunch noon' })).bodies, ['lunch at noon then']);
  t.deepEqual((await query(bob, { '{urn:xmpp:fulltext:0}fulltext': '' })).bodies.length, 3, 'an empty search does not filter');
});

test('with full-text search off (XMPP_MAM_FULLTEXT, the default) it is neither advertised nor accepted', async (t) => {
  const alice = await user(t, roster, 'alice');
  const id = uid('disco');
  const res = await alice.c.request(`<iq type='get' id='${id}' to='${alice.bare}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, id);
  const features = res.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
  t.true(features.includes(NS_MAM));
  t.false(features.includes('urn:xmpp:fulltext:0'));
  const offered = await mamIq(alice, `<query xmlns='${NS_MAM}'/>`, 'get');
  t.false(offered.iq.getChild('query', NS_MAM)!.getChild('x', 'jabber:x:data')!.getChildren('field').some((f) => f.attrs.var === '{urn:xmpp:fulltext:0}fulltext'));
  const refused = await mamIq(alice, `<query xmlns='${NS_MAM}'>${form({ '{urn:xmpp:fulltext:0}fulltext': 'lunch' })}</query>`);
  t.is(stanzaError(refused.iq).condition, 'bad-request');
});

test('metadata (#extended): the first and last message of the archive; empty for an empty one', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const empty = await mamIq(bob, `<metadata xmlns='${NS_MAM}'/>`, 'get');
  t.is(empty.iq.attrs.type, 'result');
  t.deepEqual(empty.iq.getChild('metadata', NS_MAM)!.children, []);
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'first'));
  alice.c.send(chat(bob.bare, 'second'));
  await expect(bob, 'the second message', isBody('second'), from);
  const ids = (await query(bob)).ids;
  const meta = (await mamIq(bob, `<metadata xmlns='${NS_MAM}'/>`, 'get')).iq.getChild('metadata', NS_MAM)!;
  t.is(meta.getChild('start')!.attrs.id, ids[0]);
  t.is(meta.getChild('end')!.attrs.id, ids[1]);
  t.regex(meta.getChild('start')!.attrs.timestamp, STAMP);
});

test('the query form lists the supported fields', async (t) => {
  const alice = await user(t, server, 'alice');
  const a = await mamIq(alice, `<query xmlns='${NS_MAM}'/>`, 'get');
  const vars = a.iq.getChild('query', NS_MAM)!.getChild('x', 'jabber:x:data')!.getChildren('field').map((f) => f.attrs.var);
  t.deepEqual(vars, ['FORM_TYPE', 'with', 'start', 'end', 'before-id', 'after-id', 'ids', '{urn:xmpp:fulltext:0}fulltext']);
});

test('errors: an unknown field, a malformed date, an id not in the archive, RSM index, another account’s archive', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const cond = async (inner: string, type = 'set', to = '') => stanzaError((await mamIq(alice, inner, type, to)).iq);
  t.is((await cond(`<query xmlns='${NS_MAM}'>${form({ 'urn:example:field': 'x' })}</query>`)).condition, 'bad-request');
  t.is((await cond(`<query xmlns='${NS_MAM}'>${form({ start: 'yesterday' })}</query>`)).condition, 'bad-request');
  t.is((await cond(`<query xmlns='${NS_MAM}'>${form({ with: 'not@@valid' })}</query>`)).condition, 'jid-malformed');
  t.is((await cond(`<query xmlns='${NS_MAM}'>${form({ 'after-id': '0000000000000000deadbeef' })}</query>`)).condition, 'item-not-found');
  t.is((await cond(`<query xmlns='${NS_MAM}'>${rsm('<after>nope</after>')}</query>`)).condition, 'item-not-found');
  t.is((await cond(`<query xmlns='${NS_MAM}'>${rsm('<max>ten</max>')}</query>`)).condition, 'bad-request');
  t.is((await cond(`<query xmlns='${NS_MAM}'>${rsm('<index>3</index>')}</query>`)).condition, 'feature-not-implemented');
  t.is((await cond(`<query xmlns='${NS_MAM}'/>`, 'set', bob.bare)).condition, 'forbidden');
  t.is((await cond(`<prefs xmlns='${NS_MAM}' default='sometimes'/>`)).condition, 'bad-request');
  // The session goes on.
  const ok = await query(alice);
  t.is(ok.iq.attrs.type, 'result');
});

test('preferences: default never keeps nothing (and stamps nothing), the always list overrides it, the never list beats always', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const carol = await user(t, server, 'carol');
  const set = await mamIq(bob, `<prefs xmlns='${NS_MAM}' default='never'><always><jid>${carol.bare}</jid></always><never/></prefs>`);
  t.is(set.iq.attrs.type, 'result');
  const got = await mamIq(bob, `<prefs xmlns='${NS_MAM}'/>`, 'get');
  const prefs = got.iq.getChild('prefs', NS_MAM)!;
  t.is(prefs.attrs.default, 'never');
  t.deepEqual(prefs.getChild('always')!.getChildren('jid').map((j) => j.getText()), [carol.bare]);
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'from alice'));
  carol.c.send(chat(bob.bare, 'from carol'));
  const fromAlice = await expect(bob, 'alice', isBody('from alice'), from);
  const fromCarol = await expect(bob, 'carol', isBody('from carol'), from);
  t.is(stanzaIds(fromAlice).length, 0);
  t.is(stanzaIds(fromCarol).length, 1);
  t.deepEqual((await query(bob)).bodies, ['from carol']);
  // Sent messages follow the sender's preferences too.
  bob.c.send(chat(alice.bare, 'bob to alice'));
  bob.c.send(chat(carol.bare, 'bob to carol'));
  await barrier(bob, bob.c.items.length);
  t.deepEqual((await query(bob)).bodies, ['from carol', 'bob to carol']);
  // Alice's default (always) keeps both sides.
  t.deepEqual((await query(alice)).bodies, ['from alice', 'bob to alice']);
  // 'never' wins over 'always' for the same JID.
  await mamIq(bob, `<prefs xmlns='${NS_MAM}' default='always'><always><jid>${carol.bare}</jid></always><never><jid>${carol.bare}/any</jid></never></prefs>`);
  const f2 = bob.c.items.length;
  carol.c.send(chat(bob.bare, 'carol again'));
  t.is(stanzaIds(await expect(bob, 'carol again', isBody('carol again'), f2)).length, 0);
});

test("XMPP_MAM_DEFAULT=roster: only contacts in the roster are archived", async (t) => {
  const alice = await user(t, roster, 'alice');
  const bob = await user(t, roster, 'bob');
  const eve = await user(t, roster, 'eve');
  await subscribe(bob, alice);
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'from a contact'));
  eve.c.send(chat(bob.bare, 'from a stranger'));
  t.is(stanzaIds(await expect(bob, 'contact', isBody('from a contact'), from)).length, 1);
  t.is(stanzaIds(await expect(bob, 'stranger', isBody('from a stranger'), from)).length, 0);
  t.deepEqual((await query(bob)).bodies, ['from a contact']);
});

test('messages to oneself are archived once', async (t) => {
  const name = fresh('self');
  await server.addUser(name, `${name}-pw`);
  const a = await login(t, server, name, 'one');
  await ready(a);
  const b = await login(t, server, name, 'two');
  await ready(b);
  const from = b.c.items.length;
  a.c.send(chat(`${b.bare}/two`, 'note to self'));
  await expect(b, 'the note', isBody('note to self'), from);
  t.deepEqual((await query(b)).bodies, ['note to self']);
});

test('retention (XMPP_MAM_RETENTION_DAYS): messages older than the limit are removed in the background', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-mam-retention-'));
  const seed = SqliteArchiveStore.open(join(dir, 'archive.sqlite'));
  const old = Date.now() - 3 * 86_400_000;
  const row = (at: number, seq: number, body: string) => ({ id: idAt(at, seq), owner: 'dora', stamp: at, withBare: 'x@localhost', withResource: '', outgoing: false, body, xml: `<message xmlns='jabber:client' type='chat'><body>${body}</body></message>` });
  await seed.append([row(old, 0, 'three days old'), row(Date.now() - 3600_000, 0, 'an hour old')]);
  seed.close();
  const s = await startTestServer({ XMPP_WORKERS: '1', XMPP_DATA_DIR: dir, XMPP_MAM_RETENTION_DAYS: '2' });
  t.teardown(() => s.stop());
  await s.addUser('dora', 'dora-pw');
  const dora = await login(t, s, 'dora', 'r');
  // Pruning starts as the worker joins, before any client: the worker's
  // requests reach the storage thread in order, so a query sees it done.
  const { bodies } = await query(dora);
  t.deepEqual(bodies, ['an hour old']);
});

test('removing an account removes its archive; its contacts keep theirs', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const from = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'before you go'));
  await expect(bob, 'the message', isBody('before you go'), from);
  await barrier(alice, alice.c.items.length);
  const id = uid('cancel');
  const res = await bob.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, id);
  t.is(res.attrs.type, 'result');
  const store = SqliteArchiveStore.open(join(server.config.dataDir, 'archive.sqlite'));
  t.teardown(() => store.close());
  const bobName = bob.bare.split('@')[0];
  t.is(await store.count(bobName, {}), 0);
  t.deepEqual((await query(alice)).bodies, ['before you go']);
});

test('JIDs are compared as JIDs: preferences, the with filter, messages to oneself and the archive asked about ignore case', async (t) => {
  const alice = await user(t, server, 'alice');
  const bob = await user(t, server, 'bob');
  const shout = (jid: string) => jid.toUpperCase();
  // alice never archives bob, whom she then writes to in capitals.
  await mamIq(alice, `<prefs xmlns='${NS_MAM}' default='always'><always/><never><jid>${bob.bare}</jid></never></prefs>`);
  const from = bob.c.items.length;
  alice.c.send(chat(shout(bob.bare), 'not for the record'));
  alice.c.send(chat(alice.bare, 'to myself', '', 'normal'));
  alice.c.send(chat(shout(alice.bare), 'to MYSELF'));
  await expect(bob, 'the message', isBody('not for the record'), from);
  await barrier(alice, alice.c.items.length);
  t.deepEqual((await query(alice)).bodies, ['to myself', 'to MYSELF'], 'nothing with bob; each note to self once');
  // bob archives alice: found by her JID in any case.
  t.deepEqual((await query(bob, { with: shout(alice.bare) })).bodies, ['not for the record']);
  // Asking one's own archive by one's bare JID in capitals is asking one's own.
  const own = await mamIq(bob, `<query xmlns='${NS_MAM}'/>`, 'set', shout(bob.bare));
  t.is(own.iq.attrs.type, 'result');
  // A stanza-id forged in our name in capitals is removed too.
  const f2 = bob.c.items.length;
  alice.c.send(chat(bob.bare, 'forged loudly', `<stanza-id xmlns='${NS_SID}' id='fake' by='${shout(bob.bare)}'/>`));
  const got = await expect(bob, 'the message', isBody('forged loudly'), f2);
  t.deepEqual(stanzaIds(got).map((s) => s.attrs.by), [bob.bare]);
});

test('a message offline storage refuses is bounced, and stays in the archive, which took it on arrival (as ejabberd does)', async (t) => {
  const s = await startTestServer({ XMPP_WORKERS: '1', XMPP_MAX_OFFLINE: '0' });
  t.teardown(() => s.stop());
  const alice = await user(t, s, 'alice');
  const bobName = fresh('bob');
  await s.addUser(bobName, `${bobName}-pw`);
  const start = alice.c.items.length;
  alice.c.send(chat(`${bobName}@localhost`, 'archived, not stored offline'));
  const back = await expect(alice, 'the error', (el) => el.attrs.type === 'error', start);
  t.is(stanzaError(back).condition, 'service-unavailable');
  const bob = await login(t, s, bobName, 'r');
  t.deepEqual((await query(bob)).bodies, ['archived, not stored offline']);
});
