// The PostgreSQL roster store against a private PostgreSQL: the shared
// contract (the same as SQLite's and Redis's), each test on a fresh database.
import test from 'ava';
import { PostgresRosterStore } from '../../src/roster/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { rosterStoreContract } from './contract.ts';

const pg = sharedPostgresServer(test);

rosterStoreContract('postgres', async (t) => {
  const url = await pg.database();
  const open = async () => {
    const s = await PostgresRosterStore.open(url);
    t.teardown(() => s.close());
    return s;
  };
  return { store: await open(), another: open };
});

test('many reads of rosters at once, more than the pool has connections, all complete (each read on one connection)', async (t) => {
  const url = await pg.database();
  const s = await PostgresRosterStore.open(url);
  t.teardown(() => s.close());
  await s.set('alice', { jid: 'bob@x', groups: [] }, 10);
  const all = await Promise.all(Array.from({ length: 40 }, () => s.get('alice')));
  t.true(all.every((r) => r.items.length === 1));
});
