// What the server queues for a client cannot lock it out or be lost (issue
// 14, items 2, 3, 4, 7), each attack scaled down (XMPP_MAX_OUTBOUND_BYTES at
// its minimum, 64 KiB) but by the same mechanism, with a bystander pair
// chatting throughout:
//
// - strangers park large subscription requests in a victim's account: what
//   is kept is cut short, the requests come at login as the client reads,
//   never counted against it, and the victim is not cut off;
// - limits on pending requests, per recipient (strangers only) and per
//   sender, answer the sender with an error instead of dropping silently;
// - offline messages beyond the outbound bound are all delivered, paced; a
//   message leaves the store only once written, so a drop mid-way keeps the
//   rest; the store has a byte bound;
// - messages queued for a client that stops reading go, when it is cut off,
//   where undeliverable messages go: offline storage or an error to the
//   sender, never nowhere.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient } from '../helpers/raw.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, fresh, isPresence, ready, rosterOf } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';

let server: TestServer;
/** Large enough for the cut-off test's offline messages (below). */
const OFFLINE_BYTES = 8 * 1024 * 1024;

/**
 * At most what the kernel can take of a connection's output while the
 * client does not read (Linux): the sender's buffer grows up to
 * tcp_wmem's maximum; the receiver's stays near tcp_rmem's default
 * without reads. Elsewhere a guess.
 */
function kernelAbsorbs(): number {
  try {
    const max = (f: string, i: number) => Number(readFileSync(`/proc/sys/net/ipv4/${f}`, 'utf8').trim().split(/\s+/)[i]);
    return max('tcp_wmem', 2) + 2 * max('tcp_rmem', 1);
  } catch {
    return 4 * 1024 * 1024;
  }
}

test.before(async () => {
  server = await startTestServer({
    XMPP_MAX_OUTBOUND_BYTES: '65536',
    XMPP_READ_RATE_BYTES: '0',
    XMPP_MAX_PENDING_REQUESTS: '30',
    XMPP_MAX_OUTGOING_REQUESTS: '3',
    XMPP_MAX_OFFLINE_BYTES: String(OFFLINE_BYTES),
  });
});
test.after.always(async () => {
  await server?.stop();
});

async function account(base: string): Promise<string> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  return name;
}
const login = (t: ExecutionContext, name: string, resource = 'r') => connect(t, server.c2sPort, name, resource);

/** Two users who keep exchanging messages: each round trip must still work. */
async function bystanderPair(t: ExecutionContext): Promise<() => Promise<void>> {
  const [a, b] = [await login(t, await account('by-a')), await login(t, await account('by-b'))];
  return async () => {
    const id = uid('by');
    const from = b.c.items.length;
    a.c.send(`<message to='${b.jid}' id='${id}' type='chat'><body>still here</body></message>`);
    await expect(b, `bystander message ${id}`, (el) => el.attrs.id === id, from);
  };
}

const stores = () => ({
  roster: SqliteRosterStore.open(join(server.config.dataDir, 'roster.sqlite')),
  offline: SqliteOfflineStore.open(join(server.config.dataDir, 'offline.sqlite')),
});

const socketOf = (c: RawClient) => (c as unknown as { sock: import('node:net').Socket }).sock;

/**
 * `victim` has stopped reading (its socket paused): `sender` sends it 4 KB
 * messages, 20 at a time, each batch handled before the next (the sender
 * reads its errors), until the server gives up on the reader
 * (XMPP_MAX_OUTBOUND_BYTES), at most 5000. Then the victim reads again
 * until its connection ends. Returns the ids sent, in order.
 */
async function floodUntilCut(t: ExecutionContext, sender: Peer, victim: Peer, prefix: string): Promise<string[]> {
  const sent: string[] = [];
  while (server.hub.registry.lookup(victim.jid) !== undefined && sent.length < 5000) {
    const from = sender.c.items.length;
    for (let i = 0; i < 20; i++) {
      const id = uid(prefix);
      sent.push(id);
      sender.c.send(`<message to='${victim.jid}' id='${id}' type='chat'><body>${'x'.repeat(4000)}</body></message>`);
    }
    await barrier(sender, from);
  }
  t.is(server.hub.registry.lookup(victim.jid), undefined, `the reader was cut off (${sent.length} messages sent)`);
  socketOf(victim.c).resume();
  await within(victim.c.closed, WAIT, `the end of ${victim.jid}'s connection`);
  return sent;
}

