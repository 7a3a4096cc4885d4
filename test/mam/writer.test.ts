// The archive's write path (mam/writer.ts) against a store whose writes the
// test holds, fails or lets through: rows go in batches, in order; a full
// buffer refuses instead of growing; a failed write is retried and loses
// nothing; flushed() waits for what was added before it.
import test from 'ava';
import type { ArchiveStore, ArchivedMessage } from '../../src/mam/store.ts';
import { ArchiveWriter } from '../../src/mam/writer.ts';
import { msg } from './contract.ts';

/** A store whose appends wait for the test: `gate()` lets the next one through, `fail()` makes it throw. */
function heldStore() {
  const batches: string[][] = [];
  const waiting: { rows: ArchivedMessage[]; resolve: () => void; reject: (e: Error) => void }[] = [];
  let arrived: (() => void) | undefined;
  const store = {
    append(rows: ArchivedMessage[]) {
      return new Promise<void>((resolve, reject) => {
        waiting.push({ rows, resolve, reject });
        arrived?.();
      });
    },
  } as unknown as ArchiveStore;
  const next = async () => {
    while (waiting.length === 0) await new Promise<void>((r) => (arrived = r));
    return waiting.shift()!;
  };
  return {
    store,
    batches,
    async pass() {
      const w = await next();
      batches.push(w.rows.map((r) => r.body));
      w.resolve();
    },
    async fail() {
      const w = await next();
      w.reject(new Error('database unreachable'));
    },
  };
}

const rows = (n: number, from = 0) => Array.from({ length: n }, (_, i) => msg('alice', 'bob@example.com', `r${from + i}`));

test('rows added while a write is under way go together in the next one, in order', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 100, batch: 10 });
  t.true(w.add(rows(1, 0)));
  const done = w.flushed();
  await s.pass(); // r0 alone: the write started at once
  await done;
  t.true(w.add(rows(1, 1)));
  for (let i = 2; i < 15; i++) t.true(w.add(rows(1, i)));
  const all = w.flushed();
  await s.pass();
  await s.pass();
  await all;
  t.deepEqual(s.batches, [['r0'], ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8', 'r9', 'r10'], ['r11', 'r12', 'r13', 'r14']]);
  t.is(w.pending, 0);
});

test('a full buffer refuses rows (and keeps what it holds); once written, rows are taken again', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 5, batch: 5 });
  for (let i = 0; i < 5; i++) t.true(w.add(rows(1, i)));
  t.false(w.add(rows(1, 5)), 'the sixth is refused');
  t.is(w.pending, 5);
  await s.pass();
  await w.flushed();
  t.true(w.add(rows(1, 6)));
  await s.pass();
  await w.flushed();
  t.deepEqual(s.batches, [['r0', 'r1', 'r2', 'r3', 'r4'], ['r6']]);
});

test('a failed write is retried until it succeeds; nothing is lost or written twice', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 100, batch: 100 });
  w.add(rows(3));
  await s.fail();
  // flushed() does not hang on a failing database: it resolves after the failed attempt.
  await w.flushed();
  t.is(w.pending, 3);
  w.add(rows(1, 3));
  await s.fail();
  await s.pass();
  await w.flushed();
  t.deepEqual(s.batches, [['r0', 'r1', 'r2', 'r3']]);
  t.is(w.pending, 0);
});

test('close writes what waits; with the database still failing it gives up at its deadline', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 100, batch: 100 });
  w.add(rows(2));
  const closing = w.close(5000);
  await s.pass();
  await closing;
  t.deepEqual(s.batches, [['r0', 'r1']]);
  t.false(w.add(rows(1, 2)), 'a closed writer takes nothing');

  const failing = { append: () => Promise.reject(new Error('down')) } as unknown as ArchiveStore;
  const w2 = new ArchiveWriter({ store: failing, maxBuffered: 100, batch: 100 });
  w2.add(rows(2));
  await w2.close(300);
  t.is(w2.pending, 2, 'what could not be written is still counted (and logged)');
});

test('past half of the buffer a sender waits for writes to make room; with no write completing it stops waiting, fills the rest, then refuses', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 6, batch: 1 });
  t.true(await w.admit(rows(2, 0)), 'up to half: at once');
  // r0 is being written (held), r1 waits. Two more would pass half: the sender waits for a write.
  let admitted = false;
  const waiting = w.admit(rows(2, 2)).then((ok) => (admitted = ok));
  await new Promise((r) => setImmediate(r));
  t.false(admitted, 'waiting for room');
  await s.pass(); // r0 written: room made, and the two go in
  await waiting;
  t.true(admitted);
  // The database now stops answering: r1's write hangs. A sender waits one stall period, then nobody waits.
  const started = Date.now();
  t.true(await w.admit(rows(1, 4)), 'after the stall, the rest of the buffer fills');
  t.true(Date.now() - started >= 900, 'it waited for a write first');
  t.true(await w.admit(rows(2, 5)), 'stalled: no more waiting');
  t.false(await w.admit(rows(1, 7)), 'then, full, refused at once');
  // Writes resume: everything admitted is written, in order.
  for (let i = 0; i < 6; i++) await s.pass();
  await w.flushed();
  t.deepEqual(s.batches.flat(), ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6']);
});

test('drop forgets the rows of a removed account that wait (not the one being written), and flushed() does not wait for them', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 100, batch: 1 });
  w.add([msg('gone', 'bob@example.com', 'g0')]);
  w.add([msg('stays', 'bob@example.com', 's0'), msg('gone', 'bob@example.com', 'g1'), msg('stays', 'bob@example.com', 's1')]);
  await new Promise((r) => setImmediate(r)); // g0's write has started
  w.drop('gone');
  t.is(w.pending, 3, 'g0 (being written), s0, s1');
  const all = w.flushed();
  for (let i = 0; i < 3; i++) await s.pass();
  await all;
  t.deepEqual(s.batches.flat(), ['g0', 's0', 's1']);
});

test('a byte bound too: big rows fill the buffer before the row count does', async (t) => {
  const s = heldStore();
  const w = new ArchiveWriter({ store: s.store, maxBuffered: 100, batch: 100, maxBytes: 1000 });
  const big = (body: string) => ({ ...msg('alice', 'bob@example.com', body), xml: 'x'.repeat(400) });
  t.true(w.add([big('b0')]));
  t.true(w.add([big('b1')]));
  t.false(w.add([big('b2')]), 'a third 400-byte stanza would pass 1000 bytes');
  await s.pass();
  await w.flushed();
  t.true(w.add([big('b3')]), 'written: room again');
  await s.pass();
});

test('close gives up at its deadline on a write the database never answers', async (t) => {
  const hung = { append: () => new Promise<void>(() => {}) } as unknown as ArchiveStore;
  const w = new ArchiveWriter({ store: hung, maxBuffered: 100, batch: 100 });
  w.add(rows(2));
  await new Promise((r) => setImmediate(r));
  const started = Date.now();
  await w.close(300);
  t.true(Date.now() - started < 2000);
  t.is(w.pending, 2);
});
