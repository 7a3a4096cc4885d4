// Offline messages end to end (RFC 6121 §8.5.2.2.1, XEP-0160, XEP-0203):
// normal and chat messages to an account with no available resource of
// non-negative priority are stored, and handed, in order and once, to the
// next session that sends available presence of non-negative priority,
// each with a delay stamp from the server. Past XMPP_MAX_OFFLINE the sender
// gets service-unavailable; headlines are dropped, never stored.
//
// Nothing here waits on time: "nothing more arrived" is checked against a
// ping sent behind the stanza under test. A session handles its stanzas one
// at a time, in order, and writes what a stanza causes before answering the
// next, so the ping's answer comes after everything the earlier stanza led to.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { join } from 'node:path';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { stanzaError, uid } from '../helpers/protocol.ts';
import { NS_DELAY, STAMP, barrier, connect, expect } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';

const NS_CHATSTATES = 'http://jabber.org/protocol/chatstates';
const NS_HINTS = 'urn:xmpp:hints';

let server: TestServer; // default limit (100)
let limited: TestServer; // XMPP_MAX_OFFLINE=2

test.before(async () => {
  [server, limited] = await Promise.all([startTestServer({}), startTestServer({ XMPP_MAX_OFFLINE: '2' })]);
  for (const u of ['alice', 'bob', 'dave', 'erin', 'frank', 'gina', 'harry', 'ivy']) await server.addUser(u, `${u}-pw`);
  for (const u of ['alice', 'carol']) await limited.addUser(u, `${u}-pw`);
});
test.after.always(async () => {
  await Promise.all([server?.stop(), limited?.stop()]);
});

const login = (t: ExecutionContext, s: TestServer, user: string, resource: string) => connect(t, s.c2sPort, user, resource);

const chat = (to: string, id: string, body: string, type = 'chat') =>
  `<message to='${to}' id='${id}' type='${type}'><body>${body}</body></message>`;

/** Sends stanzas and checks, behind a ping, that none of them came back as an error. */
async function sendAll(t: ExecutionContext, from: Peer, stanzas: string[]): Promise<void> {
  const start = from.c.items.length;
  for (const x of stanzas) from.c.send(x);
  const back = await barrier(from, start);
  t.deepEqual(back.map((el) => el.toString()), [], 'no error (nor anything else) came back to the sender');
}

/** Sends `presence` on a session, then a ping; returns the messages received in between. */
async function present(p: Peer, presence = '<presence/>'): Promise<Element[]> {
  const start = p.c.items.length;
  p.c.send(presence);
  return (await barrier(p, start)).filter((el) => el.name === 'message');
}

function checkDelay(t: ExecutionContext, m: Element, after: number, before: number): number {
  const delays = m.getChildren('delay', NS_DELAY);
  t.is(delays.length, 1, `one delay element: ${m.toString()}`);
  const d = delays[0];
  t.is(d?.attrs.from, 'localhost', 'stamped by the server (XEP-0203 from)');
  t.regex(d?.attrs.stamp ?? '', STAMP, 'XEP-0082 DateTime in UTC');
  const at = Date.parse(d?.attrs.stamp ?? '');
  // The stamp may drop the milliseconds: a second of slack below.
  t.true(at >= after - 1000 && at <= before, `stamp ${d?.attrs.stamp} is when the message was stored`);
  return at;
}

function offlineCount(s: TestServer, user: string): Promise<number> {
  const store = SqliteOfflineStore.open(join(s.config.dataDir, 'offline.sqlite'));
  return store.count(user).finally(() => store.close());
}

test('messages to an offline user are stored and delivered on available presence: in order, stamped, once', async (t) => {
  const alice = await login(t, server, 'alice', 'a1');
  const ids = [uid('m'), uid('m'), uid('m')];
  const sentAt = Date.now();
  await sendAll(t, alice, ids.map((id, i) => chat('bob@localhost', id, `offline ${i}`)));
  t.is(await offlineCount(server, 'bob'), 3, 'three messages wait for bob');

  const bob = await login(t, server, 'bob', 'phone');
  // Bound but not yet available: nothing is handed over (XEP-0160 §2).
  t.deepEqual(await barrier(bob, bob.c.items.length), []);
  const start = bob.c.items.length;
  bob.c.send('<presence/>');
  // Wait for the last one first, so that a delivery not finished before the
  // presence is answered still shows up; then nothing more behind a ping.
  await expect(bob, 'the third offline message', (el) => el.attrs.id === ids[2], start);
  const got = (await barrier(bob, start)).filter((el) => el.name === 'message');
  const receivedAt = Date.now();
  t.deepEqual(got.map((m) => m.attrs.id), ids, 'all three, in the order sent, each once');
  let last = 0;
  for (const [i, m] of got.entries()) {
    t.is(m.attrs.from, alice.jid);
    t.is(m.attrs.to, 'bob@localhost');
    t.is(m.attrs.type, 'chat');
    t.is(m.getChildText('body'), `offline ${i}`);
    const at = checkDelay(t, m, sentAt, receivedAt);
    t.true(at >= last, 'stamps do not go back in time');
    last = at;
  }
  t.is(await offlineCount(server, 'bob'), 0, 'nothing left in storage');

  // Delivered once: another login, later, gets none of them.
  bob.c.destroy();
  const again = await login(t, server, 'bob', 'laptop');
  t.deepEqual((await present(again)).map((m) => m.toString()), [], 'a second login gets nothing');
});

