// vCards (XEP-0054) and private XML (XEP-0049) in a cluster of two nodes on
// one PostgreSQL: what a user sets through one node is what any user reads
// through the other, at once (the iq result comes once it is written); the
// photo hash XEP-0398 stamps on presence follows a change made on the other
// node.
import test from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { uid, within } from '../helpers/protocol.ts';
import { createHash, randomBytes } from 'node:crypto';
import { WAIT, clusterPeers, expect, isPresence, ready } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['p1', 'p2']);
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { user, connect } = clusterPeers(() => accounts);

async function iq(p: Peer, type: string, inner: string, to?: string): Promise<Element> {
  const id = uid('pd');
  const res = await within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}>${inner}</iq>`, id), WAIT, `${p.jid}: ${inner.slice(0, 40)}`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res;
}

test('a vCard set on node 1 is read on node 2, by its owner and by another user; private XML too', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  const bob = await user(t, n2, 'bob');
  await iq(alice, 'set', "<vCard xmlns='vcard-temp'><FN>Alice on p1</FN></vCard>");
  await iq(alice, 'set', "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='room@muc.example.org' autojoin='true'/></storage></query>");
  const seen = await iq(bob, 'get', "<vCard xmlns='vcard-temp'/>", alice.bare);
  t.is(seen.getChild('vCard', 'vcard-temp')?.getChildText('FN'), 'Alice on p1', 'bob on p2 reads it');
  const alice2 = await connect(t, n2, alice.name, 'second');
  t.is((await iq(alice2, 'get', "<vCard xmlns='vcard-temp'/>")).getChild('vCard', 'vcard-temp')?.getChildText('FN'), 'Alice on p1', 'her second device on p2');
  const priv = await iq(alice2, 'get', "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>");
  t.is(priv.getChild('query', 'jabber:iq:private')?.getChild('storage', 'storage:bookmarks')?.getChild('conference')?.attrs.jid, 'room@muc.example.org');
});

test('XEP-0398 across nodes: an avatar published on node 1 is the hash a session on node 2 stamps next; its removal on node 2 is what node 1 stamps next', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await user(t, n1, 'alice');
  // Her session on node 2 stamps first (no photo): that node keeps the hash, until it is told of the change.
  const alice2 = await connect(t, n2, alice.name, 'second');
  await ready(alice2);
  const photo = async (p: Peer): Promise<string | undefined> => {
    const from = p.c.items.length;
    p.c.send('<presence><status>now</status></presence>');
    const el = await expect(p, 'its own presence', (e) => isPresence(p.jid)(e) && e.getChildText('status') === 'now', from);
    return el.getChild('x', 'vcard-temp:x:update')?.getChildText('photo') ?? undefined;
  };
  t.is(await photo(alice2), '', 'no photo yet');
  const image = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(300)]);
  const hash = createHash('sha1').update(image).digest('hex');
  await iq(alice, 'set', `<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:data'><item id='${hash}'><data xmlns='urn:xmpp:avatar:data'>${image.toString('base64')}</data></item></publish></pubsub>`);
  await iq(alice, 'set', `<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:metadata'><item id='${hash}'><metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='${image.length}' id='${hash}' type='image/png'/></metadata></item></publish></pubsub>`);
  t.is(await photo(alice2), hash, 'node 2 stamps the new hash');
  t.is(await photo(alice), hash, 'node 1 too');
  await iq(alice2, 'set', "<vCard xmlns='vcard-temp'><FN>No photo</FN></vCard>");
  t.is(await photo(alice), '', 'the removal made on node 2, stamped on node 1');
});
