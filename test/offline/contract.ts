// The behaviour every OfflineStore must have, run against each implementation
// (the embedded SQLite store and the cluster's Redis store): order kept,
// each stanza handed out exactly once, the limit never exceeded, even when
// two instances (two threads, two nodes) work on one queue at the same time.
import test, { type ExecutionContext } from 'ava';
import type { OfflineStore } from '../../src/offline/store.ts';

export interface Backend {
  /** A fresh, empty store; closed when the test ends. */
  store: OfflineStore;
  /** Another store over the same data (another thread, process or node); closed when the test ends. */
  another(): Promise<OfflineStore>;
}

export type OpenBackend = (t: ExecutionContext) => Promise<Backend>;

const msg = (id: string, body = id) => `<message to='bob@localhost' id='${id}' type='chat'><body>${body}</body></message>`;
const idOf = (xml: string) => /id='([^']*)'/.exec(xml)?.[1] ?? `(no id in ${xml})`;

/**
 * Checks batches taken concurrently from one queue filled by several
 * producers, each pushing "<producer>-<n>" with n counting up: every pushed
 * id comes out exactly once; inside a batch each producer's ids are in
 * order; and batches do not interleave (take removes a prefix of the queue,
 * so for each producer one batch's ids all come before or all after
 * another's).
 */
export function checkBatches(t: ExecutionContext, batches: string[][], pushed: string[]): void {
  const all = batches.flat();
  t.is(all.length, new Set(all).size, 'no stanza handed out twice');
  t.deepEqual([...all].sort(), [...pushed].sort(), 'every stored stanza handed out');
  const seq = (id: string) => {
    const dash = id.lastIndexOf('-');
    return { producer: id.slice(0, dash), n: Number(id.slice(dash + 1)) };
  };
  const ranges = new Map<string, [number, number][]>();
  for (const [b, batch] of batches.entries()) {
    const last = new Map<string, number>();
    const span = new Map<string, [number, number]>();
    for (const id of batch) {
      const { producer, n } = seq(id);
      const prev = last.get(producer);
      if (prev !== undefined && n <= prev) t.fail(`batch ${b}: ${producer}-${n} after ${producer}-${prev}`);
      last.set(producer, n);
      const s = span.get(producer);
      span.set(producer, s ? [s[0], n] : [n, n]);
    }
    for (const [p, s] of span) ranges.set(p, [...(ranges.get(p) ?? []), s]);
  }
  for (const [p, rs] of ranges) {
    const sorted = [...rs].sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i][0] <= sorted[i - 1][1]) t.fail(`${p}: batches overlap (${sorted[i - 1].join('..')} and ${sorted[i].join('..')})`);
    }
  }
}

