// `db import-redis`: a cluster's durable data written by the Redis stores
// (a real redis-server) moved into PostgreSQL (a private one) by the CLI:
// a dry run counts and writes nothing, the move brings every account,
// roster item, version, pending request and offline message, in order, and
// running it again moves nothing twice. The PostgreSQL stores then read it
// all back: the old passwords verify.
import test from 'ava';
import { RedisAccountStore } from '../../src/accounts/redis.ts';
import { RedisRosterStore } from '../../src/roster/redis.ts';
import { RedisOfflineStore } from '../../src/offline/redis.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresRosterStore } from '../../src/roster/postgres.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';
import { INBOUND, OUTBOUND } from '../../src/presence/subscription.ts';
import { verifyPassword } from '../../src/accounts/store.ts';
import { sharedRedisServer } from '../helpers/redis.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { environment, run, STEP_MS, within } from '../helpers/process.ts';

const redis = sharedRedisServer(test);
const pgServer = sharedPostgresServer(test);

test('a dry run counts, the move brings everything in order, and a second move changes nothing', async (t) => {
  // The cluster's data, written by the Redis stores themselves.
  const accounts = await RedisAccountStore.open(redis.url, 4096);
  const rosters = await RedisRosterStore.open(redis.url);
  const offline = await RedisOfflineStore.open(redis.url);
  t.teardown(async () => {
    await accounts.close();
    await rosters.close();
    await offline.close();
  });
  await accounts.create('alice', 'alice-pw');
  await accounts.create('bob', 'bob-pw');
  await rosters.set('alice', { jid: 'bob@localhost', name: 'Bob', groups: ['Friends'] }, 100);
  await rosters.transition('alice', 'bob@localhost', OUTBOUND.subscribe, { max: 100 });
  await rosters.transition('bob', 'alice@localhost', INBOUND.subscribe, { max: 100, request: "<presence from='alice@localhost' type='subscribe'/>" });
  await rosters.transition('bob', 'carol@elsewhere.example', INBOUND.subscribe, { max: 100, request: "<presence from='carol@elsewhere.example' type='subscribe'/>" });
  for (const n of [1, 2, 3]) await offline.push('bob', `<message id='m${n}'><body>${n}</body></message>`, { max: 10, maxBytes: 10_000 });
  const aliceRoster = await rosters.get('alice');

  const url = await pgServer.database();
  const { env } = await environment(t);
  const cli = (...args: string[]) => within(run(process.execPath, ['src/main.ts', 'db', 'import-redis', ...args], { ...env, XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: url }), STEP_MS, `db import-redis ${args.join(' ')}`);

  const dry = await cli('--dry-run');
  t.is(dry.code, 0, dry.stderr);
  t.is(dry.stdout, 'would move 2 accounts, 1 roster items, 2 pending subscription requests, 3 offline messages; 0 already in the database\n');
  const moved = await cli();
  t.is(moved.code, 0, moved.stderr);
  t.is(moved.stdout, 'moved 2 accounts, 1 roster items, 2 pending subscription requests, 3 offline messages; 0 already in the database, left as they were\n');
  // Once done, not again by mistake: the nodes may have removed or delivered since what Redis still has.
  const refused = await cli();
  t.is(refused.code, 1);
  t.regex(refused.stderr, /imported from Redis already .*--force/);
  const again = await cli('--force');
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, 'moved 0 accounts, 0 roster items, 0 pending subscription requests, 0 offline messages; 8 already in the database, left as they were\n');

  // Read back through the PostgreSQL stores.
  const pa = await PostgresAccountStore.open(url, 4096);
  const pr = await PostgresRosterStore.open(url);
  const po = await PostgresOfflineStore.open(url);
  t.teardown(async () => {
    await pa.close();
    await pr.close();
    await po.close();
  });
  t.deepEqual(await pa.list(), ['alice', 'bob']);
  for (const hash of ['SHA-1', 'SHA-256'] as const) t.true(await verifyPassword((await pa.scram('bob', hash))!, hash, 'bob-pw'), `bob's ${hash} verifiers`);
  t.deepEqual(pa.fakeSaltKey(), accounts.fakeSaltKey?.(), "SCRAM's fake salts stay as they were");
  t.deepEqual(await pr.get('alice'), aliceRoster, 'items and version as they were');
  t.deepEqual((await pr.pendingRequests('bob')).map((r) => r.jid), ['alice@localhost', 'carol@elsewhere.example'], 'requests in arrival order');
  t.is(await pr.state('bob', 'alice@localhost'), 'none+in');
  t.deepEqual((await po.fetch('bob', 'test', '', 10, 10_000))!.map((m) => m.xml), [1, 2, 3].map((n) => `<message id='m${n}'><body>${n}</body></message>`));
});

test('db import-redis needs both XMPP_REDIS_URL and XMPP_DATABASE_URL', async (t) => {
  const { env } = await environment(t);
  const r = await run(process.execPath, ['src/main.ts', 'db', 'import-redis'], { ...env, XMPP_REDIS_URL: redis.url });
  t.is(r.code, 1);
  t.regex(r.stderr, /set both/);
});
