// The SQLite message archive: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteArchiveStore } from '../../src/mam/sqlite.ts';
import { archiveStoreContract, msg } from './contract.ts';
import test from 'ava';

archiveStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-archive-'));
  const store = SqliteArchiveStore.open(join(dir, 'archive.sqlite'), { fulltext: true });
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});

test('sqlite: full-text search turned off empties the index, turned on builds it from what is archived', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-archive-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'archive.sqlite');
  let s = SqliteArchiveStore.open(file, { fulltext: true });
  await s.append([msg('alice', 'bob@example.com', 'indexed while on')]);
  s.close();
  s = SqliteArchiveStore.open(file, { fulltext: false });
  await s.append([msg('alice', 'bob@example.com', 'written while off')]);
  t.is(await s.count('alice', { text: 'while' }), 0, 'off: nothing is indexed');
  s.close();
  // The CLI (no setting) leaves it as it is.
  s = SqliteArchiveStore.open(file);
  t.is(await s.count('alice', { text: 'while' }), 0);
  s.close();
  s = SqliteArchiveStore.open(file, { fulltext: true });
  t.is(await s.count('alice', { text: 'while' }), 2, 'on again: both, the one written while off too');
  await s.append([msg('alice', 'bob@example.com', 'and after')]);
  t.is(await s.count('alice', { text: 'after' }), 1);
  s.close();
});
