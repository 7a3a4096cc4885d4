// Presence, subscriptions, offline messages and carbons across real cluster
// nodes (separate processes joined through a real redis-server): the parties
// of each exchange are connected to different nodes, and a node killed with
// SIGKILL leaves its sessions' unavailable presence to the survivors, within
// the lease bound.
//
// Raw clients (STARTTLS, SASL PLAIN, bind); every test uses fresh accounts,
// so the tests of this file run concurrently on one cluster. Nothing waits
// on time: each wait is for a stanza, bounded by a timeout that fails with
// what was awaited. "Nothing else arrived" is only checked behind a ping on
// the same stream, for what that stream's own session causes.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RedisServer } from '../helpers/redis.ts';
import { NodeProcess, clusterCertificate } from '../helpers/cluster.ts';
import type { RawClient } from '../helpers/raw.ts';
import { online, pingIq, uid, within } from '../helpers/protocol.ts';
import { RedisAccountStore } from '../../src/accounts/redis.ts';

const NS_ROSTER = 'jabber:iq:roster';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_DELAY = 'urn:xmpp:delay';
// Long enough that a loaded machine renews in time.
const LEASE_MS = 3000;
const WAIT = 10_000;

let redis: RedisServer;
/** n1, n2, n3 live throughout; doomed is killed by one test. */
let nodes: NodeProcess[];
let doomed: NodeProcess;
let accounts: RedisAccountStore;
let r: Redis;
let certDir: string;

test.before(async () => {
  redis = await RedisServer.start();
  certDir = mkdtempSync(join(tmpdir(), 'xmpp-cert-'));
  const { cert, key } = clusterCertificate(certDir);
  const env = { XMPP_REDIS_URL: redis.url, XMPP_NODE_LEASE_MS: String(LEASE_MS), XMPP_TLS_CERT: cert, XMPP_TLS_KEY: key };
  [doomed, ...nodes] = await Promise.all(['p0', 'p1', 'p2', 'p3'].map((name) => NodeProcess.start(name, env)));
  accounts = await RedisAccountStore.open(redis.url, 4096);
  r = new Redis(redis.url);
});

test.after.always(async () => {
  r?.disconnect();
  await accounts?.close();
  await Promise.all([...(nodes ?? []), doomed].filter(Boolean).map((node) => node.stop('SIGKILL')));
  await redis?.destroy();
  if (certDir) rmSync(certDir, { recursive: true, force: true });
});

interface Peer {
  c: RawClient;
  jid: string;
  bare: string;
  name: string;
}

let n = 0;
async function account(base: string): Promise<string> {
  const name = `${base}${++n}x${process.pid}`;
  await accounts.create(name, `${name}-pw`);
  return name;
}

async function connect(t: ExecutionContext, node: NodeProcess, name: string, resource: string): Promise<Peer> {
  const { c, jid } = await within(online(node.c2sPort, name, `${name}-pw`, resource), WAIT, `${name}/${resource} logging in to ${node.name}`);
  t.teardown(() => c.destroy());
  return { c, jid, bare: jid.split('/')[0], name };
}

/** A new account logged in on `node`, roster requested and available. */
async function user(t: ExecutionContext, node: NodeProcess, base: string, resource = node.name): Promise<Peer> {
  const p = await connect(t, node, await account(base), resource);
  await ready(p);
  return p;
}

function expect(p: Peer, what: string, pred: (el: Element) => boolean, from = 0, ms = WAIT): Promise<Element> {
  return within(p.c.find(pred, from), ms, `${p.jid}: ${what}`);
}

const isPresence = (from: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from === from && el.attrs.type === type;
const rosterItem = (el: Element) => el.getChild('query', NS_ROSTER)?.getChild('item');
const isPush = (jid: string) => (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && rosterItem(el)?.attrs.jid === jid;
const summary = (items: Element[]) => items.map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.ask]);

