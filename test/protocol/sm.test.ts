// XEP-0198 Stream Management over real streams, acknowledgements (for
// resumption, see resume.test.ts): the feature after authentication,
// <enable/> and its failures, counting both ways, the server's own ack
// requests, and what the feature is for: a connection that dies without a
// word loses nothing the client did not acknowledge, which goes to offline
// storage instead.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { authenticated, bind, pingIq, secured, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, newAccount, newUser, NS_SM, isSm } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { countSince } from '../../src/session/session.ts';

const MAX_OUTBOUND = 65536;
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_MAX_OUTBOUND_BYTES: String(MAX_OUTBOUND) });
});
test.after.always(async () => {
  await server?.stop();
});


const user = (t: ExecutionContext, base: string, resource = 'r') => newUser(t, server, base, resource);
const account = (base: string) => newAccount(server, base);

const isStanza = (el: Element) => el.name === 'message' || el.name === 'presence' || el.name === 'iq';
const isMessage = (from: string, body: string) => (el: Element) => el.name === 'message' && el.attrs.from === from && el.getChildText('body') === body;

/** Enables acknowledgements; returns the index after <enabled/>. */
async function enable(p: Peer): Promise<number> {
  const from = p.c.items.length;
  p.c.send(`<enable xmlns='${NS_SM}'/>`);
  const el = await expect(p, '<enabled/>', isSm('enabled'), from);
  return p.c.items.findIndex((it) => it.kind === 'el' && it.el === el) + 1;
}

/** Stanzas received on p's stream from index `from`. */
const stanzasFrom = (p: Peer, from: number) => p.c.items.slice(from).filter((it) => it.kind === 'el' && isStanza(it.el)).length;

test('the countdown is mod 2^32 (§4)', (t) => {
  t.is(countSince(5, 2), 3);
  t.is(countSince(2, 0xfffffffe), 4, 'across the wrap');
  t.is(countSince(0, 0xffffffff), 1);
  t.is(countSince(7, 7), 0);
});

test('offered after authentication, not before (§3)', async (t) => {
  const { c, features } = await within(secured(server.c2sPort), WAIT, 'a secured stream');
  t.teardown(() => c.destroy());
  t.falsy(features.getChild('sm', NS_SM));
  // §3, §5: enabling or resuming before authentication is unexpected, and the stream goes on.
  for (const req of [`<enable xmlns='${NS_SM}'/>`, `<resume xmlns='${NS_SM}' previd='x' h='0'/>`]) {
    c.send(req);
    const f = await within(c.nextEl(), WAIT, `<failed/> to ${req}`);
    t.true(isSm('failed')(f) && Boolean(f.getChild('unexpected-request')), f.toString());
  }
  const name = await account('feat');
  const after = await within(authenticated(server.c2sPort, name, `${name}-pw`), WAIT, 'authentication');
  t.teardown(() => after.c.destroy());
  t.truthy(after.features.getChild('sm', NS_SM));
  // Before binding: <enable/> fails (unexpected-request), <resume/> of an unknown session fails (item-not-found); binding still works.
  after.c.send(`<enable xmlns='${NS_SM}'/>`);
  const f1 = await within(after.c.nextEl(), WAIT, '<failed/> to an early enable');
  t.true(isSm('failed')(f1) && Boolean(f1.getChild('unexpected-request')), f1.toString());
  after.c.send(`<resume xmlns='${NS_SM}' previd='nothing-here' h='0'/>`);
  const f2 = await within(after.c.nextEl(), WAIT, '<failed/> to a resume');
  t.true(isSm('failed')(f2) && Boolean(f2.getChild('item-not-found')), f2.toString());
  const bound = await within(bind(after.c, 'r'), WAIT, 'bind after the failures');
  t.is(bound.attrs.type, 'result');
});

test('enable once: <enabled/> without resumption unless asked for; a second <enable/> fails (unexpected-request)', async (t) => {
  const p = await user(t, 'en');
  const next = await enable(p);
  const enabled = p.c.items[next - 1];
  t.true(enabled.kind === 'el' && enabled.el.attrs.resume === undefined && enabled.el.attrs.id === undefined, 'no resumption offered');
  p.c.send(`<enable xmlns='${NS_SM}'/>`);
  const f = await expect(p, '<failed/>', isSm('failed'), next);
  t.truthy(f.getChild('unexpected-request'));
});

test('<r/> before enabling is not accepted (a stream error), as any unknown element', async (t) => {
  const p = await user(t, 'early');
  const from = p.c.items.length;
  p.c.send(`<r xmlns='${NS_SM}'/>`);
  const err = await expect(p, 'the stream error', (el) => el.name === 'stream:error', from);
  t.truthy(err.getChild('unsupported-stanza-type'));
});

test("counting both ways: the server answers <r/> with the stanzas it handled, and asks for the client's count after five", async (t) => {
  const p = await user(t, 'count');
  const from = await enable(p);
  for (let i = 0; i < 3; i++) p.c.send(pingIq(uid('ping')));
  p.c.send(`<r xmlns='${NS_SM}'/>`);
  const a = await expect(p, '<a/>', isSm('a'), from);
  t.is(a.attrs.h, '3');
  // Two more answers make five stanzas sent since <enabled/>: the server asks.
  for (let i = 0; i < 2; i++) p.c.send(pingIq(uid('ping')));
  const r = await expect(p, '<r/> from the server', isSm('r'), from);
  const upTo = p.c.items.findIndex((it) => it.kind === 'el' && it.el === r);
  const sent = p.c.items.slice(from, upTo).filter((it) => it.kind === 'el' && isStanza(it.el)).length;
  t.is(sent, 5);
  p.c.send(`<a xmlns='${NS_SM}' h='${sent}'/>`);
  // Accepted: the stream goes on, with no error.
  const after = await barrier(p, p.c.items.length);
  t.deepEqual(after.filter((el) => el.name === 'stream:error'), []);
});

