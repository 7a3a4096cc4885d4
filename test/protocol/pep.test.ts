// PEP (XEP-0163) end to end, over real sockets with real TLS: the account's
// bare JID as a pubsub/pep service (§6.1); publish with auto-create (§4.1)
// and generated ids, items (all, by id, max_items), retract, purge, delete,
// node configuration and publish-options (XEP-0060 §7.1.5), the access
// models (a whitelist node's deletion told to its members), the bounds,
// and notifications (§4.3) to the owner's resources and to contacts whose
// caps (XEP-0115) say NODE+notify, caps verified and asked once per ver; the last published item on a contact's available presence,
// dated with the time of its publish (XEP-0203);
// an OMEMO-shaped device list and bundle; everything gone with the account.
import test from 'ava';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, fresh, newAccount, newUser, ready, subscribe, type Peer } from '../helpers/im.ts';
import { announceCaps, answerCaps, before, capsPresence, capsVer, clockPast, dated, eventItemId, form, iq, isCapsQuery, isEvent, isEventItem, itemIds, items, NODE_CONFIG, NS_EVENT, NS_OWNER, NS_PUBSUB, ok, publish, refused, undated, untilNotified } from '../helpers/pep.ts';
import { MAX_ACCOUNT_BYTES, MAX_ITEM_BYTES, MAX_ITEMS, MAX_NODES } from '../../src/pep/store.ts';
import { MAX_CAPS_LOOKUPS_PER_JID } from '../../src/modules/pep.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
});
test.after.always(async () => {
  await server?.stop();
});

const configOf = async (p: Peer, node: string): Promise<Record<string, string[]>> => {
  const res = await iq(p, 'get', `<pubsub xmlns='${NS_OWNER}'><configure node='${node}'/></pubsub>`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  const out: Record<string, string[]> = {};
  for (const f of res.getChild('pubsub', NS_OWNER)!.getChild('configure')!.getChild('x')!.getChildren('field')) out[f.attrs.var] = f.getChildren('value').map((v) => v.getText());
  return out;
};

/** A form's fields (XEP-0004): values, and the options of a list, by var. */
const fieldsOf = (x: Element): Record<string, { type?: string; values: string[]; options: string[] }> => {
  const out: Record<string, { type?: string; values: string[]; options: string[] }> = {};
  for (const f of x.getChildren('field')) out[f.attrs.var] = { type: f.attrs.type, values: f.getChildren('value').map((v) => v.getText()), options: f.getChildren('option').map((o) => o.getChildText('value') ?? '') };
  return out;
};

/** The roster item `owner` keeps for `contact`, set to these groups (its subscription unchanged, RFC 6121 §2.1.5). */
const groups = async (owner: Peer, contact: Peer, names: string[]): Promise<void> => {
  const id = uid('r');
  const res = await within(owner.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:roster'><item jid='${contact.bare}'>${names.map((g) => `<group>${g}</group>`).join('')}</item></query></iq>`, id), WAIT, 'roster groups');
  if (res.attrs.type !== 'result') throw new Error(res.toString());
};

test('disco#info on the bare JID: the pubsub/pep identity (XEP-0163 §6.1) and the pubsub features', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const res = await iq(bob, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, alice.bare);
  ok(t, res, 'disco#info');
  const q = res.getChild('query')!;
  t.true(q.getChildren('identity').some((i) => i.attrs.category === 'pubsub' && i.attrs.type === 'pep'));
  t.true(q.getChildren('identity').some((i) => i.attrs.category === 'account' && i.attrs.type === 'registered'));
  const features = new Set(q.getChildren('feature').map((f) => f.attrs.var));
  for (const f of ['publish', 'publish-options', 'retract-items', 'retrieve-items', 'purge-nodes', 'delete-nodes', 'config-node', 'config-node-max', 'create-nodes', 'create-and-configure', 'retrieve-default', 'persistent-items', 'access-presence', 'access-open', 'access-whitelist', 'access-roster', 'auto-create', 'last-published']) t.true(features.has(`${NS_PUBSUB}#${f}`), f);
});

test('publish creates the node (§4.1), generates an id when absent, replaces an item of the same id; items all, by id, max_items', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const first = await publish(alice, 'urn:test:notes', `<note xmlns='urn:test'>one</note>`, { options: { 'pubsub#max_items': '10' } });
  ok(t, first, 'first publish');
  const gen = first.getChild('pubsub', NS_PUBSUB)!.getChild('publish')!.getChild('item')!.attrs.id;
  t.truthy(gen, 'XEP-0060 §7.1.2: the generated id is returned');
  ok(t, await publish(alice, 'urn:test:notes', `<note xmlns='urn:test'>two</note>`, { id: 'two' }), 'second');
  ok(t, await publish(alice, 'urn:test:notes', `<note xmlns='urn:test'>three</note>`, { id: 'three', to: alice.bare }), 'to the bare JID');
  ok(t, await publish(alice, 'urn:test:notes', `<note xmlns='urn:test'>two again</note>`, { id: 'two' }), 'same id');
  const all = await items(alice, undefined, 'urn:test:notes');
  ok(t, all, 'items');
  t.deepEqual(itemIds(all), [gen, 'three', 'two'], 'in publish order, a replaced item the newest');
  t.is(all.getChild('pubsub')!.getChild('items')!.getChildren('item')[2].getChild('note', 'urn:test')!.getText(), 'two again');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:notes', '', ` max_items='2'`)), ['three', 'two'], 'max_items: the newest');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:notes', `<item id='three'/><item id='${gen}'/>`)), ['three', gen], 'by id');
  refused(t, await items(alice, undefined, 'urn:test:notes', `<item id='nope'/>`), 'item-not-found', undefined, 'an id not there');
  refused(t, await items(alice, undefined, 'urn:test:none'), 'item-not-found', undefined, 'no such node');
  // The default node keeps one item (max_items 1).
  await publish(alice, 'urn:test:one', `<x xmlns='urn:test'>a</x>`, { id: 'a' });
  await publish(alice, 'urn:test:one', `<x xmlns='urn:test'>b</x>`, { id: 'b' });
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:one')), ['b']);
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><publish node='urn:test:one'><item><a xmlns='x'/><b xmlns='x'/></item></publish></pubsub>`), 'bad-request', 'invalid-payload', 'two payloads');
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><publish node=''><item><a xmlns='x'/></item></publish></pubsub>`), 'bad-request', 'nodeid-required', 'no node');
});

test('malformed requests get the conditions XEP-0060 names: nodeid-required, item-required, payload-required, invalid-payload; what is not done, <unsupported/> with its feature', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const set = (inner: string, ns = NS_PUBSUB) => iq(alice, 'set', `<pubsub xmlns='${ns}'>${inner}</pubsub>`);
  const get = (inner: string, ns = NS_PUBSUB) => iq(alice, 'get', `<pubsub xmlns='${ns}'>${inner}</pubsub>`);
  refused(t, await set(`<publish><item><x xmlns='urn:test'/></item></publish>`), 'bad-request', 'nodeid-required', 'a publish without a node');
  refused(t, await set(`<publish node='urn:test:m'/>`), 'bad-request', 'item-required', 'a publish without an item (§7.1.3.6)');
  refused(t, await set(`<publish node='urn:test:m'><item id='a'/></publish>`), 'bad-request', 'payload-required', 'an item without a payload (§7.1.3.6)');
  refused(t, await set(`<publish node='urn:test:m'><item><x xmlns='urn:test'/><y xmlns='urn:test'/></item></publish>`), 'bad-request', 'invalid-payload', 'two payloads (§7.1.3.5)');
  refused(t, await set(`<publish node='urn:test:m'><item><x xmlns='urn:test'/></item><item><x xmlns='urn:test'/></item></publish>`), 'bad-request', undefined, 'two items');
  refused(t, await items(alice, undefined, 'urn:test:none', '', ''), 'item-not-found', undefined, 'items of no node');
  refused(t, await get(`<items/>`), 'bad-request', 'nodeid-required', 'items without a node');
  ok(t, await publish(alice, 'urn:test:m', `<x xmlns='urn:test'/>`, { id: 'a' }), 'publish');
  refused(t, await set(`<retract><item id='a'/></retract>`), 'bad-request', 'nodeid-required', 'a retract without a node (§7.2.3.3)');
  refused(t, await set(`<retract node='urn:test:m'><item id='a'/><item/></retract>`), 'bad-request', 'item-required', 'an item without an id (§7.2.3.4)');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:m')), ['a'], 'nothing retracted');
  const unsupported = async (res: Element, feature: string, what: string) => {
    refused(t, res, 'feature-not-implemented', 'unsupported', what);
    t.is(res.getChild('error')?.getChild('unsupported', 'http://jabber.org/protocol/pubsub#errors')?.attrs.feature, feature, `${what}: the feature`);
  };
  await unsupported(await set(`<subscribe node='urn:test:m' jid='${alice.jid}'/>`), 'subscribe', 'subscribe');
  await unsupported(await set(`<unsubscribe node='urn:test:m' jid='${alice.jid}'/>`), 'subscribe', 'unsubscribe');
  await unsupported(await get(`<subscriptions/>`), 'retrieve-subscriptions', 'subscriptions');
  await unsupported(await get(`<affiliations/>`), 'retrieve-affiliations', 'affiliations');
  await unsupported(await get(`<options node='urn:test:m' jid='${alice.jid}'/>`), 'subscription-options', 'subscription options');
  await unsupported(await get(`<subscriptions node='urn:test:m'/>`, NS_OWNER), 'manage-subscriptions', "the node's subscriptions");
  await unsupported(await set(`<subscriptions node='urn:test:m'><subscription jid='x@y' subscription='subscribed'/></subscriptions>`, NS_OWNER), 'manage-subscriptions', "changing the node's subscriptions");
  await unsupported(await set(`<affiliations node='urn:test:m'><affiliation jid='x@y' affiliation='publisher'/></affiliations>`, NS_OWNER), 'publisher-affiliation', 'an affiliation other than member or none');
  refused(t, await get(`<nonsense/>`), 'bad-request', undefined, 'no such request');
});