test('strangers park large subscription requests: kept cut short, delivered at login as the victim reads, the victim is not cut off', async (t) => {
  const check = await bystanderPair(t);
  const victim = await account('victim');
  const senders = await Promise.all(Array.from({ length: 20 }, () => account('spam')));
  const big = 'S'.repeat(60_000);
  for (const s of senders) {
    const p = await login(t, s);
    const from = p.c.items.length;
    p.c.send(`<presence to='${victim}@localhost' type='subscribe'><status>${big}</status><nick xmlns='http://jabber.org/protocol/nick'>${'N'.repeat(5000)}</nick></presence>`);
    await barrier(p, from);
    p.c.destroy();
  }
  await check();
  const st = stores();
  t.teardown(() => {
    st.roster.close();
    st.offline.close();
  });
  const kept = await st.roster.pendingRequests(victim);
  t.is(kept.length, 20);
  t.true(kept.every((r) => Buffer.byteLength(r.stanza) < 2000), `what a stranger can park is small: ${Math.max(...kept.map((r) => r.stanza.length))} bytes`);

  // Logins of the victim, each reading as a client does.
  for (let i = 0; i < 3; i++) {
    const p = await login(t, victim, `login${i}`);
    const from = p.c.items.length;
    await ready(p);
    const reqs = (await barrier(p, from)).filter((el) => el.name === 'presence' && el.attrs.type === 'subscribe');
    t.is(reqs.length, 20, `login ${i}: every request, and the session is still there`);
    t.true(reqs.every((r) => (r.getChildText('status') ?? '').length <= 1024));
    p.c.destroy();
  }
  await check();
});

test('limits on requests answer the sender: too many pending at the recipient (strangers only), too many sent by one user', async (t) => {
  const check = await bystanderPair(t);
  // Per recipient: 30 pending from strangers (the server's setting).
  const victim = await account('victim');
  const v = await login(t, victim);
  await rosterOf(v);
  for (let i = 0; i < 30; i++) {
    const p = await login(t, await account('stranger'));
    const from = p.c.items.length;
    p.c.send(`<presence to='${victim}@localhost' type='subscribe'/>`);
    t.deepEqual((await barrier(p, from)).filter((el) => el.attrs.type === 'error'), [], `request ${i} is kept`);
    p.c.destroy();
  }
  const late = await login(t, await account('late'));
  await rosterOf(late);
  const from = late.c.items.length;
  late.c.send(`<presence to='${victim}@localhost' type='subscribe' id='over'/>`);
  const err = await expect(late, 'the error', (el) => el.name === 'presence' && el.attrs.type === 'error', from);
  t.is(stanzaError(err).condition, 'resource-constraint');
  t.is(err.attrs.from, `${victim}@localhost`);
  t.deepEqual((await rosterOf(late)).map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.ask]), [[`${victim}@localhost`, 'none', undefined]], "the sender's request is not left pending either");
  // A contact the victim has in its roster is no stranger: let in.
  const friendName = await account('friend');
  const vs = v.c.items.length;
  v.c.send(`<iq type='set' id='add'><query xmlns='jabber:iq:roster'><item jid='${friendName}@localhost'/></query></iq>`);
  await expect(v, 'the roster set answered', (el) => el.attrs.id === 'add', vs);
  const friend = await login(t, friendName);
  const ff = friend.c.items.length;
  friend.c.send(`<presence to='${victim}@localhost' type='subscribe'/>`);
  t.deepEqual((await barrier(friend, ff)).filter((el) => el.attrs.type === 'error'), []);
  const vv = v.c.items.length;
  v.c.send('<presence/>');
  await expect(v, "the friend's request", isPresence(`${friendName}@localhost`, 'subscribe'), vv);

  // Per sender: 3 unanswered requests (the server's setting).
  const eager = await login(t, await account('eager'));
  await rosterOf(eager);
  const targets = await Promise.all(Array.from({ length: 4 }, () => account('target')));
  for (const target of targets.slice(0, 3)) {
    const f = eager.c.items.length;
    eager.c.send(`<presence to='${target}@localhost' type='subscribe'/>`);
    t.deepEqual((await barrier(eager, f)).filter((el) => el.attrs.type === 'error'), []);
  }
  const f = eager.c.items.length;
  eager.c.send(`<presence to='${targets[3]}@localhost' type='subscribe'/>`);
  const refused = await expect(eager, 'the error', (el) => el.name === 'presence' && el.attrs.type === 'error', f);
  t.is(stanzaError(refused).condition, 'policy-violation');
  const st = stores();
  t.teardown(() => {
    st.roster.close();
    st.offline.close();
  });
  t.deepEqual(await st.roster.pendingRequests(targets[3]), [], 'nothing reached the fourth');
  await check();
});

