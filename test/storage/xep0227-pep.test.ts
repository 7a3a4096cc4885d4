// XEP-0227 import of PEP nodes and of blocklists (written as privacy
// lists), on the stores directly: what is kept of a configuration, which
// items a node keeps, its whitelist, what fits the account's byte bound, what of a default privacy list becomes the blocklist,
// what is said, and the input refused (nothing written) past the bounds.
// Over XMPP, with the files Prosody and ejabberd wrote and round trips on
// both backends: xep0227.test.ts.
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { SqliteArchiveStore } from '../../src/mam/sqlite.ts';
import { SqlitePersonalStore } from '../../src/personal/sqlite.ts';
import { SqlitePepStore } from '../../src/pep/sqlite.ts';
import { SqliteBlockStore } from '../../src/blocking/sqlite.ts';
import { importFiles, type ImportOptions, type Xep0227Stores } from '../../src/storage/xep0227.ts';
import { DEFAULT_CONFIG, MAX_ACCOUNT_BYTES, MAX_ITEM_BYTES, MAX_ITEMS, MAX_NODES } from '../../src/pep/store.ts';
import { MAX_BLOCKED } from '../../src/blocking/store.ts';
import { MAX_WHITELIST } from '../../src/modules/pep.ts';

const SCRAM = "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</server-key><stored-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</stored-key></scram-credentials>";
const doc = (user: string) => `<server-data xmlns='urn:xmpp:pie:0'><host jid='capulet.lit'><user name='juliet'>${SCRAM}${user}</user></host></server-data>`;
const OPTS: ImportOptions = { domain: 'capulet.lit', iterations: 4096, maxRosterItems: 100, maxOfflineMessages: 100, maxOfflineBytes: 1 << 20 };

interface Fixture {
  stores: Xep0227Stores;
  /** Writes the document and imports it. */
  run(text: string, opts?: Partial<ImportOptions>): ReturnType<typeof importFiles>;
}

function fixture(t: ExecutionContext): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'xep0227-pep-'));
  const stores = {
    accounts: SqliteAccountStore.open(join(dir, 'accounts.sqlite'), 4096),
    roster: SqliteRosterStore.open(join(dir, 'roster.sqlite')),
    offline: SqliteOfflineStore.open(join(dir, 'offline.sqlite')),
    archive: SqliteArchiveStore.open(join(dir, 'archive.sqlite')),
    personal: SqlitePersonalStore.open(join(dir, 'personal.sqlite')),
    pep: SqlitePepStore.open(join(dir, 'pep.sqlite')),
    blocking: SqliteBlockStore.open(join(dir, 'blocklist.sqlite')),
  };
  t.teardown(() => {
    for (const s of Object.values(stores)) s.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'in.xml');
  return {
    stores,
    run(text, opts = {}) {
      writeFileSync(file, text);
      return importFiles([file], stores, { ...OPTS, ...opts });
    },
  };
}

const configure = (node: string, fields: Record<string, string[]>) =>
  `<configure node='${node}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>${Object.entries(fields).map(([k, vs]) => `<field var='${k}'>${vs.map((v) => `<value>${v}</value>`).join('')}</field>`).join('')}</x></configure>`;
const owner = (inner: string) => `<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>${inner}</pubsub>`;
const pubsub = (inner: string) => `<pubsub xmlns='http://jabber.org/protocol/pubsub'>${inner}</pubsub>`;
const note = (n: number | string) => `<note xmlns='urn:example:notes'>${n}</note>`;