test("publish-options (XEP-0060 §7.1.5): a new node takes them; options that conflict with the node's configuration are precondition-not-met", async (t) => {
  const alice = await newUser(t, server, 'alice');
  ok(t, await publish(alice, 'urn:test:po', `<x xmlns='urn:test'/>`, { options: { 'pubsub#access_model': 'open', 'pubsub#max_items': 'max', 'pubsub#persist_items': 'true' } }), 'new node');
  const c = await configOf(alice, 'urn:test:po');
  t.deepEqual(c['pubsub#access_model'], ['open']);
  t.deepEqual(c['pubsub#max_items'], [String(MAX_ITEMS)], "'max' is the server's bound");
  ok(t, await publish(alice, 'urn:test:po', `<x xmlns='urn:test'/>`, { options: { 'pubsub#access_model': 'open' } }), 'options that hold');
  refused(t, await publish(alice, 'urn:test:po', `<x xmlns='urn:test'/>`, { options: { 'pubsub#access_model': 'whitelist' } }), 'conflict', 'precondition-not-met', 'a conflicting access model');
  refused(t, await publish(alice, 'urn:test:po', `<x xmlns='urn:test'/>`, { options: { 'pubsub#some_option': '1' } }), 'conflict', 'precondition-not-met', 'an option not supported');
  refused(t, await publish(alice, 'urn:test:po2', `<x xmlns='urn:test'/>`, { options: { 'pubsub#access_model': 'authorize' } }), 'conflict', 'precondition-not-met', 'an access model not supported');
  refused(t, await items(alice, undefined, 'urn:test:po2'), 'item-not-found', undefined, 'the refused publish made no node');
});

