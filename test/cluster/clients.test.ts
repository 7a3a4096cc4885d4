// A real client library, @xmpp/client, on both nodes of a cluster (one
// Redis and one PostgreSQL of its own) for what today's clients ask of the
// server at login, every action through the library (its iqCaller, its
// iqCallee answering the server's caps query, send, 'stanza' events):
// - PEP (XEP-0163): two accounts with a mutual presence subscription, a
//   publish on node 1 notified on node 2 to the resource whose caps
//   (XEP-0115) ask for the node and not to the one whose caps do not; the
//   last published item at a login on node 2 after the publish;
// - access models (XEP-0060 §4.5) refused and granted: presence, open,
//   whitelist, roster, with the error conditions of §6.5.9;
// - an OMEMO-shaped exchange (device lists and bundles, legacy and
//   urn:xmpp:omemo:2, access model open as Conversations and Dino publish
//   them) both ways across the nodes, and read by a stranger;
// - blocking (XEP-0191) with the blocker on node 1 and the blocked on node 2;
// - every service administration command (XEP-0133) run from node 1 through
//   its XEP-0050 form, acting on sessions of node 2; none of them offered
//   to a non-admin.
import test, { type ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startCluster, type NodeProcess, type TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';
import { clusterPeers } from '../helpers/im.ts';

const WAIT = 10_000;
const ADMIN = 'root';
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_EVENT = `${NS_PUBSUB}#event`;
const NS_ERRORS = `${NS_PUBSUB}#errors`;
const PUBLISH_OPTIONS = `${NS_PUBSUB}#publish-options`;
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const NS_DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
const NS_CAPS = 'http://jabber.org/protocol/caps';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const NS_BLOCKING = 'urn:xmpp:blocking';
const NS_COMMANDS = 'http://jabber.org/protocol/commands';
const NS_ADMIN = 'http://jabber.org/protocol/admin';
const NS_DATA = 'jabber:x:data';
const NS_ROSTER = 'jabber:iq:roster';
const AXOLOTL = 'eu.siacs.conversations.axolotl';
const OMEMO2 = 'urn:xmpp:omemo:2';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['k1', 'k2'], { XMPP_ADMINS: `${ADMIN}@localhost` });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  await accounts.create(ADMIN, `${ADMIN}-pw`);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { account } = clusterPeers(() => accounts);

// --- the client side ---------------------------------------------------------

type Handler = (ctx: { stanza: Element; element: Element }) => unknown;
/** @xmpp/client's iqCallee (not in its typings): answers the iqs addressed to the client. */
const callee = (c: XmppClient) => (c as unknown as { iqCallee: { get(ns: string, name: string, h: Handler): void; set(ns: string, name: string, h: Handler): void } }).iqCallee;

const target = (node: NodeProcess) => ({ c2sPort: node.c2sPort, tlsPort: node.tlsPort, certFile: cluster.certFile });
const bare = (c: XmppClient) => `${c.jid!.local}@localhost`;
const full = (c: XmppClient) => c.jid!.toString();

/** `name` logged in on `node` (no presence yet); stopped when the test ends. */
async function login(t: ExecutionContext, node: NodeProcess, name: string, opts: { password?: string; resource?: string } = {}): Promise<XmppClient> {
  const c = xmppClient(target(node), { username: name, password: opts.password ?? `${name}-pw`, resource: opts.resource ?? node.name });
  c.reconnect.stop();
  t.teardown(() => c.stop().then(() => undefined, () => undefined));
  await within(c.start(), 15_000, `${name} logging in to ${node.name}`);
  return c;
}

/** How a login with this password ends: 'online', or the SASL condition the library reports. */
async function loginOutcome(node: NodeProcess, name: string, password: string): Promise<string> {
  const c = xmppClient(target(node), { username: name, password, resource: 'probe' });
  c.reconnect.stop();
  try {
    await within(c.start(), 15_000, `${name} logging in to ${node.name}`);
    return 'online';
  } catch (err) {
    return (err as { condition?: string }).condition ?? String(err);
  } finally {
    await c.stop().catch(() => undefined);
  }
}

/** The next stanza c receives that matches (listening from now on). */
function next(c: XmppClient, what: string, pred: (el: Element) => boolean): Promise<Element> {
  return within(
    new Promise<Element>((resolve) => {
      const on = (el: Element) => {
        if (!pred(el)) return;
        c.off('stanza', on);
        resolve(el);
      };
      c.on('stanza', on);
    }),
    WAIT,
    `${c.jid?.toString()}: ${what}`,
  );
}

