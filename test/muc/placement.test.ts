// Room placement in a cluster (muc/placement.ts) against a private Redis:
// one holder per room whoever claims it at once, a claim that moves only
// once its node's lease lapsed, and fencing: a node whose lease lapsed can
// neither claim a room nor write its occupants, and a claim it made is
// taken by another node. The occupant mirror (muc/occupants.ts) writes
// what changed and reads back what a taking-over node needs.
import test from 'ava';
import { Element } from 'ltx';
import type { Redis } from 'ioredis';
import { RedisServer } from '../helpers/redis.ts';
import { Membership } from '../../src/cluster/membership.ts';
import { connectRedis, ready } from '../../src/cluster/redis.ts';
import { ClusterRooms, MK, workerFor } from '../../src/muc/placement.ts';
import { OccupantMirror, parseMirror, keptPresence, MAX_PRESENCE } from '../../src/muc/occupants.ts';
import type { Occupant } from '../../src/muc/room.ts';
import { StanzaError } from '../../src/xmpp/errors.ts';
import { setLogLevel } from '../../src/log.ts';

setLogLevel('error');

let server: RedisServer;
const clients: Redis[] = [];

test.before(async () => {
  server = await RedisServer.start();
});
test.after.always(async () => {
  for (const c of clients) c.disconnect();
  await server?.destroy();
});

/** A node joined with a lease of `leaseMs` (never renewed: it lapses then), and its placement as seen from its worker `worker` of `workers`. */
async function node(name: string, leaseMs: number, worker = 0, workers = [0]): Promise<{ m: Membership; rooms: ClusterRooms; r: Redis }> {
  const a = connectRedis(server.url, `${name}:m`);
  const r = connectRedis(server.url, `${name}:c`);
  clients.push(a, r);
  await Promise.all([ready(a), ready(r)]);
  const m = new Membership(a, name, leaseMs);
  await m.join();
  return { m, r, rooms: new ClusterRooms({ redis: r, node: name, epoch: () => m.epoch, worker: () => worker, workers: () => workers }) };
}

let n = 0;
const fresh = () => `room${++n}x${process.pid}`;

test('concurrent first stanzas through two nodes: one holder per room, the same answer on both', async (t) => {
  const a = await node(`pa${n}`, 60_000);
  const b = await node(`pb${n}`, 60_000);
  for (let round = 0; round < 50; round++) {
    const room = fresh();
    const [x, y] = await Promise.all([a.rooms.place(room), b.rooms.place(room)]);
    // Exactly one of them runs it; the other is told where.
    t.true((x === 'here') !== (y === 'here'), `round ${round}: ${JSON.stringify([x, y])}`);
    const holder = x === 'here' ? a.m.node : b.m.node;
    t.deepEqual(x === 'here' ? y : x, { node: holder, worker: 0 });
    t.is(JSON.parse((await a.r.get(MK.claim(room)))!).node, holder);
    t.true(await a.r.sismember(MK.placed(holder), room) === 1);
  }
});

test('a claim moves only once its node’s lease lapsed; the old holder can then neither write occupants nor claim again', async (t) => {
  const a = await node(`la${n}`, 400);
  const b = await node(`lb${n}`, 60_000);
  const room = fresh();
  t.is(await a.rooms.place(room), 'here');
  t.deepEqual(await b.rooms.place(room, { fresh: true }), { node: a.m.node, worker: 0 }, 'held while the lease holds');
  t.true(await a.rooms.write(room, { replace: true, set: [['alice@localhost/x', '{}']], del: [], on: [a.m.node], off: [] }));
  // No heartbeat: a's lease lapses.
  await new Promise((r) => setTimeout(r, 500));
  t.is(await b.rooms.place(room, { fresh: true }), 'here', 'taken over');
  t.false(await a.rooms.write(room, { replace: false, set: [['bob@localhost/y', '{}']], del: [], on: [], off: [] }), 'the old holder is fenced off the occupants');
  t.deepEqual([...(await b.rooms.read(room)).keys()], ['alice@localhost/x'], 'the occupants as the old holder left them');
  const refused = await a.rooms.place(fresh()).catch((err: unknown) => err);
  t.true(refused instanceof StanzaError && refused.condition === 'service-unavailable' && refused.type === 'wait', 'a node without its lease claims nothing');
  t.false(await a.r.sismember(MK.placed(a.m.node), room) === 1, 'no longer listed under the old node');
  // Renewed under the same epoch, a's lease holds again, but the room stays b's.
  await a.m.beat();
  t.deepEqual(await a.rooms.place(room, { fresh: true }), { node: b.m.node, worker: 0 });
});

