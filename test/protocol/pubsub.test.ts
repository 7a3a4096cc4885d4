// The publish-subscribe service (XEP-0060) at pubsub.<domain>, over real
// sockets with real TLS: discovery (§5), node creation by local users (§8.1,
// instant nodes too), publish with the node's publish model (§7.1),
// subscriptions (§6.1, §6.2) with the last item on subscription (§6.1.7),
// notifications of publish, retract, purge and delete to subscribers,
// items (§6.5), the access models open and whitelist with affiliations
// (§4.1, §8.9), presence and roster (groups) as the owner's roster says,
// the publish models, send_last_published_item never, the owner's
// management of subscriptions (§8.8), the requester's own subscriptions
// and affiliations (§5.6, §5.7), and the bounds; subscriptions gone with
// the account; the service at another domain (XMPP_PUBSUB_DOMAIN); the
// service as a roster contact (§12.4) and the last items of
// on_sub_and_presence nodes when a subscriber's presence reaches it; a last
// item dated with the time of its publish (XEP-0203), a live notification not.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError } from '../helpers/protocol.ts';
import { barrier, connect, expect, fresh, isPresence, newUser, NS_ROSTER, push, ready, rosterOf, subscribe, summary, type Peer } from '../helpers/im.ts';
import { before, clockPast, dated, form, iq, isEvent, isEventItem, itemIds, items, NODE_CONFIG, NS_EVENT, NS_OWNER, NS_PUBSUB, ok, publish, refused, undated } from '../helpers/pep.ts';

let server: TestServer;
let service: string;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
  service = `pubsub.${server.config.domain}`;
});
test.after.always(async () => {
  await server?.stop();
});

let nodes = 0;
const freshNode = () => `urn:test:node:${++nodes}:${process.pid}`;
const create = (p: Peer, node: string, config?: Record<string, string | string[]>) => iq(p, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create node='${node}'/>${config ? `<configure>${form(NODE_CONFIG, config)}</configure>` : ''}</pubsub>`, service);
const sub = (p: Peer, node: string, jid = p.jid) => iq(p, 'set', `<pubsub xmlns='${NS_PUBSUB}'><subscribe node='${node}' jid='${jid}'/></pubsub>`, service);
const unsub = (p: Peer, node: string, jid = p.jid) => iq(p, 'set', `<pubsub xmlns='${NS_PUBSUB}'><unsubscribe node='${node}' jid='${jid}'/></pubsub>`, service);
const owner = (p: Peer, type: 'get' | 'set', inner: string) => iq(p, type, `<pubsub xmlns='${NS_OWNER}'>${inner}</pubsub>`, service);
const pub = (p: Peer, node: string, id: string, opts: { options?: Record<string, string> } = {}) => publish(p, node, `<entry xmlns='urn:test'>${id}</entry>`, { id, to: service, ...opts });
const isDeleted = (node: string) => (el: Element) => el.attrs.from === service && el.getChild('event', NS_EVENT)?.getChild('delete')?.attrs.node === node;

test('discovery (§5): listed in the server’s disco#items; a pubsub/service identity with its features; nodes and their items', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const list = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#items'/>`, server.config.domain);
  t.true(list.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === service), list.toString());
  const info = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, service);
  ok(t, info, 'disco#info');
  const q = info.getChild('query')!;
  t.true(q.getChildren('identity').some((i) => i.attrs.category === 'pubsub' && i.attrs.type === 'service'));
  const features = new Set(q.getChildren('feature').map((f) => f.attrs.var));
  for (const f of ['create-nodes', 'instant-nodes', 'publish', 'subscribe', 'retrieve-items', 'retract-items', 'purge-nodes', 'delete-nodes', 'modify-affiliations', 'manage-subscriptions', 'access-whitelist']) t.true(features.has(`${NS_PUBSUB}#${f}`), f);
  const node = freshNode();
  ok(t, await create(alice, node), 'create');
  ok(t, await pub(alice, node, 'one'), 'publish');
  const nodeInfo = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info' node='${node}'/>`, service);
  t.true(nodeInfo.getChild('query')!.getChildren('identity').some((i) => i.attrs.type === 'leaf'), nodeInfo.toString());
  refused(t, await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info' node='urn:test:none'/>`, service), 'item-not-found', undefined, 'no such node');
  const all = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#items'/>`, service);
  t.true(all.getChild('query')!.getChildren('item').some((i) => i.attrs.node === node && i.attrs.jid === service));
  const its = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#items' node='${node}'/>`, service);
  t.deepEqual(its.getChild('query')!.getChildren('item').map((i) => i.attrs.name), ['one']);
});

