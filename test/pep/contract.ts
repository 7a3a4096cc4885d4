// The PEP store's contract (pep/store.ts), run against every backend:
// SQLite (sqlite.test.ts) and PostgreSQL (postgres.test.ts).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { type PepStore, type StoredItem, DEFAULT_CONFIG, MAX_ITEMS } from '../../src/pep/store.ts';

export type OpenPep = (t: ExecutionContext) => Promise<PepStore>;

const item = (id: string, text = id) => ({ id, xml: `<x xmlns="urn:t">${text}</x>` });
const ids = (items: { id: string }[]) => items.map((i) => i.id);
/** Items as published (id and payload), without the time the store adds. */
const plain = (items: { id: string; xml: string }[]) => items.map((i) => ({ id: i.id, xml: i.xml }));
/** Subscription bounds with this many per node, and room enough otherwise. */
const per = (perNode: number) => ({ perNode, perBareOnNode: 10, perBare: 100 });

/**
 * A store just upgraded from before items had a publish time (SQLite at
 * open, PostgreSQL by migration 13), whose node 'n' of alice held items 'a'
 * and 'b': both kept in order, dated between `before` and `after` (the
 * upgrade); a new publish dated its own. Returns the items as read.
 */
export async function upgradedItems(t: ExecutionContext, store: PepStore, before: number, after: number): Promise<StoredItem[]> {
  const items = await store.items('alice', 'n');
  t.deepEqual(items.map((i) => i.id), ['a', 'b'], 'kept, in order');
  for (const i of items) t.true(i.published >= before && i.published <= after, `${i.id}: published ${i.published}, not within ${before}..${after}`);
  await store.publish('alice', 'n', { id: 'c', xml: '<x xmlns="urn:t">c</x>' }, DEFAULT_CONFIG, 10, { at: 1_700_000_000_000 });
  t.like(await store.last('alice', 'n'), { id: 'c', published: 1_700_000_000_000 });
  return items;
}

