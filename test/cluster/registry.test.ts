// The cluster's session registry end to end, on real nodes (separate
// processes) joined through a real redis-server: the conflict policies across
// nodes, unique ANONYMOUS bare JIDs, the per-node lookup cache, the bind race
// as Redis sees it (MONITOR), a node that died before its lease lapsed, a
// node restarting under its old name, and binds refused while Redis is away.
//
// One cluster for the file (g1, g2 with a short lease; g3 with a long one, so
// that the records it leaves when killed certainly outlive the stanzas sent
// to it); the tests run one at a time and use fresh accounts. Nothing waits
// on time: each wait is for a stanza, a log line or a Redis state, bounded by
// a timeout that fails with what was awaited.
import test from 'ava';
import { Redis } from 'ioredis';
import type { Element } from 'ltx';
import { RedisMonitor } from '../helpers/redis.ts';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { NS_BIND, authenticated, authenticatedAnonymously, bind, bindIq, ping, stanzaError, uid, within } from '../helpers/protocol.ts';
import { NS_DELAY, STAMP, WAIT, barrier, clusterPeers, expect, isPresence, ready, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

// Long enough that a loaded machine renews in time.
const LEASE_MS = 3000;
/** g3's lease: its records outlive it by far longer than any of these tests takes to look at them. */
const LONG_LEASE_MS = 20_000;
const NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';

let cluster: TestCluster;
let g1: NodeProcess;
let g2: NodeProcess;
let g3: NodeProcess;
let accounts: PostgresAccountStore;
let r: Redis;

test.before(async () => {
  cluster = await startCluster(['g1', 'g2'], { XMPP_NODE_LEASE_MS: String(LEASE_MS), XMPP_ANONYMOUS: 'true' });
  [g1, g2] = cluster.nodes;
  g3 = await cluster.add('g3', { XMPP_NODE_LEASE_MS: String(LONG_LEASE_MS) });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  r = new Redis(cluster.redis.url);
});

test.after.always(async () => {
  r?.disconnect();
  await accounts?.close();
  await cluster?.stop();
});

const { account, connect, user } = clusterPeers(() => accounts);

/** The registry's records of an account, by resource. */
async function records(bare: string): Promise<Record<string, { sid: string; node: string; priority: number; available: boolean }>> {
  const all = await r.hgetall(`xmpp:s:${bare}`);
  return Object.fromEntries(Object.entries(all).map(([res, json]) => [res, JSON.parse(json)]));
}

const isMessage = (id: string) => (el: Element) => el.name === 'message' && el.attrs.id === id;
const boundJid = (el: Element) => el.getChild('bind', NS_BIND)?.getChildText('jid') ?? undefined;
const streamCondition = (el: Element) => el.children.find((c): c is Element => typeof c !== 'string' && c.attrs.xmlns === NS_STREAMS)?.name;

/** A chat message from `from` to `to`; resolves once `at` has it. */
async function say(from: Peer, to: string, at: Peer, body = uid('msg')): Promise<Element> {
  const id = uid('m');
  const i = at.c.items.length;
  from.c.send(`<message to='${to}' id='${id}' type='chat'><body>${body}</body></message>`);
  return expect(at, `message ${id} (${body}) from ${from.jid} to ${to}`, isMessage(id), i);
}

/** Kills a node with SIGKILL and waits until Redis has dropped its connections (no subscriber left on its channels). */
async function kill9(node: NodeProcess): Promise<void> {
  node.proc.kill('SIGKILL');
  await node.exited;
  for (const deadline = Date.now() + WAIT; ; ) {
    const channels = (await r.pubsub('CHANNELS', `xmpp:c:${node.name}:*`)) as string[];
    if (channels.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${node.name}'s channels still have subscribers: ${channels.join(' ')}`);
    await new Promise<void>((res) => setTimeout(res, 20));
  }
}

test.serial('lookup cache: what node 1 cached follows a higher-priority resource becoming available elsewhere, and the only session moving between nodes', async (t) => {
  const alice = await user(t, g1, 'alice');
  const bobName = await account('bob');
  const bobBare = `${bobName}@localhost`;
  const low = await connect(t, g3, bobName, 'low');
  await ready(low, '<presence><priority>1</priority></presence>');
  const high = await connect(t, g2, bobName, 'high'); // bound, not yet available

  // Node 1 looks bob up (and caches him): the message goes to the only available resource.
  await say(alice, bobBare, low);
  // bob/high becomes available with a higher priority; its own echo is all we wait for.
  const h = high.c.items.length;
  high.c.send('<presence><priority>5</priority></presence>');
  await expect(high, 'its own presence', isPresence(high.jid), h);
  const got = await say(alice, bobBare, high);
  t.is(got.attrs.from, alice.jid);
  // Nothing of it at bob/low: a later message to bob/low, over the same path, comes first there.
  const l = low.c.items.length;
  const last = await say(alice, low.jid, low);
  const atLow = low.c.items.slice(l).flatMap((it) => (it.kind === 'el' && it.el.name === 'message' && it.el !== last ? [it.el.toString()] : []));
  t.deepEqual(atLow, [], 'the higher-priority resource alone got the message');

  // Now the only session moves: bob/home on node 2, then bob/home (the same full JID) on node 3.
  for (const p of [low, high]) {
    p.c.send('</stream:stream>');
    await within(p.c.closed, WAIT, `${p.jid} closing`);
  }
  const home2 = await connect(t, g2, bobName, 'home');
  await ready(home2);
  await say(alice, home2.jid, home2); // cached on node 1: bob/home is on node 2
  await say(alice, bobBare, home2);
  home2.c.send('</stream:stream>');
  await within(home2.c.closed, WAIT, 'bob/home on node 2 closing');
  const home3 = await connect(t, g3, bobName, 'home');
  await ready(home3);
  t.is(home3.jid, home2.jid);
  await say(alice, home3.jid, home3);
  await say(alice, bobBare, home3);
  t.deepEqual(Object.keys(await records(bobBare)), ['home']);
  t.is((await records(bobBare)).home.node, g3.name);
});

test.serial('ANONYMOUS: many concurrent anonymous logins spread over the nodes get distinct bare JIDs', async (t) => {
  const nodes = [g1, g2, g3];
  const count = 18;
  const clients = await Promise.all(Array.from({ length: count }, async (_, i) => {
    const { c } = await within(authenticatedAnonymously(nodes[i % nodes.length].c2sPort), WAIT, `anonymous login ${i}`);
    t.teardown(() => c.destroy());
    return c;
  }));
  // All bind the same resource at once: only the bare JID can set them apart.
  const replies = await Promise.all(clients.map((c, i) => within(bind(c, 'same'), WAIT, `anonymous bind ${i}`)));
  const jids = replies.map((el) => {
    t.is(el.attrs.type, 'result', el.toString());
    return boundJid(el) ?? '';
  });
  const bares = jids.map((j) => j.split('/')[0]);
  for (const j of jids) t.regex(j, /^anon-[^@/]+@localhost\/same$/);
  t.is(new Set(bares).size, count, `distinct bare JIDs: ${bares.join(' ')}`);
  for (const [i, bare] of bares.entries()) {
    const recs = await records(bare);
    t.deepEqual(Object.keys(recs), ['same'], `${bare}: one session`);
    t.is(recs.same?.node, nodes[i % nodes.length].name);
  }
  for (const c of clients) t.is((await within(ping(c), WAIT, 'ping')).attrs.type, 'result');
});

test.serial('the bind race as Redis saw it (MONITOR): one holder at a time, each replaced holder told <conflict/>, the last one alone connected', async (t) => {
  const name = await account('race');
  const bare = `${name}@localhost`;
  const full = `${bare}/same`;
  const nodes = [g1, g2, g3];
  const attempts = 12;
  // Authenticate first, then bind all at once: the race is on the bind alone.
  const clients = await Promise.all(Array.from({ length: attempts }, async (_, i) => {
    const { c } = await within(authenticated(nodes[i % nodes.length].c2sPort, name, `${name}-pw`), WAIT, `login ${i}`);
    t.teardown(() => c.destroy());
    return c;
  }));
  const monitor = await RedisMonitor.open(cluster.redis.port);
  t.teardown(() => monitor.close());
  const start = monitor.entries.length;
  clients.forEach((c, i) => c.send(bindIq(`race-${i}`, 'same')));

  // Client side: a bind result, a <conflict/> stream error, or both (in that order, or only the error when replaced before the answer).
  // Bounded: a replaced session that never hears of it (a ghost) fails the test instead of hanging it.
  await within(
    new Promise<void>((resolve) => {
      let errors = 0;
      for (const c of clients) void c.find((el) => el.name === 'stream:error').then(() => ++errors === attempts - 1 && resolve(), () => {});
    }),
    20_000,
    `${attempts - 1} stream errors`,
  );
  // And each client's first answer: its bind result, or the stream error that came instead.
  await Promise.all(clients.map((c, i) => within(c.find((el) => el.attrs.id === `race-${i}` || el.name === 'stream:error'), WAIT, `client ${i}'s answer`)));
  const outcome = clients.map((c, i) => {
    const els = c.items.flatMap((it) => (it.kind === 'el' ? [it.el] : []));
    const reply = els.find((el) => el.attrs.id === `race-${i}`);
    const error = els.find((el) => el.name === 'stream:error');
    return { c, bound: reply?.attrs.type === 'result' ? boundJid(reply) : undefined, reply, error: error && streamCondition(error) };
  });
  for (const [i, o] of outcome.entries()) {
    if (o.reply) t.is(o.reply.attrs.type, 'result', `client ${i}: ${o.reply.toString()}`);
    if (o.bound) t.is(o.bound, full);
    if (o.error) t.is(o.error, 'conflict', `client ${i}'s stream error`);
    t.true(Boolean(o.bound) || o.error === 'conflict', `client ${i} either bound or was told <conflict/>`);
  }
  const survivors = outcome.filter((o) => !o.error);
  t.is(survivors.length, 1, 'exactly one client without a stream error');
  const last = survivors[0];
  t.truthy(last?.bound, 'and it bound');
  // It is the holder in Redis: a message to the full JID, routed by the registry's record, reaches it.
  const mark = last.c.items.length;
  last.c.send(`<message to='${full}' id='to-holder' type='chat'><body>who holds it?</body></message>`);
  await within(last.c.find((el) => el.attrs.id === 'to-holder' && el.name === 'message', mark), WAIT, 'the message to the full JID');
  for (const o of outcome) if (o !== last) await within(o.c.closed, WAIT, 'a replaced client being disconnected');
  t.false(last.c.isClosed);

  // Redis side: replay what the scripts did to the hash field and to the per-node sets.
  const finalRecord = await records(bare);
  const end = await within(monitor.mark(r, uid('race-end'), start), WAIT, 'MONITOR reporting the end mark');
  const holders: string[] = [];
  const inSets = new Set<string>();
  let most = 0;
  let removed = 0;
  for (const e of monitor.entries.slice(start, end)) {
    if (e.source !== 'lua') continue;
    const [cmd, key, field, value] = [e.args[0].toUpperCase(), e.args[1], e.args[2], e.args[3]];
    if (key === `xmpp:s:${bare}` && field === 'same') {
      if (cmd === 'HSET') holders.push((JSON.parse(value) as { sid: string }).sid);
      if (cmd === 'HDEL') removed++;
    }
    if (key?.startsWith('xmpp:n:') && field === full) {
      if (cmd === 'SADD') inSets.add(key);
      if (cmd === 'SREM') inSets.delete(key);
      most = Math.max(most, inSets.size);
    }
  }
  t.is(holders.length, attempts, 'every bind took the resource once (new wins)');
  t.is(new Set(holders).size, attempts, 'each time another session');
  t.is(removed, 0, 'the holder was never removed: every loser unbound after it had been replaced');
  t.is(most, 1, 'at no moment did two nodes list the full JID');
  t.deepEqual(Object.keys(finalRecord), ['same']);
  t.is(finalRecord.same.sid, holders[holders.length - 1], 'the record is the last bind');
  t.deepEqual([...inSets], [`xmpp:n:${finalRecord.same.node}`]);
  t.is(finalRecord.same.node, nodes[clients.indexOf(last.c) % nodes.length].name, 'held on the survivor\'s node');
});

test.serial('conflict policy "assign" across nodes: concurrent binds of one resource get it once, the others distinct assigned resources, all live', async (t) => {
  const env = { XMPP_CONFLICT_POLICY: 'assign', XMPP_MAX_RESOURCES: '20', XMPP_NODE_LEASE_MS: String(LEASE_MS) };
  const nodes = await Promise.all([cluster.add('as1', env), cluster.add('as2', env)]);
  t.teardown(() => Promise.all(nodes.map((n) => n.stop())));
  const name = await account('assign');
  const bare = `${name}@localhost`;
  const count = 12;
  const clients = await Promise.all(Array.from({ length: count }, async (_, i) => {
    const { c } = await within(authenticated(nodes[i % 2].c2sPort, name, `${name}-pw`), WAIT, `login ${i}`);
    t.teardown(() => c.destroy());
    return c;
  }));
  const replies = await Promise.all(clients.map((c, i) => within(bind(c, 'same'), WAIT, `bind ${i}`)));
  const jids = replies.map((el, i) => {
    t.is(el.attrs.type, 'result', `bind ${i}: ${el.toString()}`);
    return boundJid(el) ?? '';
  });
  t.is(jids.filter((j) => j === `${bare}/same`).length, 1, `exactly one got the resource it asked for: ${jids.join(' ')}`);
  t.is(new Set(jids).size, count, 'all distinct');
  for (const j of jids) t.true(j.startsWith(`${bare}/`) && j.length > bare.length + 1, j);

  // All live, each reachable at its JID through the registry.
  const peers = clients.map((c, i) => ({ c, jid: jids[i], bare, name }));
  for (const p of peers) await say(peers[0], p.jid, p);
  for (const p of peers) t.false(p.c.isClosed);
  const recs = await records(bare);
  t.deepEqual(Object.keys(recs).sort(), jids.map((j) => j.slice(bare.length + 1)).sort(), 'one record per session, nothing else');
  t.is(new Set(Object.values(recs).map((x) => x.sid)).size, count, 'distinct sessions');
  for (const [i, j] of jids.entries()) t.is(recs[j.slice(bare.length + 1)].node, nodes[i % 2].name, `${j} is held on its client's node`);
});

test.serial('conflict policy "old-wins" across nodes: the second session gets a conflict bind error, the first keeps the resource and works', async (t) => {
  const env = { XMPP_CONFLICT_POLICY: 'old-wins', XMPP_NODE_LEASE_MS: String(LEASE_MS) };
  const [o1, o2] = await Promise.all([cluster.add('ow1', env), cluster.add('ow2', env)]);
  t.teardown(() => Promise.all([o1.stop(), o2.stop()]));
  const first = await connect(t, o1, await account('old'), 'desk');
  await ready(first);
  const { c: second } = await within(authenticated(o2.c2sPort, first.name, `${first.name}-pw`), WAIT, 'second login');
  t.teardown(() => second.destroy());
  const refused = await within(bind(second, 'desk'), WAIT, 'second bind');
  t.is(refused.attrs.type, 'error', refused.toString());
  t.deepEqual(stanzaError(refused), { type: 'cancel', condition: 'conflict', by: undefined });
  t.false(first.c.isClosed);
  t.is((await within(ping(first.c), WAIT, 'ping the first session')).attrs.type, 'result');
  const recs = await records(first.bare);
  t.deepEqual(Object.keys(recs), ['desk']);
  t.is(recs.desk.node, o1.name, 'still held on the first node');
  // The refused stream may bind another resource, and both are reachable across the nodes.
  const other = await within(bind(second, 'laptop'), WAIT, 'bind of another resource');
  t.is(boundJid(other), `${first.bare}/laptop`);
  await say({ c: second, jid: `${first.bare}/laptop`, bare: first.bare, name: first.name }, first.jid, first);
});

test.serial('a stanza to a node that has just died, its records still in Redis: the message is kept offline, the iq gets service-unavailable', async (t) => {
  if (g3.proc.exitCode !== null || g3.proc.signalCode !== null) g3 = await cluster.add('g3', { XMPP_NODE_LEASE_MS: String(LONG_LEASE_MS) });
  const alice = await user(t, g1, 'alice');
  const bob = await user(t, g3, 'bob', 'doomed');
  await kill9(g3);
  const before = (await records(bob.bare)).doomed;
  t.is(before?.node, g3.name, 'the record of the dead node is still there');

  const a = alice.c.items.length;
  alice.c.send(`<message to='${bob.jid}' id='to-dead' type='chat'><body>are you there?</body></message>`);
  alice.c.send(`<iq to='${bob.jid}' id='iq-to-dead' type='get'><query xmlns='jabber:iq:version'/></iq>`);
  const err = await expect(alice, 'an answer to the iq', (el) => el.attrs.id === 'iq-to-dead', a);
  t.is(err.attrs.type, 'error', err.toString());
  t.is(stanzaError(err).condition, 'service-unavailable');
  t.is(err.attrs.from, bob.jid);
  t.is((await records(bob.bare)).doomed?.sid, before.sid, 'the record was still there when both were routed');

  // The message waits offline for bob's next session, on another node, stamped.
  const back = await connect(t, g2, bob.name, 'back');
  const b = back.c.items.length;
  back.c.send('<presence/>');
  const kept = await expect(back, 'the message sent to the dead node', isMessage('to-dead'), b);
  t.is(kept.attrs.from, alice.jid);
  t.is(kept.getChildText('body'), 'are you there?');
  const delay = kept.getChild('delay', NS_DELAY);
  t.is(delay?.attrs.from, 'localhost', kept.toString());
  t.regex(delay?.attrs.stamp ?? '', STAMP);
  const atAlice = (await barrier(alice, a)).filter((el) => el.attrs.id === 'to-dead');
  t.deepEqual(atAlice.map((el) => el.toString()), [], 'kept, not bounced');
});

test.serial("a message to the bare JID while a dead node's record is still registered: the live resource gets it, and it is not also kept offline for later", async (t) => {
  if (g3.proc.exitCode !== null || g3.proc.signalCode !== null) g3 = await cluster.add('g3', { XMPP_NODE_LEASE_MS: String(LONG_LEASE_MS) });
  const alice = await user(t, g1, 'alice');
  const bob = await user(t, g3, 'bob', 'doomed');
  const back = await connect(t, g2, bob.name, 'alive');
  await ready(back);
  await kill9(g3);
  t.is((await records(bob.bare)).doomed?.available, true, "the dead node's record still says available");
  // Both resources have the top priority: the message goes to each; the copy for the dead one cannot be delivered.
  const got = await say(alice, bob.bare, back);
  await barrier(alice, alice.c.items.length);
  // A session of bob's that logs in later must not get it again from offline storage.
  const later = await connect(t, g1, bob.name, 'later');
  const l = later.c.items.length;
  later.c.send('<presence/>');
  await expect(later, 'its own presence', isPresence(later.jid), l);
  const again = (await barrier(later, l)).filter((el) => el.name === 'message' && el.attrs.id === got.attrs.id);
  t.deepEqual(again.map((el) => el.toString()), [], 'the message bob/alive got live is not delivered a second time');
});

test.serial('a node restarting under its old name after kill -9 starts clean: its records are gone once it listens, the user logs in again with the same resource, the contact hears unavailable', async (t) => {
  const long = { XMPP_NODE_LEASE_MS: String(LONG_LEASE_MS) };
  if (g3.proc.exitCode !== null || g3.proc.signalCode !== null) g3 = await cluster.add('g3', long);
  const dora = await user(t, g1, 'dora');
  const carl = await user(t, g3, 'carl', 'home');
  await subscribe(dora, carl);
  t.is((await records(carl.bare)).home?.node, g3.name);
  t.true((await r.sismember(`xmpp:n:${g3.name}`, carl.jid)) === 1);
  await kill9(g3);
  t.is((await records(carl.bare)).home?.node, g3.name, 'the lease has not lapsed: the record is still there');

  const d = dora.c.items.length;
  g3 = await cluster.add('g3', long);
  // Right after it listens, nothing of its previous run is left.
  t.is(await r.exists(`xmpp:n:${g3.name}`), 0, 'its set of sessions is gone');
  const left: string[] = [];
  for (const key of await r.keys('xmpp:s:*')) for (const [res, rec] of Object.entries(await records(key.slice('xmpp:s:'.length)))) if (rec.node === g3.name) left.push(`${key}/${res}`);
  t.deepEqual(left, [], 'no session record names it');
  const gone = await expect(dora, "carl's unavailable presence", isPresence(carl.jid, 'unavailable'), d);
  t.is(gone.attrs.to, dora.bare);

  const again = await connect(t, g3, carl.name, 'home');
  t.is(again.jid, carl.jid);
  await ready(again);
  await expect(dora, "carl's presence, back", isPresence(carl.jid), d);
  t.deepEqual(Object.keys(await records(carl.bare)), ['home']);
  t.deepEqual(await r.smembers(`xmpp:n:${g3.name}`), [carl.jid]);
  await say(dora, carl.jid, again);
});

test.serial('while the registry is unreachable a bind is refused with resource-constraint (wait); once Redis is back, a bind works', async (t) => {
  // A cluster of its own: stopping Redis would disturb the others'.
  const solo = await startCluster(['solo'], { XMPP_NODE_LEASE_MS: String(LEASE_MS), XMPP_ANONYMOUS: 'true' });
  t.teardown(() => solo.stop());
  const [node] = solo.nodes;
  await solo.redis.stop();
  // SASL ANONYMOUS needs no account store; the bind needs the registry.
  const { c } = await within(authenticatedAnonymously(node.c2sPort), WAIT, 'anonymous login');
  t.teardown(() => c.destroy());
  const refused = await within(bind(c, 'r'), WAIT, 'bind while Redis is down');
  t.is(refused.attrs.type, 'error', refused.toString());
  t.deepEqual(stanzaError(refused), { type: 'wait', condition: 'resource-constraint', by: undefined });

  t.false(/the registry lost its data/.test(node.log));
  await solo.redis.resume(); // on the same port, empty
  // The node notices the registry lost its data and takes its lease back; then binds go through.
  await within(node.waitForLog(/the registry lost its data/), WAIT, 'the node re-establishing its lease');
  let bound: Element | undefined;
  const deadline = Date.now() + WAIT;
  for (;;) {
    const reply = await within(bind(c, 'r'), WAIT, 'bind after Redis came back');
    if (reply.attrs.type === 'result') {
      bound = reply;
      break;
    }
    t.deepEqual(stanzaError(reply), { type: 'wait', condition: 'resource-constraint', by: undefined }, 'until it works, the same refusal');
    if (Date.now() > deadline) break;
    await new Promise<void>((res) => setTimeout(res, 100));
  }
  t.truthy(bound, 'a bind works once Redis is back');
  const jid = bound ? boundJid(bound) : undefined;
  t.regex(jid ?? '', /^anon-[^@/]+@localhost\/r$/);
  const check = new Redis(solo.redis.url);
  t.teardown(() => check.disconnect());
  const rec = await check.hget(`xmpp:s:${jid?.split('/')[0]}`, 'r');
  t.is(rec && JSON.parse(rec).node, node.name);
  t.is((await within(ping(c), WAIT, 'ping')).attrs.type, 'result');
});