test('PEP: what a configuration keeps, which items each node keeps, and what is said', async (t) => {
  const f = fixture(t);
  const big = `<data xmlns='urn:xmpp:avatar:data'>${'A'.repeat(MAX_ITEM_BYTES)}</data>`;
  const lo = Date.now();
  const r = await f.run(doc(
    owner(
      configure('urn:example:asked', { 'pubsub#access_model': ['authorize'], 'pubsub#max_items': ['1000'], 'pubsub#title': ['not kept'], 'pubsub#deliver_payloads': ['0'] })
      + configure('urn:example:roster', { 'pubsub#access_model': ['roster'], 'pubsub#roster_groups_allowed': ['Friends', 'Family', 'Friends', ''], 'pubsub#max_items': ['2'], 'pubsub#persist_items': ['true'], 'pubsub#notify_retract': ['false'], 'pubsub#send_last_published_item': ['never'] })
      + configure('urn:example:volatile', { 'pubsub#persist_items': ['0'], 'pubsub#max_items': ['10'] })
      // Prosody's form (its 'pep' store): the owner's own affiliation, the whitelist's members; a publisher reads as a member does.
      + "<affiliations node='urn:example:asked'><affiliation jid='juliet@capulet.lit' affiliation='owner'/><affiliation jid='Nurse@Capulet.lit/Chamber' affiliation='member'/><affiliation jid='friar@verona.lit' affiliation='publisher'/><affiliation jid='tybalt@capulet.lit' affiliation='outcast'/></affiliations>"
      + "<affiliations node='urn:example:gone'><affiliation jid='nurse@capulet.lit' affiliation='member'/></affiliations>"
      + "<subscriptions node='urn:example:asked'><subscription jid='romeo@montague.lit' subscription='subscribed'/></subscriptions>",
    )
    + pubsub(
      `<items node='urn:example:asked'><item id='a'>${note('a')}</item><item id='empty'/><item id='two'>${note(1)}${note(2)}</item><item id='bare'><note>no namespace</note></item><item id='big'>${big}</item></items>`
      // A repeated id is the item once, newest where it was last; the node keeps the newest two.
      + `<items node='urn:example:roster'><item id='r1'>${note(1)}</item><item id='r2'>${note(2)}</item><item id='r1'>${note('1 again')}</item><item id='r3'>${note(3)}</item></items>`
      + `<items node='urn:example:volatile'><item id='v1'>${note(1)}</item><item id='v2'>${note(2)}</item></items>`
      // No configuration (XEP-0227 asks for one): the defaults of a node a publish creates.
      + `<items node='urn:example:bare'><item id='b1'>${note(1)}</item></items>`,
    ),
  ));
  const hi = Date.now();
  t.is(r.pepNodes, 4);
  t.is(r.pepItems, 1 + 2 + 1 + 1);
  t.is(r.pepDropped, 4 + 1 + 1, 'empty, two payloads, no namespace of its own, too big; r2 beyond the bound; v1 (items not persisted: the last one is kept)');
  t.deepEqual([...r.leftOut.keys()].sort(), ['pubsub/subscriptions']);
  t.deepEqual([...r.notes.keys()].sort(), [
    `PEP nodes with pubsub#access_model 'authorize' (made 'whitelist')`,
    `PEP nodes with pubsub#max_items above ${MAX_ITEMS} (made ${MAX_ITEMS})`,
    'PEP outcast affiliations (not kept: only members are let in)',
    'PEP publisher affiliations (kept as member: only the account publishes to its PEP nodes)',
    'PEP affiliations of a node that is not there (not kept)',
  ].sort());
  const { pep } = f.stores;
  t.deepEqual(await pep.nodes('juliet'), [
    { node: 'urn:example:asked', config: { ...DEFAULT_CONFIG, accessModel: 'whitelist', maxItems: MAX_ITEMS } },
    { node: 'urn:example:bare', config: DEFAULT_CONFIG },
    { node: 'urn:example:roster', config: { ...DEFAULT_CONFIG, accessModel: 'roster', rosterGroups: ['Friends', 'Family'], maxItems: 2, persistItems: true, notifyRetract: false, sendLastPublishedItem: 'never' } },
    { node: 'urn:example:volatile', config: { ...DEFAULT_CONFIG, persistItems: false, maxItems: 10 } },
  ]);
  const ids = async (node: string) => (await pep.items('juliet', node)).map((i) => i.id);
  t.deepEqual(await ids('urn:example:asked'), ['a']);
  t.deepEqual(await ids('urn:example:roster'), ['r1', 'r3']);
  t.deepEqual((await pep.items('juliet', 'urn:example:roster'))[0].xml, '<note xmlns="urn:example:notes">1 again</note>');
  t.deepEqual(await ids('urn:example:volatile'), ['v2']);
  t.deepEqual(await ids('urn:example:bare'), ['b1']);
  // XEP-0227 (XEP-0060's <item/>) carries no publish time: each item is dated its import, its last item sent with that.
  for (const node of ['urn:example:asked', 'urn:example:roster', 'urn:example:volatile', 'urn:example:bare']) {
    for (const i of await pep.items('juliet', node)) t.true(i.published >= lo && i.published <= hi, `${node} ${i.id}: published ${i.published}, not within the import (${lo}..${hi})`);
  }
  t.deepEqual(await pep.affiliations('juliet', 'urn:example:asked'), [{ jid: 'friar@verona.lit', affiliation: 'member' }, { jid: 'nurse@capulet.lit', affiliation: 'member' }], 'the whitelist, bare JIDs prepared');
  t.deepEqual(await pep.affiliations('juliet', 'urn:example:roster'), []);
});