test('node configuration (§8.2): owner only; values checked; max_items trims; errors for a node that is not there', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  for (const id of ['a', 'b', 'c']) await publish(alice, 'urn:test:cfg', `<x xmlns='urn:test'>${id}</x>`, { id, options: { 'pubsub#max_items': '5' } });
  const c = await configOf(alice, 'urn:test:cfg');
  t.deepEqual(c.FORM_TYPE, [NODE_CONFIG]);
  t.deepEqual(c['pubsub#access_model'], ['presence'], 'XEP-0163 §4.1: presence by default');
  t.deepEqual(c['pubsub#send_last_published_item'], ['on_sub_and_presence']);
  const set = (fields: Record<string, string | string[]>, who = alice, node = 'urn:test:cfg') => iq(who, 'set', `<pubsub xmlns='${NS_OWNER}'><configure node='${node}'>${form(NODE_CONFIG, fields)}</configure></pubsub>`, who === alice ? undefined : alice.bare);
  ok(t, await set({ 'pubsub#max_items': '2', 'pubsub#notify_retract': '0', 'pubsub#access_model': 'roster', 'pubsub#roster_groups_allowed': ['Friends'] }), 'configure');
  const after = await configOf(alice, 'urn:test:cfg');
  t.deepEqual(after['pubsub#max_items'], ['2']);
  t.deepEqual(after['pubsub#notify_retract'], ['0']);
  t.deepEqual(after['pubsub#roster_groups_allowed'], ['Friends']);
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:cfg')), ['b', 'c'], 'trimmed to the new bound');
  refused(t, await set({ 'pubsub#max_items': String(MAX_ITEMS + 1) }), 'not-acceptable', undefined, 'beyond the bound');
  refused(t, await set({ 'pubsub#access_model': 'authorize' }), 'not-acceptable', undefined, 'authorize');
  refused(t, await set({ 'pubsub#unknown': 'x' }), 'not-acceptable', undefined, 'a field not supported');
  refused(t, await set({ 'pubsub#max_items': '3' }, alice, 'urn:test:nothing'), 'item-not-found', undefined, 'no such node');
  refused(t, await set({ 'pubsub#max_items': '3' }, bob), 'forbidden', undefined, "another's node");
  refused(t, await iq(bob, 'get', `<pubsub xmlns='${NS_OWNER}'><configure node='urn:test:cfg'/></pubsub>`, alice.bare), 'forbidden', undefined, "another's configuration");
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><configure node='urn:test:cfg'><x xmlns='jabber:x:data' type='cancel'/></configure></pubsub>`), 'a cancelled form');
  const def = await iq(alice, 'get', `<pubsub xmlns='${NS_OWNER}'><default/></pubsub>`);
  ok(t, def, 'default configuration (§8.3)');
});

test('create (XEP-0060 §8.1): with the default configuration, or a configuration form (§8.1.3); conflict when the node exists (§8.1.1); a <configure/> naming a node is bad-request, an access model not offered unsupported-access-model (§8.1.2)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const create = (node: string, configure = '', who = alice) => iq(who, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create node='${node}'/>${configure}</pubsub>`, who === alice ? undefined : alice.bare);
  const configure = (fields: Record<string, string | string[]>, attrs = '') => `<configure${attrs}>${form(NODE_CONFIG, fields)}</configure>`;
  ok(t, await create('urn:test:made'), 'create, default configuration (§8.1.2)');
  const made = await configOf(alice, 'urn:test:made');
  t.deepEqual([made['pubsub#access_model'], made['pubsub#max_items'], made['pubsub#persist_items'], made['pubsub#send_last_published_item'], made['pubsub#notify_retract']], [['presence'], ['1'], ['1'], ['on_sub_and_presence'], ['1']], 'the defaults');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:made')), [], 'a node, no items');
  refused(t, await create('urn:test:made'), 'conflict', undefined, 'the node exists (§8.1.1)');
  ok(t, await create('urn:test:configured', configure({ 'pubsub#access_model': 'open', 'pubsub#max_items': '5', 'pubsub#send_last_published_item': 'never', 'pubsub#notify_retract': '0' })), 'create and configure (§8.1.3)');
  const configured = await configOf(alice, 'urn:test:configured');
  t.deepEqual([configured['pubsub#access_model'], configured['pubsub#max_items'], configured['pubsub#send_last_published_item'], configured['pubsub#notify_retract'], configured['pubsub#persist_items']], [['open'], ['5'], ['never'], ['0'], ['1']], 'the form taken, the rest the defaults');
  refused(t, await create('urn:test:configured', configure({ 'pubsub#access_model': 'presence' })), 'conflict', undefined, 'exists, whatever the form');
  t.deepEqual((await configOf(alice, 'urn:test:configured'))['pubsub#access_model'], ['open'], 'a refused create changes nothing');
  ok(t, await publish(alice, 'urn:test:configured', `<x xmlns='urn:test'/>`, { id: 'a' }), 'publish to it');
  t.deepEqual(itemIds(await items(bob, alice.bare, 'urn:test:configured')), ['a'], 'open, as created: a stranger reads');
  refused(t, await create('urn:test:bad', configure({ 'pubsub#max_items': '2' }, ` node='urn:test:bad'`)), 'bad-request', undefined, 'a <configure/> naming a node (§8.1.3)');
  refused(t, await create('urn:test:bad', configure({ 'pubsub#access_model': 'authorize' })), 'not-acceptable', 'unsupported-access-model', 'an access model not offered (§8.1.2)');
  refused(t, await create('urn:test:bad', configure({ 'pubsub#max_items': '0' })), 'not-acceptable', undefined, 'a value not taken');
  refused(t, await create('urn:test:bad', configure({ 'pubsub#unknown': '1' })), 'not-acceptable', undefined, 'a field not known');
  refused(t, await create('urn:test:bad', `<configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x></configure>`), 'bad-request', undefined, 'a form of another FORM_TYPE');
  refused(t, await items(alice, undefined, 'urn:test:bad'), 'item-not-found', undefined, 'no node made by a refused create');
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create/></pubsub>`), 'bad-request', 'nodeid-required', 'no node named (no instant nodes)');
  refused(t, await create('urn:test:theirs', '', bob), 'forbidden', undefined, "on another's service");
  refused(t, await items(alice, undefined, 'urn:test:theirs'), 'item-not-found', undefined, 'not made');
});

test('the default configuration (XEP-0060 §8.3): a node_config form with the values a node is created with (XEP-0163: presence access, the last item sent on subscription and presence)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const res = await iq(alice, 'get', `<pubsub xmlns='${NS_OWNER}'><default/></pubsub>`);
  ok(t, res, 'default');
  const x = res.getChild('pubsub', NS_OWNER)!.getChild('default')!.getChild('x', 'jabber:x:data')!;
  t.is(x.attrs.type, 'form');
  const f = fieldsOf(x);
  t.deepEqual(Object.keys(f).sort(), ['FORM_TYPE', 'pubsub#access_model', 'pubsub#max_items', 'pubsub#notify_retract', 'pubsub#persist_items', 'pubsub#roster_groups_allowed', 'pubsub#send_last_published_item'], 'the fields this service takes (no publish_model: only the account publishes)');
  t.deepEqual(f.FORM_TYPE, { type: 'hidden', values: [NODE_CONFIG], options: [] });
  t.deepEqual(f['pubsub#access_model'], { type: 'list-single', values: ['presence'], options: ['presence', 'open', 'whitelist', 'roster'] }, 'XEP-0163: presence by default; authorize not offered');
  t.deepEqual(f['pubsub#persist_items'], { type: 'boolean', values: ['1'], options: [] });
  t.deepEqual(f['pubsub#max_items'], { type: 'text-single', values: ['1'], options: [] });
  t.deepEqual(f['pubsub#send_last_published_item'], { type: 'list-single', values: ['on_sub_and_presence'], options: ['never', 'on_sub', 'on_sub_and_presence'] }, 'XEP-0060 §4.3: on_sub_and_presence by default with last-published');
  t.deepEqual(f['pubsub#notify_retract'], { type: 'boolean', values: ['1'], options: [] });
  t.deepEqual(f['pubsub#roster_groups_allowed'], { type: 'list-multi', values: [], options: [] });
  // A node a publish creates (auto-create, §7.1.4) has exactly these values.
  ok(t, await publish(alice, 'urn:test:auto', `<x xmlns='urn:test'/>`), 'publish');
  const auto = await configOf(alice, 'urn:test:auto');
  for (const [k, v] of Object.entries(f)) t.deepEqual(auto[k], v.values, k);
  refused(t, await iq(bob, 'get', `<pubsub xmlns='${NS_OWNER}'><default/></pubsub>`, alice.bare), 'forbidden', undefined, "another's service");
});

test("pubsub#persist_items false (a transient node, XEP-0060 §4.3): every publish is notified; only the last published item is kept, which items returns (§6.5.9.4) and which goes out as the last item", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  const NODE = 'urn:test:transient';
  const feats = [`${NODE}+notify`];
  announceCaps(bob, feats);
  const transient = { 'pubsub#persist_items': 'false', 'pubsub#max_items': '10' };
  // The probes create the node as a transient one.
  await untilNotified(alice, bob, NODE, { options: transient });
  t.deepEqual((await configOf(alice, NODE))['pubsub#persist_items'], ['0']);
  const from = bob.c.items.length;
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'>one</x>`, { id: 'one', options: transient }), 'first');
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'>two</x>`, { id: 'two', options: transient }), 'second');
  await expect(bob, 'the first notification', isEventItem(alice.bare, NODE, 'one'), from);
  await expect(bob, 'the second notification', isEventItem(alice.bare, NODE, 'two'), from);
  t.deepEqual(itemIds(await items(alice, undefined, NODE)), ['two'], 'the owner reads the last published item only');
  t.deepEqual(itemIds(await items(bob, alice.bare, NODE)), ['two'], 'so does a contact');
  refused(t, await items(bob, alice.bare, NODE, `<item id='one'/>`), 'item-not-found', undefined, 'the first is not kept');
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  answerCaps(later, feats, 0);
  await ready(later, capsPresence(feats));
  const last = await expect(later, 'the last published item', isEvent(alice.bare, NODE), 0);
  t.is(eventItemId(last), 'two');
  // A persistent node made transient keeps its newest item only.
  for (const id of ['a', 'b', 'c']) ok(t, await publish(alice, 'urn:test:kept', `<x xmlns='urn:test'/>`, { id, options: { 'pubsub#max_items': '10' } }), id);
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><configure node='urn:test:kept'>${form(NODE_CONFIG, { 'pubsub#persist_items': '0' })}</configure></pubsub>`), 'configure: persist_items off');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:kept')), ['c']);
  ok(t, await publish(alice, 'urn:test:kept', `<x xmlns='urn:test'/>`, { id: 'd' }), 'another');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:kept')), ['d']);
});

test('retract (with notify), purge and delete: owner only; item-not-found for what is not there; subscribers told', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  const feats = ['urn:test:r+notify', 'urn:test:rc+notify'];
  const from = bob.c.items.length;
  answerCaps(bob, feats, from);
  bob.c.send(capsPresence(feats));
  await expect(bob, 'the caps query', (el) => el.name === 'iq' && el.attrs.from === server.config.domain, from);
  // The caps taken into account: alice's probes on the control node reach bob.
  await untilNotified(alice, bob, 'urn:test:rc');
  for (const id of ['a', 'b', 'c']) ok(t, await publish(alice, 'urn:test:r', `<x xmlns='urn:test'/>`, { id, options: { 'pubsub#max_items': '10', 'pubsub#notify_retract': '0' } }), `publish ${id}`);
  // Each one's notification (they are sent after each publish is answered, and need not come in order).
  for (const id of ['a', 'b', 'c']) await expect(bob, `the publish of ${id}`, (el) => isEvent(alice.bare, 'urn:test:r')(el) && el.getChild('event')!.getChild('items')!.getChild('item')?.attrs.id === id, from);
  const retract = (id: string, notify?: string, who = alice) => iq(who, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='urn:test:r'${notify ? ` notify='${notify}'` : ''}><item id='${id}'/></retract></pubsub>`, who === alice ? undefined : alice.bare);
  refused(t, await retract('a', undefined, bob), 'forbidden', undefined, "another's item");
  refused(t, await retract('zz'), 'item-not-found', undefined, 'no such item');
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='urn:test:r'/></pubsub>`), 'bad-request', 'item-required', 'no item');
  const f1 = bob.c.items.length;
  ok(t, await retract('a', 'true'), 'retract with notify');
  const ev = await expect(bob, 'the retraction (§7.2.2.1)', (el) => isEvent(alice.bare, 'urn:test:r')(el) && el.getChild('event', NS_EVENT)!.getChild('items')!.getChild('retract') !== undefined, f1);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('retract')?.attrs.id, 'a');
  t.is(ev.attrs.type, 'headline');
  const f2 = bob.c.items.length;
  ok(t, await retract('b'), 'retract, notify_retract off');
  // Control: a publish of alice's after the retract was answered. A notification the retract caused would have
  // been sent before it, by the same worker to bob's session (whose stanzas go out in order), so it would precede it.
  ok(t, await publish(alice, 'urn:test:rc', `<x xmlns='urn:test'/>`, { id: 'control' }), 'control publish');
  // No retraction event. (An item event may come: bob became available before his caps were known, so the
  // last items are sent once they are, which may be after the publishes above.)
  const isRetraction = (el: Element) => isEvent(alice.bare, 'urn:test:r')(el) && el.getChild('event', NS_EVENT)!.getChild('items')!.getChild('retract') !== undefined;
  t.false((await before(bob, 'the control notification', isEventItem(alice.bare, 'urn:test:rc', 'control'), f2)).some(isRetraction), 'no retraction notified');
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:r')), ['c']);
  refused(t, await iq(bob, 'set', `<pubsub xmlns='${NS_OWNER}'><purge node='urn:test:r'/></pubsub>`, alice.bare), 'forbidden', undefined, "another's purge");
  const f3 = bob.c.items.length;
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><purge node='urn:test:r'/></pubsub>`), 'purge');
  await expect(bob, 'the purge (§8.5.2)', (el) => el.getChild('event', NS_EVENT)?.getChild('purge')?.attrs.node === 'urn:test:r', f3);
  t.deepEqual(itemIds(await items(alice, undefined, 'urn:test:r')), []);
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><purge node='urn:test:none'/></pubsub>`), 'item-not-found', undefined, 'purge: no node');
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><delete node='urn:test:r'/></pubsub>`), 'delete');
  await expect(bob, 'the deletion (§8.4.2)', (el) => el.getChild('event', NS_EVENT)?.getChild('delete')?.attrs.node === 'urn:test:r', f3);
  refused(t, await items(alice, undefined, 'urn:test:r'), 'item-not-found', undefined, 'deleted');
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><delete node='urn:test:r'/></pubsub>`), 'item-not-found', undefined, 'delete twice');
  refused(t, await publish(bob, 'urn:test:r', `<x xmlns='urn:test'/>`, { to: alice.bare }), 'forbidden', undefined, "publish to another's service");
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><subscribe node='urn:test:r' jid='${alice.jid}'/></pubsub>`), 'feature-not-implemented', 'unsupported', 'explicit subscriptions');
});

