// The Redis roster store against a real redis-server: the shared contract,
// then what only a networked, shared store has (key layout, losing Redis and
// getting it back, choosing the store from the configuration).
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RedisRosterStore } from '../../src/roster/redis.ts';
import { openRosterStore } from '../../src/roster/open.ts';
import { EMPTY_VERSION, RosterFullError } from '../../src/roster/store.ts';
import { ready } from '../../src/cluster/redis.ts';
import { RedisServer, freePort, inspector as inspect, sharedRedisServer } from '../helpers/redis.ts';
import { rosterStoreContract, IN_SUBSCRIBE, OUT_SUBSCRIBE, OUT_SUBSCRIBED, OUT_UNSUBSCRIBED } from './contract.ts';

const server = sharedRedisServer(test);

/** A plain client for looking at what the store wrote (this file's server unless told). */
const inspector = (t: ExecutionContext, url = server.url): Redis => inspect(t, url);

async function openStore(t: ExecutionContext, namespace?: string, url = server.url): Promise<RedisRosterStore> {
  const s = await RedisRosterStore.open(url, { namespace, name: 'test-roster' });
  t.teardown(() => s.close());
  return s;
}

let namespaces = 0;

rosterStoreContract('redis', async (t) => {
  // One server for the file, one namespace per test: the tests run at once.
  const namespace = `t${++namespaces}:`;
  return {
    store: await openStore(t, namespace),
    another: () => openStore(t, namespace), // a separate connection: another node
  };
});

test('key layout: one hash per user with the epoch, the counter and one field per item', async (t) => {
  const s = await openStore(t, 'layout:');
  const r = inspector(t);
  const { version } = await s.set('alice', { jid: 'bob@x', name: 'Bob', groups: ['G'] }, 10);
  await s.setSubscription('alice', 'carol@x', 'none', 'subscribe', { max: 10 });
  t.deepEqual(await r.keys('layout:*'), ['layout:roster:alice']);
  t.is(s.key('alice'), 'layout:roster:alice');
  const h = await r.hgetall('layout:roster:alice');
  t.deepEqual(Object.keys(h).sort(), ['#e', '#v', 'j:bob@x', 'j:carol@x']);
  t.is(h['#v'], '2');
  t.is(version, `${h['#e']}.1`);
  t.is(h['j:bob@x'], 'none\n{"n":"Bob","g":["G"]}');
  t.is(h['j:carol@x'], 'none subscribe\n{"g":[]}');
  await s.removeAll('alice');
  t.is(await r.exists('layout:roster:alice'), 0);
});

test('key layout: pending requests in a second hash, with an arrival counter; gone with the last request', async (t) => {
  const s = await openStore(t, 'pending:');
  const r = inspector(t);
  t.is(s.pendingKey('alice'), 'pending:pending:alice');
  await s.transition('alice', 'bob@x', IN_SUBSCRIBE, { max: 10, request: '<presence type="subscribe">\n</presence>' });
  await s.transition('alice', 'carol@x', IN_SUBSCRIBE, { max: 10, request: 'R2' });
  t.deepEqual(await r.keys('pending:*'), ['pending:pending:alice'], 'a pending request alone is no roster');
  t.deepEqual(await r.hgetall('pending:pending:alice'), { '#n': '2', 'r:bob@x': '1\n<presence type="subscribe">\n</presence>', 'r:carol@x': '2\nR2' });
  const out = await s.transition('alice', 'bob@x', OUT_SUBSCRIBED, { max: 10 });
  t.is(out.after, 'from');
  t.deepEqual(await r.hgetall('pending:roster:alice'), { '#e': out.change!.version.split('.')[0]!, '#v': '1', 'j:bob@x': 'from\n{"g":[]}' });
  t.deepEqual(await r.hgetall('pending:pending:alice'), { '#n': '2', 'r:carol@x': '2\nR2' });
  await s.transition('alice', 'carol@x', OUT_UNSUBSCRIBED, { max: 10 });
  t.is(await r.exists('pending:pending:alice'), 0, 'the counter goes with the last request');
  await s.transition('alice', 'dave@x', IN_SUBSCRIBE, { max: 10, request: 'R3' });
  await s.removeAll('alice');
  t.deepEqual(await r.keys('pending:*'), []);
});

test('a damaged pending request is reported, not misread', async (t) => {
  const s = await openStore(t, 'damagedp:');
  await inspector(t).hset('damagedp:pending:alice', 'r:bob@x', 'no separator');
  await t.throwsAsync(s.pendingRequests('alice'), { message: /damaged/ });
});

test('a damaged item is reported, not misread', async (t) => {
  const s = await openStore(t, 'damaged:');
  await inspector(t).hset('damaged:roster:alice', 'j:bob@x', 'no separator');
  await t.throwsAsync(s.get('alice'), { message: /damaged/ });
  await t.throwsAsync(s.item('alice', 'bob@x'), { message: /damaged/ });
});

