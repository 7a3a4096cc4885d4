// A cluster node started while its Redis is down: it says what it waits for,
// keeps saying it, obeys signals meanwhile, gives up after
// XMPP_REDIS_STARTUP_TIMEOUT_MS, and comes up once Redis does.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { RedisServer } from '../helpers/redis.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { START_MS, STEP_MS, within, environment, spawnServer, run } from '../helpers/process.ts';
import type { ServerProcess } from '../helpers/process.ts';
import { login } from '../helpers/raw.ts';
import { WAIT_LOG_MS } from '../../src/cluster/redis.ts';

const PASSWORD = 'redis-secret-4Qx9';
// A cluster's durable data: up all along, only Redis is down.
const postgres = sharedPostgresServer(test);

/** A Redis server, stopped by startNode, that can be started again on its port later. */
async function downRedis(t: ExecutionContext): Promise<RedisServer> {
  const redis = await RedisServer.start();
  t.teardown(() => redis.destroy());
  return redis;
}

/**
 * A node pointed at that Redis once it is down; with a password in the URL
 * unless Redis is to come up (the test's Redis has none, and ioredis would
 * complain of it). The node picks its own ports when it listens, which is
 * once Redis is back: they cannot be the one Redis comes back on.
 */
async function startNode(t: ExecutionContext, redis: RedisServer, extra: Record<string, string> = {}, password = true): Promise<{ server: ServerProcess; env: NodeJS.ProcessEnv }> {
  const { env } = await environment(t);
  await redis.stop();
  Object.assign(env, { XMPP_REDIS_URL: `redis://${password ? `:${PASSWORD}@` : ''}127.0.0.1:${redis.port}`, XMPP_DATABASE_URL: await postgres.database(), XMPP_WORKERS: '1', ...extra });
  const server = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  return { server, env };
}

const shownUrl = (redis: RedisServer) => `redis://127.0.0.1:${redis.port}`;

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`while waiting for Redis, the node says what it waits for and ${signal} stops it at once with exit 0`, async (t) => {
    const redis = await downRedis(t);
    const { server } = await startNode(t, redis);
    const waiting = await within(server.waitForLog('waiting for redis'), START_MS, 'the "waiting for redis" line');
    t.like(waiting, { level: 'warn', url: shownUrl(redis), timeoutMs: 60_000 });
    t.regex(String(waiting.err), /ECONNREFUSED/);

    server.child.kill(signal);
    // Far below the 60 s bound: the signal ended the wait.
    const end = await within(server.closed, STEP_MS, `the node to exit on ${signal}`);
    t.deepEqual(end, { code: 0, signal: null }, server.transcript());
    t.like(await server.waitForLog('shutting down'), { signal });
    t.falsy(server.logs.find((l) => l.msg === 'listening'), server.transcript());
    t.false(server.transcript().includes(PASSWORD), 'the password is never shown');
  });
}

test('with a short XMPP_REDIS_STARTUP_TIMEOUT_MS the node gives up with a clear error and exit 1', async (t) => {
  const redis = await downRedis(t);
  const { server } = await startNode(t, redis, { XMPP_REDIS_STARTUP_TIMEOUT_MS: '1500' });
  const end = await within(server.closed, START_MS, 'the node to give up');
  t.deepEqual(end, { code: 1, signal: null }, server.transcript());
  t.like(server.logs.find((l) => l.msg === 'waiting for redis'), { url: shownUrl(redis), timeoutMs: 1500 }, server.transcript());
  t.deepEqual(server.other, [`cannot start: redis not ready within 1500 ms at ${shownUrl(redis)} (XMPP_REDIS_STARTUP_TIMEOUT_MS): connect ECONNREFUSED 127.0.0.1:${redis.port}`]);
  t.falsy(server.logs.find((l) => l.msg === 'listening'), server.transcript());
  t.false(server.transcript().includes(PASSWORD), 'the password is never shown');
});

test('the node repeats the waiting line every few seconds and comes up once Redis is started', async (t) => {
  const redis = await downRedis(t);
  const { server, env } = await startNode(t, redis, {}, false);
  const [first, second] = await within(server.waitForLogs('waiting for redis', 2), START_MS, 'two "waiting for redis" lines');
  t.like(second, { url: shownUrl(redis) });
  // The first at the first refused attempt, then one every WAIT_LOG_MS of the wait.
  t.true(Number(first.waitedMs) < Number(second.waitedMs) && Number(second.waitedMs) >= WAIT_LOG_MS - 50, `${first.waitedMs} ms, then ${second.waitedMs} ms`);
  t.true(server.running);

  await redis.resume();
  t.like(await within(server.waitForLog('listening'), START_MS, 'the "listening" line once Redis is up'), { cluster: true });
  t.like(server.logs.find((l) => l.msg === 'redis reachable'), { url: shownUrl(redis) });
  // It serves: an account created by the CLI (in PostgreSQL) logs in.
  const add = await within(run(process.execPath, ['src/main.ts', 'user', 'add', 'alice', 'alice-pw'], env), STEP_MS, 'user add');
  t.is(add.code, 0, add.stderr);
  const { c, jid } = await within(login(server.c2sPort, 'alice', 'alice-pw'), STEP_MS, 'alice to log in');
  t.teardown(() => c.destroy());
  t.is(jid, 'alice@localhost/raw');

  server.child.kill('SIGTERM');
  t.deepEqual(await within(server.closed, START_MS, 'the node to exit'), { code: 0, signal: null }, server.transcript());
  t.deepEqual(server.logs.filter((l) => l.level === 'error'), [], server.transcript());
  t.deepEqual(server.other, [], server.transcript());
});
