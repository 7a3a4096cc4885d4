// Instant messaging (RFC 6121 subscriptions and presence, XEP-0160 offline
// messages, XEP-0280 carbons) as seen by @xmpp/client, a real third-party
// client, on one node with two workers: consecutive logins land on
// alternating workers, so most exchanges cross a worker boundary.
//
// Every test uses fresh accounts. Nothing waits on time: each client records
// every stanza it receives, and a test waits for the one it expects with a
// bounded timeout. "Nothing else arrived" is checked behind a ping: a session
// handles its stanzas one at a time and finishes what one causes before the
// next, so the ping's answer comes after everything an earlier stanza of the
// same stream led to.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { Inbox, countIqReplies, kill, xmppClient } from '../helpers/xmpp-client.ts';
import type { Untyped } from '../helpers/xmpp-client.ts';
import type { XmppClient } from '../helpers/xmpp-client.ts';
import { uid, within } from '../helpers/protocol.ts';
import { NS_CARBONS, NS_DELAY, NS_ROSTER, STAMP, WAIT, checkCarbon, fresh, isCarbon, isPresence, isPush, rosterItem, summary } from '../helpers/im.ts';

let server: TestServer;

test.before(async () => {
  // @xmpp/client asks for resumption (XEP-0198): a killed client's session waits this long for it:
  // long enough for a loaded machine's reconnection (TLS, SCRAM) to resume in time (1 s was not, under
  // a full test run), short enough for the test that waits for the session to end.
  server = await startTestServer({ XMPP_WORKERS: '2', XMPP_SM_RESUME_TIMEOUT_MS: '4000' });
});
test.after.always(async () => {
  await server?.stop();
});

interface User {
  xmpp: XmppClient;
  inbox: Inbox;
  name: string;
  jid: string;
  bare: string;
}

/** Logs in an existing account with @xmpp/client; roster pushes are acknowledged as a client must (RFC 6121 §2.1.6). */
async function connect(t: ExecutionContext, name: string, resource = 'r'): Promise<User> {
  const xmpp = xmppClient(server, { username: name, password: `${name}-pw`, resource });
  xmpp.reconnect.stop();
  const inbox = new Inbox(xmpp);
  (xmpp as Untyped).iqCallee.set(NS_ROSTER, 'query', () => true);
  t.teardown(() => kill(xmpp));
  countIqReplies(xmpp);
  await within(xmpp.start(), WAIT, `${name}/${resource} logging in`);
  const jid = xmpp.jid!.toString();
  t.is(jid, `${name}@localhost/${resource}`);
  return { xmpp, inbox, name, jid, bare: jid.split('/')[0] };
}

async function account(base: string): Promise<string> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  return name;
}

/** A new account, logged in, with its roster requested and initial presence sent. */
async function user(t: ExecutionContext, base: string, resource = 'r'): Promise<User> {
  const u = await connect(t, await account(base), resource);
  await ready(u);
  return u;
}

function expect(u: User, what: string, pred: (el: Element) => boolean, from = 0): Promise<Element> {
  return within(u.inbox.find(pred, from), WAIT, `${u.jid}: ${what}`);
}

async function rosterGet(u: User): Promise<Element[]> {
  const r = await within(u.xmpp.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: NS_ROSTER }))), WAIT, `${u.jid}: roster get`);
  return r.getChild('query', NS_ROSTER)!.getChildren('item');
}

/** Requests the roster (an "interested resource") and sends initial presence; waits for its echo (§4.2.2). */
async function ready(u: User, presence = xml('presence')): Promise<Element[]> {
  const items = await rosterGet(u);
  const from = u.inbox.length;
  await u.xmpp.send(presence);
  await expect(u, 'its own initial presence', isPresence(u.jid), from);
  return items;
}

/** Waits for a roster push about `jid` in the given state; checks it comes from the account itself. Returns the index after it. */
async function push(t: ExecutionContext, u: User, jid: string, subscription: string, ask: string | undefined, from: number): Promise<number> {
  const el = await expect(u, `roster push for ${jid} (${subscription}${ask ? `, ask=${ask}` : ''})`, (e) => isPush(jid)(e) && rosterItem(e)!.attrs.subscription === subscription && rosterItem(e)!.attrs.ask === ask, from);
  t.true(el.attrs.from === undefined || el.attrs.from === u.bare, `a push comes from the account: ${el.toString()}`);
  return u.inbox.els.indexOf(el) + 1;
}

