import test from 'ava';
import { mkdtempSync, readdirSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { DatabaseSync } from 'node:sqlite';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { openRosterStore } from '../../src/roster/open.ts';
import { RosterFullError } from '../../src/roster/store.ts';
import { rosterStoreContract } from './contract.ts';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-roster-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: { teardown(fn: () => void): void }, file: string): SqliteRosterStore {
  const store = SqliteRosterStore.open(file);
  t.teardown(() => store.close());
  return store;
}

rosterStoreContract('sqlite', async (t) => {
  const file = join(tempDir(t), 'roster.sqlite');
  return {
    store: openStore(t, file),
    another: async () => openStore(t, file),
  };
});

test('creates the missing directory; WAL mode; data and versions survive reopening', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'deep', 'er', 'roster.sqlite');
  const a = SqliteRosterStore.open(file);
  t.true(existsSync(file));
  const { version } = await a.set('alice', { jid: 'bob@x', name: 'Bob', groups: ['G'] }, 10);
  t.true(readdirSync(join(dir, 'deep', 'er')).some((f) => f.endsWith('-wal')), 'WAL mode is on');
  a.close();
  a.close(); // idempotent
  await t.throwsAsync(a.get('alice'));
  const b = SqliteRosterStore.open(file);
  t.deepEqual(await b.get('alice'), { version, items: [{ jid: 'bob@x', name: 'Bob', subscription: 'none', groups: ['G'] }] });
  const next = await b.set('alice', { jid: 'carol@x', groups: [] }, 10);
  t.not(next.version, version);
  b.close();
});

test('a private in-memory store', async (t) => {
  const s = openStore(t, ':memory:');
  await s.set('alice', { jid: 'bob@x', groups: [] }, 10);
  t.is((await s.get('alice')).items.length, 1);
  t.is((await openStore(t, ':memory:').get('alice')).items.length, 0);
});

test('a failed change leaves nothing half-written and the store usable', async (t) => {
  const s = openStore(t, ':memory:');
  const { version } = await s.set('alice', { jid: 'a@x', groups: [] }, 1);
  await t.throwsAsync(s.set('alice', { jid: 'b@x', groups: [] }, 1), { instanceOf: RosterFullError });
  await t.throwsAsync(s.setSubscription('alice', 'b@x', 'to', undefined, { max: 1 }), { instanceOf: RosterFullError });
  t.deepEqual(await s.get('alice'), { version, items: [{ jid: 'a@x', subscription: 'none', groups: [] }] });
  // The transaction was rolled back: the next one can start.
  await s.set('alice', { jid: 'a@x', name: 'A', groups: [] }, 1);
  t.is((await s.item('alice', 'a@x'))!.name, 'A');
  await t.throwsAsync(s.get(''), { instanceOf: TypeError });
});