/** Every stanza c receives from now on. */
function record(c: XmppClient): Element[] {
  const got: Element[] = [];
  c.on('stanza', (el: Element) => got.push(el));
  return got;
}

/**
 * A ping to the server, answered: the server has handled what c sent before
 * (a session handles its stanzas in order) and c has read what its server
 * wrote to it before the answer.
 */
async function ping(c: XmppClient): Promise<void> {
  await within(c.iqCaller.get(xml('ping', { xmlns: 'urn:xmpp:ping' }), 'localhost'), WAIT, `${c.jid?.toString()}: ping`);
}

const presenceFrom = (from: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.type === type && (el.attrs.from === from || el.attrs.from?.startsWith(`${from}/`));

/**
 * c's available presence (with `status`, if given) carrying entity
 * capabilities (XEP-0115 §4) that ask for notifications of `notify`
 * ('NODE+notify', XEP-0163 §4.3.1), and the answer of its iqCallee to the
 * server's disco#info for them (§6.3). Its identity's name is new for each
 * call, so the verification string is one the cluster never saw: the server
 * asks. Resolves once the answer went out and a ping after it came back (the
 * server has read it).
 */
async function available(c: XmppClient, notify: string[], status?: string): Promise<void> {
  const features = [NS_DISCO_INFO, NS_CAPS, ...notify.map((n) => `${n}+notify`)];
  const name = `clients test ${randomBytes(6).toString('hex')}`;
  // §5.1: identities, then features, each sorted and followed by '<'.
  const ver = createHash('sha1').update(`client/pc//${name}<${[...features].sort().map((f) => `${f}<`).join('')}`).digest('base64');
  const node = `https://clients.test/${name.replace(/ /g, '-')}#${ver}`;
  const capsNode = node.slice(0, node.indexOf('#'));
  callee(c).get(NS_DISCO_INFO, 'query', ({ element }) => {
    if (element.attrs.node !== node) return undefined;
    return xml('query', { xmlns: NS_DISCO_INFO, node }, xml('identity', { category: 'client', type: 'pc', name }), ...features.map((f) => xml('feature', { var: f })));
  });
  const answered = within(
    new Promise<void>((resolve) => {
      const on = (el: Element) => {
        if (el.name !== 'iq' || el.attrs.type !== 'result' || el.getChild('query', NS_DISCO_INFO)?.attrs.node !== node) return;
        c.off('send', on);
        resolve();
      };
      c.on('send', on);
    }),
    WAIT,
    `${c.jid?.toString()}: the server's caps query, answered`,
  );
  await c.send(xml('presence', {}, ...(status ? [xml('status', {}, status)] : []), xml('c', { xmlns: NS_CAPS, hash: 'sha-1', node: capsNode, ver })));
  await answered;
  await ping(c);
}

/** a subscribes to b's presence and b approves (both available): the approval and b's presence reach a. */
async function subscribe(a: XmppClient, b: XmppClient): Promise<void> {
  const asked = next(b, `${bare(a)}'s request`, presenceFrom(bare(a), 'subscribe'));
  await a.send(xml('presence', { to: bare(b), type: 'subscribe' }));
  await asked;
  const approved = next(a, `${bare(b)}'s approval`, presenceFrom(bare(b), 'subscribed'));
  const seen = next(a, `${full(b)}'s presence`, presenceFrom(full(b)));
  await b.send(xml('presence', { to: bare(a), type: 'subscribed' }));
  await Promise.all([approved, seen]);
}

/** A submitted data form (XEP-0004) of that FORM_TYPE. */
const submitForm = (type: string, fields: Record<string, string | string[]>) =>
  xml('x', { xmlns: NS_DATA, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, type)), ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, ...(Array.isArray(v) ? v : [v]).map((x) => xml('value', {}, x)))));

/** Publishes one item to c's own PEP node (with publish-options, XEP-0060 §7.1.5, if given); the id the server gives back. */
async function publish(c: XmppClient, node: string, id: string, payload: Element, options?: Record<string, string | string[]>): Promise<string | undefined> {
  const res = await within(
    c.iqCaller.set(xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node }, xml('item', { id }, payload)), ...(options ? [xml('publish-options', {}, submitForm(PUBLISH_OPTIONS, options))] : []))),
    WAIT,
    `${c.jid?.toString()}: publish to ${node}`,
  );
  return res.getChild('publish')?.getChild('item')?.attrs.id;
}

type Read = { items: Element[] } | { condition: string; pubsub: string | undefined };

