// An external component (XEP-0114) in a cluster of real nodes: connected to
// one node, it exchanges stanzas with users on another, both ways, through
// the registry and the cluster transport; and when it goes, its users get
// service-unavailable rather than silence.
import test from 'ava';
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { RawClient } from '../helpers/raw.ts';
import { within } from '../helpers/protocol.ts';
import { WAIT, clusterPeers, expect } from '../helpers/im.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

const DOMAIN = 'gw.localhost';
const SECRET = 'gateway-secret';
let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['c0', 'c1'], { XMPP_COMPONENT_PORT: '0', XMPP_COMPONENTS: `${DOMAIN}=${SECRET}` });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { user } = clusterPeers(() => accounts);

test('a component on one node and a user on the other: stanzas both ways; once it is gone, service-unavailable', async (t) => {
  const [n0, n1] = cluster.nodes;
  const comp = await RawClient.connect(n0.componentPort!);
  t.teardown(() => comp.destroy());
  const m = await comp.exchange(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${DOMAIN}'>`, /<stream:stream[^>]*\bid=["']([^"']+)["'][^>]*>/);
  await comp.exchange(`<handshake>${createHash('sha1').update(m[1] + SECRET).digest('hex')}</handshake>`, /<handshake\s*\/>/);
  const alice = await user(t, n1, 'remote');
  alice.c.send(`<message to='relay@${DOMAIN}' type='chat' id='in'><body>across nodes</body></message>`);
  const got = await within(comp.find((el: Element) => el.name === 'message' && el.attrs.id === 'in'), WAIT, 'the message at the component');
  t.is(got.attrs.from, alice.jid);
  comp.send(`<message from='relay@${DOMAIN}' to='${alice.jid}' type='chat' id='out'><body>and back</body></message>`);
  const back = await expect(alice, 'the answer', (el) => el.name === 'message' && el.attrs.id === 'out');
  t.is(back.getChildText('body'), 'and back');
  comp.send('</stream:stream>');
  await within(comp.closed, WAIT, 'the component left');
  // Whether the registry's view is up to date or still names the old place: an error, not silence.
  alice.c.send(`<message to='relay@${DOMAIN}' type='chat' id='gone'><body>anyone?</body></message>`);
  const err = await expect(alice, 'the error', (el) => el.name === 'message' && el.attrs.id === 'gone');
  t.is(err.attrs.type, 'error');
  t.truthy(err.getChild('error')?.getChild('service-unavailable'), err.toString());
});