test('create (§8.1): named, instant (the service names it), conflict; publish (§7.1) owner only under the default model; auto-create', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node), 'create');
  refused(t, await create(bob, node), 'conflict', undefined, 'exists');
  const instant = await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create/></pubsub>`, service);
  ok(t, instant, 'instant');
  const made = instant.getChild('pubsub', NS_PUBSUB)?.getChild('create')?.attrs.node;
  t.truthy(made, 'the instant node’s name is returned (§8.1.2)');
  ok(t, await pub(alice, made!, 'x'), 'publish to the instant node');
  refused(t, await pub(bob, node, 'b'), 'forbidden', undefined, 'not a publisher');
  const auto = freshNode();
  ok(t, await pub(bob, auto, 'first'), 'auto-create (§7.1.4): bob owns what he made');
  const affs = await iq(bob, 'get', `<pubsub xmlns='${NS_PUBSUB}'><affiliations/></pubsub>`, service);
  t.true(affs.getChild('pubsub')!.getChild('affiliations')!.getChildren('affiliation').some((a) => a.attrs.node === auto && a.attrs.affiliation === 'owner'), affs.toString());
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><publish node='${node}'><item><a xmlns='x'/><b xmlns='x'/></item></publish></pubsub>`, service), 'bad-request', 'invalid-payload', 'two payloads');
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><publish node='${node}'><item/></publish></pubsub>`, service), 'bad-request', 'payload-required', 'no payload');
  refused(t, await pub(alice, node, 'o', { options: { 'pubsub#access_model': 'whitelist' } }), 'conflict', 'precondition-not-met', 'publish-options the node does not have');
  // The publish model (§16.4.3 pubsub#publish_model): open lets anyone publish.
  ok(t, await owner(alice, 'set', `<configure node='${node}'>${form(NODE_CONFIG, { 'pubsub#publish_model': 'open' })}</configure>`), 'configure');
  ok(t, await pub(bob, node, 'by-bob'), 'open publish model');
  t.deepEqual(itemIds(await items(bob, service, node)), ['by-bob']);
});

test('subscribe (§6.1) with the last item (§6.1.7), notifications of publish and retract to the subscription’s JID, unsubscribe (§6.2)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#max_items': '5' }), 'create');
  ok(t, await pub(alice, node, 'before'), 'an item before bob subscribes');
  refused(t, await sub(bob, node, alice.jid), 'bad-request', 'invalid-jid', "another's JID (§6.1.3.1)");
  refused(t, await sub(bob, 'urn:test:none'), 'item-not-found', undefined, 'no such node');
  const f0 = bob.c.items.length;
  const res = await sub(bob, node);
  ok(t, res, 'subscribe');
  const s = res.getChild('pubsub', NS_PUBSUB)!.getChild('subscription')!;
  t.is(s.attrs.subscription, 'subscribed');
  t.is(s.attrs.jid, bob.jid);
  t.truthy(s.attrs.subid);
  const last = await expect(bob, 'the last item on subscription', isEventItem(service, node, 'before'), f0);
  t.is(last.attrs.from, service);
  t.is(last.attrs.to, bob.jid);
  const f1 = bob.c.items.length;
  ok(t, await pub(alice, node, 'next'), 'publish');
  const ev = await expect(bob, 'the notification', isEventItem(service, node, 'next'), f1);
  t.is(ev.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.getChild('entry', 'urn:test')!.getText(), 'next', 'with its payload');
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='${node}' notify='true'><item id='next'/></retract></pubsub>`, service), 'retract');
  await expect(bob, 'the retraction', (el) => isEvent(service, node)(el) && el.getChild('event')!.getChild('items')!.getChild('retract')?.attrs.id === 'next', f1);
  refused(t, await iq(bob, 'set', `<pubsub xmlns='${NS_PUBSUB}'><retract node='${node}'><item id='before'/></retract></pubsub>`, service), 'forbidden', undefined, 'a subscriber does not retract');
  const mine = await iq(bob, 'get', `<pubsub xmlns='${NS_PUBSUB}'><subscriptions/></pubsub>`, service);
  t.deepEqual(mine.getChild('pubsub')!.getChild('subscriptions')!.getChildren('subscription').map((x) => [x.attrs.node, x.attrs.jid]), [[node, bob.jid]], '§5.6');
  ok(t, await unsub(bob, node), 'unsubscribe');
  refused(t, await unsub(bob, node), 'unexpected-request', 'not-subscribed', 'twice (§6.2.3.2)');
  const f2 = bob.c.items.length;
  ok(t, await pub(alice, node, 'after'), 'publish after');
  // Control: a subscription of bob's bare JID on another node, then a publish there; it reaches bob after anything the first publish caused.
  const control = freshNode();
  ok(t, await create(alice, control), 'control node');
  ok(t, await sub(bob, control, bob.bare), 'a bare-JID subscription');
  ok(t, await pub(alice, control, 'c'), 'control publish');
  const seen = await before(bob, 'the control notification', isEventItem(service, control, 'c'), f2);
  t.false(seen.some(isEventItem(service, node, 'after')), 'no notification after unsubscribing');
});

test('purge and delete (§8.5, §8.4): owners only, subscribers told; the node’s subscriptions go with it', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node), 'create');
  ok(t, await sub(bob, node), 'subscribe');
  ok(t, await pub(alice, node, 'a'), 'publish');
  refused(t, await owner(bob, 'set', `<purge node='${node}'/>`), 'forbidden', undefined, 'purge by a subscriber');
  refused(t, await owner(bob, 'set', `<delete node='${node}'/>`), 'forbidden', undefined, 'delete by a subscriber');
  const f = bob.c.items.length;
  ok(t, await owner(alice, 'set', `<purge node='${node}'/>`), 'purge');
  await expect(bob, 'the purge', (el) => el.attrs.from === service && el.getChild('event', NS_EVENT)?.getChild('purge')?.attrs.node === node, f);
  t.deepEqual(itemIds(await items(bob, service, node)), []);
  ok(t, await owner(alice, 'set', `<delete node='${node}'/>`), 'delete');
  await expect(bob, 'the deletion', isDeleted(node), f);
  refused(t, await items(bob, service, node), 'item-not-found', undefined, 'deleted');
  ok(t, await create(alice, node), 'made again');
  const subs = await owner(alice, 'get', `<subscriptions node='${node}'/>`);
  t.deepEqual(subs.getChild('pubsub', NS_OWNER)!.getChild('subscriptions')!.getChildren('subscription'), [], 'none of the old node’s');
});

