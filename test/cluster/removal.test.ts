// Removing an account across real cluster nodes: in band on one node, or by
// the CLI against the cluster's Redis, every session of the account on
// every node ends (<not-authorized/>), and its contact on another node is
// told (unavailable, unsubscribe, unsubscribed, the roster push).
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { NS_STREAMS_ERR, plainOutcome, uid, within } from '../helpers/protocol.ts';
import { WAIT, clusterPeers, expect, isPresence, isPush, ready, rosterItem, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let cluster: TestCluster;
let nodes: NodeProcess[];
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['r1', 'r2']);
  nodes = cluster.nodes;
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { account, connect, user } = clusterPeers(() => accounts);

async function ended(t: ExecutionContext, p: Peer): Promise<void> {
  const err = await expect(p, 'the stream error', (el) => el.name === 'stream:error');
  t.truthy(err.getChild('not-authorized', NS_STREAMS_ERR), err.toString());
  await within(p.c.closed, WAIT, `${p.jid}: the end of the stream`);
}

async function told(bob: Peer, removed: Peer[], from: number): Promise<void> {
  const bare = removed[0].bare;
  for (const p of removed) await expect(bob, `unavailable from ${p.jid}`, isPresence(p.jid, 'unavailable'), from);
  await expect(bob, 'unsubscribe', isPresence(bare, 'unsubscribe'), from);
  await expect(bob, 'unsubscribed', isPresence(bare, 'unsubscribed'), from);
  await expect(bob, 'the push to none', (el) => isPush(bare)(el) && rosterItem(el)?.attrs.subscription === 'none', from);
}

/** An account with one ready session on each node. */
async function everywhere(t: ExecutionContext): Promise<Peer[]> {
  const name = await account('alice');
  const peers: Peer[] = [];
  for (const node of nodes) {
    const p = await connect(t, node, name, node.name);
    await ready(p);
    peers.push(p);
  }
  return peers;
}

test('in-band cancellation on node 1 ends the session on node 2 too, and the contact on node 2 is told', async (t) => {
  const alice = await everywhere(t);
  const bob = await user(t, nodes[1], 'bob');
  await subscribe(alice[0], bob);
  await subscribe(bob, alice[0]);
  const b = bob.c.items.length;
  const id = uid('remove');
  alice[0].c.send(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`);
  await expect(alice[0], 'the result', (el) => el.attrs.id === id && el.attrs.type === 'result');
  await Promise.all(alice.map((p) => ended(t, p)));
  await told(bob, alice, b);
  t.false(await accounts.exists(alice[0].name));
  t.is(await plainOutcome(nodes[1].c2sPort, alice[0].name, `${alice[0].name}-pw`), 'not-authorized', 'the removed account no longer logs in, on the other node either');
});

test('`user remove` against the cluster: the sessions on both nodes end and the contact is told', async (t) => {
  const alice = await everywhere(t);
  const bob = await user(t, nodes[0], 'bob');
  await subscribe(alice[1], bob);
  await subscribe(bob, alice[1]);
  const b = bob.c.items.length;
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, ['src/main.ts', 'user', 'remove', alice[0].name], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, XMPP_REDIS_URL: cluster.redis.url, XMPP_DATABASE_URL: cluster.databaseUrl, XMPP_DOMAIN: 'localhost', XMPP_LOG_LEVEL: 'warn' },
      stdio: 'ignore',
    });
    child.on('exit', resolve);
  });
  t.is(code, 0);
  await Promise.all(alice.map((p) => ended(t, p)));
  await told(bob, alice, b);
});
