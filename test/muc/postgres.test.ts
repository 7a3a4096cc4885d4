// The PostgreSQL MUC room store (migration 11) against a private PostgreSQL:
// the shared contract (the same as SQLite's), each test on a fresh database.
import test from 'ava';
import { PostgresRoomStore } from '../../src/muc/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { mucStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

mucStoreContract('postgres', async (t, bounds) => {
  const store = await PostgresRoomStore.open(await pg.database(), bounds);
  t.teardown(() => store.close());
  return store;
});
