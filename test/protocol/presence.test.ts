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
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { stanzaError, uid, within, NS_DISCO_INFO } from '../helpers/protocol.ts';
import {
  NS_CARBONS,
  NS_DELAY,
  NS_ROSTER,
  WAIT,
  approve,
  barrier,
  carbons,
  carried,
  checkCarbon,
  connect as connectTo,
  expect,
  fresh,
  isCarbon,
  isPresence,
  isPush,
  push,
  ready,
  rosterOf,
  subscribe,
  summary,
} from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

const connect = (t: ExecutionContext, name: string, resource = 'r') => connectTo(t, server.c2sPort, name, resource);

/** A new account, logged in; with `ready`, it requested its roster (gets pushes) and is available. */
async function user(t: ExecutionContext, base: string, opts: { resource?: string; ready?: boolean } = {}): Promise<Peer> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const p = await connect(t, name, opts.resource);
  if (opts.ready !== false) await ready(p);
  return p;
}

test('subscription handshake, both online: states, pushes and presence on both sides (RFC 6121 §3.1)', async (t) => {
  const alice = await user(t, 'alice');
  const bob = await user(t, 'bob');
  let a = alice.c.items.length;
  let b = bob.c.items.length;

  // §3.1.1–§3.1.3: the request; the server stamps the bare JIDs.
  alice.c.send(`<presence to='${bob.jid}' type='subscribe' id='sub1'><status>it is alice</status></presence>`);
  a = await push(t, alice, bob.bare, 'none', 'subscribe', a);
  const req = await expect(bob, 'subscribe', isPresence(alice.bare, 'subscribe'), b);
  t.is(req.attrs.to, bob.bare, 'addressed to the bare JID');
  t.is(req.getChildText('status'), 'it is alice', 'the request keeps its content');
  t.deepEqual(await barrier(bob, b).then((els) => els.filter((e) => isPush(alice.bare)(e))), [], 'no roster push for a pending-in request');

  // §3.1.5, §3.1.6: approval: both rosters change, the approver's presence follows.
  const { presence: p } = await approve(t, alice, bob, { requester: 'to', approver: 'from' }, a, bob.c.items.length);
  await expect(alice, 'subscribed', isPresence(bob.bare, 'subscribed'));
  t.is(p.attrs.to, alice.bare);

  // And the other way: both.
  b = bob.c.items.length;
  a = alice.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, 'subscribe', isPresence(bob.bare, 'subscribe'), a);
  await approve(t, bob, alice, { requester: 'both', approver: 'both' }, b, a);
  t.deepEqual(summary(await rosterOf(alice)), [[bob.bare, 'both', undefined]]);
  t.deepEqual(summary(await rosterOf(bob)), [[alice.bare, 'both', undefined]]);

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
  t.deepEqual(roster, [], 'a pending request is not a roster item');
  const req = await expect(carol, 'the kept request', isPresence(alice.bare, 'subscribe'));
  t.is(req.attrs.to, carolBare);
  // The request stays pending: another session of carol gets it too.
  const carol2 = await connect(t, carolName, 'second');
  await ready(carol2);
  await expect(carol2, 'the kept request again', isPresence(alice.bare, 'subscribe'));

  await approve(t, alice, carol, { requester: 'to', approver: 'from' }, a, carol.c.items.length);
  await expect(alice, 'approval', isPresence(carolBare, 'subscribed'), a);
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
  t.deepEqual(summary(roster), [[erin.bare, 'to', undefined]]);
  // §4.2.2: initial presence probes the contacts dave is subscribed to.
  const p = await expect(again, "erin's presence, answering the probe", isPresence(erin.jid));
  t.is(p.attrs.to, again.jid, 'a probe is answered to the probing resource');
});