test('access (§4.5, §4.1): whitelist refuses (closed-node) until the owner makes one a member; an outcast is forbidden and unsubscribed; a node keeps an owner', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#access_model': 'whitelist' }), 'create');
  ok(t, await pub(alice, node, 'secret'), 'publish');
  refused(t, await sub(bob, node), 'not-allowed', 'closed-node', 'subscribe, not on the whitelist');
  refused(t, await items(bob, service, node), 'not-allowed', 'closed-node', 'items, not on the whitelist');
  t.false((await iq(bob, 'get', `<query xmlns='http://jabber.org/protocol/disco#items'/>`, service)).getChild('query')!.getChildren('item').some((i) => i.attrs.node === node), 'not listed for him');
  refused(t, await owner(bob, 'set', `<affiliations node='${node}'><affiliation jid='${bob.bare}' affiliation='owner'/></affiliations>`), 'forbidden', undefined, 'only an owner sets affiliations');
  ok(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${bob.bare}' affiliation='member'/><affiliation jid='${carol.bare}' affiliation='publisher'/></affiliations>`), 'members');
  t.deepEqual(itemIds(await items(bob, service, node)), ['secret'], 'a member reads');
  ok(t, await sub(bob, node), 'a member subscribes');
  ok(t, await pub(carol, node, 'by-carol'), 'a publisher publishes');
  refused(t, await pub(bob, node, 'by-bob'), 'forbidden', undefined, 'a member does not publish');
  const affs = await owner(alice, 'get', `<affiliations node='${node}'/>`);
  t.deepEqual(affs.getChild('pubsub', NS_OWNER)!.getChild('affiliations')!.getChildren('affiliation').map((a) => [a.attrs.jid, a.attrs.affiliation]).sort(), [[alice.bare, 'owner'], [bob.bare, 'member'], [carol.bare, 'publisher']].sort());
  ok(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${bob.bare}' affiliation='outcast'/></affiliations>`), 'outcast');
  refused(t, await sub(bob, node), 'forbidden', undefined, 'an outcast subscribes (§6.1.3.8)');
  const subs = await owner(alice, 'get', `<subscriptions node='${node}'/>`);
  t.deepEqual(subs.getChild('pubsub', NS_OWNER)!.getChild('subscriptions')!.getChildren('subscription'), [], 'his subscription ended');
  refused(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${alice.bare}' affiliation='none'/></affiliations>`), 'not-acceptable', undefined, 'the last owner');
  // §8.8.2: the owner ends a subscription; it does not subscribe anyone.
  refused(t, await owner(alice, 'set', `<subscriptions node='${node}'><subscription jid='${carol.jid}' subscription='subscribed'/></subscriptions>`), 'not-allowed', undefined, 'the owner subscribing carol');
  ok(t, await sub(carol, node), 'carol subscribes herself (a publisher)');
  const f = carol.c.items.length;
  ok(t, await pub(alice, node, 'to-carol'), 'publish');
  await expect(carol, 'the notification', isEventItem(service, node, 'to-carol'), f);
  ok(t, await owner(alice, 'set', `<subscriptions node='${node}'><subscription jid='${carol.jid}' subscription='none'/></subscriptions>`), 'owner ends it');
  refused(t, await unsub(carol, node), 'unexpected-request', 'not-subscribed', 'ended by the owner');
});

test('a user’s subscriptions and affiliations go with the account', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node), 'create');
  ok(t, await sub(bob, node), 'subscribe');
  ok(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${bob.bare}' affiliation='publisher'/></affiliations>`), 'publisher');
  // The account removed (XEP-0077 §3.3 cancel): its subscription and affiliation go.
  ok(t, await iq(bob, 'set', `<query xmlns='jabber:iq:register'><remove/></query>`), 'remove account');
  const subs = await owner(alice, 'get', `<subscriptions node='${node}'/>`);
  t.deepEqual(subs.getChild('pubsub', NS_OWNER)!.getChild('subscriptions')!.getChildren('subscription'), []);
  const affs = await owner(alice, 'get', `<affiliations node='${node}'/>`);
  t.deepEqual(affs.getChild('pubsub', NS_OWNER)!.getChild('affiliations')!.getChildren('affiliation').map((a) => a.attrs.jid), [alice.bare]);
});