/** Stanzas received from index `from` up to the answer of a ping sent now. */
async function barrier(u: User, from: number): Promise<Element[]> {
  const reply = await within(u.xmpp.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' }))), WAIT, `${u.jid}: barrier ping`);
  const end = u.inbox.els.indexOf(reply);
  return u.inbox.els.slice(from, end === -1 ? undefined : end);
}

const presence = (attrs: Record<string, string>, ...children: Element[]) => xml('presence', attrs, ...children);

/** a subscribes to b's presence and b approves; both online and ready. */
async function subscribe(t: ExecutionContext, a: User, b: User): Promise<void> {
  const [af, bf] = [a.inbox.length, b.inbox.length];
  await a.xmpp.send(presence({ to: b.bare, type: 'subscribe' }));
  await expect(b, `${a.bare}'s request`, isPresence(a.bare, 'subscribe'), bf);
  await b.xmpp.send(presence({ to: a.bare, type: 'subscribed' }));
  await expect(a, 'approval', isPresence(b.bare, 'subscribed'), af);
  await expect(a, `${b.jid}'s presence`, isPresence(b.jid), af);
  t.pass();
}

test('subscription handshake, one way then the other: both rosters end in "both" (RFC 6121 §3.1)', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob');
  let [a, b] = [alice.inbox.length, bob.inbox.length];

  await alice.xmpp.send(presence({ to: bob.bare, type: 'subscribe' }));
  a = await push(t, alice, bob.bare, 'none', 'subscribe', a);
  const req = await expect(bob, 'subscription request', isPresence(alice.bare, 'subscribe'), b);
  t.is(req.attrs.to, bob.bare, 'stamped with bare JIDs');
  t.deepEqual(summary(await rosterGet(alice)), [[bob.bare, 'none', 'subscribe']]);

  b = bob.inbox.length;
  await bob.xmpp.send(presence({ to: alice.bare, type: 'subscribed' }));
  b = await push(t, bob, alice.bare, 'from', undefined, b);
  await push(t, alice, bob.bare, 'to', undefined, a);
  await expect(alice, 'subscribed', isPresence(bob.bare, 'subscribed'), a);
  const p = await expect(alice, "bob's presence after approving", isPresence(bob.jid), a);
  t.is(p.attrs.to, alice.bare);
  t.deepEqual(summary(await rosterGet(alice)), [[bob.bare, 'to', undefined]]);
  t.deepEqual(summary(await rosterGet(bob)), [[alice.bare, 'from', undefined]]);

  a = alice.inbox.length;
  await bob.xmpp.send(presence({ to: alice.bare, type: 'subscribe' }));
  b = await push(t, bob, alice.bare, 'from', 'subscribe', b);
  await expect(alice, "bob's request", isPresence(bob.bare, 'subscribe'), a);
  await alice.xmpp.send(presence({ to: bob.bare, type: 'subscribed' }));
  await push(t, alice, bob.bare, 'both', undefined, a);
  await push(t, bob, alice.bare, 'both', undefined, b);
  await expect(bob, 'subscribed', isPresence(alice.bare, 'subscribed'), b);
  await expect(bob, "alice's presence after approving", isPresence(alice.jid), b);

  t.deepEqual(summary(await rosterGet(alice)), [[bob.bare, 'both', undefined]]);
  t.deepEqual(summary(await rosterGet(bob)), [[alice.bare, 'both', undefined]]);
});

