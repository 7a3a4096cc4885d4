// XEP-0191 Blocking Command over real sockets with real TLS, on a node of
// two workers (users land on either): the blocklist read and changed, its
// pushes to the resources that asked for it, errors and the bound, and
// enforcement both ways for messages, iq and presence (notifications,
// directed presence, subscriptions, probes), by full, bare and domain JIDs,
// from users and from an external component; the unavailable presence a
// block sends and the presence an unblock sends; the list gone with its
// account. "Nothing arrived" is checked behind a ping (barrier).
import test from 'ava';
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient } from '../helpers/raw.ts';
import { stanzaError, uid, within, NS_DISCO_INFO } from '../helpers/protocol.ts';
import { WAIT, barrier, carbons, carried, connect, expect, isBody, isCarbon, isPresence, isPush, newAccount, newUser, ready, rosterItem, rosterOf, subscribe, summary } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { MAX_BLOCKED } from '../../src/blocking/store.ts';

const NS_BLOCKING = 'urn:xmpp:blocking';
const NS_ERRORS = 'urn:xmpp:blocking:errors';
const COMPONENT = 'bots.localhost';
const SECRET = 'bl0ck-secret';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_COMPONENT_PORT: '0', XMPP_COMPONENTS: `${COMPONENT}=${SECRET}` });
});
test.after.always(async () => {
  await server?.stop();
});

