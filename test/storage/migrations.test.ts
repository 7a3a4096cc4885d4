// Schema migrations against a private PostgreSQL: a migration numbered below
// the newest one a database has (two branches that each added one, landed in
// the other order) is applied all the same, once.
import test from 'ava';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { migrate, openPool } from '../../src/storage/postgres.ts';
import { MIGRATIONS } from '../../src/storage/postgres-schema.ts';

const pg = sharedPostgresServer(test);

test('a migration missing below the newest applied one is applied, once', async (t) => {
  const pool = openPool(await pg.database(), 2);
  t.teardown(() => pool.end());
  const newest = MIGRATIONS.at(-1)!.version;
  const lower = MIGRATIONS.at(-2)!;
  // A database that got every migration but the one before the newest.
  t.deepEqual(await migrate(pool, MIGRATIONS.filter((m) => m.version !== lower.version)), MIGRATIONS.filter((m) => m.version !== lower.version).map((m) => m.version));
  t.deepEqual(await migrate(pool), [lower.version], 'the missing one, and only it');
  t.deepEqual(await migrate(pool), [], 'then nothing');
  const versions = (await pool.query<{ version: number }>('SELECT version FROM xmpp_schema_migrations ORDER BY version')).rows.map((r) => r.version);
  t.deepEqual(versions, MIGRATIONS.map((m) => m.version));
  t.is(versions.at(-1), newest);
});