test("a retract without 'notify' follows the node's pubsub#notify_retract, on by default: subscribers are told (XEP-0060 §7.2.2.1); notify='false' tells nobody", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  const NODE = 'urn:test:rd';
  const CTL = 'urn:test:rdc';
  const feats = [`${NODE}+notify`, `${CTL}+notify`];
  announceCaps(bob, feats);
  const ten = { 'pubsub#max_items': '10' };
  await untilNotified(alice, bob, NODE, { options: ten });
  t.deepEqual((await configOf(alice, NODE))['pubsub#notify_retract'], ['1'], 'the default');
  for (const id of ['a', 'b']) ok(t, await publish(alice, NODE, `<x xmlns='urn:test'/>`, { id, options: ten }), id);
  await expect(bob, 'the notification of b', isEventItem(alice.bare, NODE, 'b'), 0);
  const isRetraction = (id: string) => (el: Element) => isEvent(alice.bare, NODE)(el) && el.getChild('event', NS_EVENT)!.getChild('items')!.getChild('retract')?.attrs.id === id;
  const from = bob.c.items.length;
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='${NODE}'><item id='a'/></retract></pubsub>`), 'retract, no notify');
  const ev = await expect(bob, 'the retraction', isRetraction('a'), from);
  t.is(ev.attrs.type, 'headline');
  t.is(ev.attrs.from, alice.bare);
  const f2 = bob.c.items.length;
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='${NODE}' notify='false'><item id='b'/></retract></pubsub>`), "retract, notify='false'");
  // Control: a publish after the retract was answered; a retraction would have come before its notification.
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'control' }), 'control');
  t.false((await before(bob, 'the control notification', isEventItem(alice.bare, CTL, 'control'), f2)).some(isRetraction('b')), 'no retraction');
  t.deepEqual(itemIds(await items(alice, undefined, NODE)).filter((id) => id === 'a' || id === 'b'), [], 'both retracted');
});

test('access model roster (§4.5): notifications go to contacts in an allowed group only, as the roster says at each publish', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  await subscribe(bob, alice);
  await subscribe(carol, alice);
  await groups(alice, bob, ['Friends']);
  await groups(alice, carol, ['Work']);
  const NODE = 'urn:test:rg';
  const CTL = 'urn:test:rgc';
  const feats = [`${NODE}+notify`, `${CTL}+notify`];
  for (const p of [bob, carol]) {
    announceCaps(p, feats);
  }
  const roster = { 'pubsub#access_model': 'roster', 'pubsub#roster_groups_allowed': ['Friends'] };
  await untilNotified(alice, bob, NODE, { options: roster });
  await untilNotified(alice, carol, CTL);
  const from = [bob.c.items.length, carol.c.items.length];
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'/>`, { id: 'x', options: roster }), 'publish');
  await expect(bob, 'in the group: the notification', isEventItem(alice.bare, NODE, 'x'), from[0]);
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'c1' }), 'control');
  t.false((await before(carol, 'the control notification', isEventItem(alice.bare, CTL, 'c1'), from[1])).some(isEvent(alice.bare, NODE)), 'another group: none');
  // bob leaves the group: withheld from him too.
  await groups(alice, bob, []);
  const f2 = bob.c.items.length;
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'/>`, { id: 'y', options: roster }), 'publish');
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'c2' }), 'control');
  t.false((await before(bob, 'the control notification', isEventItem(alice.bare, CTL, 'c2'), f2)).some(isEvent(alice.bare, NODE)), 'out of the group: none');
});

test('access models (§4.5): presence, open, whitelist, roster; refusals with their pubsub#errors', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const friend = await newUser(t, server, 'friend');
  const stranger = await newUser(t, server, 'stranger');
  await subscribe(friend, alice);
  const nodes = { presence: 'urn:test:p', open: 'urn:test:o', whitelist: 'urn:test:w', roster: 'urn:test:ro' };
  for (const [model, node] of Object.entries(nodes)) ok(t, await publish(alice, node, `<x xmlns='urn:test'/>`, { id: 'i', options: { 'pubsub#access_model': model, ...(model === 'roster' ? { 'pubsub#roster_groups_allowed': ['Friends'] } : {}) } }), model);
  t.deepEqual(itemIds(await items(friend, alice.bare, nodes.presence)), ['i'], 'presence: a subscriber');
  refused(t, await items(stranger, alice.bare, nodes.presence), 'not-authorized', 'presence-subscription-required', 'presence: a stranger');
  t.deepEqual(itemIds(await items(stranger, alice.bare, nodes.open)), ['i'], 'open: anyone');
  refused(t, await items(friend, alice.bare, nodes.whitelist), 'not-allowed', 'closed-node', 'whitelist: not the owner');
  t.deepEqual(itemIds(await items(alice, undefined, nodes.whitelist)), ['i'], 'whitelist: the owner');
  refused(t, await items(friend, alice.bare, nodes.roster), 'not-authorized', 'not-in-roster-group', 'roster: not in the group');
  const id = uid('r');
  await within(alice.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:roster'><item jid='${friend.bare}'><group>Friends</group></item></query></iq>`, id), WAIT, 'roster group');
  t.deepEqual(itemIds(await items(friend, alice.bare, nodes.roster)), ['i'], 'roster: in the group');
});

test('whitelist (§4.5) with affiliations (§8.9): the owner makes a JID a member, who may then read; the list; member and none only', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const friend = await newUser(t, server, 'friend');
  const stranger = await newUser(t, server, 'stranger');
  ok(t, await publish(alice, 'urn:test:wl', `<x xmlns='urn:test'/>`, { id: 'i', options: { 'pubsub#access_model': 'whitelist' } }), 'publish');
  refused(t, await items(friend, alice.bare, 'urn:test:wl'), 'not-allowed', 'closed-node', 'not yet a member');
  const affs = (inner: string, who = alice) => iq(who, 'set', `<pubsub xmlns='${NS_OWNER}'><affiliations node='urn:test:wl'>${inner}</affiliations></pubsub>`, who === alice ? undefined : alice.bare);
  refused(t, await affs(`<affiliation jid='${friend.bare}' affiliation='member'/>`, friend), 'forbidden', undefined, 'only the owner');
  ok(t, await affs(`<affiliation jid='${friend.bare}' affiliation='member'/>`), 'make a member');
  t.deepEqual(itemIds(await items(friend, alice.bare, 'urn:test:wl')), ['i'], 'a member reads');
  refused(t, await items(stranger, alice.bare, 'urn:test:wl'), 'not-allowed', 'closed-node', 'a stranger still not');
  const list = await iq(alice, 'get', `<pubsub xmlns='${NS_OWNER}'><affiliations node='urn:test:wl'/></pubsub>`);
  t.deepEqual(list.getChild('pubsub', NS_OWNER)!.getChild('affiliations')!.getChildren('affiliation').map((a) => [a.attrs.jid, a.attrs.affiliation]), [[alice.bare, 'owner'], [friend.bare, 'member']]);
  refused(t, await affs(`<affiliation jid='${stranger.bare}' affiliation='publisher'/>`), 'feature-not-implemented', 'unsupported', 'only the account publishes to its PEP nodes');
  ok(t, await affs(`<affiliation jid='${friend.bare}' affiliation='none'/>`), 'no longer a member');
  refused(t, await items(friend, alice.bare, 'urn:test:wl'), 'not-allowed', 'closed-node', 'removed from the whitelist');
});

