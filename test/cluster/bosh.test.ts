// BOSH (XEP-0124) across the nodes of a cluster: the load balancer passes
// TLS through and spreads a browser's connections over the nodes, so the
// requests of one session reach nodes other than the one it lives on; they
// are forwarded there over the cluster transport (web/bosh.ts).
import test from 'ava';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { startCluster, type TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { online, within } from '../helpers/protocol.ts';
import { BoshClient, NS_HTTPBIND, boshBind, boshScram, post } from '../helpers/bosh.ts';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['b1', 'b2'], { XMPP_HTTPS_PORT: '0' });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  for (const u of ['alice', 'bob']) await accounts.create(u, `${u}-pw`);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const url = (i: number) => `https://localhost:${cluster.nodes[i].httpsPort}/http-bind`;

test('a session created on one node is served from the other: login, bind and messages with TCP users on both nodes, every other request through the node it does not live on', async (t) => {
  const ca = readFileSync(cluster.certFile);
  const c = new BoshClient(url(0), { ca });
  t.teardown(() => c.close());
  await c.create();
  t.regex(c.sid, /\.0\.b1$/, 'the session lives on b1');
  // From now on every request goes to b2 and is forwarded to b1, or to b1 itself, in turn.
  const send = c.send.bind(c);
  let n = 0;
  c.send = (content, attrs) => {
    c.url = url(n++ % 2 === 0 ? 1 : 0);
    return send(content, attrs);
  };
  await boshScram(c, 'alice', 'alice-pw');
  const jid = await boshBind(c, 'web');
  t.is(jid, 'alice@localhost/web');

  for (const [i, node] of cluster.nodes.entries()) {
    const bob = await online(node.c2sPort, 'bob', 'bob-pw', `tcp${i}`);
    t.teardown(() => bob.c.destroy());
    const sending = c.send(`<message xmlns='jabber:client' to='${bob.jid}' type='chat'><body>to ${node.name}</body></message>`);
    await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === `to ${node.name}`), 15_000, `bob on ${node.name} receiving`);
    bob.c.send(`<message to='${jid}' type='chat'><body>from ${node.name}</body></message>`);
    const back = await c.find((el) => el.name === 'message' && el.getChildText('body') === `from ${node.name}`);
    t.is(back.attrs.from, bob.jid);
    await sending;
  }
  // A session id naming a node that is not in the cluster: item-not-found.
  const ghost = await post(url(1), `<body xmlns='${NS_HTTPBIND}' sid='${'A'.repeat(22)}.0.nowhere' rid='7'/>`, { ca });
  t.is(ghost.body?.attrs.condition, 'item-not-found');
  // Nor does a session of b1 exist on b2 under b2's name.
  const other = await post(url(1), `<body xmlns='${NS_HTTPBIND}' sid='${c.sid.replace(/b1$/, 'b2')}' rid='${c.rid}'/>`, { ca });
  t.is(other.body?.attrs.condition, 'item-not-found');
});

test('session ids naming nodes that are not members are refused without a message to Redis for them: a client cannot make a node publish, and keep numbering, for names it makes up', async (t) => {
  const ca = readFileSync(cluster.certFile);
  const other = new Redis(cluster.redis.url);
  const m = await other.monitor();
  t.teardown(() => {
    m.disconnect();
    other.disconnect();
  });
  const seen: string[] = [];
  m.on('monitor', (_time: string, args: string[]) => seen.push(args.join(' ')));
  for (const name of ['ghost1', 'ghost2', 'ghost3']) {
    const a = await post(url(1), `<body xmlns='${NS_HTTPBIND}' sid='${'A'.repeat(22)}.0.${name}' rid='7'/>`, { ca });
    t.is(a.body?.attrs.condition, 'item-not-found', name);
  }
  // Everything sent to Redis before the marker has reached the monitor once the marker has.
  const marker = `marker-${Date.now()}`;
  const arrived = new Promise<void>((resolve) => m.on('monitor', (_time: string, args: string[]) => args.includes(marker) && resolve()));
  await other.echo(marker);
  await arrived;
  t.deepEqual(seen.filter((c) => /^publish /i.test(c) && /ghost/.test(c)), [], 'no publish to a made-up node');
});