async function iq(p: Peer, type: 'get' | 'set', inner: string, to = ''): Promise<Element> {
  const id = uid('blk');
  return within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}>${inner}</iq>`, id), WAIT, `${p.jid}: ${inner.slice(0, 60)}`);
}
const items = (jids: string[]) => jids.map((j) => `<item jid='${j}'/>`).join('');
async function block(p: Peer, ...jids: string[]): Promise<Element> {
  return iq(p, 'set', `<block xmlns='${NS_BLOCKING}'>${items(jids)}</block>`);
}
async function unblock(p: Peer, ...jids: string[]): Promise<Element> {
  return iq(p, 'set', `<unblock xmlns='${NS_BLOCKING}'>${items(jids)}</unblock>`);
}
async function blocklist(p: Peer): Promise<string[]> {
  const res = await iq(p, 'get', `<blocklist xmlns='${NS_BLOCKING}'/>`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res.getChild('blocklist', NS_BLOCKING)!.getChildren('item').map((i) => i.attrs.jid);
}
const isBlockPush = (name: 'block' | 'unblock') => (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && el.getChild(name, NS_BLOCKING) !== undefined;
/** Whether an error stanza carries XEP-0191's <blocked/>. */
const blockedCondition = (el: Element) => el.getChild('error')?.getChild('blocked', NS_ERRORS) !== undefined;

test('the server and every account advertise urn:xmpp:blocking (§5.1)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  for (const to of ['localhost', alice.bare]) {
    const res = await iq(alice, 'get', `<query xmlns='${NS_DISCO_INFO}'/>`, to);
    t.true(res.getChild('query', NS_DISCO_INFO)!.getChildren('feature').some((f) => f.attrs.var === NS_BLOCKING), to);
  }
});

test('blocklist, block, unblock, unblock all; pushes go to the resources that requested the blocklist, not to the others (§5.2-§5.5)', async (t) => {
  const alice = await newUser(t, server, 'alice', 'one');
  const two = await connect(t, server.c2sPort, alice.name, 'two');
  const three = await connect(t, server.c2sPort, alice.name, 'three');
  t.deepEqual(await blocklist(alice), []);
  t.deepEqual(await blocklist(two), []);
  const [f2, f3] = [two.c.items.length, three.c.items.length];
  const res = await block(alice, 'Romeo@Montague.example', 'iago@shakespeare.example/Phone');
  t.is(res.attrs.type, 'result');
  const pushed = await expect(two, 'block push', isBlockPush('block'), f2);
  t.deepEqual(pushed.getChild('block', NS_BLOCKING)!.getChildren('item').map((i) => i.attrs.jid), ['romeo@montague.example', 'iago@shakespeare.example/Phone']);
  t.false('from' in pushed.attrs, 'a push comes from the account itself');
  await expect(alice, 'block push to the resource that blocked', isBlockPush('block'));
  t.false((await barrier(three, f3)).some(isBlockPush('block')), 'no push to a resource that never requested the blocklist');
  t.deepEqual(await blocklist(three), ['romeo@montague.example', 'iago@shakespeare.example/Phone']);

  const g2 = two.c.items.length;
  t.is((await unblock(alice, 'romeo@montague.example')).attrs.type, 'result');
  const up = await expect(two, 'unblock push', isBlockPush('unblock'), g2);
  t.deepEqual(up.getChild('unblock', NS_BLOCKING)!.getChildren('item').map((i) => i.attrs.jid), ['romeo@montague.example']);
  t.deepEqual(await blocklist(alice), ['iago@shakespeare.example/Phone']);

  await block(alice, 'a.example', 'b@b.example');
  const h3 = three.c.items.length;
  t.is((await unblock(alice)).attrs.type, 'result');
  const all = await expect(three, 'unblock-all push', isBlockPush('unblock'), h3);
  t.is(all.getChild('unblock', NS_BLOCKING)!.getChildren('item').length, 0, 'an empty <unblock/> says every JID is unblocked');
  t.deepEqual(await blocklist(alice), []);
});

test('errors: an empty block is bad-request, an item without jid bad-request, a malformed JID jid-malformed, another account\'s list forbidden', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  t.is(stanzaError(await iq(alice, 'set', `<block xmlns='${NS_BLOCKING}'/>`)).condition, 'bad-request');
  t.is(stanzaError(await iq(alice, 'set', `<block xmlns='${NS_BLOCKING}'><item/></block>`)).condition, 'bad-request');
  t.is(stanzaError(await block(alice, 'a@b@c')).condition, 'jid-malformed');
  t.is(stanzaError(await iq(alice, 'get', `<blocklist xmlns='${NS_BLOCKING}'/>`, bob.bare)).condition, 'forbidden');
  t.is(stanzaError(await iq(alice, 'set', `<block xmlns='${NS_BLOCKING}'>${items(['x@y.example'])}</block>`, bob.bare)).condition, 'forbidden');
  t.deepEqual(await blocklist(alice), [], 'nothing was blocked');
  t.deepEqual(await blocklist(bob), []);
});

test(`the bound: ${MAX_BLOCKED} JIDs, then policy-violation and nothing added`, async (t) => {
  const alice = await newUser(t, server, 'alice');
  const jids = Array.from({ length: MAX_BLOCKED }, (_, i) => `u${i}@many.example`);
  for (let i = 0; i < jids.length; i += 250) t.is((await block(alice, ...jids.slice(i, i + 250))).attrs.type, 'result');
  const over = await block(alice, 'one-more@many.example', 'u0@many.example');
  t.is(stanzaError(over).condition, 'policy-violation');
  const list = await blocklist(alice);
  t.is(list.length, MAX_BLOCKED);
  t.false(list.includes('one-more@many.example'));
  // Blocking again what is blocked already passes: it adds nothing.
  t.is((await block(alice, 'u1@many.example')).attrs.type, 'result');
});

test('outbound (§5.3): a message or iq to a blocked JID is not-acceptable with <blocked/>, presence to it is dropped', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await block(alice, bob.bare);
  const fb = bob.c.items.length;
  alice.c.send(`<message to='${bob.bare}' type='chat' id='m1'><body>hello?</body></message>`);
  const err = await expect(alice, 'the bounce', (el) => el.name === 'message' && el.attrs.id === 'm1' && el.attrs.type === 'error');
  t.is(stanzaError(err).condition, 'not-acceptable');
  t.true(blockedCondition(err));
  const res = await iq(alice, 'get', `<ping xmlns='urn:xmpp:ping'/>`, bob.jid);
  t.is(stanzaError(res).condition, 'not-acceptable');
  t.true(blockedCondition(res));
  alice.c.send(`<presence to='${bob.jid}'><status>directed</status></presence>`);
  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  await barrier(alice, 0);
  const seen = await barrier(bob, fb);
  t.false(seen.some((el) => el.attrs.from?.startsWith(alice.bare)), 'nothing from alice reached bob');
});

test('inbound (§5.3): from a blocked JID, messages and iq get/set are service-unavailable (no <blocked/>), presence of every kind is dropped without an answer', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await block(alice, bob.bare);
  const fa = alice.c.items.length;
  const fb = bob.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat' id='b1'><body>let me in</body></message>`);
  const bounce = await expect(bob, 'the bounce', (el) => el.name === 'message' && el.attrs.id === 'b1' && el.attrs.type === 'error', fb);
  t.is(stanzaError(bounce).condition, 'service-unavailable');
  t.false(blockedCondition(bounce), 'the block is not revealed');
  for (const to of [alice.jid, alice.bare]) {
    const res = await iq(bob, 'get', `<ping xmlns='urn:xmpp:ping'/>`, to);
    t.is(stanzaError(res).condition, 'service-unavailable', to);
  }
  const mark = bob.c.items.length;
  bob.c.send(`<presence to='${alice.jid}'><status>directed</status></presence>`);
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  bob.c.send(`<presence to='${alice.bare}' type='probe'/>`);
  bob.c.send(`<iq type='result' id='stray' to='${alice.jid}'/>`);
  const back = await barrier(bob, mark);
  t.false(back.some((el) => el.name === 'presence'), 'no presence answer, no error');
  const seen = await barrier(alice, fa);
  t.false(seen.some((el) => el.attrs.from?.startsWith(bob.bare)), 'nothing from bob reached alice');
});

