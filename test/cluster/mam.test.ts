// The message archive (XEP-0313) in a cluster of two nodes on one
// PostgreSQL: a message between users of different nodes is archived on
// both sides, the recipient's copy carries its archive id, and either
// user's second device, on the other node, reads the same archive in the
// same order; an account removed on one node loses its archive.
import test from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresArchiveStore } from '../../src/mam/postgres.ts';
import { uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, clusterPeers, expect, isBody } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const NS_MAM = 'urn:xmpp:mam:2';
const NS_SID = 'urn:xmpp:sid:0';

let cluster: TestCluster;
let accounts: PostgresAccountStore;
let archive: PostgresArchiveStore;

test.before(async () => {
  cluster = await startCluster(['m1', 'm2']);
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  archive = await PostgresArchiveStore.open(cluster.databaseUrl);
});
test.after.always(async () => {
  await archive?.close();
  await accounts?.close();
  await cluster?.stop();
});

const { user, connect } = clusterPeers(() => accounts);

/** The archive's results for a query on `p`, as [id, body]. */
async function read(p: Peer): Promise<[string, string][]> {
  const id = uid('mam');
  const start = p.c.items.length;
  const res = await within(p.c.request(`<iq type='set' id='${id}'><query xmlns='${NS_MAM}'/></iq>`, id), WAIT, `${p.jid}: archive`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return p.c.items.slice(start).flatMap((it) => {
    const r = it.kind === 'el' ? it.el.getChild('result', NS_MAM) : undefined;
    return r ? [[r.attrs.id, (r.getChild('forwarded', 'urn:xmpp:forward:0')!.getChild('message') as Element).getChildText('body') ?? '']] : [];
  });
}

/** Reads until `n` results show: a row written on the other node lands within a database round trip. */
async function readAll(p: Peer, n: number): Promise<[string, string][]> {
  let rows: [string, string][] = [];
  for (let i = 0; i < 100 && rows.length < n; i++) rows = await read(p);
  return rows;
}

test('archived on both sides across nodes; a second device on the other node reads the same archive, in order', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  const from = bob.c.items.length;
  for (let i = 0; i < 5; i++) alice.c.send(`<message to='${bob.bare}' type='chat'><body>m${i}</body></message>`);
  await expect(bob, 'the last', isBody('m4'), from);
  const got = (await barrier(bob, from)).filter((el) => el.name === 'message');
  const ids = got.map((m) => m.getChild('stanza-id', NS_SID)?.attrs.id);
  t.true(ids.every((id) => typeof id === 'string'), 'each carries its archive id');
  // Bob's archive, read on his node and from a second device on alice's node.
  const bobRows = await readAll(bob, 5);
  t.deepEqual(bobRows.map(([, b]) => b), ['m0', 'm1', 'm2', 'm3', 'm4']);
  t.deepEqual(bobRows.map(([id]) => id), ids);
  const bob2 = await connect(t, n1, bob.bare.split('@')[0], 'second');
  t.deepEqual(await readAll(bob2, 5), bobRows, 'the same archive, same ids, same order, from the other node');
  // Alice's own copy, on her node and on the other.
  const aliceRows = await readAll(alice, 5);
  t.deepEqual(aliceRows.map(([, b]) => b), ['m0', 'm1', 'm2', 'm3', 'm4']);
  const alice2 = await connect(t, n2, alice.bare.split('@')[0], 'second');
  t.deepEqual(await readAll(alice2, 5), aliceRows);
});

test('an account removed on one node loses its archive; the contact keeps its copy', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  const from = bob.c.items.length;
  alice.c.send(`<message to='${bob.bare}' type='chat'><body>goodbye</body></message>`);
  await expect(bob, 'the message', isBody('goodbye'), from);
  await readAll(bob, 1);
  const id = uid('cancel');
  t.is((await bob.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, id)).attrs.type, 'result');
  const bobName = bob.bare.split('@')[0];
  t.is(await archive.count(bobName, {}), 0);
  t.deepEqual((await readAll(alice, 1)).map(([, b]) => b), ['goodbye']);
});