/** c reads `owner`'s node (XEP-0060 §6.5): its items, or the error's stanza condition and pubsub#errors child. */
async function read(c: XmppClient, owner: string, node: string, opts: { ids?: string[]; max?: number } = {}): Promise<Read> {
  const items = xml('items', { node, ...(opts.max ? { max_items: String(opts.max) } : {}) }, ...(opts.ids ?? []).map((id) => xml('item', { id })));
  try {
    const res = await within(c.iqCaller.get(xml('pubsub', { xmlns: NS_PUBSUB }, items), owner), WAIT, `${c.jid?.toString()}: items of ${owner}'s ${node}`);
    return { items: res.getChild('items')?.getChildren('item') ?? [] };
  } catch (err) {
    if ((err as Error).name !== 'StanzaError') throw err;
    const { condition, application } = err as { condition: string; application?: Element };
    return { condition, pubsub: application?.attrs.xmlns === NS_ERRORS ? application.name : undefined };
  }
}

/** The ids of what a read gave, or the refusal itself (for a message that says which). */
const idsOf = (r: Read) => ('items' in r ? r.items.map((i) => i.attrs.id) : r);

/** A notification (XEP-0060 §7.1.2.1) from `owner` about `node`. */
const isEvent = (owner: string, node: string) => (el: Element) => el.name === 'message' && el.attrs.from === owner && el.getChild('event', NS_EVENT)?.getChild('items')?.attrs.node === node;
const eventItem = (el: Element) => el.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!;

/** The stanza error's condition and application-specific child (its namespace and name). */
function errorOf(el: Element): { condition?: string; app?: string } {
  const children = el.getChild('error')?.children.filter((c): c is Element => typeof c !== 'string') ?? [];
  const condition = children.find((c) => c.attrs.xmlns === NS_STANZAS && c.name !== 'text')?.name;
  const app = children.find((c) => c.attrs.xmlns !== NS_STANZAS);
  return { condition, app: app ? `${app.attrs.xmlns} ${app.name}` : undefined };
}

// --- PEP -----------------------------------------------------------------------

test.serial('PEP: a publish on node 1 is notified on node 2 to the resource whose caps ask for the node, not to the one whose caps do not', async (t) => {
  const [n1, n2] = cluster.nodes;
  const NODE = 'http://jabber.org/protocol/tune';
  const alice = await login(t, n1, await account('alice'));
  const bob = await login(t, n2, await account('bob'));
  await alice.send(xml('presence'));
  await available(bob, [NODE]);
  await subscribe(alice, bob);
  await subscribe(bob, alice);
  // Bob's other device, on node 2 as well, asks for another node only.
  const other = await login(t, n2, bob.jid!.local, { resource: 'other' });
  await available(other, ['http://jabber.org/protocol/mood']);
  const otherGot = record(other);

  const notified = next(bob, 'the notification', isEvent(bare(alice), NODE));
  const id = await publish(alice, NODE, 'now', xml('tune', { xmlns: NODE }, xml('artist', {}, 'Yes'), xml('title', {}, 'Heart of the Sunrise')));
  t.is(id, 'now');
  const ev = await notified;
  t.is(ev.attrs.to, full(bob));
  t.is(ev.attrs.type, 'headline');
  t.is(eventItem(ev).attrs.id, 'now');
  t.is(eventItem(ev).getChild('tune', NODE)?.getChildText('title'), 'Heart of the Sunrise');
  // Both copies leave node 1 in one pass, for node 2's one worker, which handles them in order: once bob has his,
  // a ping of the other resource is answered after its copy was dealt with.
  await ping(other);
  t.false(otherGot.some(isEvent(bare(alice), NODE)), 'the resource whose caps do not ask for the node got nothing');
});

test.serial('PEP: a contact logging in on node 2 after two publishes on node 1 gets the last published item', async (t) => {
  const [n1, n2] = cluster.nodes;
  const NODE = 'http://jabber.org/protocol/mood';
  const alice = await login(t, n1, await account('alice'));
  const bobName = await account('bob');
  const bob = await login(t, n2, bobName);
  await alice.send(xml('presence'));
  await bob.send(xml('presence'));
  await subscribe(alice, bob);
  await subscribe(bob, alice);
  await bob.stop();

  // Both items kept: the last published is the one to come, not merely the one left.
  const keep = { 'pubsub#max_items': '10' };
  await publish(alice, NODE, 'first', xml('mood', { xmlns: NODE }, xml('happy')), keep);
  await publish(alice, NODE, 'second', xml('mood', { xmlns: NODE }, xml('curious')), keep);
  t.deepEqual(idsOf(await read(alice, bare(alice), NODE)), ['first', 'second']);
  const again = await login(t, n2, bobName, { resource: 'again' });
  // The first notification of the node it gets: the last item, sent once its caps are known.
  const last = next(again, 'the last published item at login', isEvent(bare(alice), NODE));
  await available(again, [NODE]);
  const ev = await last;
  t.is(eventItem(ev).attrs.id, 'second');
  t.truthy(eventItem(ev).getChild('mood', NODE)?.getChild('curious'));
  t.is(ev.attrs.to, full(again));
});

