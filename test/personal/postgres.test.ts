// The PostgreSQL personal data store (migration 8) against a private
// PostgreSQL: the shared contract (the same as SQLite's), each test on a
// fresh database.
import test from 'ava';
import { PostgresPersonalStore } from '../../src/personal/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { personalStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

personalStoreContract('postgres', async (t) => {
  const store = await PostgresPersonalStore.open(await pg.database());
  t.teardown(() => store.close());
  return store;
});
