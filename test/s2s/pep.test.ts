// PEP (XEP-0163) with contacts of another server, against a scripted peer
// (helpers/fake-peer.ts) whose every stanza the test writes and reads: the
// peer's users' presence, their clients' answers to our caps queries
// (XEP-0115) and their items requests come in on its stream to us; our
// notifications, last items, questions and answers go out on ours to it.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testCa, issue } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { fakePeer } from '../helpers/fake-peer.ts';
import type { FakePeer } from '../helpers/fake-peer.ts';
import type { RawClient } from '../helpers/raw.ts';
import { uid, within } from '../helpers/protocol.ts';
import { WAIT, expect, newUser, push } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { NODE_CONFIG, NS_PUBSUB, capsVer, dated, form, isEvent, isEventItem, itemIds, publish, undated } from '../helpers/pep.ts';

const dir = mkdtempSync(join(tmpdir(), 'xmpp-s2s-pep-'));
const ca = testCa(dir, 'pep-ca');
const [ourAddr, peerAddr] = loopbackAddresses(2);
let ours: Federated;
let peer: FakePeer;
let out: RawClient;
let stop: () => Promise<void>;

test.before(async () => {
  const f = await federation([{ domain: 'a.example', cert: issue(dir, ca, 'a.example', { dns: ['a.example'] }) }], {
    addresses: [ourAddr],
    env: { XMPP_TLS_CA: ca.cert },
    extra: { 'peer.example': `${peerAddr}:5269` },
  });
  [ours] = f.servers;
  stop = f.stop;
  peer = await fakePeer({ domain: 'peer.example', address: peerAddr, cert: issue(dir, ca, 'peer.example', { dns: ['peer.example'] }), server: { host: ourAddr, domain: 'a.example' } });
});
test.after.always(async () => {
  await peer?.stop();
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

/** The first stanza our server sent the peer, from index `from` of its stream, that matches. */
const sent = async (what: string, pred: (el: Element) => boolean, from = 0): Promise<Element> => {
  out ??= await peer.outgoing();
  return within(out.find(pred, from), WAIT, `our server to peer.example: ${what}`);
};
/** Where our stream to the peer is now (an index for `sent`). */
const mark = async (): Promise<number> => {
  out ??= await peer.outgoing();
  return out.items.length;
};

/** `me` and `contact` (a user of the peer) share presence both ways (RFC 6121 §3), the peer's side played by the test. */
async function contacts(t: ExecutionContext, me: Peer, contact: string): Promise<void> {
  let f = me.c.items.length;
  me.c.send(`<presence to='${contact}' type='subscribe'/>`);
  f = await push(t, me, contact, 'none', 'subscribe', f);
  await sent('the request', (el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.to === contact);
  peer.incoming.send(`<presence from='${contact}' to='${me.bare}' type='subscribed'/>`);
  f = await push(t, me, contact, 'to', undefined, f);
  peer.incoming.send(`<presence from='${contact}' to='${me.bare}' type='subscribe'/>`);
  await expect(me, "the contact's request", (el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === contact, f);
  me.c.send(`<presence to='${contact}' type='subscribed'/>`);
  await push(t, me, contact, 'both', undefined, f);
}

test("an items request from a peer's user whose address its server spelt in capitals: prepared before the access model reads the roster (RFC 7622 §3)", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const carol = `carol-${uid('c')}@peer.example`;
  await contacts(t, alice, carol);
  t.is((await publish(alice, 'urn:test:mood', `<mood xmlns='urn:test'>fine</mood>`, { id: 'm1' })).attrs.type, 'result');
  const id = uid('items');
  const from = await mark();
  const shouting = `${carol.replace(/^carol/, 'CAROL')}/Phone`;
  peer.incoming.send(`<iq type='get' id='${id}' from='${shouting}' to='${alice.bare}'><pubsub xmlns='${NS_PUBSUB}'><items node='urn:test:mood'/></pubsub></iq>`);
  const res = await sent('the items answer', (el) => el.name === 'iq' && el.attrs.id === id, from);
  t.is(res.attrs.type, 'result', res.toString());
  t.deepEqual(itemIds(res), ['m1']);
});

const NS_CAPS = 'http://jabber.org/protocol/caps';
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
/** A peer's user's presence to `to`, with caps for `features` (XEP-0115), or none. */
const presenceOf = (from: string, to: string, features?: string[]) => `<presence from='${from}' to='${to}'>${features ? `<c xmlns='${NS_CAPS}' hash='sha-1' node='urn:pep-test' ver='${capsVer(features)}'/>` : ''}</presence>`;
/** Our server's disco#info for caps, to `jid`. */
const isCapsQueryTo = (jid: string) => (el: Element) => el.name === 'iq' && el.attrs.type === 'get' && el.attrs.to === jid && Boolean(el.getChild('query', NS_DISCO_INFO)?.attrs.node?.startsWith('urn:pep-test#'));
/** The peer's user's client answers it (from `from`, the one asked unless said otherwise). */
const answer = (q: Element, features: string[], from = q.attrs.to) =>
  peer.incoming.send(`<iq type='result' id='${q.attrs.id}' from='${from}' to='${q.attrs.from}'><query xmlns='${NS_DISCO_INFO}' node='${q.getChild('query')!.attrs.node}'><identity category='client' type='pc' name='pep test'/>${features.map((f) => `<feature var='${f}'/>`).join('')}</query></iq>`);
/** A notification from `owner` about `node` with item `id`, to `to`. */
const isEventTo = (owner: string, node: string, id: string, to: string) => (el: Element) => isEventItem(owner, node, id)(el) && el.attrs.to === to;

test("notifications and last items to a peer's users (XEP-0163 §4.3): caps asked of the remote client once per ver, over the federation; each resource that asks for the node; forgotten when unavailable", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const carol = `carol-${uid('c')}@peer.example`;
  await contacts(t, alice, carol);
  const feats = ['urn:test:tune+notify', `urn:test:other+notify-${uid('v')}`];
  const lo = Date.now();
  t.is((await publish(alice, 'urn:test:tune', `<tune xmlns='urn:test'/>`, { id: 't1' })).attrs.type, 'result');
  const hi = Date.now();
  // a-phone comes online: its caps are asked of it, and it gets the last item (§4.3.3) once they are known.
  let from = await mark();
  peer.incoming.send(presenceOf(`${carol}/a-phone`, alice.bare, feats));
  const q = await sent('the caps query to a-phone', isCapsQueryTo(`${carol}/a-phone`), from);
  t.is(q.attrs.from, 'a.example');
  answer(q, feats);
  await sent("a-phone's last item", isEventTo(alice.bare, 'urn:test:tune', 't1', `${carol}/a-phone`), from);
  // b-tablet, same client version: not asked again (the ver was verified), the last item at once.
  from = await mark();
  peer.incoming.send(presenceOf(`${carol}/b-tablet`, alice.bare, feats));
  const tabletLast = await sent("b-tablet's last item", isEventTo(alice.bare, 'urn:test:tune', 't1', `${carol}/b-tablet`), from);
  t.false(out.items.slice(from, out.items.findIndex((it) => it.kind === 'el' && it.el === tabletLast)).some((it) => it.kind === 'el' && isCapsQueryTo(`${carol}/b-tablet`)(it.el)), 'a verified ver is not asked again');
  dated(t, tabletLast, alice.bare, lo, hi, 'a last item over the federation (XEP-0163 §4.3.4)');
  // c-laptop says nothing of its caps at first: its last item comes with the first presence that does.
  from = await mark();
  peer.incoming.send(presenceOf(`${carol}/c-laptop`, alice.bare));
  peer.incoming.send(presenceOf(`${carol}/c-laptop`, alice.bare, feats));
  await sent("c-laptop's last item", isEventTo(alice.bare, 'urn:test:tune', 't1', `${carol}/c-laptop`), from);
  // A publish: each of them.
  from = await mark();
  t.is((await publish(alice, 'urn:test:tune', `<tune xmlns='urn:test'/>`, { id: 't2' })).attrs.type, 'result');
  for (const r of ['a-phone', 'b-tablet', 'c-laptop']) t.true(undated(await sent(`t2 to ${r}`, isEventTo(alice.bare, 'urn:test:tune', 't2', `${carol}/${r}`), from)), `t2 to ${r}: a live notification, no delay`);
  // a-phone leaves (alice sees it go: its end was read before). The next publish goes to the others; a-phone's
  // would have gone first (the resources are notified in JID order, over the one stream to the peer).
  let af = alice.c.items.length;
  peer.incoming.send(`<presence from='${carol}/a-phone' to='${alice.bare}' type='unavailable'/>`);
  await expect(alice, "a-phone's unavailable", (el) => el.name === 'presence' && el.attrs.from === `${carol}/a-phone` && el.attrs.type === 'unavailable', af);
  from = await mark();
  t.is((await publish(alice, 'urn:test:tune', `<tune xmlns='urn:test'/>`, { id: 't3' })).attrs.type, 'result');
  const t3 = await sent('t3 to b-tablet', isEventTo(alice.bare, 'urn:test:tune', 't3', `${carol}/b-tablet`), from);
  const before = out.items.slice(from, out.items.findIndex((it) => it.kind === 'el' && it.el === t3));
  t.false(before.some((it) => it.kind === 'el' && isEventTo(alice.bare, 'urn:test:tune', 't3', `${carol}/a-phone`)(it.el)), 'none to a resource that left');
  await sent('t3 to c-laptop', isEventTo(alice.bare, 'urn:test:tune', 't3', `${carol}/c-laptop`), from);
  // A node its client did not ask for: nothing. Control: a publish of the tune node after it.
  af = await mark();
  t.is((await publish(alice, 'urn:test:mood', `<mood xmlns='urn:test'/>`, { id: 'm1' })).attrs.type, 'result');
  t.is((await publish(alice, 'urn:test:tune', `<tune xmlns='urn:test'/>`, { id: 't4' })).attrs.type, 'result');
  const t4 = await sent('t4 to b-tablet', isEventTo(alice.bare, 'urn:test:tune', 't4', `${carol}/b-tablet`), af);
  t.false(out.items.slice(af, out.items.findIndex((it) => it.kind === 'el' && it.el === t4)).some((it) => it.kind === 'el' && isEvent(alice.bare, 'urn:test:mood')(it.el)), 'no notification of a node not asked for');
});

test("a peer's caps answer counts only from the resource asked; a stranger's presence asks nothing", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const dave = `dave-${uid('d')}@peer.example`;
  await contacts(t, alice, dave);
  const stranger = `eve-${uid('e')}@peer.example`;
  const feats = ['urn:test:geo+notify', `urn:test:other+notify-${uid('v')}`];
  const from = await mark();
  // A stranger first (no subscription), then the contact: what the stranger's presence caused would come first.
  peer.incoming.send(presenceOf(`${stranger}/x`, alice.bare, [...feats, 'urn:test:stranger']));
  peer.incoming.send(presenceOf(`${dave}/home`, alice.bare, feats));
  const q = await sent("the caps query to dave's resource", isCapsQueryTo(`${dave}/home`), from);
  t.false(out.items.slice(from, out.items.findIndex((it) => it.kind === 'el' && it.el === q)).some((it) => it.kind === 'el' && isCapsQueryTo(`${stranger}/x`)(it.el)), 'nothing asked of a stranger');
  // Another resource of the peer answers first, claiming nothing: not taken; then the one asked.
  answer(q, [], `${dave}/other`);
  answer(q, feats);
  await untilRemoteNotified(alice, `${dave}/home`, 'urn:test:geo');
  t.pass();
});

/** alice publishes probes to `node` until one reaches `jid` (a peer's resource whose caps are being learnt). */
async function untilRemoteNotified(owner: Peer, jid: string, node: string): Promise<void> {
  const start = await mark();
  for (let i = 0; i < 40; i++) {
    const id = uid('probe');
    const res = await publish(owner, node, `<probe xmlns='urn:pep-test:probe'/>`, { id });
    if (res.attrs.type !== 'result') throw new Error(res.toString());
    if (await within(out.find(isEventTo(owner.bare, node, id, jid), start), 250, 'probe').catch(() => undefined)) return;
  }
  throw new Error(`no notification of ${node} reached ${jid}`);
}

test("the last item on approving a peer's user's subscription (on_sub), to its resources whose presence came before; a repeated approval sends none", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const fred = `fred-${uid('f')}@peer.example`;
  ok(t, await publish(alice, 'urn:test:status', `<s xmlns='urn:test'/>`, { id: 's1', options: { 'pubsub#send_last_published_item': 'on_sub' } }));
  // alice gets fred's presence ('to'): his resource and caps are learnt, but he is not subscribed to her yet.
  let f = alice.c.items.length;
  alice.c.send(`<presence to='${fred}' type='subscribe'/>`);
  f = await push(t, alice, fred, 'none', 'subscribe', f);
  peer.incoming.send(`<presence from='${fred}' to='${alice.bare}' type='subscribed'/>`);
  f = await push(t, alice, fred, 'to', undefined, f);
  const feats = ['urn:test:status+notify', `urn:test:other+notify-${uid('v')}`];
  let from = await mark();
  peer.incoming.send(presenceOf(`${fred}/desk`, alice.bare, feats));
  answer(await sent('the caps query', isCapsQueryTo(`${fred}/desk`), from), feats);
  await expect(alice, "fred's presence", (el) => el.name === 'presence' && el.attrs.from === `${fred}/desk`, f);
  // He asks, alice approves: the last item follows.
  peer.incoming.send(`<presence from='${fred}' to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, "fred's request", (el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === fred, f);
  from = await mark();
  alice.c.send(`<presence to='${fred}' type='subscribed'/>`);
  await sent('the last item on approval', isEventTo(alice.bare, 'urn:test:status', 's1', `${fred}/desk`), from);
  // Again, changing nothing: a publish after it is the control (both go out on the one stream to the peer, the
  // repeated approval's last item, if any, first).
  from = await mark();
  alice.c.send(`<presence to='${fred}' type='subscribed'/>`);
  ok(t, await publish(alice, 'urn:test:status', `<s xmlns='urn:test'/>`, { id: 's2' }));
  const s2 = await sent('the control notification', isEventTo(alice.bare, 'urn:test:status', 's2', `${fred}/desk`), from);
  t.false(out.items.slice(from, out.items.findIndex((it) => it.kind === 'el' && it.el === s2)).some((it) => it.kind === 'el' && isEventTo(alice.bare, 'urn:test:status', 's1', `${fred}/desk`)(it.el)), 'no second last item');
});

function ok(t: ExecutionContext, res: Element): void {
  t.is(res.attrs.type, 'result', res.toString());
}

test("the pubsub service (XEP-0060) for a peer's user: a subscription over the federation, and the notification from pubsub.<domain> on a stream of that domain's own", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const service = 'pubsub.a.example';
  const node = `urn:test:feed:${uid('n')}`;
  const made = await within(alice.c.request(`<iq type='set' id='mk' to='${service}'><pubsub xmlns='${NS_PUBSUB}'><create node='${node}'/></pubsub></iq>`, 'mk'), WAIT, 'create');
  t.is(made.attrs.type, 'result', made.toString());
  const dave = `dave-${uid('d')}@peer.example/laptop`;
  const id = uid('sub');
  peer.incoming.send(`<iq type='set' id='${id}' from='${dave}' to='${service}'><pubsub xmlns='${NS_PUBSUB}'><subscribe node='${node}' jid='${dave}'/></pubsub></iq>`);
  // The answer comes from pubsub.a.example, on our server's stream of that domain to the peer.
  const svc = await peer.outgoing(service);
  const res = await within(svc.find((el) => el.name === 'iq' && el.attrs.id === id), WAIT, 'the subscription result');
  t.is(res.attrs.type, 'result', res.toString());
  t.is(res.attrs.from, service);
  t.is(res.getChild('pubsub', NS_PUBSUB)?.getChild('subscription')?.attrs.subscription, 'subscribed');
  // Someone of another server may not create nodes here (§8.1.3.1: only the server's users).
  const id2 = uid('mk');
  peer.incoming.send(`<iq type='set' id='${id2}' from='${dave}' to='${service}'><pubsub xmlns='${NS_PUBSUB}'><create node='urn:test:theirs'/></pubsub></iq>`);
  const refused = await within(svc.find((el) => el.name === 'iq' && el.attrs.id === id2), WAIT, 'the refusal');
  t.is(refused.getChild('error')?.getChild('forbidden', 'urn:ietf:params:xml:ns:xmpp-stanzas') !== undefined, true, refused.toString());
  const at = svc.items.length;
  t.is((await publish(alice, node, `<entry xmlns='urn:test'>hi</entry>`, { id: 'e1', to: service })).attrs.type, 'result');
  const ev = await within(svc.find(isEventTo(service, node, 'e1', dave), at), WAIT, 'the notification to the peer');
  t.is(ev.getChild('event')!.getChild('items')!.getChild('item')!.getChild('entry', 'urn:test')?.getText(), 'hi');
});

test("the pubsub service and a peer's user's presence (XEP-0060 §12.4, on_sub_and_presence): a subscription request approved with its presence and one asked back, a probe answered; a resource's first available presence (not a status change) brings the last item to it, again after its unavailable one", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const service = 'pubsub.a.example';
  const node = `urn:test:feed:${uid('n')}`;
  const config = form(NODE_CONFIG, { 'pubsub#send_last_published_item': 'on_sub_and_presence' });
  const made = await within(alice.c.request(`<iq type='set' id='mk2' to='${service}'><pubsub xmlns='${NS_PUBSUB}'><create node='${node}'/><configure>${config}</configure></pubsub></iq>`, 'mk2'), WAIT, 'create');
  t.is(made.attrs.type, 'result', made.toString());
  t.is((await publish(alice, node, `<entry xmlns='urn:test'>hi</entry>`, { id: 'e1', to: service })).attrs.type, 'result');
  const erin = `erin-${uid('e')}@peer.example`;
  const laptop = `${erin}/laptop`;
  const svc = await peer.outgoing(service);
  const id = uid('sub');
  peer.incoming.send(`<iq type='set' id='${id}' from='${laptop}' to='${service}'><pubsub xmlns='${NS_PUBSUB}'><subscribe node='${node}' jid='${erin}'/></pubsub></iq>`);
  const res = await within(svc.find((el) => el.name === 'iq' && el.attrs.id === id), WAIT, 'the subscription result');
  t.is(res.attrs.type, 'result', res.toString());
  await within(svc.find(isEventTo(service, node, 'e1', erin)), WAIT, 'the last item on subscription, to the subscribed (bare) JID');
  const isPresence = (type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from === service && el.attrs.to === erin && el.attrs.type === type;
  let at = svc.items.length;
  peer.incoming.send(`<presence from='${erin}' to='${service}' type='subscribe'/>`);
  for (const [type, what] of [['subscribed', 'approved'], [undefined, 'its presence'], ['subscribe', 'a request back']] as const) await within(svc.find(isPresence(type), at), WAIT, what);
  at = svc.items.length;
  peer.incoming.send(`<presence from='${erin}' to='${service}' type='probe'/>`);
  await within(svc.find(isPresence(), at), WAIT, 'the answer to a probe (available)');
  // Its server's presence says nothing of whether it is new: the first available presence of a resource (since its
  // unavailable one) brings the last item, to it; a status change does not. The control for that: another
  // resource's first presence, whose last item the service sends after any it would have sent for the change.
  at = svc.items.length;
  peer.incoming.send(`<presence from='${laptop}' to='${service}'/>`);
  await within(svc.find(isEventTo(service, node, 'e1', laptop), at), WAIT, 'the last item on its first presence');
  at = svc.items.length;
  peer.incoming.send(`<presence from='${laptop}' to='${service}'><show>away</show></presence>`);
  peer.incoming.send(`<presence from='${erin}/phone' to='${service}'/>`);
  const phone = await within(svc.find(isEventTo(service, node, 'e1', `${erin}/phone`), at), WAIT, "the other resource's last item");
  const upTo = svc.items.findIndex((it) => it.kind === 'el' && it.el === phone);
  t.false(svc.items.slice(at, upTo).some((it) => it.kind === 'el' && isEventTo(service, node, 'e1', laptop)(it.el)), 'no last item on a status change');
  // Unavailable and errors: nothing (the control: a disco#info after them).
  at = svc.items.length;
  peer.incoming.send(`<presence from='${laptop}' to='${service}' type='unavailable'/>`);
  peer.incoming.send(`<presence from='${laptop}' to='${service}' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`);
  const id2 = uid('info');
  peer.incoming.send(`<iq type='get' id='${id2}' from='${laptop}' to='${service}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
  const info = await within(svc.find((el) => el.attrs.id === id2, at), WAIT, 'the disco#info answer');
  const end = svc.items.findIndex((it) => it.kind === 'el' && it.el === info);
  t.deepEqual(svc.items.slice(at, end).flatMap((it) => (it.kind === 'el' ? [it.el.toString()] : [])), [], 'nothing before it');
  // Back after its unavailable presence: the last item again.
  at = svc.items.length;
  peer.incoming.send(`<presence from='${laptop}' to='${service}'/>`);
  await within(svc.find(isEventTo(service, node, 'e1', laptop), at), WAIT, 'the last item when it comes back');
});
