// The PostgreSQL account store against a private PostgreSQL (initdb +
// postgres from Debian's package, on a free port): the shared contract,
// then what only it has (versioned migrations under an advisory lock, a
// schema newer than the code refused, accounts with SHA-1 verifiers only).
import test, { type ExecutionContext } from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { migrate, openPool, schemaVersion, SchemaTooNewError } from '../../src/storage/postgres.ts';
import { MIGRATIONS } from '../../src/storage/postgres-schema.ts';
import { verifyPassword } from '../../src/accounts/store.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { accountStoreContract, assertNoPasswords } from './contract.ts';

const pgServer = sharedPostgresServer(test);
/** A fresh database of its own for one test. */
const database = () => pgServer.database();

async function openStore(t: ExecutionContext, url: string): Promise<PostgresAccountStore> {
  const s = await PostgresAccountStore.open(url, 4096);
  t.teardown(() => s.close());
  return s;
}

/** What the database holds: every row of its tables, and its write-ahead log. */
async function dump(url: string): Promise<Buffer[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const out: Buffer[] = [];
  try {
    for (const table of ['accounts', 'meta']) {
      for (const row of (await c.query(`SELECT * FROM ${table}`)).rows as Record<string, unknown>[]) {
        for (const v of Object.values(row)) out.push(Buffer.isBuffer(v) ? v : Buffer.from(String(v)));
      }
    }
  } finally {
    await c.end();
  }
  const wal = join(pgServer.server.dir, 'data', 'pg_wal');
  for (const f of readdirSync(wal)) if (/^[0-9A-F]{24}$/.test(f)) out.push(readFileSync(join(wal, f)));
  return out;
}

accountStoreContract('postgres', async (t) => {
  const url = await database();
  return { store: await openStore(t, url), another: async () => openStore(t, url), dump: () => dump(url) };
});

test('the password is in no row and not in the write-ahead log', async (t) => {
  const url = await database();
  const s = await openStore(t, url);
  const passwords = ['hunter2-PLAINTEXT-marker', 'pässwörd-ünïcode-marker'];
  await s.create('alice', passwords[0]);
  await s.setPassword('alice', passwords[1]);
  assertNoPasswords(t, await dump(url), passwords, 'the database');
});

test('migrations: applied once, in order, by one of several nodes starting together; recorded with their version', async (t) => {
  const url = await database();
  const pools = Array.from({ length: 4 }, () => openPool(url, 2));
  t.teardown(() => Promise.all(pools.map((p) => p.end())));
  const applied = await Promise.all(pools.map((p) => migrate(p)));
  // Exactly one node applied each version; the others found it done.
  t.deepEqual(applied.flat().sort(), MIGRATIONS.map((m) => m.version).sort());
  t.is(await schemaVersion(pools[0]), MIGRATIONS.at(-1)!.version);
  const rows = (await pools[0].query<{ version: number; name: string }>('SELECT version, name FROM xmpp_schema_migrations ORDER BY version')).rows;
  t.deepEqual(rows.map((r) => [r.version, r.name]), MIGRATIONS.map((m) => [m.version, m.name]));
  t.deepEqual(await migrate(pools[1]), [], 'nothing left to apply');
});

test('a schema newer than this code is refused, and a failed migration leaves nothing half done', async (t) => {
  const url = await database();
  const pool = openPool(url, 2);
  t.teardown(() => pool.end());
  await migrate(pool);
  await pool.query("INSERT INTO xmpp_schema_migrations (version, name) VALUES (9999, 'from the future')");
  await t.throwsAsync(migrate(pool), { instanceOf: SchemaTooNewError, message: /version 9999, newer than this server knows/ });
  await t.throwsAsync(PostgresAccountStore.open(url, 4096), { instanceOf: SchemaTooNewError });
  // A broken migration rolls back whole.
  const other = await database();
  const p2 = openPool(other, 2);
  t.teardown(() => p2.end());
  const broken = [...MIGRATIONS, { version: MIGRATIONS.at(-1)!.version + 1, name: 'broken', sql: 'CREATE TABLE half (x int); SELECT no_such_function();' }];
  await t.throwsAsync(migrate(p2, broken), { message: /migration \d+ \(broken\) failed/ });
  t.is(await schemaVersion(p2), MIGRATIONS.at(-1)!.version);
  t.is((await p2.query("SELECT to_regclass('half') AS t")).rows[0].t, null);
});

test('an account with SHA-1 verifiers only (imported from a server that never kept SHA-256) offers no SHA-256 credentials', async (t) => {
  const url = await database();
  const s = await openStore(t, url);
  await s.create('old', 'old-pw');
  const pool = openPool(url, 1);
  t.teardown(() => pool.end());
  await pool.query("UPDATE accounts SET sha256_salt = NULL, sha256_iterations = NULL, sha256_stored_key = NULL, sha256_server_key = NULL WHERE username = 'old'");
  t.is(await s.scram('old', 'SHA-256'), undefined);
  t.true(await verifyPassword((await s.scram('old', 'SHA-1'))!, 'SHA-1', 'old-pw'));
  // A new password gives it both again.
  await s.setPassword('old', 'new-pw');
  t.true(await verifyPassword((await s.scram('old', 'SHA-256'))!, 'SHA-256', 'new-pw'));
});
