// vCards (XEP-0054) and private XML (XEP-0049) in a cluster of two nodes on
// one PostgreSQL: what a user sets through one node is what any user reads
// through the other, at once (the iq result comes once it is written); the
// photo hash XEP-0398 stamps on presence follows a change made on the other
// node; two devices of one account, one on each node, adding XEP-0402
// bookmarks at the same time lose none of them in private XML (XEP-0402
// §5.3.1), and publishing avatars at the same time leave the vCard with the
// avatar PEP holds.
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

test('XEP-0402 §5.3.1 across nodes: a device on each node adding bookmarks at the same time; private XML keeps every room', async (t) => {
  const [n1, n2] = cluster.nodes;
  const desk = await user(t, n1, 'alice');
  const phone = await connect(t, n2, desk.name, 'phone');
  await ready(phone);
  const ROOMS = 12;
  // XEP-0402 §3.3's publish-options, as its clients publish (the node keeps every room).
  const field = (v: string, value: string) => `<field var='${v}'><value>${value}</value></field>`;
  const options = `<publish-options><x xmlns='jabber:x:data' type='submit'>${field('FORM_TYPE', 'http://jabber.org/protocol/pubsub#publish-options')}${field('pubsub#persist_items', 'true')}${field('pubsub#max_items', 'max')}${field('pubsub#send_last_published_item', 'never')}${field('pubsub#access_model', 'whitelist')}</x></publish-options>`;
  const add = async (p: Peer, tag: string) => {
    for (let i = 0; i < ROOMS; i++) await iq(p, 'set', `<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:bookmarks:1'><item id='${tag}${i}@conf.example'><conference xmlns='urn:xmpp:bookmarks:1' name='${tag} ${i}'/></item></publish>${options}</pubsub>`);
  };
  await Promise.all([add(desk, 'desk'), add(phone, 'phone')]);
  const want = ['desk', 'phone'].flatMap((tag) => Array.from({ length: ROOMS }, (_, i) => `${tag}${i}@conf.example`)).sort();
  const priv = await iq(desk, 'get', "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>");
  const rooms = (priv.getChild('query', 'jabber:iq:private')?.getChild('storage', 'storage:bookmarks')?.getChildren('conference') ?? []).map((c) => c.attrs.jid).sort();
  t.deepEqual(rooms, want);
  const legacy = await iq(phone, 'get', "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='storage:bookmarks'/></pubsub>");
  const copy = legacy.getChild('pubsub')?.getChild('items')?.getChild('item')?.getChild('storage', 'storage:bookmarks');
  t.deepEqual((copy?.getChildren('conference') ?? []).map((c) => c.attrs.jid).sort(), want, 'the legacy node: the same list');
});

test('XEP-0398 across nodes: a device on each node publishing an avatar at the same time; the vCard ends with the avatar PEP ends with', async (t) => {
  const [n1, n2] = cluster.nodes;
  const desk = await user(t, n1, 'alice');
  const phone = await connect(t, n2, desk.name, 'phone');
  await ready(phone);
  const pubsub = (inner: string) => `<pubsub xmlns='http://jabber.org/protocol/pubsub'>${inner}</pubsub>`;
  // The data node keeps both images of a round.
  const options = "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#max_items'><value>4</value></field></x></publish-options>";
  for (let round = 0; round < 10; round++) {
    const images = [0, 1].map(() => Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(300)]));
    const hashes = images.map((b) => createHash('sha1').update(b).digest('hex'));
    await iq(desk, 'set', pubsub(`<publish node='urn:xmpp:avatar:data'><item id='${hashes[0]}'><data xmlns='urn:xmpp:avatar:data'>${images[0].toString('base64')}</data></item></publish>${options}`));
    await iq(phone, 'set', pubsub(`<publish node='urn:xmpp:avatar:data'><item id='${hashes[1]}'><data xmlns='urn:xmpp:avatar:data'>${images[1].toString('base64')}</data></item></publish>${options}`));
    const meta = (p: Peer, i: number) => iq(p, 'set', pubsub(`<publish node='urn:xmpp:avatar:metadata'><item id='${hashes[i]}'><metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='${images[i].length}' id='${hashes[i]}' type='image/png'/></metadata></item></publish>`));
    await Promise.all([meta(desk, 0), meta(phone, 1)]);
    const pep = (await iq(desk, 'get', pubsub("<items node='urn:xmpp:avatar:metadata'/>"))).getChild('pubsub')?.getChild('items')?.getChildren('item').at(-1)?.attrs.id;
    const binval = (await iq(phone, 'get', "<vCard xmlns='vcard-temp'/>")).getChild('vCard', 'vcard-temp')?.getChild('PHOTO')?.getChildText('BINVAL');
    t.true(hashes.includes(pep ?? ''), `round ${round}: PEP holds one of the two`);
    t.is(binval ? createHash('sha1').update(Buffer.from(binval, 'base64')).digest('hex') : '', pep ?? '', `round ${round}: the vCard's photo is PEP's avatar`);
  }
});
