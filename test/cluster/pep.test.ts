// PEP (XEP-0163) in a cluster of two nodes on one PostgreSQL and a private
// Redis: a publish on node 1 notifies a contact whose session is on node 2
// (its caps known only there), and a contact logging in on node 2 gets the
// last published item of a node published on node 1; and the
// publish-subscribe service (XEP-0060, pubsub.<domain>) driven by
// @xmpp/client on both nodes: a node created on node 1, a subscription made
// on node 2, the notification of a publish on node 1 reaching it there.
import test from 'ava';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { clusterPeers, enableResume, expect, isSm, ready, resumeOn, subscribe } from '../helpers/im.ts';
import { NS_EVENT, answerCaps, before, capsPresence, isCapsQuery, isEvent, isEventItem, publish, untilNotified } from '../helpers/pep.ts';

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

test('@xmpp/client on two nodes: the pubsub service (XEP-0060): a node made on node 1, subscribed to on node 2, its publish notified there', async (t) => {
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
  answerCaps(bob, feats, bob.c.items.length);
  bob.c.send(capsPresence(feats));
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
  const asked1 = answerCaps(first, feats, first.c.items.length);
  first.c.send(capsPresence(feats));
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