export function offlineStoreContract(label: string, open: OpenBackend): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('an empty queue: take() gives nothing, count() is 0, removeAll() is harmless'), async (t) => {
    const { store: s } = await open(t);
    t.deepEqual(await s.take('nobody'), []);
    t.is(await s.count('nobody'), 0);
    await s.removeAll('nobody');
    t.deepEqual(await s.take('nobody'), []);
  });

  test(title('take() gives everything, oldest first, and only once'), async (t) => {
    const { store: s } = await open(t);
    const stanzas = Array.from({ length: 50 }, (_, i) => msg(`m-${i}`));
    for (const x of stanzas) t.true(await s.push('bob', x, 100));
    t.is(await s.count('bob'), 50);
    t.deepEqual(await s.take('bob'), stanzas);
    t.is(await s.count('bob'), 0);
    t.deepEqual(await s.take('bob'), [], 'a second take gets nothing');
    t.true(await s.push('bob', msg('later'), 100));
    t.deepEqual(await s.take('bob'), [msg('later')], 'the queue is usable again');
  });

  test(title('queues are per user; removeAll() empties one only'), async (t) => {
    const { store: s } = await open(t);
    await s.push('alice', msg('a1'), 10);
    await s.push('bob', msg('b1'), 10);
    await s.push('ünïcode', msg('u1'), 10);
    await s.push('alice', msg('a2'), 10);
    t.is(await s.count('alice'), 2);
    t.is(await s.count('bob'), 1);
    await s.removeAll('alice');
    t.is(await s.count('alice'), 0);
    t.deepEqual(await s.take('alice'), []);
    t.deepEqual(await s.take('bob'), [msg('b1')]);
    t.deepEqual(await s.take('ünïcode'), [msg('u1')]);
  });

  test(title('stanzas come back exactly as pushed'), async (t) => {
    const { store: s } = await open(t);
    const odd = [
      `<message to='bob@localhost' id="q&quot;'"><body>&lt;tag&gt; &amp; "quotes" 'apos'\n\ttab\rcr</body></message>`,
      `<message to='bob@localhost'><body>ünïcödé 😀 \u{10FFFD} 中文 ‮rtl</body></message>`,
      `<message to='bob@localhost'><body>${'x'.repeat(200_000)}</body></message>`,
      '',
    ];
    for (const x of odd) t.true(await s.push('bob', x, 10));
    const back = await s.take('bob');
    t.is(back.length, odd.length);
    for (const [i, x] of odd.entries()) t.true(back[i] === x, `stanza ${i} changed`);
  });

  test(title('the limit: full at max, room again after take(); max below 1 stores nothing'), async (t) => {
    const { store: s } = await open(t);
    for (let i = 0; i < 3; i++) t.true(await s.push('bob', msg(`m-${i}`), 3), `push ${i}`);
    t.false(await s.push('bob', msg('m-3'), 3), 'the fourth does not fit');
    t.false(await s.push('bob', msg('m-4'), 2), 'nor with a lower limit');
    t.is(await s.count('bob'), 3);
    t.true(await s.push('bob', msg('m-5'), 4), 'the limit is the one given with each push');
    t.deepEqual((await s.take('bob')).map(idOf), ['m-0', 'm-1', 'm-2', 'm-5']);
    t.true(await s.push('bob', msg('m-6'), 3), 'room again once taken');
    t.false(await s.push('carol', msg('c'), 0));
    t.false(await s.push('carol', msg('c'), -1));
    t.is(await s.count('carol'), 0);
    await t.throwsAsync(s.push('carol', msg('c'), Number.NaN), { instanceOf: RangeError });
    await t.throwsAsync(s.push('carol', msg('c'), 1.5), { instanceOf: RangeError });
    t.is(await s.count('carol'), 0);
  });

  test(title('another instance over the same data sees the same queues'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    t.true(await a.push('bob', msg('m-0'), 10));
    t.true(await b.push('bob', msg('m-1'), 10));
    t.is(await b.count('bob'), 2);
    t.is(await a.count('bob'), 2);
    t.deepEqual((await b.take('bob')).map(idOf), ['m-0', 'm-1']);
    t.deepEqual(await a.take('bob'), []);
    t.true(await a.push('alice', msg('a'), 10));
    await b.removeAll('alice');
    t.is(await a.count('alice'), 0);
  });

  test(title('concurrent pushes from two instances never exceed the limit'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const max = 25;
    const attempts = Array.from({ length: 120 }, (_, i) => ({ s: i % 2 ? a : b, id: `m-${i}` }));
    const results = await Promise.all(attempts.map(({ s, id }) => s.push('bob', msg(id), max)));
    const accepted = attempts.filter((_, i) => results[i]).map(({ id }) => id);
    t.is(accepted.length, max, 'exactly max pushes succeed');
    t.is(await a.count('bob'), max);
    t.deepEqual((await b.take('bob')).map(idOf).sort(), [...accepted].sort(), 'what was stored is exactly what was accepted');
  });

  test(title('concurrent takes from two instances: disjoint, together everything, each in order'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const pushed: string[] = [];
    let producing = true;
    const produce = async (s: OfflineStore, name: string) => {
      for (let n = 0; n < 150; n++) {
        const id = `${name}-${n}`;
        t.true(await s.push('bob', msg(id), 1_000_000), id);
        pushed.push(id);
        // A store that answers without I/O would otherwise run this whole
        // loop before any consumer's next turn.
        if (n % 10 === 9) await new Promise<void>((r) => setImmediate(r));
      }
    };
    const batches: string[][] = [];
    const consume = async (s: OfflineStore) => {
      while (producing) {
        const got = await s.take('bob');
        if (got.length > 0) batches.push(got.map(idOf));
        await new Promise<void>((r) => setImmediate(r)); // let the producers' turns in
      }
    };
    const consumers = [consume(a), consume(b), consume(a)];
    await Promise.all([produce(a, 'pa'), produce(b, 'pb')]);
    producing = false;
    await Promise.all(consumers);
    const rest = await b.take('bob');
    if (rest.length > 0) batches.push(rest.map(idOf));
    t.is(pushed.length, 300);
    t.true(batches.length > 1, 'the consumers took while the producers pushed');
    checkBatches(t, batches, pushed);
    t.is(await a.count('bob'), 0);
  });
}
