import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import {
  verifyPassword, AccountExistsError, AccountNotFoundError, InvalidUsernameError, InvalidPasswordError,
} from '../../src/accounts/store.ts';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-accounts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: { teardown(fn: () => void): void }, file?: string): SqliteAccountStore {
  const store = SqliteAccountStore.open(file ?? join(tempDir(t), 'accounts.db'), 4096);
  t.teardown(() => store.close());
  return store;
}

test('create, exists, list, remove', async (t) => {
  const s = openStore(t);
  t.deepEqual(await s.list(), []);
  await s.create('Bob', 'secret');
  await s.create('alice', 'secret');
  t.true(await s.exists('bob'));
  t.true(await s.exists('BOB'));
  t.false(await s.exists('carol'));
  t.deepEqual(await s.list(), ['alice', 'bob']);
  t.true(await s.remove('BoB'));
  t.false(await s.remove('bob'));
  t.deepEqual(await s.list(), ['alice']);
});

test('usernames are normalised and validated everywhere', async (t) => {
  const s = openStore(t);
  await s.create('ＡＬＩＣＥ', 'pw');
  t.deepEqual(await s.list(), ['alice']);
  await t.throwsAsync(s.create('Alice', 'other'), { instanceOf: AccountExistsError });
  await t.throwsAsync(s.create('a@b', 'pw'), { instanceOf: InvalidUsernameError });
  await t.throwsAsync(s.create('', 'pw'), { instanceOf: InvalidUsernameError });
  await t.throwsAsync(s.setPassword('a b', 'pw'), { instanceOf: InvalidUsernameError });
  t.false(await s.exists('a@b'));
  t.false(await s.remove('a/b'));
  t.is(await s.scram('a:b', 'SHA-1'), undefined);
});

test('passwords must be usable SASLprep stored strings', async (t) => {
  const s = openStore(t);
  await t.throwsAsync(s.create('u', ''), { instanceOf: InvalidPasswordError });
  await t.throwsAsync(s.create('u', 'bad\u0007'), { instanceOf: InvalidPasswordError });
  await t.throwsAsync(s.create('u', 'unassigned\u0378'), { instanceOf: InvalidPasswordError });
  t.false(await s.exists('u'));
});

test('scram() gives verifiers for both hashes, each with its own salt', async (t) => {
  const s = openStore(t);
  await s.create('alice', 'wonderland');
  const sha1 = (await s.scram('Alice', 'SHA-1'))!;
  const sha256 = (await s.scram('alice', 'SHA-256'))!;
  t.is(sha1.storedKey.length, 20);
  t.is(sha256.storedKey.length, 32);
  t.is(sha1.iterations, 4096);
  t.is(sha256.iterations, 4096);
  t.notDeepEqual(sha1.salt, sha256.salt);
  t.true(Buffer.isBuffer(sha1.salt) && Buffer.isBuffer(sha1.serverKey));
  t.true(await verifyPassword(sha1, 'SHA-1', 'wonderland'));
  t.true(await verifyPassword(sha256, 'SHA-256', 'wonderland'));
  t.false(await verifyPassword(sha256, 'SHA-256', 'Wonderland'));
  t.is(await s.scram('nobody', 'SHA-256'), undefined);
});

test('setPassword replaces the verifiers', async (t) => {
  const s = openStore(t);
  await s.create('alice', 'old');
  const before = (await s.scram('alice', 'SHA-256'))!;
  await s.setPassword('ALICE', 'new');
  const after = (await s.scram('alice', 'SHA-256'))!;
  t.notDeepEqual(before.salt, after.salt);
  t.false(await verifyPassword(after, 'SHA-256', 'old'));
  t.true(await verifyPassword(after, 'SHA-256', 'new'));
  t.true(await verifyPassword((await s.scram('alice', 'SHA-1'))!, 'SHA-1', 'new'));
  await t.throwsAsync(s.setPassword('nobody', 'x'), { instanceOf: AccountNotFoundError });
  await t.throwsAsync(s.setPassword('alice', ''), { instanceOf: InvalidPasswordError });
});

test('creates the missing directory; data survives reopening; the fake-salt key is shared', async (t) => {
  const file = join(tempDir(t), 'deep', 'er', 'accounts.db');
  const a = SqliteAccountStore.open(file, 4096);
  t.true(existsSync(file));
  await a.create('alice', 'pw');
  const b = SqliteAccountStore.open(file, 4096);
  t.true(await b.exists('alice'));
  t.deepEqual(a.fakeSaltKey(), b.fakeSaltKey());
  t.is(a.fakeSaltKey().length, 32);
  a.close();
  a.close(); // idempotent
  const key = b.fakeSaltKey();
  b.close();
  const c = SqliteAccountStore.open(file, 8192);
  t.true(await c.exists('alice'));
  t.deepEqual(c.fakeSaltKey(), key);
  t.is(c.iterations, 8192);
  c.close();
  t.not(SqliteAccountStore.open(join(tempDir(t), 'x.db'), 4096).fakeSaltKey().toString('hex'), key.toString('hex'));
});

test('the database never holds the password', async (t) => {
  const dir = tempDir(t);
  const s = SqliteAccountStore.open(join(dir, 'accounts.db'), 4096);
  const passwords = ['hunter2-PLAINTEXT-marker', 'second-PLAINTEXT-password', 'pässwörd-ünïcode-marker'];
  await s.create('alice', passwords[0]);
  await s.create('bob', passwords[2]);
  await s.setPassword('alice', passwords[1]);
  const scan = () => {
    const files = readdirSync(dir);
    t.true(files.includes('accounts.db'));
    for (const f of files) {
      const bytes = readFileSync(join(dir, f));
      for (const p of passwords) {
        for (const enc of ['utf8', 'utf16le', 'latin1'] as const) {
          t.is(bytes.indexOf(Buffer.from(p, enc)), -1, `${p} (${enc}) found in ${f}`);
        }
        t.is(bytes.indexOf(Buffer.from(Buffer.from(p).toString('base64'))), -1, `${p} (base64) found in ${f}`);
      }
    }
    return files;
  };
  t.true(scan().some((f) => f.endsWith('-wal')), 'WAL mode is on');
  s.close();
  scan();
});

test('several threads use one file at once', async (t) => {
  const file = join(tempDir(t), 'accounts.db');
  const storeUrl = new URL('../../src/accounts/sqlite.ts', import.meta.url).href;
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.storeUrl).then(async ({ SqliteAccountStore }) => {
      const s = SqliteAccountStore.open(workerData.file, 4096);
      for (let i = 0; i < 15; i++) await s.create('w' + workerData.n + '-' + i, 'pw' + i);
      const n = (await s.list()).length;
      s.close();
      parentPort.postMessage(n);
    });`;
  const workers = Array.from({ length: 4 }, (_, n) => new Promise<number>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { storeUrl, file, n } });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (c) => { if (c !== 0) reject(new Error(`worker exited ${c}`)); });
  }));
  const s = openStore(t, file);
  for (let i = 0; i < 15; i++) await s.create(`main-${i}`, 'pw');
  const counts = await Promise.all(workers);
  for (const c of counts) t.true(c >= 15);
  t.is((await s.list()).length, 75);
  t.true(await verifyPassword((await s.scram('w3-14', 'SHA-1'))!, 'SHA-1', 'pw14'));
});
