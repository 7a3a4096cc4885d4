// The orders of test/protocol/ordering.test.ts across real cluster nodes
// (separate processes joined through a real redis-server): an inbound
// subscription approval or cancellation reaches the user before the roster
// push it causes (RFC 6121 §3.1.6, §3.2.3, §3.3.3), and a message to the bare
// JID sent once the server has read a session's initial presence is
// delivered live, on another node, never stored offline.
import test from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { clusterPeers, expect, isPresence, isPush, messagesAfterPresence, rosterItem, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';

let cluster: TestCluster;
let nodes: NodeProcess[];
let accounts: PostgresAccountStore;
/** The cluster's offline messages, in PostgreSQL. */
let offline: PostgresOfflineStore;

test.before(async () => {
  cluster = await startCluster(['o1', 'o2']);
  nodes = cluster.nodes;
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  offline = await PostgresOfflineStore.open(cluster.databaseUrl);
});
test.after.always(async () => {
  await offline?.close();
  await accounts?.close();
  await cluster?.stop();
});

const { user } = clusterPeers(() => accounts);

async function indexOf(p: Peer, what: string, pred: (el: Element) => boolean, from: number): Promise<number> {
  const el = await expect(p, what, pred, from);
  return p.c.items.findIndex((it, i) => i >= from && it.kind === 'el' && it.el === el);
}
const pushed = (jid: string, subscription: string) => (el: Element) => isPush(jid)(el) && rosterItem(el)?.attrs.subscription === subscription;

test('across nodes: an inbound approval, cancellation or unsubscribe comes before its roster push (RFC 6121 §3.1.6, §3.2.3, §3.3.3)', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  await expect(bob, 'the request', isPresence(alice.bare, 'subscribe'));
  let a = alice.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  const approval = await indexOf(alice, 'subscribed', isPresence(bob.bare, 'subscribed'), a);
  t.true(approval < (await indexOf(alice, 'push (to)', pushed(bob.bare, 'to'), a)), 'subscribed before the push');

  const b = bob.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='unsubscribe'/>`);
  const unsub = await indexOf(bob, 'unsubscribe', isPresence(alice.bare, 'unsubscribe'), b);
  t.true(unsub < (await indexOf(bob, 'push (none)', pushed(alice.bare, 'none'), b)), 'unsubscribe before the push');

  await subscribe(alice, bob);
  a = alice.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='unsubscribed'/>`);
  const cancel = await indexOf(alice, 'unsubscribed', isPresence(bob.bare, 'unsubscribed'), a);
  t.true(cancel < (await indexOf(alice, 'push (none)', pushed(bob.bare, 'none'), a)), 'unsubscribed before the push');
});

test('across nodes: a message to the bare JID sent once initial presence was read is delivered live, never stored (50 rounds, no sleeps)', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  const stored = await messagesAfterPresence(alice, bob, 50);
  t.deepEqual(stored, [], 'every message delivered live, none through offline storage');
  t.is(await offline.count(alice.name), 0);
});
