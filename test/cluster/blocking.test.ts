// XEP-0191 in a cluster of two nodes on one Redis and one PostgreSQL, the
// blocker on one node and the blocked on the other: a block made on node 1
// is in force for the very next stanza node 2 routes (its copy of the list
// was dropped before the client heard the result), both ways and for
// presence; the push reaches the blocker's resource on the other node; an
// unblock lets the next stanza through at once. With the blocker on either
// node: iq get and set refused both ways (service-unavailable to the
// blocked, not-acceptable with <blocked/> to the blocker), subscription
// requests dropped both ways, nothing kept of them. Every worker applies the
// change notices of others late (XMPP_TEST_CHANGE_DELAY_MS, as a busy node
// would): the answer waits for their acknowledgements all the same.
import test from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { PostgresRosterStore } from '../../src/roster/postgres.ts';
import { WAIT, barrier, clusterPeers, expect, isBody, isPresence, isPush, ready, subscribe } from '../helpers/im.ts';
import { before } from '../helpers/pep.ts';
import type { Peer } from '../helpers/im.ts';

const NS_BLOCKING = 'urn:xmpp:blocking';
const NS_BLOCKING_ERRORS = 'urn:xmpp:blocking:errors';

let cluster: TestCluster;
let accounts: PostgresAccountStore;
/** The nodes' rosters and pending requests, read as they are kept. */
let roster: PostgresRosterStore;

test.before(async () => {
  cluster = await startCluster(['b1', 'b2'], { XMPP_TEST_CHANGE_DELAY_MS: '500' });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  roster = await PostgresRosterStore.open(cluster.databaseUrl);
});
test.after.always(async () => {
  await accounts?.close();
  await roster?.close();
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

/** An iq of p's, its answer. */
async function ask(p: Peer, type: 'get' | 'set', inner: string, to: string, sent?: Set<string>): Promise<Element> {
  const id = uid('blkiq');
  sent?.add(id);
  return within(p.c.request(`<iq type='${type}' id='${id}' to='${to}'>${inner}</iq>`, id), WAIT, `${p.jid}: iq ${type} to ${to}`);
}

test('iq get and set, and subscription requests, with the blocker on one node and the blocked on the other, both placements: refused or dropped both ways (§5.3)', async (t) => {
  const [n1, n2] = cluster.nodes;
  const PING = `<ping xmlns='urn:xmpp:ping'/>`;
  const SET = `<query xmlns='urn:test:blocking'/>`;
  for (const [home, away] of [[n1, n2], [n2, n1]]) {
    const where = `blocker on ${home.name}, blocked on ${away.name}`;
    const alice = await user(t, home, 'alice');
    const bob = await user(t, away, 'bob');
    // Alice's second device on bob's node: what it sends is decided by that node's copy of her list.
    const alice2 = await connect(t, away, alice.name, 'second');
    await ready(alice2);
    await set(alice, `<block xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></block>`);
    const fa = alice.c.items.length;
    const fa2 = alice2.c.items.length;

    // Inbound: bob's iq get and set to either of her resources (and a get to her bare JID) are answered
    // service-unavailable, as if she were not there; the block is not revealed.
    for (const [type, inner, targets] of [['get', PING, [alice.jid, alice2.jid, alice.bare]], ['set', SET, [alice.jid, alice2.jid]]] as const) {
      for (const to of targets) {
        const res = await ask(bob, type, inner, to);
        t.is(res.attrs.type, 'error', `${where}: bob's iq ${type} to ${to}: ${res.toString()}`);
        t.is(stanzaError(res).condition, 'service-unavailable', `${where}: bob's iq ${type} to ${to}`);
        t.falsy(res.getChild('error')?.getChild('blocked', NS_BLOCKING_ERRORS), `${where}: no <blocked/> for bob`);
      }
    }
    // Outbound: hers to bob, from either node, are not-acceptable with <blocked/>.
    const fb = bob.c.items.length;
    const hers = new Set<string>();
    for (const p of [alice, alice2]) {
      for (const [type, inner] of [['get', PING], ['set', SET]] as const) {
        const res = await ask(p, type, inner, bob.jid, hers);
        t.is(res.attrs.type, 'error', `${where}: ${p.jid}'s iq ${type}: ${res.toString()}`);
        t.is(stanzaError(res).condition, 'not-acceptable', `${where}: ${p.jid}'s iq ${type}`);
        t.truthy(res.getChild('error')?.getChild('blocked', NS_BLOCKING_ERRORS), `${where}: ${p.jid}'s iq ${type} says <blocked/>`);
      }
    }

    // Subscription requests either way: dropped without an answer; neither the blocker's roster nor her pending
    // requests change, nor does the blocked's side keep hers. (His own roster shows his request as sent: the
    // presence service changes the sender's roster as asked.)
    const mb = bob.c.items.length;
    bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
    t.false((await barrier(bob, mb)).some((el) => el.name === 'presence'), `${where}: no answer to bob's request`);
    const ma = [alice, alice2].map((p) => p.c.items.length);
    alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
    alice2.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
    for (const [i, p] of [alice, alice2].entries()) t.false((await barrier(p, ma[i])).some((el) => el.name === 'presence' || isPush(bob.bare)(el)), `${where}: ${p.jid}: no answer, no roster change`);
    t.is(await roster.state(alice.name, bob.bare), 'none', `${where}: alice's roster`);
    t.is(await roster.state(bob.name, alice.bare), 'none+out', `${where}: bob's roster`);
    t.deepEqual(await roster.pendingRequests(alice.name), [], `${where}: no request kept for alice`);
    t.deepEqual(await roster.pendingRequests(bob.name), [], `${where}: none kept for bob`);

    // Controls: unblocked, each side sends a message to each resource of the other. Each travels after what
    // its sender sent before, on the same path: whatever of the above had got through would come first.
    await set(alice, `<unblock xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></unblock>`);
    for (const p of [alice, alice2]) bob.c.send(`<message to='${p.jid}' type='chat'><body>control from bob</body></message>`);
    for (const p of [alice, alice2]) p.c.send(`<message to='${bob.jid}' type='chat'><body>control from ${p.jid}</body></message>`);
    const fromBob = (el: Element) => el.attrs.from?.startsWith(bob.bare) === true && !(el.attrs.type === 'error' && hers.has(el.attrs.id));
    for (const [p, from] of [[alice, fa], [alice2, fa2]] as const) {
      const got = await before(p, 'the control from bob', isBody('control from bob'), from);
      t.deepEqual(got.filter(fromBob).map(String), [], `${where}: nothing of bob's reached ${p.jid}`);
    }
    for (const p of [alice, alice2]) {
      const got = await before(bob, `the control from ${p.jid}`, isBody(`control from ${p.jid}`), fb);
      t.deepEqual(got.filter((el) => el.attrs.from === p.jid).map(String), [], `${where}: nothing of ${p.jid}'s reached bob`);
    }
  }
});
