// `db import-redis`: a cluster's durable data in the layout the nodes kept
// in Redis before PostgreSQL (written here as they wrote it, to a real
// redis-server) moved into PostgreSQL (a private one) by the CLI: a dry run
// counts and writes nothing, the move brings every account, roster item,
// version, pending request and offline message, in order, and running it
// again moves nothing twice. The PostgreSQL stores then read it all back:
// the old passwords verify.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresRosterStore } from '../../src/roster/postgres.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';
import { encodeDetails } from '../../src/roster/store.ts';
import { deriveScram, verifyPassword } from '../../src/accounts/store.ts';
import { inspector, sharedRedisServer } from '../helpers/redis.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { environment, run, STEP_MS, within } from '../helpers/process.ts';

const redis = sharedRedisServer(test);
const pgServer = sharedPostgresServer(test);

test('a dry run counts, the move brings everything in order, and a second move changes nothing', async (t) => {
  // The cluster's data, in the layout of src/storage/import-redis.ts.
  const r = inspector(t, redis.url);
  const fakeSaltKey = randomBytes(32);
  await r.set('xmpp:scram-fake-salt-key', fakeSaltKey);
  for (const user of ['alice', 'bob']) {
    const fields: (string | Buffer)[] = ['created', String(Date.now())];
    for (const [hash, prefix] of [['SHA-1', 'sha1'], ['SHA-256', 'sha256']] as const) {
      const c = await deriveScram(`${user}-pw`, hash, 4096);
      fields.push(`${prefix}:salt`, c.salt, `${prefix}:iterations`, String(c.iterations), `${prefix}:storedKey`, c.storedKey, `${prefix}:serverKey`, c.serverKey);
    }
    await r.hset(`xmpp:acct:${user}`, ...fields);
    await r.sadd('xmpp:accounts', user);
  }
  // Alice asked bob for his presence; bob has not answered, nor carol's request.
  await r.hset('xmpp:roster:alice', '#e', 'Ep0ch', '#v', '2', 'j:bob@localhost', `none subscribe\n${encodeDetails({ name: 'Bob', groups: ['Friends'] })}`);
  await r.hset('xmpp:pending:bob', '#n', '2', 'r:carol@elsewhere.example', "2\n<presence from='carol@elsewhere.example' type='subscribe'/>", 'r:alice@localhost', "1\n<presence from='alice@localhost' type='subscribe'/>");
  for (const n of [1, 2, 3]) await r.xadd('xmpp:offq:bob', '*', 'x', `<message id='m${n}'><body>${n}</body></message>`);
  // A queue still in the layout before streams.
  await r.rpush('xmpp:offline:carol', "<message id='old'><body>old</body></message>");

  const url = await pgServer.database();
  const { env } = await environment(t);
  const cli = (...args: string[]) => within(run(process.execPath, ['src/main.ts', 'db', 'import-redis', ...args], { ...env, XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: url }), STEP_MS, `db import-redis ${args.join(' ')}`);

  const dry = await cli('--dry-run');
  t.is(dry.code, 0, dry.stderr);
  t.is(dry.stdout, 'would move 2 accounts, 1 roster items, 2 pending subscription requests, 4 offline messages; 0 already in the database\n');
  const moved = await cli();
  t.is(moved.code, 0, moved.stderr);
  t.is(moved.stdout, 'moved 2 accounts, 1 roster items, 2 pending subscription requests, 4 offline messages; 0 already in the database, left as they were\n');
  // Once done, not again by mistake: the nodes may have removed or delivered since what Redis still has.
  const refused = await cli();
  t.is(refused.code, 1);
  t.regex(refused.stderr, /imported from Redis already .*--force/);
  const again = await cli('--force');
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, 'moved 0 accounts, 0 roster items, 0 pending subscription requests, 0 offline messages; 9 already in the database, left as they were\n');

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
  t.false(await verifyPassword((await pa.scram('alice', 'SHA-256'))!, 'SHA-256', 'bob-pw'));
  t.deepEqual(pa.fakeSaltKey(), fakeSaltKey, "SCRAM's fake salts stay as they were");
  t.deepEqual(await pr.get('alice'), { version: 'Ep0ch.2', items: [{ jid: 'bob@localhost', name: 'Bob', subscription: 'none', ask: 'subscribe', groups: ['Friends'] }] }, 'items and version as they were');
  t.deepEqual((await pr.pendingRequests('bob')).map((r) => r.jid), ['alice@localhost', 'carol@elsewhere.example'], 'requests in arrival order');
  t.is(await pr.state('bob', 'alice@localhost'), 'none+in');
  t.deepEqual((await po.fetch('bob', 'test', '', 10, 10_000))!.map((m) => m.xml), [1, 2, 3].map((n) => `<message id='m${n}'><body>${n}</body></message>`));
  t.deepEqual((await po.fetch('carol', 'test', '', 10, 10_000))!.map((m) => m.xml), ["<message id='old'><body>old</body></message>"]);
});

test('db import-redis needs both XMPP_REDIS_URL and XMPP_DATABASE_URL', async (t) => {
  const { env } = await environment(t);
  const noRedis = await run(process.execPath, ['src/main.ts', 'db', 'import-redis'], { ...env, XMPP_DATABASE_URL: await pgServer.database() });
  t.is(noRedis.code, 1);
  t.regex(noRedis.stderr, /set both/);
  // Redis without a database is no configuration at all any more.
  const noDatabase = await run(process.execPath, ['src/main.ts', 'db', 'import-redis'], { ...env, XMPP_REDIS_URL: redis.url });
  t.is(noDatabase.code, 78);
  t.regex(noDatabase.stderr, /XMPP_REDIS_URL \(a cluster\) needs XMPP_DATABASE_URL/);
});
