import test from 'ava';
import { mkdtempSync, readdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { verifyPassword } from '../../src/accounts/store.ts';
import { accountStoreContract, assertNoPasswords } from './contract.ts';

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

function readAll(dir: string): Buffer[] {
  return readdirSync(dir).map((f) => readFileSync(join(dir, f)));
}

accountStoreContract('sqlite', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'accounts.db');
  return {
    store: openStore(t, file),
    another: async () => openStore(t, file),
    dump: async () => readAll(dir),
  };
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

test('the files never hold the password, in WAL mode and after closing', async (t) => {
  const dir = tempDir(t);
  const s = SqliteAccountStore.open(join(dir, 'accounts.db'), 4096);
  const passwords = ['hunter2-PLAINTEXT-marker', 'second-PLAINTEXT-password', 'pässwörd-ünïcode-marker'];
  await s.create('alice', passwords[0]);
  await s.create('bob', passwords[2]);
  await s.setPassword('alice', passwords[1]);
  const files = readdirSync(dir);
  t.true(files.includes('accounts.db'));
  t.true(files.some((f) => f.endsWith('-wal')), 'WAL mode is on');
  assertNoPasswords(t, readAll(dir), passwords, 'the database files');
  s.close();
  assertNoPasswords(t, readAll(dir), passwords, 'the database files after closing');
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

test('a file made when both hashes were required is upgraded, accounts kept, and takes SHA-1-only imports', async (t) => {
  const file = join(tempDir(t), 'accounts.sqlite');
  const { DatabaseSync } = await import('node:sqlite');
  const old = new DatabaseSync(file);
  const cols = (h: string) => `${h}_salt BLOB NOT NULL, ${h}_iterations INTEGER NOT NULL, ${h}_stored_key BLOB NOT NULL, ${h}_server_key BLOB NOT NULL`;
  old.exec(`CREATE TABLE accounts (username TEXT PRIMARY KEY NOT NULL, created INTEGER NOT NULL, ${cols('sha1')}, ${cols('sha256')}) STRICT`);
  old.close();
  const before = openStore(t, file);
  await before.create('kept', 'kept-pw');
  const sha1 = (await before.scram('kept', 'SHA-1'))!;
  t.true(await before.importAccount('imported', { 'SHA-1': sha1 }));
  t.false(await before.importAccount('imported', { 'SHA-1': sha1 }), 'an existing account is left alone');
  t.is(await before.scram('imported', 'SHA-256'), undefined);
  t.true(await verifyPassword((await before.scram('imported', 'SHA-1'))!, 'SHA-1', 'kept-pw'));
  await t.throwsAsync(before.importAccount('none', {}), { message: /no SCRAM verifiers/ });
});
