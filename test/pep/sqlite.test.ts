// The SQLite PEP store: the shared contract on a fresh file per test, and
// the upgrade of a file of an earlier layout.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqlitePepStore } from '../../src/pep/sqlite.ts';
import { pepStoreContract, upgradedItems } from './contract.ts';

pepStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-pep-'));
  const store = SqlitePepStore.open(join(dir, 'pep.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});

test('a file made before items had a publish time is upgraded in place: its items kept, dated the upgrade; new publishes dated their own', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-pep-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'pep.sqlite');
  const { DatabaseSync } = await import('node:sqlite');
  const old = new DatabaseSync(file);
  old.exec(`CREATE TABLE pep_nodes (owner TEXT NOT NULL, node TEXT NOT NULL, config TEXT NOT NULL, PRIMARY KEY (owner, node)) STRICT;
    CREATE TABLE pep_items (seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, node TEXT NOT NULL, id TEXT NOT NULL, xml TEXT NOT NULL, UNIQUE (owner, node, id));
    CREATE INDEX pep_items_order ON pep_items (owner, node, seq);`);
  old.prepare('INSERT INTO pep_nodes (owner, node, config) VALUES (?, ?, ?)').run('alice', 'n', JSON.stringify({ maxItems: 5 }));
  const insert = old.prepare('INSERT INTO pep_items (owner, node, id, xml) VALUES (?, ?, ?, ?)');
  for (const id of ['a', 'b']) insert.run('alice', 'n', id, `<x xmlns="urn:t">${id}</x>`);
  old.close();
  const before = Date.now();
  const store = SqlitePepStore.open(file);
  const after = Date.now();
  t.teardown(() => store.close());
  const items = await upgradedItems(t, store, before, after);
  store.close();
  // Opened again: nothing to upgrade, nothing changed.
  const again = SqlitePepStore.open(file);
  t.teardown(() => again.close());
  t.deepEqual(await again.items('alice', 'n'), [...items, { id: 'c', xml: '<x xmlns="urn:t">c</x>', published: 1_700_000_000_000 }]);
});
