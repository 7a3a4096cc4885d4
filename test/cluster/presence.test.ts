// Presence, subscriptions, offline messages and carbons across real cluster
// nodes (separate processes joined through a real redis-server): the parties
// of each exchange are connected to different nodes, and a node killed with
// SIGKILL leaves its sessions' unavailable presence to the survivors, within
// the lease bound.
//
// Raw clients (STARTTLS, SASL PLAIN, bind); every test uses fresh accounts,
// so the tests of this file run concurrently on one cluster. Nothing waits
// on time: each wait is for a stanza, bounded by a timeout that fails with
// what was awaited. "Nothing else arrived" is only checked behind a ping on
// the same stream, for what that stream's own session causes.
import test from 'ava';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { uid } from '../helpers/protocol.ts';
import { NS_DELAY, approve, barrier, carbons, checkCarbon, clusterPeers, expect, isCarbon, isPresence, push, ready, rosterOf, subscribe, summary } from '../helpers/im.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';

// Long enough that a loaded machine renews in time.
const LEASE_MS = 3000;

/** n1, n2, n3 live throughout; doomed is killed by one test. */
let nodes: NodeProcess[];
let doomed: NodeProcess;
let accounts: PostgresAccountStore;
/** The cluster's offline messages, in PostgreSQL. */
let offline: PostgresOfflineStore;
let cluster: TestCluster;

test.before(async () => {
  cluster = await startCluster(['p0', 'p1', 'p2', 'p3'], { XMPP_NODE_LEASE_MS: String(LEASE_MS) });
  [doomed, ...nodes] = cluster.nodes;
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  offline = await PostgresOfflineStore.open(cluster.databaseUrl);
});

test.after.always(async () => {
  await offline?.close();
  await accounts?.close();
  await cluster?.stop();
});

const { account, connect, user } = clusterPeers(() => accounts);

test('subscription handshake across nodes, both online: pushes, presence and "both" on both sides', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  let [a, b] = [alice.c.items.length, bob.c.items.length];

  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  a = await push(t, alice, bob.bare, 'none', 'subscribe', a);
  const req = await expect(bob, 'the request, through node 1', isPresence(alice.bare, 'subscribe'), b);
  t.is(req.attrs.to, bob.bare);

  // Bob's presence comes from node 2.
  const approved = await approve(t, alice, bob, { requester: 'to', approver: 'from' }, a, bob.c.items.length);
  await expect(alice, 'subscribed', isPresence(bob.bare, 'subscribed'), a);
  t.is(approved.presence.attrs.to, alice.bare);

  // And back: alice's presence comes from node 1.
  a = alice.c.items.length;
  b = approved.next;
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, "bob's request", isPresence(bob.bare, 'subscribe'), a);
  await approve(t, bob, alice, { requester: 'both', approver: 'both' }, b, a);
  await expect(bob, 'subscribed', isPresence(alice.bare, 'subscribed'), b);
  t.deepEqual(summary(await rosterOf(alice)), [[bob.bare, 'both', undefined]]);
  t.deepEqual(summary(await rosterOf(bob)), [[alice.bare, 'both', undefined]]);
});

test('a request to an offline user, sent through node 1, is kept and delivered when the user logs in on node 3', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bobName = await account('bob');
  const bobBare = `${bobName}@localhost`;
  let a = alice.c.items.length;
  alice.c.send(`<presence to='${bobBare}' type='subscribe'><status>from node 1</status></presence>`);
  a = await push(t, alice, bobBare, 'none', 'subscribe', a);

  const bob = await connect(t, nodes[2], bobName, 'n3');
  const from = bob.c.items.length;
  t.deepEqual(await ready(bob), [], 'a pending request is not a roster item');
  const req = await expect(bob, 'the kept request', isPresence(alice.bare, 'subscribe'), from);
  t.is(req.getChildText('status'), 'from node 1');

  // Bob's presence comes from node 3.
  await approve(t, alice, bob, { requester: 'to', approver: 'from' }, a, bob.c.items.length);
  await expect(alice, 'subscribed', isPresence(bobBare, 'subscribed'), a);
});

test('presence updates cross nodes to the subscriber; a new resource on node 3 probes and gets the contact on node 2', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  await subscribe(alice, bob);
  await subscribe(bob, alice);

  let a = alice.c.items.length;
  bob.c.send(`<presence><show>away</show><status>in a meeting</status></presence>`);
  const away = await expect(alice, "bob's update", (el) => isPresence(bob.jid)(el) && el.getChildText('show') === 'away', a);
  t.is(away.getChildText('status'), 'in a meeting');
  t.is(away.attrs.to, alice.bare);

  a = alice.c.items.length;
  const b = bob.c.items.length;
  const alice3 = await connect(t, nodes[2], alice.name, 'n3');
  const from = alice3.c.items.length;
  await ready(alice3);
  // §4.3: the probe crosses to node 2 and bob's session answers with its current presence.
  const probed = await expect(alice3, "bob's presence, answering the probe", (el) => isPresence(bob.jid)(el) && el.getChildText('show') === 'away', from);
  t.is(probed.attrs.to, alice3.jid, 'answered to the probing full JID');
  await expect(alice3, "alice's other resource, on node 1", isPresence(alice.jid), from);
  await expect(alice, "alice/n3's initial presence", isPresence(alice3.jid), a);
  await expect(bob, "alice/n3's initial presence", isPresence(alice3.jid), b);
});

