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
import { offlineStoreContract } from './contract.ts';

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

test('key layout: one list per user, oldest first; nothing left once taken', async (t) => {
  const s = await openStore(t); // the default namespace: only this test uses it
  const r = inspector(t);
  await s.push('bob', '<message id="1"/>', 10);
  await s.push('bob', '<message id="2"/>', 10);
  t.is(s.key('bob'), 'xmpp:offline:bob');
  t.is(await r.type('xmpp:offline:bob'), 'list');
  t.deepEqual(await r.lrange('xmpp:offline:bob', 0, -1), ['<message id="1"/>', '<message id="2"/>']);
  t.deepEqual(await r.keys('xmpp:offline:b*'), ['xmpp:offline:bob']);
  await s.take('bob');
  t.is(await r.exists('xmpp:offline:bob'), 0, 'an empty queue leaves no key behind');
  await s.push('bob', '<message id="3"/>', 10);
  await s.removeAll('bob');
  t.is(await r.exists('xmpp:offline:bob'), 0);
});

test('the scripts are loaded again after SCRIPT FLUSH', async (t) => {
  const s = await openStore(t, 'flush:');
  t.true(await s.push('bob', 'a', 10));
  await inspector(t).script('FLUSH');
  t.true(await s.push('bob', 'b', 10));
  await inspector(t).script('FLUSH');
  t.deepEqual(await s.take('bob'), ['a', 'b']);
});

test('fromClient uses a borrowed connection and leaves it open', async (t) => {
  const client = inspector(t);
  const s = RedisOfflineStore.fromClient(client, { namespace: 'borrowed:' });
  t.is(s.redis, client);
  t.true(await s.push('bob', 'x', 10));
  t.deepEqual(await (await openStore(t, 'borrowed:')).take('bob'), ['x']);
  await s.close();
  await s.close(); // idempotent
  t.is(await client.ping(), 'PONG');
});

test('close() quits the connection it opened; idempotent', async (t) => {
  const s = await RedisOfflineStore.open(server.url, { namespace: 'closing:' });
  await s.push('bob', 'x', 10);
  await s.close();
  await s.close();
  t.is(s.redis.status, 'end');
  await t.throwsAsync(s.take('bob'));
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
  t.true(await s.push('opened', 'x', 10));
  t.deepEqual(await inspector(t).lrange('xmpp:offline:opened', 0, -1), ['x']);
  t.false(existsSync(join(dataDir, 'offline.sqlite')));
  const names = await inspector(t).client('LIST') as string;
  t.regex(names, /name=n1:offline/);
  await s.take('opened');
});