test('delete of a whitelist node (§8.4.2): its members are told, as they were of its items; a contact not on the list is not', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  await subscribe(bob, alice);
  await subscribe(carol, alice);
  const NODE = 'urn:test:wd';
  const CTL = 'urn:test:wdc';
  const feats = [`${NODE}+notify`, `${CTL}+notify`];
  for (const p of [bob, carol]) {
    announceCaps(p, feats);
  }
  const whitelist = { 'pubsub#access_model': 'whitelist' };
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'/>`, { id: 'i', options: whitelist }), 'publish');
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><affiliations node='${NODE}'><affiliation jid='${bob.bare}' affiliation='member'/></affiliations></pubsub>`), 'bob a member');
  // bob's caps known, and his membership honoured: alice's probes on the node itself reach him.
  await untilNotified(alice, bob, NODE, { options: whitelist });
  await untilNotified(alice, carol, CTL);
  const from = [bob, carol].map((p) => p.c.items.length);
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><delete node='${NODE}'/></pubsub>`), 'delete');
  const isDelete = (el: Element) => el.attrs.from === alice.bare && el.getChild('event', NS_EVENT)?.getChild('delete')?.attrs.node === NODE;
  await expect(bob, 'the deletion, to a member', isDelete, from[0]);
  // Control, after the delete was answered: a deletion to carol would have been sent before it, by alice's worker.
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'control' }), 'control publish');
  t.false((await before(carol, 'the control notification', isEventItem(alice.bare, CTL, 'control'), from[1])).some(isDelete), 'not on the whitelist: no deletion');
});

test('bounds: bytes per item (payload-too-big), nodes per account (policy-violation)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  refused(t, await publish(alice, 'urn:test:big', `<x xmlns='urn:test'>${'a'.repeat(MAX_ITEM_BYTES)}</x>`), 'not-acceptable', 'payload-too-big', 'too big');
  for (let i = 0; i < MAX_NODES; i += 32) await Promise.all(Array.from({ length: Math.min(32, MAX_NODES - i) }, (_, k) => publish(alice, `urn:test:n${i + k}`, `<x xmlns='urn:test'/>`)));
  refused(t, await publish(alice, 'urn:test:one-more', `<x xmlns='urn:test'/>`), 'policy-violation', undefined, 'one node too many');
  ok(t, await publish(alice, 'urn:test:n0', `<x xmlns='urn:test'/>`), 'an existing node still takes items');
});