test('crossing requests: both subscribe before either answers, then both approve: "both" on both sides (Appendix A)', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob');
  const [a, b] = [alice.inbox.length, bob.inbox.length];

  await Promise.all([alice.xmpp.send(presence({ to: bob.bare, type: 'subscribe' })), bob.xmpp.send(presence({ to: alice.bare, type: 'subscribe' }))]);
  await push(t, alice, bob.bare, 'none', 'subscribe', a);
  await push(t, bob, alice.bare, 'none', 'subscribe', b);
  await expect(alice, "bob's request", isPresence(bob.bare, 'subscribe'), a);
  await expect(bob, "alice's request", isPresence(alice.bare, 'subscribe'), b);
  // Both requests are pending in both directions.
  t.deepEqual(summary(await rosterGet(alice)), [[bob.bare, 'none', 'subscribe']]);
  t.deepEqual(summary(await rosterGet(bob)), [[alice.bare, 'none', 'subscribe']]);

  const [a2, b2] = [alice.inbox.length, bob.inbox.length];
  await Promise.all([alice.xmpp.send(presence({ to: bob.bare, type: 'subscribed' })), bob.xmpp.send(presence({ to: alice.bare, type: 'subscribed' }))]);
  await push(t, alice, bob.bare, 'both', undefined, a2);
  await push(t, bob, alice.bare, 'both', undefined, b2);
  await expect(alice, 'subscribed', isPresence(bob.bare, 'subscribed'), a2);
  await expect(bob, 'subscribed', isPresence(alice.bare, 'subscribed'), b2);
  await expect(alice, "bob's presence", isPresence(bob.jid), a2);
  await expect(bob, "alice's presence", isPresence(alice.jid), b2);
  t.deepEqual(summary(await rosterGet(alice)), [[bob.bare, 'both', undefined]]);
  t.deepEqual(summary(await rosterGet(bob)), [[alice.bare, 'both', undefined]]);
});

test('a request to an offline user is kept; at login and presence it arrives, and the approval reaches the requester with presence (§3.1.3)', async (t) => {
  const alice = await user(t, 'alice');
  const carolName = await account('carol');
  const carolBare = `${carolName}@localhost`;
  let a = alice.inbox.length;
  await alice.xmpp.send(presence({ to: carolBare, type: 'subscribe' }, xml('status', {}, 'alice here')));
  a = await push(t, alice, carolBare, 'none', 'subscribe', a);

  const carol = await connect(t, carolName, 'desk');
  const roster = await ready(carol);
  t.deepEqual(roster, [], 'a pending request is not a roster item');
  const req = await expect(carol, "alice's kept request", isPresence(alice.bare, 'subscribe'));
  t.is(req.attrs.to, carolBare);
  t.is(req.getChildText('status'), 'alice here', 'the request keeps its content');

  const c = carol.inbox.length;
  await carol.xmpp.send(presence({ to: alice.bare, type: 'subscribed' }));
  await push(t, carol, alice.bare, 'from', undefined, c);
  await push(t, alice, carolBare, 'to', undefined, a);
  await expect(alice, 'subscribed', isPresence(carolBare, 'subscribed'), a);
  const p = await expect(alice, "carol's presence", isPresence(carol.jid), a);
  t.is(p.attrs.to, alice.bare);
  t.deepEqual(summary(await rosterGet(alice)), [[carolBare, 'to', undefined]]);
});