test("PEP items past the account's byte bound (MAX_ACCOUNT_BYTES) are trimmed, each node's newest kept first, and said; a publish after fits", async (t) => {
  const f = fixture(t);
  // 3 nodes of 12 items of some 150 KB: 5.4 MB, past the 4 MiB bound.
  const nodes = ['urn:example:a', 'urn:example:b', 'urn:example:c'];
  const SIZE = 150_000;
  const payload = (node: string, i: number) => `<data xmlns='urn:example:data'>${node.slice(-1)}${String(i).padStart(2, '0')}${'x'.repeat(SIZE)}</data>`;
  const r = await f.run(doc(
    owner(nodes.map((n) => configure(n, { 'pubsub#max_items': ['20'] })).join(''))
    + pubsub(nodes.map((n) => `<items node='${n}'>${Array.from({ length: 12 }, (_, i) => `<item id='i${i}'>${payload(n, i)}</item>`).join('')}</items>`).join('')),
  ));
  const { pep } = f.stores;
  let bytes = 0;
  const kept: number[] = [];
  for (const n of nodes) {
    const items = await pep.items('juliet', n);
    bytes += items.reduce((sum, it) => sum + Buffer.byteLength(it.xml, 'utf8'), 0);
    // The newest of each node, in their order.
    t.deepEqual(items.map((it) => it.id), Array.from({ length: items.length }, (_, i) => `i${12 - items.length + i}`), `${n}: its newest items`);
    kept.push(items.length);
  }
  t.true(bytes <= MAX_ACCOUNT_BYTES, `${bytes} bytes kept, at most ${MAX_ACCOUNT_BYTES}`);
  t.true(Math.max(...kept) - Math.min(...kept) <= 1, `every node keeps its share: ${kept.join(', ')}`);
  t.true(bytes + 2 * SIZE > MAX_ACCOUNT_BYTES, 'as much as fits');
  t.is(r.pepItems, kept.reduce((a, b) => a + b, 0));
  t.is(r.pepDropped, 36 - r.pepItems);
  t.true(r.notes.has(`PEP items past the account's ${MAX_ACCOUNT_BYTES} bytes (the oldest of each node not kept)`), [...r.notes.keys()].join('; '));
  // What the server's publish checks (modules/pep.ts): the account is within its bound, and takes a new item.
  await t.notThrowsAsync(pep.publish('juliet', 'urn:example:more', { id: 'x', xml: "<x xmlns='urn:example'/>" }, DEFAULT_CONFIG, MAX_NODES, { maxBytes: MAX_ACCOUNT_BYTES }));
});

test('blocklists: the default privacy list as far as it denies JIDs everything, in its order; the rest is said', async (t) => {
  const f = fixture(t);
  const r = await f.run(doc(
    "<query xmlns='jabber:iq:privacy'><default name='public'/>"
    + "<list name='private'><item type='jid' value='nurse@capulet.lit' action='deny' order='1'/></list>"
    + "<list name='public'>"
    // Written out of order: applied by 'order' (XEP-0016 §2.2), ties as written.
    + "<item type='jid' value='Paris@Verona.LIT/Church' action='deny' order='20'/>"
    + "<item type='jid' value='tybalt@capulet.lit' action='deny' order='2'/>"
    + "<item type='jid' value='montague.lit' action='deny' order='2'/>"
    + "<item type='jid' value='friar@verona.lit' action='allow' order='3'/>"
    + "<item type='group' value='Foes' action='deny' order='4'/>"
    + "<item type='subscription' value='none' action='deny' order='5'/>"
    + "<item type='jid' value='mercutio@verona.lit' action='deny' order='6'><message/><presence-in/></item>"
    + "<item action='deny' order='30'/>"
    + "<item type='jid' value='unreached@verona.lit' action='deny' order='31'/>"
    + '</list></query>',
  ));
  t.is(r.blocked, 3);
  t.deepEqual(await f.stores.blocking.list('juliet'), ['tybalt@capulet.lit', 'montague.lit', 'paris@verona.lit/Church'], 'normalised, as the list applies them; nothing after the fall-through');
  t.deepEqual([...r.notes.keys()].sort(), [
    'privacy list items about some kinds of stanza only (not kept)',
    'privacy list items of type group (not kept)',
    'privacy list items of type subscription (not kept)',
    'privacy list items that allow a JID (not kept)',
    'privacy lists other than the default (not kept)',
    'privacy lists that deny everyone not allowed before (not kept)',
  ]);
  // A list without a default, or no list: no blocklist.
  const g = fixture(t);
  const none = await g.run(doc("<query xmlns='jabber:iq:privacy'><list name='only'><item type='jid' value='tybalt@capulet.lit' action='deny' order='1'/></list></query>"));
  t.is(none.blocked, 0);
  t.deepEqual(await g.stores.blocking.list('juliet'), []);
});

