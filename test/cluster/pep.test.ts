// PEP (XEP-0163) in a cluster of two nodes on one PostgreSQL and a private
// Redis: a publish on node 1 notifies a contact whose session is on node 2
// (its caps known only there), and a contact logging in on node 2 gets the
// last published item of a node published on node 1; and the
// publish-subscribe service (XEP-0060, pubsub.<domain>) driven by
// @xmpp/client on both nodes: a node created on node 1, a subscription made
// on node 2, the notifications of a publish, a retract, a purge and the
// node's deletion on node 1 reaching it there. Across the nodes too: the last
// published item on a subscription approved on the other node (XEP-0060
// on_sub), and a whitelist node's members named on node 1 read and notified
// on node 2, others refused.
import test from 'ava';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { clusterPeers, enableResume, expect, isSm, ready, resumeOn, subscribe } from '../helpers/im.ts';
import { announceCaps, answerCaps, before, capsPresence, eventItemId, iq, isCapsQuery, isEvent, isEventItem, itemIds, items, NS_EVENT, NS_OWNER, ok, publish, refused, untilNotified } from '../helpers/pep.ts';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['e1', 'e2']);
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { user, connect, account } = clusterPeers(() => accounts);

test('@xmpp/client on two nodes: the pubsub service (XEP-0060): a node made on node 1, subscribed to on node 2; its publish, retract, purge and delete notified there', async (t) => {
  const [n1, n2] = cluster.nodes;
  const service = 'pubsub.localhost';
  const NS = 'http://jabber.org/protocol/pubsub';
  const clients: XmppClient[] = [];
  t.teardown(() => Promise.allSettled(clients.map((c) => c.stop())).then(() => undefined));
  const online = async (node: typeof n1, base: string): Promise<XmppClient> => {
    const name = await account(base);
    const c = xmppClient({ c2sPort: node.c2sPort, tlsPort: node.tlsPort, certFile: cluster.certFile }, { username: name, password: `${name}-pw`, resource: node.name });
    c.reconnect.stop();
    clients.push(c);
    await within(c.start(), 15_000, `${name} logging in to ${node.name}`);
    await c.send(xml('presence'));
    return c;
  };
  const alice = await online(n1, 'alice');
  const bob = await online(n2, 'bob');
  const node = `urn:test:feed:${Date.now()}`;
  await within(alice.iqCaller.set(xml('pubsub', { xmlns: NS }, xml('create', { node })), service), 10_000, 'create on node 1');
  const bobJid = bob.jid!.toString();
  const sub = await within(bob.iqCaller.set(xml('pubsub', { xmlns: NS }, xml('subscribe', { node, jid: bobJid })), service), 10_000, 'subscribe on node 2');
  t.is(sub.getChild('subscription')?.attrs.subscription, 'subscribed', sub.toString());
  const notified = within(new Promise<Element>((resolve) => {
    bob.on('stanza', (el: Element) => {
      if (el.name === 'message' && el.attrs.from === service && el.getChild('event', NS_EVENT)?.getChild('items')?.attrs.node === node) resolve(el);
    });
  }), 10_000, 'the notification on node 2');
  await within(alice.iqCaller.set(xml('pubsub', { xmlns: NS }, xml('publish', { node }, xml('item', { id: 'first' }, xml('entry', { xmlns: 'http://www.w3.org/2005/Atom' }, xml('title', {}, 'hello'))))), service), 10_000, 'publish on node 1');
  const ev = await notified;
  const item = ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!;
  t.is(item.attrs.id, 'first');
  t.is(item.getChild('entry', 'http://www.w3.org/2005/Atom')?.getChildText('title'), 'hello');
  t.is(ev.attrs.to, bobJid);

  // The owner's retract (§7.2.2.1: notify_retract, on by default), purge (§8.5.2) and delete (§8.4.2) on node 1,
  // each notified to the subscriber on node 2.
  const fromService = (what: (event: Element) => boolean) => (el: Element) => {
    const event = el.name === 'message' && el.attrs.from === service && el.attrs.to === bobJid ? el.getChild('event', NS_EVENT) : undefined;
    return event !== undefined && what(event);
  };
  const nextEvent = (what: string, pred: (event: Element) => boolean) => within(new Promise<Element>((resolve) => {
    const on = (el: Element) => {
      if (!fromService(pred)(el)) return;
      bob.off('stanza', on);
      resolve(el);
    };
    bob.on('stanza', on);
  }), 10_000, `${what} on node 2`);
  const retracted = nextEvent('the retraction', (e) => e.getChild('items')?.attrs.node === node && e.getChild('items')!.getChild('retract')?.attrs.id === 'first');
  await within(alice.iqCaller.set(xml('pubsub', { xmlns: NS }, xml('retract', { node }, xml('item', { id: 'first' }))), service), 10_000, 'retract on node 1');
  await retracted;
  const second = nextEvent('the second item', (e) => e.getChild('items')?.getChild('item')?.attrs.id === 'second');
  await within(alice.iqCaller.set(xml('pubsub', { xmlns: NS }, xml('publish', { node }, xml('item', { id: 'second' }, xml('entry', { xmlns: 'http://www.w3.org/2005/Atom' }, xml('title', {}, 'again'))))), service), 10_000, 'second publish on node 1');
  await second;
  const purged = nextEvent('the purge', (e) => e.getChild('purge')?.attrs.node === node);
  await within(alice.iqCaller.set(xml('pubsub', { xmlns: `${NS}#owner` }, xml('purge', { node })), service), 10_000, 'purge on node 1');
  await purged;
  const left = await within(bob.iqCaller.get(xml('pubsub', { xmlns: NS }, xml('items', { node })), service), 10_000, 'items on node 2 after the purge');
  t.deepEqual(left.getChild('items')?.getChildren('item') ?? [], [], 'purged');
  const deleted = nextEvent('the deletion', (e) => e.getChild('delete')?.attrs.node === node);
  await within(alice.iqCaller.set(xml('pubsub', { xmlns: `${NS}#owner` }, xml('delete', { node })), service), 10_000, 'delete on node 1');
  await deleted;
  const gone = await within(bob.iqCaller.get(xml('pubsub', { xmlns: NS }, xml('items', { node })), service).then(() => 'answered', (err: { condition?: string }) => err.condition), 10_000, 'items on node 2 after the delete');
  t.is(gone, 'item-not-found', 'deleted');
});