test('scripts are loaded again after SCRIPT FLUSH', async (t) => {
  const s = await openStore(t, 'flush:');
  await s.set('alice', { jid: 'a@x', groups: [] }, 10);
  await inspector(t).script('FLUSH');
  await s.set('alice', { jid: 'b@x', groups: [] }, 10);
  t.truthy(await s.remove('alice', 'a@x'));
  await inspector(t).script('FLUSH');
  t.true((await s.setSubscription('alice', 'b@x', 'to', undefined))!.changed);
  await inspector(t).script('FLUSH');
  t.is((await s.transition('alice', 'c@x', OUT_SUBSCRIBE, { max: 10 })).after, 'none+out');
  await s.remove('alice', 'c@x');
  t.deepEqual((await s.get('alice')).items, [{ jid: 'b@x', subscription: 'to', groups: [] }]);
});

test('fromClient uses a borrowed connection and leaves it open; close() is idempotent', async (t) => {
  const client = inspector(t);
  await ready(client);
  const s = RedisRosterStore.fromClient(client, { namespace: 'borrowed:' });
  t.is(s.redis, client);
  await s.set('alice', { jid: 'bob@x', groups: [] }, 10);
  t.is((await (await openStore(t, 'borrowed:')).get('alice')).items.length, 1);
  await s.close();
  await s.close();
  t.is(await client.ping(), 'PONG');

  const own = await RedisRosterStore.open(server.url, { namespace: 'closing:' });
  await own.close();
  await own.close();
  t.is(own.redis.status, 'end');
  await t.throwsAsync(own.get('alice'));
});

test('open() rejects, without hanging, when Redis is not there', async (t) => {
  const url = `redis://127.0.0.1:${await freePort()}`;
  const started = Date.now();
  await t.throwsAsync(RedisRosterStore.open(url, { connectTimeoutMs: 300 }), { message: /redis not ready within 300 ms/ });
  t.true(Date.now() - started < 2000);
});

test('losing Redis: every operation rejects at once; all works again once it is back', async (t) => {
  const own = await RedisServer.start(); // stopping the shared one would disturb the other tests
  t.teardown(() => own.destroy());
  const a = await openStore(t, undefined, own.url); // node A
  const b = await openStore(t, undefined, own.url); // node B
  const before = await a.set('alice', { jid: 'bob@x', groups: [] }, 10);
  t.is((await b.get('alice')).version, before.version);

  await own.stop();
  for (const s of [a, b]) {
    const ops: [string, () => Promise<unknown>][] = [
      ['get', () => s.get('alice')],
      ['item', () => s.item('alice', 'bob@x')],
      ['set', () => s.set('alice', { jid: 'carol@x', groups: [] }, 10)],
      ['remove', () => s.remove('alice', 'bob@x')],
      ['setSubscription', () => s.setSubscription('alice', 'bob@x', 'to', undefined)],
      ['removeAll', () => s.removeAll('alice')],
      ['transition', () => s.transition('alice', 'bob@x', OUT_SUBSCRIBE, { max: 10 })],
      ['state', () => s.state('alice', 'bob@x')],
      ['pendingRequests', () => s.pendingRequests('alice')],
    ];
    for (const [name, op] of ops) {
      const started = Date.now();
      const err = await t.throwsAsync(op(), undefined, name);
      t.false(err instanceof RosterFullError, `${name}: ${err?.message}`);
      t.true(Date.now() - started < 1000, `${name} rejected after ${Date.now() - started} ms`);
    }
  }

  await own.resume(); // empty: no persistence
  await Promise.all([ready(a.redis), ready(b.redis)]);
  t.deepEqual(await a.get('alice'), { version: EMPTY_VERSION, items: [] });
  const after = await b.set('alice', { jid: 'bob@x', groups: [] }, 10);
  t.not(after.version, before.version, 'a roster rebuilt after data loss does not reuse a version');
  t.deepEqual((await a.get('alice')).items, [after.item]);
});

test('openRosterStore: Redis when XMPP_REDIS_URL is set', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-roster-open-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const db1 = `${server.url}/1`; // its own database: the default namespace is used there
  const r = await openRosterStore({ redisUrl: db1, dataDir, nodeId: 'n1' });
  t.teardown(() => r.close());
  t.true(r instanceof RedisRosterStore);
  await r.set('alice', { jid: 'bob@x', groups: [] }, 10);
  t.is(await inspector(t, db1).exists('xmpp:roster:alice'), 1);
  t.is(await inspector(t).exists('xmpp:roster:alice'), 0);
  t.false(existsSync(join(dataDir, 'roster.sqlite')));
  const names = (await inspector(t, db1).client('LIST')) as string;
  t.regex(names, /name=n1:roster/);
});