test('offline messages well beyond the outbound bound are all delivered, in order, paced; the store is then empty', async (t) => {
  const check = await bystanderPair(t);
  const victim = await account('victim');
  const sender = await login(t, await account('sender'));
  const ids: string[] = [];
  const body = 'm'.repeat(20_000);
  for (let i = 0; i < 40; i++) {
    const id = uid('off');
    ids.push(id);
    sender.c.send(`<message to='${victim}@localhost' id='${id}' type='chat'><body>${body}</body></message>`);
  }
  t.deepEqual((await barrier(sender, 0)).filter((el) => el.attrs.type === 'error'), []);
  const p = await login(t, victim);
  const from = p.c.items.length;
  p.c.send('<presence/>');
  // Paced (a batch once the last is written): the barrier's answer may pass them, so the last one first.
  await expect(p, 'the last stored message', (el) => el.name === 'message' && el.attrs.id === ids[ids.length - 1], from).catch(() => {});
  const got = (await barrier(p, from)).filter((el) => el.name === 'message').map((m) => m.attrs.id);
  t.deepEqual(got, ids, '800 KB against a 64 KiB bound: every message, once, in order');
  const st = stores();
  t.teardown(() => {
    st.roster.close();
    st.offline.close();
  });
  t.is(await st.offline.count(victim), 0);
  await check();
});

test('cut off while its offline messages are delivered: each was either written (and removed) or is still stored; none lost', async (t) => {
  const check = await bystanderPair(t);
  const victim = await account('victim');
  const sender = await login(t, await account('sender'));
  // More than the kernel can hold for a client that does not read, so that
  // the cut comes while some are not written yet, however large its buffers.
  const size = 150_000;
  const n = Math.ceil((kernelAbsorbs() + 1024 * 1024) / size);
  t.true(n * (size + 300) < OFFLINE_BYTES, `${n} messages of ${size} bytes fit in the offline store`);
  const offline: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = uid('stored');
    offline.push(id);
    sender.c.send(`<message to='${victim}@localhost' id='${id}' type='chat'><body>${'d'.repeat(size)}</body></message>`);
  }
  t.deepEqual((await barrier(sender, 0)).filter((el) => el.attrs.type === 'error'), [], 'all stored');
  // The victim asks for them and stops reading: the server writes what the
  // kernel takes and waits. Live messages then pile up until it is cut off.
  const first = await login(t, victim, 'first');
  socketOf(first.c).pause();
  first.c.send('<presence/>');
  const live = await floodUntilCut(t, sender, first, 'live');
  const read = first.c.items.flatMap((it) => (it.kind === 'el' && it.el.name === 'message' ? [it.el.attrs.id] : []));
  const second = await login(t, victim, 'second');
  const from = second.c.items.length;
  second.c.send('<presence/>');
  // The first connection may still hold the queue's claim for a moment, and
  // what it could not write is still being rerouted: each message not read
  // must come, from storage at the second login or as an error to its sender.
  for (const id of [...offline, ...live].filter((id) => !read.includes(id))) {
    // The one that does not come is abandoned (its rejection when the connection closes is ignored).
    const either = [second.c.find((el) => el.name === 'message' && el.attrs.id === id, from), sender.c.find((el) => el.attrs.type === 'error' && el.attrs.id === id)];
    for (const p of either) p.catch(() => {});
    await within(
      Promise.race(either),
      WAIT,
      `message ${id} at the second login, or an error for it to the sender`,
    );
  }
  const later = (await barrier(second, from)).filter((el) => el.name === 'message').map((m) => m.attrs.id);
  const bounced = (await barrier(sender, 0)).filter((el) => el.attrs.type === 'error').map((el) => el.attrs.id);
  const all = [...read, ...later, ...bounced];
  const twice = all.filter((id, i) => all.indexOf(id) !== i);
  t.true(twice.every((id) => read.includes(id)), `only messages the client read come twice (a write under way at the cut): ${twice.join(' ')}`);
  t.deepEqual(offline.filter((id) => !all.includes(id)), [], 'every stored message read before the cut or delivered at the next login');
  t.deepEqual(live.filter((id) => !all.includes(id)), [], 'every live message read, stored or bounced');
  t.true(later.some((id) => offline.includes(id)), 'some stored ones had not been written when the connection went, and stayed');
  t.deepEqual(later.filter((id) => offline.includes(id)), offline.slice(offline.length - later.filter((id) => offline.includes(id)).length), 'what stayed is the end of the queue, in order');
  await check();
});

