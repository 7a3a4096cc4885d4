// Node and Redis failures under live sessions: a dead node's sessions go
// within the lease bound, a Redis restart loses and duplicates nothing, and
// a node that lost its lease while paused cannot shadow a live session.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import type { RedisServer } from '../helpers/redis.ts';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { login } from '../helpers/raw.ts';
import { authenticated, bind, stanzaError, within } from '../helpers/protocol.ts';
import { STEP_MS } from '../helpers/process.ts';
import type { RawClient } from '../helpers/raw.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

// Long enough that a loaded CI machine (the whole suite at once) renews in time.
const LEASE_MS = 3000;
// For the tests that stop Redis: longer than the outage can last on a loaded
// machine (save, stop, the steps in between, a restart), since a lease key
// that expired meanwhile would get the node fenced, which is not their subject.
const OUTAGE_LEASE_MS = 30_000;

interface Cluster {
  redis: RedisServer;
  nodes: NodeProcess[];
  r: Redis;
  add: TestCluster['add'];
}

async function cluster(t: ExecutionContext, count: number, leaseMs = LEASE_MS): Promise<Cluster> {
  const c = await startCluster(Array.from({ length: count }, (_, i) => `f${i + 1}`), { XMPP_NODE_LEASE_MS: String(leaseMs) });
  // Stopped whatever fails next: nodes, Redis and PostgreSQL left running would keep this process from exiting.
  const r = new Redis(c.redis.url);
  t.teardown(async () => {
    r.disconnect();
    await c.stop();
  });
  await createUsers(c.databaseUrl);
  return { redis: c.redis, nodes: c.nodes, r, add: (name, env) => c.add(name, { XMPP_NODE_LEASE_MS: String(leaseMs), ...env }) };
}

async function createUsers(url: string): Promise<void> {
  const accounts = await PostgresAccountStore.open(url, 4096);
  for (const u of ['alice', 'bob', 'carol', 'dave']) await accounts.create(u, `${u}-pw`).catch(() => {});
  await accounts.close();
}

/** Resolves when the registry has (or no longer has) a record. */
function registryUntil(url: string, bare: string, resource: string, present: boolean): Promise<void> {
  return recordsUntil(url, bare, (recs) => (recs[resource] !== undefined) === present);
}

