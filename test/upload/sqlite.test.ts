// The SQLite upload slot store: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteUploadStore } from '../../src/upload/sqlite.ts';
import { uploadStoreContract } from './contract.ts';

uploadStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-upload-'));
  const store = SqliteUploadStore.open(join(dir, 'upload.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});
