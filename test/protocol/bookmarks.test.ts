// XEP-0402 §5.3 (bookmarks compatibility) end to end, over real sockets
// with real TLS: XEP-0048 bookmarks set in private XML storage (XEP-0049)
// become urn:xmpp:bookmarks:1 items (one per room, its JID the item id, on
// a node of whitelist access, items up to 'max', persisted, never sent as
// last item), changed rooms alone notified (§5.3.2); an XEP-0402 publish or
// retract changes that room alone in private XML (§5.3.1); XEP-0048's PEP
// node (storage:bookmarks) kept as a copy of the list, and taken as a
// replacement list when a client publishes it; an XEP-0402 client's
// publish-options hold on the node the server made; the features on the
// account (§5.3); the bounds; a contact cannot read them; nothing bounces
// back (notifications counted); two devices of one account on the two
// workers adding rooms at the same time lose none of them.
import test from 'ava';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, newUser, ready, subscribe, type Peer } from '../helpers/im.ts';
import { iq, isEvent, isEventItem, itemIds, items, NS_EVENT, NS_OWNER, ok, publish, pubsubError } from '../helpers/pep.ts';
import { MAX_ITEMS } from '../../src/pep/store.ts';

const NS_PRIVATE = 'jabber:iq:private';
const NS_LEGACY = 'storage:bookmarks';
const NS_B2 = 'urn:xmpp:bookmarks:1';
const CONTROL = 'urn:test:bookmarks-control';
/** XEP-0402 §3.3's publish-options. */
const OPTIONS = { 'pubsub#persist_items': 'true', 'pubsub#max_items': 'max', 'pubsub#send_last_published_item': 'never', 'pubsub#access_model': 'whitelist' };

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
});
test.after.always(async () => {
  await server?.stop();
});


async function privateIq(p: Peer, type: 'get' | 'set', inner: string): Promise<Element> {
  const id = uid('priv');
  return within(p.c.request(`<iq type='${type}' id='${id}'><query xmlns='${NS_PRIVATE}'>${inner}</query></iq>`, id), WAIT, `${p.jid}: private ${type}`);
}
const setLegacy = (p: Peer, inner: string) => privateIq(p, 'set', `<storage xmlns='${NS_LEGACY}'>${inner}</storage>`);
/** The <storage/> private XML holds. */
async function legacy(p: Peer): Promise<Element> {
  const res = await privateIq(p, 'get', `<storage xmlns='${NS_LEGACY}'/>`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res.getChild('query', NS_PRIVATE)!.getChild('storage', NS_LEGACY)!;
}
/** Its rooms as [jid, name, autojoin (XEP-0048: a boolean, false when absent), nick]. */
const rooms = (s: Element) => s.getChildren('conference').map((c) => [c.attrs.jid, c.attrs.name, ['true', '1'].includes(c.attrs.autojoin), c.getChildText('nick') ?? undefined]);

/** The XEP-0402 items: id → the <conference/>. */
async function pepBookmarks(p: Peer): Promise<Map<string, Element>> {
  const res = await items(p, undefined, NS_B2);
  const out = new Map<string, Element>();
  if (res.attrs.type !== 'result') return out;
  for (const it of res.getChild('pubsub')!.getChild('items')!.getChildren('item')) out.set(it.attrs.id, it.getChild('conference', NS_B2)!);
  return out;
}

/** Events of `node` from the owner that reached its own session from `from`, counted once a control item published after the action is there. */
async function eventsOf(p: Peer, node: string, from: number): Promise<Element[]> {
  const id = uid('control');
  const res = await publish(p, CONTROL, `<c xmlns='urn:test'/>`, { id });
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  await expect(p, 'the control notification', isEventItem(p.bare, CONTROL, id), from);
  return (await barrier(p, from)).filter(isEvent(p.bare, node));
}
/** What the events of a node say: ['+id'] for a publish, ['-id'] for a retraction. */
const summary = (events: Element[]) =>
  events.flatMap((e) => e.getChild('event', NS_EVENT)!.getChild('items')!.children.flatMap((c) => (typeof c === 'string' ? [] : [`${c.name === 'retract' ? '-' : '+'}${c.attrs.id}`]))).sort();

test('§5.3: the compatibility features on the account', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const res = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, alice.bare);
  ok(t, res, 'disco#info');
  const features = res.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
  t.true(features.includes(`${NS_B2}#compat`));
  t.true(features.includes(`${NS_B2}#compat-pep`));
});