const ping = (c: RawClient, id: string) => c.exchange(`<iq type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, new RegExp(`id=["']${id}["']`));

test.serial('kill -9 of a node: its sessions leave the registry within the lease bound; others are untouched', async (t) => {
  const { redis, nodes, r } = await cluster(t, 3);
  const { c: a, jid: ja } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'stay');
  const { c: b, jid: jb } = await login(nodes[1].c2sPort, 'bob', 'bob-pw', 'doomed');
  const { c: c3, jid: jc } = await login(nodes[2].c2sPort, 'carol', 'carol-pw', 'stay');
  t.truthy(await r.hget('xmpp:s:bob@localhost', 'doomed'));
  const killedAt = Date.now();
  nodes[1].proc.kill('SIGKILL');
  await registryUntil(redis.url, 'bob@localhost', 'doomed', false);
  const took = Date.now() - killedAt;
  // Bound: the lease, plus one heartbeat period to notice, plus slack for CI.
  t.true(took <= LEASE_MS * 2 + 1000, `removed after ${took} ms`);
  // A stanza to the dead session gets the unavailable handling.
  // A stanza to the dead session gets the unavailable handling: refused
  // when it is not to be stored (XEP-0334 <no-store/>)...
  const bounce = a.exchange(`<message to='${jb}' type='chat' id='to-dead'><body>hello?</body><no-store xmlns='urn:xmpp:hints'/></message>`, /id=["']to-dead["'][^>]*>[\s\S]*?<service-unavailable|<service-unavailable[\s\S]*?id=["']to-dead["']/);
  await bounce;
  // ...and otherwise kept offline (XEP-0160), for bob's next session, on any node.
  await a.exchange(`<message to='${jb}' type='chat' id='kept'><body>for later</body></message><iq type='get' id='after-kept' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=["']after-kept["']/);
  t.false(/id=["']kept["']/.test(a.buffer), 'not bounced');
  const { c: b2 } = await login(nodes[2].c2sPort, 'bob', 'bob-pw', 'back');
  t.teardown(() => b2.destroy());
  b2.send('<presence/>');
  await b2.waitFor(/<body>for later<\/body>/);
  // The survivors' sessions are untouched and still talk across nodes.
  t.truthy(await r.hget('xmpp:s:alice@localhost', 'stay'));
  t.truthy(await r.hget('xmpp:s:carol@localhost', 'stay'));
  const mark = c3.buffer.length;
  a.send(`<message to='${jc}' type='chat'><body>still here</body></message>`);
  await c3.waitFor(/<body>still here<\/body>/, mark);
  await ping(a, 'p1');
  t.is(ja, 'alice@localhost/stay');
  for (const c of [a, b, c3]) c.destroy();
});

test.serial('Redis stopped and restarted under live sessions: nothing lost or duplicated, routing resumes', async (t) => {
  const { redis, nodes, r } = await cluster(t, 2);
  const { c: a, jid: ja } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'one');
  const { c: b, jid: jb } = await login(nodes[1].c2sPort, 'bob', 'bob-pw', 'two');
  r.disconnect();
  await redis.stop();
  // While Redis is down the nodes keep their sessions: the server still answers.
  await ping(a, 'down1');
  await ping(b, 'down2');
  // A new login authenticates (the accounts are in PostgreSQL), but its bind
  // is refused with a clear, temporary answer rather than risked.
  const { c: late } = await within(authenticated(nodes[0].c2sPort, 'carol', 'carol-pw'), STEP_MS, 'carol to authenticate');
  t.teardown(() => late.destroy());
  t.deepEqual(stanzaError(await within(bind(late, 'late'), STEP_MS, 'the bind while Redis is down')), { type: 'wait', condition: 'resource-constraint', by: undefined });
  await redis.resume(); // empty: it kept nothing, and nothing durable was there
  // The nodes notice the lost data and register their sessions again.
  await registryUntil(redis.url, 'alice@localhost', 'one', true);
  await registryUntil(redis.url, 'bob@localhost', 'two', true);
  const r2 = new Redis(redis.url);
  t.teardown(() => r2.disconnect());
  t.deepEqual(Object.keys(await r2.hgetall('xmpp:s:alice@localhost')), ['one']);
  t.deepEqual(Object.keys(await r2.hgetall('xmpp:s:bob@localhost')), ['two']);
  t.deepEqual(await r2.smembers(`xmpp:n:${nodes[0].name}`), [ja]);
  t.deepEqual(await r2.smembers(`xmpp:n:${nodes[1].name}`), [jb]);
  const mark = b.buffer.length;
  a.send(`<message to='${jb}' type='chat'><body>after the outage</body></message>`);
  await b.waitFor(/<body>after the outage<\/body>/, mark);
  // Redis lost everything it held, and no account with it.
  const { c: back } = await within(login(nodes[1].c2sPort, 'carol', 'carol-pw', 'back'), STEP_MS, 'carol to log in after the outage');
  back.destroy();
  a.destroy();
  b.destroy();
});

test.serial('a node paused past its lease is fenced: its ghost session never shadows the live one', async (t) => {
  const { redis, nodes, r } = await cluster(t, 2);
  const { c: ghost } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'phone');
  nodes[0].proc.kill('SIGSTOP');
  await registryUntil(redis.url, 'alice@localhost', 'phone', false);
  // The same full JID binds on the live node.
  const { c: live } = await login(nodes[1].c2sPort, 'alice', 'alice-pw', 'phone');
  const holder = JSON.parse((await r.hget('xmpp:s:alice@localhost', 'phone'))!);
  t.is(holder.node, nodes[1].name);
  nodes[0].proc.kill('SIGCONT');
  // The paused node learns it was fenced and ends the ghost with a stream error.
  await ghost.waitFor(/<stream:error>/);
  await nodes[0].waitForLog(/lost its lease/);
  const after = JSON.parse((await r.hget('xmpp:s:alice@localhost', 'phone'))!);
  t.is(after.node, nodes[1].name, 'the live session still holds the JID');
  t.is(after.sid, holder.sid);
  await ping(live, 'live');
  ghost.destroy();
  live.destroy();
});

/**
 * Resolves once `pred` holds for the records of `bare`, checked at once and
 * again on each invalidation; fails after STEP_MS with what it waited for.
 * The listener is in place before the first check: an invalidation that
 * arrives while the check is under way (its record written just after the
 * check read) wakes the next check instead of being lost.
 */
async function recordsUntil(url: string, bare: string, pred: (recs: Record<string, { sid: string; available: boolean; priority: number }>) => boolean): Promise<void> {
  const sub = new Redis(url);
  const check = new Redis(url);
  let changed = false;
  let wake: (() => void) | undefined;
  sub.on('message', (_ch: string, msg: string) => {
    if (msg !== bare) return;
    changed = true;
    wake?.();
  });
  const holds = async () => pred(Object.fromEntries(Object.entries(await check.hgetall(`xmpp:s:${bare}`)).map(([k, v]) => [k, JSON.parse(v)])));
  const until = async () => {
    await sub.subscribe('xmpp:inv');
    for (;;) {
      changed = false;
      if (await holds()) return;
      if (!changed) await new Promise<void>((resolve) => (wake = resolve));
    }
  };
  try {
    await within(until(), STEP_MS, `the records of ${bare} to change as expected`);
  } finally {
    sub.disconnect();
    check.disconnect();
  }
}

/** Resolves once someone listens on a node's worker channel again (its subscriber reconnected). */
async function subscribed(r: Redis, node: string): Promise<void> {
  for (;;) {
    const [, n] = (await r.pubsub('NUMSUB', `xmpp:c:${node}:0`)) as [string, number];
    if (n > 0) return;
    await new Promise<void>((resolve) => {
      setTimeout(resolve, 25);
    });
  }
}

test.serial('Redis down and back with its data: local sessions are served meanwhile, and what could not be written is reconciled', async (t) => {
  const { redis, nodes, r } = await cluster(t, 2, OUTAGE_LEASE_MS);
  const { c: a, jid: ja } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'one');
  const { c: b } = await login(nodes[0].c2sPort, 'bob', 'bob-pw', 'two');
  const { c: c3, jid: jc } = await login(nodes[1].c2sPort, 'carol', 'carol-pw', 'three');
  // Never looked up by anyone: nothing about dave is in the worker's cache.
  const { c: d, jid: jd } = await login(nodes[0].c2sPort, 'dave', 'dave-pw', 'four');
  for (const x of [a, b]) x.send('<presence/>');
  await recordsUntil(redis.url, 'bob@localhost', (recs) => recs.two?.available === true);
  await recordsUntil(redis.url, 'alice@localhost', (recs) => recs.one?.available === true);
  r.disconnect();
  await redis.save();
  await redis.stop();

  // A session on the same worker is reached without the registry.
  let mark = d.buffer.length;
  a.send(`<message to='${jd}' type='chat' id='m1'><body>during the outage</body></message>`);
  await d.waitFor(/<body>during the outage<\/body>/, mark);
  // A presence change cannot be broadcast (the roster is in Redis): it is
  // not applied, the client is told so, and the session lives on.
  const from = a.buffer.length;
  a.send('<presence><priority>7</priority></presence>');
  await a.waitFor(/<presence[^>]*type=["']error["']/, from);
  t.regex(a.buffer.slice(from), /<error type=["']wait["']>\s*<internal-server-error xmlns=["']urn:ietf:params:xml:ns:xmpp-stanzas["']\/>/);
  // An address the node cannot resolve now: an error to retry on, not a lost message or a dropped stream.
  mark = a.buffer.length;
  a.send(`<message to='carol@localhost' type='chat' id='m2'><body>where are you</body></message>`);
  await a.waitFor(/<message[^>]*id=["']m2["'][^>]*type=["']error["']|<message[^>]*type=["']error["'][^>]*id=["']m2["']/, mark);
  t.regex(a.buffer.slice(mark), /<error type=["']wait["']>\s*<internal-server-error xmlns=["']urn:ietf:params:xml:ns:xmpp-stanzas["']\/>/);
  await ping(a, 'down-a');
  // A session that ends now cannot unbind, nor say it is gone.
  b.destroy();
  await nodes[0].waitForLog(/"jid":"bob@localhost\/two".*"msg":"unavailable broadcast failed"/);

  await redis.resume(); // with its data, as a Redis with persistence comes back
  // The node writes what it could not: bob's record goes.
  await recordsUntil(redis.url, 'bob@localhost', (recs) => recs.two === undefined);
  await nodes[0].waitForLog(/reconciled local sessions/);
  const r2 = new Redis(redis.url);
  t.teardown(() => r2.disconnect());
  t.like(JSON.parse((await r2.hget('xmpp:s:alice@localhost', 'one'))!), { available: true, priority: 0 }, 'the refused change was not recorded either');
  t.deepEqual((await r2.smembers(`xmpp:n:${nodes[0].name}`)).sort(), [ja, jd].sort());
  t.deepEqual(await r2.smembers(`xmpp:n:${nodes[1].name}`), [jc]);
  // Routing across nodes resumes.
  await within(subscribed(r2, nodes[1].name), STEP_MS, `${nodes[1].name} to subscribe again`);
  mark = c3.buffer.length;
  a.send(`<message to='${jc}' type='chat'><body>back again</body></message>`);
  await c3.waitFor(/<body>back again<\/body>/, mark);
  t.false(a.isClosed);
  for (const x of [a, c3, d]) x.destroy();
});

test.serial('a session whose resource another session took while its kick could not arrive is ended with conflict, not left as a ghost', async (t) => {
  const { redis, nodes, r } = await cluster(t, 2, OUTAGE_LEASE_MS);
  const { c: a } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'one');
  const { c: b } = await login(nodes[0].c2sPort, 'bob', 'bob-pw', 'two');
  const { c: live } = await login(nodes[1].c2sPort, 'carol', 'carol-pw', 'live');
  // As a new-wins bind on node 2 would leave them had its kicks been lost.
  const stolen = (sid: string) => JSON.stringify({ sid, node: nodes[1].name, worker: 0, priority: 0, available: false });
  await r.hset('xmpp:s:alice@localhost', 'one', stolen('newer-alice'));
  await r.hset('xmpp:s:bob@localhost', 'two', stolen('newer-bob'));
  // Alice finds out at her next presence change.
  a.send('<presence/>');
  await a.waitFor(/<stream:error>\s*<conflict xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']\/>/);
  // Bob says nothing; the reconciliation after an outage finds him out.
  r.disconnect();
  await redis.save();
  await redis.stop();
  await redis.resume();
  await b.waitFor(/<stream:error>\s*<conflict xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']\/>/);
  const r2 = new Redis(redis.url);
  t.teardown(() => r2.disconnect());
  t.is(JSON.parse((await r2.hget('xmpp:s:bob@localhost', 'two'))!).sid, 'newer-bob', 'the newer session keeps its record');
  await ping(live, 'unaffected');
});

test.serial('two processes under one node name: the newer one serves, the older one closes its streams and exits 1 instead of fencing it back', async (t) => {
  const { redis, nodes, r, add } = await cluster(t, 2);
  const { c: old, jid: jOld } = await login(nodes[0].c2sPort, 'alice', 'alice-pw', 'desk');
  const { c: phone, jid: jPhone } = await login(nodes[1].c2sPort, 'alice', 'alice-pw', 'phone');
  old.send('<presence/>');
  phone.send('<presence/>');
  await recordsUntil(redis.url, 'alice@localhost', (recs) => recs.desk?.available === true && recs.phone?.available === true);
  const from = phone.buffer.length;
  const twin = await add(nodes[0].name);
  // The older process finds out at its next heartbeat.
  await old.waitFor(/<stream:error>\s*<system-shutdown xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']\/>/);
  t.is(await nodes[0].exited, 1);
  t.regex(nodes[0].log, /another process joined the cluster under this node's name/);
  // The newer one started from a clean slate under the name, and keeps it.
  const { c: again, jid } = await login(twin.c2sPort, 'alice', 'alice-pw', 'desk');
  t.is(jid, jOld);
  t.like(JSON.parse((await r.hget('xmpp:s:alice@localhost', 'desk'))!), { node: nodes[0].name });
  t.false(/lost its lease|another process joined/.test(twin.log), twin.log);
  // The other resource heard that desk was gone exactly once: from the newer
  // process's clean slate, not again from the older one closing its stream
  // (which happened before it exited; this message comes after, through Redis).
  again.send(`<message to='${jPhone}' type='chat'><body>barrier</body></message>`);
  await phone.waitFor(/<body>barrier<\/body>/, from);
  const heard = phone.buffer.slice(from).match(new RegExp(`<presence[^>]*from=["']${jOld}["'][^>]*type=["']unavailable["']|<presence[^>]*type=["']unavailable["'][^>]*from=["']${jOld}["']`, 'g')) ?? [];
  t.is(heard.length, 1, phone.buffer.slice(from));
  again.destroy();
  phone.destroy();
});
