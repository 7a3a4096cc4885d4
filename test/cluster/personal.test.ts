// vCards (XEP-0054) and private XML (XEP-0049) in a cluster of two nodes on
// one PostgreSQL: what a user sets through one node is what any user reads
// through the other, at once (the iq result comes once it is written).
import test from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { uid, within } from '../helpers/protocol.ts';
import { WAIT, clusterPeers } from '../helpers/im.ts';
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