test('bad or unbounded PEP and privacy input is refused whole, naming the element; nothing is written', async (t) => {
  const f = fixture(t);
  const many = (n: number) => owner(Array.from({ length: n }, (_, i) => configure(`urn:example:n${i}`, {})).join(''));
  const jids = (n: number) => `<query xmlns='jabber:iq:privacy'><default name='l'/><list name='l'>${Array.from({ length: n }, (_, i) => `<item type='jid' value='u${i}@example.org' action='deny' order='${i}'/>`).join('')}</list></query>`;
  const cases: [string, RegExp][] = [
    [many(MAX_NODES + 1), new RegExp(`${MAX_NODES + 1} PEP nodes, more than ${MAX_NODES}`)],
    [pubsub(`<items node='urn:example:x'><item>${note(1)}</item></items>`), /<items node="urn:example:x">: an <item> without an id/],
    [pubsub(`<items node='urn:example:x'><item id='${'i'.repeat(1025)}'>${note(1)}</item></items>`), /an item id is at most 1024 characters/],
    [owner(`<configure node='${'n'.repeat(1025)}'/>`), /a node name is at most 1024 characters/],
    [owner(configure('urn:example:x', { 'pubsub#access_model': ['everyone'] })), /<configure node="urn:example:x">: pubsub#access_model "everyone"/],
    [owner(configure('urn:example:x', { 'pubsub#max_items': ['lots'] })), /pubsub#max_items "lots" is neither a count nor max/],
    [owner(configure('urn:example:x', { 'pubsub#persist_items': ['maybe'] })), /pubsub#persist_items "maybe" is not a boolean/],
    [owner(configure('urn:example:x', {}) + configure('urn:example:x', {})), /the node is configured twice/],
    [jids(MAX_BLOCKED + 1), new RegExp(`a blocklist of ${MAX_BLOCKED + 1} JIDs, more than ${MAX_BLOCKED}`)],
    [owner(configure('urn:example:x', {}) + `<affiliations node='urn:example:x'>${Array.from({ length: MAX_WHITELIST + 1 }, (_, i) => `<affiliation jid='m${i}@example.org' affiliation='member'/>`).join('')}</affiliations>`), new RegExp(`<affiliations node="urn:example:x">: a whitelist of ${MAX_WHITELIST + 1} JIDs, more than ${MAX_WHITELIST}`)],
    [owner(`<affiliations node='urn:example:x'><affiliation jid='a@b@c' affiliation='member'/></affiliations>`), /<affiliations node="urn:example:x">: <affiliation>: "a@b@c" is not a JID/],
    ["<query xmlns='jabber:iq:privacy'><default name='l'/><list name='l'><item type='jid' value='a@b@c' action='deny' order='1'/></list></query>", /<list name="l">: <item type='jid' value="a@b@c">: not a JID/],
    ["<query xmlns='jabber:iq:privacy'><default name='l'/><list name='l'><item type='jid' value='a@b' action='block' order='1'/></list></query>", /<item action="block">: neither allow nor deny/],
  ];
  for (const [user, error] of cases) await t.throwsAsync(f.run(doc(user)), { name: 'Xep0227Error', message: error });
  t.false(await f.stores.accounts.exists('juliet'));
  t.deepEqual(await f.stores.pep.nodes('juliet'), []);
  t.deepEqual(await f.stores.blocking.list('juliet'), []);
  // At the bounds, it imports.
  const r = await f.run(doc(many(MAX_NODES) + jids(MAX_BLOCKED)), { dryRun: true });
  t.is(r.pepNodes, MAX_NODES);
  t.is(r.blocked, MAX_BLOCKED);
});
