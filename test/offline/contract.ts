// The behaviour every OfflineStore must have, run against each implementation
// (the embedded SQLite store and PostgreSQL): order kept, a
// message kept until removed, one claim at a time, the limits never
// exceeded, even when two instances (two threads, two nodes) work on one
// queue at the same time.
import test, { type ExecutionContext } from 'ava';
import type { OfflineStore, StoredMessage } from '../../src/offline/store.ts';

export interface Backend {
  /** A fresh, empty store; closed when the test ends. */
  store: OfflineStore;
  /** Another store over the same data (another thread, process or node); closed when the test ends. */
  another(): Promise<OfflineStore>;
}

export type OpenBackend = (t: ExecutionContext) => Promise<Backend>;

const msg = (id: string, body = id) => `<message to='bob@localhost' id='${id}' type='chat'><body>${body}</body></message>`;
const idOf = (xml: string) => /id='([^']*)'/.exec(xml)?.[1] ?? `(no id in ${xml})`;

const LIMITS = { max: 100, maxBytes: 10_000_000 };
const LEASE = 60_000;
const ids = (batch: StoredMessage[] | null) => (batch ?? []).map((m) => idOf(m.xml));

/** Everything in the user's queue, read as `owner` (claiming it), in batches of `size`; removed as read when `remove`. */
export async function drain(s: OfflineStore, user: string, owner: string, size = 7, remove = true): Promise<StoredMessage[]> {
  const all: StoredMessage[] = [];
  for (let after = ''; ; ) {
    const batch = await s.fetch(user, owner, after, size, LEASE);
    if (batch === null) throw new Error(`${owner}: the queue of ${user} is claimed by another`);
    if (batch.length === 0) break;
    all.push(...batch);
    after = batch[batch.length - 1].id;
    if (remove) await s.remove(user, batch.map((m) => m.id));
  }
  await s.release(user, owner);
  return all;
}