async function rosterOf(p: Peer): Promise<Element[]> {
  const id = uid('roster');
  const res = await within(p.c.request(`<iq type='get' id='${id}'><query xmlns='${NS_ROSTER}'/></iq>`, id), WAIT, `${p.jid}: roster`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res.getChild('query', NS_ROSTER)!.getChildren('item');
}

/** Requests the roster and sends initial presence; waits for its echo (§4.2.2). */
async function ready(p: Peer, presence = '<presence/>'): Promise<Element[]> {
  const items = await rosterOf(p);
  const from = p.c.items.length;
  p.c.send(presence);
  await expect(p, 'its own presence', isPresence(p.jid), from);
  return items;
}

/** Waits for a roster push about `jid` in the given state and answers it; returns the index after it. */
async function push(t: ExecutionContext, p: Peer, jid: string, subscription: string, ask: string | undefined, from: number): Promise<number> {
  const el = await expect(p, `roster push for ${jid} (${subscription}${ask ? ` ask=${ask}` : ''})`, (e) => isPush(jid)(e) && rosterItem(e)!.attrs.subscription === subscription && rosterItem(e)!.attrs.ask === ask, from);
  t.false('from' in el.attrs, 'a push comes from the account itself (no from)');
  p.c.send(`<iq type='result' id='${el.attrs.id}'/>`);
  return p.c.items.findIndex((it) => it.kind === 'el' && it.el === el) + 1;
}

/** Elements received after index `from` up to the answer of a ping sent now. */
async function barrier(p: Peer, from: number): Promise<Element[]> {
  const id = uid('barrier');
  const reply = await within(p.c.request(pingIq(id), id), WAIT, `${p.jid}: barrier ping`);
  const items = p.c.items;
  const end = items.findIndex((it) => it.kind === 'el' && it.el === reply);
  return items.slice(from, end).flatMap((it) => (it.kind === 'el' ? [it.el] : []));
}

/** a subscribes to b's presence and b approves (both online and ready). */
async function subscribe(a: Peer, b: Peer): Promise<void> {
  const [af, bf] = [a.c.items.length, b.c.items.length];
  a.c.send(`<presence to='${b.bare}' type='subscribe'/>`);
  await expect(b, `${a.bare}'s request`, isPresence(a.bare, 'subscribe'), bf);
  b.c.send(`<presence to='${a.bare}' type='subscribed'/>`);
  await expect(a, 'approval', isPresence(b.bare, 'subscribed'), af);
  await expect(a, `${b.jid}'s presence`, isPresence(b.jid), af);
}

test('subscription handshake across nodes, both online: pushes, presence and "both" on both sides', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  let [a, b] = [alice.c.items.length, bob.c.items.length];

  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  a = await push(t, alice, bob.bare, 'none', 'subscribe', a);
  const req = await expect(bob, 'the request, through node 1', isPresence(alice.bare, 'subscribe'), b);
  t.is(req.attrs.to, bob.bare);

  b = bob.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  b = await push(t, bob, alice.bare, 'from', undefined, b);
  await push(t, alice, bob.bare, 'to', undefined, a);
  await expect(alice, 'subscribed', isPresence(bob.bare, 'subscribed'), a);
  const p = await expect(alice, "bob's presence from node 2", isPresence(bob.jid), a);
  t.is(p.attrs.to, alice.bare);

  a = alice.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, "bob's request", isPresence(bob.bare, 'subscribe'), a);
  alice.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  await push(t, alice, bob.bare, 'both', undefined, a);
  await push(t, bob, alice.bare, 'both', undefined, b);
  await expect(bob, 'subscribed', isPresence(alice.bare, 'subscribed'), b);
  await expect(bob, "alice's presence from node 1", isPresence(alice.jid), b);
  t.deepEqual(summary(await rosterOf(alice)), [[bob.bare, 'both', undefined]]);
  t.deepEqual(summary(await rosterOf(bob)), [[alice.bare, 'both', undefined]]);
});