test("presence reaches every available resource of a subscriber, and a new resource gets its contacts' and its siblings' presence (§4.2, §4.4)", async (t) => {
  const alice = await user(t, 'alice', { resource: 'one' });
  const bob = await user(t, 'bob');
  await subscribe(alice, bob);
  await subscribe(bob, alice);
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
  await subscribe(alice, bob);
  await subscribe(bob, alice);

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
  await subscribe(alice, bob);
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
  t.truthy(m1.getChild('delay', NS_DELAY));

  // Two resources of equal top priority both get a chat to the bare JID; a lower one does not.
  const kim2 = await connect(t, kim.name, 'two');
  await ready(kim2, '<presence><priority>1</priority></presence>');
  const kim3 = await connect(t, kim.name, 'three');
  await ready(kim3, '<presence><priority>0</priority></presence>');
  const [k1, k2, k3] = [kim.c.items.length, kim2.c.items.length, kim3.c.items.length];
  leo.c.send(`<message to='${kim.bare}' id='m3' type='chat'><body>three</body></message>`);
  await expect(kim, 'm3', (el) => el.attrs.id === 'm3', k1);
  await expect(kim2, 'm3', (el) => el.attrs.id === 'm3', k2);
  await barrier(leo, leo.c.items.length); // leo's session has routed m3 wherever it goes
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
  const ned2 = await connect(t, ned.name, 'tablet');
  await ready(ned2);
  for (const p of [mia, mia2, ned2]) {
    const r = await carbons(p, 'enable');
    t.is(r.attrs.type, 'result', r.toString());
  }
  const [m2, m3] = [mia2.c.items.length, mia3.c.items.length];
  mia.c.send(`<message to='${ned.jid}' id='s1' type='chat'><body>sent from the phone</body></message>`);
  await expect(ned, 's1', (el) => el.attrs.id === 's1');
  const sent = await expect(mia2, 'sent carbon', isCarbon('sent'), m2);
  checkCarbon(t, sent, 'sent', { from: mia.bare, to: mia2.jid }, { from: mia.jid, to: ned.jid, body: 'sent from the phone' });
  // The recipient's other resource gets its received copy.
  const got = await expect(ned2, 'received carbon at the recipient', isCarbon('received'));
  checkCarbon(t, got, 'received', { from: ned.bare, to: ned2.jid }, { from: mia.jid, to: ned.jid, body: 'sent from the phone' });

  ned.c.send(`<message to='${mia.jid}' id='r1' type='chat'><body>to the phone</body></message>`);
  await expect(mia, 'r1', (el) => el.attrs.id === 'r1');
  const received = await expect(mia2, 'received carbon', isCarbon('received'), m2);
  t.is(carried(received, 'received')!.attrs.id, 'r1');

  // <private/> keeps a message out of carbons and is not passed on.
  const m2b = mia2.c.items.length;
  const n2 = ned2.c.items.length;
  mia.c.send(`<message to='${ned.jid}' id='p1' type='chat'><body>secret</body><private xmlns='${NS_CARBONS}'/></message>`);
  const p1 = await expect(ned, 'p1', (el) => el.attrs.id === 'p1');
  t.is(p1.getChild('private', NS_CARBONS), undefined);
  await barrier(mia, mia.c.items.length); // mia's session has sent every copy it was going to send
  t.false((await barrier(mia2, m2b)).some((el) => Boolean(el.getChild('sent', NS_CARBONS))), 'no carbon of a private message');
  await barrier(ned, ned.c.items.length); // the route to ned is done, and with it any received copy
  t.false((await barrier(ned2, n2)).some((el) => Boolean(el.getChild('received', NS_CARBONS))), 'no received carbon of a private message either (§7)');
  t.false((await barrier(mia3, m3)).some((el) => Boolean(el.getChild('sent', NS_CARBONS) ?? el.getChild('received', NS_CARBONS))), 'no carbons without enabling them');

  // Disabled: no more copies.
  await carbons(mia2, 'disable');
  const m2c = mia2.c.items.length;
  mia.c.send(`<message to='${ned.jid}' id='s2' type='chat'><body>again</body></message>`);
  await expect(ned, 's2', (el) => el.attrs.id === 's2');
  await barrier(mia, mia.c.items.length);
  t.false((await barrier(mia2, m2c)).some((el) => Boolean(el.getChild('sent', NS_CARBONS))));
});

test('disco#info on the server lists carbons and offline storage', async (t) => {
  const p = await user(t, 'olga', { ready: false });
  const id = uid('disco');
  const r = await within(p.c.request(`<iq type='get' id='${id}' to='localhost'><query xmlns='${NS_DISCO_INFO}'/></iq>`, id), WAIT, 'disco');
  const features = r.getChild('query', NS_DISCO_INFO)!.getChildren('feature').map((f) => f.attrs.var);
  for (const f of [NS_CARBONS, 'msgoffline', NS_ROSTER]) t.true(features.includes(f), f);
});

test('bad presence and carbons requests get the right stanza error, and the session goes on', async (t) => {
  const p = await user(t, 'pat');
  const other = await user(t, 'quin');
  const cases: [string, string, string][] = [
    // [what, stanza (with id), expected condition]
    ['unknown presence type', `<presence id='b1' type='bogus'/>`, 'bad-request'],
    ['a subscription request to nobody', `<presence id='b2' type='subscribe'/>`, 'bad-request'],
    ['a subscription request to the server', `<presence id='b3' to='localhost' type='subscribe'/>`, 'bad-request'],
    ['subscribing to oneself', `<presence id='b4' to='${p.bare}' type='subscribe'/>`, 'bad-request'],
    ['a malformed address', `<presence id='b5' to='a@b@c' type='subscribe'/>`, 'jid-malformed'],
    ['carbons for another account', `<iq type='set' id='b6' to='${other.bare}'><enable xmlns='${NS_CARBONS}'/></iq>`, 'forbidden'],
    ['a carbons request that is neither enable nor disable', `<iq type='set' id='b7'><toggle xmlns='${NS_CARBONS}'/></iq>`, 'bad-request'],
  ];
  for (const [what, xml, condition] of cases) {
    const id = /id='([^']+)'/.exec(xml)![1];
    const reply = await within(p.c.request(xml, id), WAIT, what);
    t.is(reply.attrs.type, 'error', `${what}: ${reply.toString()}`);
    t.is(stanzaError(reply).condition, condition, what);
  }
  // Nothing changed and the stream is fine: no roster item, and a request still works.
  t.deepEqual(await rosterOf(p), []);
  t.is((await carbons(p, 'enable')).attrs.type, 'result');
});