test('bounds: subscriptions of one address and its resources (policy-violation); affiliation changes all or none; bytes per node', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#max_items': '100' }), 'create');
  for (let i = 1; i <= 4; i++) ok(t, await sub(bob, node, `${bob.bare}/r${i}`), `resource ${i}`);
  refused(t, await sub(bob, node, `${bob.bare}/r5`), 'policy-violation', undefined, 'a fifth resource of the same address');
  // All or none: a request that would leave no owner changes nothing, the member in it included.
  refused(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${bob.bare}' affiliation='member'/><affiliation jid='${alice.bare}' affiliation='none'/></affiliations>`), 'not-acceptable', undefined, 'no owner left');
  const affs = await owner(alice, 'get', `<affiliations node='${node}'/>`);
  t.deepEqual(affs.getChild('pubsub', NS_OWNER)!.getChild('affiliations')!.getChildren('affiliation').map((a) => a.attrs.jid), [alice.bare], 'nothing changed');
  refused(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${bob.bare}' affiliation='publish-only'/></affiliations>`), 'feature-not-implemented', 'unsupported', 'publish-only');
  // 1 MiB per node: items of 150 KiB, the seventh too many.
  const big = 'x'.repeat(150 * 1024);
  for (let i = 1; i <= 6; i++) ok(t, await publish(alice, node, `<blob xmlns='urn:test'>${big}</blob>`, { id: `b${i}`, to: service }), `item ${i}`);
  refused(t, await publish(alice, node, `<blob xmlns='urn:test'>${big}</blob>`, { id: 'b7', to: service }), 'policy-violation', undefined, 'past the node’s bytes');
  const kept = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#items' node='${node}'/>`, service);
  t.deepEqual(kept.getChild('query')!.getChildren('item').map((i) => i.attrs.name), ['b1', 'b2', 'b3', 'b4', 'b5', 'b6'], 'nothing written past the bound');
});

test('a node whose access model changes stops notifying subscribers it no longer lets in (§4.5)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const node = freshNode();
  ok(t, await create(alice, node), 'create');
  ok(t, await sub(bob, node), 'bob subscribes');
  ok(t, await sub(carol, node), 'carol subscribes');
  ok(t, await owner(alice, 'set', `<configure node='${node}'>${form(NODE_CONFIG, { 'pubsub#access_model': 'whitelist' })}</configure>`), 'whitelist');
  ok(t, await owner(alice, 'set', `<affiliations node='${node}'><affiliation jid='${carol.bare}' affiliation='member'/></affiliations>`), 'carol a member');
  const fb = bob.c.items.length;
  ok(t, await pub(alice, node, 'secret'), 'publish');
  await expect(carol, 'the member’s notification', isEventItem(service, node, 'secret'), 0);
  // Control: a notification of another node to bob, published after; what the first publish sent bob would precede it.
  const control = freshNode();
  ok(t, await create(alice, control), 'control node');
  ok(t, await sub(bob, control), 'bob subscribes to the control');
  ok(t, await pub(alice, control, 'c'), 'control publish');
  t.false((await before(bob, 'the control', isEventItem(service, control, 'c'), fb)).some(isEventItem(service, node, 'secret')), 'bob, no longer let in, got nothing');
});