test.serial('PEP access models read from node 2: presence, open, whitelist and roster, refused and granted', async (t) => {
  const [n1, n2] = cluster.nodes;
  const alice = await login(t, n1, await account('alice'));
  const bob = await login(t, n2, await account('bob'));
  const carol = await login(t, n2, await account('carol'));
  const erin = await login(t, n2, await account('erin'));
  await alice.send(xml('presence'));
  await bob.send(xml('presence'));
  // Bob: subscribed to alice's presence, in her group Friends; erin: in her roster (group Work), no subscription; carol: a stranger.
  await subscribe(bob, alice);
  await within(alice.iqCaller.set(xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: bare(bob) }, xml('group', {}, 'Friends')))), WAIT, 'bob in Friends');
  await within(alice.iqCaller.set(xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: bare(erin) }, xml('group', {}, 'Work')))), WAIT, 'erin in Work');

  const payload = (n: string) => xml('entry', { xmlns: 'http://www.w3.org/2005/Atom' }, xml('title', {}, n));
  await publish(alice, 'urn:test:presence', 'p', payload('presence'), { 'pubsub#access_model': 'presence' });
  await publish(alice, 'urn:test:open', 'o', payload('open'), { 'pubsub#access_model': 'open' });
  await publish(alice, 'urn:test:whitelist', 'w', payload('whitelist'), { 'pubsub#access_model': 'whitelist' });
  await publish(alice, 'urn:test:roster', 'r', payload('roster'), { 'pubsub#access_model': 'roster', 'pubsub#roster_groups_allowed': 'Friends' });
  const owner = bare(alice);
  // XEP-0060 §4.5 access models, §6.5.9 their refusals.
  // presence: a contact with a subscription may read; not a stranger, nor a roster item without one.
  t.deepEqual(idsOf(await read(bob, owner, 'urn:test:presence')), ['p']);
  t.deepEqual(idsOf(await read(carol, owner, 'urn:test:presence')), { condition: 'not-authorized', pubsub: 'presence-subscription-required' });
  t.deepEqual(idsOf(await read(erin, owner, 'urn:test:presence')), { condition: 'not-authorized', pubsub: 'presence-subscription-required' });
  // open: anyone.
  t.deepEqual(idsOf(await read(carol, owner, 'urn:test:open')), ['o']);
  // whitelist: not even a contact (no one else is on the list).
  t.deepEqual(idsOf(await read(bob, owner, 'urn:test:whitelist')), { condition: 'not-allowed', pubsub: 'closed-node' });
  t.deepEqual(idsOf(await read(alice, owner, 'urn:test:whitelist')), ['w'], 'the owner reads her own');
  // roster: the allowed group only.
  t.deepEqual(idsOf(await read(bob, owner, 'urn:test:roster')), ['r']);
  t.deepEqual(idsOf(await read(erin, owner, 'urn:test:roster')), { condition: 'not-authorized', pubsub: 'not-in-roster-group' });
  t.deepEqual(idsOf(await read(carol, owner, 'urn:test:roster')), { condition: 'not-authorized', pubsub: 'not-in-roster-group' });
});