test('blocking a subscriber sends it unavailable and no more presence, either way; unblocking sends current presence (§5.3, §5.4)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(alice, bob);
  await subscribe(bob, alice);
  let fb = bob.c.items.length;
  await block(alice, bob.bare);
  await expect(bob, "alice's unavailable presence", isPresence(alice.jid, 'unavailable'), fb);
  fb = bob.c.items.length;
  const fa = alice.c.items.length;
  alice.c.send(`<presence><status>busy</status></presence>`);
  bob.c.send(`<presence><status>here</status></presence>`);
  await expect(alice, 'her own presence', (el) => isPresence(alice.jid)(el) && el.getChildText('status') === 'busy', fa);
  await expect(bob, 'his own presence', (el) => isPresence(bob.jid)(el) && el.getChildText('status') === 'here', fb);
  t.false((await barrier(bob, fb)).some(isPresence(alice.jid)), "alice's broadcast does not reach bob");
  t.false((await barrier(alice, fa)).some(isPresence(bob.jid)), "bob's broadcast does not reach alice");
  // A new login of bob probes alice: no answer.
  const bob2 = await connect(t, server.c2sPort, bob.name, 'two');
  await ready(bob2);
  t.false((await barrier(bob2, 0)).some(isPresence(alice.jid)), "bob's probe gets nothing");
  fb = bob.c.items.length;
  await unblock(alice, bob.bare);
  const back = await expect(bob, "alice's current presence", (el) => isPresence(alice.jid)(el), fb);
  t.is(back.getChildText('status'), 'busy');
});

test('blocking one resource of a subscriber (a full JID) sends unavailable to that resource only, and no more presence; unblocking it sends the current presence to it (§5.3, §5.4)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob', 'one');
  await subscribe(bob, alice);
  const bob2 = await connect(t, server.c2sPort, bob.name, 'two');
  await ready(bob2);
  await expect(bob2, "alice's presence at login", isPresence(alice.jid));
  let [f1, f2] = [bob.c.items.length, bob2.c.items.length];
  t.is((await block(alice, bob.jid)).attrs.type, 'result');
  await expect(bob, "alice's unavailable presence at the blocked resource", isPresence(alice.jid, 'unavailable'), f1);
  t.false((await barrier(bob2, f2)).some(isPresence(alice.jid, 'unavailable')), 'the other resource still sees alice');
  // Her next broadcast reaches the other resource only.
  [f1, f2] = [bob.c.items.length, bob2.c.items.length];
  alice.c.send(`<presence><status>later</status></presence>`);
  await expect(bob2, 'her new presence at the other resource', (el) => isPresence(alice.jid)(el) && el.getChildText('status') === 'later', f2);
  t.false((await barrier(bob, f1)).some(isPresence(alice.jid)), 'nothing at the blocked resource');
  f1 = bob.c.items.length;
  t.is((await unblock(alice, bob.jid)).attrs.type, 'result');
  const back = await expect(bob, "alice's current presence at the unblocked resource", isPresence(alice.jid), f1);
  t.is(back.getChildText('status'), 'later');
});

test('JID matching (§4): a full JID blocks one resource, a domain every address of it', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob', 'one');
  const bob2 = await connect(t, server.c2sPort, bob.name, 'two');
  await block(alice, bob.jid);
  bob.c.send(`<message to='${alice.jid}' type='chat' id='from-one'><body>one</body></message>`);
  await expect(bob, 'bounce', (el) => el.attrs.id === 'from-one' && el.attrs.type === 'error');
  const fa = alice.c.items.length;
  bob2.c.send(`<message to='${alice.jid}' type='chat' id='from-two'><body>two</body></message>`);
  await expect(alice, 'the message from the other resource', isBody('two'), fa);
  // A domain: the component's, and its users.
  await block(alice, COMPONENT);
  alice.c.send(`<message to='bot@${COMPONENT}' type='chat' id='to-comp'><body>x</body></message>`);
  const err = await expect(alice, 'bounce', (el) => el.attrs.id === 'to-comp' && el.attrs.type === 'error');
  t.true(blockedCondition(err));
});

