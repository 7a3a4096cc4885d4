// A node whose durable data is in PostgreSQL (XMPP_DATABASE_URL), against a
// private PostgreSQL: accounts made by the CLI and by the store log in,
// subscriptions and rosters, offline messages stored and delivered, and all
// of it still there for a node started again on the same database.
import test from 'ava';
import pg from 'pg';
import { startTestServer } from '../helpers/server.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { MIGRATIONS } from '../../src/storage/postgres-schema.ts';
import { environment, run, STEP_MS, within } from '../helpers/process.ts';
import { plainOutcome } from '../helpers/protocol.ts';
import { barrier, connect, expect, isBody, isPresence, push, ready, rosterOf, summary } from '../helpers/im.ts';

const pgServer = sharedPostgresServer(test);

async function count(url: string, sql: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return Number((await c.query<{ n: string }>(sql)).rows[0].n);
  } finally {
    await c.end();
  }
}

test('accounts, rosters and offline messages live in PostgreSQL, and outlive the node', async (t) => {
  const url = await pgServer.database();
  const accounts = await PostgresAccountStore.open(url, 4096);
  for (const u of ['alice', 'bob']) await accounts.create(u, `${u}-pw`);
  await accounts.close();
  // The CLI writes where the server reads.
  const { env } = await environment(t);
  const r = await within(run(process.execPath, ['src/main.ts', 'user', 'add', 'dave', 'dave-pw'], { ...env, XMPP_DATABASE_URL: url }), STEP_MS, 'user add');
  t.is(r.code, 0, r.stderr);
  t.is(await count(url, "SELECT count(*) AS n FROM accounts WHERE username = 'dave'"), 1);

  let server = await startTestServer({ XMPP_DATABASE_URL: url });
  t.teardown(() => server.stop());
  const alice = await connect(t, server.c2sPort, 'alice');
  await ready(alice);
  const bob = await connect(t, server.c2sPort, 'bob');
  await ready(bob);
  // A subscription: both rosters change, in PostgreSQL.
  let af = alice.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  af = await push(t, alice, bob.bare, 'none', 'subscribe', af);
  await expect(bob, 'the request', isPresence(alice.bare, 'subscribe'));
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  await push(t, alice, bob.bare, 'to', undefined, af);
  t.is(await count(url, "SELECT count(*) AS n FROM roster_items WHERE username = 'alice' AND subscription = 'to'"), 1);
  // A message for dave, who is offline: stored there.
  const mf = alice.c.items.length;
  alice.c.send(`<message to='dave@localhost' type='chat'><body>while you were away</body></message>`);
  // alice's session handles its stanzas in order: once a ping after the message is answered, the message is stored.
  await barrier(alice, mf);
  t.is(await count(url, "SELECT count(*) AS n FROM offline WHERE username = 'dave'"), 1, 'the message is in the offline table');
  alice.c.destroy();
  bob.c.destroy();
  await server.stop();

  // Another node on the same database: the roster and the message are there.
  server = await startTestServer({ XMPP_DATABASE_URL: url });
  const alice2 = await connect(t, server.c2sPort, 'alice', 'again');
  t.deepEqual(summary(await rosterOf(alice2)), [[bob.bare, 'to', undefined]]);
  const dave = await connect(t, server.c2sPort, 'dave');
  dave.c.send('<presence/>');
  await expect(dave, 'the offline message', isBody('while you were away'));
  // Delivered, then gone from the table.
  for (let i = 0; i < 100 && (await count(url, "SELECT count(*) AS n FROM offline WHERE username = 'dave'")) > 0; i++) await new Promise((res) => setTimeout(res, 50));
  t.is(await count(url, "SELECT count(*) AS n FROM offline WHERE username = 'dave'"), 0);
});

test('XMPP_DATABASE_URL must be a postgres:// URL (a configuration error), and one that does not answer is an error', async (t) => {
  const { env } = await environment(t);
  const bad = await run(process.execPath, ['src/main.ts', 'user', 'list'], { ...env, XMPP_DATABASE_URL: 'mysql://x' });
  t.is(bad.code, 78);
  t.regex(bad.stderr, /XMPP_DATABASE_URL must be a postgres:\/\/ URL/);
  const down = await run(process.execPath, ['src/main.ts', 'user', 'list'], { ...env, XMPP_DATABASE_URL: 'postgres://xmpp@127.0.0.1:1/none' });
  t.is(down.code, 1);
  t.regex(down.stderr, /ECONNREFUSED/);
});

test('`db migrate` brings a database up to date (once), and says so', async (t) => {
  const url = await pgServer.database();
  const { env } = await environment(t);
  const first = await within(run(process.execPath, ['src/main.ts', 'db', 'migrate'], { ...env, XMPP_DATABASE_URL: url }), STEP_MS, 'db migrate');
  t.is(first.code, 0, first.stderr);
  const newest = MIGRATIONS.at(-1)!.version;
  t.is(first.stdout, `applied ${MIGRATIONS.map((m) => `version ${m.version}`).join(', ')}; the schema is at version ${newest}\n`);
  const again = await within(run(process.execPath, ['src/main.ts', 'db', 'migrate'], { ...env, XMPP_DATABASE_URL: url }), STEP_MS, 'db migrate again');
  t.is(again.stdout, `the schema is at version ${newest}: nothing to apply\n`);
  const none = await run(process.execPath, ['src/main.ts', 'db', 'migrate'], env);
  t.is(none.code, 1);
  t.regex(none.stderr, /XMPP_DATABASE_URL is not set/);
});

test('an account with SCRAM-SHA-1 verifiers only logs in with PLAIN, which gives it SHA-256 ones', async (t) => {
  const url = await pgServer.database();
  const accounts = await PostgresAccountStore.open(url, 4096);
  t.teardown(() => accounts.close());
  await accounts.create('old', 'old-pw');
  // As an import from a server that kept SHA-1 only leaves it.
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query("UPDATE accounts SET sha256_salt = NULL, sha256_iterations = NULL, sha256_stored_key = NULL, sha256_server_key = NULL WHERE username = 'old'");
  await c.end();
  t.is(await accounts.scram('old', 'SHA-256'), undefined);
  const server = await startTestServer({ XMPP_DATABASE_URL: url });
  t.teardown(() => server.stop());
  // PLAIN (the test client's login) checks the SHA-1 verifiers, and the password proved gives both.
  const p = await connect(t, server.c2sPort, 'old');
  t.is(p.bare, 'old@localhost');
  t.truthy(await accounts.scram('old', 'SHA-256'), 'SHA-256 verifiers added at the PLAIN login');
  // A wrong password is still wrong.
  t.is(await plainOutcome(server.c2sPort, 'old', 'not-the-password'), 'not-authorized');
});
