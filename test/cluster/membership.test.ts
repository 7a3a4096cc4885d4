// Membership and the registry's repair paths against a real redis-server,
// one step at a time (heartbeats are driven by hand): a node fenced by a
// bind that dropped its lapsed records, a node name taken by another
// process, the return of a Redis that kept its data, and the reconciliation
// of one worker's records with its live sessions.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { RedisServer, inspector } from '../helpers/redis.ts';
import { rec } from '../registry/contract.ts';
import { RedisRegistry } from '../../src/registry/redis.ts';
import { Membership } from '../../src/cluster/membership.ts';
import type { MembershipEvents } from '../../src/cluster/membership.ts';
import { connectRedis, ready } from '../../src/cluster/redis.ts';
import type { Redis } from 'ioredis';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

let server: RedisServer;
const conns: Redis[] = [];
let seq = 0;

/** What the membership logged (stderr, captured here so that it is checked instead of printed). */
const logged: { level: string; msg: string; node?: string }[] = [];
const stderrWrite = process.stderr.write;

test.before(async () => {
  process.stderr.write = ((chunk: string | Uint8Array) => {
    for (const line of String(chunk).split('\n').filter(Boolean)) logged.push(JSON.parse(line));
    return true;
  }) as typeof process.stderr.write;
  server = await RedisServer.start();
});
test.after.always(async () => {
  for (const c of conns) c.disconnect();
  await server?.destroy();
  process.stderr.write = stderrWrite;
});

async function connect(name: string): Promise<Redis> {
  const c = connectRedis(server.url, name);
  conns.push(c);
  await ready(c);
  return c;
}

/** A joined node that beats only when told to. */
async function node(name: string, leaseMs = 60_000): Promise<{ m: Membership; conn: Redis; registry: RedisRegistry; events: (keyof MembershipEvents)[] }> {
  const conn = await connect(`${name}:m`);
  const m = new Membership(conn, name, leaseMs);
  const events: (keyof MembershipEvents)[] = [];
  for (const e of ['epoch', 'fenced', 'superseded', 'reset', 'recovered', 'dead'] as const) m.on(e, () => events.push(e));
  await m.join();
  events.length = 0;
  return { m, conn, registry: new RedisRegistry(await connect(`${name}:c`), name, () => m.epoch), events };
}

const bind = (g: RedisRegistry, r: ReturnType<typeof rec>) => g.bind({ rec: r, policy: 'new-wins', maxResources: 10, exclusiveBare: false });

/** Resolves once Redis's clock has passed the node's lease (a lapse is judged by Redis's clock). */
async function lapsed(r: Redis, name: string): Promise<void> {
  for (;;) {
    const [score, [s, us]] = await Promise.all([r.zscore('xmpp:nodes', name), r.time()]);
    if (score === null) throw new Error(`${name} holds no lease`);
    const left = Number(score) - (Number(s) * 1000 + Math.floor(Number(us) / 1000));
    if (left < 0) return;
    // The event awaited is the passing of time itself, on Redis's clock.
    await new Promise<void>((resolve) => {
      setTimeout(resolve, left + 1);
    });
  }
}

/** Node a (300 ms lease, never renewed here) holding one record, once that lease has lapsed; and node b. */
async function lapsedRecord(t: ExecutionContext, user: string, resource: string) {
  const r = inspector(t, server.url);
  const a = await node(`ma${++seq}`, 300);
  const b = await node(`mb${seq}`);
  const mine = rec(`${user}${seq}@localhost`, resource, a.m.node);
  t.true((await bind(a.registry, mine)).ok);
  await lapsed(r, a.m.node);
  return { r, a, b, mine };
}

test.serial('a bind that drops the records of a node whose lease lapsed fences that node: it cannot renew as if it still had them', async (t) => {
  const { r, a, b, mine } = await lapsedRecord(t, 'alice', 'phone');
  // No sweep has run (nobody beats here): the bind alone finds the stale record.
  const theirs = rec(mine.bare, 'phone', b.m.node);
  b.registry.judging = true; // b has been healthy for a lease: it may take a lapse for a death
  const out = await bind(b.registry, theirs);
  t.true(out.ok);
  t.is(out.ok ? out.replaced : 'refused', undefined, 'a stale record is dropped, not replaced (nobody to kick)');
  t.deepEqual(out.dropped, [{ jid: mine.jid, bare: mine.bare, available: false, directed: [] }], 'and reported, for its end to be announced');
  t.deepEqual(await r.smembers(`xmpp:n:${a.m.node}`), []);
  const before = a.m.epoch;
  await a.m.beat();
  t.deepEqual(a.events.slice(0, 2), ['fenced', 'epoch'], 'the lapsed node learns it lost its sessions and rejoins');
  t.not(a.m.epoch, before);
  t.is(JSON.parse((await r.hget(`xmpp:s:${mine.bare}`, 'phone'))!).sid, theirs.sid, 'the live session keeps the resource');
});

