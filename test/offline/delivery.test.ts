// OfflineDelivery, the paced reader of one user's offline queue, against a
// real (SQLite) store whose removals the test holds back: what happens when
// the session goes while a read waits for them.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { OfflineDelivery, CLAIM_MS } from '../../src/offline/delivery.ts';
import type { OfflineStore } from '../../src/offline/store.ts';

const LIMITS = { max: 100, maxBytes: 1 << 20 };

/** The store, with each remove() held until the test lets it go, and a log of the calls. */
function heldStore(t: { teardown(fn: () => void): void }): { store: OfflineStore; calls: string[]; removals: (() => void)[] } {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-delivery-'));
  const real = SqliteOfflineStore.open(join(dir, 'offline.sqlite'));
  t.teardown(() => {
    real.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const calls: string[] = [];
  const removals: (() => void)[] = [];
  const store: OfflineStore = {
    push: (...a) => real.push(...a),
    pushMany: (...a) => real.pushMany(...a),
    peek: (...a) => real.peek(...a),
    fetch: (user, owner, ...rest) => {
      calls.push(`fetch ${owner}`);
      return real.fetch(user, owner, ...rest);
    },
    remove: async (user, ids) => {
      calls.push('remove');
      await new Promise<void>((r) => removals.push(r));
      return real.remove(user, ids);
    },
    release: (user, owner) => {
      calls.push(`release ${owner}`);
      return real.release(user, owner);
    },
    count: (user) => real.count(user),
    removeAll: (user) => real.removeAll(user),
    close: () => {},
  };
  return { store, calls, removals };
}

test('a session that goes while its next read waits for removals does not claim the queue again after its release', async (t) => {
  const { store, calls, removals } = heldStore(t);
  for (let i = 0; i < 3; i++) t.true(await store.push('alice', `<message id='m${i}'/>`, LIMITS));
  const d = new OfflineDelivery(store, 'alice', 'first');
  const ended = new Promise<void>((r) => (d.onEnd = r));
  const batch = await d.next();
  t.is(batch?.length, 3);
  // The first is written: its removal starts and is held.
  // As the session does for a write without acknowledgements: the client has it, and it is written.
  batch![0].delivered!();
  batch![0].written!();
  t.deepEqual(calls, ['fetch first', 'remove']);
  // The session asks for more (it waits for the removal), then goes.
  const reading = d.next();
  d.stop();
  for (const r of removals.splice(0)) r();
  t.is(await reading, null, 'nothing more for a session that is gone');
  await ended;
  t.deepEqual(calls, ['fetch first', 'remove', 'release first'], 'no fetch after the session went');
  // The next login takes what was not written, at once (not after the claim lapses).
  const next = await store.fetch('alice', 'second', '', 16, CLAIM_MS);
  t.deepEqual(next?.map((m) => m.xml), ["<message id='m1'/>", "<message id='m2'/>"]);
});

test('a login with nothing waiting reads the queue once and has no claim to release', async (t) => {
  const { store, calls } = heldStore(t);
  const d = new OfflineDelivery(store, 'carol', 'only');
  const ended = new Promise<void>((r) => (d.onEnd = r));
  t.is(await d.next(), null);
  await ended;
  t.deepEqual(calls, ['fetch only']);
});

test('a queue another session holds is not released by the one that found it held', async (t) => {
  const { store, calls } = heldStore(t);
  t.true(await store.push('dave', `<message id='d1'/>`, LIMITS));
  t.is((await store.fetch('dave', 'holder', '', 16, CLAIM_MS))?.length, 1);
  calls.length = 0;
  const d = new OfflineDelivery(store, 'dave', 'late');
  const ended = new Promise<void>((r) => (d.onEnd = r));
  t.is(await d.next(), null);
  await ended;
  t.true(d.claimedByOther);
  t.deepEqual(calls, ['fetch late']);
});

test('a session that goes while its first read is under way releases what that read may claim', async (t) => {
  const { store: inner, calls } = heldStore(t);
  t.true(await inner.push('erin', `<message id='e1'/>`, LIMITS));
  let letFetch!: () => void;
  let fetching!: () => void;
  const fetchHeld = new Promise<void>((r) => (letFetch = r));
  const fetchStarted = new Promise<void>((r) => (fetching = r));
  const store: OfflineStore = {
    ...inner,
    fetch: async (...a) => {
      const read = inner.fetch(...a); // the claim is taken now; its answer is held
      fetching();
      await fetchHeld;
      return read;
    },
  };
  const d = new OfflineDelivery(store, 'erin', 'gone');
  const ended = new Promise<void>((r) => (d.onEnd = r));
  const reading = d.next();
  await fetchStarted;
  d.stop();
  letFetch();
  t.is(await reading, null);
  await ended;
  t.deepEqual(calls, ['fetch gone', 'release gone']);
  // Released: another login takes the message at once.
  t.deepEqual((await inner.fetch('erin', 'next', '', 16, CLAIM_MS))?.map((m) => m.xml), ["<message id='e1'/>"]);
});