/** What an OMEMO client publishes for one device: the device lists and bundles of both versions (legacy and OMEMO 2). */
async function publishOmemo(c: XmppClient, device: string): Promise<{ ik: string }> {
  const b64 = (n: number) => randomBytes(n).toString('base64');
  const ik = b64(33);
  const open = { 'pubsub#access_model': 'open' };
  // Bundles first, then the device lists that point to them (as clients do).
  await publish(c, `${AXOLOTL}.bundles:${device}`, 'current', xml('bundle', { xmlns: AXOLOTL },
    xml('signedPreKeyPublic', { signedPreKeyId: '1' }, b64(33)),
    xml('signedPreKeySignature', {}, b64(64)),
    xml('identityKey', {}, ik),
    xml('prekeys', {}, ...Array.from({ length: 100 }, (_, i) => xml('preKeyPublic', { preKeyId: String(i + 1) }, b64(33))))), open);
  await publish(c, `${OMEMO2}:bundles`, device, xml('bundle', { xmlns: OMEMO2 },
    xml('spk', { id: '1' }, b64(32)),
    xml('spks', {}, b64(64)),
    xml('ik', {}, ik),
    xml('prekeys', {}, ...Array.from({ length: 100 }, (_, i) => xml('pk', { id: String(i + 1) }, b64(32))))), { ...open, 'pubsub#max_items': 'max' });
  await publish(c, `${AXOLOTL}.devicelist`, 'current', xml('list', { xmlns: AXOLOTL }, xml('device', { id: device })), open);
  await publish(c, `${OMEMO2}:devices`, 'current', xml('devices', { xmlns: OMEMO2 }, xml('device', { id: device, label: 'clients test' })), open);
  return { ik };
}

test.serial('OMEMO-shaped exchange across nodes: device lists notified, bundles fetched by the contact on the other node and by a stranger', async (t) => {
  const [n1, n2] = cluster.nodes;
  const LISTS = [`${AXOLOTL}.devicelist`, `${OMEMO2}:devices`];
  const alice = await login(t, n1, await account('alice'));
  const bob = await login(t, n2, await account('bob'));
  const carol = await login(t, n2, await account('carol'));
  await available(alice, LISTS);
  await available(bob, LISTS);
  await subscribe(alice, bob);
  await subscribe(bob, alice);

  // One side publishes, the other (on the other node) is told of the device and fetches its bundles.
  const exchange = async (from: XmppClient, to: XmppClient, device: string) => {
    const owner = bare(from);
    const lists = LISTS.map((node) => next(to, `${owner}'s ${node}`, isEvent(owner, node)));
    const { ik } = await publishOmemo(from, device);
    const [legacy, v2] = await Promise.all(lists);
    const legacyId = eventItem(legacy).getChild('list', AXOLOTL)?.getChild('device')?.attrs.id;
    const v2Id = eventItem(v2).getChild('devices', OMEMO2)?.getChild('device')?.attrs.id;
    t.is(legacyId, device);
    t.is(v2Id, device);
    // Conversations asks for the legacy bundle node's newest item; OMEMO 2 clients ask for the item named by the device id.
    const legacyBundle = await read(to, owner, `${AXOLOTL}.bundles:${legacyId}`, { max: 1 });
    t.deepEqual(idsOf(legacyBundle), ['current']);
    t.is('items' in legacyBundle && legacyBundle.items[0].getChild('bundle', AXOLOTL)?.getChildText('identityKey'), ik);
    const v2Bundle = await read(to, owner, `${OMEMO2}:bundles`, { ids: [v2Id!] });
    t.deepEqual(idsOf(v2Bundle), [device]);
    const bundle = 'items' in v2Bundle ? v2Bundle.items[0].getChild('bundle', OMEMO2) : undefined;
    t.is(bundle?.getChildText('ik'), ik);
    t.is(bundle?.getChild('prekeys')?.getChildren('pk').length, 100);
    return ik;
  };
  const aliceIk = await exchange(alice, bob, '1111');
  await exchange(bob, alice, '2222');
  // Open access: someone not in alice's roster (as in a group chat) reads her devices and bundle.
  const devices = await read(carol, bare(alice), `${OMEMO2}:devices`);
  t.deepEqual(idsOf(devices), ['current']);
  const bundle = await read(carol, bare(alice), `${OMEMO2}:bundles`, { ids: ['1111'] });
  t.is('items' in bundle && bundle.items[0].getChild('bundle', OMEMO2)?.getChildText('ik'), aliceIk);
});

// --- blocking --------------------------------------------------------------------