test('§5.3.2: bookmarks set in private XML become XEP-0402 items, changed rooms alone notified; the legacy node keeps a copy; a contact cannot read them', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  let from = alice.c.items.length;
  ok(t, await setLegacy(alice, `<conference jid='a@conf.example' name='A' autojoin='true'><nick>al</nick><password>pw</password></conference><conference jid='b@conf.example' name='B'/><url name='site' url='https://example.org/'/>`), 'private set');
  // Published before the private set was answered.
  const b2 = await pepBookmarks(alice);
  t.deepEqual([...b2.keys()].sort(), ['a@conf.example', 'b@conf.example'], 'one item per room, its JID the id');
  const a = b2.get('a@conf.example')!;
  t.is(a.attrs.name, 'A');
  t.true(['true', '1'].includes(a.attrs.autojoin));
  t.is(a.getChildText('nick'), 'al');
  t.is(a.getChildText('password'), 'pw');
  t.false(['true', '1'].includes(b2.get('b@conf.example')!.attrs.autojoin));
  // The node as XEP-0402 §3.3 asks: owner only, every item kept, never sent as last item.
  const cfg = await iq(alice, 'get', `<pubsub xmlns='${NS_OWNER}'><configure node='${NS_B2}'/></pubsub>`);
  const field = (v: string) => cfg.getChild('pubsub', NS_OWNER)!.getChild('configure')!.getChild('x')!.getChildren('field').find((f) => f.attrs.var === v)?.getChildText('value');
  t.is(field('pubsub#access_model'), 'whitelist');
  t.is(field('pubsub#max_items'), String(MAX_ITEMS));
  t.is(field('pubsub#persist_items'), '1');
  t.is(field('pubsub#send_last_published_item'), 'never');
  t.deepEqual(summary(await eventsOf(alice, NS_B2, from)), ['+a@conf.example', '+b@conf.example'], 'each room notified once');
  // XEP-0048's PEP node: the same list, <url/> too.
  const legacyNode = await items(alice, undefined, NS_LEGACY);
  t.deepEqual(itemIds(legacyNode), ['current']);
  const copy = legacyNode.getChild('pubsub')!.getChild('items')!.getChild('item')!.getChild('storage', NS_LEGACY)!;
  t.deepEqual(rooms(copy), [['a@conf.example', 'A', true, 'al'], ['b@conf.example', 'B', false, undefined]]);
  t.is(copy.getChild('url')?.attrs.url, 'https://example.org/');
  // Whitelist: a contact with a presence subscription reads none of it.
  const refusal = await items(bob, alice.bare, NS_B2);
  t.is(stanzaError(refusal).condition, 'not-allowed');
  t.is(pubsubError(refusal), 'closed-node');

  // The same list again: nothing changed, nothing published.
  from = alice.c.items.length;
  ok(t, await setLegacy(alice, `<conference name='A' autojoin='1' jid='a@conf.example'><nick>al</nick><password>pw</password></conference><conference jid='b@conf.example' name='B' autojoin='false'/><url name='site' url='https://example.org/'/>`), 'the same list');
  t.deepEqual(await eventsOf(alice, NS_B2, from), [], 'no notification for rooms that did not change');
  t.deepEqual(await eventsOf(alice, NS_LEGACY, from), [], 'nor for the legacy copy');
  // B changed, C added, A removed: those alone.
  from = alice.c.items.length;
  ok(t, await setLegacy(alice, `<conference jid='b@conf.example' name='B'><nick>bee</nick></conference><conference jid='c@conf.example' name='C' autojoin='true'/>`), 'a new list');
  t.deepEqual(summary(await eventsOf(alice, NS_B2, from)), ['+b@conf.example', '+c@conf.example', '-a@conf.example']);
  t.deepEqual([...(await pepBookmarks(alice)).keys()].sort(), ['b@conf.example', 'c@conf.example']);
  t.is((await pepBookmarks(alice)).get('b@conf.example')!.getChildText('nick'), 'bee');
  // No bookmarks left: every item retracted.
  from = alice.c.items.length;
  ok(t, await setLegacy(alice, ''), 'an empty list');
  t.deepEqual(summary(await eventsOf(alice, NS_B2, from)), ['-b@conf.example', '-c@conf.example']);
  t.deepEqual(rooms(await legacy(alice)), []);
});

