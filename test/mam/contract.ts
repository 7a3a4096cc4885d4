// The message archive's contract (mam/store.ts), run against every backend:
// SQLite (sqlite.test.ts) and PostgreSQL (postgres.test.ts).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { ArchiveStore, ArchivedMessage } from '../../src/mam/store.ts';
import { idAt, stampOf } from '../../src/mam/store.ts';

export type OpenArchive = (t: ExecutionContext) => Promise<ArchiveStore>;

let clock = Date.UTC(2026, 0, 1);
let seq = 0;

/** A message of `owner` with `peer` (bare or full JID), one ms after the previous one made here. */
export function msg(owner: string, peer: string, body: string, at = (clock += 1)): ArchivedMessage {
  const id = idAt(at, seq++);
  const slash = peer.indexOf('/');
  return {
    id,
    owner,
    stamp: stampOf(id),
    withBare: slash < 0 ? peer : peer.slice(0, slash),
    withResource: slash < 0 ? '' : peer.slice(slash + 1),
    outgoing: body.startsWith('>'),
    body,
    xml: `<message xmlns="jabber:client" type="chat"><body>${body}</body></message>`,
  };
}

export function archiveStoreContract(label: string, open: OpenArchive): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('a batch is archived in order; an id written twice stays one row'), async (t) => {
    const s = await open(t);
    const rows = [msg('alice', 'bob@example.com', 'one'), msg('alice', 'bob@example.com/phone', 'two'), msg('bob', 'alice@example.com', 'three')];
    await s.append(rows);
    await s.append([rows[0]]);
    const page = await s.query('alice', { max: 10, last: false });
    t.deepEqual(page.items.map((m) => m.body), ['one', 'two']);
    t.true(page.complete);
    t.deepEqual(page.items[1], rows[1]);
    t.is(await s.count('alice', {}), 2);
    t.true(await s.has('alice', rows[0].id));
    t.false(await s.has('bob', rows[0].id));
  });

  test(title('pages forwards and from the end, saying when the selection is complete'), async (t) => {
    const s = await open(t);
    const rows = Array.from({ length: 7 }, (_, i) => msg('alice', 'bob@example.com', `m${i}`));
    await s.append(rows);
    const first = await s.query('alice', { max: 3, last: false });
    t.deepEqual(first.items.map((m) => m.body), ['m0', 'm1', 'm2']);
    t.false(first.complete);
    const next = await s.query('alice', { max: 3, last: false, afterId: first.items[2].id });
    t.deepEqual(next.items.map((m) => m.body), ['m3', 'm4', 'm5']);
    const end = await s.query('alice', { max: 3, last: false, afterId: next.items[2].id });
    t.deepEqual(end.items.map((m) => m.body), ['m6']);
    t.true(end.complete);
    // From the end: the last page, in archive order, then the one before it.
    const last = await s.query('alice', { max: 3, last: true });
    t.deepEqual(last.items.map((m) => m.body), ['m4', 'm5', 'm6']);
    t.false(last.complete);
    const before = await s.query('alice', { max: 3, last: true, beforeId: last.items[0].id });
    t.deepEqual(before.items.map((m) => m.body), ['m1', 'm2', 'm3']);
    const start = await s.query('alice', { max: 3, last: true, beforeId: before.items[0].id });
    t.deepEqual(start.items.map((m) => m.body), ['m0']);
    t.true(start.complete);
    // Between two ids.
    const between = await s.query('alice', { max: 10, last: false, afterId: rows[1].id, beforeId: rows[4].id });
    t.deepEqual(between.items.map((m) => m.body), ['m2', 'm3']);
  });

  test(title('filters by bare or full JID, by time, by ids and by words of the body'), async (t) => {
    const s = await open(t);
    const base = Date.UTC(2026, 5, 1);
    const rows = [
      msg('alice', 'bob@example.com/phone', 'Good morning Bob', base),
      msg('alice', 'bob@example.com/laptop', 'lunch at noon?', base + 60_000),
      msg('alice', 'carol@example.com', 'good night, Carol', base + 120_000),
      msg('alice', 'bob@example.com/phone', 'Morning again', base + 180_000),
    ];
    await s.append(rows);
    const bodies = async (q: Parameters<ArchiveStore['query']>[1]) => (await s.query('alice', q)).items.map((m) => m.body);
    t.deepEqual(await bodies({ max: 10, last: false, withBare: 'bob@example.com' }), ['Good morning Bob', 'lunch at noon?', 'Morning again']);
    t.deepEqual(await bodies({ max: 10, last: false, withBare: 'bob@example.com', withResource: 'phone' }), ['Good morning Bob', 'Morning again']);
    t.deepEqual(await bodies({ max: 10, last: false, start: base + 60_000, end: base + 120_000 }), ['lunch at noon?', 'good night, Carol']);
    t.deepEqual(await bodies({ max: 10, last: false, ids: [rows[3].id, rows[0].id, 'nonsense'] }), ['Good morning Bob', 'Morning again']);
    t.deepEqual(await bodies({ max: 10, last: false, ids: [] }), []);
    t.deepEqual(await bodies({ max: 10, last: false, text: 'MORNING' }), ['Good morning Bob', 'Morning again']);
    t.deepEqual(await bodies({ max: 10, last: false, text: 'good morning' }), ['Good morning Bob']);
    t.deepEqual(await bodies({ max: 10, last: false, text: 'good', withBare: 'carol@example.com' }), ['good night, Carol']);
    // Query syntax of either backend is only words here.
    t.deepEqual(await bodies({ max: 10, last: false, text: '" OR * NEAR(' }), []);
    t.is(await s.count('alice', { withBare: 'bob@example.com' }), 3);
    t.is(await s.count('alice', { text: 'morning' }), 2);
  });

  test(title('bounds: the first and last message of an archive'), async (t) => {
    const s = await open(t);
    t.deepEqual(await s.bounds('alice'), {});
    const rows = [msg('alice', 'bob@example.com', 'a'), msg('alice', 'bob@example.com', 'b'), msg('alice', 'bob@example.com', 'c')];
    await s.append(rows);
    t.deepEqual(await s.bounds('alice'), { first: { id: rows[0].id, stamp: rows[0].stamp }, last: { id: rows[2].id, stamp: rows[2].stamp } });
  });

  test(title('preferences are kept per account'), async (t) => {
    const s = await open(t);
    t.is(await s.prefs('alice'), undefined);
    await s.setPrefs('alice', { default: 'roster', always: ['bob@example.com'], never: ['spam@example.org'] });
    await s.setPrefs('alice', { default: 'never', always: ['carol@example.com'], never: [] });
    t.deepEqual(await s.prefs('alice'), { default: 'never', always: ['carol@example.com'], never: [] });
    t.is(await s.prefs('bob'), undefined);
  });

  test(title("removeAll takes the account's archive and preferences, nobody else's"), async (t) => {
    const s = await open(t);
    await s.append([msg('alice', 'bob@example.com', 'hello bob'), msg('bob', 'alice@example.com', 'hello alice')]);
    await s.setPrefs('alice', { default: 'always', always: [], never: [] });
    await s.removeAll('alice');
    t.is(await s.count('alice', {}), 0);
    t.is(await s.count('alice', { text: 'hello' }), 0);
    t.is(await s.prefs('alice'), undefined);
    t.is(await s.count('bob', {}), 1);
    t.is(await s.count('bob', { text: 'hello' }), 1);
  });

  test(title('prune removes what is older than the cut, a chunk at a time'), async (t) => {
    const s = await open(t);
    const old = Date.UTC(2020, 0, 1);
    const rows = [msg('alice', 'bob@example.com', 'old one', old), msg('bob', 'alice@example.com', 'old two', old + 1), msg('alice', 'bob@example.com', 'old three', old + 2), msg('alice', 'bob@example.com', 'new', Date.UTC(2026, 0, 1))];
    await s.append(rows);
    t.is(await s.prune(Date.UTC(2025, 0, 1), 2), 2);
    t.is(await s.prune(Date.UTC(2025, 0, 1), 2), 1);
    t.is(await s.prune(Date.UTC(2025, 0, 1), 2), 0);
    t.deepEqual((await s.query('alice', { max: 10, last: false })).items.map((m) => m.body), ['new']);
    t.is(await s.count('alice', { text: 'old' }), 0);
  });

  test(title('ids made on one thread sort in the order they were made, within one ms too'), async (t) => {
    const s = await open(t);
    const at = Date.UTC(2026, 2, 3);
    const rows = Array.from({ length: 50 }, (_, i) => msg('alice', 'bob@example.com', `same ms ${i}`, at));
    await s.append([...rows].reverse());
    t.deepEqual((await s.query('alice', { max: 100, last: false })).items.map((m) => m.body), rows.map((r) => r.body));
  });
}
