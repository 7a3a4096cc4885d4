// The SQLite MUC room store: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteRoomStore } from '../../src/muc/sqlite.ts';
import { mucStoreContract } from './contract.ts';

mucStoreContract('sqlite', async (t, bounds) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-muc-'));
  const store = SqliteRoomStore.open(join(dir, 'muc.sqlite'), bounds);
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});
