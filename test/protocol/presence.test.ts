// Presence subscriptions and presence (RFC 6121 §3, §4, Appendix A), message
// delivery by priority (§8.5) and carbons (XEP-0280), over raw streams on
// one node with two workers: every client of a test is a fresh account, and
// consecutive logins land on alternating workers, so most exchanges cross a
// worker boundary.
//
// "Nothing else arrived" is checked behind a ping: a session handles its
// stanzas one at a time and finishes what one causes before the next, so
// the ping's answer comes after everything an earlier stanza led to on the
// same stream.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import type { RawClient } from '../helpers/raw.ts';
import { online, pingIq, stanzaError, uid, within, NS_DISCO_INFO } from '../helpers/protocol.ts';

const NS_ROSTER = 'jabber:iq:roster';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const WAIT = 10_000;

let server: TestServer;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

interface Peer {
  c: RawClient;
  jid: string;
  bare: string;
  name: string;
}

let n = 0;
/** A fresh account name for this test run. */
const fresh = (base: string) => `${base}${++n}x${process.pid}`;

async function connect(t: ExecutionContext, name: string, resource = 'r'): Promise<Peer> {
  const { c, jid } = await within(online(server.c2sPort, name, `${name}-pw`, resource), WAIT, `${name} logging in`);
  t.teardown(() => c.destroy());
  return { c, jid, bare: jid.split('/')[0], name };
}

/** A new account, logged in; with `ready`, it requested its roster (gets pushes) and is available. */
async function user(t: ExecutionContext, base: string, opts: { resource?: string; ready?: boolean } = {}): Promise<Peer> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const p = await connect(t, name, opts.resource);
  if (opts.ready !== false) await ready(p);
  return p;
}

/** Requests the roster (RFC 6121 §2.1.3) and sends initial presence; waits for its echo (§4.2.2). */
async function ready(p: Peer, presence = '<presence/>'): Promise<Element> {
  const id = uid('roster');
  const r = await within(p.c.request(`<iq type='get' id='${id}'><query xmlns='${NS_ROSTER}'/></iq>`, id), WAIT, 'roster');
  if (r.attrs.type !== 'result') throw new Error(r.toString());
  const from = p.c.items.length;
  p.c.send(presence);
  await within(p.c.find((el) => el.name === 'presence' && el.attrs.from === p.jid, from), WAIT, `${p.jid}'s own presence echo`);
  return r.getChild('query', NS_ROSTER)!;
}

/** The first element on p's stream from index `from` that matches. */
function expect(p: Peer, what: string, pred: (el: Element) => boolean, from = 0): Promise<Element> {
  return within(p.c.find(pred, from), WAIT, `${p.jid}: ${what}`);
}