test.serial('blocking across nodes: blocked on node 1, refused both ways on node 2, presence stops; unblocking restores', async (t) => {
  const [n1, n2] = cluster.nodes;
  const aliceName = await account('alice');
  const alice = await login(t, n1, aliceName);
  const tablet = await login(t, n2, aliceName, { resource: 'tablet' });
  const bob = await login(t, n2, await account('bob'));
  const carol = await login(t, n1, await account('carol'));
  for (const c of [alice, tablet, bob, carol]) await c.send(xml('presence'));
  await subscribe(alice, bob);
  await subscribe(bob, alice);
  await subscribe(carol, bob);
  // Alice's tablet asked for the blocklist (XEP-0191 §3.2), so it gets the pushes (§3.3); its iqCallee answers them.
  const list = await within(tablet.iqCaller.get(xml('blocklist', { xmlns: NS_BLOCKING })), WAIT, 'the blocklist');
  t.is(list.getChildren('item').length, 0);
  const pushes: Element[] = [];
  const pushed = (name: 'block' | 'unblock') => within(new Promise<Element>((resolve) => {
    callee(tablet).set(NS_BLOCKING, name, ({ stanza }) => {
      pushes.push(stanza);
      resolve(stanza);
      return true;
    });
  }), WAIT, `the ${name} push on node 2`);

  const aliceGot = record(alice);
  const blockPush = pushed('block');
  const gone = next(bob, "alice's unavailable presence", presenceFrom(full(alice), 'unavailable'));
  await within(alice.iqCaller.set(xml('block', { xmlns: NS_BLOCKING }, xml('item', { jid: bare(bob) }))), WAIT, 'block');
  t.deepEqual((await blockPush).getChild('block', NS_BLOCKING)?.getChildren('item').map((i) => i.attrs.jid), [bare(bob)]);
  await gone;

  // XEP-0191 §3.3: bob's message to alice comes back as if she were not there (service-unavailable).
  const bounce = next(bob, 'the bounce', (el) => el.name === 'message' && el.attrs.id === 'to-alice' && el.attrs.type === 'error');
  await bob.send(xml('message', { to: bare(alice), type: 'chat', id: 'to-alice' }, xml('body', {}, 'hello?')));
  t.deepEqual(errorOf(await bounce), { condition: 'service-unavailable', app: undefined });
  // §3.3: alice's own messages to bob, from either node, are refused: not-acceptable with <blocked/>.
  for (const c of [alice, tablet]) {
    const refused = next(c, 'the refusal', (el) => el.name === 'message' && el.attrs.id === 'to-bob' && el.attrs.type === 'error');
    await c.send(xml('message', { to: bare(bob), type: 'chat', id: 'to-bob' }, xml('body', {}, 'go away')));
    t.deepEqual(errorOf(await refused), { condition: 'not-acceptable', app: 'urn:xmpp:blocking:errors blocked' }, full(c));
  }
  // Bob's presence reaches carol on node 1 and not alice there: both copies of one broadcast.
  const toCarol = next(carol, "bob's new status", (el) => presenceFrom(full(bob))(el) && el.getChildText('status') === 'while blocked');
  await bob.send(xml('presence', {}, xml('status', {}, 'while blocked')));
  await toCarol;
  await ping(alice);
  // (The refusals of her own messages come back from bob's address: not his.)
  const fromBob = aliceGot.filter((el) => (el.attrs.from === bare(bob) || el.attrs.from?.startsWith(`${bare(bob)}/`)) && !(el.attrs.type === 'error' && el.attrs.id === 'to-bob'));
  t.deepEqual(fromBob.map(String), [], 'nothing of bob reached alice');

  // Unblocked: alice's presence reaches bob again, and his next stanzas reach her.
  const unblockPush = pushed('unblock');
  const back = next(bob, "alice's presence again", presenceFrom(full(alice)));
  await within(alice.iqCaller.set(xml('unblock', { xmlns: NS_BLOCKING }, xml('item', { jid: bare(bob) }))), WAIT, 'unblock');
  await unblockPush;
  await back;
  const status = next(alice, "bob's presence after the unblock", (el) => presenceFrom(full(bob))(el) && el.getChildText('status') === 'unblocked');
  await bob.send(xml('presence', {}, xml('status', {}, 'unblocked')));
  await status;
  const delivered = next(alice, "bob's message", (el) => el.name === 'message' && el.getChildText('body') === 'welcome back');
  await bob.send(xml('message', { to: bare(alice), type: 'chat' }, xml('body', {}, 'welcome back')));
  await delivered;
  t.is(pushes.length, 2);
});

// --- service administration --------------------------------------------------------

const ADMIN_COMMANDS = ['add-user', 'delete-user', 'change-user-password', 'end-user-session', 'user-stats', 'get-online-users-list', 'get-online-users-num', 'get-registered-users-num', 'announce'];

/** One request of a command session (XEP-0050 §3.4) to the server; the <command/> answered. */
function command(c: XmppClient, name: string, opts: { sessionid?: string; action?: string; fields?: Record<string, string | string[]> } = {}): Promise<Element> {
  const attrs: Record<string, string> = { xmlns: NS_COMMANDS, node: `${NS_ADMIN}#${name}`, ...(opts.sessionid ? { sessionid: opts.sessionid } : {}), ...(opts.action ? { action: opts.action } : {}) };
  return within(c.iqCaller.set(xml('command', attrs, ...(opts.fields ? [submitForm(NS_ADMIN, opts.fields)] : [])), 'localhost'), WAIT, `${c.jid?.toString()}: ${name}`);
}

