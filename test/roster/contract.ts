// The behaviour every RosterStore must have, run against each implementation
// (the embedded SQLite store of a single node, and PostgreSQL, which a cluster requires).
import test, { type ExecutionContext } from 'ava';
import {
  type RosterStore, type RosterItem, type SubState, type TransitionTable, type TransitionResult,
  RosterFullError, RosterTooLargeError, EMPTY_VERSION, SUB_STATES, splitState,
} from '../../src/roster/store.ts';

export interface Backend {
  /** A fresh, empty store; closed when the test ends. */
  store: RosterStore;
  /** Another store over the same data (another thread, process or node); closed when the test ends. */
  another(): Promise<RosterStore>;
}

export type OpenBackend = (t: ExecutionContext) => Promise<Backend>;

const BIG = 1000;

// RFC 6121 Appendix A: each event's effect, from the user's side (states not
// listed do not change).
/** A.2.1: the user sends subscribe. */
export const OUT_SUBSCRIBE: TransitionTable = { 'none': 'none+out', 'none+in': 'none+out+in', 'from': 'from+out' };
/** A.2.2: the user sends unsubscribe. */
export const OUT_UNSUBSCRIBE: TransitionTable = {
  'none+out': 'none', 'none+out+in': 'none+in', 'to': 'none', 'to+in': 'none+in', 'from+out': 'from', 'both': 'from',
};
/** A.2.3: the user sends subscribed (approves the contact's request). */
export const OUT_SUBSCRIBED: TransitionTable = { 'none+in': 'from', 'none+out+in': 'from+out', 'to+in': 'both' };
/** A.2.4: the user sends unsubscribed (denies or cancels). */
export const OUT_UNSUBSCRIBED: TransitionTable = {
  'none+in': 'none', 'none+out+in': 'none+out', 'to+in': 'to', 'from': 'none', 'from+out': 'none+out', 'both': 'to',
};
/** A.3.1: a subscribe comes in from the contact. */
export const IN_SUBSCRIBE: TransitionTable = { 'none': 'none+in', 'none+out': 'none+out+in', 'to': 'to+in' };
/** A.3.2: an unsubscribe comes in. */
export const IN_UNSUBSCRIBE: TransitionTable = {
  'none+in': 'none', 'none+out+in': 'none+out', 'to+in': 'to', 'from': 'none', 'from+out': 'none+out', 'both': 'to',
};
/** A.3.3: a subscribed comes in (the contact approved the user's request). */
export const IN_SUBSCRIBED: TransitionTable = { 'none+out': 'to', 'none+out+in': 'to+in', 'from+out': 'both' };
/** A.3.4: an unsubscribed comes in. */
export const IN_UNSUBSCRIBED: TransitionTable = {
  'none+out': 'none', 'none+out+in': 'none+in', 'to': 'none', 'to+in': 'none+in', 'from+out': 'from', 'both': 'from',
};

const TABLES: [string, TransitionTable][] = [
  ['A.2.1 outbound subscribe', OUT_SUBSCRIBE],
  ['A.2.2 outbound unsubscribe', OUT_UNSUBSCRIBE],
  ['A.2.3 outbound subscribed', OUT_SUBSCRIBED],
  ['A.2.4 outbound unsubscribed', OUT_UNSUBSCRIBED],
  ['A.3.1 inbound subscribe', IN_SUBSCRIBE],
  ['A.3.2 inbound unsubscribe', IN_UNSUBSCRIBE],
  ['A.3.3 inbound subscribed', IN_SUBSCRIBED],
  ['A.3.4 inbound unsubscribed', IN_UNSUBSCRIBED],
];

/** Events that take a new pair ('none') to each state. */
const PATHS: Record<SubState, TransitionTable[]> = {
  'none': [],
  'none+out': [OUT_SUBSCRIBE],
  'none+in': [IN_SUBSCRIBE],
  'none+out+in': [OUT_SUBSCRIBE, IN_SUBSCRIBE],
  'to': [OUT_SUBSCRIBE, IN_SUBSCRIBED],
  'to+in': [OUT_SUBSCRIBE, IN_SUBSCRIBED, IN_SUBSCRIBE],
  'from': [IN_SUBSCRIBE, OUT_SUBSCRIBED],
  'from+out': [IN_SUBSCRIBE, OUT_SUBSCRIBED, OUT_SUBSCRIBE],
  'both': [IN_SUBSCRIBE, OUT_SUBSCRIBED, OUT_SUBSCRIBE, IN_SUBSCRIBED],
};

