// The PostgreSQL message archive against a private PostgreSQL: the shared
// contract (the same as SQLite's), each test on a fresh database.
import test from 'ava';
import { PostgresArchiveStore } from '../../src/mam/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { archiveStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

archiveStoreContract('postgres', async (t) => {
  const store = await PostgresArchiveStore.open(await pg.database());
  t.teardown(() => store.close());
  return store;
});