test('a request to an offline user, sent through node 1, is kept and delivered when the user logs in on node 3', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bobName = await account('bob');
  const bobBare = `${bobName}@localhost`;
  let a = alice.c.items.length;
  alice.c.send(`<presence to='${bobBare}' type='subscribe'><status>from node 1</status></presence>`);
  a = await push(t, alice, bobBare, 'none', 'subscribe', a);

  const bob = await connect(t, nodes[2], bobName, 'n3');
  const from = bob.c.items.length;
  t.deepEqual(await ready(bob), [], 'a pending request is not a roster item');
  const req = await expect(bob, 'the kept request', isPresence(alice.bare, 'subscribe'), from);
  t.is(req.getChildText('status'), 'from node 1');

  const b = bob.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  await push(t, bob, alice.bare, 'from', undefined, b);
  await push(t, alice, bobBare, 'to', undefined, a);
  await expect(alice, 'subscribed', isPresence(bobBare, 'subscribed'), a);
  await expect(alice, "bob's presence from node 3", isPresence(bob.jid), a);
});

test('presence updates cross nodes to the subscriber; a new resource on node 3 probes and gets the contact on node 2', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  await subscribe(alice, bob);
  await subscribe(bob, alice);

  let a = alice.c.items.length;
  bob.c.send(`<presence><show>away</show><status>in a meeting</status></presence>`);
  const away = await expect(alice, "bob's update", (el) => isPresence(bob.jid)(el) && el.getChildText('show') === 'away', a);
  t.is(away.getChildText('status'), 'in a meeting');
  t.is(away.attrs.to, alice.bare);

  a = alice.c.items.length;
  const b = bob.c.items.length;
  const alice3 = await connect(t, nodes[2], alice.name, 'n3');
  const from = alice3.c.items.length;
  await ready(alice3);
  // §4.3: the probe crosses to node 2 and bob's session answers with its current presence.
  const probed = await expect(alice3, "bob's presence, answering the probe", (el) => isPresence(bob.jid)(el) && el.getChildText('show') === 'away', from);
  t.is(probed.attrs.to, alice3.jid, 'answered to the probing full JID');
  await expect(alice3, "alice's other resource, on node 1", isPresence(alice.jid), from);
  await expect(alice, "alice/n3's initial presence", isPresence(alice3.jid), a);
  await expect(bob, "alice/n3's initial presence", isPresence(alice3.jid), b);
});

test('a killed connection on node 2: the subscriber on node 1 gets unavailable presence', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const bob = await user(t, nodes[1], 'bob');
  await subscribe(alice, bob);
  const a = alice.c.items.length;
  bob.c.destroy();
  const gone = await expect(alice, "bob's unavailable", isPresence(bob.jid, 'unavailable'), a);
  t.is(gone.attrs.to, alice.bare);
});

test("a node killed with SIGKILL: survivors announce its sessions' unavailable presence to subscribers and directed-presence recipients within the lease bound", async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const erin = await user(t, nodes[1], 'erin');
  const bob = await user(t, doomed, 'bob');
  const dave = await user(t, doomed, 'dave');
  await subscribe(alice, bob);
  // §4.6: dave, available, sends directed presence to erin (no subscription between them).
  const e0 = erin.c.items.length;
  dave.c.send(`<presence to='${erin.jid}'><status>hello erin</status></presence>`);
  await expect(erin, "dave's directed presence", isPresence(dave.jid), e0);
  // The directed presence is recorded where survivors can see it: the next
  // stanza of dave's session is handled after it (a ping answered by the node).
  await barrier(dave, dave.c.items.length);

  const [a, e] = [alice.c.items.length, erin.c.items.length];
  const killedAt = Date.now();
  doomed.proc.kill('SIGKILL');
  // Bound: the lease, one heartbeat period to notice, and slack for a loaded machine.
  const bound = LEASE_MS * 2 + 2000;
  const [toAlice, toErin] = await Promise.all([
    expect(alice, "bob's unavailable after his node died", isPresence(bob.jid, 'unavailable'), a, bound),
    expect(erin, "dave's unavailable after his node died", isPresence(dave.jid, 'unavailable'), e, bound),
  ]);
  const took = Date.now() - killedAt;
  t.true(took <= bound, `announced after ${took} ms`);
  t.is(toAlice.attrs.to, alice.bare);
  t.is(toErin.attrs.to, erin.jid);
  t.deepEqual(summary(await rosterOf(alice)), [[bob.bare, 'to', undefined]], 'the subscription itself is untouched');
});

