// XEP-0191 in a cluster of two nodes on one Redis and one PostgreSQL, the
// blocker on one node and the blocked on the other: a block made on node 1
// is in force for the very next stanza node 2 routes (its copy of the list
// was dropped before the client heard the result), both ways and for
// presence; the push reaches the blocker's resource on the other node; an
// unblock lets the next stanza through at once. Every worker applies the
// change notices of others late (XMPP_TEST_CHANGE_DELAY_MS, as a busy node
// would): the answer waits for their acknowledgements all the same.
import test from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, clusterPeers, expect, isBody, isPresence, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const NS_BLOCKING = 'urn:xmpp:blocking';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['b1', 'b2'], { XMPP_TEST_CHANGE_DELAY_MS: '500' });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { user, connect } = clusterPeers(() => accounts);

async function set(p: Peer, inner: string): Promise<Element> {
  const id = uid('blk');
  const res = await within(p.c.request(`<iq type='set' id='${id}'>${inner}</iq>`, id), WAIT, `${p.jid}: ${inner}`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res;
}

test('block on node 1: the next stanza from node 2 is refused, presence stops both ways, the push reaches node 2; unblock on node 2 lets the next one through', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  await subscribe(alice, bob);
  await subscribe(bob, alice);
  // Alice's second device, on node 2, requested the blocklist: it gets the pushes.
  const alice2 = await connect(t, n2, alice.name, 'second');
  const id = uid('bl');
  await within(alice2.c.request(`<iq type='get' id='${id}'><blocklist xmlns='${NS_BLOCKING}'/></iq>`, id), WAIT, 'blocklist');

  // Delivered before the block (node 2 reads alice's list: empty, and keeps that).
  let fa = alice.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat'><body>before</body></message>`);
  await expect(alice, 'the message before the block', isBody('before'), fa);

  let fb = bob.c.items.length;
  const f2 = alice2.c.items.length;
  await set(alice, `<block xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></block>`);
  await expect(alice2, 'the push on node 2', (el) => el.name === 'iq' && el.getChild('block', NS_BLOCKING) !== undefined, f2);
  await expect(bob, "alice's unavailable presence", isPresence(alice.jid, 'unavailable'), fb);

  // The very next stanza: refused on node 2, as if alice were not there.
  fa = alice.c.items.length;
  fb = bob.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat' id='after'><body>after</body></message>`);
  const bounce = await expect(bob, 'the bounce', (el) => el.attrs.id === 'after' && el.attrs.type === 'error', fb);
  t.is(stanzaError(bounce).condition, 'service-unavailable');
  bob.c.send(`<presence><status>bob here</status></presence>`);
  await expect(bob, 'his own presence', (el) => isPresence(bob.jid)(el) && el.getChildText('status') === 'bob here', fb);
  t.false((await barrier(alice, fa)).some((el) => el.attrs.from?.startsWith(bob.bare)), 'nothing of bob reached alice');
  // Alice's second device (node 2) sends to bob: not-acceptable with <blocked/>.
  alice2.c.send(`<message to='${bob.bare}' type='chat' id='out'><body>x</body></message>`);
  const out = await expect(alice2, 'the outbound refusal', (el) => el.attrs.id === 'out' && el.attrs.type === 'error');
  t.is(stanzaError(out).condition, 'not-acceptable');
  t.truthy(out.getChild('error')!.getChild('blocked', 'urn:xmpp:blocking:errors'));

  // Unblocked from node 2: node 1 lets the next message through.
  fb = bob.c.items.length;
  await set(alice2, `<unblock xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></unblock>`);
  await expect(bob, "alice's current presence again", isPresence(alice.jid), fb);
  fb = bob.c.items.length;
  alice.c.send(`<message to='${bob.bare}' type='chat'><body>welcome back</body></message>`);
  await expect(bob, 'the message after the unblock', isBody('welcome back'), fb);
  fa = alice.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat'><body>thanks</body></message>`);
  await expect(alice, 'his answer', isBody('thanks'), fa);
});