const fieldsOf = (cmd: Element) => cmd.getChild('x', NS_DATA)?.getChildren('field').map((f) => f.attrs.var) ?? [];
const values = (cmd: Element, name: string) => cmd.getChild('x', NS_DATA)?.getChildren('field').find((f) => f.attrs.var === name)?.getChildren('value').map((v) => v.getText()) ?? [];

/** execute → the form (offering every field submitted) → the form submitted (with `action`, if given): the last answer. */
async function run(t: ExecutionContext, c: XmppClient, name: string, fields: Record<string, string | string[]>, action?: string): Promise<Element> {
  const first = await command(c, name, { action: 'execute' });
  t.is(first.attrs.status, 'executing', name);
  const offered = fieldsOf(first);
  t.true(['FORM_TYPE', ...Object.keys(fields)].every((f) => offered.includes(f)), `${name} offers ${offered.join(', ')}`);
  return command(c, name, { sessionid: first.attrs.sessionid, fields, action });
}

/** A one-stage command: completed at execute, its result form's field. */
async function count(t: ExecutionContext, c: XmppClient, name: string, field: string): Promise<number> {
  const res = await command(c, name, { action: 'execute' });
  t.is(res.attrs.status, 'completed', name);
  return Number(values(res, field)[0]);
}

/** Resolves with the stream error condition once c's stream ended with one and its connection closed. */
function streamEnd(c: XmppClient, what: string): Promise<string> {
  let condition: string | undefined;
  return within(
    new Promise<string>((resolve) => {
      c.on('error', (err: { condition?: string; name?: string }) => {
        if (err.name === 'StreamError') condition = err.condition;
      });
      c.on('disconnect', () => resolve(condition ?? 'no stream error'));
    }),
    WAIT,
    `${c.jid?.toString()}: ${what}`,
  );
}

const admin = (t: ExecutionContext) => login(t, cluster.nodes[0], ADMIN, { resource: `desk-${randomBytes(3).toString('hex')}` });

test.serial('commands (XEP-0050 §2.2): the admin on node 1 is offered every XEP-0133 command; a user on node 2 none, and may run none', async (t) => {
  const root = await admin(t);
  const user = await login(t, cluster.nodes[1], await account('user'));
  const listed = async (c: XmppClient) => {
    const q = await within(c.iqCaller.get(xml('query', { xmlns: NS_DISCO_ITEMS, node: NS_COMMANDS }), 'localhost'), WAIT, 'the commands node');
    return q.getChildren('item').map((i) => i.attrs.node);
  };
  const adminNodes = ADMIN_COMMANDS.map((c) => `${NS_ADMIN}#${c}`);
  const mine = await listed(root);
  t.deepEqual(adminNodes.filter((n) => !mine.includes(n)), [], 'the admin is offered them all');
  const theirs = await listed(user);
  t.deepEqual(theirs.filter((n) => n.startsWith(NS_ADMIN)), [], 'a user is offered none');
  for (const name of ADMIN_COMMANDS) {
    const err = await command(user, name, { action: 'execute' }).then(() => undefined, (e: { condition?: string }) => e.condition);
    t.is(err, 'forbidden', name);
  }
});

test.serial('admin on node 1: add a user (who logs in on node 2), count the registered users, change a password', async (t) => {
  const [, n2] = cluster.nodes;
  const root = await admin(t);
  const before = await count(t, root, 'get-registered-users-num', 'registeredusersnum');
  t.is(before, (await accounts.list()).length);
  const name = `added${randomBytes(4).toString('hex')}`;
  const added = await run(t, root, 'add-user', { accountjid: `${name}@localhost`, password: 'first-pw', 'password-verify': 'first-pw' });
  t.is(added.attrs.status, 'completed');
  t.is(await count(t, root, 'get-registered-users-num', 'registeredusersnum'), before + 1);
  const first = await login(t, n2, name, { password: 'first-pw' });
  t.is(full(first), `${name}@localhost/${n2.name}`);

  const changed = await run(t, root, 'change-user-password', { accountjid: `${name}@localhost`, password: 'second-pw' });
  t.is(changed.attrs.status, 'completed');
  t.is(await loginOutcome(n2, name, 'second-pw'), 'online');
  t.is(await loginOutcome(n2, name, 'first-pw'), 'not-authorized');
});