const isPush = (jid: string) => (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && el.getChild('query', NS_ROSTER)?.getChild('item')?.attrs.jid === jid;
const pushItem = (el: Element) => el.getChild('query', NS_ROSTER)!.getChild('item')!;
const isPresence = (from: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from === from && el.attrs.type === type;

/** Waits for a roster push about `jid` and checks its state (RFC 6121 §2.1.6); answers it. */
async function push(t: ExecutionContext, p: Peer, jid: string, subscription: string, ask: string | undefined, from = 0): Promise<number> {
  const el = await expect(p, `roster push for ${jid} (${subscription}${ask ? ` ask=${ask}` : ''})`, (e) => isPush(jid)(e) && pushItem(e).attrs.subscription === subscription && pushItem(e).attrs.ask === ask, from);
  t.false('from' in el.attrs, 'a push comes from the account itself (no from)');
  p.c.send(`<iq type='result' id='${el.attrs.id}'/>`);
  return p.c.items.findIndex((it) => it.kind === 'el' && it.el === el) + 1;
}

/** Elements received after index `from` up to the answer of a ping sent now. */
async function barrier(p: Peer, from: number): Promise<Element[]> {
  const id = uid('barrier');
  const reply = await within(p.c.request(pingIq(id), id), WAIT, 'barrier ping');
  const items = p.c.items;
  const end = items.findIndex((it) => it.kind === 'el' && it.el === reply);
  return items.slice(from, end).flatMap((it) => (it.kind === 'el' ? [it.el] : []));
}

async function rosterOf(p: Peer): Promise<Element[]> {
  const id = uid('roster');
  const r = await within(p.c.request(`<iq type='get' id='${id}'><query xmlns='${NS_ROSTER}'/></iq>`, id), WAIT, 'roster');
  return r.getChild('query', NS_ROSTER)!.getChildren('item');
}

/** a subscribes to b's presence and b approves: both online, both ready. */
async function subscribe(t: ExecutionContext, a: Peer, b: Peer): Promise<void> {
  const aFrom = a.c.items.length;
  const bFrom = b.c.items.length;
  a.c.send(`<presence to='${b.bare}' type='subscribe'/>`);
  await expect(b, 'subscription request', isPresence(a.bare, 'subscribe'), bFrom);
  b.c.send(`<presence to='${a.bare}' type='subscribed'/>`);
  await expect(a, 'approval', isPresence(b.bare, 'subscribed'), aFrom);
  await expect(a, `${b.jid}'s presence`, isPresence(b.jid), aFrom);
}

test('subscription handshake, both online: states, pushes and presence on both sides (RFC 6121 §3.1)', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob');
  let a = alice.c.items.length;
  let b = bob.c.items.length;

  // §3.1.1–§3.1.3: the request; the server stamps the bare JIDs.
  alice.c.send(`<presence to='${bob.jid}' type='subscribe' id='sub1'><status>it is alice</status></presence>`);
  a = await push(t, alice, bob.bare, 'none', 'subscribe', a);
  const req = await expect(bob, 'subscribe', isPresence(alice.bare, 'subscribe'), b).catch((e) => { console.log(bob.c.buffer, '\n---\n', alice.c.buffer); throw e; });
  t.is(req.attrs.to, bob.bare, 'addressed to the bare JID');
  t.is(req.getChildText('status'), 'it is alice', 'the request keeps its content');
  t.deepEqual(await barrier(bob, b).then((els) => els.filter((e) => isPush(alice.bare)(e))), [], 'no roster push for a pending-in request');

  // §3.1.5, §3.1.6: approval: both rosters change, the approver's presence follows.
  b = bob.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  await push(t, bob, alice.bare, 'from', undefined, b);
  await push(t, alice, bob.bare, 'to', undefined, a);
  await expect(alice, 'subscribed', isPresence(bob.bare, 'subscribed'));
  const p = await expect(alice, "bob's presence", isPresence(bob.jid));
  t.is(p.attrs.to, alice.bare);

  // And the other way: both.
  b = bob.c.items.length;
  a = alice.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, 'subscribe', isPresence(bob.bare, 'subscribe'), a);
  alice.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  await push(t, alice, bob.bare, 'both', undefined, a);
  await push(t, bob, alice.bare, 'both', undefined, b);
  await expect(bob, "alice's presence", isPresence(alice.jid), b);
  t.deepEqual((await rosterOf(alice)).map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.ask]), [[bob.bare, 'both', undefined]]);
  t.deepEqual((await rosterOf(bob)).map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.ask]), [[alice.bare, 'both', undefined]]);

  // §4.4: an update reaches the subscriber.
  b = bob.c.items.length;
  alice.c.send(`<presence><show>away</show><status>lunch</status></presence>`);
  const away = await expect(bob, 'away', (el) => isPresence(alice.jid)(el) && el.getChildText('show') === 'away', b);
  t.is(away.getChildText('status'), 'lunch');

  // §4.5.2: a session that just disconnects is unavailable all the same.
  a = alice.c.items.length;
  bob.c.destroy();
  const gone = await expect(alice, "bob's unavailable", isPresence(bob.jid, 'unavailable'), a);
  t.is(gone.attrs.to, alice.bare);
});

