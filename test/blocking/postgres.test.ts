// The PostgreSQL blocklist store against a private PostgreSQL: the shared
// contract (the same as SQLite's), each test on a fresh database.
import test from 'ava';
import { PostgresBlockStore } from '../../src/blocking/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { blockStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

blockStoreContract('postgres', async (t) => {
  const store = await PostgresBlockStore.open(await pg.database());
  t.teardown(() => store.close());
  return store;
});
