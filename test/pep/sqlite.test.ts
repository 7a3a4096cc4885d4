// The SQLite PEP store: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqlitePepStore } from '../../src/pep/sqlite.ts';
import { pepStoreContract } from './contract.ts';

pepStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-pep-'));
  const store = SqlitePepStore.open(join(dir, 'pep.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});