export function pepStoreContract(label: string, open: OpenPep): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('a publish creates the node with the given configuration; items by id, newest max, in publish order'), async (t) => {
    const s = await open(t);
    t.is(await s.config('alice', 'n'), undefined);
    const cfg = { ...DEFAULT_CONFIG, maxItems: 3, accessModel: 'open' as const, rosterGroups: ['Friends'] };
    t.like(await s.publish('alice', 'n', item('a'), cfg, 10), { created: true, config: cfg });
    // A later publish keeps the node's configuration, not the one offered for creation.
    t.like(await s.publish('alice', 'n', item('b'), DEFAULT_CONFIG, 10), { created: false, config: cfg });
    await s.publish('alice', 'n', item('c'), DEFAULT_CONFIG, 10);
    t.deepEqual(ids(await s.items('alice', 'n')), ['a', 'b', 'c']);
    // Republishing an id replaces it, and it becomes the newest.
    await s.publish('alice', 'n', item('a', 'again'), DEFAULT_CONFIG, 10);
    t.deepEqual(plain(await s.items('alice', 'n')), [item('b'), item('c'), item('a', 'again')]);
    await s.publish('alice', 'n', item('d'), DEFAULT_CONFIG, 10);
    t.deepEqual(ids(await s.items('alice', 'n')), ['c', 'a', 'd'], 'the oldest goes beyond max_items');
    t.deepEqual(ids(await s.items('alice', 'n', { max: 2 })), ['a', 'd']);
    t.deepEqual(ids(await s.items('alice', 'n', { ids: ['d', 'zz', 'c'] })), ['d', 'c']);
    t.deepEqual(await s.items('bob', 'n'), [], "another account's is its own");
    t.deepEqual(await s.nodes('alice'), [{ node: 'n', config: cfg }]);
  });

  test(title('each publish is numbered (seq): the newest item and its publish read back by last(); a republish of the same id and payload is another publish'), async (t) => {
    const s = await open(t);
    t.is(await s.last('alice', 'n'), undefined, 'no node');
    const keep = { ...DEFAULT_CONFIG, maxItems: 5 };
    const a = await s.publish('alice', 'n', item('a'), keep, 10);
    t.like(await s.last('alice', 'n'), { ...item('a'), seq: a.seq });
    const b = await s.publish('alice', 'n', item('b'), keep, 10);
    t.like(await s.last('alice', 'n'), { ...item('b'), seq: b.seq });
    const again = await s.publish('alice', 'n', item('a'), keep, 10);
    t.not(again.seq, a.seq, 'the same item published again: another publish');
    t.like(await s.last('alice', 'n'), { ...item('a'), seq: again.seq });
    const other = await s.publish('bob', 'n', item('a'), keep, 10);
    t.true(new Set([a.seq, b.seq, again.seq, other.seq]).size === 4, 'unique across accounts and nodes');
    await s.retract('alice', 'n', ['a']);
    t.like(await s.last('alice', 'n'), { ...item('b'), seq: b.seq }, 'the newest left');
    await s.purge('alice', 'n');
    t.is(await s.last('alice', 'n'), undefined, 'none left');
    const c = await s.publish('alice', 'n', item('c'), keep, 10);
    t.false([a.seq, b.seq, again.seq].includes(c.seq), 'never one used before');
  });

  test(title('each item keeps when it was published (ms): now, or the time the publish gives; a republish of its id takes the new time; items() and last() read it'), async (t) => {
    const s = await open(t);
    const keep = { ...DEFAULT_CONFIG, maxItems: 5 };
    const before = Date.now();
    await s.publish('alice', 'n', item('a'), keep, 10);
    const after = Date.now();
    const [a] = await s.items('alice', 'n');
    t.true(a.published >= before && a.published <= after, `published ${a.published}, not within ${before}..${after}`);
    t.is((await s.last('alice', 'n'))?.published, a.published);
    // Times past 2^32 ms (any date since 1970-02-19) and ordered as given, not as written.
    await s.publish('alice', 'n', item('b'), keep, 10, { at: 1_700_000_000_123 });
    t.like(await s.last('alice', 'n'), { id: 'b', published: 1_700_000_000_123 });
    await s.publish('alice', 'n', item('a', 'again'), keep, 10, { at: 1_700_000_000_456 });
    const times = (items: { id: string; published: number }[]) => items.map((i) => [i.id, i.published]);
    t.deepEqual(times(await s.items('alice', 'n')), [['b', 1_700_000_000_123], ['a', 1_700_000_000_456]], 'the republished id: the newest, with its new time');
    t.deepEqual(times(await s.items('alice', 'n', { ids: ['a', 'b'] })), [['a', 1_700_000_000_456], ['b', 1_700_000_000_123]]);
    t.deepEqual(times(await s.items('alice', 'n', { max: 1 })), [['a', 1_700_000_000_456]]);
    t.like(await s.last('alice', 'n'), { id: 'a', xml: item('a', 'again').xml, published: 1_700_000_000_456 });
  });

  test(title('publish with required options (XEP-0060 §7.1.5): checked against the node as the publish finds it; refused whole, or the node created with its configuration'), async (t) => {
    const s = await open(t);
    const open_ = { ...DEFAULT_CONFIG, accessModel: 'open' as const, maxItems: 5 };
    // A new node: created with the configuration given (which the options made).
    t.like(await s.publish('alice', 'n', item('a'), open_, 10, { require: { accessModel: 'open', maxItems: 5 } }), { created: true, config: open_ });
    t.like(await s.publish('alice', 'n', item('b'), DEFAULT_CONFIG, 10, { require: { accessModel: 'open' } }), { created: false, config: open_ }, 'options that hold');
    // Configured otherwise since: the same options are refused, and nothing is written.
    t.true(await s.configure('alice', 'n', { ...open_, accessModel: 'whitelist', rosterGroups: ['A', 'B'] }));
    await t.throwsAsync(s.publish('alice', 'n', item('c'), open_, 10, { require: { accessModel: 'open' } }), { name: 'PepPreconditionError' });
    t.deepEqual(ids(await s.items('alice', 'n')), ['a', 'b'], 'nothing published');
    await t.throwsAsync(s.publish('alice', 'n', item('c'), open_, 10, { require: { rosterGroups: ['B', 'A'] } }), { name: 'PepPreconditionError' });
    await s.publish('alice', 'n', item('c'), open_, 10, { require: { accessModel: 'whitelist', rosterGroups: ['A', 'B'], maxItems: 5 } });
    t.deepEqual(ids(await s.items('alice', 'n')), ['a', 'b', 'c']);
    // A publish and a configure at once: whichever comes first, the publish is checked against what it writes to.
    const racing = await Promise.allSettled([s.configure('alice', 'n', open_), s.publish('alice', 'n', item('d'), open_, 10, { require: { accessModel: 'whitelist' } })]);
    const published = racing[1].status === 'fulfilled';
    t.is(ids(await s.items('alice', 'n')).includes('d'), published);
    if (published) t.is(((racing[1] as PromiseFulfilledResult<{ config: { accessModel: string } }>).value.config.accessModel), 'whitelist', 'published to the node as it was then');
  });

  test(title("the bytes of an account's items are bounded (maxBytes): a publish past it is refused whole; what is replaced or trimmed no longer counts"), async (t) => {
    const s = await open(t);
    const big = (id: string) => ({ id, xml: `<x xmlns="urn:t">${'é'.repeat(100)}</x>` }); // 221 bytes in UTF-8
    const keep = { ...DEFAULT_CONFIG, maxItems: 10 };
    await s.publish('alice', 'n', big('a'), keep, 10, { maxBytes: 500 });
    await s.publish('alice', 'm', big('b'), keep, 10, { maxBytes: 500 });
    // A third would make 663 bytes, on a node of its own: neither the item nor the node stays.
    await t.throwsAsync(s.publish('alice', 'o', big('c'), keep, 10, { maxBytes: 500 }), { name: 'PepQuotaError' });
    t.is(await s.config('alice', 'o'), undefined);
    // The same id again replaces: still 442.
    await s.publish('alice', 'n', big('a'), keep, 10, { maxBytes: 500 });
    const err = await t.throwsAsync(s.publish('alice', 'n', big('c'), keep, 10, { maxBytes: 500 }));
    t.is(err?.name, 'PepQuotaError');
    t.is((err as Error & { maxBytes: number }).maxBytes, 500);
    t.deepEqual(ids(await s.items('alice', 'n')), ['a']);
    // A node that keeps one item: its older one is trimmed in the same publish.
    await s.publish('alice', 'one', big('x'), DEFAULT_CONFIG, 10, { maxBytes: 700 });
    await s.publish('alice', 'one', big('y'), DEFAULT_CONFIG, 10, { maxBytes: 700 });
    t.deepEqual(ids(await s.items('alice', 'one')), ['y']);
    await s.publish('bob', 'n', big('a'), keep, 10, { maxBytes: 300 });
    t.pass('the bound is per account');
  });

  test(title('nodes per account are bounded; create says whether it made the node'), async (t) => {
    const s = await open(t);
    t.true(await s.create('alice', 'one', DEFAULT_CONFIG, 2));
    t.false(await s.create('alice', 'one', DEFAULT_CONFIG, 2));
    await s.publish('alice', 'two', item('x'), DEFAULT_CONFIG, 2);
    const err = await t.throwsAsync(s.publish('alice', 'three', item('x'), DEFAULT_CONFIG, 2));
    t.is(err?.name, 'PepNodesFullError');
    t.is((err as Error & { max: number }).max, 2);
    t.is(await s.config('alice', 'three'), undefined, 'nothing made');
    await t.throwsAsync(s.create('alice', 'three', DEFAULT_CONFIG, 2), { name: 'PepNodesFullError' });
    await s.publish('alice', 'two', item('y'), DEFAULT_CONFIG, 2);
    t.true(await s.create('bob', 'three', DEFAULT_CONFIG, 2), 'the bound is per account');
    t.deepEqual((await s.nodes('alice')).map((n) => n.node), ['one', 'two']);
  });

  test(title('configure trims to the new bound; items that do not persist keep only the last published'), async (t) => {
    const s = await open(t);
    t.false(await s.configure('alice', 'n', DEFAULT_CONFIG));
    const big = { ...DEFAULT_CONFIG, maxItems: MAX_ITEMS };
    for (const id of ['a', 'b', 'c', 'd']) await s.publish('alice', 'n', item(id), big, 10);
    t.true(await s.configure('alice', 'n', { ...big, maxItems: 2 }));
    t.deepEqual(ids(await s.items('alice', 'n')), ['c', 'd']);
    t.is((await s.config('alice', 'n'))?.maxItems, 2);
    t.true(await s.configure('alice', 'n', { ...big, persistItems: false }));
    t.deepEqual(ids(await s.items('alice', 'n')), ['d']);
    await s.publish('alice', 'n', item('e'), big, 10);
    t.deepEqual(ids(await s.items('alice', 'n')), ['e']);
  });

  test(title('retract, purge, remove a node, remove everything of an account'), async (t) => {
    const s = await open(t);
    const cfg = { ...DEFAULT_CONFIG, maxItems: 10 };
    for (const id of ['a', 'b', 'c']) await s.publish('alice', 'n', item(id), cfg, 10);
    await s.publish('alice', 'm', item('z'), cfg, 10);
    await s.publish('bob', 'n', item('a'), cfg, 10);
    t.deepEqual(await s.retract('alice', 'n', ['b', 'nope']), ['b']);
    t.deepEqual(ids(await s.items('alice', 'n')), ['a', 'c']);
    t.true(await s.purge('alice', 'n'));
    t.false(await s.purge('alice', 'none'));
    t.deepEqual(await s.items('alice', 'n'), []);
    t.truthy(await s.config('alice', 'n'), 'a purged node is still there');
    t.true(await s.remove('alice', 'n'));
    t.false(await s.remove('alice', 'n'));
    t.is(await s.config('alice', 'n'), undefined);
    await s.removeAll('alice');
    t.deepEqual(await s.nodes('alice'), []);
    t.deepEqual(await s.items('alice', 'm'), []);
    t.deepEqual(ids(await s.items('bob', 'n')), ['a'], "others' stay");
  });

  test(title('affiliations and subscriptions: set, list, one per JID, bounded, gone with their node and with forget'), async (t) => {
    const s = await open(t);
    const svc = '@pubsub.example.com';
    t.false(await s.setAffiliation(svc, 'n', 'alice@example.com', 'owner'), 'no node, no affiliation');
    t.is(await s.subscribe(svc, 'n', 'bob@example.com', 's0', per(10)), 'no-node');
    await s.create(svc, 'n', DEFAULT_CONFIG, 10);
    await s.create(svc, 'm', DEFAULT_CONFIG, 10);
    t.true(await s.setAffiliation(svc, 'n', 'alice@example.com', 'owner'));
    t.true(await s.setAffiliation(svc, 'n', 'bob@example.com', 'member'));
    t.true(await s.setAffiliation(svc, 'n', 'bob@example.com', 'publisher'));
    t.true(await s.setAffiliation(svc, 'm', 'bob@example.com', 'outcast'));
    t.deepEqual(await s.affiliations(svc, 'n'), [{ jid: 'alice@example.com', affiliation: 'owner' }, { jid: 'bob@example.com', affiliation: 'publisher' }]);
    t.deepEqual(await s.affiliationsOf(svc, 'bob@example.com'), [{ node: 'm', affiliation: 'outcast' }, { node: 'n', affiliation: 'publisher' }]);
    t.true(await s.setAffiliation(svc, 'm', 'bob@example.com', 'none'));
    t.deepEqual(await s.affiliations(svc, 'm'), []);

    t.deepEqual(await s.subscribe(svc, 'n', 'bob@example.com', 's1', per(2)), { node: 'n', jid: 'bob@example.com', subid: 's1' });
    t.deepEqual(await s.subscribe(svc, 'n', 'bob@example.com', 's2', per(2)), { node: 'n', jid: 'bob@example.com', subid: 's1' }, 'subscribed already: the same subscription');
    t.deepEqual(await s.subscribe(svc, 'n', 'bob@example.com/phone', 's3', per(2)), { node: 'n', jid: 'bob@example.com/phone', subid: 's3' });
    t.is(await s.subscribe(svc, 'n', 'carol@example.com', 's4', per(2)), 'full');
    await s.subscribe(svc, 'm', 'bobby@example.com', 's5', per(2));
    await s.subscribe(svc, 'm', 'bob@example.com', 's6', per(2));
    t.deepEqual((await s.subscriptions(svc, 'n')).map((x) => x.jid), ['bob@example.com', 'bob@example.com/phone']);
    t.deepEqual((await s.subscriptionsOf(svc, 'bob@example.com')).map((x) => x.subid), ['s1', 's3', 's6'], "a bare JID's and its full JIDs', not bobby's");
    t.true(await s.unsubscribe(svc, 'n', 'bob@example.com/phone'));
    t.false(await s.unsubscribe(svc, 'n', 'bob@example.com/phone'));

    await s.forget('bob@example.com');
    t.deepEqual(await s.subscriptionsOf(svc, 'bob@example.com'), []);
    t.deepEqual(await s.affiliationsOf(svc, 'bob@example.com'), []);
    t.deepEqual((await s.subscriptions(svc, 'm')).map((x) => x.jid), ['bobby@example.com']);
    t.deepEqual(await s.affiliations(svc, 'n'), [{ jid: 'alice@example.com', affiliation: 'owner' }]);

    t.true(await s.remove(svc, 'm'));
    await s.create(svc, 'm', DEFAULT_CONFIG, 10);
    t.deepEqual(await s.subscriptions(svc, 'm'), [], "a node made again has none of the old node's subscriptions");
    await s.removeAll(svc);
    t.deepEqual(await s.affiliationsOf(svc, 'alice@example.com'), []);
  });

  test(title('a pubsub service: the creator owns a node from its creation, within its bound; affiliations changed all or none, bounded, never ownerless; subscriptions bounded per bare JID; bytes per node; a sole owner forgotten takes its nodes along'), async (t) => {
    const s = await open(t);
    const svc = '@pubsub.example.org';
    const alice = { jid: 'alice@example.org', maxOwned: 2 };
    t.true(await s.create(svc, 'a1', DEFAULT_CONFIG, 10, alice));
    t.deepEqual(await s.affiliations(svc, 'a1'), [{ jid: 'alice@example.org', affiliation: 'owner' }]);
    t.false(await s.create(svc, 'a1', DEFAULT_CONFIG, 10, alice), 'exists: nothing made');
    t.true(await s.create(svc, 'a2', DEFAULT_CONFIG, 10, alice));
    const full = await t.throwsAsync(s.create(svc, 'a3', DEFAULT_CONFIG, 10, alice));
    t.is(full?.name, 'PepOwnedFullError');
    t.is(await s.config(svc, 'a3'), undefined);

    t.true(await s.setAffiliations(svc, 'a1', [{ jid: 'bob@example.org', affiliation: 'member' }, { jid: 'carol@example.org', affiliation: 'publisher' }], { max: 3, keepOwner: true }));
    const over = await t.throwsAsync(s.setAffiliations(svc, 'a1', [{ jid: 'dave@example.org', affiliation: 'member' }, { jid: 'erin@example.org', affiliation: 'member' }], { max: 3, keepOwner: true }));
    t.is(over?.name, 'PepAffiliationsFullError');
    const ownerless = await t.throwsAsync(s.setAffiliations(svc, 'a1', [{ jid: 'alice@example.org', affiliation: 'none' }, { jid: 'bob@example.org', affiliation: 'none' }], { max: 3, keepOwner: true }));
    t.is(ownerless?.name, 'PepOwnerlessError');
    t.deepEqual((await s.affiliations(svc, 'a1')).map((a) => a.jid), ['alice@example.org', 'bob@example.org', 'carol@example.org'], 'nothing changed by a refused request');
    t.false(await s.setAffiliations(svc, 'none', [], { max: 3, keepOwner: true }));

    const bounds = { perNode: 10, perBareOnNode: 2, perBare: 3 };
    t.not(await s.subscribe(svc, 'a1', 'eve@evil.example/1', 'x1', bounds), 'full');
    t.not(await s.subscribe(svc, 'a1', 'eve@evil.example/2', 'x2', bounds), 'full');
    t.is(await s.subscribe(svc, 'a1', 'eve@evil.example/3', 'x3', bounds), 'full', 'per bare JID on a node');
    t.not(await s.subscribe(svc, 'a2', 'eve@evil.example', 'x4', bounds), 'full');
    t.is(await s.subscribe(svc, 'a2', 'eve@evil.example/5', 'x5', bounds), 'full', 'per bare JID on the service');

    const big = { id: 'big', xml: `<x xmlns="urn:t">${'y'.repeat(100)}</x>` };
    const cfg = { ...DEFAULT_CONFIG, maxItems: 10 };
    await s.publish(svc, 'bytes', big, cfg, 10, { maxNodeBytes: 300 });
    await s.publish(svc, 'bytes', { ...big, id: 'big2' }, cfg, 10, { maxNodeBytes: 300 });
    const q = await t.throwsAsync(s.publish(svc, 'bytes', { ...big, id: 'big3' }, cfg, 10, { maxNodeBytes: 300 }));
    t.is(q?.name, 'PepQuotaError');
    t.deepEqual(ids(await s.items(svc, 'bytes')), ['big', 'big2'], 'nothing written past the bound');
    await s.publish(svc, 'a2', big, DEFAULT_CONFIG, 10);

    // carol co-owns a1; alice alone owns a2: forgetting alice keeps a1 (carol's), removes a2.
    await s.setAffiliations(svc, 'a1', [{ jid: 'carol@example.org', affiliation: 'owner' }], { max: 10, keepOwner: true });
    await s.forget('alice@example.org');
    t.truthy(await s.config(svc, 'a1'));
    t.is(await s.config(svc, 'a2'), undefined, 'a node nobody owns any more is gone');
    t.deepEqual(await s.items(svc, 'a2'), []);
  });
}
