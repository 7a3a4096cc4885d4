// The SQLite offline store: the shared contract, then what only an embedded
// file has (its place in the data directory, WAL, several threads on one
// file at once).
import test from 'ava';
import { mkdtempSync, readdirSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { openOfflineStore } from '../../src/offline/open.ts';
import { offlineStoreContract, drain } from './contract.ts';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-offline-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openStore(t: { teardown(fn: () => void): void }, file: string): SqliteOfflineStore {
  const store = SqliteOfflineStore.open(file);
  t.teardown(() => store.close());
  return store;
}

offlineStoreContract('sqlite', async (t) => {
  const file = join(tempDir(t), 'offline.sqlite');
  return {
    store: openStore(t, file),
    another: async () => openStore(t, file),
  };
});

test('openOfflineStore without a database URL: offline.sqlite in the data directory, WAL, survives reopening', async (t) => {
  const dataDir = join(tempDir(t), 'data');
  const a = await openOfflineStore({ dataDir });
  t.true(a instanceof SqliteOfflineStore);
  t.true(existsSync(join(dataDir, 'offline.sqlite')));
  t.true(await a.push('bob', '<message id="1"/>', { max: 10, maxBytes: 1000 }));
  t.true(readdirSync(dataDir).some((f) => f === 'offline.sqlite-wal'), 'WAL mode is on');
  await a.close();
  await a.close(); // idempotent
  const b = await openOfflineStore({ dataDir });
  t.teardown(() => b.close());
  t.deepEqual((await drain(b, 'bob', 'o')).map((m) => m.xml), ['<message id="1"/>']);
});

/**
 * Runs `threads` worker threads on one file; each opens the store, waits
 * for all the others to have opened theirs (so that they really run at the
 * same time), runs `body` (the text of an async function of (store, n)
 * whose result it posts back); the results come back in thread order.
 */
async function inThreads<T>(file: string, threads: number, body: string): Promise<T[]> {
  const storeUrl = new URL('../../src/offline/sqlite.ts', import.meta.url).href;
  const barrier = new Int32Array(new SharedArrayBuffer(4));
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.storeUrl).then(async ({ SqliteOfflineStore }) => {
      const s = SqliteOfflineStore.open(workerData.file);
      const b = workerData.barrier;
      if (Atomics.add(b, 0, 1) + 1 === workerData.threads) Atomics.notify(b, 0);
      for (let v; (v = Atomics.load(b, 0)) < workerData.threads; ) Atomics.wait(b, 0, v);
      const result = await (${body})(s, workerData.n);
      s.close();
      parentPort.postMessage(result);
    });`;
  return Promise.all(Array.from({ length: threads }, (_, n) => new Promise<T>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { storeUrl, file, n, threads, barrier } });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (c) => { if (c !== 0) reject(new Error(`worker exited ${c}`)); });
  })));
}

test('threads pushing at once never exceed the limit', async (t) => {
  const file = join(tempDir(t), 'offline.sqlite');
  const main = openStore(t, file);
  const accepted = await inThreads<string[]>(file, 4, `async (s, n) => {
    const ok = [];
    for (let i = 0; i < 600; i++) {
      const id = 'w' + n + '-' + i;
      if (await s.push('bob', "<message id='" + id + "'/>", { max: 1500, maxBytes: 1e9 })) ok.push(id);
    }
    return ok;
  }`);
  const all = accepted.flat();
  t.is(all.length, 1500, 'exactly the limit accepted over all threads');
  t.is(await main.count('bob'), 1500);
  t.deepEqual((await drain(main, 'bob', 'o')).map((m) => /id='([^']*)'/.exec(m.xml)![1]).sort(), [...all].sort());
});

test('threads pushing and delivering at once: each stanza delivered exactly once, in order per thread', async (t) => {
  const file = join(tempDir(t), 'offline.sqlite');
  const main = openStore(t, file);
  // Each delivered message as [its store id (the queue's order), its stanza's id].
  const results = await inThreads<{ pushed: string[]; delivered: [number, string][] }>(file, 4, `async (s, n) => {
    const pushed = [];
    const delivered = [];
    const owner = 'thread-' + n;
    for (let i = 0; i < 500; i++) {
      const id = 'w' + n + '-' + i;
      if (!(await s.push('bob', "<message id='" + id + "'/>", { max: 1000000, maxBytes: 1e9 }))) throw new Error('push refused');
      pushed.push(id);
      if (i % 7 === n) {
        const got = await s.fetch('bob', owner, '', 20, 60000);
        if (got !== null) {
          delivered.push(...got.map((m) => [Number(m.id), /id='([^']*)'/.exec(m.xml)[1]]));
          await s.remove('bob', got.map((m) => m.id));
          await s.release('bob', owner);
        }
      }
    }
    return { pushed, delivered };
  }`);
  const drained = (await drain(main, 'bob', 'main')).map((m): [number, string] => [Number(m.id), /id='([^']*)'/.exec(m.xml)![1]]);
  const deliverers = [...results.map((r) => r.delivered), drained];
  const delivered = deliverers.flat();
  const pushed = results.flatMap((r) => r.pushed);
  t.is(pushed.length, 2000);
  // How many threads get to deliver is up to the scheduler (one may find the
  // queue claimed at each of its fetches): that some delivery happened while
  // pushes went on is certain, since a fetch follows each thread's own push.
  t.true(results.some((r) => r.delivered.length > 0), 'the threads delivered while pushing');
  t.log(`threads that delivered: ${results.filter((r) => r.delivered.length > 0).length} of ${results.length}`);
  t.is(delivered.length, new Set(delivered.map(([, id]) => id)).size, 'no stanza delivered twice');
  t.deepEqual(delivered.map(([, id]) => id).sort(), [...pushed].sort());
  // In order: each deliverer got the queue oldest first, batch after batch,
  // and the queue holds each thread's stanzas in the order it pushed them.
  deliverers.forEach((d, i) => t.true(d.every(([seq], j) => j === 0 || seq > d[j - 1][0]), `deliverer ${i} read the queue in order`));
  const queue = [...delivered].sort((a, b) => a[0] - b[0]).map(([, id]) => id);
  results.forEach((r, n) => t.deepEqual(queue.filter((id) => id.startsWith(`w${n}-`)), r.pushed, `thread ${n}'s stanzas in the order it pushed them`));
});

test('a file of the earlier layout (rowids that an emptied table reuses) is upgraded in place, messages and order kept', async (t) => {
  const file = join(tempDir(t), 'offline.sqlite');
  const { DatabaseSync } = await import('node:sqlite');
  const old = new DatabaseSync(file);
  old.exec(`CREATE TABLE offline (seq INTEGER PRIMARY KEY, username TEXT NOT NULL, stanza TEXT NOT NULL, stored INTEGER NOT NULL) STRICT;
    CREATE INDEX offline_by_user ON offline (username, seq);`);
  const insert = old.prepare('INSERT INTO offline (username, stanza, stored) VALUES (?, ?, 0)');
  for (const x of ['a', 'b', 'c']) insert.run('bob', x);
  old.close();
  const s = openStore(t, file);
  const first = (await s.fetch('bob', 'o', '', 10, 60_000))!;
  t.deepEqual(first.map((m) => m.xml), ['a', 'b', 'c']);
  await s.remove('bob', first.map((m) => m.id));
  t.true(await s.push('bob', 'd', { max: 10, maxBytes: 1000 }));
  t.deepEqual((await s.fetch('bob', 'o', first[2].id, 10, 60_000))!.map((m) => m.xml), ['d'], 'a new message comes after the last id read, even in an emptied table');
});