test('offline storage has a byte bound: past it the sender gets service-unavailable', async (t) => {
  const victim = await account('victim');
  const sender = await login(t, await account('sender'));
  const body = 'b'.repeat(200_000);
  const answers: Element[] = [];
  // OFFLINE_BYTES holds 41 of them (with their envelope and delay stamp), not 42.
  for (let i = 0; i < 42; i++) {
    const from = sender.c.items.length;
    sender.c.send(`<message to='${victim}@localhost' id='big${i}' type='chat'><body>${body}</body></message>`);
    answers.push(...(await barrier(sender, from)).filter((el) => el.attrs.type === 'error'));
  }
  t.deepEqual(answers.map((el) => [el.attrs.id, stanzaError(el).condition]), [['big41', 'service-unavailable']], '8 MiB holds 41 of 200 KB, not 42');
});

test('messages queued for a client that stops reading are not lost when it is cut off: stored, or an error to the sender', async (t) => {
  const check = await bystanderPair(t);
  const victimName = await account('victim');
  const victim = await login(t, victimName, 'slow');
  await ready(victim);
  const sender = await login(t, await account('sender'));
  socketOf(victim.c).pause();
  const sent = await floodUntilCut(t, sender, victim, 'q');
  const read = victim.c.items.flatMap((it) => (it.kind === 'el' && it.el.name === 'message' ? [it.el.attrs.id] : []));
  const bounced = (await barrier(sender, 0)).filter((el) => el.attrs.type === 'error').map((el) => el.attrs.id);
  const again = await login(t, victimName, 'again');
  const from = again.c.items.length;
  again.c.send('<presence/>');
  // Offline messages come paced (a batch once the last is written), so a barrier's answer may pass them: wait for
  // each message neither read nor bounced (in any order); one that never comes fails the check below.
  for (const id of sent.filter((x) => !read.includes(x) && !bounced.includes(x))) {
    if (!(await expect(again, `stored ${id}`, (el) => el.name === 'message' && el.attrs.id === id, from).then(() => true, () => false))) break;
  }
  const stored = (await barrier(again, from)).filter((el) => el.name === 'message').map((m) => m.attrs.id);
  const accounted = [...read, ...stored, ...bounced];
  t.deepEqual([...new Set(accounted)].sort(), [...sent].sort(), `every message read, stored or bounced (read ${read.length}, stored ${stored.length}, bounced ${bounced.length})`);
  // Twice only where a write was under way at the cut: it may have reached
  // the client and been stored too (the server cannot know without acks).
  const twice = accounted.filter((id, i) => accounted.indexOf(id) !== i);
  t.true(twice.every((id) => read.includes(id)), `only messages the client read come twice: ${twice.join(' ')}`);
  t.true(stored.length + bounced.length > 0, 'some were still queued when the reader was cut off');
  await check();
});
