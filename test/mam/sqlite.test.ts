// The SQLite message archive: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteArchiveStore } from '../../src/mam/sqlite.ts';
import { archiveStoreContract } from './contract.ts';

archiveStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-archive-'));
  const store = SqliteArchiveStore.open(join(dir, 'archive.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});