export function offlineStoreContract(label: string, open: OpenBackend): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('an empty queue: fetch() gives nothing, count() is 0, removeAll() and release() are harmless'), async (t) => {
    const { store: s } = await open(t);
    t.deepEqual(await s.fetch('nobody', 'o1', '', 10, LEASE), []);
    t.is(await s.count('nobody'), 0);
    await s.removeAll('nobody');
    await s.release('nobody', 'o1');
    await s.remove('nobody', []);
    t.deepEqual(await s.fetch('nobody', 'o2', '', 10, LEASE), [], 'removeAll dropped the claim too');
  });

  test(title('fetch() reads oldest first, in batches after an id, and a message stays until removed'), async (t) => {
    const { store: s } = await open(t);
    const stanzas = Array.from({ length: 50 }, (_, i) => msg(`m-${i}`));
    for (const x of stanzas) t.true(await s.push('bob', x, LIMITS));
    t.is(await s.count('bob'), 50);
    const first = (await s.fetch('bob', 'o1', '', 20, LEASE))!;
    t.deepEqual(first.map((m) => m.xml), stanzas.slice(0, 20));
    const second = (await s.fetch('bob', 'o1', first[19].id, 20, LEASE))!;
    t.deepEqual(second.map((m) => m.xml), stanzas.slice(20, 40), 'the next batch starts after the id given');
    t.is(await s.count('bob'), 50, 'reading removes nothing');
    t.deepEqual((await s.fetch('bob', 'o1', '', 5, LEASE))!.map((m) => m.xml), stanzas.slice(0, 5), 'read again from the start');
    await s.remove('bob', first.map((m) => m.id));
    t.is(await s.count('bob'), 30);
    await s.remove('bob', first.map((m) => m.id)); // ids no longer there are ignored
    t.is(await s.count('bob'), 30);
    t.deepEqual(ids(await s.fetch('bob', 'o1', '', 100, LEASE)), stanzas.slice(20).map(idOf));
    const all = await drain(s, 'bob', 'o1');
    t.is(all.length, 30);
    t.is(await s.count('bob'), 0);
    t.true(await s.push('bob', msg('later'), LIMITS));
    t.deepEqual((await drain(s, 'bob', 'o3')).map((m) => m.xml), [msg('later')], 'the queue is usable again');
  });

  test(title('ids increase in arrival order, also after removals'), async (t) => {
    const { store: s } = await open(t);
    for (let i = 0; i < 3; i++) await s.push('bob', msg(`a-${i}`), LIMITS);
    const a = (await s.fetch('bob', 'o', '', 10, LEASE))!;
    await s.remove('bob', a.map((m) => m.id));
    await s.push('bob', msg('b-0'), LIMITS);
    const b = (await s.fetch('bob', 'o', a[2].id, 10, LEASE))!;
    t.deepEqual(ids(b), ['b-0'], 'a message stored after the last id read comes after it');
  });

  test(title('pushes for one user made at once are kept in the order they were made (a message to a session that is gone, then the next one)'), async (t) => {
    const { store: s } = await open(t);
    const stanzas = Array.from({ length: 20 }, (_, i) => msg(`c-${i}`));
    t.deepEqual(await Promise.all(stanzas.map((x) => s.push('bob', x, LIMITS))), stanzas.map(() => true));
    t.deepEqual((await drain(s, 'bob', 'o')).map((m) => m.xml), stanzas);
  });

  test(title('pushMany() appends in the order given, after what is there, in the same queue as push() and in turn with it'), async (t) => {
    const { store: s } = await open(t);
    const lim = { ...LIMITS, max: 1000 };
    t.deepEqual(await s.pushMany('bob', [], lim), []);
    t.true(await s.push('bob', msg('p-0'), lim));
    const many = Array.from({ length: 300 }, (_, i) => msg(`b-${i}`));
    t.deepEqual(await s.pushMany('bob', many, lim), many.map(() => true));
    // Made at once with single pushes: each takes its turn in the order made.
    const mixed = await Promise.all([s.push('bob', msg('x-0'), lim), s.pushMany('bob', [msg('x-1'), msg('x-2')], lim), s.push('bob', msg('x-3'), lim)]);
    t.deepEqual(mixed, [true, [true, true], true]);
    t.deepEqual((await drain(s, 'bob', 'o')).map((m) => idOf(m.xml)), ['p-0', ...many.map(idOf), 'x-0', 'x-1', 'x-2', 'x-3']);
    t.deepEqual((await drain(s, 'alice', 'o')), [], 'other queues untouched');
  });

  test(title('pushMany() applies the limits as pushes one after the other: those that do not fit are refused at their place, later smaller ones still stored'), async (t) => {
    const { store: s } = await open(t);
    await s.push('bob', msg('m-0'), LIMITS);
    t.deepEqual(await s.pushMany('bob', [msg('m-1'), msg('m-2'), msg('m-3')], { max: 3, maxBytes: 1_000_000 }), [true, true, false], 'full at max messages');
    t.is(await s.count('bob'), 3);
    // Bytes: 'é' is two bytes in UTF-8.
    const big = (id: string, n: number) => msg(id, 'é'.repeat(n));
    const size = Buffer.byteLength(big('c-0', 100));
    const blim = { max: 100, maxBytes: size * 2 + Buffer.byteLength(msg('c-3', '')) };
    t.deepEqual(await s.pushMany('carol', [big('c-0', 100), big('c-1', 100), big('c-2', 100), msg('c-3', ''), big('c-4', 100)], blim), [true, true, false, true, false]);
    t.deepEqual((await drain(s, 'carol', 'o')).map((m) => idOf(m.xml)), ['c-0', 'c-1', 'c-3']);
    t.deepEqual(await s.pushMany('dave', [big('d-0', 100), big('d-1', 100)], { max: 100, maxBytes: size - 1 }), [false, false], 'stanzas larger than the limit never fit');
    t.deepEqual(await s.pushMany('erin', [msg('e-0'), msg('e-1')], { max: 0, maxBytes: 1000 }), [false, false]);
    t.deepEqual(await s.pushMany('erin', [msg('e-0')], { max: -1, maxBytes: 1000 }), [false]);
    await t.throwsAsync(s.pushMany('erin', [msg('e')], { max: Number.NaN, maxBytes: 1000 }), { instanceOf: RangeError });
    await t.throwsAsync(s.pushMany('erin', [msg('e')], { max: 1, maxBytes: 0.5 }), { instanceOf: RangeError });
    t.is(await s.count('dave'), 0);
    t.is(await s.count('erin'), 0);
  });

  test(title('concurrent pushMany() from two instances never exceed the limit, and each batch keeps its order'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const lim = { max: 45, maxBytes: 1_000_000 };
    const batches = Array.from({ length: 12 }, (_, k) => Array.from({ length: 10 }, (_, i) => msg(`k${k}-${i}`)));
    const results = await Promise.all(batches.map((xs, k) => (k % 2 ? a : b).pushMany('bob', xs, lim)));
    const accepted = batches.flatMap((xs, k) => xs.filter((_, i) => results[k][i]).map(idOf));
    t.is(accepted.length, lim.max, 'exactly max stored');
    const queue = (await drain(b, 'bob', 'o')).map((m) => idOf(m.xml));
    t.deepEqual([...queue].sort(), [...accepted].sort(), 'what was stored is exactly what was accepted');
    for (let k = 0; k < batches.length; k++) {
      const mine = queue.filter((id) => id.startsWith(`k${k}-`));
      t.deepEqual(mine, accepted.filter((id) => id.startsWith(`k${k}-`)), `batch ${k} in order`);
    }
  });

  test(title('queues are per user; removeAll() empties one only'), async (t) => {
    const { store: s } = await open(t);
    await s.push('alice', msg('a1'), LIMITS);
    await s.push('bob', msg('b1'), LIMITS);
    await s.push('ünïcode', msg('u1'), LIMITS);
    await s.push('alice', msg('a2'), LIMITS);
    t.is(await s.count('alice'), 2);
    t.is(await s.count('bob'), 1);
    await s.removeAll('alice');
    t.is(await s.count('alice'), 0);
    t.deepEqual(await drain(s, 'alice', 'o'), []);
    t.deepEqual((await drain(s, 'bob', 'o')).map((m) => m.xml), [msg('b1')]);
    t.deepEqual((await drain(s, 'ünïcode', 'o')).map((m) => m.xml), [msg('u1')]);
  });

  test(title('stanzas come back exactly as pushed'), async (t) => {
    const { store: s } = await open(t);
    const odd = [
      `<message to='bob@localhost' id="q&quot;'"><body>&lt;tag&gt; &amp; "quotes" 'apos'\n\ttab\rcr</body></message>`,
      `<message to='bob@localhost'><body>ünïcödé 😀 \u{10FFFD} 中文 \u202ertl</body></message>`,
      `<message to='bob@localhost'><body>${'x'.repeat(200_000)}</body></message>`,
      '',
    ];
    for (const x of odd) t.true(await s.push('bob', x, LIMITS));
    const back = await drain(s, 'bob', 'o');
    t.is(back.length, odd.length);
    for (const [i, x] of odd.entries()) t.true(back[i].xml === x, `stanza ${i} changed`);
  });

  test(title('the limits: full at max messages or max bytes (UTF-8), room again after remove(); max below 1 stores nothing'), async (t) => {
    const { store: s } = await open(t);
    const lim = { max: 3, maxBytes: 1_000_000 };
    for (let i = 0; i < 3; i++) t.true(await s.push('bob', msg(`m-${i}`), lim), `push ${i}`);
    t.false(await s.push('bob', msg('m-3'), lim), 'the fourth does not fit');
    t.false(await s.push('bob', msg('m-4'), { ...lim, max: 2 }), 'nor with a lower limit');
    t.is(await s.count('bob'), 3);
    t.true(await s.push('bob', msg('m-5'), { ...lim, max: 4 }), 'the limit is the one given with each push');
    const got = (await s.fetch('bob', 'o', '', 10, LEASE))!;
    t.deepEqual(ids(got), ['m-0', 'm-1', 'm-2', 'm-5']);
    await s.remove('bob', [got[0].id]);
    t.true(await s.push('bob', msg('m-6'), { ...lim, max: 4 }), 'room again once one is removed');

    // Bytes: 'é' is two bytes in UTF-8.
    const big = (id: string, n: number) => msg(id, 'é'.repeat(n));
    const size = Buffer.byteLength(big('c-0', 100));
    const blim = { max: 100, maxBytes: size * 2 + Buffer.byteLength(msg('c-3', '')) };
    t.true(await s.push('carol', big('c-0', 100), blim));
    t.true(await s.push('carol', big('c-1', 100), blim));
    t.false(await s.push('carol', big('c-2', 100), blim), 'the third would pass the byte limit');
    t.true(await s.push('carol', msg('c-3', ''), blim), 'a small one still fits');
    t.false(await s.push('dave', big('d-0', 100), { max: 100, maxBytes: size - 1 }), 'one stanza larger than the limit never fits');
    const c = (await s.fetch('carol', 'o', '', 10, LEASE))!;
    await s.remove('carol', [c[0].id]);
    t.true(await s.push('carol', big('c-4', 100), blim), 'removing gives the bytes back');
    t.false(await s.push('erin', msg('e'), { max: 0, maxBytes: 1000 }));
    t.false(await s.push('erin', msg('e'), { max: -1, maxBytes: 1000 }));
    t.is(await s.count('erin'), 0);
    await t.throwsAsync(s.push('erin', msg('e'), { max: Number.NaN, maxBytes: 1000 }), { instanceOf: RangeError });
    await t.throwsAsync(s.push('erin', msg('e'), { max: 1.5, maxBytes: 1000 }), { instanceOf: RangeError });
    await t.throwsAsync(s.push('erin', msg('e'), { max: 1, maxBytes: 0.5 }), { instanceOf: RangeError });
    t.is(await s.count('erin'), 0);
  });

  test(title('a fetch that finds an unclaimed queue empty leaves no claim (a holder that dies then holds nothing back); a holder keeps its claim to the end'), async (t) => {
    const { store: s } = await open(t);
    t.deepEqual(await s.fetch('carol', 'gone', '', 10, LEASE), []);
    await s.push('carol', msg('c-0'), LIMITS);
    const batch = await s.fetch('carol', 'next', '', 10, LEASE);
    t.deepEqual(ids(batch), ['c-0'], 'nothing claimed by the empty fetch');
    // The holder reads past the end while its last message is not yet removed: still its own.
    t.deepEqual(await s.fetch('carol', 'next', batch![0].id, 10, LEASE), []);
    t.is(await s.fetch('carol', 'other', '', 10, LEASE), null, 'the holder keeps its claim past the end');
  });

  test(title('one claim at a time: another owner gets null until released or lapsed; the holder renews it'), async (t) => {
    const { store: s } = await open(t);
    await s.push('bob', msg('m-0'), LIMITS);
    t.deepEqual(ids(await s.fetch('bob', 'first', '', 10, LEASE)), ['m-0']);
    t.is(await s.fetch('bob', 'second', '', 10, LEASE), null, 'claimed by first');
    await s.release('bob', 'second'); // not the holder: no effect
    t.is(await s.fetch('bob', 'second', '', 10, LEASE), null, 'still claimed by first');
    t.deepEqual(ids(await s.fetch('bob', 'first', '', 10, LEASE)), ['m-0'], 'the holder reads again');
    await s.release('bob', 'first');
    t.deepEqual(ids(await s.fetch('bob', 'second', '', 10, 1)), ['m-0'], 'released: another may claim');
    // A claim of 1 ms lapses once the clock has moved on (the database's and the store's clocks alike).
    const until = Date.now() + 5;
    while (Date.now() <= until) await new Promise<void>((r) => setImmediate(r));
    t.deepEqual(ids(await s.fetch('bob', 'third', '', 10, LEASE)), ['m-0'], 'a lapsed claim does not block');
    t.is(await s.fetch('bob', 'second', '', 10, LEASE), null);
    await t.throwsAsync(s.fetch('bob', 'third', '', 0, LEASE), { instanceOf: RangeError });
    await t.throwsAsync(s.fetch('bob', 'third', '', 1, 0), { instanceOf: RangeError });
  });

  test(title('fetch() after something that is no message id rejects, takes no claim and leaves the queue as it was'), async (t) => {
    const { store: s } = await open(t);
    for (let i = 0; i < 3; i++) await s.push('bob', msg(`m-${i}`), LIMITS);
    for (const after of ['not-an-id', '1.5', 'Infinity', '99999999999999999999', '-1', ' ', '0x10', '1e3']) {
      await t.throwsAsync(s.fetch('bob', 'bad', after, 10, LEASE), { message: /invalid (message|stream) id/i }, JSON.stringify(after));
    }
    t.deepEqual(ids(await s.fetch('bob', 'good', '', 10, LEASE)), ['m-0', 'm-1', 'm-2'], 'no claim was taken, nothing was read away');
    t.is(await s.count('bob'), 3);
  });

  test(title('another instance over the same data sees the same queues and claims'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    t.true(await a.push('bob', msg('m-0'), LIMITS));
    t.true(await b.push('bob', msg('m-1'), LIMITS));
    t.is(await b.count('bob'), 2);
    t.is(await a.count('bob'), 2);
    t.deepEqual(ids(await a.fetch('bob', 'on-a', '', 10, LEASE)), ['m-0', 'm-1']);
    t.is(await b.fetch('bob', 'on-b', '', 10, LEASE), null, 'the claim holds across instances');
    await a.release('bob', 'on-a');
    t.deepEqual((await drain(b, 'bob', 'on-b')).map((m) => idOf(m.xml)), ['m-0', 'm-1']);
    t.is(await a.count('bob'), 0);
    t.true(await a.push('alice', msg('a'), LIMITS));
    await b.removeAll('alice');
    t.is(await a.count('alice'), 0);
  });

  test(title('concurrent pushes from two instances never exceed the limit'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const lim = { max: 25, maxBytes: 1_000_000 };
    const attempts = Array.from({ length: 120 }, (_, i) => ({ s: i % 2 ? a : b, id: `m-${i}` }));
    const results = await Promise.all(attempts.map(({ s, id }) => s.push('bob', msg(id), lim)));
    const accepted = attempts.filter((_, i) => results[i]).map(({ id }) => id);
    t.is(accepted.length, lim.max, 'exactly max pushes succeed');
    t.is(await a.count('bob'), lim.max);
    t.deepEqual((await drain(b, 'bob', 'o')).map((m) => idOf(m.xml)).sort(), [...accepted].sort(), 'what was stored is exactly what was accepted');
  });

  test(title('deliverers on two instances while producers push: each message delivered exactly once, in order per producer'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const pushed: string[] = [];
    let producing = true;
    const produce = async (s: OfflineStore, name: string) => {
      for (let n = 0; n < 150; n++) {
        const id = `${name}-${n}`;
        t.true(await s.push('bob', msg(id), { max: 1_000_000, maxBytes: 100_000_000 }), id);
        pushed.push(id);
        // A store that answers without I/O would otherwise run this whole
        // loop before any consumer's next turn.
        if (n % 10 === 9) await new Promise<void>((r) => setImmediate(r));
      }
    };
    const delivered: string[] = [];
    const consume = async (s: OfflineStore, owner: string) => {
      while (producing || (await s.count('bob')) > 0) {
        const batch = await s.fetch('bob', owner, '', 5, LEASE);
        if (batch !== null && batch.length > 0) {
          delivered.push(...batch.map((m) => idOf(m.xml)));
          await s.remove('bob', batch.map((m) => m.id));
        }
        await s.release('bob', owner);
        await new Promise<void>((r) => setImmediate(r)); // let the producers' turns in
      }
    };
    const consumers = [consume(a, 'c1'), consume(b, 'c2'), consume(a, 'c3')];
    await Promise.all([produce(a, 'pa'), produce(b, 'pb')]);
    producing = false;
    await Promise.all(consumers);
    t.is(pushed.length, 300);
    t.is(delivered.length, new Set(delivered).size, 'no message delivered twice');
    t.deepEqual([...delivered].sort(), [...pushed].sort(), 'every stored message delivered');
    for (const p of ['pa', 'pb']) {
      const ns = delivered.filter((id) => id.startsWith(`${p}-`)).map((id) => Number(id.slice(3)));
      t.deepEqual(ns, [...ns].sort((x, y) => x - y), `${p} in order`);
    }
    t.is(await a.count('bob'), 0);
  });
}