test('a publish on node 1 notifies a contact on node 2; its next login on node 2 gets the last item', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  await subscribe(bob, alice);
  const feats = ['urn:xmpp:avatar:metadata+notify'];
  const from = bob.c.items.length;
  answerCaps(bob, feats, from);
  bob.c.send(capsPresence(feats));
  await expect(bob, 'the caps query', (el) => el.name === 'iq' && el.attrs.type === 'get', from);
  // The caps taken into account on node 2: alice's probes reach bob.
  await untilNotified(alice, bob, 'urn:xmpp:avatar:metadata');
  const f = bob.c.items.length;
  const res = await publish(alice, 'urn:xmpp:avatar:metadata', `<metadata xmlns='urn:xmpp:avatar:metadata'><info id='abc' bytes='10' type='image/png'/></metadata>`, { id: 'abc' });
  t.is(res.attrs.type, 'result', res.toString());
  const ev = await expect(bob, 'the notification across nodes', isEventItem(alice.bare, 'urn:xmpp:avatar:metadata', 'abc'), f);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.attrs.id, 'abc');
  bob.c.destroy();
  const again = await connect(t, n2, bob.name, 'again');
  answerCaps(again, feats, 0);
  await ready(again, capsPresence(feats));
  const last = await expect(again, 'the last item at login on node 2', isEvent(alice.bare, 'urn:xmpp:avatar:metadata'), 0);
  t.is(last.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.attrs.id, 'abc');
});

test('a session resumed on the other node (XEP-0198) keeps the caps its presence carried: notifications reach it there', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  await subscribe(bob, alice);
  const node = `urn:test:moved${Date.now()}`;
  const feats = [`${node}+notify`];
  announceCaps(bob, feats);
  await untilNotified(alice, bob, node);
  const { id } = await enableResume(bob);
  bob.c.destroy();
  // Resumed on node 1, where bob's caps were never read from a presence of his.
  const { peer, answer } = await resumeOn(t, n1, bob, id, 0);
  t.true(isSm('resumed')(answer), answer.toString());
  const from = peer.c.items.length;
  const res = await publish(alice, node, `<x xmlns='urn:test'/>`, { id: 'after-resume' });
  t.is(res.attrs.type, 'result', res.toString());
  await expect(peer, 'the notification on the node it was resumed on', isEventItem(alice.bare, node, 'after-resume'), from);
});

test('caps verified on one node are not asked again on the other (Redis), and serve its sessions', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const first = await user(t, n1, 'carl');
  await subscribe(first, alice);
  const feats = ['urn:test:shared+notify', `urn:test:salt${Date.now()}`];
  const asked1 = announceCaps(first, feats);
  await expect(first, 'the caps query on node 1', (el) => el.name === 'iq' && el.attrs.type === 'get', 0);
  // Verified on node 1 (and written to Redis as it was): alice's probes reach carl there.
  await untilNotified(alice, first, 'urn:test:shared');
  const second = await connect(t, n2, first.name, 'other');
  const asked2 = answerCaps(second, feats, 0);
  await ready(second, capsPresence(feats));
  // The last item of the node at login needs the caps known on node 2; had node 2 asked, its question would
  // have come first (the item is sent once the answer is in).
  t.false((await before(second, 'the last item at login on node 2', isEvent(alice.bare, 'urn:test:shared'), 0)).some(isCapsQuery), 'node 2 read the ver from Redis');
  t.is(asked1.asked, 1);
  t.is(asked2.asked, 0, 'node 2 read the ver from Redis');
  const from = second.c.items.length;
  await publish(alice, 'urn:test:shared', `<x xmlns='urn:test'/>`, { id: 'x' });
  await expect(second, 'the notification on node 2', isEventItem(alice.bare, 'urn:test:shared', 'x'), from);
});

