// A cluster node's /readyz follows what it depends on: its private Redis
// (the registry) and PostgreSQL (the durable data) are taken away and given
// back, and the answer goes to 503 with the reason, then to 200 again,
// while /healthz (the process lives) stays 200. Its /metrics carry the
// node's id and time Redis and PostgreSQL.
import test from 'ava';
import pg from 'pg';
import { startTestServer } from '../helpers/server.ts';
import { RedisServer } from '../helpers/redis.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { get, scrape, total, promtool } from '../helpers/metrics.ts';

const postgres = sharedPostgresServer(test);

test('readyz: 503 naming the database, then Redis, while each is away; 200 once back; metrics labelled with the node', async (t) => {
  const redis = await RedisServer.start();
  t.teardown(() => redis.destroy());
  const url = await postgres.database();
  const database = new URL(url).pathname.slice(1);
  const node = `health-${process.pid}`;
  const s = await startTestServer({ XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: url, XMPP_NODE_ID: node, XMPP_HTTP_PORT: '0', XMPP_METRICS: '127.0.0.1', XMPP_LOG_LEVEL: 'error' });
  t.teardown(() => s.stop());
  const port = s.httpPort!;
  const ready = async () => {
    const r = await get(port, '/readyz');
    return `${r.status} ${r.body.trim()}`;
  };
  // A worker keeps its answer for 1 s (web/http.ts): a change shows within that, or once the check after it ends.
  const becomes = async (want: string, ms = 10_000) => {
    const deadline = Date.now() + ms;
    let last = await ready();
    while (last !== want) {
      if (Date.now() > deadline) return last;
      await new Promise((r) => setTimeout(r, 100));
      last = await ready();
    }
    return last;
  };
  t.is(await ready(), '200 ready');

  const { text, samples } = await scrape(port);
  t.true(samples.every((x) => x.labels.node === node), 'every series names the node');
  t.true(total(samples, 'xmpp_redis_command_duration_seconds_count') > 0, 'Redis commands timed');
  t.true(total(samples, 'xmpp_database_query_duration_seconds_count', { backend: 'postgres' }) > 0, 'PostgreSQL statements timed');
  const check = await promtool(text);
  t.is(check.code, 0, check.output);

  // The database refuses connections, and those the node holds are cut.
  const admin = new pg.Client({ connectionString: postgres.server.url() });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query(`ALTER DATABASE "${database}" WITH ALLOW_CONNECTIONS false`);
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [database]);
  t.is(await becomes('503 not ready: database unreachable'), '503 not ready: database unreachable');
  t.is((await get(port, '/healthz')).status, 200, 'alive all the same');
  await admin.query(`ALTER DATABASE "${database}" WITH ALLOW_CONNECTIONS true`);
  // The pool connects again on its next statement.
  t.is(await becomes('200 ready'), '200 ready');

  await redis.stop();
  t.is(await becomes('503 not ready: registry (Redis) unreachable'), '503 not ready: registry (Redis) unreachable');
  t.is((await get(port, '/healthz')).status, 200);
  const failed = total((await scrape(port)).samples, 'xmpp_redis_command_errors_total');
  t.true(failed > 0, 'the failed commands are counted');
  await redis.resume();
  // The worker's connection comes back on its own (retried at most 500 ms apart), and the node renews its lease.
  t.is(await becomes('200 ready', 30_000), '200 ready', 'within 30 s of Redis coming back');
});