test("bytes per account (MAX_ACCOUNT_BYTES): a publish that would keep more is policy-violation; a retract makes room", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const payload = `<x xmlns='urn:test'>${'a'.repeat(190 * 1024)}</x>`;
  // As kept: serialised again (double quotes), the same length.
  const fits = Math.floor(MAX_ACCOUNT_BYTES / Buffer.byteLength(payload));
  for (let i = 0; i < fits; i++) ok(t, await publish(alice, `urn:test:quota${i % 2}`, payload, { id: `i${i}`, options: { 'pubsub#max_items': 'max' } }), `item ${i}`);
  refused(t, await publish(alice, 'urn:test:quota0', payload, { id: 'over' }), 'policy-violation', undefined, 'one more');
  refused(t, await items(alice, undefined, 'urn:test:quota0', `<item id='over'/>`), 'item-not-found', undefined, 'not kept');
  ok(t, await publish(alice, 'urn:test:quota0', payload, { id: 'i0' }), 'an item replaced: the same bytes');
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='urn:test:quota1'><item id='i1'/></retract></pubsub>`), 'retract');
  ok(t, await publish(alice, 'urn:test:quota0', payload, { id: 'over' }), 'room again');
});

test('an items answer holds at most MAX_RESULT_BYTES: the newest items that fit, and RSM <count/> of all (XEP-0060 §6.5.4)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const big = (n: number) => `<x xmlns='urn:test'>${String(n).repeat(100 * 1024)}</x>`;
  for (const n of [1, 2, 3]) ok(t, await publish(alice, 'urn:test:large', big(n), { id: `i${n}`, options: { 'pubsub#max_items': '10' } }), `publish ${n}`);
  const res = await items(alice, undefined, 'urn:test:large');
  t.deepEqual(itemIds(res), ['i2', 'i3'], 'three of 100 KiB pass 256 KiB: the newest two');
  t.is(res.getChild('pubsub', NS_PUBSUB)!.getChild('set', 'http://jabber.org/protocol/rsm')?.getChildText('count'), '3');
  const one = await items(alice, undefined, 'urn:test:large', '', " max_items='1'");
  t.deepEqual(itemIds(one), ['i3']);
  t.is(one.getChild('pubsub', NS_PUBSUB)!.getChild('set', 'http://jabber.org/protocol/rsm'), undefined, 'all asked for fit: no count');
});

test('notifications (§4.3): the owner’s resources; contacts with a presence subscription whose caps say NODE+notify; nobody else', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const alice2 = await connect(t, server.c2sPort, alice.name, 'two');
  await ready(alice2);
  const bob = await newUser(t, server, 'bob');
  const bobQuiet = await connect(t, server.c2sPort, bob.name, 'quiet');
  await ready(bobQuiet);
  const carol = await newUser(t, server, 'carol');
  await subscribe(bob, alice);
  // carol gets bob's presence (not alice's): bob's probes tell when her caps are known.
  await subscribe(carol, bob);
  const CTL = 'urn:test:ctl';
  const feats = ['urn:test:tune+notify', 'urn:xmpp:ping', `${CTL}+notify`];
  for (const p of [bob, carol]) {
    const f = p.c.items.length;
    answerCaps(p, feats, f);
    p.c.send(capsPresence(feats));
  }
  // bobQuiet's client asks for no tune notifications (only the control node's).
  const quiet = ['urn:xmpp:ping', `${CTL}+notify`];
  announceCaps(bobQuiet, quiet);
  await untilNotified(alice, bob, CTL);
  await untilNotified(alice, bobQuiet, CTL);
  await untilNotified(bob, carol, CTL);
  const from = [alice, alice2, bob, bobQuiet, carol].map((p) => p.c.items.length);
  ok(t, await publish(alice, 'urn:test:tune', `<tune xmlns='urn:test'><title>x</title></tune>`, { id: 'now' }), 'publish');
  const ev = await expect(bob, 'the notification', isEvent(alice.bare, 'urn:test:tune'), from[2]);
  t.is(ev.attrs.type, 'headline');
  t.is(ev.attrs.to, bob.jid);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.getChild('tune', 'urn:test')!.getChildText('title'), 'x');
  await expect(alice, "the owner's resource", isEvent(alice.bare, 'urn:test:tune'), from[0]);
  await expect(alice2, "the owner's other resource", isEvent(alice.bare, 'urn:test:tune'), from[1]);
  // Controls, sent by alice after the publish was answered: a notification to bobQuiet or carol would have been
  // sent before them, from alice's worker to their sessions (whose stanzas go out in order), so it would precede them.
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'control' }), 'control publish');
  const ctl = uid('ctl');
  alice.c.send(`<message to='${carol.jid}' id='${ctl}' type='chat'><body>control</body></message>`);
  t.false((await before(bobQuiet, 'the control notification', isEventItem(alice.bare, CTL, 'control'), from[3])).some(isEvent(alice.bare, 'urn:test:tune')), 'a resource without +notify gets none');
  t.false((await before(carol, 'the control message', (el) => el.name === 'message' && el.attrs.id === ctl, from[4])).some(isEvent(alice.bare, 'urn:test:tune')), 'no presence subscription, none');
});

test("notifications to the owner's own resources are filtered too (XEP-0163 §4, item 3): by their caps once known; a resource that sent none gets every node", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const quiet = await connect(t, server.c2sPort, alice.name, 'quiet');
  const all = await connect(t, server.c2sPort, alice.name, 'all');
  await Promise.all([ready(quiet), ready(all)]);
  const CTL = 'urn:test:own-ctl';
  const TUNE = 'urn:test:own-tune';
  const quietFeats = ['urn:xmpp:ping', `${CTL}+notify`];
  const allFeats = ['urn:xmpp:ping', `${CTL}+notify`, `${TUNE}+notify`];
  announceCaps(quiet, quietFeats);
  announceCaps(all, allFeats);
  // Until the server knows quiet's caps it gets every node (it has chosen nothing yet): publish a tune item and
  // a control item after it, each round, until quiet's control arrives without the tune item before it.
  for (let i = 0; ; i++) {
    if (i === 40) return t.fail("the owner's resource whose caps leave the node out still got its notifications after 40 rounds");
    const [fa, fq, fl] = [alice, quiet, all].map((p) => p.c.items.length);
    const [tuneId, ctlId] = [uid('tune'), uid('ctl')];
    ok(t, await publish(alice, TUNE, `<x xmlns='urn:test'/>`, { id: tuneId }), 'tune publish');
    ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: ctlId }), 'control publish');
    const quietGot = await before(quiet, 'the control notification', isEventItem(alice.bare, CTL, ctlId), fq);
    // The resource without caps, and the one whose caps ask for the node, get it every round.
    t.true((await before(alice, 'the control notification', isEventItem(alice.bare, CTL, ctlId), fa)).some(isEventItem(alice.bare, TUNE, tuneId)), 'no caps: every node');
    t.true((await before(all, 'the control notification', isEventItem(alice.bare, CTL, ctlId), fl)).some(isEventItem(alice.bare, TUNE, tuneId)), 'caps asking for the node');
    if (!quietGot.some(isEventItem(alice.bare, TUNE, tuneId))) break;
  }
  t.pass();
});

test('a blocked contact (XEP-0191) gets neither notifications nor the last item, either way', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  await subscribe(bob, alice);
  await subscribe(bob, carol);
  const feats = ['urn:test:b+notify'];
  announceCaps(bob, feats);
  await untilNotified(alice, bob, 'urn:test:b');
  const f0 = bob.c.items.length;
  ok(t, await publish(alice, 'urn:test:b', `<x xmlns='urn:test'/>`, { id: 'one' }), 'publish');
  await expect(bob, 'before the block', isEventItem(alice.bare, 'urn:test:b', 'one'), f0);
  const block = (action: 'block' | 'unblock') => iq(alice, 'set', `<${action} xmlns='urn:xmpp:blocking'><item jid='${bob.bare}'/></${action}>`);
  ok(t, await block('block'), 'alice blocks bob');
  const f1 = bob.c.items.length;
  ok(t, await publish(alice, 'urn:test:b', `<x xmlns='urn:test'/>`, { id: 'two' }), 'publish while blocked');
  // Control: alice unblocks bob and publishes again, after the blocked publish was answered; its notification
  // would have been sent before, from alice's worker to bob's session (whose stanzas go out in order).
  ok(t, await block('unblock'), 'alice unblocks bob');
  ok(t, await publish(alice, 'urn:test:b', `<x xmlns='urn:test'/>`, { id: 'three' }), 'publish once unblocked');
  // The blocked publish's item, never (another event of the node, a late probe of untilNotified, proves nothing).
  t.false((await before(bob, 'the notification once unblocked', isEventItem(alice.bare, 'urn:test:b', 'three'), f1)).some(isEventItem(alice.bare, 'urn:test:b', 'two')), 'no notification of the blocked publish');
  ok(t, await block('block'), 'alice blocks bob again');
  ok(t, await publish(carol, 'urn:test:b', `<x xmlns='urn:test'/>`, { id: 'carol' }), "carol's item");
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  answerCaps(later, feats, 0);
  await ready(later, capsPresence(feats));
  // Control: carol's last item. The last items at login go to the session one contact after another in roster
  // (JID) order, alice's before carol's: alice's, if sent, would precede it.
  t.false((await before(later, "carol's last item at login", isEventItem(carol.bare, 'urn:test:b', 'carol'), 0)).some(isEvent(alice.bare, 'urn:test:b')), 'no last item at login');
});

test('caps (XEP-0115): asked once per ver on a worker, verified before it is trusted for other sessions (§5.4)', async (t) => {
  const one = await startTestServer({ XMPP_WORKERS: '1' });
  t.teardown(() => one.stop());
  const alice = await newUser(t, one, 'alice');
  const feats = ['urn:test:v+notify'];
  const sessions: Peer[] = [];
  const counters: { asked: number }[] = [];
  // What the server asked of a session, up to a ping behind its presence: a question is sent while the
  // presence is handled (the ver not known, or known unverified), before the ping is read.
  const asked = async (p: Peer) => (await barrier(p, 0)).filter(isCapsQuery).length;
  for (const r of ['a', 'b']) {
    const p = await connect(t, one.c2sPort, alice.name, r);
    counters.push(answerCaps(p, feats, 0));
    await ready(p, capsPresence(feats));
    sessions.push(p);
  }
  await expect(sessions[0], 'the caps query', isCapsQuery, 0);
  t.is((await asked(sessions[0])) + (await asked(sessions[1])), 1, 'a verified ver is asked once');
  // A ver that does not hash to the answer: asked of each session, trusted for none but itself.
  const bad = capsVer(['something else']);
  const liars: { asked: number }[] = [];
  for (const r of ['c', 'd']) {
    const p = await connect(t, one.c2sPort, alice.name, r);
    liars.push(answerCaps(p, feats, 0));
    await ready(p, capsPresence(feats, bad));
    // Asked once another session's answer did not verify: awaited.
    await expect(p, 'the caps query', isCapsQuery, 0);
    sessions.push(p);
  }
  t.deepEqual(await Promise.all(sessions.slice(2).map(asked)), [1, 1], 'not cached');
  const from = sessions.map((p) => p.c.items.length);
  ok(t, await publish(alice, 'urn:test:v', `<x xmlns='urn:test'/>`), 'publish');
  for (const [i, p] of sessions.entries()) await expect(p, 'own notification', isEvent(alice.bare, 'urn:test:v'), from[i]);
});

test('caps (XEP-0115): asked once per ver on a node of two workers: the hub keeps what one worker verified, a session on the other worker is not asked', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  const NODE = `urn:test:${uid('shared')}`;
  const feats = [`${NODE}+notify`];
  const bobAsked = announceCaps(bob, feats);
  await untilNotified(alice, bob, NODE);
  t.is(bobAsked.asked, 1);
  // A session of another account on the other worker.
  const workerOf = (p: Peer) => server.hub.registry.lookup(p.jid)?.worker;
  const name = await newAccount(server, 'carol');
  let carol: Peer | undefined;
  for (let i = 0; i < 20 && !carol; i++) {
    const p = await connect(t, server.c2sPort, name, `r${i}`);
    if (workerOf(p) !== undefined && workerOf(p) !== workerOf(bob)) carol = p;
    else p.c.destroy();
  }
  if (!carol) throw new Error(`20 logins of ${name}, none on another worker than ${bob.jid}'s`);
  await ready(carol);
  await subscribe(carol, alice);
  // bob's worker wrote the verified ver to the hub when bob answered (before his first notification).
  t.truthy(server.hub.pep.caps.get({ hash: 'sha-1', ver: capsVer(feats) }), 'the hub has the ver');
  const from = carol.c.items.length;
  const carolAsked = answerCaps(carol, feats, from);
  carol.c.send(capsPresence(feats));
  // Known (asked or not): every question would have been sent before.
  await untilNotified(alice, carol, NODE);
  t.is(carolAsked.asked, 0, 'not asked again on the other worker');
  t.is(bobAsked.asked, 1);
});