test('the service’s other addresses and messages: service-unavailable; a lone <options/>, unsubscribing another, a publish without an item: the errors XEP-0060 names', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node), 'create');
  ok(t, await sub(alice, node), 'alice subscribes');
  refused(t, await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, `x@${service}`), 'service-unavailable', undefined, 'a local part');
  refused(t, await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, `${service}/r`), 'service-unavailable', undefined, 'a resource');
  const f = alice.c.items.length;
  alice.c.send(`<message to='${service}'><body>hello?</body></message>`);
  const bounced = await expect(alice, 'the bounce', (el) => el.name === 'message' && el.attrs.type === 'error', f);
  t.is(stanzaError(bounced).condition, 'service-unavailable');
  refused(t, await iq(bob, 'set', `<pubsub xmlns='${NS_PUBSUB}'><options node='${node}' jid='${bob.jid}'/></pubsub>`, service), 'feature-not-implemented', 'unsupported', 'subscription options');
  refused(t, await unsub(bob, node, alice.jid), 'forbidden', undefined, 'another’s subscription (§6.2.3.3)');
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><publish node='${node}'/></pubsub>`, service), 'bad-request', 'item-required', 'no item (§7.1.3.6)');
});

test('an account’s removal takes the nodes it alone owned; a co-owned node stays with its other owner', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const name = fresh('dora');
  await server.addUser(name, `${name}-pw`);
  const dora = await connect(t, server.c2sPort, name, 'r');
  const mine = freshNode();
  const shared = freshNode();
  ok(t, await create(dora, mine), 'dora’s node');
  ok(t, await create(dora, shared), 'a shared node');
  ok(t, await owner(dora, 'set', `<affiliations node='${shared}'><affiliation jid='${alice.bare}' affiliation='owner'/></affiliations>`), 'alice co-owns it');
  ok(t, await iq(dora, 'set', `<query xmlns='jabber:iq:register'><remove/></query>`), 'remove the account');
  refused(t, await items(alice, service, mine), 'item-not-found', undefined, 'gone with its only owner');
  const affs = await owner(alice, 'get', `<affiliations node='${shared}'/>`);
  t.deepEqual(affs.getChild('pubsub', NS_OWNER)!.getChild('affiliations')!.getChildren('affiliation').map((a) => a.attrs.jid), [alice.bare], 'the other owner keeps it');
});

/** Puts `contact` in `owner`'s roster with these groups (RFC 6121 §2.3), no subscription asked. */
const rosterSet = (owner: Peer, contact: Peer, groups: string[]) => iq(owner, 'set', `<query xmlns='${NS_ROSTER}'><item jid='${contact.bare}'>${groups.map((g) => `<group>${g}</group>`).join('')}</item></query>`);

test('access model presence (§4.5): subscribe and items for those with a subscription to an owner’s presence (from or both), not-authorized + presence-subscription-required otherwise; gone with the subscription', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#access_model': 'presence' }), 'create');
  ok(t, await pub(alice, node, 'p1'), 'publish');
  refused(t, await sub(bob, node), 'not-authorized', 'presence-subscription-required', 'subscribe, a stranger');
  refused(t, await items(bob, service, node), 'not-authorized', 'presence-subscription-required', 'items, a stranger');
  // Alice subscribed to bob's presence: her roster has him 'to', which lets him in no more.
  await subscribe(alice, bob);
  refused(t, await items(bob, service, node), 'not-authorized', 'presence-subscription-required', 'items, alice subscribed to bob (not the other way)');
  // Carol subscribed to alice's presence: 'from' in alice's roster.
  await subscribe(carol, alice);
  t.deepEqual(itemIds(await items(carol, service, node)), ['p1'], 'carol reads');
  ok(t, await sub(carol, node), 'carol subscribes');
  // Bob too, and so both ways ('both').
  await subscribe(bob, alice);
  t.deepEqual(itemIds(await items(bob, service, node)), ['p1'], 'bob reads (both)');
  // Alice cancels carol's subscription to her presence (RFC 6121 §3.2): carol is let in no more.
  const f = alice.c.items.length;
  alice.c.send(`<presence to='${carol.bare}' type='unsubscribed'/>`);
  await push(t, alice, carol.bare, 'none', undefined, f);
  refused(t, await items(carol, service, node), 'not-authorized', 'presence-subscription-required', 'items, after the cancellation');
  refused(t, await sub(carol, node), 'not-authorized', 'presence-subscription-required', 'subscribe, after the cancellation');
  // Her subscription stays, but notifications stop (§4.5): bob gets the next one, carol not.
  const fc = carol.c.items.length;
  ok(t, await pub(alice, node, 'p2'), 'publish');
  const control = freshNode();
  ok(t, await create(alice, control), 'control node');
  ok(t, await sub(carol, control), 'carol subscribes to the control');
  ok(t, await pub(alice, control, 'c'), 'control publish');
  t.false((await before(carol, 'the control', isEventItem(service, control, 'c'), fc)).some(isEventItem(service, node, 'p2')), 'no notification to carol');
});

test('access model roster (§4.5): subscribe and items for contacts in the node’s roster groups of an owner’s roster, not-authorized + not-in-roster-group otherwise; a change of groups counts at once', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const carol = await newUser(t, server, 'carol');
  const dave = await newUser(t, server, 'dave');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#access_model': 'roster', 'pubsub#roster_groups_allowed': ['Friends', 'Family'] }), 'create');
  ok(t, await pub(alice, node, 'r1'), 'publish');
  ok(t, await rosterSet(alice, bob, ['Friends']), 'bob in Friends');
  ok(t, await rosterSet(alice, carol, ['Work']), 'carol in Work');
  t.deepEqual(itemIds(await items(bob, service, node)), ['r1'], 'bob, in an allowed group, reads');
  ok(t, await sub(bob, node), 'bob subscribes');
  refused(t, await items(carol, service, node), 'not-authorized', 'not-in-roster-group', 'items, carol in another group');
  refused(t, await sub(carol, node), 'not-authorized', 'not-in-roster-group', 'subscribe, carol in another group');
  refused(t, await sub(dave, node), 'not-authorized', 'not-in-roster-group', 'subscribe, dave not in the roster');
  // Carol's groups change: in one of the node's groups she is let in; bob, moved out, is not.
  ok(t, await rosterSet(alice, carol, ['Work', 'Family']), 'carol in Family too');
  ok(t, await sub(carol, node), 'carol subscribes');
  ok(t, await rosterSet(alice, bob, []), 'bob in no group');
  refused(t, await items(bob, service, node), 'not-authorized', 'not-in-roster-group', 'items, bob out of the groups');
  // The owner's groups allowed change: carol's Family no longer counts.
  ok(t, await owner(alice, 'set', `<configure node='${node}'>${form(NODE_CONFIG, { 'pubsub#roster_groups_allowed': 'Friends' })}</configure>`), 'only Friends');
  refused(t, await items(carol, service, node), 'not-authorized', 'not-in-roster-group', 'items, Family no longer allowed');
  ok(t, await rosterSet(alice, carol, ['Friends']), 'carol in Friends');
  const f = carol.c.items.length;
  ok(t, await pub(alice, node, 'r2'), 'publish');
  await expect(carol, 'the notification', isEventItem(service, node, 'r2'), f);
});

test('publish model subscribers (§16.4.3 pubsub#publish_model): subscribers publish, others are forbidden; not after unsubscribing', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#publish_model': 'subscribers' }), 'create');
  refused(t, await pub(bob, node, 'before'), 'forbidden', undefined, 'not a subscriber');
  ok(t, await sub(bob, node, `${bob.bare}/elsewhere`), 'a subscription of another resource of his');
  ok(t, await pub(bob, node, 'by-bob'), 'a subscriber publishes');
  t.deepEqual(itemIds(await items(alice, service, node)), ['by-bob']);
  ok(t, await unsub(bob, node, `${bob.bare}/elsewhere`), 'unsubscribe');
  refused(t, await pub(bob, node, 'after'), 'forbidden', undefined, 'no longer a subscriber');
  ok(t, await pub(alice, node, 'by-alice'), 'the owner publishes, subscribed or not');
});

test('send_last_published_item never (§16.4.3): no last item on subscription', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#send_last_published_item': 'never' }), 'create');
  // alice subscribed: her notification of 'old' says its subscribers were read. The notification goes out after
  // the publish's result: without this, bob's subscription could come first and bring him 'old' as a notification.
  ok(t, await sub(alice, node), 'alice subscribes');
  const a0 = alice.c.items.length;
  ok(t, await pub(alice, node, 'old'), 'an item before bob subscribes');
  await expect(alice, "alice's notification", isEventItem(service, node, 'old'), a0);
  const f = bob.c.items.length;
  ok(t, await sub(bob, node), 'subscribe');
  // Control: the next publish's notification; the last item, had it been sent, would precede it.
  ok(t, await pub(alice, node, 'new'), 'publish');
  t.false((await before(bob, 'the notification', isEventItem(service, node, 'new'), f)).some(isEventItem(service, node, 'old')), 'no last item');
});

test('XMPP_PUBSUB_DOMAIN: the service answers at the domain it names, listed in the server’s disco#items, and not at pubsub.<domain>', async (t) => {
  const other = await startTestServer({ XMPP_PUBSUB_DOMAIN: 'ps.localhost' });
  t.teardown(() => other.stop());
  const ps = 'ps.localhost';
  const alice = await newUser(t, other, 'alice');
  const list = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#items'/>`, other.config.domain);
  const listed = list.getChild('query')!.getChildren('item').map((i) => i.attrs.jid);
  t.true(listed.includes(ps), list.toString());
  t.false(listed.includes(`pubsub.${other.config.domain}`), 'not the default domain');
  const info = await iq(alice, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, ps);
  t.true(info.getChild('query')!.getChildren('identity').some((i) => i.attrs.category === 'pubsub' && i.attrs.type === 'service'), info.toString());
  const node = freshNode();
  ok(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create node='${node}'/></pubsub>`, ps), 'create');
  ok(t, await publish(alice, node, `<entry xmlns='urn:test'>x</entry>`, { id: 'x', to: ps }), 'publish');
  t.deepEqual(itemIds(await items(alice, ps, node)), ['x']);
  // pubsub.localhost is nobody here (and federation is off): remote-server-not-found.
  refused(t, await iq(alice, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create node='${freshNode()}'/></pubsub>`, `pubsub.${other.config.domain}`), 'remote-server-not-found', undefined, 'the default domain');
});