test('a request to an offline contact is kept and delivered at its next presence; the answer reaches the requester (§3.1.3)', async (t) => {
  const alice = await user(t, 'alice');
  const carolName = fresh('carol');
  await server.addUser(carolName, `${carolName}-pw`);
  const carolBare = `${carolName}@localhost`;
  let a = alice.c.items.length;
  alice.c.send(`<presence to='${carolBare}' type='subscribe'/>`);
  a = await push(t, alice, carolBare, 'none', 'subscribe', a);
  t.deepEqual((await barrier(alice, a)).filter((e) => e.name === 'presence'), [], 'no answer while carol is away');

  const carol = await connect(t, carolName);
  const roster = await ready(carol);
  t.deepEqual(roster.getChildren('item'), [], 'a pending request is not a roster item');
  const req = await expect(carol, 'the kept request', isPresence(alice.bare, 'subscribe'));
  t.is(req.attrs.to, carolBare);
  // The request stays pending: another session of carol gets it too.
  const carol2 = await connect(t, carolName, 'second');
  await ready(carol2);
  await expect(carol2, 'the kept request again', isPresence(alice.bare, 'subscribe'));

  const c = carol.c.items.length;
  carol.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  await push(t, carol, alice.bare, 'from', undefined, c);
  await push(t, alice, carolBare, 'to', undefined, a);
  await expect(alice, 'approval', isPresence(carolBare, 'subscribed'), a);
  await expect(alice, "carol's presence", isPresence(carol.jid), a);
  await expect(alice, "carol's second resource's presence", isPresence(carol2.jid), a);

  // Answered: a new session no longer gets the request.
  const carol3 = await connect(t, carolName, 'third');
  const from = carol3.c.items.length;
  await ready(carol3);
  t.false((await barrier(carol3, from)).some(isPresence(alice.bare, 'subscribe')), 'the request was answered');
});

test('an approval while the requester is away shows at its next login: roster and probe (§3.1.6, §4.3)', async (t) => {
  const dave = await user(t, 'dave');
  const erin = await user(t, 'erin');
  const e = erin.c.items.length;
  dave.c.send(`<presence to='${erin.bare}' type='subscribe'/>`);
  await expect(erin, 'subscribe', isPresence(dave.bare, 'subscribe'), e);
  dave.c.destroy();
  await dave.c.closed;
  erin.c.send(`<presence to='${dave.bare}' type='subscribed'/>`);
  await push(t, erin, dave.bare, 'from', undefined, e);

  const again = await connect(t, dave.name, 'back');
  const roster = await ready(again);
  t.deepEqual(roster.getChildren('item').map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.ask]), [[erin.bare, 'to', undefined]]);
  // §4.2.2: initial presence probes the contacts dave is subscribed to.
  const p = await expect(again, "erin's presence, answering the probe", isPresence(erin.jid));
  t.is(p.attrs.to, again.jid, 'a probe is answered to the probing resource');
});

