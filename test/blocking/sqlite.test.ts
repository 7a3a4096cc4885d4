// The SQLite blocklist store: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { SqliteBlockStore } from '../../src/blocking/sqlite.ts';
import { blocks, normalizeBlocked } from '../../src/blocking/store.ts';
import { blockStoreContract } from './contract.ts';

blockStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-blocking-'));
  const store = SqliteBlockStore.open(join(dir, 'blocklist.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});

test('JID matching (XEP-0191 §4, XEP-0016 §2.1): full, bare, domain/resource, domain (not its subdomains)', (t) => {
  const list = new Set(['romeo@montague.example/phone', 'iago@shakespeare.example', 'chat.example/bot', 'evil.example']);
  t.true(blocks(list, 'romeo@montague.example/phone'));
  t.false(blocks(list, 'romeo@montague.example/laptop'), 'a full JID blocks only that resource');
  t.false(blocks(list, 'romeo@montague.example'));
  t.true(blocks(list, 'iago@shakespeare.example'));
  t.true(blocks(list, 'iago@shakespeare.example/any'), 'a bare JID blocks every resource');
  t.true(blocks(list, 'chat.example/bot'));
  t.false(blocks(list, 'chat.example/other'));
  t.false(blocks(list, 'x@chat.example/bot'), 'domain/resource is not user@domain/resource');
  t.true(blocks(list, 'evil.example'));
  t.true(blocks(list, 'anyone@evil.example/r'));
  t.true(blocks(list, 'evil.example/r'));
  t.false(blocks(list, 'x@sub.evil.example'), 'a domain is not its subdomains (a MUC service, an upload service of it)');
  t.false(blocks(new Set(['4.3.2.1']), '1.4.3.2.1'));
  t.false(blocks(list, 'x@notevil.example'));
  t.false(blocks(new Set(), 'a@b.example'));
  t.is(normalizeBlocked(' Romeo@Montague.Example/Phone '), 'romeo@montague.example/Phone');
  t.throws(() => normalizeBlocked('a@b@c'));
});