test('an ack for more than was sent is a stream error (undefined-condition)', async (t) => {
  const p = await user(t, 'toohigh');
  const from = await enable(p);
  p.c.send(`<a xmlns='${NS_SM}' h='1000'/>`);
  const err = await expect(p, 'the stream error', (el) => el.name === 'stream:error', from);
  t.truthy(err.getChild('undefined-condition'));
  // §4: with what the server sent so far (nothing since <enabled/>).
  t.deepEqual(err.getChild('handled-count-too-high', NS_SM)?.attrs, { xmlns: NS_SM, h: '1000', 'send-count': '0' });
});

test('a connection that dies without a word loses nothing unacknowledged: it is stored, and comes at the next login', async (t) => {
  const alice = await user(t, 'phone');
  const bob = await user(t, 'friend');
  const from = await enable(alice);
  for (const body of ['one', 'two', 'three']) bob.c.send(`<message to='${alice.jid}' type='chat'><body>${body}</body></message>`);
  await expect(alice, 'three', isMessage(bob.jid, 'three'), from);
  t.is(stanzasFrom(alice, from), 3, 'nothing else was sent since <enabled/>');
  // The client read all three, acknowledges the first only, and its network goes.
  alice.c.send(`<a xmlns='${NS_SM}' h='1'/>`);
  await barrier(alice, alice.c.items.length);
  alice.c.destroy();

  const again = await connect(t, server.c2sPort, alice.name, 'laptop');
  const mark = again.c.items.length;
  again.c.send('<presence/>');
  await expect(again, '"three", from offline storage', isMessage(bob.jid, 'three'), mark);
  const got = again.c.items.slice(mark).flatMap((it) => (it.kind === 'el' && it.el.name === 'message' ? [it.el.getChildText('body')] : []));
  t.deepEqual(got, ['two', 'three'], 'what was not acknowledged, in order, once');
});

test('a client that never acknowledges is cut off past the outbound bound, and what it did not acknowledge is stored', async (t) => {
  const alice = await user(t, 'lazy');
  const bob = await user(t, 'chatty');
  const from = await enable(alice);
  const body = 'z'.repeat(4000);
  const n = Math.ceil((2 * MAX_OUTBOUND) / body.length);
  for (let i = 0; i < n; i++) bob.c.send(`<message to='${alice.jid}' type='chat' id='z${i}'><body>${body}</body></message>`);
  await within(alice.c.closed, WAIT, 'the end of the connection');
  // Cut for the unacknowledged bound (policy-violation), or, if the client
  // happened to read slower than they came, as a slow reader (no error).
  const err = alice.c.items.slice(from).find((it) => it.kind === 'el' && it.el.name === 'stream:error');
  if (err && err.kind === 'el') t.truthy(err.el.getChild('policy-violation'), err.el.toString());

  const again = await connect(t, server.c2sPort, alice.name, 'fresh');
  const mark = again.c.items.length;
  again.c.send('<presence/>');
  for (let i = 0; i < n; i++) await expect(again, `z${i}, stored`, (el) => el.name === 'message' && el.attrs.id === `z${i}`, mark);
  await barrier(again, mark);
  const ids = again.c.items.slice(mark).flatMap((it) => (it.kind === 'el' && it.el.name === 'message' ? [it.el.attrs.id] : []));
  // Every one, once. (Those sent once the cut session had left the registry
  // may be stored ahead of the ones it held: see the README's limits.)
  t.deepEqual([...ids].sort(), Array.from({ length: n }, (_, i) => `z${i}`).sort(), 'every message, none acknowledged, once');
});

test('offline messages leave the store only once acknowledged: what was read but not acknowledged comes again at the next login', async (t) => {
  const name = await account('away');
  const bob = await user(t, 'sender');
  for (const body of ['first', 'second']) bob.c.send(`<message to='${name}@localhost' type='chat'><body>${body}</body></message>`);
  await barrier(bob, bob.c.items.length); // stored

  const alice = await connect(t, server.c2sPort, name, 'phone');
  const from = await enable(alice);
  alice.c.send('<presence/>');
  await expect(alice, 'second', isMessage(bob.jid, 'second'), from);
  const firstAt = alice.c.items.findIndex((it, i) => i >= from && it.kind === 'el' && isMessage(bob.jid, 'first')(it.el));
  // Everything up to and including "first" is acknowledged; "second" is read, not acknowledged.
  alice.c.send(`<a xmlns='${NS_SM}' h='${stanzasFrom(alice, from) - stanzasFrom(alice, firstAt + 1)}'/>`);
  await barrier(alice, alice.c.items.length);
  alice.c.destroy();

  const again = await connect(t, server.c2sPort, name, 'laptop');
  const mark = again.c.items.length;
  again.c.send('<presence/>');
  await expect(again, '"second" again', isMessage(bob.jid, 'second'), mark);
  await barrier(again, mark);
  const got = again.c.items.slice(mark).flatMap((it) => (it.kind === 'el' && it.el.name === 'message' ? [it.el.getChildText('body')] : []));
  t.deepEqual(got, ['second'], 'the acknowledged one is gone, the other is still stored');
});