test.serial('a node not yet judging (not healthy for a whole lease, as after an outage every node saw) keeps a lapsed record as live: no drop, no fence', async (t) => {
  const { a, b, mine } = await lapsedRecord(t, 'hank', 'phone');
  t.false(b.registry.judging);
  const out = await bind(b.registry, rec(mine.bare, 'phone', b.m.node));
  t.like(out, { ok: true, replaced: { sid: mine.sid } }, 'new-wins replaces it as a live session (its kick reaches it if it is alive)');
  t.deepEqual(out.dropped, [{ jid: mine.jid, bare: mine.bare, available: false, directed: [] }], 'and reported for announcement: no sweep will find it now');
  await a.m.beat();
  t.false(a.events.includes('fenced'), a.events.join(' '));
});

test.serial('a lapse alone (no bind dropped anything, no sweep) is renewed by the next heartbeat', async (t) => {
  const { r, a, mine } = await lapsedRecord(t, 'bob', 'desk');
  await a.m.beat();
  t.deepEqual(a.events.filter((e) => e !== 'dead'), [], "renewed (it may sweep other nodes' lapsed leases)");
  t.truthy(await r.hget(`xmpp:s:${mine.bare}`, 'desk'));
});

test.serial('another process joining under the same node name supersedes the first, which stops instead of fencing it back', async (t) => {
  const name = `md${++seq}`;
  const first = await node(name);
  const second = await node(name);
  await first.m.beat();
  t.deepEqual(first.events, ['superseded']);
  t.like(logged.find((l) => l.level === 'error' && l.node === name), { msg: "another process joined the cluster under this node's name (XMPP_NODE_ID); this one stops serving" });
  await second.m.beat();
  t.deepEqual(second.events, [], 'the newer process keeps its lease');
  const r = inspector(t, server.url);
  t.is(await r.hget('xmpp:epochs', name), second.m.epoch);
});

test.serial('a fenced node rejoining after another process took its name does not clean that one\'s sessions', async (t) => {
  const name = `mm${++seq}`;
  const first = await node(name);
  const second = await node(name);
  const theirs = rec(`ivy${seq}@localhost`, 'r', name);
  t.true((await bind(second.registry, theirs)).ok);
  // As if its heartbeat had said 'fenced' just before the other one joined.
  await first.m.join(true);
  t.deepEqual(first.events, ['superseded']);
  const r = inspector(t, server.url);
  t.like(JSON.parse((await r.hget(`xmpp:s:${theirs.bare}`, 'r'))!), { sid: theirs.sid });
  t.is(await r.hget('xmpp:epochs', name), second.m.epoch);
});

test.serial('a heartbeat after an outage in which Redis kept its data reports "recovered"; one after Redis lost it, "reset"', async (t) => {
  const a = await node(`me${++seq}`);
  await server.save();
  await server.stop();
  await a.m.beat(); // fails: Redis is down
  t.deepEqual(a.events, []);
  await server.resume();
  await ready(a.conn);
  await a.m.beat();
  t.deepEqual(a.events, ['recovered']);
  a.events.length = 0;
  await server.stop();
  rmSync(join(server.dir, 'dump.rdb')); // it comes back empty
  await a.m.beat();
  await server.resume();
  await ready(a.conn);
  await a.m.beat();
  t.deepEqual(a.events, ['reset']);
});