test('a claim made under an older epoch (the node was fenced, or restarted) is free', async (t) => {
  const a = await node(`ea${n}`, 60_000);
  const b = await node(`eb${n}`, 60_000);
  const room = fresh();
  t.is(await a.rooms.place(room), 'here');
  await a.m.join(true);
  t.is(await b.rooms.place(room, { fresh: true }), 'here');
});

test('within a node, the room goes to the worker its name hashes to; a worker that died loses its rooms to another of the node', async (t) => {
  let live = [0, 1, 2];
  const a = await node(`wa${n}`, 60_000, 0, live);
  const w1 = new ClusterRooms({ redis: a.r, node: a.m.node, epoch: () => a.m.epoch, worker: () => 1, workers: () => live });
  const room = fresh();
  const first = await a.rooms.place(room);
  const chosen = workerFor(room, live);
  t.deepEqual(first, chosen === 0 ? 'here' : { node: a.m.node, worker: chosen });
  t.deepEqual(await w1.place(room), chosen === 1 ? 'here' : { node: a.m.node, worker: chosen }, 'the same answer from another worker');
  // The chosen worker dies: the others no longer count it, and the room moves to one of them.
  live = live.filter((w) => w !== chosen);
  const a2 = new ClusterRooms({ redis: a.r, node: a.m.node, epoch: () => a.m.epoch, worker: () => live[0], workers: () => live });
  const moved = await a2.place(room, { fresh: true });
  const to = moved === 'here' ? live[0] : moved.worker;
  t.not(to, chosen);
  t.true(live.includes(to));
  t.is(JSON.parse((await a.r.get(MK.claim(room)))!).worker, to);
});

test('release: the claim and the occupants go, only for the holder', async (t) => {
  const a = await node(`ra${n}`, 60_000);
  const b = await node(`rb${n}`, 60_000);
  const room = fresh();
  t.is(await a.rooms.place(room), 'here');
  t.true(await a.rooms.write(room, { replace: true, set: [['alice@localhost/x', '{}']], del: [], on: [], off: [] }));
  await b.rooms.release(room);
  t.truthy(await a.r.get(MK.claim(room)), 'not the holder: nothing released');
  await a.rooms.release(room);
  t.is(await a.r.get(MK.claim(room)), null);
  t.is(await a.r.exists(MK.occupants(room)), 0);
});

const occupant = (nick: string, bare: string, sessions: [string, Element][]): Occupant => ({ nick, bare, role: 'participant', sessions: new Map(sessions) });

test('the occupant mirror writes what changed, in order, and reads back every session with its place', async (t) => {
  const a = await node(`ma${n}`, 60_000);
  const room = fresh();
  t.is(await a.rooms.place(room), 'here');
  const where: Record<string, { node: string; worker: number }> = { 'alice@localhost/x': { node: 'n1', worker: 2 }, 'bob@localhost/y': { node: 'n2', worker: 0 } };
  let lost = 0;
  const mirror = new OccupantMirror(room, a.rooms, async (full) => where[full], () => lost++);
  const hello = new Element('presence').c('show').t('away').up().c('status').t('here').up();
  const alice = occupant('Alice', 'alice@localhost', [['alice@localhost/x', hello]]);
  const bob = occupant('Bob', 'bob@localhost', [['bob@localhost/y', new Element('presence')]]);
  await mirror.sync([alice, bob]);
  t.deepEqual((await a.r.smembers(MK.on('n2'))), [room]);
  // Bob leaves: his entry goes, and the room is no longer listed under his node.
  await mirror.sync([alice]);
  const back = parseMirror(await a.rooms.read(room));
  t.deepEqual(back.map((s) => [s.full, s.nick, s.bare, s.role, s.at]), [['alice@localhost/x', 'Alice', 'alice@localhost', 'participant', { node: 'n1', worker: 2 }]]);
  t.is(back[0].presence.getChildText('show'), 'away');
  t.deepEqual(await a.r.smembers(MK.on('n2')), []);
  t.deepEqual(await a.r.smembers(MK.on('n1')), [room]);
  t.is(lost, 0);
  // A long presence is kept short: show, status, caps.
  const big = new Element('presence').c('show').t('dnd').up().c('status').t('s'.repeat(5000)).up().c('junk', { xmlns: 'urn:x' }).t('j'.repeat(5000)).up();
  const kept = keptPresence(big);
  t.true(kept.length <= MAX_PRESENCE, `${kept.length}`);
  t.true(kept.includes('<show>dnd</show>'));
  t.false(kept.includes('junk'));
});