test.serial('admin on node 1: online users of both nodes listed and counted, statistics, one session on node 2 ended', async (t) => {
  const [n1, n2] = cluster.nodes;
  const root = await admin(t);
  const here = await login(t, n1, await account('here'));
  const thereName = await account('there');
  const phone = await login(t, n2, thereName, { resource: 'phone' });
  const laptop = await login(t, n2, thereName, { resource: 'laptop' });
  await within(laptop.iqCaller.set(xml('query', { xmlns: NS_ROSTER }, xml('item', { jid: bare(here) }))), WAIT, 'a roster item');

  const list = async () => values(await run(t, root, 'get-online-users-list', { max_items: 'none' }), 'onlineuserjids');
  const online = await list();
  t.true(online.includes(bare(here)), 'a user of node 1');
  t.true(online.includes(`${thereName}@localhost`), 'a user of node 2');
  t.true(online.includes(`${ADMIN}@localhost`));
  t.is(online.filter((j) => j === `${thereName}@localhost`).length, 1, 'a user once, whatever its sessions');
  // Counted between two lists: the count of one of them (other tests' sessions may still be closing).
  const num = await count(t, root, 'get-online-users-num', 'onlineusersnum');
  const again = await list();
  t.true(num >= Math.min(online.length, again.length) && num <= Math.max(online.length, again.length), `${num} against ${online.length} and ${again.length}`);

  const stats = await run(t, root, 'user-stats', { accountjid: `${thereName}@localhost` });
  t.is(stats.attrs.status, 'completed');
  t.deepEqual(values(stats, 'onlineresources'), ['laptop', 'phone']);
  t.deepEqual(values(stats, 'rostersize'), ['1']);

  // XEP-0133 §4.5: a full JID ends that session only, on the node it lives on.
  const ended = streamEnd(phone, 'the end of its session');
  const laptopGot = record(laptop);
  const done = await run(t, root, 'end-user-session', { accountjids: full(phone) });
  t.is(done.attrs.status, 'completed');
  t.is(await ended, 'policy-violation');
  t.is(phone.status, 'disconnect');
  await ping(laptop);
  t.is(laptop.status, 'online', 'the other session stays');
  t.false(laptopGot.some((el) => el.name === 'presence' && el.attrs.type === 'error'));
  t.deepEqual(values(await run(t, root, 'user-stats', { accountjid: `${thereName}@localhost` }), 'onlineresources'), ['laptop']);
});

test.serial('admin on node 1: an announcement reaches clients on both nodes', async (t) => {
  const [n1, n2] = cluster.nodes;
  const root = await admin(t);
  const a = await login(t, n1, await account('ann'));
  const b = await login(t, n2, await account('ann'));
  const text = `going down at noon ${randomBytes(4).toString('hex')}`;
  const heard = [a, b].map((c) => next(c, 'the announcement', (el) => el.name === 'message' && el.getChildText('body') === text));
  const sent = await run(t, root, 'announce', { announcement: text });
  t.is(sent.attrs.status, 'completed');
  for (const m of await Promise.all(heard)) {
    t.is(m.attrs.type, 'headline');
    t.is(m.attrs.from, 'localhost');
  }
});

test.serial('admin on node 1: deleting a user with a session on node 2 ends it there, after the confirmation stage', async (t) => {
  const [, n2] = cluster.nodes;
  const root = await admin(t);
  const name = await account('victim');
  const victim = await login(t, n2, name);
  const before = await count(t, root, 'get-registered-users-num', 'registeredusersnum');
  const ended = streamEnd(victim, 'the end of its session');
  // Stage 1 submitted with 'next': a confirmation form listing the account; completed at stage 2.
  const confirm = await run(t, root, 'delete-user', { accountjids: `${name}@localhost` }, 'next');
  t.is(confirm.attrs.status, 'executing');
  t.deepEqual(values(confirm, 'accountjids'), [`${name}@localhost`]);
  const done = await command(root, 'delete-user', { sessionid: confirm.attrs.sessionid, action: 'complete', fields: { accountjids: `${name}@localhost` } });
  t.is(done.attrs.status, 'completed');
  t.is(await ended, 'not-authorized');
  t.false(await accounts.exists(name));
  t.is(await loginOutcome(n2, name, `${name}-pw`), 'not-authorized');
  t.is(await count(t, root, 'get-registered-users-num', 'registeredusersnum'), before - 1);
});
