// Federation of a cluster (real nodes joined through a real redis-server)
// with a peer server. The peer finds the cluster at node 1 only (as it
// would find one node behind a load balancer), so that:
// - a stanza from the peer for a user on node 2 comes in on node 1 and
//   crosses the cluster transport;
// - node 2 opens its own stream to the peer for its users' stanzas, and the
//   peer checks node 2's dialback key by connecting back, to node 1, which
//   verifies a key it did not make (XEP-0185: the secret is the cluster's);
// - when node 2 dies, its users' remote subscribers get their unavailable
//   presence from the survivors, within the lease bound;
// - PEP (XEP-0163): a peer's user's presence and caps come in on node 1,
//   where its client is asked what its ver means; a publish on node 2
//   notifies it (the remote resources and verified vers are in Redis).
// Dialback is what is tested here: self-signed certificates, secure auth off.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { selfSigned } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { clusterPeers, connect, expect, isBody, isPresence, newUser, push, ready } from '../helpers/im.ts';
import { announceCaps, answerCaps, capsPresence, isCapsQuery, isEventItem, publish, untilNotified } from '../helpers/pep.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

const LEASE_MS = 3000;
const dir = mkdtempSync(join(tmpdir(), 'xmpp-cluster-s2s-'));
const [n1Addr, n2Addr, n3Addr, peerAddr] = loopbackAddresses(4);
let cluster: TestCluster;
let n1: NodeProcess;
let n2: NodeProcess;
let doomed: NodeProcess;
let peer: Federated;
let stopPeer: () => Promise<void>;
let accounts: PostgresAccountStore;

test.before(async () => {
  const cert = selfSigned(dir, 'cl.example');
  const hosts = `cl.example=${n1Addr}:5269,peer.example=${peerAddr}:5269`;
  cluster = await startCluster([], {
    XMPP_DOMAIN: 'cl.example',
    XMPP_TLS_CERT: cert.cert,
    XMPP_TLS_KEY: cert.key,
    XMPP_S2S: 'true',
    XMPP_S2S_PORT: '5269',
    XMPP_S2S_SECURE_AUTH: 'false',
    XMPP_S2S_HOSTS: hosts,
    XMPP_NODE_LEASE_MS: String(LEASE_MS),
  });
  n1 = await cluster.add('f1', { XMPP_S2S_BIND_HOST: n1Addr });
  n2 = await cluster.add('f2', { XMPP_S2S_BIND_HOST: n2Addr });
  doomed = await cluster.add('f3', { XMPP_S2S_BIND_HOST: n3Addr });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  const f = await federation([{ domain: 'peer.example', cert: selfSigned(dir, 'peer.example') }], { addresses: [peerAddr], extra: { 'cl.example': `${n1Addr}:5269` }, env: { XMPP_S2S_SECURE_AUTH: 'false' } });
  [peer] = f.servers;
  stopPeer = f.stop;
});
test.after.always(async () => {
  await stopPeer?.();
  await accounts?.close();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const { user } = clusterPeers(() => accounts, 'cl.example');

test('a message from the peer comes in on node 1 for a user on node 2; the answer leaves from node 2, whose key node 1 verifies', async (t) => {
  const bob = await user(t, n2, 'bob');
  const pat = await newUser(t, peer.server, 'pat');
  pat.c.send(`<message to='${bob.jid}' type='chat'><body>to node 2</body></message>`);
  t.is((await expect(bob, 'the message, through node 1', isBody('to node 2'))).attrs.from, pat.jid);
  bob.c.send(`<message to='${pat.bare}' type='chat'><body>from node 2</body></message>`);
  t.is((await expect(pat, "node 2's answer", isBody('from node 2'))).attrs.from, bob.jid);
  // A user on node 1 too, over node 1's own stream.
  const ann = await user(t, n1, 'ann');
  ann.c.send(`<message to='${pat.jid}' type='chat'><body>from node 1</body></message>`);
  t.is((await expect(pat, "node 1's message", isBody('from node 1'))).attrs.from, ann.jid);
});

test("a node killed with SIGKILL: its users' remote subscribers get their unavailable presence within the lease bound", async (t) => {
  const dan = await user(t, doomed, 'dan');
  const pat = await newUser(t, peer.server, 'pat');
  // pat subscribes to dan, dan approves.
  let pf = pat.c.items.length;
  pat.c.send(`<presence to='${dan.bare}' type='subscribe'/>`);
  pf = await push(t, pat, dan.bare, 'none', 'subscribe', pf);
  await expect(dan, "pat's request", isPresence(pat.bare, 'subscribe'));
  dan.c.send(`<presence to='${pat.bare}' type='subscribed'/>`);
  pf = await push(t, pat, dan.bare, 'to', undefined, pf);
  await expect(pat, "dan's presence", isPresence(dan.jid), pf);
  const from = pat.c.items.length;
  const killedAt = Date.now();
  doomed.proc.kill('SIGKILL');
  const bound = LEASE_MS * 2 + 2000;
  await expect(pat, "dan's unavailable after his node died", isPresence(dan.jid, 'unavailable'), from, bound);
  const took = Date.now() - killedAt;
  t.true(took <= bound, `announced after ${took} ms`);
});

test('PEP: a peer user whose presence comes in on node 1 is notified of a publish on node 2, its caps asked once', async (t) => {
  const bob = await user(t, n2, 'bob');
  const pat = await newUser(t, peer.server, 'pat');
  // Presence both ways.
  const bf = bob.c.items.length;
  let pf = pat.c.items.length;
  pat.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  await expect(bob, "pat's request", isPresence(pat.bare, 'subscribe'), bf);
  bob.c.send(`<presence to='${pat.bare}' type='subscribed'/>`);
  pf = await push(t, pat, bob.bare, 'to', undefined, pf);
  bob.c.send(`<presence to='${pat.bare}' type='subscribe'/>`);
  await expect(pat, "bob's request", isPresence(bob.bare, 'subscribe'), pf);
  pat.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  await push(t, bob, pat.bare, 'both', undefined, bf);
  const feats = ['urn:test:tune+notify', 'urn:test:probe+notify'];
  announceCaps(pat, feats);
  await expect(pat, 'the caps query from the cluster', (el) => isCapsQuery(el) && el.attrs.from === 'cl.example');
  await untilNotified(bob, pat, 'urn:test:probe');
  const f = pat.c.items.length;
  t.is((await publish(bob, 'urn:test:tune', `<tune xmlns='urn:test'/>`, { id: 't1' })).attrs.type, 'result');
  t.is((await expect(pat, 'the notification from node 2', isEventItem(bob.bare, 'urn:test:tune', 't1'), f)).attrs.to, pat.jid);
  // A second resource of pat's: its last item (sent by node 1, where its presence comes in), the ver known.
  const pat2 = await newUserAs(t, pat.name, 'second');
  answerCaps(pat2, feats, 0);
  pat2.c.send(capsPresence(feats));
  await expect(pat2, 'the last item', isEventItem(bob.bare, 'urn:test:tune', 't1'));
  // Its own server asks it too (its own PEP service): ours, once.
  const ours = (p: typeof pat) => p.c.items.filter((it) => it.kind === 'el' && isCapsQuery(it.el) && it.el.attrs.from === 'cl.example').length;
  t.is(ours(pat), 1, 'asked once');
  t.is(ours(pat2), 0, 'not asked of the second resource');
});

async function newUserAs(t: ExecutionContext, name: string, resource: string) {
  const p = await connect(t, peer.server.c2sPort, name, resource, `${name}/${resource}`, 'peer.example');
  await ready(p);
  return p;
}
