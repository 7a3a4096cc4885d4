// Three real nodes joined through a real redis-server behave as one server.
import test from 'ava';
import { Redis } from 'ioredis';
import type { RedisServer } from '../helpers/redis.ts';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { login } from '../helpers/raw.ts';
import { secured, within } from '../helpers/protocol.ts';
import type { RawClient } from '../helpers/raw.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

// Long enough that a loaded CI machine (the whole suite at once) renews in time.
const LEASE_MS = 3000;
let cluster: TestCluster;
let redis: RedisServer;
let nodes: NodeProcess[];
let r: Redis;

test.before(async () => {
  cluster = await startCluster(['n1', 'n2', 'n3'], { XMPP_REGISTRATION: 'true', XMPP_NODE_LEASE_MS: String(LEASE_MS) });
  ({ redis, nodes } = cluster);
  const accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  for (const u of ['alice', 'bob', 'carol', 'race']) await accounts.create(u, `${u}-pw`);
  await accounts.close();
  r = new Redis(redis.url);
});

test.after.always(async () => {
  r?.disconnect();
  await cluster?.stop();
});

const q = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

async function say(from: RawClient, to: string, body: string, at: RawClient): Promise<RegExpMatchArray> {
  const mark = at.buffer.length;
  from.send(`<message to='${to}' type='chat'><body>${body}</body></message>`);
  return at.waitFor(new RegExp(`<message[^>]*>(?:(?!</message>)[\\s\\S])*<body>${q(body)}</body>`), mark);
}

test.serial('clients on node 1 and node 3 exchange messages both ways, by full and bare JID', async (t) => {
  const { c: a, jid: ja } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'n1');
  const { c: b, jid: jb } = await login(nodes[2].c2sPort, 'bob', 'bob-pw', 'n3');
  a.send('<presence/>');
  b.send('<presence/>');
  // Presence is registered through Redis; wait until both records say available.
  for (const [bare, res] of [['alice@localhost', 'n1'], ['bob@localhost', 'n3']]) {
    for (;;) {
      const rec = await r.hget(`xmpp:s:${bare}`, res);
      if (rec && JSON.parse(rec).available) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  const m1 = await say(a, jb, 'full: héllo 🌍 &amp; &lt;3', b);
  t.regex(m1[0], new RegExp(`from=["']${q(ja)}["']`));
  const m2 = await say(b, ja, 'full back', a);
  t.regex(m2[0], new RegExp(`from=["']${q(jb)}["']`));
  await say(a, 'bob@localhost', 'bare to bob', b);
  await say(b, 'alice@localhost', 'bare to alice', a);
  // Ordering between two sessions is preserved across nodes.
  const mark = b.buffer.length;
  for (let i = 0; i < 200; i++) a.send(`<message to='${jb}' type='chat'><body>seq ${i}</body></message>`);
  await b.waitFor(/<body>seq 199<\/body>/, mark);
  const seq = [...b.buffer.slice(mark).matchAll(/<body>seq (\d+)<\/body>/g)].map((m) => Number(m[1]));
  t.deepEqual(seq, Array.from({ length: 200 }, (_, i) => i));
  a.destroy();
  b.destroy();
});

test.serial('many concurrent binds of one full JID across the nodes leave exactly one session', async (t) => {
  const attempts = 12;
  const results = await Promise.allSettled(Array.from({ length: attempts }, (_, i) => login(nodes[i % 3].c2sPort, 'race', 'race-pw', 'same')));
  const clients = results.flatMap((res) => (res.status === 'fulfilled' ? [res.value.c] : []));
  t.true(clients.length >= 1);
  // Under "new wins" every bind succeeds and replaces the previous holder,
  // which gets a <conflict/> stream error. One replaced before its own bind
  // was answered gets the stream error instead of the bind result: its
  // login fails with the conflict, and nothing else may make one fail.
  const early = results.filter((res) => res.status === 'rejected');
  for (const res of early) t.regex(String(res.reason), /<conflict xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']/);
  const conflicted = new Set<RawClient>();
  const expected = attempts - 1 - early.length;
  // Bounded: a replaced session that never hears of it (a ghost) fails the test instead of hanging it.
  await within(
    new Promise<void>((resolve) => {
      if (expected === 0) resolve();
      for (const c of clients)
        void c.waitFor(/<conflict xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']/).then(() => {
          conflicted.add(c);
          if (conflicted.size === expected) resolve();
        }, () => {});
    }),
    20_000,
    `${expected} conflict stream errors (a replaced session was left running)`,
  );
  const survivors = clients.filter((c) => !conflicted.has(c));
  t.is(survivors.length, 1, 'exactly one session holds race@localhost/same');
  await survivors[0].exchange(`<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=["']alive["']/);
  const records = await r.hgetall('xmpp:s:race@localhost');
  t.deepEqual(Object.keys(records), ['same'], 'one registry entry');
  const members = (await Promise.all(nodes.map((n) => r.smembers(`xmpp:n:${n.name}`)))).flat().filter((j) => j.startsWith('race@'));
  t.deepEqual(members, ['race@localhost/same'], 'no stale or duplicate entry in the per-node sets');
  for (const c of clients) c.destroy();
});

test.serial('an account registered in-band through one node logs in on another', async (t) => {
  const { c } = await secured(nodes[0].c2sPort);
  await c.exchange(
    `<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>dora</username><password>dora-pw</password></query></iq>`,
    /<iq[^>]*(id=["']reg["'][^>]*type=["']result["']|type=["']result["'][^>]*id=["']reg["'])/,
  );
  c.destroy();
  const { c: there, jid } = await login(nodes[2].c2sPort, 'dora', 'dora-pw', 'elsewhere');
  t.is(jid, 'dora@localhost/elsewhere');
  there.destroy();
});