test.serial('reconcile: records of ended sessions go and are reported, a missing or outdated record is rewritten, a replaced session is reported; records of other workers and binds in flight are untouched', async (t) => {
  const r = inspector(t, server.url);
  const a = await node(`mf${++seq}`);
  const b = await node(`mg${seq}`);
  const u = `carol${seq}@localhost`;
  const live = rec(u, 'live', a.m.node, 0);
  const ended = rec(u, 'ended', a.m.node, 0);
  const missing = rec(u, 'missing', a.m.node, 0);
  const taken = rec(u, 'taken', a.m.node, 0);
  const otherWorker = rec(u, 'w1', a.m.node, 1);
  const binding = rec(u, 'binding', a.m.node, 0);
  for (const x of [live, ended, missing, taken, otherWorker, binding]) t.true((await bind(a.registry, x)).ok);
  await a.registry.setPresence(ended.jid, ended.sid, true, 0);
  await a.registry.noteDirected(ended.jid, ended.sid, [`dave${seq}@localhost`]);
  // What the outage left: 'missing' lost its record, 'taken' was replaced from
  // another node (its kick lost), 'ended' ended without its unbind written.
  await r.hdel(`xmpp:s:${u}`, 'missing');
  const newer = rec(u, 'taken', b.m.node);
  t.true((await bind(b.registry, newer)).ok);
  const out = await a.registry.reconcile(0, [
    { jid: live.jid, sid: live.sid, available: true, priority: 3 },
    { jid: missing.jid, sid: missing.sid, available: false, priority: 0 },
    { jid: taken.jid, sid: taken.sid, available: true, priority: 0 },
  ], [binding.sid, 'a-binding-session-with-nothing-written-yet']);
  t.deepEqual(out, {
    gone: [{ jid: ended.jid, bare: u, available: true, directed: [`dave${seq}@localhost`] }],
    replaced: [{ jid: taken.jid, sid: taken.sid }],
  });
  const now = await a.registry.resources(u);
  const by = (res: string) => now.find((x) => x.jid === `${u}/${res}`);
  t.like(by('live'), { sid: live.sid, available: true, priority: 3 });
  t.like(by('missing'), { sid: missing.sid, node: a.m.node, worker: 0 });
  t.like(by('taken'), { sid: newer.sid, node: b.m.node });
  t.like(by('w1'), { sid: otherWorker.sid, worker: 1 }, "another worker's record is its own business");
  t.like(by('binding'), { sid: binding.sid }, 'a bind written before its answer arrived is kept');
  t.is(by('ended'), undefined);
  t.is(await r.exists(`xmpp:dp:${ended.sid}`), 0);
  t.deepEqual((await r.smembers(`xmpp:n:${a.m.node}`)).sort(), [live.jid, missing.jid, otherWorker.jid, binding.jid].sort());
});

test.serial('reconcile and directed-presence notes refuse a fenced node or a session that no longer holds its record', async (t) => {
  const r = inspector(t, server.url);
  const a = await node(`mh${++seq}`);
  const x = rec(`erin${seq}@localhost`, 'r', a.m.node);
  t.true((await bind(a.registry, x)).ok);
  await a.registry.unbind(x.jid, x.sid);
  await a.registry.noteDirected(x.jid, x.sid, ['frank@localhost']);
  t.is(await r.exists(`xmpp:dp:${x.sid}`), 0, 'no key left behind for nobody to remove');
  await r.hincrby('xmpp:epochs', a.m.node, 1); // as a sweep does
  t.is(await a.registry.reconcile(0, [{ jid: x.jid, sid: x.sid, available: true, priority: 0 }]), undefined);
  t.is(await r.hget(`xmpp:s:${x.bare}`, 'r'), null, 'a fenced node writes nothing back');
});

test.serial('a presence update that finds its resource held by another session reports the session as replaced', async (t) => {
  const a = await node(`mi${++seq}`);
  const b = await node(`mj${seq}`);
  const x = rec(`gina${seq}@localhost`, 'r', a.m.node);
  t.true((await bind(a.registry, x)).ok);
  t.true((await bind(b.registry, rec(x.bare, 'r', b.m.node))).ok);
  const replaced: string[] = [];
  a.registry.onReplaced = (jid, sid) => replaced.push(`${jid} ${sid}`);
  t.false(await a.registry.setPresence(x.jid, x.sid, true, 0), 'not to be announced');
  t.deepEqual(replaced, [`${x.jid} ${x.sid}`]);
});

test.serial('a presence update from a fenced node is refused and not to be announced; an ordinary one is', async (t) => {
  const r = inspector(t, server.url);
  const a = await node(`mn${++seq}`);
  const x = rec(`jack${seq}@localhost`, 'r', a.m.node);
  t.true((await bind(a.registry, x)).ok);
  t.true(await a.registry.setPresence(x.jid, x.sid, true, 1));
  await r.hincrby('xmpp:epochs', a.m.node, 1); // as a sweep or a judging bind does
  t.false(await a.registry.setPresence(x.jid, x.sid, false, 1));
  t.like(JSON.parse((await r.hget(`xmpp:s:${x.bare}`, 'r'))!), { available: true, priority: 1 }, 'nothing written');
});