test('caps lookups in flight are bounded per JID (MAX_CAPS_LOOKUPS_PER_JID): presences with new vers past it ask nothing; a later one asks once they are answered', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const from = alice.c.items.length;
  // Ten vers, one presence each, no answer yet: as many questions as the bound, then none.
  const vers = Array.from({ length: 10 }, (_, i) => capsVer([`urn:test:flood${i}+notify`]));
  for (const ver of vers) alice.c.send(capsPresence([], ver));
  const verOf = (q: Element) => q.getChild('query')!.attrs.node.split('#')[1];
  const questions: Element[] = [];
  for (let i = 0; i < MAX_CAPS_LOOKUPS_PER_JID; i++) questions.push(await expect(alice, `caps question ${i + 1}`, (el) => isCapsQuery(el) && !questions.includes(el), from));
  // Answered (as not known): the lookups are over.
  for (const q of questions) alice.c.send(`<iq type='error' id='${q.attrs.id}' to='${q.attrs.from}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);
  await barrier(alice, from);
  // A later presence with new caps is looked up again.
  const later = capsVer(['urn:test:later+notify']);
  alice.c.send(capsPresence(['urn:test:later+notify']));
  await expect(alice, 'the question for the later ver', (el) => isCapsQuery(el) && verOf(el) === later, from);
  const asked = (await barrier(alice, from)).filter(isCapsQuery).map(verOf);
  t.deepEqual(asked.filter((v) => v !== later).sort(), questions.map(verOf).sort(), `only ${MAX_CAPS_LOOKUPS_PER_JID} of the ten vers were asked`);
  t.is(asked.length, MAX_CAPS_LOOKUPS_PER_JID + 1);
  t.true(questions.every((q) => vers.includes(verOf(q))));
});

test('a caps answer is taken only from the session it was asked of (XEP-0115 §6.3): another that learnt the id cannot answer for it', async (t) => {
  // One worker: mallory's session is where bob's question waits.
  const one = await startTestServer({ XMPP_WORKERS: '1' });
  t.teardown(() => one.stop());
  const alice = await newUser(t, one, 'alice');
  const bob = await newUser(t, one, 'bob');
  const mallory = await newUser(t, one, 'mallory');
  await subscribe(bob, alice);
  const feats = ['urn:test:real+notify'];
  const from = bob.c.items.length;
  bob.c.send(capsPresence(feats));
  const q = await expect(bob, 'the caps query', isCapsQuery, from);
  const node = q.getChild('query')!.attrs.node;
  // mallory, told the id, answers first: a node of her choosing, which bob's ver does not hash to (the kind of
  // answer a session is trusted with for itself alone), then bob answers.
  mallory.c.send(`<iq type='result' id='${q.attrs.id}' to='${q.attrs.from}'><query xmlns='http://jabber.org/protocol/disco#info' node='${node}'><identity category='client' type='pc' name='pep test'/><feature var='urn:test:evil+notify'/></query></iq>`);
  // Her answer was handled before the ping behind it was answered.
  await barrier(mallory, mallory.c.items.length);
  bob.c.send(`<iq type='result' id='${q.attrs.id}' to='${q.attrs.from}'><query xmlns='http://jabber.org/protocol/disco#info' node='${node}'><identity category='client' type='pc' name='pep test'/>${feats.map((f) => `<feature var='${f}'/>`).join('')}</query></iq>`);
  // bob's own answer counts: alice's probes on the node his client asked for reach him.
  await untilNotified(alice, bob, 'urn:test:real');
  t.pass();
});

test('the last published item on a contact’s available presence (send_last_published_item on_sub_and_presence), for its own nodes too', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  await publish(alice, 'urn:test:mood', `<mood xmlns='urn:test'>happy</mood>`, { id: 'm1' });
  await publish(alice, 'urn:test:never', `<x xmlns='urn:test'/>`, { options: { 'pubsub#send_last_published_item': 'never' } });
  // A node named after 'never': its last item is sent after that node's would be (below).
  await publish(alice, 'urn:test:z-control', `<x xmlns='urn:test'/>`, { id: 'z' });
  await publish(bob, 'urn:test:mood', `<mood xmlns='urn:test'>mine</mood>`, { id: 'own' });
  bob.c.destroy();
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  const feats = ['urn:test:mood+notify', 'urn:test:never+notify', 'urn:test:z-control+notify'];
  answerCaps(later, feats, 0);
  await ready(later, capsPresence(feats));
  const ev = await expect(later, "alice's last item", isEvent(alice.bare, 'urn:test:mood'), 0);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.attrs.id, 'm1');
  const own = await expect(later, 'its own last item', isEvent(bob.bare, 'urn:test:mood'), 0);
  t.is(own.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.attrs.id, 'own');
  // Control: the last items of a contact's nodes go to the session one after another in node name order,
  // 'never' before 'z-control': the former's, if sent, would precede the latter's.
  t.false((await before(later, 'the control node’s last item', isEventItem(alice.bare, 'urn:test:z-control', 'z'), 0)).some(isEvent(alice.bare, 'urn:test:never')), 'not for a node that says never');
});

test('a last published item says when it was published (XEP-0163 §4.3.4, XEP-0060 §6.1.7: a XEP-0203 delay from the owner’s bare JID, stamped in UTC): to a contact’s new resource and to the owner’s; a live notification has none', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  const NODE = 'urn:test:dated';
  const lo = Date.now();
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'>then</x>`, { id: 'd1' }), 'publish');
  const hi = Date.now();
  await clockPast(hi);
  const feats = [`${NODE}+notify`];
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  answerCaps(later, feats, 0);
  await ready(later, capsPresence(feats));
  dated(t, await expect(later, "alice's last item", isEventItem(alice.bare, NODE, 'd1'), 0), alice.bare, lo, hi, "a contact's new resource");
  const alice2 = await connect(t, server.c2sPort, alice.name, 'two');
  answerCaps(alice2, feats, 0);
  await ready(alice2, capsPresence(feats));
  dated(t, await expect(alice2, 'its own last item', isEventItem(alice.bare, NODE, 'd1'), 0), alice.bare, lo, hi, "the owner's new resource");
  // Both have their caps known now: a publish is a live notification to each, without delay.
  const from = [later, alice2].map((p) => p.c.items.length);
  ok(t, await publish(alice, NODE, `<x xmlns='urn:test'>now</x>`, { id: 'd2' }), 'publish');
  t.true(undated(await expect(later, 'the notification', isEventItem(alice.bare, NODE, 'd2'), from[0])), "a contact's live notification: no delay");
  t.true(undated(await expect(alice2, 'the notification', isEventItem(alice.bare, NODE, 'd2'), from[1])), "the owner's live notification: no delay");
});

test('the last published item when the caps come in a later presence than the one that made the session available (XEP-0163 §4.3.3), once', async (t) => {
  // The account's own node: no subscription (and no approval, which sends last items of its own) involved.
  const bob = await newUser(t, server, 'bob');
  ok(t, await publish(bob, 'urn:test:late', `<x xmlns='urn:test'/>`, { id: 'l1' }), 'publish');
  // A new session of bob's becomes available without caps; they come with its next presence, a status.
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  await ready(later);
  const feats = ['urn:test:late+notify'];
  const from = later.c.items.length;
  answerCaps(later, feats, from);
  const status = (show: string) => `<presence><show>${show}</show><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:pep-test' ver='${capsVer(feats)}'/></presence>`;
  later.c.send(status('away'));
  await expect(later, 'the last item, once the caps are known', isEventItem(bob.bare, 'urn:test:late', 'l1'), from);
  // Had once: another status with the same caps, then a publish (the control), bring no second copy of l1.
  later.c.send(status('xa'));
  await barrier(later, from);
  ok(t, await publish(bob, 'urn:test:late', `<x xmlns='urn:test'/>`, { id: 'l2' }), 'control publish');
  const got = await before(later, 'the control notification', isEventItem(bob.bare, 'urn:test:late', 'l2'), from);
  t.is(got.filter(isEventItem(bob.bare, 'urn:test:late', 'l1')).length, 1, 'one last item');
});

test('the same item never twice: one notified to a session while its caps were asked is not sent again as the last published item once they are known', async (t) => {
  const bob = await newUser(t, server, 'bob');
  const NODE = 'urn:test:dup';
  // After NODE in name order: the session's own last items go out one node after another.
  const CTL = 'urn:test:dup-zz';
  // A ver the server does not know: it is asked, and the answer held.
  const feats = [`${NODE}+notify`, `${CTL}+notify`, `urn:test:${uid('v')}`];
  ok(t, await publish(bob, CTL, `<x xmlns='urn:test'/>`, { id: 'c' }), 'the control node’s item');
  const x = await connect(t, server.c2sPort, bob.name, 'x');
  await ready(x, capsPresence(feats));
  await expect(x, 'the caps question', isCapsQuery, 0);
  // Its own account's publish reaches it whatever its caps.
  ok(t, await publish(bob, NODE, `<x xmlns='urn:test'/>`, { id: 'p1' }), 'publish while the caps are asked');
  const ev = await expect(x, 'the notification', isEventItem(bob.bare, NODE, 'p1'), 0);
  const after = x.c.items.findIndex((it) => it.kind === 'el' && it.el === ev) + 1;
  answerCaps(x, feats, 0);
  t.false((await before(x, 'the control node’s last item', isEventItem(bob.bare, CTL, 'c'), after)).some(isEventItem(bob.bare, NODE, 'p1')), 'p1 not sent again');
});