test('offline messages stored through node 1 are delivered, in order, stamped and once, at login on node 2', async (t) => {
  const alice = await user(t, nodes[0], 'alice');
  const frankName = await account('frank');
  const frankBare = `${frankName}@localhost`;
  const ids = [uid('off'), uid('off'), uid('off')];
  const start = alice.c.items.length;
  for (const [i, id] of ids.entries()) alice.c.send(`<message to='${frankBare}' id='${id}' type='chat'><body>kept ${i}</body></message>`);
  t.deepEqual((await barrier(alice, start)).map((el) => el.toString()), [], 'stored, no error to the sender');
  t.is(await r.llen(`xmpp:offline:${frankName}`), 3, 'three messages in Redis');

  const frank = await connect(t, nodes[1], frankName, 'n2');
  const f = frank.c.items.length;
  frank.c.send('<presence/>');
  await expect(frank, 'the last kept message', (el) => el.attrs.id === ids[2], f);
  const got = (await barrier(frank, f)).filter((el) => el.name === 'message');
  t.deepEqual(got.map((m) => m.attrs.id), ids, 'all, in order, each once');
  for (const [i, m] of got.entries()) {
    t.is(m.attrs.from, alice.jid);
    t.is(m.getChildText('body'), `kept ${i}`);
    t.is(m.getChild('delay', NS_DELAY)?.attrs.from, 'localhost', m.toString());
  }
  t.is(await r.llen(`xmpp:offline:${frankName}`), 0, 'nothing left');

  const again = await connect(t, nodes[2], frankName, 'n3');
  const g = again.c.items.length;
  again.c.send('<presence/>');
  await expect(again, 'own presence', isPresence(again.jid), g);
  t.deepEqual((await barrier(again, g)).filter((el) => el.name === 'message').map((m) => m.toString()), [], 'a later login, elsewhere, gets none');
});

test('carbons across nodes: two resources of one user on nodes 1 and 2, the contact on node 3', async (t) => {
  const gina = await user(t, nodes[0], 'gina');
  const gina2 = await connect(t, nodes[1], gina.name, nodes[1].name);
  await ready(gina2);
  const hal = await user(t, nodes[2], 'hal');
  for (const p of [gina, gina2]) {
    const id = uid('carbons');
    const res = await within(p.c.request(`<iq type='set' id='${id}'><enable xmlns='${NS_CARBONS}'/></iq>`, id), WAIT, `${p.jid}: enable carbons`);
    t.is(res.attrs.type, 'result', res.toString());
  }

  const [g1, g2, h] = [gina.c.items.length, gina2.c.items.length, hal.c.items.length];
  gina.c.send(`<message to='${hal.jid}' id='cs1' type='chat'><body>sent on node 1</body></message>`);
  await expect(hal, 'the chat', (el) => el.attrs.id === 'cs1', h);
  const sent = await expect(gina2, '<sent/> carbon on node 2', (el) => el.name === 'message' && Boolean(el.getChild('sent', NS_CARBONS)), g2);
  t.is(sent.attrs.from, gina.bare);
  t.is(sent.attrs.to, gina2.jid);
  const inner = sent.getChild('sent', NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message');
  t.is(inner?.attrs.from, gina.jid);
  t.is(inner?.attrs.to, hal.jid);
  t.is(inner?.getChildText('body'), 'sent on node 1');

  hal.c.send(`<message to='${gina.jid}' id='cr1' type='chat'><body>answer from node 3</body></message>`);
  await expect(gina, 'the answer', (el) => el.attrs.id === 'cr1', g1);
  const received = await expect(gina2, '<received/> carbon on node 2', (el) => el.name === 'message' && Boolean(el.getChild('received', NS_CARBONS)), g2);
  t.is(received.attrs.from, gina.bare);
  t.is(received.attrs.to, gina2.jid);
  const rin = received.getChild('received', NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message');
  t.is(rin?.attrs.from, hal.jid);
  t.is(rin?.attrs.to, gina.jid);
  t.is(rin?.getChildText('body'), 'answer from node 3');
});
