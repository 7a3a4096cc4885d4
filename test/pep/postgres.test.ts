// The PostgreSQL PEP store (migration 9) against a private PostgreSQL: the
// shared contract (the same as SQLite's), each test on a fresh database.
import test from 'ava';
import { PostgresPepStore } from '../../src/pep/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { pepStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

pepStoreContract('postgres', async (t) => {
  const store = await PostgresPepStore.open(await pg.database());
  t.teardown(() => store.close());
  return store;
});