test('a killed connection on node 2: the subscriber on node 1 gets unavailable presence', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  await subscribe(alice, bob);
  const a = alice.c.items.length;
  bob.c.destroy();
  const gone = await expect(alice, "bob's unavailable", isPresence(bob.jid, 'unavailable'), a);
  t.is(gone.attrs.to, alice.bare);
});

test("a node killed with SIGKILL: survivors announce its sessions' unavailable presence to subscribers and directed-presence recipients within the lease bound", async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const erin = await user(t, nodes[1], 'erin');
  const bob = await user(t, doomed, 'bob');
  const dave = await user(t, doomed, 'dave');
  await subscribe(alice, bob);
  // §4.6: dave, available, sends directed presence to erin (no subscription between them).
  const e0 = erin.c.items.length;
  dave.c.send(`<presence to='${erin.jid}'><status>hello erin</status></presence>`);
  await expect(erin, "dave's directed presence", isPresence(dave.jid), e0);
  // The directed presence is recorded where survivors can see it: the next
  // stanza of dave's session is handled after it (a ping answered by the node).
  await barrier(dave, dave.c.items.length);

  const [a, e] = [alice.c.items.length, erin.c.items.length];
  const killedAt = Date.now();
  doomed.proc.kill('SIGKILL');
  // Bound: the lease, one heartbeat period to notice, and slack for a loaded machine.
  const bound = LEASE_MS * 2 + 2000;
  const [toAlice, toErin] = await Promise.all([
    expect(alice, "bob's unavailable after his node died", isPresence(bob.jid, 'unavailable'), a, bound),
    expect(erin, "dave's unavailable after his node died", isPresence(dave.jid, 'unavailable'), e, bound),
  ]);
  const took = Date.now() - killedAt;
  t.true(took <= bound, `announced after ${took} ms`);
  t.is(toAlice.attrs.to, alice.bare);
  t.is(toErin.attrs.to, erin.jid);
  t.deepEqual(summary(await rosterOf(alice)), [[bob.bare, 'to', undefined]], 'the subscription itself is untouched');
});

test('offline messages stored through node 1 are delivered, in order, stamped and once, at login on node 2', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const frankName = await account('frank');
  const frankBare = `${frankName}@localhost`;
  const ids = [uid('off'), uid('off'), uid('off')];
  const start = alice.c.items.length;
  for (const [i, id] of ids.entries()) alice.c.send(`<message to='${frankBare}' id='${id}' type='chat'><body>kept ${i}</body></message>`);
  t.deepEqual((await barrier(alice, start)).map((el) => el.toString()), [], 'stored, no error to the sender');
  t.is(await offline.count(frankName), 3, 'three messages in PostgreSQL');

  const frank = await connect(t, nodes[1], frankName, 'n2');
  const f = frank.c.items.length;
  frank.c.send('<presence/>');
  await expect(frank, 'the last kept message', (el) => el.attrs.id === ids[2], f);
  const got = (await barrier(frank, f)).filter((el) => el.name === 'message');
  t.deepEqual(got.map((m) => m.attrs.id), ids, 'all, in order, each once');
  for (const [i, m] of got.entries()) {
    t.is(m.attrs.from, alice.jid);
    t.is(m.getChildText('body'), `kept ${i}`);
    t.is(m.getChild('delay', NS_DELAY)?.attrs.from, 'localhost', m.toString());
  }
  t.is(await offline.count(frankName), 0, 'nothing left');

  const again = await connect(t, nodes[2], frankName, 'n3');
  const g = again.c.items.length;
  again.c.send('<presence/>');
  await expect(again, 'own presence', isPresence(again.jid), g);
  t.deepEqual((await barrier(again, g)).filter((el) => el.name === 'message').map((m) => m.toString()), [], 'a later login, elsewhere, gets none');
});

test('carbons across nodes: two resources of one user on nodes 1 and 2, the contact on node 3', async (t) => {
  const gina = await user(t, nodes[0], 'gina');
  const gina2 = await connect(t, nodes[1], gina.name, nodes[1].name);
  await ready(gina2);
  const hal = await user(t, nodes[2], 'hal');
  for (const p of [gina, gina2]) {
    const res = await carbons(p, 'enable');
    t.is(res.attrs.type, 'result', res.toString());
  }

  const [g1, g2, h] = [gina.c.items.length, gina2.c.items.length, hal.c.items.length];
  gina.c.send(`<message to='${hal.jid}' id='cs1' type='chat'><body>sent on node 1</body></message>`);
  await expect(hal, 'the chat', (el) => el.attrs.id === 'cs1', h);
  const sent = await expect(gina2, '<sent/> carbon on node 2', isCarbon('sent'), g2);
  checkCarbon(t, sent, 'sent', { from: gina.bare, to: gina2.jid }, { from: gina.jid, to: hal.jid, body: 'sent on node 1' });

  hal.c.send(`<message to='${gina.jid}' id='cr1' type='chat'><body>answer from node 3</body></message>`);
  await expect(gina, 'the answer', (el) => el.attrs.id === 'cr1', g1);
  const received = await expect(gina2, '<received/> carbon on node 2', isCarbon('received'), g2);
  checkCarbon(t, received, 'received', { from: gina.bare, to: gina2.jid }, { from: hal.jid, to: gina.jid, body: 'answer from node 3' });
});
