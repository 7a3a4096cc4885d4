// XEP-0198 §5 stream resumption over real streams, on one node of two
// workers: a connection that drops leaves its session waiting, bound and
// available; the client's next connection resumes it, gets what it did not
// acknowledge and what came meanwhile, in order and once, and its contacts
// never see it leave. The failures: an id of another account or made up,
// an h beyond what was sent, two connections racing for one session, a
// session that waited too long (its messages stored, its iq requests
// answered), a new login taking the resource.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { authenticated, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, isPresence, newAccount, newUser, subscribe, NS_SM, isSm, isBody } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import type { RawClient } from '../helpers/raw.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer();
});
test.after.always(async () => {
  await server?.stop();
});

const user = (t: ExecutionContext, base: string, resource = 'r') => newUser(t, server, base, resource);

const isStanza = (el: Element) => el.name === 'message' || el.name === 'presence' || el.name === 'iq';
const bodies = (p: Peer, from: number, sender: string) =>
  p.c.items.slice(from).flatMap((it) => (it.kind === 'el' && it.el.name === 'message' && it.el.attrs.from === sender ? [it.el.getChildText('body')] : []));

/** Enables acknowledgements with resumption; the resumption id, the answer, and the index after it. */
async function enableResume(p: Peer, max?: number): Promise<{ id: string; enabled: Element; next: number }> {
  const from = p.c.items.length;
  p.c.send(`<enable xmlns='${NS_SM}' resume='true'${max ? ` max='${max}'` : ''}/>`);
  const enabled = await expect(p, '<enabled/>', isSm('enabled'), from);
  return { id: enabled.attrs.id, enabled, next: p.c.items.findIndex((it) => it.kind === 'el' && it.el === enabled) + 1 };
}

/** Stanzas received on p's stream from index `from`: the client's count (its h). */
const received = (p: Peer, from: number) => p.c.items.slice(from).filter((it) => it.kind === 'el' && isStanza(it.el)).length;

/** A new connection of account `name` asks to resume `previd` with `h`; the connection and the answer. */
async function resume(t: ExecutionContext, name: string, previd: string, h: number): Promise<{ c: RawClient; answer: Element }> {
  const { c } = await within(authenticated(server.c2sPort, name, `${name}-pw`), WAIT, `${name} authenticating again`);
  t.teardown(() => c.destroy());
  c.send(`<resume xmlns='${NS_SM}' previd='${previd}' h='${h}'/>`);
  const answer = await within(c.nextEl(), WAIT, 'the answer to <resume/>');
  return { c, answer };
}

test('<enabled/> with resumption: an id, resume, and max no longer than the client asked for (§5)', async (t) => {
  const p = await user(t, 'en');
  const { id, enabled } = await enableResume(p, 120);
  t.is(enabled.attrs.resume, 'true');
  t.is(enabled.attrs.max, '120');
  t.true(id.length >= 40, `an unguessable id: ${id}`);
  const q = await user(t, 'en2');
  const other = await enableResume(q);
  t.is(other.enabled.attrs.max, '300', 'the server default, XMPP_SM_RESUME_TIMEOUT_MS');
  t.not(other.id, id);
});

