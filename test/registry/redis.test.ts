import test from 'ava';
import { registryContract, rec } from './contract.ts';
import { RedisServer, RedisMonitor, clientAddress } from '../helpers/redis.ts';
import { within, uid } from '../helpers/protocol.ts';
import { RedisRegistry } from '../../src/registry/redis.ts';
import { Membership } from '../../src/cluster/membership.ts';
import { connectRedis, ready } from '../../src/cluster/redis.ts';
import type { Redis } from 'ioredis';
import { setLogLevel } from '../../src/log.ts';

// Joining the cluster is logged at info: not news in this file's output.
setLogLevel('warn');

let server: RedisServer;
const clients: Redis[] = [];
const fixture: { a?: RedisRegistry; b?: RedisRegistry } = {};

/** A node joined to the cluster, and its registry with the connection it runs on. */
async function member(node: string): Promise<{ registry: RedisRegistry; conn: Redis }> {
  const m = connectRedis(server.url, `${node}:m`);
  const c = connectRedis(server.url, `${node}:c`);
  clients.push(m, c);
  await Promise.all([ready(m), ready(c)]);
  const membership = new Membership(m, node, 60_000);
  await membership.join();
  return { registry: new RedisRegistry(c, node, () => membership.epoch), conn: c };
}

test.before(async () => {
  server = await RedisServer.start();
  fixture.a = (await member('ra')).registry;
  fixture.b = (await member('rb')).registry;
});
test.after.always(async () => {
  for (const c of clients) c.disconnect();
  await server?.destroy();
});

registryContract('redis', async () => ({ registry: fixture.a!, node: 'ra', other: fixture.b!, otherNode: 'rb' }));

test('ANONYMOUS: concurrent exclusive binds of one bare JID from two nodes, round after round, exactly one succeeds', async (t) => {
  const regs = [fixture.a!, fixture.b!];
  const nodes = ['ra', 'rb'];
  for (let round = 0; round < 50; round++) {
    const bare = `anon-excl${round}-${process.pid}@localhost`;
    // Two binds from each node: another resource, and the same resource (new-wins would replace it, were the bare JID not exclusive).
    const recs = ['x', 'y', 'x', 'y'].map((res, i) => rec(bare, res, nodes[i % 2], i));
    const outs = await Promise.all(recs.map((r, i) => regs[i % 2].bind({ rec: r, policy: 'new-wins', maxResources: 10, exclusiveBare: true })));
    const won = outs.flatMap((o, i) => (o.ok ? [i] : []));
    t.is(won.length, 1, `round ${round}: ${JSON.stringify(outs)}`);
    if (won.length !== 1) return;
    for (const [i, o] of outs.entries()) if (i !== won[0]) t.deepEqual(o, { ok: false, condition: 'conflict' }, `round ${round}, bind ${i}`);
    const winner = recs[won[0]];
    for (const g of regs) t.deepEqual((await g.resources(bare)).map((r) => [r.jid, r.sid]), [[winner.jid, winner.sid]], `round ${round}: one session for the bare JID`);
  }
});

test('round trips as Redis sees them: bind, unbind, setPresence and a cold lookup cost one command each, a warm lookup none', async (t) => {
  const monitor = await RedisMonitor.open(server.port);
  t.teardown(() => monitor.close());
  const { registry: g, conn } = await member('rtrip');
  const me = await clientAddress(conn);
  /** The commands this registry's connection sent while `op` ran, and what its own counter says. */
  const cost = async (op: () => Promise<unknown>) => {
    const from = await within(monitor.mark(conn, uid('before')), 5000, 'MONITOR reporting the mark before');
    const counted = g.roundTrips;
    await op();
    const to = await within(monitor.mark(conn, uid('after'), from), 5000, 'MONITOR reporting the mark after');
    const sent = monitor.entries.slice(from + 1, to).filter((e) => e.source === me).map((e) => e.args[0].toLowerCase());
    return { sent, counted: g.roundTrips - counted };
  };
  const bare = `rt${process.pid}@localhost`;
  const r = rec(bare, 'one', 'rtrip');
  const script = /^eval(sha)?$/;

  const bind = await cost(() => g.bind({ rec: r, policy: 'new-wins', maxResources: 10, exclusiveBare: false }));
  t.is(bind.sent.length, 1, `bind: ${bind.sent.join(' ')}`);
  t.regex(bind.sent[0] ?? '', script);
  t.is(bind.counted, 1);

  const cold = await cost(() => g.lookup(r.jid));
  t.deepEqual(cold.sent, ['hgetall'], 'a cold lookup: one HGETALL');
  t.is(cold.counted, 1);

  const warm = await cost(async () => t.is((await g.lookup(r.jid))?.sid, r.sid));
  t.deepEqual(warm.sent, [], 'a warm lookup: nothing');
  t.is(warm.counted, 0);
  const warmAll = await cost(() => g.resources(bare));
  t.deepEqual(warmAll.sent, [], 'warm resources(): nothing');

  const presence = await cost(() => g.setPresence(r.jid, r.sid, true, 3));
  t.is(presence.sent.length, 1, `setPresence: ${presence.sent.join(' ')}`);
  t.regex(presence.sent[0] ?? '', script);
  t.is(presence.counted, 1);

  // setPresence changed the record: the next lookup fetches it again, once.
  const again = await cost(async () => t.is((await g.lookup(r.jid))?.priority, 3));
  t.deepEqual(again.sent, ['hgetall']);

  const unbind = await cost(() => g.unbind(r.jid, r.sid));
  t.is(unbind.sent.length, 1, `unbind: ${unbind.sent.join(' ')}`);
  t.regex(unbind.sent[0] ?? '', script);
  t.is(unbind.counted, 1);
});

test('onlinePages: the sessions of the live nodes a page at a time (SSCAN), never all of them in one command', async (t) => {
  const monitor = await RedisMonitor.open(server.port);
  t.teardown(() => monitor.close());
  const { registry: g, conn } = await member('pages');
  const me = await clientAddress(conn);
  const n = 400;
  const jids = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = rec(`page${i}-${process.pid}@localhost`, 'r', 'pages');
    t.true((await g.bind({ rec: r, policy: 'new-wins', maxResources: 10, exclusiveBare: false })).ok);
    jids.add(r.jid);
  }
  const from = await within(monitor.mark(conn, uid('before')), 5000, 'MONITOR reporting the mark before');
  const pages: string[][] = [];
  for await (const page of g.onlinePages!(50)) pages.push(page);
  const to = await within(monitor.mark(conn, uid('after'), from), 5000, 'MONITOR reporting the mark after');
  const seen = new Set(pages.flat());
  t.true([...jids].every((j) => seen.has(j)), 'every session bound is read');
  const ours = pages.map((p) => p.filter((j) => jids.has(j)).length).filter((k) => k > 0);
  t.true(ours.length > 1, `several pages: ${ours.join(', ')}`);
  t.true(Math.max(...ours) < n, 'no page holds them all');
  const sent = monitor.entries.slice(from + 1, to).filter((e) => e.source === me).map((e) => e.args[0].toLowerCase());
  t.true(sent.filter((c) => c === 'sscan').length >= ours.length, `one SSCAN a page: ${sent.join(' ')}`);
  t.true(sent.every((c) => c === 'sscan' || /^eval(sha)?$/.test(c)), sent.join(' '));
  // A reader that stops early reads no further.
  const before = g.roundTrips;
  for await (const page of g.onlinePages!(50)) if (page.length > 0) break;
  t.true(g.roundTrips - before <= 2, 'the live nodes, then one page');
});