test("two resources and a contact: presence reaches both, a new resource gets the contact's presence, roster pushes reach both (§2.1.6, §4.2, §4.4)", async (t) => {
  const alice = await user(t, 'alice', 'one');
  const bob = await user(t, 'bob');
  await subscribe(t, alice, bob);
  await subscribe(t, bob, alice);

  const [a1, b] = [alice.inbox.length, bob.inbox.length];
  const alice2 = await connect(t, alice.name, 'two');
  const fromStart = alice2.inbox.length;
  await ready(alice2);
  // §4.2.2: the probe is answered to the new resource; its sibling's presence comes too.
  const probed = await expect(alice2, "bob's presence at login", isPresence(bob.jid), fromStart);
  t.is(probed.attrs.to, alice2.jid, 'a probe is answered to the probing full JID');
  await expect(alice2, "alice/one's presence", isPresence(alice.jid), fromStart);
  await expect(alice, "alice/two's initial presence", isPresence(alice2.jid), a1);
  await expect(bob, "alice/two's initial presence", isPresence(alice2.jid), b);

  const [x1, x2] = [alice.inbox.length, alice2.inbox.length];
  await bob.xmpp.send(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, 'busy')));
  for (const [u, from] of [[alice, x1], [alice2, x2]] as const) {
    const el = await expect(u, "bob's dnd", (e) => isPresence(bob.jid)(e) && e.getChildText('show') === 'dnd', from);
    t.is(el.getChildText('status'), 'busy');
    t.is(el.attrs.to, alice.bare);
  }

  // A roster set on one resource is pushed to every interested resource.
  const [y1, y2] = [alice.inbox.length, alice2.inbox.length];
  const set = await within(
    alice.xmpp.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: bob.bare, name: 'Bobby' }, xml('group', {}, 'Friends'))))),
    WAIT,
    'roster set',
  );
  t.is(set.attrs.type, 'result');
  for (const [u, from] of [[alice, y1], [alice2, y2]] as const) {
    const el = await expect(u, 'roster push of the new name', (e) => isPush(bob.bare)(e) && rosterItem(e)!.attrs.name === 'Bobby', from);
    const item = rosterItem(el)!;
    t.is(item.attrs.subscription, 'both');
    t.deepEqual(item.getChildren('group').map((g) => g.getText()), ['Friends']);
  }
  const items = await rosterGet(alice2);
  t.deepEqual(items.map((i) => [i.attrs.jid, i.attrs.name, i.attrs.subscription, i.getChildText('group')]), [[bob.bare, 'Bobby', 'both', 'Friends']]);
});

test('a connection killed without a word (no </stream:stream>, no unavailable): once its session is not resumed in time (XEP-0198), the subscribers get unavailable presence, once (§4.5.2)', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob', 'doomed');
  await subscribe(t, alice, bob);
  const a = alice.inbox.length;
  kill(bob.xmpp);
  const gone = await expect(alice, "bob's unavailable", isPresence(bob.jid, 'unavailable'), a);
  t.is(gone.attrs.to, alice.bare);
  t.not(bob.xmpp.status, 'online', 'the killed client knows it is disconnected');
  const after = await barrier(alice, a);
  t.is(after.filter(isPresence(bob.jid, 'unavailable')).length, 1, 'unavailable once');
});

test('stream resumption (XEP-0198 §5): killed and reconnecting, @xmpp/client resumes its session and gets what was sent meanwhile, once; contacts see nothing', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob', 'roaming');
  await subscribe(t, alice, bob);
  const sm = (bob.xmpp as Untyped).streamManagement as Untyped['streamManagement'] & { id: string; on(ev: string, f: () => void): void };
  t.truthy(sm.id, 'resumption enabled');
  t.teardown(() => bob.xmpp.reconnect.stop());
  bob.xmpp.reconnect.delay = 50;
  bob.xmpp.reconnect.start();
  const resumed = new Promise<void>((r) => sm.on('resumed', r));
  const a = alice.inbox.length;
  kill(bob.xmpp);
  await alice.xmpp.send(xml('message', { to: bob.jid, type: 'chat', id: 'away' }, xml('body', {}, 'while you were away')));
  await within(resumed, WAIT, 'resumed');
  bob.inbox.closed = false; // the same session, on a new connection
  await expect(bob, 'the message sent meanwhile', (el) => el.name === 'message' && el.attrs.id === 'away');
  t.is(bob.xmpp.jid!.toString(), bob.jid);
  t.is((await barrier(bob, 0)).filter((el) => el.name === 'message' && el.attrs.id === 'away').length, 1, 'once');
  t.deepEqual((await barrier(alice, a)).filter(isPresence(bob.jid, 'unavailable')), [], "alice never saw bob leave");
});