test("a client cannot forge the server's delay: one claiming to be from the domain is dropped, another entity's is kept", async (t) => {
  const alice = await login(t, server, 'alice', 'forger');
  const id = uid('forged');
  const sentAt = Date.now();
  const forged = `<message to='ivy@localhost' id='${id}' type='chat'><body>old news</body>` +
    `<delay xmlns='${NS_DELAY}' from='localhost' stamp='1999-01-01T00:00:00Z'/>` +
    `<delay xmlns='${NS_DELAY}' from='${alice.jid}' stamp='2001-01-01T00:00:00Z'/></message>`;
  await sendAll(t, alice, [forged]);
  const ivy = await login(t, server, 'ivy', 'i1');
  const start = ivy.c.items.length;
  ivy.c.send('<presence/>');
  const m = await expect(ivy, 'the stored message', (el) => el.attrs.id === id, start);
  const ours = m.getChildren('delay', NS_DELAY).filter((d) => d.attrs.from === 'localhost');
  t.is(ours.length, 1, m.toString());
  t.true(Date.parse(ours[0]?.attrs.stamp ?? '') >= sentAt - 1000, `the server's own stamp, not the forged one: ${ours[0]?.attrs.stamp}`);
  t.deepEqual(m.getChildren('delay', NS_DELAY).filter((d) => d.attrs.from !== 'localhost').map((d) => d.attrs.stamp), ['2001-01-01T00:00:00Z'], "the client's own delay is its business");
});

test('two sessions becoming available at once: the stored messages reach one of them, once', async (t) => {
  const alice = await login(t, server, 'alice', 'a2');
  const ids = [uid('race'), uid('race'), uid('race')];
  await sendAll(t, alice, ids.map((id) => chat('erin@localhost', id, id)));
  const [one, two] = await Promise.all([login(t, server, 'erin', 'one'), login(t, server, 'erin', 'two')]);
  const [s1, s2] = [one.c.items.length, two.c.items.length];
  one.c.send('<presence/>');
  two.c.send('<presence/>');
  const [got1, got2] = await Promise.all([barrier(one, s1), barrier(two, s2)]);
  const ids1 = got1.filter((el) => el.name === 'message').map((m) => m.attrs.id);
  const ids2 = got2.filter((el) => el.name === 'message').map((m) => m.attrs.id);
  t.deepEqual([...ids1, ...ids2].sort(), [...ids].sort(), 'each message exactly once over both sessions');
  t.true(ids1.length === 0 || ids2.length === 0, `all went to one session (${ids1.join(',')} | ${ids2.join(',')})`);
  t.deepEqual(ids1.length > 0 ? ids1 : ids2, ids, 'in order');
});

test('past the limit (XMPP_MAX_OFFLINE=2) the sender gets service-unavailable; what was stored is delivered', async (t) => {
  const alice = await login(t, limited, 'alice', 'a3');
  const ids = [uid('lim'), uid('lim'), uid('lim')];
  const start = alice.c.items.length;
  for (const [i, id] of ids.entries()) alice.c.send(chat('carol@localhost', id, `n${i}`));
  const back = await barrier(alice, start);
  t.deepEqual(back.map((el) => el.attrs.id), [ids[2]], 'only the third comes back');
  const err = back[0];
  t.is(err?.name, 'message');
  t.is(err?.attrs.type, 'error', err?.toString());
  t.is(err?.attrs.to, alice.jid, 'the error goes back to the sender');
  t.is(err?.attrs.from, 'carol@localhost');
  t.deepEqual(err && { type: stanzaError(err).type, condition: stanzaError(err).condition }, { type: 'cancel', condition: 'service-unavailable' });
  t.is(await offlineCount(limited, 'carol'), 2);

  const carol = await login(t, limited, 'carol', 'home');
  const got = await present(carol);
  t.deepEqual(got.map((m) => m.attrs.id), ids.slice(0, 2), 'the two stored ones, in order');
  t.deepEqual(got.map((m) => m.getChildText('body')), ['n0', 'n1']);
});