/** An event of the service's to that full JID with that node's item. */
const lastTo = (jid: string, node: string, id: string) => (el: Element) => isEventItem(service, node, id)(el) && el.attrs.to === jid;
/** Whether any of the elements is an event of the service's with an item of one of these nodes. */
const anyOf = (els: Element[], nodes: string[]) => els.some((el) => nodes.some((n) => isEvent(service, n)(el)));

/**
 * Nodes of alice's for on_sub_and_presence: `presence` and `control` send their last item on presence, `onSub`
 * and `never` do not, `closed` does but is a whitelist node `who`, once a member, is no longer let in; `who`
 * subscribed to each with its bare JID, `control` last; the last items of the subscriptions received.
 */
async function presenceNodes(t: ExecutionContext, alice: Peer, who: Peer) {
  const n = { presence: freshNode(), onSub: freshNode(), never: freshNode(), closed: freshNode(), control: freshNode() };
  const last = { 'pubsub#send_last_published_item': 'on_sub_and_presence' };
  ok(t, await create(alice, n.presence, last), 'on_sub_and_presence');
  ok(t, await create(alice, n.onSub, { 'pubsub#send_last_published_item': 'on_sub' }), 'on_sub');
  ok(t, await create(alice, n.never, { 'pubsub#send_last_published_item': 'never' }), 'never');
  ok(t, await create(alice, n.closed, { ...last, 'pubsub#access_model': 'whitelist' }), 'whitelist, on_sub_and_presence');
  ok(t, await create(alice, n.control, last), 'control, on_sub_and_presence');
  for (const [node, id] of Object.entries(n).map(([k, v]) => [v, `${k}-1`])) ok(t, await pub(alice, node, id), `publish ${id}`);
  ok(t, await owner(alice, 'set', `<affiliations node='${n.closed}'><affiliation jid='${who.bare}' affiliation='member'/></affiliations>`), 'a member');
  for (const node of [n.presence, n.onSub, n.never, n.closed, n.control]) ok(t, await sub(who, node, who.bare), 'subscribe');
  await expect(who, 'the control’s last item on subscription', isEventItem(service, n.control, 'control-1'), 0);
  // No longer a member: its subscription stays, the access model lets it in no more (§4.5).
  ok(t, await owner(alice, 'set', `<affiliations node='${n.closed}'><affiliation jid='${who.bare}' affiliation='none'/></affiliations>`), 'no longer a member');
  return { n };
}