test('the same item published again is another publish, notified again (XEP-0060 §7.1.2: re-publication is modification), also to a session that had it as its last item', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  const NODE = 'urn:test:again';
  const feats = [`${NODE}+notify`];
  announceCaps(bob, feats);
  await untilNotified(alice, bob, NODE);
  const same = `<x xmlns='urn:test'>same</x>`;
  const from = bob.c.items.length;
  ok(t, await publish(alice, NODE, same, { id: 'same' }), 'publish');
  const first = await expect(bob, 'the notification', isEventItem(alice.bare, NODE, 'same'), from);
  const next = bob.c.items.findIndex((it) => it.kind === 'el' && it.el === first) + 1;
  ok(t, await publish(alice, NODE, same, { id: 'same' }), 'the same again');
  await expect(bob, 'its notification too', isEventItem(alice.bare, NODE, 'same'), next);
  // A new session gets it as its last item, then its publish once more as a notification.
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  answerCaps(later, feats, 0);
  await ready(later, capsPresence(feats));
  const last = await expect(later, 'the last item', isEventItem(alice.bare, NODE, 'same'), 0);
  const after = later.c.items.findIndex((it) => it.kind === 'el' && it.el === last) + 1;
  ok(t, await publish(alice, NODE, same, { id: 'same' }), 'and again');
  await expect(later, 'the notification after the last item', isEventItem(alice.bare, NODE, 'same'), after);
});

test('the last published item on subscription approval (send_last_published_item on_sub), to the new subscriber’s resources that ask for it', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const lo = Date.now();
  await publish(alice, 'urn:test:status', `<s xmlns='urn:test'>here</s>`, { id: 's1', options: { 'pubsub#send_last_published_item': 'on_sub' } });
  const hi = Date.now();
  await publish(alice, 'urn:test:hidden', `<s xmlns='urn:test'/>`, { options: { 'pubsub#access_model': 'whitelist' } });
  const feats = ['urn:test:status+notify', 'urn:test:hidden+notify'];
  announceCaps(bob, feats);
  // bob's caps taken into account: the probes of carol, whose presence he gets, reach him.
  const carol = await newUser(t, server, 'carol');
  await subscribe(bob, carol);
  await untilNotified(carol, bob, 'urn:test:status');
  const from = bob.c.items.length;
  await subscribe(bob, alice);
  const ev = await expect(bob, 'the last item on approval', isEvent(alice.bare, 'urn:test:status'), from);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.attrs.id, 's1');
  dated(t, ev, alice.bare, lo, hi, 'the last item on approval');
  // The status item is the control: the last items on approval go out one node after another in node name
  // order, from the same worker to bob's session, 'hidden' before 'status'.
  t.false((await before(bob, 'the last item on approval', isEvent(alice.bare, 'urn:test:status'), from)).some(isEvent(alice.bare, 'urn:test:hidden')), 'not a node it may not see');
});

test('send_last_published_item on_sub: not sent at a contact’s available presence, only on subscription', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  // Subscribed before anything is published (bob's session has no caps: nothing is sent on the approval).
  await subscribe(bob, alice);
  ok(t, await publish(alice, 'urn:test:onsub', `<x xmlns='urn:test'/>`, { id: 's', options: { 'pubsub#send_last_published_item': 'on_sub' } }), 'on_sub node');
  ok(t, await publish(alice, 'urn:test:zz-ctl', `<x xmlns='urn:test'/>`, { id: 'z' }), 'control node (on_sub_and_presence)');
  const later = await connect(t, server.c2sPort, bob.name, 'later');
  const feats = ['urn:test:onsub+notify', 'urn:test:zz-ctl+notify'];
  answerCaps(later, feats, 0);
  await ready(later, capsPresence(feats));
  // Control: a contact's last items go to the session one node after another in name order, 'onsub' before 'zz-ctl'.
  t.false((await before(later, 'the control node’s last item', isEventItem(alice.bare, 'urn:test:zz-ctl', 'z'), 0)).some(isEvent(alice.bare, 'urn:test:onsub')), 'not at presence');
});

test('send_last_published_item never: not sent on subscription approval either', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  ok(t, await publish(alice, 'urn:test:never', `<x xmlns='urn:test'/>`, { id: 'n', options: { 'pubsub#send_last_published_item': 'never' } }), 'never node');
  ok(t, await publish(alice, 'urn:test:status', `<x xmlns='urn:test'/>`, { id: 's', options: { 'pubsub#send_last_published_item': 'on_sub' } }), 'control node (on_sub)');
  const feats = ['urn:test:never+notify', 'urn:test:status+notify'];
  announceCaps(bob, feats);
  // bob's caps taken into account: the probes of carol, whose presence he gets, reach him.
  const carol = await newUser(t, server, 'carol');
  await subscribe(bob, carol);
  await untilNotified(carol, bob, 'urn:test:status');
  const from = bob.c.items.length;
  await subscribe(bob, alice);
  // Control: the last items on approval go out one node after another in name order, 'never' before 'status'.
  t.false((await before(bob, 'the control node’s last item', isEventItem(alice.bare, 'urn:test:status', 's'), from)).some(isEvent(alice.bare, 'urn:test:never')), 'not on approval');
});

test('a repeated approval, which changes no roster, sends no last item again (XEP-0060 on_sub: when the subscription is made)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  ok(t, await publish(alice, 'urn:test:status', `<s xmlns='urn:test'/>`, { id: 's1', options: { 'pubsub#send_last_published_item': 'on_sub' } }), 'publish');
  const CTL = 'urn:test:zz-ctl';
  const feats = ['urn:test:status+notify', `${CTL}+notify`];
  announceCaps(bob, feats);
  await subscribe(bob, alice);
  await untilNotified(alice, bob, CTL);
  const from = bob.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  // Control: a publish of alice's after it. The last items of an approval are read and sent one node after another
  // in name order, 'status' before 'zz-ctl', while alice's next stanza waits for the approval's own handling: one
  // sent for the repeated approval would come before the control's notification.
  ok(t, await publish(alice, CTL, `<x xmlns='urn:test'/>`, { id: 'control' }), 'control publish');
  t.false((await before(bob, 'the control notification', isEventItem(alice.bare, CTL, 'control'), from)).some(isEvent(alice.bare, 'urn:test:status')), 'no last item');
});

test('an OMEMO-shaped device list and bundle (open access) exchanged between two clients', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(alice, bob);
  await subscribe(bob, alice);
  const LIST = 'eu.siacs.conversations.axolotl.devicelist';
  const feats = [`${LIST}+notify`];
  announceCaps(bob, feats);
  const open = { 'pubsub#access_model': 'open' };
  await untilNotified(alice, bob, LIST, { options: open });
  const from = bob.c.items.length;
  ok(t, await publish(alice, LIST, `<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>`, { id: 'current', options: open }), 'device list');
  ok(t, await publish(alice, 'eu.siacs.conversations.axolotl.bundles:1234', `<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>AAAA</signedPreKeyPublic><identityKey>BBBB</identityKey><prekeys><preKeyPublic preKeyId='1'>CCCC</preKeyPublic></prekeys></bundle>`, { id: 'current', options: open }), 'bundle');
  const ev = await expect(bob, 'the device list', isEventItem(alice.bare, LIST, 'current'), from);
  const device = ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.getChild('list', 'eu.siacs.conversations.axolotl')!.getChild('device')!.attrs.id;
  t.is(device, '1234');
  const bundle = await items(bob, alice.bare, `eu.siacs.conversations.axolotl.bundles:${device}`, '', ` max_items='1'`);
  ok(t, bundle, 'bundle fetched');
  t.is(bundle.getChild('pubsub')!.getChild('items')!.getChild('item')!.getChild('bundle', 'eu.siacs.conversations.axolotl')!.getChildText('identityKey'), 'BBBB');
  // Open: a stranger reads it too.
  const stranger = await newUser(t, server, 'stranger');
  t.deepEqual(itemIds(await items(stranger, alice.bare, LIST)), ['current']);
});

test('PEP nodes go with the account', async (t) => {
  const name = fresh('dora');
  await server.addUser(name, `${name}-pw`);
  const p = await connect(t, server.c2sPort, name, 'one');
  ok(t, await publish(p, 'urn:test:gone', `<x xmlns='urn:test'/>`), 'publish');
  const id = uid('unreg');
  const removed = await within(p.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, id), WAIT, 'in-band removal');
  t.is(removed.attrs.type, 'result', removed.toString());
  await server.addUser(name, `${name}-pw`);
  const again = await connect(t, server.c2sPort, name, 'two');
  refused(t, await items(again, undefined, 'urn:test:gone'), 'item-not-found', undefined, 'a new account of the same name has no node');
});