const request = (from: string, id: string) => `<presence from='${from}' to='alice@example.com' type='subscribe' id='${id}'><status>hi\n"there"</status></presence>`;

/** Brings a new pair to `state` through events, checking each step. */
async function reach(t: ExecutionContext, s: RosterStore, user: string, jid: string, state: SubState): Promise<void> {
  for (const [i, table] of PATHS[state].entries()) {
    const r = await s.transition(user, jid, table, { max: BIG, request: request(jid, `setup${i}`) });
    t.is(r.full, undefined);
    t.not(r.after, r.before, `setup step ${i} towards ${state}`);
  }
  t.is(await s.state(user, jid), state);
}

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
  for (const [name, table] of TABLES) {
    test(title(`transition, every state through ${name}`), async (t) => {
      const { store: s } = await open(t);
      for (const [n, state] of SUB_STATES.entries()) {
        const user = `u${n}`;
        const jid = 'contact@x';
        await reach(t, s, user, jid, state);
        // Name and groups must survive: give an existing item some.
        if (await s.item(user, jid)) await s.set(user, { jid, name: 'Contact', groups: ['G'] }, BIG);
        const itemBefore = await s.item(user, jid);
        const versionBefore = (await s.get(user)).version;
        const pendingBefore = await s.pendingRequests(user);

        const r = await s.transition(user, jid, table, { max: BIG, request: request(jid, 'new') });
        const expected = table[state] ?? state;
        const at = `${name}: ${state} -> ${expected}`;
        t.is(r.before, state, at);
        t.is(r.after, expected, at);
        t.is(r.full, undefined, at);
        t.is(await s.state(user, jid), expected, at);

        // The item: as before with the new subscription and ask; a new one is bare.
        const next = splitState(expected);
        const needsItem = itemBefore !== undefined || next.subscription !== 'none' || next.ask !== undefined;
        const itemAfter = await s.item(user, jid);
        const wanted: RosterItem | undefined = needsItem ? {
          jid,
          ...(itemBefore?.name !== undefined ? { name: itemBefore.name } : {}),
          subscription: next.subscription,
          ...(next.ask ? { ask: next.ask } : {}),
          groups: itemBefore?.groups ?? [],
        } : undefined;
        t.deepEqual(itemAfter, wanted, at);
        if (!itemBefore && itemAfter) t.false('name' in itemAfter, `${at}: a created item has no name`);

        // A change (and a new version) exactly when the item's subscription or ask changed.
        const itemChanged = itemBefore?.subscription !== itemAfter?.subscription || itemBefore?.ask !== itemAfter?.ask;
        const { version } = await s.get(user);
        if (itemChanged) {
          t.truthy(r.change, `${at}: a change`);
          t.deepEqual(r.change?.item, itemAfter, at);
          t.is(r.change?.version, version, at);
          t.not(version, versionBefore, `${at}: a new version`);
        } else {
          t.false('change' in r, `${at}: no change`);
          t.is(version, versionBefore, `${at}: the version stays`);
        }

        // The pending request: kept as it came, dropped with '+in', a new one kept.
        const beforeIn = splitState(state).pendingIn;
        const pending = await s.pendingRequests(user);
        if (!next.pendingIn) t.deepEqual(pending, [], at);
        else if (beforeIn) t.deepEqual(pending, pendingBefore, `${at}: the first request stays`);
        else t.deepEqual(pending, [{ jid, stanza: request(jid, 'new') }], `${at}: the new request is kept`);
      }
    });
  }

  test(title('state and pendingRequests of an unknown pair; an item alone is its subscription'), async (t) => {
    const { store: s } = await open(t);
    t.is(await s.state('alice', 'bob@x'), 'none');
    t.deepEqual(await s.pendingRequests('alice'), []);
    await s.set('alice', { jid: 'bob@x', name: 'Bob', groups: [] }, BIG);
    t.is(await s.state('alice', 'bob@x'), 'none');
    for (const [sub, ask, state] of [
      ['none', 'subscribe', 'none+out'], ['to', undefined, 'to'], ['from', undefined, 'from'],
      ['from', 'subscribe', 'from+out'], ['both', undefined, 'both'], ['none', undefined, 'none'],
    ] as const) {
      await s.setSubscription('alice', 'bob@x', sub, ask);
      t.is(await s.state('alice', 'bob@x'), state);
    }
  });

  test(title('transition: a pending request alone is no roster item; the first outbound subscribe creates a bare one'), async (t) => {
    const { store: s } = await open(t);
    const inn = await s.transition('alice', 'bob@x', IN_SUBSCRIBE, { max: BIG, request: 'R1' });
    t.deepEqual(inn, { before: 'none', after: 'none+in' });
    t.deepEqual(await s.get('alice'), { version: EMPTY_VERSION, items: [] }, 'no item, no version');
    t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'bob@x', stanza: 'R1' }]);

    const out = await s.transition('alice', 'carol@x', OUT_SUBSCRIBE, { max: BIG });
    t.is(out.after, 'none+out');
    t.deepEqual(out.change?.item, { jid: 'carol@x', subscription: 'none', ask: 'subscribe', groups: [] });
    t.deepEqual(await s.get('alice'), { version: out.change!.version, items: [out.change!.item] });

    // Without a request stanza, an empty one is kept.
    await s.transition('alice', 'dave@x', IN_SUBSCRIBE, { max: BIG });
    t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'bob@x', stanza: 'R1' }, { jid: 'dave@x', stanza: '' }]);

    // Nothing in the table for this state: nothing written.
    const v = (await s.get('alice')).version;
    t.deepEqual(await s.transition('alice', 'carol@x', OUT_SUBSCRIBED, { max: 0 }), { before: 'none+out', after: 'none+out' });
    t.deepEqual(await s.transition('alice', 'eve@x', {}, { max: 0 }), { before: 'none', after: 'none' });
    t.is((await s.get('alice')).version, v);
    t.is(await s.item('alice', 'eve@x'), undefined);

    await t.throwsAsync(s.transition('alice', 'bob@x', { none: 'nope' as SubState }, { max: BIG }), { instanceOf: TypeError });
    await t.throwsAsync(s.transition('alice', 'bob@x', { 'none+to': 'to' } as TransitionTable, { max: BIG }), { instanceOf: TypeError });
    await t.throwsAsync(s.transition('alice', 'bob@x', IN_SUBSCRIBE, { max: -1 }), { instanceOf: RangeError });
    t.is(await s.state('alice', 'bob@x'), 'none+in', 'refused calls change nothing');
  });

  test(title('transition: full when a new item or a new pending request needs room beyond max; nothing written'), async (t) => {
    const { store: s } = await open(t);
    const max = 2;
    await s.set('alice', { jid: 'a@x', groups: [] }, max);
    await s.set('alice', { jid: 'b@x', groups: [] }, max);
    const version = (await s.get('alice')).version;
    // The roster is full: an event needing a new item is refused ...
    t.deepEqual(await s.transition('alice', 'c@x', OUT_SUBSCRIBE, { max }), { before: 'none', after: 'none', full: 'items' });
    t.is(await s.item('alice', 'c@x'), undefined);
    // ... but a pending request is no item, and existing items still change.
    t.is((await s.transition('alice', 'c@x', IN_SUBSCRIBE, { max, request: 'Rc' })).after, 'none+in');
    t.deepEqual(await s.transition('alice', 'c@x', OUT_SUBSCRIBE, { max }), { before: 'none+in', after: 'none+in', full: 'items' });
    t.deepEqual(await s.transition('alice', 'c@x', OUT_SUBSCRIBED, { max }), { before: 'none+in', after: 'none+in', full: 'items' });
    t.is((await s.get('alice')).version, version, 'refused: the version stays');
    t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'c@x', stanza: 'Rc' }], 'refused: the request stays');
    const a = await s.transition('alice', 'a@x', OUT_SUBSCRIBE, { max });
    t.is(a.after, 'none+out');
    t.truthy(a.change);

    // The pending list is full: a new request from a stranger is refused, other events are not.
    t.is((await s.transition('alice', 'e@x', IN_SUBSCRIBE, { max, request: 'Re' })).after, 'none+in');
    t.deepEqual(await s.transition('alice', 'f@x', IN_SUBSCRIBE, { max, request: 'Rf' }), { before: 'none', after: 'none', full: 'pending' });
    t.deepEqual(await s.transition('alice', 'd@x', IN_SUBSCRIBE, { max: 0, request: 'Rd' }), { before: 'none', after: 'none', full: 'pending' });
    // A contact already in the roster is no stranger: let in beyond the limit.
    t.is((await s.transition('alice', 'a@x', IN_SUBSCRIBE, { max, request: 'Ra' })).after, 'none+out+in');
    const sub = await s.transition('alice', 'a@x', IN_SUBSCRIBED, { max }); // none+out+in -> to+in, the request stays
    t.is(sub.after, 'to+in');
    t.is(sub.change?.item.subscription, 'to');
    t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'c@x', stanza: 'Rc' }, { jid: 'e@x', stanza: 'Re' }, { jid: 'a@x', stanza: 'Ra' }]);
    // Answering one makes room.
    t.is((await s.transition('alice', 'c@x', OUT_UNSUBSCRIBED, { max })).after, 'none');
    t.deepEqual(await s.transition('alice', 'f@x', IN_SUBSCRIBE, { max, request: 'Rf' }), { before: 'none', after: 'none', full: 'pending' }, 'three pending, one of them a contact: still full for strangers');
    t.is((await s.transition('alice', 'e@x', OUT_UNSUBSCRIBED, { max })).after, 'none');
    t.is((await s.transition('alice', 'f@x', IN_SUBSCRIBE, { max, request: 'Rf' })).after, 'none+in');
    t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'a@x', stanza: 'Ra' }, { jid: 'f@x', stanza: 'Rf' }]);
    t.is(await s.state('alice', 'f@x'), 'none+in');
    t.is(await s.state('alice', 'd@x'), 'none');
  });

  test(title('transition: maxPending bounds pending requests apart from max, and maxOutgoing the requests a user has sent'), async (t) => {
    const { store: s } = await open(t);
    t.is((await s.transition('bob', 'p1@x', IN_SUBSCRIBE, { max: BIG, maxPending: 1, request: 'R1' })).after, 'none+in');
    t.deepEqual(await s.transition('bob', 'p2@x', IN_SUBSCRIBE, { max: BIG, maxPending: 1, request: 'R2' }), { before: 'none', after: 'none', full: 'pending' });
    t.is((await s.transition('bob', 'p2@x', IN_SUBSCRIBE, { max: BIG, maxPending: 2, request: 'R2' })).after, 'none+in');

    // Outgoing: items with ask (none+out, from+out) count; an answered one does not.
    const out = { max: BIG, maxOutgoing: 2 };
    t.is((await s.transition('carol', 'o1@x', OUT_SUBSCRIBE, out)).after, 'none+out');
    t.is((await s.transition('carol', 'o2@x', OUT_SUBSCRIBE, out)).after, 'none+out');
    t.deepEqual(await s.transition('carol', 'o3@x', OUT_SUBSCRIBE, out), { before: 'none', after: 'none', full: 'outgoing' });
    t.is(await s.item('carol', 'o3@x'), undefined, 'refused: no item was made');
    t.deepEqual(await s.transition('carol', 'o1@x', OUT_SUBSCRIBE, out), { before: 'none+out', after: 'none+out' }, 'asking again is no new request');
    t.is((await s.transition('carol', 'o1@x', IN_SUBSCRIBED, out)).after, 'to', 'o1 approved');
    t.is((await s.transition('carol', 'o3@x', OUT_SUBSCRIBE, out)).after, 'none+out', 'room again');
    // A contact with 'from' asking back counts too (from+out).
    await s.transition('carol', 'o4@x', IN_SUBSCRIBE, { max: BIG, request: 'R4' });
    t.is((await s.transition('carol', 'o4@x', OUT_SUBSCRIBED, out)).after, 'from');
    t.deepEqual(await s.transition('carol', 'o4@x', OUT_SUBSCRIBE, out), { before: 'from', after: 'from', full: 'outgoing' });
    await t.throwsAsync(s.transition('carol', 'o5@x', OUT_SUBSCRIBE, { max: BIG, maxOutgoing: -1 }), { instanceOf: RangeError });
    await t.throwsAsync(s.transition('carol', 'o5@x', IN_SUBSCRIBE, { max: BIG, maxPending: 1.5 }), { instanceOf: RangeError });
  });

  test(title('set: the items of a roster may take at most maxBytes (JIDs, names, groups); an update counts its new size only'), async (t) => {
    const { store: s } = await open(t);
    const small = await s.set('dave', { jid: 'a@x', name: 'A', groups: ['G'] }, BIG, 1000);
    t.is(small.item.name, 'A');
    const version = (await s.get('dave')).version;
    await t.throwsAsync(s.set('dave', { jid: 'b@x', name: 'é'.repeat(490), groups: [] }, BIG, 1000), { instanceOf: RosterTooLargeError }, 'UTF-8 bytes are counted');
    t.is(await s.item('dave', 'b@x'), undefined);
    t.is((await s.get('dave')).version, version, 'refused: the version stays');
    await s.set('dave', { jid: 'b@x', name: 'b'.repeat(400), groups: [] }, BIG, 1000);
    await t.throwsAsync(s.set('dave', { jid: 'b@x', name: 'b'.repeat(400), groups: ['g'.repeat(600)] }, BIG, 1000), { instanceOf: RosterTooLargeError });
    await s.set('dave', { jid: 'b@x', name: 'b', groups: ['g'.repeat(500)] }, BIG, 1000); // replacing its old size
    await t.throwsAsync(s.set('dave', { jid: 'a@x', name: 'a'.repeat(600), groups: [] }, BIG, 1000), { instanceOf: RosterTooLargeError });
    t.is((await s.item('dave', 'a@x'))?.name, 'A');
    await s.remove('dave', 'b@x');
    await s.set('dave', { jid: 'a@x', name: 'a'.repeat(600), groups: [] }, BIG, 1000);
  });

  test(title('pending requests come in arrival order, per user; a repeated request keeps the first'), async (t) => {
    const { store: s } = await open(t);
    for (const jid of ['c@x', 'a@x', '\u{1F600}@x', 'b@x']) await s.transition('alice', jid, IN_SUBSCRIBE, { max: BIG, request: request(jid, '1') });
    await s.transition('bob', 'z@x', IN_SUBSCRIBE, { max: BIG, request: 'for bob' });
    t.deepEqual((await s.pendingRequests('alice')).map((p) => p.jid), ['c@x', 'a@x', '\u{1F600}@x', 'b@x']);
    // A second subscribe from c@x changes nothing.
    t.deepEqual(await s.transition('alice', 'c@x', IN_SUBSCRIBE, { max: BIG, request: request('c@x', '2') }), { before: 'none+in', after: 'none+in' });
    // a@x is denied, then asks again: now the last.
    await s.transition('alice', 'a@x', OUT_UNSUBSCRIBED, { max: BIG });
    await s.transition('alice', 'a@x', IN_SUBSCRIBE, { max: BIG, request: request('a@x', '2') });
    t.deepEqual(await s.pendingRequests('alice'), [
      { jid: 'c@x', stanza: request('c@x', '1') },
      { jid: '\u{1F600}@x', stanza: request('\u{1F600}@x', '1') },
      { jid: 'b@x', stanza: request('b@x', '1') },
      { jid: 'a@x', stanza: request('a@x', '2') },
    ]);
    t.deepEqual(await s.pendingRequests('bob'), [{ jid: 'z@x', stanza: 'for bob' }]);
    // Withdrawn (inbound unsubscribe) and approved requests are gone.
    await s.transition('alice', 'b@x', IN_UNSUBSCRIBE, { max: BIG });
    await s.transition('alice', 'c@x', OUT_SUBSCRIBED, { max: BIG });
    t.deepEqual((await s.pendingRequests('alice')).map((p) => p.jid), ['\u{1F600}@x', 'a@x']);
    t.is(await s.state('alice', 'c@x'), 'from');
  });

  test(title('remove drops the contact\'s pending request; removeAll drops them all'), async (t) => {
    const { store: s, another } = await open(t);
    await reach(t, s, 'alice', 'bob@x', 'to+in');
    await reach(t, s, 'alice', 'carol@x', 'none+in');
    await reach(t, s, 'alice', 'dave@x', 'none+out+in');
    await reach(t, s, 'zoe', 'bob@x', 'none+in');
    const r = await s.remove('alice', 'bob@x');
    t.is(r?.item.subscription, 'to');
    t.is(await s.state('alice', 'bob@x'), 'none');
    t.deepEqual((await s.pendingRequests('alice')).map((p) => p.jid), ['carol@x', 'dave@x']);
    // A contact with only a pending request: no item, no version change, but the request goes.
    const { version } = await s.get('alice');
    t.is(await s.remove('alice', 'carol@x'), undefined);
    t.is((await s.get('alice')).version, version);
    t.deepEqual((await s.pendingRequests('alice')).map((p) => p.jid), ['dave@x']);
    // A new request after remove is a fresh start.
    t.is((await s.transition('alice', 'bob@x', IN_SUBSCRIBE, { max: BIG, request: 'again' })).after, 'none+in');
    const b = await another();
    await b.removeAll('alice');
    t.deepEqual(await s.pendingRequests('alice'), []);
    t.deepEqual(await s.get('alice'), { version: EMPTY_VERSION, items: [] });
    for (const jid of ['bob@x', 'carol@x', 'dave@x']) t.is(await s.state('alice', jid), 'none');
    t.deepEqual(await s.pendingRequests('zoe'), [{ jid: 'bob@x', stanza: request('bob@x', 'setup0') }], 'other users keep theirs');
    t.is((await s.transition('alice', 'dave@x', IN_SUBSCRIBE, { max: 1, request: 'new' })).after, 'none+in');
    t.deepEqual(await s.pendingRequests('alice'), [{ jid: 'dave@x', stanza: 'new' }]);
  });

  test(title('transitions on one pair from two instances at once end as some serial order would'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const n = 20;
    // Each instance sends its events in order: subscribe in, then subscribed out, n times over.
    // Serially: the first inbound subscribe makes none+in, the next outbound subscribed makes
    // 'from' (creating the item), and nothing changes after that.
    const calls: Promise<TransitionResult>[] = [];
    for (let i = 0; i < n; i++) {
      const s = i % 2 ? a : b;
      calls.push(s.transition('alice', 'bob@x', IN_SUBSCRIBE, { max: BIG, request: `R${i}` }));
      calls.push(s.transition('alice', 'bob@x', OUT_SUBSCRIBED, { max: BIG }));
    }
    const results = await Promise.all(calls);
    t.is(await a.state('alice', 'bob@x'), 'from');
    const moved = results.filter((r) => r.after !== r.before);
    t.deepEqual(moved.map((r) => `${r.before}>${r.after}`), ['none>none+in', 'none+in>from']);
    t.true(results.every((r) => r.full === undefined));
    const changes = results.filter((r) => r.change);
    t.is(changes.length, 1, 'exactly one change');
    t.deepEqual(changes[0]!.change!.item, { jid: 'bob@x', subscription: 'from', groups: [] });
    t.deepEqual(await b.get('alice'), { version: changes[0]!.change!.version, items: [changes[0]!.change!.item] });
    t.deepEqual(await b.pendingRequests('alice'), []);

    // Many new contacts at once: the limits hold exactly, for items and for requests.
    const max = 5;
    const jids = Array.from({ length: 16 }, (_, i) => `c${String(i).padStart(2, '0')}@x`);
    const outs = await Promise.all(jids.map((jid, i) => (i % 2 ? a : b).transition('carol', jid, OUT_SUBSCRIBE, { max })));
    t.is(outs.filter((r) => r.after === 'none+out').length, max);
    t.is(outs.filter((r) => r.full === 'items').length, jids.length - max);
    t.is((await a.get('carol')).items.length, max);
    t.is(new Set(outs.filter((r) => r.change).map((r) => r.change!.version)).size, max, 'a version per change');
    const ins = await Promise.all(jids.map((jid, i) => (i % 2 ? a : b).transition('dave', jid, IN_SUBSCRIBE, { max, request: jid })));
    const accepted = ins.flatMap((r, i) => (r.after === 'none+in' ? [jids[i]!] : []));
    t.is(accepted.length, max);
    t.deepEqual((await b.pendingRequests('dave')).map((p) => p.jid).sort(), accepted.sort());
    t.deepEqual(await b.get('dave'), { version: EMPTY_VERSION, items: [] });
  });
}
