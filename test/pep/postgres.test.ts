// The PostgreSQL PEP store (migrations 9 and 13) against a private
// PostgreSQL: the shared contract (the same as SQLite's), each test on a
// fresh database; and migration 13 on a database that has items already.
import test from 'ava';
import { PostgresPepStore } from '../../src/pep/postgres.ts';
import { migrate, openPool } from '../../src/storage/postgres.ts';
import { MIGRATIONS } from '../../src/storage/postgres-schema.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { pepStoreContract, upgradedItems } from './contract.ts';

const pg = sharedPostgresServer(test);

pepStoreContract('postgres', async (t) => {
  const store = await PostgresPepStore.open(await pg.database());
  t.teardown(() => store.close());
  return store;
});

test('postgres: items there before migration 13 are dated the migration; new publishes their own', async (t) => {
  const url = await pg.database();
  const pool = openPool(url, 2);
  t.teardown(() => pool.end());
  await migrate(pool, MIGRATIONS.filter((m) => m.version < 13));
  await pool.query('INSERT INTO pep_nodes (owner, node, config) VALUES ($1, $2, $3)', ['alice', 'n', JSON.stringify({ maxItems: 5 })]);
  for (const id of ['a', 'b']) await pool.query('INSERT INTO pep_items (owner, node, id, xml) VALUES ($1, $2, $3, $4)', ['alice', 'n', id, `<x xmlns="urn:t">${id}</x>`]);
  const before = Date.now();
  t.deepEqual(await migrate(pool), MIGRATIONS.filter((m) => m.version >= 13).map((m) => m.version));
  const after = Date.now();
  const store = await PostgresPepStore.open(url);
  t.teardown(() => store.close());
  await upgradedItems(t, store, before, after);
});
