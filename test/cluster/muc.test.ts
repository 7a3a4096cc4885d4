// Multi-user chat (XEP-0045) in a three-node cluster (separate processes,
// one Redis and one PostgreSQL of their own), raw clients and @xmpp/client:
// - occupants on three nodes talking at once all get the room's messages in
//   one order, and a message crosses to another node once for all of that
//   node's occupants (one 'svc-fan' envelope, seen in Redis);
// - two nodes racing to create one room: one actor, one creator;
// - the room's node killed with SIGKILL: another node takes the room over
//   within the lease bound; occupants on the live nodes keep it without
//   entering again (a message sent just after the kill reaches every one of
//   them, self-ping says they are in), the dead node's occupant leaves with
//   status 333 for the others, and is no longer in by self-ping once back;
//   a newcomer gets the history, from before and after the death, from the
//   archive. The failover time (kill to that message at every occupant) is
//   logged.
import test, { type ExecutionContext } from 'ava';
import { Redis } from 'ioredis';
import { xml } from '@xmpp/client';
import { startCluster, type NodeProcess, type TestCluster } from '../helpers/cluster.ts';
import { RedisMonitor } from '../helpers/redis.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { WAIT, clusterPeers, expect, type Peer } from '../helpers/im.ts';
import { NS_MUC, codes, createRoom, freshRoom, iq, isGroupchat, isOccupant, isSelf, isSubject, join, sendJoin } from '../helpers/muc.ts';
import { stanzaError, within } from '../helpers/protocol.ts';
import { Inbox, xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';

const LEASE_MS = 3000;
const SERVICE = 'conference.localhost';

let cluster: TestCluster;
let m: NodeProcess[];
let accounts: PostgresAccountStore;
let redis: Redis;

test.before(async () => {
  cluster = await startCluster(['mu1', 'mu2', 'mu3'], { XMPP_NODE_LEASE_MS: String(LEASE_MS) });
  m = cluster.nodes;
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  redis = new Redis(cluster.redis.url);
});
test.after.always(async () => {
  redis?.disconnect();
  await accounts?.close();
  await cluster?.stop();
});

const { account, connect, user } = clusterPeers(() => accounts);
const groupchat = (room: string, body: string) => `<message to='${room}' type='groupchat'><body>${body}</body></message>`;
/** The bodies of the room's groupchat messages p got from index `from` on (history included). */
const bodies = (p: Peer, room: string, from = 0) =>
  p.c.items.slice(from).flatMap((it) => (it.kind === 'el' && isGroupchat(room, it.el.getChildText('body') ?? '')(it.el) ? [it.el.getChildText('body')!] : []));
/** The node whose claim the room is under. */
const holder = async (room: string) => (JSON.parse((await redis.get(`xmpp:muc:claim:${room.split('@')[0]}`)) ?? '{}') as { node?: string }).node;

test.serial('occupants on three nodes: the same messages in the same order for all; a message crosses to a node once for all its occupants', async (t) => {
  const alice = await user(t, m[0], 'alice');
  const bob = await user(t, m[1], 'bob');
  const carol = await user(t, m[2], 'carol');
  const dave = await user(t, m[2], 'dave');
  const room = await createRoom(alice, SERVICE, 'Alice');
  t.is(await holder(room), 'mu1', 'claimed by the node its first stanza came through');
  await join(bob, room, 'Bob');
  await join(carol, room, 'Carol');
  await join(dave, room, 'Dave');
  const everyone: [Peer, string][] = [[alice, 'Alice'], [bob, 'Bob'], [carol, 'Carol'], [dave, 'Dave']];
  const marks = everyone.map(([p]) => p.c.items.length);
  // All at once, from three nodes.
  const ROUNDS = 8;
  for (let i = 0; i < ROUNDS; i++) for (const [p, nick] of everyone) p.c.send(groupchat(room, `${nick}-${i}`));
  for (const [k, [p]] of everyone.entries()) for (const [, nick] of everyone) await expect(p, `${nick}'s last`, isGroupchat(room, `${nick}-${ROUNDS - 1}`), marks[k]);
  const seen = everyone.map(([p], k) => bodies(p, room, marks[k]));
  for (const [k, s] of seen.entries()) {
    t.is(s.length, ROUNDS * everyone.length, `${everyone[k][1]}: every message, once`);
    t.deepEqual(s, seen[0], `${everyone[k][1]} saw the order alice saw`);
  }
  // Each sender's messages in the order sent.
  for (const [, nick] of everyone) t.deepEqual(seen[0].filter((b) => b.startsWith(`${nick}-`)), Array.from({ length: ROUNDS }, (_, i) => `${nick}-${i}`));

  // Once per node: a message from the room's node reaches carol and dave (both on mu3) in one envelope.
  const monitor = await RedisMonitor.open(cluster.redis.port);
  t.teardown(() => monitor.close());
  const from = monitor.entries.length;
  const probe = `fan-probe-${Date.now()}`;
  alice.c.send(groupchat(room, probe));
  for (const [p] of everyone) await expect(p, 'the probe', isGroupchat(room, probe));
  await monitor.mark(redis, `after-${probe}`, from);
  const toNode = (node: string) => monitor.entries.slice(from).filter((e) => e.args[0].toLowerCase() === 'publish' && e.args[1].startsWith(`xmpp:c:${node}:`) && e.args[2].includes(probe));
  const third = toNode('mu3');
  t.is(third.length, 1, 'one envelope to mu3 for its two occupants');
  t.true(third[0].args[2].includes('svc-fan') && third[0].args[2].includes(carol.jid) && third[0].args[2].includes(dave.jid), 'the stanza and both sessions in it');
  t.is(toNode('mu2').length, 1, 'one to mu2');
});

test.serial('two nodes racing to create one room: one actor, one creator (201), the other refused while it is locked; then both talk', async (t) => {
  const bob = await user(t, m[1], 'bob');
  const carol = await user(t, m[2], 'carol');
  for (let round = 0; round < 5; round++) {
    const room = `${freshRoom('race')}@${SERVICE}`;
    const racers: [Peer, string][] = [[bob, 'Bob'], [carol, 'Carol']];
    const marks = racers.map(([p]) => p.c.items.length);
    for (const [p, nick] of racers) sendJoin(p, room, nick);
    const answers = await Promise.all(racers.map(([p, nick], k) => expect(p, `${nick}: an answer`, (el) => el.name === 'presence' && el.attrs.from?.startsWith(room) === true && (el.attrs.type === 'error' || codes(el).includes(110)), marks[k])));
    const created = answers.flatMap((a, k) => (a.attrs.type !== 'error' && codes(a).includes(201) ? [k] : []));
    t.is(created.length, 1, `round ${round}: ${answers.map((a) => a.toString()).join(' ')}`);
    if (created.length !== 1) return;
    const [owner, ownerNick] = racers[created[0]];
    const [other, otherNick] = racers[1 - created[0]];
    t.is(stanzaError(answers[1 - created[0]]).condition, 'item-not-found', '§7.2.9: locked until its owner configures it');
    t.is(await holder(room), owner === bob ? 'mu2' : 'mu3', 'one claim, the creator’s node');
    const res = await iq(owner, 'set', room, `<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>`);
    t.is(res.attrs.type, 'result');
    const { next } = await join(other, room, otherNick);
    owner.c.send(groupchat(room, `hello ${round}`));
    await expect(other, 'the message', isGroupchat(room, `hello ${round}`), next);
    t.is((await expect(owner, 'its reflection', isGroupchat(room, `hello ${round}`))).attrs.from, `${room}/${ownerNick}`);
  }
});

/** @xmpp/client logged in on `node`, its stanzas recorded; stopped at the end. */
async function realClient(t: ExecutionContext, node: NodeProcess, name: string): Promise<{ c: XmppClient; inbox: Inbox; jid: string }> {
  const c = xmppClient({ c2sPort: node.c2sPort, tlsPort: node.tlsPort, certFile: cluster.certFile }, { username: name, password: `${name}-pw`, resource: node.name });
  c.reconnect.stop();
  t.teardown(() => c.stop().then(() => undefined, () => undefined));
  const inbox = new Inbox(c);
  await within(c.start(), 15_000, `${name} logging in to ${node.name}`);
  await c.send(xml('presence'));
  return { c, inbox, jid: c.jid!.toString() };
}

test.serial('kill -9 of the room’s node: another node takes the room over within the lease bound; occupants stay in, the dead node’s leave with 333, nothing accepted is lost', async (t) => {
  const [doomed, n2, n3] = m;
  const alice = await user(t, doomed, 'alice');
  const bob = await user(t, n2, 'bob');
  const carol = await user(t, n3, 'carol');
  const xname = await account('xena');
  const xena = await realClient(t, n3, xname);
  const room = await createRoom(alice, SERVICE, 'Alice');
  t.is(await holder(room), doomed.name);
  await join(bob, room, 'Bob');
  await join(carol, room, 'Carol');
  const xself = xena.inbox.find((el) => isSelf(room)(el) || (el.name === 'presence' && el.attrs.type === 'error'));
  await xena.c.send(xml('presence', { to: `${room}/Xena` }, xml('x', { xmlns: NS_MUC })));
  t.not((await within(xself, WAIT, 'xena entering')).attrs.type, 'error', 'xena is in');
  await within(xena.inbox.find(isSubject(room)), WAIT, 'the subject at xena');
  alice.c.send(groupchat(room, 'before-1'));
  await expect(bob, 'before-1', isGroupchat(room, 'before-1'));
  bob.c.send(groupchat(room, 'before-2'));
  await within(xena.inbox.find(isGroupchat(room, 'before-2')), WAIT, 'before-2 at xena');
  await expect(carol, 'before-2', isGroupchat(room, 'before-2'));
  // XEP-0410 self-ping while the room's node lives: in.
  t.is((await iq(carol, 'get', `${room}/Carol`, `<ping xmlns='urn:xmpp:ping'/>`)).attrs.type, 'result');
  // Two more rooms nobody will speak in: one on the doomed node, one on a live node, alice in both.
  const quiet = await createRoom(alice, SERVICE, 'Alice');
  await join(bob, quiet, 'Bob');
  const elsewhere = await createRoom(bob, SERVICE, 'Bob');
  t.is(await holder(elsewhere), n2.name);
  await join(alice, elsewhere, 'Alice');

  const marks = { bob: bob.c.items.length, carol: carol.c.items.length, xena: xena.inbox.length };
  const killedAt = Date.now();
  doomed.proc.kill('SIGKILL');
  await doomed.exited;
  // Sent at once: it waits for the room to be taken over, then reaches everyone.
  bob.c.send(groupchat(room, 'after-kill'));
  const pinged = iq(carol, 'get', `${room}/Carol`, `<ping xmlns='urn:xmpp:ping'/>`);
  const arrivals = await Promise.all([
    expect(bob, 'after-kill (the reflection)', isGroupchat(room, 'after-kill'), marks.bob, LEASE_MS * 3 + WAIT).then(() => Date.now()),
    expect(carol, 'after-kill', isGroupchat(room, 'after-kill'), marks.carol, LEASE_MS * 3 + WAIT).then(() => Date.now()),
    within(xena.inbox.find(isGroupchat(room, 'after-kill'), marks.xena), LEASE_MS * 3 + WAIT, 'after-kill at xena').then(() => Date.now()),
  ]);
  const failover = Math.max(...arrivals) - killedAt;
  t.log(`failover: kill -9 of ${doomed.name} to the next message at every occupant: ${failover} ms (lease ${LEASE_MS} ms)`);
  t.true(failover <= LEASE_MS * 2 + 2000, `${failover} ms`);
  t.true([n2.name, n3.name].includes((await holder(room)) ?? ''), 'the room is claimed by a live node');
  // Carol's self-ping during the takeover: answered once the room is back, still in.
  t.is((await within(pinged, LEASE_MS * 3 + WAIT, 'self-ping during the takeover')).attrs.type, 'result');
  // Alice's session died with her node: she leaves, for the others, with 333.
  for (const [p, mark] of [[bob, marks.bob], [carol, marks.carol]] as const) {
    const left = await expect(p, 'Alice leaving', isOccupant(room, 'Alice', 'unavailable'), mark, LEASE_MS * 3 + WAIT);
    t.true(codes(left).includes(333), left.toString());
  }
  const xleft = await within(xena.inbox.find(isOccupant(room, 'Alice', 'unavailable'), marks.xena), WAIT, 'Alice leaving, at xena');
  t.true(codes(xleft).includes(333));
  // Without a stanza to them: the quiet room is taken over once the dead node is judged, and alice leaves both rooms.
  for (const r of [quiet, elsewhere]) {
    const left = await expect(bob, `Alice leaving ${r}`, isOccupant(r, 'Alice', 'unavailable'), marks.bob, LEASE_MS * 3 + WAIT);
    t.true(codes(left).includes(333), left.toString());
  }
  t.true([n2.name, n3.name].includes((await holder(quiet)) ?? ''), 'the quiet room is claimed by a live node');
  // Everyone left sees what comes next, in the same order as the others.
  carol.c.send(groupchat(room, 'after-2'));
  await expect(bob, 'after-2', isGroupchat(room, 'after-2'), marks.bob);
  await expect(carol, 'after-2 (the reflection)', isGroupchat(room, 'after-2'), marks.carol);
  await within(xena.inbox.find(isGroupchat(room, 'after-2'), marks.xena), WAIT, 'after-2 at xena');
  const xbodies = xena.inbox.els.flatMap((el) => (isGroupchat(room, el.getChildText('body') ?? '')(el) ? [el.getChildText('body')] : []));
  t.deepEqual(bodies(bob, room), ['before-1', 'before-2', 'after-kill', 'after-2']);
  t.deepEqual(bodies(carol, room), bodies(bob, room));
  t.deepEqual(xbodies, bodies(bob, room));

  // Alice back, on another node, under the same full JID: she is not in (XEP-0410: not-acceptable) until she enters again.
  const back = await connect(t, n2, alice.name, doomed.name);
  t.is(back.jid, alice.jid);
  t.is(stanzaError(await iq(back, 'get', `${room}/Alice`, `<ping xmlns='urn:xmpp:ping'/>`)).condition, 'not-acceptable');
  // A newcomer gets the history from the archive: what the dead node's room accepted, and what came after.
  const dave = await user(t, n2, 'dave');
  const { next } = await join(dave, room, 'Dave');
  t.deepEqual(bodies(dave, room), ['before-1', 'before-2', 'after-kill', 'after-2']);
  const first = dave.c.items.slice(0, next).find((it) => it.kind === 'el' && isGroupchat(room, 'before-1')(it.el));
  t.truthy(first && first.kind === 'el' && first.el.getChild('delay', 'urn:xmpp:delay'), 'with its delay');
  // And the room goes on with its occupants on both live nodes.
  xena.c.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'from xena')));
  for (const p of [bob, carol, dave]) await expect(p, 'from xena', isGroupchat(room, 'from xena'));
});