test('resumed after the connection dropped: what was not acknowledged and what came meanwhile, in order, once; contacts saw nothing; then live', async (t) => {
  const alice = await user(t, 'mobile');
  const bob = await user(t, 'pal');
  await subscribe(bob, alice);
  const { id, next } = await enableResume(alice);
  for (const body of ['m1', 'm2', 'm3']) bob.c.send(`<message to='${alice.jid}' type='chat'><body>${body}</body></message>`);
  await expect(alice, 'm3', isBody('m3'), next);
  // Read all three, acknowledged the first, one stanza of its own (the barrier's ping) handled; then the network goes.
  alice.c.send(`<a xmlns='${NS_SM}' h='1'/>`);
  await barrier(alice, alice.c.items.length);
  const bobMark = bob.c.items.length;
  alice.c.destroy();
  for (const body of ['m4', 'm5']) bob.c.send(`<message to='${alice.jid}' type='chat'><body>${body}</body></message>`);
  await barrier(bob, bob.c.items.length);

  const { c, answer } = await resume(t, alice.name, id, 1);
  t.true(isSm('resumed')(answer), answer.toString());
  t.is(answer.attrs.previd, id);
  t.is(answer.attrs.h, '1', 'the one stanza the server handled');
  const again: Peer = { c, jid: alice.jid, bare: alice.bare, name: alice.name };
  await expect(again, 'm5', isBody('m5')).catch((e) => { console.log(c.buffer); throw e; });
  t.deepEqual(bodies(again, 0, bob.jid), ['m2', 'm3', 'm4', 'm5']);
  // The session is the same: its JID, its presence (bob saw it never leave), live traffic.
  t.deepEqual(bob.c.items.slice(bobMark).filter((it) => it.kind === 'el' && isPresence(alice.jid, 'unavailable')(it.el)), []);
  const mark = c.items.length;
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>m6</body></message>`);
  await expect(again, 'm6, live', isBody('m6'), mark);
  const bm = bob.c.items.length;
  c.send(`<message to='${bob.jid}' type='chat'><body>back</body></message>`);
  const m = await expect(bob, "alice's message from the resumed stream", isBody('back'), bm);
  t.is(m.attrs.from, alice.jid);
  // Counting goes on from where it was: the server's h counts the message just sent too.
  c.send(`<r xmlns='${NS_SM}'/>`);
  const a = await expect(again, '<a/>', isSm('a'), mark);
  t.is(a.attrs.h, '2');
  const r = received(again, 0);
  c.send(`<a xmlns='${NS_SM}' h='${(1 + r) >>> 0}'/>`);
  const after = await barrier(again, c.items.length);
  t.deepEqual(after.filter((el) => el.name === 'stream:error'), [], 'the acknowledgement counts on from the old stream');
});

test('an id of another account, or a made-up one, is item-not-found; the owner resumes afterwards', async (t) => {
  const alice = await user(t, 'owner');
  const { id } = await enableResume(alice);
  alice.c.destroy();
  const mallory = await newAccount(server, 'mallory');
  const stolen = await resume(t, mallory, id, 0);
  t.true(isSm('failed')(stolen.answer) && Boolean(stolen.answer.getChild('item-not-found')), stolen.answer.toString());
  const forged = await resume(t, alice.name, `${id.slice(0, id.indexOf('.'))}.${'A'.repeat(24)}`, 0);
  t.true(isSm('failed')(forged.answer) && Boolean(forged.answer.getChild('item-not-found')), forged.answer.toString());
  const garbage = await resume(t, alice.name, 'no-such-session', 0);
  t.true(isSm('failed')(garbage.answer) && Boolean(garbage.answer.getChild('item-not-found')), garbage.answer.toString());
  const mine = await resume(t, alice.name, id, 0);
  t.true(isSm('resumed')(mine.answer), mine.answer.toString());
});

test('an h beyond what was sent fails the resumption (handled-count-too-high), and the session can still be resumed', async (t) => {
  const alice = await user(t, 'greedy');
  const bob = await user(t, 'giver');
  const { id, next } = await enableResume(alice);
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>only</body></message>`);
  await expect(alice, 'only', isBody('only'), next);
  alice.c.destroy();
  const bad = await resume(t, alice.name, id, 7);
  t.true(isSm('failed')(bad.answer) && Boolean(bad.answer.getChild('undefined-condition')), bad.answer.toString());
  t.deepEqual(bad.answer.getChild('handled-count-too-high', NS_SM)?.attrs, { xmlns: NS_SM, h: '7', 'send-count': '1' });
  t.is(bad.answer.attrs.h, '0', "the session's own count: nothing of the client's was handled (§5)");
  const good = await resume(t, alice.name, id, 0);
  t.true(isSm('resumed')(good.answer), good.answer.toString());
  const again: Peer = { c: good.c, jid: alice.jid, bare: alice.bare, name: alice.name };
  await expect(again, '"only" again', isBody('only'));
});

test('two connections resume one session at once: one is resumed, the other gets item-not-found', async (t) => {
  for (let round = 0; round < 3; round++) {
    const alice = await user(t, `race${round}`);
    const { id } = await enableResume(alice);
    alice.c.destroy();
    const conns = await Promise.all([0, 1].map(() => within(authenticated(server.c2sPort, alice.name, `${alice.name}-pw`), WAIT, 'authenticating')));
    for (const { c } of conns) t.teardown(() => c.destroy());
    for (const { c } of conns) c.send(`<resume xmlns='${NS_SM}' previd='${id}' h='0'/>`);
    const answers = await Promise.all(conns.map(({ c }) => within(c.nextEl(), WAIT, 'an answer')));
    t.deepEqual(answers.map((a) => a.name).sort(), ['failed', 'resumed'], answers.map(String).join(' '));
    t.truthy(answers.find((a) => a.name === 'failed')?.getChild('item-not-found'));
  }
});