test('offline messages: kept while away, delivered at the next available presence in order, once, with a delay stamp (XEP-0160, XEP-0203)', async (t) => {
  const alice = await user(t, 'alice');
  const daveName = await account('dave');
  const daveBare = `${daveName}@localhost`;
  const bodies = ['first', 'second: ünïcödé 🎉', 'third & <last>'];
  const ids = bodies.map(() => uid('off'));
  const sentAt = Date.now();
  const start = alice.inbox.length;
  for (const [i, body] of bodies.entries()) await alice.xmpp.send(xml('message', { to: daveBare, type: 'chat', id: ids[i] }, xml('body', {}, body)));
  t.deepEqual((await barrier(alice, start)).map((el) => el.toString()), [], 'stored without an error to the sender');

  const dave = await connect(t, daveName, 'phone');
  t.deepEqual((await barrier(dave, 0)).filter((el) => el.name === 'message'), [], 'nothing before available presence');
  const d = dave.inbox.length;
  await dave.xmpp.send(xml('presence'));
  await expect(dave, 'the last offline message', (el) => el.name === 'message' && el.attrs.id === ids[2], d);
  const receivedAt = Date.now();
  const got = (await barrier(dave, d)).filter((el) => el.name === 'message');
  t.deepEqual(got.map((m) => m.attrs.id), ids, 'all, in the order sent, each once');
  let last = 0;
  for (const [i, m] of got.entries()) {
    t.is(m.attrs.from, alice.jid);
    t.is(m.getChildText('body'), bodies[i]);
    const delays = m.getChildren('delay', NS_DELAY);
    t.is(delays.length, 1, m.toString());
    t.is(delays[0]?.attrs.from, 'localhost', 'stamped by the domain');
    const stamp = delays[0]?.attrs.stamp ?? '';
    t.regex(stamp, STAMP);
    const at = Date.parse(stamp);
    t.true(at >= sentAt - 1000 && at <= receivedAt, `stamp ${stamp} is when it was stored`);
    t.true(at >= last, 'stamps in order');
    last = at;
  }

  // Delivered once: a later login gets none of them.
  await within(dave.xmpp.stop(), WAIT, 'dave logging out');
  const again = await connect(t, daveName, 'laptop');
  const g = again.inbox.length;
  await again.xmpp.send(xml('presence'));
  await expect(again, 'own presence', isPresence(again.jid), g);
  t.deepEqual((await barrier(again, g)).filter((el) => el.name === 'message').map((m) => m.toString()), [], 'a second login gets nothing');
});

test('carbons: a chat sent by one resource reaches the other as <sent/>, one received by it as <received/> (XEP-0280)', async (t) => {
  const erin = await user(t, 'erin', 'phone');
  const erin2 = await connect(t, erin.name, 'laptop');
  await ready(erin2);
  const frank = await user(t, 'frank');
  for (const u of [erin, erin2]) {
    const r = await within(u.xmpp.iqCaller.request(xml('iq', { type: 'set' }, xml('enable', { xmlns: NS_CARBONS }))), WAIT, `${u.jid}: enabling carbons`);
    t.is(r.attrs.type, 'result');
  }

  const [e1, e2, f] = [erin.inbox.length, erin2.inbox.length, frank.inbox.length];
  await erin.xmpp.send(xml('message', { to: frank.jid, type: 'chat', id: 'c-sent' }, xml('body', {}, 'from the phone')));
  const m = await expect(frank, 'the chat', (el) => el.name === 'message' && el.attrs.id === 'c-sent', f);
  t.is(m.attrs.from, erin.jid);
  const sent = await expect(erin2, '<sent/> carbon', isCarbon('sent'), e2);
  const inner = checkCarbon(t, sent, 'sent', { from: erin.bare, to: erin2.jid }, { from: erin.jid, to: frank.jid, body: 'from the phone' });
  t.is(inner?.attrs.id, 'c-sent');

  await frank.xmpp.send(xml('message', { to: erin.jid, type: 'chat', id: 'c-recv' }, xml('body', {}, 'to the phone')));
  const direct = await expect(erin, 'the answer', (el) => el.name === 'message' && el.attrs.id === 'c-recv', e1);
  t.falsy(direct.getChild('received', NS_CARBONS), 'the addressee gets the message itself');
  const received = await expect(erin2, '<received/> carbon', isCarbon('received'), e2);
  checkCarbon(t, received, 'received', { from: erin.bare, to: erin2.jid }, { from: frank.jid, to: erin.jid, body: 'to the phone' });
  // The sending resource gets no copy of its own message.
  t.false((await barrier(erin, e1)).some((el) => Boolean(el.getChild('sent', NS_CARBONS) ?? el.getChild('received', NS_CARBONS))), 'no carbon to the resource involved');
});
