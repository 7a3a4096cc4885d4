// The Redis offline store against a real redis-server: the shared contract
// (each instance its own connection, as two nodes would have), then what
// only the networked store has (key layout, borrowed connections, Redis
// missing).
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RedisOfflineStore } from '../../src/offline/redis.ts';
import { openOfflineStore } from '../../src/offline/open.ts';
import { freePort, inspector as inspect, sharedRedisServer } from '../helpers/redis.ts';
import { offlineStoreContract, drain } from './contract.ts';

const LIM = { max: 10, maxBytes: 100_000 };
const xmls = async (s: RedisOfflineStore, user: string) => (await drain(s, user, 'inspect')).map((m) => m.xml);

const server = sharedRedisServer(test);

/** A plain client for looking at what the store wrote (this file's server unless told). */
const inspector = (t: ExecutionContext, url = server.url): Redis => inspect(t, url);

async function openStore(t: ExecutionContext, namespace?: string): Promise<RedisOfflineStore> {
  const s = await RedisOfflineStore.open(server.url, { namespace, name: 'test-offline' });
  t.teardown(() => s.close());
  return s;
}

let namespaces = 0;

offlineStoreContract('redis', async (t) => {
  // One server for the file, one namespace per test: the tests run at once.
  const namespace = `t${++namespaces}:`;
  return {
    store: await openStore(t, namespace),
    another: () => openStore(t, namespace), // a separate connection: another node
  };
});

test('key layout: one stream per user with its byte count and claim; nothing left once delivered', async (t) => {
  const s = await openStore(t); // the default namespace, and bob: only this test uses both (openOfflineStore's test writes 'opened' there)
  const r = inspector(t);
  await s.push('bob', '<message id="1"/>', LIM);
  await s.push('bob', '<message id="é"/>', LIM);
  t.deepEqual(s.keys('bob'), { queue: 'xmpp:offq:bob', bytes: 'xmpp:offb:bob', old: 'xmpp:offline:bob', claim: 'xmpp:offc:bob' });
  t.is(await r.type('xmpp:offq:bob'), 'stream');
  t.deepEqual((await r.xrange('xmpp:offq:bob', '-', '+')).map(([, f]) => f), [['x', '<message id="1"/>'], ['x', '<message id="é"/>']]);
  t.is(Number(await r.get('xmpp:offb:bob')), 17 + 18, 'bytes, not characters');
  const batch = (await s.fetch('bob', 'owner-1', '', 10, 60_000))!;
  t.is(await r.get('xmpp:offc:bob'), 'owner-1');
  t.true((await r.pttl('xmpp:offc:bob')) > 0, 'the claim expires');
  await s.remove('bob', batch.map((m) => m.id));
  await s.release('bob', 'owner-1');
  t.deepEqual(await r.keys('xmpp:off*:bob'), [], 'an empty queue leaves no key behind (nor a claim, released)');
  await s.push('bob', '<message id="3"/>', LIM);
  await s.fetch('bob', 'owner-2', '', 1, 60_000);
  await s.removeAll('bob');
  t.deepEqual(await r.keys('xmpp:off*:bob'), []);
});

test('a queue in the old layout (a plain list) is moved into the stream, in order, by the next operation', async (t) => {
  const s = await openStore(t, 'old:');
  const r = inspector(t);
  await r.rpush('old:offline:bob', '<message id="o1"/>', '<message id="o2"/>');
  t.is(await s.count('bob'), 2, 'counted before it is moved');
  t.true(await s.push('bob', '<message id="n1"/>', LIM));
  t.is(await r.exists('old:offline:bob'), 0);
  t.deepEqual(await xmls(s, 'bob'), ['<message id="o1"/>', '<message id="o2"/>', '<message id="n1"/>']);
  await r.rpush('old:offline:carol', '<message id="c1"/>');
  t.deepEqual(await xmls(s, 'carol'), ['<message id="c1"/>'], 'fetch moves it too');
});

test('the scripts are loaded again after SCRIPT FLUSH', async (t) => {
  const s = await openStore(t, 'flush:');
  t.true(await s.push('bob', 'a', LIM));
  await inspector(t).script('FLUSH');
  t.true(await s.push('bob', 'b', LIM));
  await inspector(t).script('FLUSH');
  t.deepEqual(await xmls(s, 'bob'), ['a', 'b']);
});

test('fromClient uses a borrowed connection and leaves it open', async (t) => {
  const client = inspector(t);
  const s = RedisOfflineStore.fromClient(client, { namespace: 'borrowed:' });
  t.is(s.redis, client);
  t.true(await s.push('bob', 'x', LIM));
  t.deepEqual(await xmls(await openStore(t, 'borrowed:'), 'bob'), ['x']);
  await s.close();
  await s.close(); // idempotent
  t.is(await client.ping(), 'PONG');
});

test('close() quits the connection it opened; idempotent', async (t) => {
  const s = await RedisOfflineStore.open(server.url, { namespace: 'closing:' });
  await s.push('bob', 'x', LIM);
  await s.close();
  await s.close();
  t.is(s.redis.status, 'end');
  await t.throwsAsync(s.fetch('bob', 'o', '', 1, 1000));
});

test('open() rejects, without hanging, when Redis is not there', async (t) => {
  const url = `redis://127.0.0.1:${await freePort()}`;
  const started = Date.now();
  await t.throwsAsync(RedisOfflineStore.open(url, { connectTimeoutMs: 300 }), { message: /redis not ready within 300 ms/ });
  t.true(Date.now() - started < 2000);
});

test('openOfflineStore with a Redis URL: the Redis store, nothing in the data directory', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-offline-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const s = await openOfflineStore({ redisUrl: server.url, dataDir, nodeId: 'n1' });
  t.teardown(() => s.close());
  t.true(s instanceof RedisOfflineStore);
  t.true(await s.push('opened', 'x', LIM));
  t.is(await inspector(t).xlen('xmpp:offq:opened'), 1);
  t.false(existsSync(join(dataDir, 'offline.sqlite')));
  const names = await inspector(t).client('LIST') as string;
  t.regex(names, /name=n1:offline/);
  await s.removeAll('opened');
});