test('presence subscription with the service (XEP-0060 §12.4): approved with its presence and one asked back; approved, the user’s presence brings the last item of its on_sub_and_presence nodes only, once per availability; a new resource: probe answered, last items to it', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const { n } = await presenceNodes(t, alice, bob);
  const f0 = bob.c.items.length;
  bob.c.send(`<presence to='${service}' type='subscribe'/>`);
  const f = await push(t, bob, service, 'none', 'subscribe', f0);
  await expect(bob, 'approved (RFC 6121 §3.1.5)', isPresence(service, 'subscribed'), f0);
  await push(t, bob, service, 'to', undefined, f);
  await expect(bob, 'the service’s presence', isPresence(service), f0);
  await expect(bob, 'the service asks for his presence', isPresence(service, 'subscribe'), f0);
  t.deepEqual(summary(await rosterOf(bob)).filter((i) => i[0] === service), [[service, 'to', undefined]]);
  t.false(anyOf(await barrier(bob, f0), Object.values(n)), 'no last item before he shares his presence');
  // Bob approves: his presence reaches the service (§3.1.5), which sends him the last items due.
  const f1 = bob.c.items.length;
  bob.c.send(`<presence to='${service}' type='subscribed'/>`);
  await push(t, bob, service, 'both', undefined, f1);
  const got = await before(bob, 'the control node’s last item', lastTo(bob.jid, n.control, 'control-1'), f1);
  t.true(got.some(lastTo(bob.jid, n.presence, 'presence-1')), 'on_sub_and_presence: the last item, to his full JID');
  t.false(anyOf(got, [n.onSub, n.never, n.closed]), 'none of on_sub, never, nor a node that no longer lets him in');
  // A status change is no arrival: nothing (the control: his own presence's echo comes once the service had it, §4.2.2).
  const f2 = bob.c.items.length;
  bob.c.send(`<presence><show>away</show></presence>`);
  await expect(bob, 'his own presence', (el) => isPresence(bob.jid)(el) && el.getChildText('show') === 'away', f2);
  ok(t, await pub(alice, n.control, 'control-2'), 'control publish');
  t.false(anyOf(await before(bob, 'the control notification', isEventItem(service, n.control, 'control-2'), f2), [n.presence]), 'no last item on a status change');
  // Another resource logs in: the service is probed (it answers available) and its initial presence brings the last items, to it.
  const bob2 = await connect(t, server.c2sPort, bob.name, 'r2');
  await ready(bob2);
  await expect(bob2, 'the service’s presence, probed (§4.3.2)', (el) => isPresence(service)(el) && el.attrs.to !== undefined, 0);
  const got2 = await before(bob2, 'the control’s last item (its newest now)', lastTo(bob2.jid, n.control, 'control-2'), 0);
  t.true(got2.some(lastTo(bob2.jid, n.presence, 'presence-1')), 'the new resource gets it');
  t.false(anyOf(got2, [n.onSub, n.never, n.closed]), 'nothing else');
  ok(t, await pub(alice, n.control, 'control-3'), 'control publish');
  t.false((await before(bob, 'the control notification', isEventItem(service, n.control, 'control-3'), f2)).some((el) => isEvent(service, n.presence)(el)), 'the first resource gets nothing of the second’s arrival');
  // Cancelling: an unsubscribe is answered with the service's unavailable presence (§3.3.3).
  const f3 = bob.c.items.length;
  bob.c.send(`<presence to='${service}' type='unsubscribe'/>`);
  await push(t, bob, service, 'from', undefined, f3);
  await expect(bob, 'the service’s unavailable presence', isPresence(service, 'unavailable'), f3);
});

test('the service answers one user’s presence in the order it came: a request then its cancellation, sent together, get its available presence before its unavailable one', async (t) => {
  const erin = await newUser(t, server, 'erin');
  const f = erin.c.items.length;
  erin.c.send(`<presence to='${service}' type='subscribe'/>`);
  erin.c.send(`<presence to='${service}' type='unsubscribe'/>`);
  await expect(erin, 'the service’s unavailable presence', isPresence(service, 'unavailable'), f);
  const got = (await barrier(erin, f)).filter((el) => el.name === 'presence' && el.attrs.from === service).map((el) => el.attrs.type ?? 'available');
  // What her server passes on of the answers depends on her roster by then (RFC 6121 A.3); the service's available
  // presence comes before its unavailable one whatever it is.
  t.true(got.includes('available') && got.lastIndexOf('available') < got.indexOf('unavailable') && got.at(-1) === 'unavailable', `in order: ${got.join(' ')}`);
});

test('a last item says when it was published (§6.1.7: a XEP-0203 delay from the service, stamped in UTC), on subscription and on presence (on_sub_and_presence); a live notification has none', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const node = freshNode();
  ok(t, await create(alice, node, { 'pubsub#send_last_published_item': 'on_sub_and_presence' }), 'create');
  // alice subscribed: her notification says the publish's subscribers were read (before bob's subscription, whose
  // own live notification of it would have no delay).
  ok(t, await sub(alice, node), 'alice subscribes');
  const a0 = alice.c.items.length;
  const lo = Date.now();
  ok(t, await pub(alice, node, 'then'), 'publish');
  const hi = Date.now();
  await expect(alice, "alice's notification", isEventItem(service, node, 'then'), a0);
  await clockPast(hi);
  const f0 = bob.c.items.length;
  ok(t, await sub(bob, node, bob.bare), 'subscribe');
  dated(t, await expect(bob, 'the last item on subscription', isEventItem(service, node, 'then'), f0), service, lo, hi, 'on subscription');
  const f1 = bob.c.items.length;
  bob.c.send(`<presence to='${service}'/>`);
  dated(t, await expect(bob, 'the last item on presence', lastTo(bob.jid, node, 'then'), f1), service, lo, hi, 'on presence');
  const f2 = bob.c.items.length;
  ok(t, await pub(alice, node, 'now'), 'publish');
  t.true(undated(await expect(bob, 'the notification', isEventItem(service, node, 'now'), f2)), 'a live notification: no delay');
});