test('several threads change one roster at once: the limit holds and no version repeats', async (t) => {
  const file = join(tempDir(t), 'roster.sqlite');
  openStore(t, file); // create the schema before the threads race for it
  const storeUrl = new URL('../../src/roster/sqlite.ts', import.meta.url).href;
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.storeUrl).then(async ({ SqliteRosterStore }) => {
      const s = SqliteRosterStore.open(workerData.file);
      const versions = [];
      let full = 0;
      for (let i = 0; i < 15; i++) {
        try {
          versions.push((await s.set('alice', { jid: 'w' + workerData.n + '-' + i + '@x', groups: [] }, 40)).version);
        } catch (err) {
          if (err.name !== 'RosterFullError') throw err;
          full++;
        }
        versions.push((await s.set('bob', { jid: 'same@x', name: 'w' + workerData.n + '-' + i, groups: [] }, 40)).version);
      }
      s.close();
      parentPort.postMessage({ versions, full });
    });`;
  const results = await Promise.all(Array.from({ length: 4 }, (_, n) => new Promise<{ versions: string[]; full: number }>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { storeUrl, file, n } });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (c) => { if (c !== 0) reject(new Error(`worker exited ${c}`)); });
  })));
  const s = openStore(t, file);
  t.is((await s.get('alice')).items.length, 40);
  t.is(results.reduce((n, r) => n + r.full, 0), 20);
  const all = results.flatMap((r) => r.versions);
  t.is(all.length, 40 + 60);
  t.is(new Set(all).size, all.length, 'every change got its own version');
  t.is((await s.get('bob')).items.length, 1);
});

test('a database from before pending requests gets the new table and keeps its rosters', async (t) => {
  const file = join(tempDir(t), 'roster.sqlite');
  const old = new DatabaseSync(file);
  old.exec(`CREATE TABLE roster_versions (username TEXT PRIMARY KEY NOT NULL, epoch TEXT NOT NULL, counter INTEGER NOT NULL) STRICT;
    CREATE TABLE roster_items (username TEXT NOT NULL, jid TEXT NOT NULL, details TEXT NOT NULL, subscription TEXT NOT NULL, ask TEXT,
      PRIMARY KEY (username, jid)) STRICT, WITHOUT ROWID;
    INSERT INTO roster_versions VALUES ('alice', 'E', 3);
    INSERT INTO roster_items VALUES ('alice', 'bob@x', '{"g":[]}', 'to', NULL);`);
  old.close();
  const s = openStore(t, file);
  t.is(await s.state('alice', 'bob@x'), 'to');
  const r = await s.transition('alice', 'bob@x', { to: 'to+in' }, { max: 10, request: 'R' });
  t.deepEqual(r, { before: 'to', after: 'to+in' });
  t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'bob@x', stanza: 'R' }]);
  t.is((await s.get('alice')).version, 'E.3');
});

test('several threads send subscription events at once: one serial outcome, the pending limit holds', async (t) => {
  const file = join(tempDir(t), 'roster.sqlite');
  openStore(t, file);
  const storeUrl = new URL('../../src/roster/sqlite.ts', import.meta.url).href;
  // Per thread, in order: inbound subscribe then outbound subscribed on one pair (ends 'from'
  // whatever the interleaving), and inbound subscribes from new contacts (at most 30 kept).
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.storeUrl).then(async ({ SqliteRosterStore }) => {
      const s = SqliteRosterStore.open(workerData.file);
      const moves = [];
      let full = 0;
      for (let i = 0; i < 10; i++) {
        for (const table of [{ none: 'none+in', 'none+out': 'none+out+in', to: 'to+in' }, { 'none+in': 'from', 'none+out+in': 'from+out', 'to+in': 'both' }]) {
          const r = await s.transition('alice', 'bob@x', table, { max: 100, request: 'w' + workerData.n });
          if (r.after !== r.before) moves.push(r.before + '>' + r.after + (r.change ? '!' : ''));
        }
        const r = await s.transition('carol', 'w' + workerData.n + '-' + i + '@x', { none: 'none+in' }, { max: 30, request: 'x' });
        if (r.full) full++;
      }
      s.close();
      parentPort.postMessage({ moves, full });
    });`;
  const results = await Promise.all(Array.from({ length: 4 }, (_, n) => new Promise<{ moves: string[]; full: number }>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { storeUrl, file, n } });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (c) => { if (c !== 0) reject(new Error(`worker exited ${c}`)); });
  })));
  const s = openStore(t, file);
  t.is(await s.state('alice', 'bob@x'), 'from');
  t.deepEqual(results.flatMap((r) => r.moves).sort(), ['none+in>from!', 'none>none+in']);
  t.deepEqual(await s.pendingRequests('alice'), []);
  t.is((await s.pendingRequests('carol')).length, 30);
  t.is(results.reduce((n, r) => n + r.full, 0), 10);
});

test('openRosterStore: SQLite in the data directory when no database URL is configured', async (t) => {
  const dataDir = tempDir(t);
  const s = await openRosterStore({ dataDir });
  t.teardown(() => s.close());
  t.true(s instanceof SqliteRosterStore);
  t.true(existsSync(join(dataDir, 'roster.sqlite')));
  await s.set('alice', { jid: 'bob@x', groups: [] }, 10);
  const again = openStore(t, join(dataDir, 'roster.sqlite'));
  t.is((await again.get('alice')).items.length, 1);
});