test('§5.3.1: an XEP-0402 publish or retract changes that room alone in private XML; its publish-options hold on the node the server made', async (t) => {
  const alice = await newUser(t, server, 'alice');
  ok(t, await setLegacy(alice, `<conference jid='old@conf.example' name='Old'/><url name='site' url='https://example.org/'/>`), 'a legacy list');
  let from = alice.c.items.length;
  ok(t, await publish(alice, NS_B2, `<conference xmlns='${NS_B2}' name='The Play' autojoin='true'><nick>JC</nick><extensions><state xmlns='urn:test:ext'>x</state></extensions></conference>`, { id: 'theplay@conf.example', options: OPTIONS }), 'XEP-0402 publish with its publish-options');
  let s = await legacy(alice);
  t.deepEqual(rooms(s), [['old@conf.example', 'Old', false, undefined], ['theplay@conf.example', 'The Play', true, 'JC']], 'the room added, the others kept');
  t.is(s.getChild('url')?.attrs.url, 'https://example.org/', '<url/> kept');
  t.is(s.getChildren('conference')[1].getChild('state', 'urn:test:ext')?.getText(), 'x', 'its extensions carried along');
  t.deepEqual(summary(await eventsOf(alice, NS_B2, from)), ['+theplay@conf.example'], 'the publish alone is notified: nothing bounces back');
  t.is((await eventsOf(alice, NS_LEGACY, from)).length, 1, 'the legacy copy written once');

  // A legacy client writes back what it read: nothing changes on the PEP side (extensions included).
  from = alice.c.items.length;
  ok(t, await privateIq(alice, 'set', s.toString()), 'the list written back as read');
  t.deepEqual(await eventsOf(alice, NS_B2, from), []);

  // Changed in place, then retracted.
  ok(t, await publish(alice, NS_B2, `<conference xmlns='${NS_B2}' name='Old room'/>`, { id: 'old@conf.example', options: OPTIONS }), 'a change');
  t.deepEqual(rooms(await legacy(alice))[0], ['old@conf.example', 'Old room', false, undefined], 'in its place');
  from = alice.c.items.length;
  ok(t, await iq(alice, 'set', `<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='${NS_B2}' notify='true'><item id='theplay@conf.example'/></retract></pubsub>`), 'retract');
  s = await legacy(alice);
  t.deepEqual(rooms(s), [['old@conf.example', 'Old room', false, undefined]]);
  t.deepEqual(summary(await eventsOf(alice, NS_B2, from)), ['-theplay@conf.example'], 'the retraction alone');
  // A purge empties the list of its rooms; <url/> stays.
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_OWNER}'><purge node='${NS_B2}'/></pubsub>`), 'purge');
  s = await legacy(alice);
  t.deepEqual(rooms(s), []);
  t.is(s.getChild('url')?.attrs.url, 'https://example.org/');
});