test("presence reaches every available resource of a subscriber, and a new resource gets its contacts' and its siblings' presence (§4.2, §4.4)", async (t) => {
  const alice = await user(t, 'alice', { resource: 'one' });
  const bob = await user(t, 'bob');
  await subscribe(t, alice, bob);
  await subscribe(t, bob, alice);
  const alice2 = await connect(t, alice.name, 'two');
  const probeFrom = alice2.c.items.length;
  await ready(alice2);
  // §4.2.2: bob's presence (probe) and alice/one's presence (own resources) arrive.
  await expect(alice2, "bob's presence", isPresence(bob.jid), probeFrom);
  await expect(alice2, "alice/one's presence", isPresence(alice.jid), probeFrom);
  await expect(alice, "alice/two's initial presence", isPresence(alice2.jid));
  await expect(bob, "alice/two's initial presence", isPresence(alice2.jid));

  const [a1, a2] = [alice.c.items.length, alice2.c.items.length];
  bob.c.send(`<presence><show>dnd</show></presence>`);
  for (const [p, from] of [[alice, a1], [alice2, a2]] as const) {
    const el = await expect(p, 'dnd', (el) => isPresence(bob.jid)(el) && el.getChildText('show') === 'dnd', from);
    t.is(el.attrs.to, alice.bare);
  }

  // Unavailable (explicit) reaches both, and bob is not echoed his own.
  const b = bob.c.items.length;
  const [u1, u2] = [alice.c.items.length, alice2.c.items.length];
  bob.c.send(`<presence type='unavailable'><status>bye</status></presence>`);
  await expect(alice, 'unavailable', isPresence(bob.jid, 'unavailable'), u1);
  const u = await expect(alice2, 'unavailable', isPresence(bob.jid, 'unavailable'), u2);
  t.is(u.getChildText('status'), 'bye');
  t.false((await barrier(bob, b)).some(isPresence(bob.jid, 'unavailable')));
});

test('directed presence is delivered and undone when the sender disconnects (§4.6)', async (t) => {
  const frank = await user(t, 'frank');
  const gina = await user(t, 'gina');
  const g = gina.c.items.length;
  frank.c.send(`<presence to='${gina.jid}'><status>hi gina</status></presence>`);
  const d = await expect(gina, 'directed presence', isPresence(frank.jid), g);
  t.is(d.attrs.to, gina.jid);
  t.is(d.getChildText('status'), 'hi gina');
  frank.c.destroy();
  const gone = await expect(gina, 'unavailable after the disconnect', isPresence(frank.jid, 'unavailable'), g);
  t.is(gone.attrs.to, gina.jid);
});

test('directed presence undone by explicit unavailable reaches the recipient once (§4.6.3)', async (t) => {
  const hank = await user(t, 'hank');
  const ida = await user(t, 'ida');
  const i = ida.c.items.length;
  hank.c.send(`<presence to='${ida.bare}'/>`);
  await expect(ida, 'directed presence', isPresence(hank.jid), i);
  hank.c.send(`<presence type='unavailable'/>`);
  await expect(ida, 'unavailable', isPresence(hank.jid, 'unavailable'), i);
  hank.c.destroy();
  await hank.c.closed;
  const after = await barrier(ida, i);
  t.is(after.filter(isPresence(hank.jid, 'unavailable')).length, 1, 'one unavailable, not another at disconnect');
});

test('unsubscribe, unsubscribed and roster removal cancel both sides (§3.2, §3.3, §2.5.2)', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob');
  await subscribe(t, alice, bob);
  await subscribe(t, bob, alice);

  // §3.3: alice no longer wants bob's presence.
  let a = alice.c.items.length;
  let b = bob.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='unsubscribe'/>`);
  a = await push(t, alice, bob.bare, 'from', undefined, a);
  await push(t, bob, alice.bare, 'to', undefined, b);
  await expect(bob, 'unsubscribe', isPresence(alice.bare, 'unsubscribe'), b);
  await expect(alice, "bob's unavailable (§3.3.3)", isPresence(bob.jid, 'unavailable'));

  // §3.2: bob cancels alice's subscription to him... which is gone; alice cancels bob's to her.
  b = bob.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='unsubscribed'/>`);
  await push(t, alice, bob.bare, 'none', undefined, a);
  await push(t, bob, alice.bare, 'none', undefined, b);
  await expect(bob, 'unsubscribed', isPresence(alice.bare, 'unsubscribed'), b);
  await expect(bob, "alice's unavailable (§3.2.2)", isPresence(alice.jid, 'unavailable'), b);

  // §2.5.2: removing an item with a subscription tells the contact.
  await subscribe(t, alice, bob);
  a = alice.c.items.length;
  b = bob.c.items.length;
  alice.c.send(`<iq type='set' id='rm'><query xmlns='${NS_ROSTER}'><item jid='${bob.bare}' subscription='remove'/></query></iq>`);
  await expect(alice, 'result', (el) => el.attrs.id === 'rm' && el.attrs.type === 'result', a);
  await push(t, alice, bob.bare, 'remove', undefined, a);
  await push(t, bob, alice.bare, 'none', undefined, b);
  await expect(bob, 'unsubscribe', isPresence(alice.bare, 'unsubscribe'), b);
  t.deepEqual(await rosterOf(alice), []);
});