test('directed presence to the service (on_sub_and_presence): the last items at the first of an availability, to that resource; not again until it leaves; none for a non-subscriber or another resource’s subscription', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const carol = await newUser(t, server, 'carol');
  const { n } = await presenceNodes(t, alice, carol);
  const f0 = carol.c.items.length;
  carol.c.send(`<presence to='${service}'/>`);
  const got = await before(carol, 'the control’s last item', lastTo(carol.jid, n.control, 'control-1'), f0);
  t.true(got.some(lastTo(carol.jid, n.presence, 'presence-1')), 'on_sub_and_presence');
  t.false(anyOf(got, [n.onSub, n.never, n.closed]), 'nothing else');
  // Again in the same availability: nothing (the control: a publish after it, her stanzas handled in order).
  const f1 = carol.c.items.length;
  carol.c.send(`<presence to='${service}'><show>dnd</show></presence>`);
  ok(t, await iq(carol, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, service), 'after the second presence');
  t.false(anyOf(await barrier(carol, f1), Object.values(n)), 'no last item again');
  // Unavailable to it (taken in silence), then available: a new arrival.
  const f2 = carol.c.items.length;
  carol.c.send(`<presence to='${service}' type='unavailable'/>`);
  carol.c.send(`<presence to='${service}'/>`);
  await expect(carol, 'the last item again', lastTo(carol.jid, n.presence, 'presence-1'), f2);
  await expect(carol, 'the control’s again', lastTo(carol.jid, n.control, 'control-1'), f2);
  t.false((await barrier(carol, f2)).some((el) => el.attrs.from === service && el.name === 'presence'), 'no presence back');
  // Dave subscribed another resource of his (a full JID), eve nothing: their presence brings nothing.
  const dave = await newUser(t, server, 'dave');
  const eve = await newUser(t, server, 'eve');
  ok(t, await sub(dave, n.presence, `${dave.bare}/elsewhere`), 'dave subscribes another resource');
  // The last item on subscription goes to that resource, absent: to his bare JID (RFC 6121 §8.5.3.2.1), so to him; waited for.
  await expect(dave, 'the last item on subscription', lastTo(`${dave.bare}/elsewhere`, n.presence, 'presence-1'), 0);
  for (const p of [dave, eve]) {
    const f = p.c.items.length;
    p.c.send(`<presence to='${service}'/>`);
    ok(t, await iq(p, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, service), 'after the presence');
    t.false(anyOf(await barrier(p, f), Object.values(n)), `${p.name}: nothing`);
  }
});

test('presence to the service that needs no answer gets none (errors never: no loops); subscription stanzas to any other address of its, or to a service that is no contact, are bad-request', async (t) => {
  const bob = await newUser(t, server, 'bob');
  const f = bob.c.items.length;
  bob.c.send(`<presence to='${service}' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`);
  bob.c.send(`<presence to='${service}' type='unavailable'/>`);
  bob.c.send(`<presence to='${service}' type='unsubscribed'/>`);
  bob.c.send(`<presence to='x@${service}'/>`);
  bob.c.send(`<presence to='${service}/r'/>`);
  // The control: an iq to the service after them (a session's stanzas are handled in order).
  const id = 'after-presence';
  const res = await bob.c.request(`<iq type='get' id='${id}' to='${service}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, id);
  ok(t, res, 'the service still answers');
  const got = await before(bob, 'the answer', (el) => el === res, f);
  t.deepEqual(got.filter((el) => el.attrs.from?.endsWith(service)).map((el) => el.toString()), [], 'nothing from the service');
  // A resource of the service's, and a service of the server's that is no contact (multi-user chat's domain).
  for (const to of [`${service}/r`, `conference.${server.config.domain}`]) {
    const f2 = bob.c.items.length;
    bob.c.send(`<presence to='${to}' type='subscribe'/>`);
    const err = await expect(bob, `the refusal (${to})`, (el) => el.name === 'presence' && el.attrs.type === 'error', f2);
    t.is(stanzaError(err).condition, 'bad-request', err.toString());
  }
  t.deepEqual((await rosterOf(bob)).map((i) => i.attrs.jid), [], 'no roster item for either');
});

test('bounds: one presence brings the last items of at most 100 nodes, and at most 1 MiB of them, in the order of the subscriptions', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const carol = await newUser(t, server, 'carol');
  const bob = await newUser(t, server, 'bob');
  const dave = await newUser(t, server, 'dave');
  const last = { 'pubsub#send_last_published_item': 'on_sub_and_presence' };
  // 101 nodes (a user owns at most 64), bob subscribed to each with his bare JID: what his presence brings goes to his full JID.
  const small: string[] = [];
  for (let i = 0; i < 101; i++) {
    const node = freshNode();
    const by = i < 50 ? alice : carol;
    ok(t, await create(by, node, last), `create ${i}`);
    ok(t, await pub(by, node, `s${i}`), `publish ${i}`);
    ok(t, await sub(bob, node, bob.bare), `subscribe ${i}`);
    small.push(node);
  }
  // Eight of 150 KiB: six fit in 1 MiB.
  const big: string[] = [];
  const blob = 'x'.repeat(150 * 1024);
  for (let i = 0; i < 8; i++) {
    const node = freshNode();
    ok(t, await create(alice, node, last), `create big ${i}`);
    ok(t, await publish(alice, node, `<blob xmlns='urn:test'>${blob}</blob>`, { id: `b${i}`, to: service }), `publish big ${i}`);
    ok(t, await sub(dave, node, dave.bare), `subscribe big ${i}`);
    big.push(node);
  }
  for (const [p, nodes, count] of [[bob, small, 100], [dave, big, 6]] as const) {
    const f = p.c.items.length;
    p.c.send(`<presence to='${service}'/>`);
    // Handled apart from the stanza flow: the last one due first, then whatever came with it (one more would be sent right after it).
    await expect(p, 'the last item due', (el) => el.attrs.to === p.jid && isEvent(service, nodes[count - 1])(el), f);
    ok(t, await iq(p, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, service), 'after the presence');
    const got = (await barrier(p, f)).filter((el) => el.attrs.to === p.jid && nodes.some((n) => isEvent(service, n)(el)));
    t.deepEqual(got.map((el) => el.getChild('event', NS_EVENT)!.getChild('items')!.attrs.node), nodes.slice(0, count), `${p.name}: the first ${count}`);
  }
});
