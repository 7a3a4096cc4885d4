// The upload slot store's contract (upload/store.ts), run against every
// backend: SQLite (sqlite.test.ts) and PostgreSQL (postgres.test.ts).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { NewSlot, UploadRules, UploadStore } from '../../src/upload/store.ts';
import { UploadQuotaError } from '../../src/upload/store.ts';

export type OpenUpload = (t: ExecutionContext) => Promise<UploadStore>;

const T0 = 1_700_000_000_000;
const WINDOW = 300_000;
const WRITE = 600_000;
const DAY = 86_400_000;
const rules = (now: number, expireMs = 7 * DAY): UploadRules => ({ now, writeMs: WRITE, expireMs });
let seq = 0;
const slot = (owner: string, size: number, created = T0, extra: Partial<NewSlot> = {}): NewSlot => ({ token: `tok-${++seq}-${owner}`, owner, filename: 'a.jpg', size, type: 'image/jpeg', created, putUntil: created + WINDOW, ...extra });
const bounds = (quotaBytes: number, maxFiles = 100) => ({ quotaBytes, maxFiles });

export function uploadStoreContract(label: string, open: OpenUpload): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('a slot is kept by its token, pending, with what was asked'), async (t) => {
    const s = await open(t);
    const a = slot('alice', 1234, T0, { filename: 'héllo wörld.txt', type: '' });
    await s.reserve(a, bounds(10_000), rules(T0));
    t.deepEqual(await s.slot(a.token), { ...a, state: 'pending', uploaded: 0 });
    t.is(await s.slot('nope'), undefined);
  });

  test(title('one PUT claims a slot, within its window only; a failed one puts it back; done once'), async (t) => {
    const s = await open(t);
    const a = slot('alice', 10);
    await s.reserve(a, bounds(10_000), rules(T0));
    t.false(await s.complete(a.token, 'image/jpeg', T0 + 1), 'not being written');
    t.true(await s.claim(a.token, T0 + 1));
    t.false(await s.claim(a.token, T0 + 2), 'a second PUT at once is refused');
    t.is((await s.slot(a.token))?.state, 'writing');
    await s.release(a.token);
    t.is((await s.slot(a.token))?.state, 'pending');
    t.true(await s.claim(a.token, T0 + 3), 'tried again within the window');
    t.true(await s.complete(a.token, 'image/png', T0 + 4));
    const done = await s.slot(a.token);
    t.is(done?.state, 'done');
    t.is(done?.type, 'image/png');
    t.is(done?.uploaded, T0 + 4);
    t.false(await s.claim(a.token, T0 + 5), 'put once only');
    t.false(await s.complete(a.token, 'image/png', T0 + 6));
    await s.release(a.token);
    t.is((await s.slot(a.token))?.state, 'done', 'release leaves a done slot alone');
    const b = slot('alice', 10);
    await s.reserve(b, bounds(10_000), rules(T0));
    t.false(await s.claim(b.token, b.putUntil), 'the window is closed at putUntil');
    t.false(await s.claim('nope', T0));
  });

  test(title('the quota counts live files and open slots; beyond it, nothing is added and the retry time is the first release'), async (t) => {
    const s = await open(t);
    const r = rules(T0 + 10);
    const a = slot('alice', 600);
    await s.reserve(a, bounds(1000), rules(T0));
    t.true(await s.claim(a.token, T0 + 1));
    t.true(await s.complete(a.token, 'image/jpeg', T0 + 2));
    const b = slot('alice', 300, T0 + 5);
    await s.reserve(b, bounds(1000), r);
    const c = slot('alice', 101, T0 + 10);
    const err = await t.throwsAsync(s.reserve(c, bounds(1000), r));
    t.true(err instanceof UploadQuotaError || err?.name === 'UploadQuotaError', String(err));
    // b, never put, stops counting first: at the end of its window and write time.
    t.is((err as UploadQuotaError).retryAt, b.putUntil + WRITE);
    t.is(await s.slot(c.token), undefined, 'nothing added');
    await s.reserve(slot('bob', 1000), bounds(1000), r);
    await s.reserve(slot('alice', 100, T0 + 10), bounds(1000), r);
    // Once b's window and write time are over, its bytes are free again.
    const later = rules(b.putUntil + WRITE);
    await s.reserve(slot('alice', 300, later.now), bounds(1000), later);
    // Past the file's life, a's 600 bytes are free too.
    const after = rules(T0 + 2 + 7 * DAY);
    await s.reserve(slot('alice', 600, after.now), bounds(1000), after);
    // No quota: any size.
    await s.reserve(slot('alice', 10 ** 12, after.now), bounds(0), after);
  });

  test(title("openBytes: the sizes of every owner's slots not yet put, or being written, within their window and write time; not files, nor slots past that"), async (t) => {
    const s = await open(t);
    t.is(await s.openBytes(rules(T0)), 0);
    const a = slot('alice', 100);
    const b = slot('bob', 20);
    const c = slot('carol', 3);
    for (const x of [a, b, c]) await s.reserve(x, bounds(0), rules(T0));
    t.is(await s.openBytes(rules(T0 + 1)), 123);
    t.true(await s.claim(b.token, T0 + 2));
    t.is(await s.openBytes(rules(T0 + 3)), 123, 'being written: still not all on disk');
    t.true(await s.claim(c.token, T0 + 4));
    t.true(await s.complete(c.token, 'image/jpeg', T0 + 5));
    t.is(await s.openBytes(rules(T0 + 6)), 120, 'a file put is on disk');
    t.is(await s.openBytes(rules(T0 + WINDOW + WRITE)), 0, 'past the window and the write time, nothing is promised');
  });

  test(title('a bound on files: one more is refused; files kept for ever give no retry time'), async (t) => {
    const s = await open(t);
    const r = rules(T0, 0);
    const a = slot('alice', 1);
    await s.reserve(a, bounds(0, 2), r);
    t.true(await s.claim(a.token, T0));
    t.true(await s.complete(a.token, '', T0));
    const b = slot('alice', 1);
    await s.reserve(b, bounds(0, 2), r);
    t.true(await s.claim(b.token, T0));
    t.true(await s.complete(b.token, '', T0));
    const err = await t.throwsAsync(s.reserve(slot('alice', 1), bounds(0, 2), rules(T0 + 100 * DAY, 0)));
    t.is(err?.name, 'UploadQuotaError');
    t.is((err as UploadQuotaError).retryAt, 0, 'nothing is released by time');
    await s.reserve(slot('bob', 1), bounds(0, 2), r);
  });

  test(title('expired: files past their life and slots never put past their window and write time, up to a limit; remove() takes them'), async (t) => {
    const s = await open(t);
    const put = async (owner: string, at: number) => {
      const x = slot(owner, 5, at);
      await s.reserve(x, bounds(0), rules(at));
      t.true(await s.claim(x.token, at));
      t.true(await s.complete(x.token, 'text/plain', at));
      return x;
    };
    const old = await put('alice', T0);
    const fresh = await put('bob', T0 + 6 * DAY);
    const stale = slot('carol', 5, T0);
    await s.reserve(stale, bounds(0), rules(T0));
    const writing = slot('carol', 5, T0 + 7 * DAY);
    await s.reserve(writing, bounds(0), rules(T0 + 7 * DAY));
    t.true(await s.claim(writing.token, T0 + 7 * DAY));
    const now = rules(T0 + 7 * DAY + 1);
    t.deepEqual((await s.expired(now, 10)).map((x) => x.token).sort(), [old.token, stale.token].sort());
    t.is((await s.expired(now, 1)).length, 1, 'the limit');
    t.deepEqual(await s.expired(rules(now.now, 0), 10).then((l) => l.map((x) => x.token)), [stale.token], 'files kept for ever never expire');
    await s.remove([old.token, stale.token]);
    t.is(await s.slot(old.token), undefined);
    t.deepEqual(await s.expired(now, 10), []);
    t.is((await s.slot(fresh.token))?.state, 'done');
    await s.remove([]);
  });

  test(title('removeOwner: every slot of the owner goes, put, being written or pending, and its tokens are returned; others stay'), async (t) => {
    const s = await open(t);
    const r = rules(T0);
    const done = slot('alice', 5);
    const writing = slot('alice', 5);
    const pending = slot('alice', 5);
    const bobs = slot('bob', 5);
    for (const x of [done, writing, pending, bobs]) await s.reserve(x, bounds(0), r);
    t.true(await s.claim(done.token, T0));
    t.true(await s.complete(done.token, 'text/plain', T0));
    t.true(await s.claim(writing.token, T0));
    t.deepEqual((await s.removeOwner('alice')).sort(), [done.token, writing.token, pending.token].sort());
    for (const x of [done, writing, pending]) t.is(await s.slot(x.token), undefined);
    t.false(await s.complete(writing.token, 'text/plain', T0 + 1), 'a PUT under way finds its slot gone');
    t.is((await s.slot(bobs.token))?.state, 'pending');
    t.deepEqual(await s.removeOwner('alice'), [], 'nothing left');
    // The name is free: a new account of it holds nothing.
    await s.reserve(slot('alice', 5), bounds(5, 1), r);
  });

  test(title('two slot requests at once within room for one: one is added, the other refused'), async (t) => {
    const s = await open(t);
    const outcomes = await Promise.allSettled([s.reserve(slot('alice', 600), bounds(1000), rules(T0)), s.reserve(slot('alice', 600), bounds(1000), rules(T0))]);
    t.is(outcomes.filter((o) => o.status === 'fulfilled').length, 1);
    t.is(outcomes.filter((o) => o.status === 'rejected' && (o.reason as Error).name === 'UploadQuotaError').length, 1);
  });
}
