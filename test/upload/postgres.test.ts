// The PostgreSQL upload slot store (migration 12) against a private
// PostgreSQL: the shared contract (the same as SQLite's), each test on a
// fresh database.
import test from 'ava';
import { PostgresUploadStore } from '../../src/upload/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { uploadStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

uploadStoreContract('postgres', async (t) => {
  const store = await PostgresUploadStore.open(await pg.database());
  t.teardown(() => store.close());
  return store;
});