test('a subscription request to an account that does not exist is answered unsubscribed (§3.1.3); anonymous or foreign ones are refused', async (t) => {
  const alice = await user(t, 'alice');
  const ghost = `${fresh('ghost')}@localhost`;
  let a = alice.c.items.length;
  alice.c.send(`<presence to='${ghost}' type='subscribe'/>`);
  a = await push(t, alice, ghost, 'none', 'subscribe', a);
  await expect(alice, 'unsubscribed', isPresence(ghost, 'unsubscribed'), a);
  await push(t, alice, ghost, 'none', undefined, a);

  const id = uid('far');
  alice.c.send(`<presence to='someone@elsewhere.example' type='subscribe' id='${id}'/>`);
  const err = await expect(alice, 'error', (el) => el.attrs.id === id);
  t.is(err.attrs.type, 'error');
  t.is(stanzaError(err).condition, 'remote-server-not-found');
});

test('priorities: negative priority gets no bare-JID messages, which wait offline until a non-negative presence (§8.5.2, XEP-0160)', async (t) => {
  const kim = await user(t, 'kim', { ready: false });
  await ready(kim, '<presence><priority>-1</priority></presence>');
  const leo = await user(t, 'leo');
  const k = kim.c.items.length;
  leo.c.send(`<message to='${kim.bare}' id='m1' type='chat'><body>one</body></message>`);
  leo.c.send(`<message to='${kim.jid}' id='m2' type='chat'><body>two, to the full JID</body></message>`);
  await expect(kim, 'm2 (a full JID is delivered whatever the priority)', (el) => el.attrs.id === 'm2', k);
  t.false((await barrier(kim, k)).some((el) => el.attrs.id === 'm1'), 'm1 is not delivered to a negative-priority resource');
  kim.c.send('<presence><priority>1</priority></presence>');
  const m1 = await expect(kim, 'm1, from offline storage', (el) => el.attrs.id === 'm1', k);
  t.truthy(m1.getChild('delay', 'urn:xmpp:delay'));

  // Two resources of equal top priority both get a chat to the bare JID; a lower one does not.
  const kim2 = await connect(t, kim.name, 'two');
  await ready(kim2, '<presence><priority>1</priority></presence>');
  const kim3 = await connect(t, kim.name, 'three');
  await ready(kim3, '<presence><priority>0</priority></presence>');
  const [k1, k2, k3] = [kim.c.items.length, kim2.c.items.length, kim3.c.items.length];
  leo.c.send(`<message to='${kim.bare}' id='m3' type='chat'><body>three</body></message>`);
  await expect(kim, 'm3', (el) => el.attrs.id === 'm3', k1);
  await expect(kim2, 'm3', (el) => el.attrs.id === 'm3', k2);
  t.false((await barrier(kim3, k3)).some((el) => el.attrs.id === 'm3'));
  // A headline to the bare JID goes to every non-negative resource.
  leo.c.send(`<message to='${kim.bare}' id='h1' type='headline'><body>news</body></message>`);
  await expect(kim3, 'headline', (el) => el.attrs.id === 'h1', k3);
});