test('a headline to an offline user is dropped: no error, not stored', async (t) => {
  const alice = await login(t, server, 'alice', 'a4');
  const headline = uid('hl');
  const control = uid('ctl');
  // The chat message behind it shows that storage works for dave.
  await sendAll(t, alice, [chat('dave@localhost', headline, 'news', 'headline'), chat('dave@localhost', control, 'kept')]);
  t.is(await offlineCount(server, 'dave'), 1, 'only the chat message is stored');
  const dave = await login(t, server, 'dave', 'd');
  const got = await present(dave);
  t.deepEqual(got.map((m) => m.attrs.id), [control], 'the headline never arrives');
});

test('<no-store/> (XEP-0334) with content: not stored, answered with service-unavailable', async (t) => {
  const alice = await login(t, server, 'alice', 'a5');
  const noStore = uid('nostore');
  const start = alice.c.items.length;
  alice.c.send(`<message to='harry@localhost' id='${noStore}' type='chat'><body>ephemeral</body><no-store xmlns='${NS_HINTS}'/></message>`);
  const back = await barrier(alice, start);
  t.deepEqual(back.map((el) => el.attrs.id), [noStore]);
  for (const el of back) t.is(stanzaError(el).condition, 'service-unavailable', el.toString());
  t.is(await offlineCount(server, 'harry'), 0);
});

test('content-less messages (chat states, receipts, markers) to an offline user, to a gone resource or to no account: dropped, neither stored nor bounced (XEP-0085 §5.4, XEP-0160, XEP-0334)', async (t) => {
  const alice = await login(t, server, 'alice', 'a5b');
  const CONTENTLESS = [
    `<composing xmlns='${NS_CHATSTATES}'/>`,
    `<received xmlns='urn:xmpp:receipts' id='r1'/>`,
    `<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/><origin-id xmlns='urn:xmpp:sid:0' id='o1'/>`,
    `<active xmlns='${NS_CHATSTATES}'/><thread>t</thread><no-permanent-store xmlns='${NS_HINTS}'/>`,
  ];
  const stanzas: string[] = [];
  for (const to of ['harry@localhost', 'harry@localhost/gone', 'nobody-here@localhost']) {
    for (const inner of CONTENTLESS) stanzas.push(`<message to='${to}' id='${uid('cl')}' type='chat'>${inner}</message>`);
  }
  await sendAll(t, alice, stanzas);
  t.is(await offlineCount(server, 'harry'), 0, 'nothing stored');
  // The same with a body would be stored: the rule is about content, not about the address.
  await sendAll(t, alice, [`<message to='harry@localhost' id='${uid('cl')}' type='chat'><composing xmlns='${NS_CHATSTATES}'/><body>with content</body></message>`]);
  t.is(await offlineCount(server, 'harry'), 1);
  const harry = await login(t, server, 'harry', 'h1');
  const got = await present(harry);
  t.deepEqual(got.map((m) => m.getChildText('body')), ['with content']);
});

test('a negative priority does not collect offline messages; a later non-negative presence does', async (t) => {
  const alice = await login(t, server, 'alice', 'a6');
  const id = uid('neg');
  await sendAll(t, alice, [chat('frank@localhost', id, 'for frank')]);
  const frank = await login(t, server, 'frank', 'f');
  t.deepEqual(await present(frank, '<presence><priority>-1</priority></presence>'), [], 'priority -1: nothing');
  t.is(await offlineCount(server, 'frank'), 1);
  // Available with priority -1 is still "no resource of non-negative priority": stored too.
  const id2 = uid('neg');
  await sendAll(t, alice, [chat('frank@localhost', id2, 'another')]);
  const got = await present(frank, '<presence><priority>0</priority></presence>');
  t.deepEqual(got.map((m) => m.attrs.id), [id, id2]);
  for (const m of got) t.is(m.getChild('delay', NS_DELAY)?.attrs.from, 'localhost');
});

test('a message to a full JID with no such resource is stored for the account (RFC 6121 §8.5.3.2.1)', async (t) => {
  const alice = await login(t, server, 'alice', 'a7');
  const id = uid('full');
  await sendAll(t, alice, [chat('gina@localhost/gone', id, 'to a resource')]);
  const gina = await login(t, server, 'gina', 'new');
  const got = await present(gina);
  t.deepEqual(got.map((m) => m.attrs.id), [id]);
  t.is(got[0]?.attrs.to, 'gina@localhost/gone', "the 'to' is left as the sender wrote it");
  t.is(got[0]?.getChildText('body'), 'to a resource');
});