test('a component: its stanzas to a user who blocked its domain are refused (message, iq) or dropped (presence)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const comp = await RawClient.connect(server.componentPort!);
  t.teardown(() => comp.destroy());
  const m = await comp.exchange(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${COMPONENT}'>`, /<stream:stream[^>]*\bid=["']([^"']+)["'][^>]*>/);
  await comp.exchange(`<handshake>${createHash('sha1').update(m[1] + SECRET).digest('hex')}</handshake>`, /<handshake\s*\/>/);
  // Before the block: delivered.
  comp.send(`<message from='bot@${COMPONENT}' to='${alice.jid}' type='chat' id='c0'><body>before</body></message>`);
  await expect(alice, 'the message before the block', isBody('before'));
  await block(alice, `bot@${COMPONENT}`);
  const fa = alice.c.items.length;
  const mark = comp.items.length;
  comp.send(`<message from='bot@${COMPONENT}' to='${alice.jid}' type='chat' id='c1'><body>after</body></message>`);
  comp.send(`<iq from='bot@${COMPONENT}' to='${alice.jid}' type='get' id='c2'><ping xmlns='urn:xmpp:ping'/></iq>`);
  comp.send(`<presence from='bot@${COMPONENT}' to='${alice.jid}'/>`);
  const refusal = (id: string) => within(comp.find((el: Element) => el.attrs.id === id && el.attrs.type === 'error', mark), WAIT, `the refusal of ${id}`);
  t.is(stanzaError(await refusal('c1')).condition, 'service-unavailable');
  t.is(stanzaError(await refusal('c2')).condition, 'service-unavailable');
  const seen = await barrier(alice, fa);
  t.false(seen.some((el) => el.attrs.from?.startsWith(`bot@${COMPONENT}`)), 'nothing from the component reached alice');
});

test('a removed account loses its blocklist', async (t) => {
  const alice = await newUser(t, server, 'alice');
  await block(alice, 'someone@else.example');
  const res = await iq(alice, 'set', `<query xmlns='jabber:iq:register'><remove/></query>`);
  t.is(res.attrs.type, 'result');
  await server.addUser(alice.name, `${alice.name}-pw`);
  const again = await connect(t, server.c2sPort, alice.name, 'back');
  t.deepEqual(await blocklist(again), []);
});


test('what a JID sent before it was blocked and that waits for the user (offline messages, a subscription request) is not delivered, and leaves the store (§5.3)', async (t) => {
  const aliceName = await newAccount(server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const aliceBare = `${aliceName}@localhost`;
  bob.c.send(`<message to='${aliceBare}' type='chat' id='early'><body>before the block</body></message>`);
  bob.c.send(`<presence to='${aliceBare}' type='subscribe'/>`);
  await barrier(bob, 0);
  // alice logs in without presence, blocks bob, then comes online.
  const alice = await connect(t, server.c2sPort, aliceName, 'r');
  t.is((await block(alice, bob.bare)).attrs.type, 'result');
  const from = alice.c.items.length;
  alice.c.send('<presence/>');
  await expect(alice, 'its own presence', isPresence(alice.jid), from);
  const seen = await barrier(alice, from);
  t.false(seen.some((el) => el.attrs.from?.startsWith(bob.bare)), 'neither the message nor the request');
  // Unblocked and online again: the message is gone, not kept for later.
  await unblock(alice, bob.bare);
  const again = await connect(t, server.c2sPort, aliceName, 'again');
  const f2 = again.c.items.length;
  again.c.send('<presence/>');
  await expect(again, 'its own presence', isPresence(again.jid), f2);
  t.false((await barrier(again, f2)).some((el) => el.name === 'message' && el.attrs.id === 'early'));
});

test('the user may still cancel a subscription with a JID it blocked: both rosters change (RFC 6121 §3.3)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  await block(alice, bob.bare);
  const from = alice.c.items.length;
  const fb = bob.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='unsubscribed'/>`);
  const pushed = await expect(alice, 'the roster push', (el) => el.name === 'iq' && el.attrs.type === 'set' && el.getChild('query', 'jabber:iq:roster')?.getChild('item')?.attrs.jid === bob.bare, from);
  t.is(pushed.getChild('query', 'jabber:iq:roster')!.getChild('item')!.attrs.subscription, 'none');
  // Bob's side: the cancellation, then his roster push (RFC 6121 §3.2.3).
  await expect(bob, 'the cancellation', isPresence(alice.bare, 'unsubscribed'), fb);
  t.is(rosterItem(await expect(bob, "bob's roster push", isPush(alice.bare), fb))!.attrs.subscription, 'none');
});

test('cancellations from a JID the user blocked, sent by its client or by its roster removal, change its own roster only: nothing reaches the user, whose roster stays (§5.3)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  for (const other of [bob, carol]) {
    await subscribe(alice, other);
    await subscribe(other, alice);
  }
  await block(alice, bob.bare, carol.bare);
  const fa = alice.c.items.length;
  // Bob's client cancels: his roster changes as he asked.
  const fb = bob.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='unsubscribed'/>`);
  const mine = await expect(bob, "bob's own roster push", isPush(alice.bare), fb);
  t.is(rosterItem(mine)!.attrs.subscription, 'to');
  // Carol removes alice from her roster (RFC 6121 §2.5.2: unsubscribe and unsubscribed on her behalf).
  const id = uid('remove');
  t.is((await within(carol.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:roster'><item jid='${alice.bare}' subscription='remove'/></query></iq>`, id), WAIT, 'the removal')).attrs.type, 'result');
  const seen = await barrier(alice, fa);
  t.false(seen.some((el) => el.attrs.from?.startsWith(bob.bare) || el.attrs.from?.startsWith(carol.bare)), 'no cancellation reached alice');
  t.false(seen.some((el) => isPush(bob.bare)(el) || isPush(carol.bare)(el)), 'no roster push either');
  t.deepEqual(summary((await rosterOf(alice)).filter((i) => i.attrs.jid !== alice.bare)).sort(), [[bob.bare, 'both', undefined], [carol.bare, 'both', undefined]].sort(), "alice's roster is as it was");
});

test('a message refused for a block, the recipient\'s or the sender\'s, is not archived nor carbon-copied as sent (§5.3)', async (t) => {
  const NS_MAM = 'urn:xmpp:mam:2';
  const alice = await newUser(t, server, 'alice', 'one');
  const alice2 = await connect(t, server.c2sPort, alice.name, 'two');
  await ready(alice2);
  t.is((await carbons(alice2, 'enable')).attrs.type, 'result');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const dave = await newUser(t, server, 'dave');
  await block(bob, alice.bare);
  await block(alice, carol.bare);
  const f2 = alice2.c.items.length;
  const sent: [Peer, string, string][] = [[bob, 'to bob, who blocked alice', 'service-unavailable'], [carol, 'to carol, whom alice blocked', 'not-acceptable']];
  for (const [to, body, condition] of sent) {
    const id = uid('m');
    alice.c.send(`<message to='${to.bare}' type='chat' id='${id}'><body>${body}</body></message>`);
    const err = await expect(alice, `the refusal of ${id}`, (el) => el.attrs.id === id && el.attrs.type === 'error');
    t.is(stanzaError(err).condition, condition);
  }
  // One that goes through, for comparison: carbon-copied and archived.
  alice.c.send(`<message to='${dave.bare}' type='chat'><body>to dave</body></message>`);
  await expect(dave, 'the message', isBody('to dave'));
  await expect(alice2, 'the carbon of the message to dave', (el) => isCarbon('sent')(el) && carried(el, 'sent')?.getChildText('body') === 'to dave', f2);
  const copies = (await barrier(alice2, f2)).filter(isCarbon('sent')).map((el) => carried(el, 'sent')?.getChildText('body'));
  t.deepEqual(copies, ['to dave'], 'no carbon of a refused message');
  const id = uid('mam');
  const from = alice.c.items.length;
  const res = await within(alice.c.request(`<iq type='set' id='${id}'><query xmlns='${NS_MAM}'/></iq>`, id), WAIT, 'the archive');
  t.is(res.attrs.type, 'result');
  const archived = alice.c.items.slice(from).flatMap((it) => (it.kind === 'el' && it.el.getChild('result', NS_MAM) ? [it.el.getChild('result', NS_MAM)!.getChild('forwarded', 'urn:xmpp:forward:0')!.getChild('message')!.getChildText('body')] : []));
  t.deepEqual(archived, ['to dave'], 'no refused message in the archive');
});