test('the last published item on subscription approval (on_sub) crosses nodes: the owner approves on one node, the new subscriber gets it on the other; both placements', async (t) => {
  const [n1, n2] = cluster.nodes;
  for (const [ownerNode, contactNode] of [[n1, n2], [n2, n1]]) {
    const where = `owner on ${ownerNode.name}, contact on ${contactNode.name}`;
    const alice = await user(t, ownerNode, 'alice');
    const bob = await user(t, contactNode, 'bob');
    const carol = await user(t, ownerNode, 'carol');
    const STATUS = 'urn:test:status';
    const HIDDEN = 'urn:test:hidden';
    ok(t, await publish(alice, STATUS, `<s xmlns='urn:test'>here</s>`, { id: 's1', options: { 'pubsub#send_last_published_item': 'on_sub' } }), `${where}: publish`);
    ok(t, await publish(alice, HIDDEN, `<s xmlns='urn:test'/>`, { id: 'h1', options: { 'pubsub#access_model': 'whitelist' } }), `${where}: publish to a whitelist node`);
    const feats = [`${STATUS}+notify`, `${HIDDEN}+notify`];
    announceCaps(bob, feats);
    // bob's caps known where he lives: the probes of carol (on the owner's node), whose presence he gets, reach him.
    await subscribe(bob, carol);
    await untilNotified(carol, bob, STATUS);
    const from = bob.c.items.length;
    await subscribe(bob, alice);
    const ev = await expect(bob, `${where}: the last item on approval`, isEvent(alice.bare, STATUS), from);
    t.is(eventItemId(ev), 's1', where);
    t.is(ev.attrs.to, bob.jid, where);
    // The status item is the control: the last items of an approval leave the owner's worker one node after
    // another in node name order, 'hidden' before 'status', on one path to bob's node.
    t.false((await before(bob, 'the last item on approval', isEvent(alice.bare, STATUS), from)).some(isEvent(alice.bare, HIDDEN)), `${where}: not a node he may not see`);
  }
});

test('a whitelist node across nodes (XEP-0060 §4.5): a member the owner named on node 1 reads and is notified on node 2; a contact not on the list is refused (closed-node) and told nothing; dropped from the list, the member too', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  const carol = await user(t, n2, 'carol');
  await subscribe(bob, alice);
  await subscribe(carol, alice);
  const WL = 'urn:test:wl';
  const CTL = 'urn:test:wl-ctl';
  const whitelist = { 'pubsub#access_model': 'whitelist' };
  const feats = [`${WL}+notify`, `${CTL}+notify`];
  for (const p of [bob, carol]) {
    announceCaps(p, feats);
  }
  ok(t, await publish(alice, WL, `<x xmlns='urn:test'>secret</x>`, { id: 'w1', options: whitelist }), 'publish');
  refused(t, await items(bob, alice.bare, WL), 'not-allowed', 'closed-node', 'bob before he is a member');
  const member = (jid: string, affiliation: string) => iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><affiliations node='${WL}'><affiliation jid='${jid}' affiliation='${affiliation}'/></affiliations></pubsub>`);
  ok(t, await member(bob.bare, 'member'), 'bob made a member on node 1');
  t.deepEqual(itemIds(await items(bob, alice.bare, WL)), ['w1'], 'the member reads on node 2');
  refused(t, await items(carol, alice.bare, WL), 'not-allowed', 'closed-node', 'carol, not on the list, on node 2');

  // bob's caps known on node 2 and his membership honoured: the probes on the node itself reach him; carol's caps
  // known there too (the control node is open to her).
  await untilNotified(alice, bob, WL, { options: whitelist });
  await untilNotified(alice, carol, CTL);
  let from = [bob, carol].map((p) => p.c.items.length);
  ok(t, await publish(alice, WL, `<x xmlns='urn:test'>news</x>`, { id: 'w2', options: whitelist }), 'publish w2');
  const ev = await expect(bob, 'the notification to the member', isEventItem(alice.bare, WL, 'w2'), from[0]);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.getChildText('x', 'urn:test'), 'news');
  // Control: a publish after it, notified to both from alice's worker on one path to node 2.
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'c1' }), 'control publish');
  t.false((await before(carol, 'the control notification', isEventItem(alice.bare, CTL, 'c1'), from[1])).some(isEvent(alice.bare, WL)), 'not on the whitelist: no notification');

  // Dropped from the list on node 1: refused on node 2 at once, and told nothing more.
  ok(t, await member(bob.bare, 'none'), 'bob no longer a member');
  refused(t, await items(bob, alice.bare, WL), 'not-allowed', 'closed-node', 'bob after he was dropped');
  from = [bob, carol].map((p) => p.c.items.length);
  ok(t, await publish(alice, WL, `<x xmlns='urn:test'/>`, { id: 'w3', options: whitelist }), 'publish w3');
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'c2' }), 'second control publish');
  t.false((await before(bob, 'the control notification', isEventItem(alice.bare, CTL, 'c2'), from[0])).some(isEvent(alice.bare, WL)), 'dropped from the whitelist: no notification');
});