test('carbons (XEP-0280): sent and received copies reach the other resources that enabled them, not the others', async (t) => {
  const mia = await user(t, 'mia', { resource: 'phone' });
  const mia2 = await connect(t, mia.name, 'laptop');
  await ready(mia2);
  const mia3 = await connect(t, mia.name, 'old'); // never enables carbons
  await ready(mia3);
  const ned = await user(t, 'ned');
  for (const p of [mia, mia2]) {
    const id = uid('carbons');
    const r = await within(p.c.request(`<iq type='set' id='${id}'><enable xmlns='${NS_CARBONS}'/></iq>`, id), WAIT, 'enable');
    t.is(r.attrs.type, 'result', r.toString());
  }
  const [m2, m3] = [mia2.c.items.length, mia3.c.items.length];
  mia.c.send(`<message to='${ned.jid}' id='s1' type='chat'><body>sent from the phone</body></message>`);
  await expect(ned, 's1', (el) => el.attrs.id === 's1');
  const sent = await expect(mia2, 'sent carbon', (el) => el.name === 'message' && Boolean(el.getChild('sent', NS_CARBONS)), m2);
  t.is(sent.attrs.from, mia.bare);
  t.is(sent.attrs.to, mia2.jid);
  const inner = sent.getChild('sent', NS_CARBONS)!.getChild('forwarded', NS_FORWARD)!.getChild('message')!;
  t.is(inner.attrs.from, mia.jid);
  t.is(inner.attrs.to, ned.jid);
  t.is(inner.getChildText('body'), 'sent from the phone');

  ned.c.send(`<message to='${mia.jid}' id='r1' type='chat'><body>to the phone</body></message>`);
  await expect(mia, 'r1', (el) => el.attrs.id === 'r1');
  const received = await expect(mia2, 'received carbon', (el) => el.name === 'message' && Boolean(el.getChild('received', NS_CARBONS)), m2);
  t.is(received.getChild('received', NS_CARBONS)!.getChild('forwarded', NS_FORWARD)!.getChild('message')!.attrs.id, 'r1');

  // <private/> keeps a message out of carbons and is not passed on.
  const m2b = mia2.c.items.length;
  mia.c.send(`<message to='${ned.jid}' id='p1' type='chat'><body>secret</body><private xmlns='${NS_CARBONS}'/></message>`);
  const p1 = await expect(ned, 'p1', (el) => el.attrs.id === 'p1');
  t.is(p1.getChild('private', NS_CARBONS), undefined);
  t.false((await barrier(mia2, m2b)).some((el) => Boolean(el.getChild('sent', NS_CARBONS))), 'no carbon of a private message');
  t.false((await barrier(mia3, m3)).some((el) => Boolean(el.getChild('sent', NS_CARBONS) ?? el.getChild('received', NS_CARBONS))), 'no carbons without enabling them');

  // Disabled: no more copies.
  const id = uid('carbons');
  await within(mia2.c.request(`<iq type='set' id='${id}'><disable xmlns='${NS_CARBONS}'/></iq>`, id), WAIT, 'disable');
  const m2c = mia2.c.items.length;
  mia.c.send(`<message to='${ned.jid}' id='s2' type='chat'><body>again</body></message>`);
  await expect(ned, 's2', (el) => el.attrs.id === 's2');
  t.false((await barrier(mia2, m2c)).some((el) => Boolean(el.getChild('sent', NS_CARBONS))));
});

test('disco#info on the server lists carbons and offline storage', async (t) => {
  const p = await user(t, 'olga', { ready: false });
  const id = uid('disco');
  const r = await within(p.c.request(`<iq type='get' id='${id}' to='localhost'><query xmlns='${NS_DISCO_INFO}'/></iq>`, id), WAIT, 'disco');
  const features = r.getChild('query', NS_DISCO_INFO)!.getChildren('feature').map((f) => f.attrs.var);
  for (const f of [NS_CARBONS, 'msgoffline', NS_ROSTER]) t.true(features.includes(f), f);
});