test("XEP-0048's PEP node: a client's publish there is a replacement list, for private XML and the XEP-0402 items", async (t) => {
  const alice = await newUser(t, server, 'alice');
  ok(t, await publish(alice, NS_B2, `<conference xmlns='${NS_B2}' name='Gone'/>`, { id: 'gone@conf.example', options: OPTIONS }), 'an XEP-0402 bookmark');
  const from = alice.c.items.length;
  ok(t, await publish(alice, NS_LEGACY, `<storage xmlns='${NS_LEGACY}'><conference jid='x@conf.example' name='X' autojoin='true'><nick>n</nick></conference></storage>`, { id: 'current', options: { 'pubsub#persist_items': 'true', 'pubsub#access_model': 'whitelist' } }), 'XEP-0048 §3 publish');
  t.deepEqual(rooms(await legacy(alice)), [['x@conf.example', 'X', true, 'n']]);
  const b2 = await pepBookmarks(alice);
  t.deepEqual([...b2.keys()], ['x@conf.example']);
  t.deepEqual(summary(await eventsOf(alice, NS_B2, from)), ['+x@conf.example', '-gone@conf.example']);
  t.is((await eventsOf(alice, NS_LEGACY, from)).length, 1, "the client's publish alone: the node is not written again");
});

test('bounds: a private XML list of more rooms than a node keeps is refused, and changes nothing', async (t) => {
  const alice = await newUser(t, server, 'alice');
  ok(t, await setLegacy(alice, `<conference jid='keep@conf.example'/>`), 'a list');
  const many = Array.from({ length: MAX_ITEMS + 1 }, (_, i) => `<conference jid='r${i}@conf.example'/>`).join('');
  const res = await setLegacy(alice, many);
  t.is(res.attrs.type, 'error');
  t.is(stanzaError(res).condition, 'policy-violation');
  t.deepEqual(rooms(await legacy(alice)), [['keep@conf.example', undefined, false, undefined]]);
  t.deepEqual([...(await pepBookmarks(alice)).keys()], ['keep@conf.example']);
});

test('two devices of one account on two workers, each adding rooms at the same time: private XML and the legacy node keep every room', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const workerOf = (p: Peer) => server.hub.registry.lookup(p.jid)?.worker;
  let phone: Peer | undefined;
  for (let i = 0; !phone; i++) {
    if (i === 20) throw new Error(`20 logins of ${alice.name}, none on another worker than ${alice.jid}'s`);
    const p = await connect(t, server.c2sPort, alice.name, `phone${i}`);
    if (workerOf(p) !== undefined && workerOf(p) !== workerOf(alice)) phone = p;
    else p.c.destroy();
  }
  await ready(phone);
  t.not(workerOf(phone), workerOf(alice), 'the two devices on two workers');
  // Each device adds its rooms one after the other, both at once: each bridge run reads the list, adds its room and
  // writes it back, while the other worker's does the same.
  const ROOMS = 15;
  const add = async (p: Peer, tag: string) => {
    for (let i = 0; i < ROOMS; i++) ok(t, await publish(p, NS_B2, `<conference xmlns='${NS_B2}' name='${tag} ${i}'/>`, { id: `${tag}${i}@conf.example`, options: OPTIONS }), `${tag} ${i}`);
  };
  await Promise.all([add(alice, 'desk'), add(phone, 'phone')]);
  const all = [...Array.from({ length: ROOMS }, (_, i) => `desk${i}@conf.example`), ...Array.from({ length: ROOMS }, (_, i) => `phone${i}@conf.example`)].sort();
  t.deepEqual([...(await pepBookmarks(alice)).keys()].sort(), all, 'the XEP-0402 node');
  t.deepEqual(rooms(await legacy(alice)).map((r) => r[0]).sort(), all, 'private XML: no room lost');
  const copy = (await items(phone, undefined, NS_LEGACY)).getChild('pubsub')!.getChild('items')!.getChild('item')!.getChild('storage', NS_LEGACY)!;
  t.deepEqual(rooms(copy).map((r) => r[0]).sort(), all, 'the legacy node: the same list');
});
