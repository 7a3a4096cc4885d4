// The behaviour every RosterStore must have, run against each implementation
// (the embedded SQLite store and the cluster's Redis store).
import test, { type ExecutionContext } from 'ava';
import { type RosterStore, type RosterItem, RosterFullError, EMPTY_VERSION } from '../../src/roster/store.ts';

export interface Backend {
  /** A fresh, empty store; closed when the test ends. */
  store: RosterStore;
  /** Another store over the same data (another thread, process or node); closed when the test ends. */
  another(): Promise<RosterStore>;
}

export type OpenBackend = (t: ExecutionContext) => Promise<Backend>;

const BIG = 1000;

export function rosterStoreContract(label: string, open: OpenBackend): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('an unknown roster is empty, with the empty version; nothing to remove or change'), async (t) => {
    const { store: s } = await open(t);
    t.deepEqual(await s.get('alice'), { version: EMPTY_VERSION, items: [] });
    t.is(await s.item('alice', 'bob@example.com'), undefined);
    t.is(await s.remove('alice', 'bob@example.com'), undefined);
    t.is(await s.setSubscription('alice', 'bob@example.com', 'both', undefined), undefined);
    await s.removeAll('alice');
    t.deepEqual(await s.get('alice'), { version: EMPTY_VERSION, items: [] });
  });

  test(title('set adds an item with subscription none; get and item return it'), async (t) => {
    const { store: s } = await open(t);
    const added = await s.set('alice', { jid: 'bob@example.com', name: 'Bob', groups: ['Friends', 'Work'] }, BIG);
    const bob: RosterItem = { jid: 'bob@example.com', name: 'Bob', subscription: 'none', groups: ['Friends', 'Work'] };
    t.deepEqual(added.item, bob);
    t.not(added.version, EMPTY_VERSION);
    t.deepEqual(await s.get('alice'), { version: added.version, items: [bob] });
    t.deepEqual(await s.item('alice', 'bob@example.com'), bob);
    const plain = await s.set('alice', { jid: 'example.org', groups: [] }, BIG);
    t.deepEqual(plain.item, { jid: 'example.org', subscription: 'none', groups: [] });
    t.false('name' in plain.item, 'no name key when there is no name');
    t.false('ask' in plain.item, 'no ask key when nothing is pending');
  });

  test(title('every change gives a new version; reads and refused changes do not'), async (t) => {
    const { store: s } = await open(t);
    const seen = new Set<string>([EMPTY_VERSION]);
    /** A change's version: never seen before, and the one get() now reports. */
    const fresh = async (change: Promise<{ version: string } | undefined>) => {
      const v = (await change)!.version;
      t.false(seen.has(v), `version ${v} is new`);
      seen.add(v);
      t.is((await s.get('alice')).version, v);
      return v;
    };
    await fresh(s.set('alice', { jid: 'a@x', groups: [] }, BIG));
    await fresh(s.set('alice', { jid: 'a@x', groups: [] }, BIG)); // even an identical set is a change
    await fresh(s.set('alice', { jid: 'b@x', name: 'B', groups: ['G'] }, BIG));
    await fresh(s.setSubscription('alice', 'b@x', 'to', undefined));
    let v = await fresh(s.remove('alice', 'a@x'));
    t.is(await s.remove('alice', 'a@x'), undefined);
    await t.throwsAsync(s.set('alice', { jid: 'c@x', groups: [] }, 1), { instanceOf: RosterFullError });
    t.is((await s.get('alice')).version, v, 'refused changes leave the version alone');
    v = await fresh(s.remove('alice', 'b@x'));
    t.deepEqual(await s.get('alice'), { version: v, items: [] }, 'an emptied roster keeps its own version');
  });

  test(title('an update replaces name and groups and keeps the subscription state'), async (t) => {
    const { store: s } = await open(t);
    await s.set('alice', { jid: 'bob@x', name: 'Bob', groups: ['A', 'B'] }, BIG);
    await s.setSubscription('alice', 'bob@x', 'from', 'subscribe');
    const u = await s.set('alice', { jid: 'bob@x', name: 'Robert', groups: ['C'] }, BIG);
    t.deepEqual(u.item, { jid: 'bob@x', name: 'Robert', subscription: 'from', ask: 'subscribe', groups: ['C'] });
    const v = await s.set('alice', { jid: 'bob@x', groups: [] }, BIG);
    t.deepEqual(v.item, { jid: 'bob@x', subscription: 'from', ask: 'subscribe', groups: [] }, 'name and groups are gone');
    t.deepEqual((await s.get('alice')).items, [v.item]);
  });

  test(title('names and groups keep every character; items come sorted by code point'), async (t) => {
    const { store: s } = await open(t);
    const odd = ['line\nbreak', 'tab\tquote"\'', 'back\\slash', '{"n":"json"}', '😀 emoji', ' spaced ', 'ünïcödé', '#e', 'j:x'];
    await s.set('alice', { jid: 'odd@x', name: odd.join('\n'), groups: odd }, BIG);
    for (const jid of ['\u{1F600}@x', 'z@x', '\uE000@x', 'b@x', 'é@x', 'a@x', 'ab@x']) await s.set('alice', { jid, groups: [] }, BIG);
    const { items } = await s.get('alice');
    t.deepEqual(items.map((i) => i.jid), ['a@x', 'ab@x', 'b@x', 'odd@x', 'z@x', 'é@x', '\uE000@x', '\u{1F600}@x']);
    t.deepEqual(items.find((i) => i.jid === 'odd@x'), { jid: 'odd@x', name: odd.join('\n'), subscription: 'none', groups: odd });
    t.deepEqual((await s.item('alice', 'odd@x'))!.groups, odd);
  });

  test(title('rosters are per user'), async (t) => {
    const { store: s } = await open(t);
    await s.set('alice', { jid: 'carol@x', name: 'for alice', groups: [] }, BIG);
    await s.set('bob', { jid: 'carol@x', name: 'for bob', groups: [] }, BIG);
    t.is((await s.item('alice', 'carol@x'))!.name, 'for alice');
    t.is((await s.item('bob', 'carol@x'))!.name, 'for bob');
    await s.remove('alice', 'carol@x');
    t.deepEqual((await s.get('alice')).items, []);
    t.is((await s.get('bob')).items.length, 1);
    await s.removeAll('bob');
    t.deepEqual(await s.get('bob'), { version: EMPTY_VERSION, items: [] });
    t.not((await s.get('alice')).version, EMPTY_VERSION, 'another user\'s deletion leaves this roster alone');
  });

  test(title('the size limit: adding beyond max fails, updating never does'), async (t) => {
    const { store: s } = await open(t);
    await t.throwsAsync(s.set('alice', { jid: 'a@x', groups: [] }, 0), { instanceOf: RosterFullError });
    await s.set('alice', { jid: 'a@x', groups: [] }, 2);
    await s.set('alice', { jid: 'b@x', groups: [] }, 2);
    const err = await t.throwsAsync(s.set('alice', { jid: 'c@x', groups: [] }, 2), { instanceOf: RosterFullError });
    t.is(err?.max, 2);
    t.is(err?.name, 'RosterFullError');
    const upd = await s.set('alice', { jid: 'b@x', name: 'B', groups: [] }, 2);
    t.is(upd.item.name, 'B');
    await s.set('alice', { jid: 'b@x', name: 'B2', groups: [] }, 1); // over a lowered limit: still an update
    await t.throwsAsync(s.setSubscription('alice', 'c@x', 'none', 'subscribe', { max: 2 }), { instanceOf: RosterFullError });
    await s.remove('alice', 'a@x');
    await s.set('alice', { jid: 'c@x', groups: [] }, 2);
    t.deepEqual((await s.get('alice')).items.map((i) => i.jid), ['b@x', 'c@x']);
    await t.throwsAsync(s.set('alice', { jid: 'd@x', groups: [] }, -1), { instanceOf: RangeError });
    await t.throwsAsync(s.set('alice', { jid: 'd@x', groups: [] }, 1.5), { instanceOf: RangeError });
  });

  test(title('remove returns the removed item and the new version'), async (t) => {
    const { store: s } = await open(t);
    await s.set('alice', { jid: 'bob@x', name: 'Bob', groups: ['G'] }, BIG);
    await s.setSubscription('alice', 'bob@x', 'both', undefined);
    const r = await s.remove('alice', 'bob@x');
    t.deepEqual(r?.item, { jid: 'bob@x', name: 'Bob', subscription: 'both', groups: ['G'] });
    t.is((await s.get('alice')).version, r!.version);
    t.is(await s.item('alice', 'bob@x'), undefined);
    t.is(await s.remove('alice', 'bob@x'), undefined);
  });

  test(title('setSubscription changes only the state; the same state is no change'), async (t) => {
    const { store: s } = await open(t);
    await s.set('alice', { jid: 'bob@x', name: 'Bob', groups: ['G'] }, BIG);
    const a = (await s.setSubscription('alice', 'bob@x', 'none', 'subscribe'))!;
    t.true(a.changed);
    t.deepEqual(a.item, { jid: 'bob@x', name: 'Bob', subscription: 'none', ask: 'subscribe', groups: ['G'] });
    const same = (await s.setSubscription('alice', 'bob@x', 'none', 'subscribe'))!;
    t.false(same.changed);
    t.is(same.version, a.version);
    t.deepEqual(same.item, a.item);
    const b = (await s.setSubscription('alice', 'bob@x', 'to', undefined))!;
    t.true(b.changed);
    t.not(b.version, a.version);
    t.deepEqual(b.item, { jid: 'bob@x', name: 'Bob', subscription: 'to', groups: ['G'] }, 'ask cleared, details kept');
    t.deepEqual(await s.get('alice'), { version: b.version, items: [b.item] });
    for (const sub of ['none', 'to', 'from', 'both'] as const) {
      t.is((await s.setSubscription('alice', 'bob@x', sub, undefined))!.item.subscription, sub);
    }
    await t.throwsAsync(s.setSubscription('alice', 'bob@x', 'remove' as 'none', undefined), { instanceOf: TypeError });
    await t.throwsAsync(s.setSubscription('alice', 'bob@x', 'to', 'unsubscribe' as 'subscribe'), { instanceOf: TypeError });
    t.is((await s.item('alice', 'bob@x'))!.subscription, 'both');
  });

  test(title('setSubscription with create adds a bare item when there is none'), async (t) => {
    const { store: s } = await open(t);
    t.is(await s.setSubscription('alice', 'bob@x', 'none', 'subscribe'), undefined);
    t.deepEqual((await s.get('alice')).items, []);
    const c = (await s.setSubscription('alice', 'bob@x', 'none', 'subscribe', { max: 1 }))!;
    t.true(c.changed);
    t.deepEqual(c.item, { jid: 'bob@x', subscription: 'none', ask: 'subscribe', groups: [] });
    t.deepEqual(await s.get('alice'), { version: c.version, items: [c.item] });
    // An existing item is changed even at the limit.
    t.true((await s.setSubscription('alice', 'bob@x', 'to', undefined, { max: 1 }))!.changed);
    await t.throwsAsync(s.setSubscription('alice', 'carol@x', 'from', undefined, { max: 1 }), { instanceOf: RosterFullError });
    const upd = await s.set('alice', { jid: 'bob@x', name: 'Bob', groups: [] }, 1);
    t.deepEqual(upd.item, { jid: 'bob@x', name: 'Bob', subscription: 'to', groups: [] });
  });

  test(title('removeAll deletes the roster; a new roster never reuses an old version'), async (t) => {
    const { store: s } = await open(t);
    const old: string[] = [];
    for (const jid of ['a@x', 'b@x', 'c@x']) old.push((await s.set('alice', { jid, groups: [] }, BIG)).version);
    await s.removeAll('alice');
    t.deepEqual(await s.get('alice'), { version: EMPTY_VERSION, items: [] });
    for (const jid of ['d@x', 'e@x', 'f@x']) {
      const v = (await s.set('alice', { jid, groups: [] }, BIG)).version;
      t.false(old.includes(v), `${v} was a version of the deleted roster`);
    }
    t.deepEqual((await s.get('alice')).items.map((i) => i.jid), ['d@x', 'e@x', 'f@x']);
  });

  test(title('another instance over the same data sees every change'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const added = await a.set('alice', { jid: 'bob@x', name: 'Bob', groups: ['G'] }, BIG);
    t.deepEqual(await b.get('alice'), { version: added.version, items: [added.item] });
    const sub = (await b.setSubscription('alice', 'bob@x', 'both', undefined))!;
    t.deepEqual(await a.item('alice', 'bob@x'), sub.item);
    t.is((await a.get('alice')).version, sub.version);
    await t.throwsAsync(b.set('alice', { jid: 'carol@x', groups: [] }, 1), { instanceOf: RosterFullError });
    t.truthy(await a.remove('alice', 'bob@x'));
    t.is(await b.remove('alice', 'bob@x'), undefined);
    await b.set('alice', { jid: 'dave@x', groups: [] }, BIG);
    await a.removeAll('alice');
    t.deepEqual(await b.get('alice'), { version: EMPTY_VERSION, items: [] });
  });

  test(title('concurrent adds from two instances: the limit holds exactly, every version is distinct'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const max = 7;
    const jids = Array.from({ length: 24 }, (_, i) => `c${String(i).padStart(2, '0')}@x`);
    const results = await Promise.allSettled(jids.map((jid, i) => (i % 2 ? a : b).set('alice', { jid, groups: [] }, max)));
    const won = results.filter((r) => r.status === 'fulfilled');
    t.is(won.length, max);
    for (const r of results) if (r.status === 'rejected') t.true(r.reason instanceof RosterFullError, String(r.reason));
    const versions = won.map((r) => r.value.version);
    t.is(new Set(versions).size, max, 'no two changes share a version');
    const { version, items } = await a.get('alice');
    t.is(items.length, max);
    t.true(versions.includes(version), 'the roster is at the version of one of the changes');
    t.deepEqual(items.map((i) => i.jid).sort(), won.map((r) => r.value.item.jid).sort());
  });

  test(title('concurrent updates of one item from two instances: one version per change'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    await a.set('alice', { jid: 'bob@x', groups: [] }, BIG);
    const changes = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).set('alice', { jid: 'bob@x', name: `n${i}`, groups: [] }, BIG)));
    t.is(new Set(changes.map((c) => c.version)).size, 20);
    const subs = await Promise.all(['to', 'from', 'both', 'none'].map((sub, i) => (i % 2 ? a : b).setSubscription('alice', 'bob@x', sub as 'to', undefined)));
    const changed = subs.filter((r) => r!.changed);
    t.is(new Set(changed.map((r) => r!.version)).size, changed.length, 'each state change has its own version');
    t.true(['to', 'from', 'both', 'none'].includes((await b.item('alice', 'bob@x'))!.subscription));
    const final = (await a.item('alice', 'bob@x'))!;
    t.true(/^n\d+$/.test(final.name!), 'the name is one of the values written');
    t.is((await a.get('alice')).items.length, 1);
  });
}
