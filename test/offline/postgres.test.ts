// The PostgreSQL offline store against a private PostgreSQL: the shared
// contract (the same as SQLite's and Redis's), each test on a fresh database.
import test from 'ava';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { offlineStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

offlineStoreContract('postgres', async (t) => {
  const url = await pg.database();
  const open = async () => {
    const s = await PostgresOfflineStore.open(url);
    t.teardown(() => s.close());
    return s;
  };
  return { store: await open(), another: open };
});
