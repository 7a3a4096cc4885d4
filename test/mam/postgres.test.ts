// The PostgreSQL message archive against a private PostgreSQL: the shared
// contract (the same as SQLite's), each test on a fresh database.
import test from 'ava';
import { PostgresArchiveStore } from '../../src/mam/postgres.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { archiveStoreContract, msg } from './contract.ts';
import pgClient from 'pg';

const pg = sharedPostgresServer(test);

archiveStoreContract('postgres', async (t) => {
  const store = await PostgresArchiveStore.open(await pg.database(), { fulltext: true });
  t.teardown(() => store.close());
  return store;
});

test('postgres: the full-text index is made when full-text search is on and dropped when off; the search answers alike', async (t) => {
  const url = await pg.database();
  const indexed = async () => {
    const c = new pgClient.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query("SELECT 1 FROM pg_indexes WHERE tablename = 'archive' AND indexname = 'archive_text'")).rowCount === 1;
    } finally {
      await c.end();
    }
  };
  let s = await PostgresArchiveStore.open(url, { fulltext: false });
  await s.append([msg('alice', 'bob@example.com', 'searchable words')]);
  await s.close();
  t.false(await indexed());
  // Two opening at once (two nodes): one makes it, the other finds it.
  const [a, b] = await Promise.all([PostgresArchiveStore.open(url, { fulltext: true }), PostgresArchiveStore.open(url, { fulltext: true })]);
  t.true(await indexed());
  t.is(await a.count('alice', { text: 'searchable' }), 1);
  await Promise.all([a.close(), b.close()]);
  s = await PostgresArchiveStore.open(url);
  t.true(await indexed(), 'the CLI (no setting) leaves it');
  await s.close();
});