test('a resumption while the old connection still looks open takes the session over; the old one is told (conflict)', async (t) => {
  const alice = await user(t, 'twice');
  const bob = await user(t, 'witness');
  const { id, next } = await enableResume(alice);
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>before</body></message>`);
  await expect(alice, 'before', isBody('before'), next);
  const { c, answer } = await resume(t, alice.name, id, 0);
  t.true(isSm('resumed')(answer), answer.toString());
  const err = await expect(alice, 'the old stream ends', (el) => el.name === 'stream:error', next);
  t.truthy(err.getChild('conflict'));
  const again: Peer = { c, jid: alice.jid, bare: alice.bare, name: alice.name };
  await expect(again, '"before", unacknowledged, again', isBody('before'));
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>after</body></message>`);
  await expect(again, '"after" on the new stream', isBody('after'));
  t.deepEqual(bodies(again, 0, bob.jid), ['before', 'after']);
});

test('not resumed in time: contacts see it leave, its messages are stored, an iq request waiting for it is answered, and the id is gone', async (t) => {
  const alice = await user(t, 'late');
  const bob = await user(t, 'waiter');
  await subscribe(bob, alice);
  const { id, next } = await enableResume(alice, 1);
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>unread</body></message>`);
  await expect(alice, 'unread', isBody('unread'), next);
  const bobMark = bob.c.items.length;
  alice.c.destroy();
  const ask = uid('ask');
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>meanwhile</body></message>`);
  bob.c.send(`<iq type='get' id='${ask}' to='${alice.jid}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await expect(bob, "alice's unavailable presence, after a second", isPresence(alice.jid, 'unavailable'), bobMark);
  const reply = await expect(bob, 'an error for the iq', (el) => el.name === 'iq' && el.attrs.id === ask, bobMark);
  t.is(reply.attrs.type, 'error');
  const late = await resume(t, alice.name, id, 0);
  t.true(isSm('failed')(late.answer) && Boolean(late.answer.getChild('item-not-found')), late.answer.toString());
  const fresh = await connect(t, server.c2sPort, alice.name, 'r');
  const mark = fresh.c.items.length;
  fresh.c.send('<presence/>');
  await expect(fresh, '"meanwhile", stored', isBody('meanwhile'), mark);
  await barrier(fresh, mark);
  t.deepEqual(bodies(fresh, mark, bob.jid), ['unread', 'meanwhile']);
});

test('a new login with the resource of a detached session replaces it (new-wins), and gets what it did not acknowledge', async (t) => {
  const alice = await user(t, 'replaced');
  const bob = await user(t, 'sayer');
  const { id, next } = await enableResume(alice);
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>kept</body></message>`);
  await expect(alice, 'kept', isBody('kept'), next);
  alice.c.destroy();
  const fresh = await connect(t, server.c2sPort, alice.name, 'r');
  t.is(fresh.jid, alice.jid);
  const mark = fresh.c.items.length;
  fresh.c.send('<presence/>');
  await expect(fresh, '"kept"', isBody('kept'), mark);
  await barrier(fresh, mark);
  t.deepEqual(bodies(fresh, mark, bob.jid), ['kept']);
  const old = await resume(t, alice.name, id, 0);
  t.true(isSm('failed')(old.answer) && Boolean(old.answer.getChild('item-not-found')), old.answer.toString());
});

