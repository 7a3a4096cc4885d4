// The SQLite personal data store: the shared contract on a fresh file per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqlitePersonalStore } from '../../src/personal/sqlite.ts';
import { personalStoreContract } from './contract.ts';
import { photoHash } from '../../src/personal/store.ts';
import { Element } from 'ltx';
import test from 'ava';

personalStoreContract('sqlite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-personal-'));
  const store = SqlitePersonalStore.open(join(dir, 'personal.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
});

test('photoHash: the SHA-1 of the decoded BINVAL, whitespace ignored; empty without a photo', (t) => {
  const v = (binval?: string) => {
    const el = new Element('vCard', { xmlns: 'vcard-temp' });
    if (binval !== undefined) el.c('PHOTO').c('TYPE').t('image/png').up().c('BINVAL').t(binval);
    return el;
  };
  // SHA-1 of the three bytes "abc" (RFC 3174's first test vector), base64 "YWJj".
  t.is(photoHash(v('YW\n Jj')), 'a9993e364706816aba3e25717850c26c9cd0d89d');
  t.is(photoHash(v('')), '');
  t.is(photoHash(v()), '');
});