test('resumed again and again, whichever worker the new connection lands on (others open meanwhile), nothing lost or repeated', async (t) => {
  const alice = await user(t, 'roamer');
  const bob = await user(t, 'steady');
  let { id } = await enableResume(alice);
  let peer: Peer = alice;
  let acked = 0;
  let base = alice.c.items.findIndex((it) => it.kind === 'el' && isSm('enabled')(it.el)) + 1;
  const sent: string[] = [];
  for (let round = 0; round < 4; round++) {
    // Connections of others move the least busy worker around.
    for (let i = 0; i < round; i++) await user(t, `filler${round}`);
    const body = `r${round}`;
    sent.push(body);
    bob.c.send(`<message to='${alice.jid}' type='chat'><body>${body}</body></message>`);
    await expect(peer, body, isBody(body), base);
    peer.c.destroy();
    const { c, answer } = await resume(t, alice.name, id, acked);
    t.true(isSm('resumed')(answer), `round ${round}: ${answer.toString()}`);
    peer = { c, jid: alice.jid, bare: alice.bare, name: alice.name };
    base = 0;
    // Nothing acknowledged so far: every message comes again on each stream, in order.
    await expect(peer, body, isBody(body));
    t.deepEqual(bodies(peer, 0, bob.jid), sent);
    // Acknowledged now: the next stream gets only what follows.
    acked = received(peer, 0) + acked;
    c.send(`<a xmlns='${NS_SM}' h='${acked}'/>`);
    sent.length = 0;
    id = answer.attrs.previd;
  }
  // Ended where it last moved to: what comes for it now is stored, wherever it is routed from (no loop between workers).
  peer.c.send('</stream:stream>');
  await within(peer.c.closed, WAIT, 'the stream closed');
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>later</body></message>`);
  t.deepEqual((await barrier(bob, bob.c.items.length)).filter((el) => el.attrs.type === 'error').map(String), []);
  const fresh = await connect(t, server.c2sPort, alice.name, 'r');
  const mark = fresh.c.items.length;
  fresh.c.send('<presence/>');
  await expect(fresh, '"later", stored', isBody('later'), mark);
});

test("client state indication starts over as active on the resumed stream (XEP-0352 §5.2): the contacts' presence it held comes then", async (t) => {
  const alice = await user(t, 'sleepy');
  const bob = await user(t, 'busy');
  await subscribe(alice, bob);
  const { id, next } = await enableResume(alice);
  alice.c.send(`<inactive xmlns='urn:xmpp:csi:0'/>`);
  await barrier(alice, next);
  bob.c.send(`<presence><show>away</show></presence>`);
  await expect(bob, 'its own presence', (el) => el.name === 'presence' && el.attrs.from === bob.jid && el.getChildText('show') === 'away');
  t.deepEqual((await barrier(alice, next)).filter((el) => el.name === 'presence'), [], 'held while inactive');
  alice.c.destroy();
  const { c, answer } = await resume(t, alice.name, id, 0);
  t.true(isSm('resumed')(answer), answer.toString());
  const again: Peer = { c, jid: alice.jid, bare: alice.bare, name: alice.name };
  const p = await expect(again, "bob's presence, held", (el) => el.name === 'presence' && el.attrs.from === bob.jid);
  t.is(p.getChildText('show'), 'away');
  // Active now: the next change comes at once.
  const mark = c.items.length;
  bob.c.send(`<presence><show>dnd</show></presence>`);
  await expect(again, "bob's next presence, at once", (el) => el.name === 'presence' && el.attrs.from === bob.jid && el.getChildText('show') === 'dnd', mark);
});

test('a connection idle past XMPP_IDLE_TIMEOUT_MS: a resumable session is told (connection-timeout) and only loses its connection; it resumes', async (t) => {
  const quiet = await startTestServer({ XMPP_IDLE_TIMEOUT_MS: '1000' });
  t.teardown(() => quiet.stop());
  const name = await newAccount(quiet, 'idler');
  const alice = await connect(t, quiet.c2sPort, name, 'r');
  const { id, next } = await enableResume(alice);
  // Silent from here: the sweep finds it idle.
  const err = await expect(alice, 'the stream error', (el) => el.name === 'stream:error', next);
  t.truthy(err.getChild('connection-timeout'));
  await within(alice.c.closed, WAIT, 'the connection closed');
  const { c } = await within(authenticated(quiet.c2sPort, name, `${name}-pw`), WAIT, 'authenticating again');
  t.teardown(() => c.destroy());
  c.send(`<resume xmlns='${NS_SM}' previd='${id}' h='0'/>`);
  const answer = await within(c.nextEl(), WAIT, 'the answer to <resume/>');
  t.true(isSm('resumed')(answer), answer.toString());
  const again: Peer = { ...alice, c };
  const pong = await barrier(again, 0);
  t.deepEqual(pong.filter((el) => el.name === 'stream:error'), [], 'the same session, live again');
});

test('a stream the client closed (</stream:stream>) ends the session, even when the connection ends right behind it: nothing to resume', async (t) => {
  const alice = await user(t, 'leaver');
  const bob = await user(t, 'stayer');
  await subscribe(bob, alice);
  const { id } = await enableResume(alice);
  const mark = bob.c.items.length;
  // Its closing tag and, right behind it, the end of the connection (the
  // server reads both before its presence is handled): a closed stream, not a lost one.
  alice.c.send(`<presence type='unavailable'/></stream:stream>`);
  alice.c.end();
  await expect(bob, "alice's unavailable presence", isPresence(alice.jid, 'unavailable'), mark);
  const late = await resume(t, alice.name, id, 0);
  t.true(isSm('failed')(late.answer) && Boolean(late.answer.getChild('item-not-found')), late.answer.toString());
});

test('a <resume/> with no previd is item-not-found; one whose h is not a count is a stream error (invalid-xml)', async (t) => {
  const name = await newAccount(server, 'sloppy');
  const { c } = await within(authenticated(server.c2sPort, name, `${name}-pw`), WAIT, 'authenticating');
  t.teardown(() => c.destroy());
  c.send(`<resume xmlns='${NS_SM}' h='0'/>`);
  const f = await within(c.nextEl(), WAIT, 'the answer to a resume without previd');
  t.true(isSm('failed')(f) && Boolean(f.getChild('item-not-found')), f.toString());
  c.send(`<resume xmlns='${NS_SM}' previd='x.y' h='-1'/>`);
  const err = await within(c.nextEl(), WAIT, 'the stream error');
  t.is(err.name, 'stream:error');
  t.truthy(err.getChild('invalid-xml'), err.toString());
});
