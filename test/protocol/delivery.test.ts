// RFC 6121 §8.5: how a message is delivered, by its type, to a bare JID
// (§8.5.2) and to a full JID (§8.5.3), with and without available resources.
// "Not delivered" and "no reply" are checked behind a ping (a session
// finishes what one stanza causes before it handles the next).
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import type { RawClient } from '../helpers/raw.ts';
import { online, pingIq, stanzaError, uid, within } from '../helpers/protocol.ts';

const WAIT = 10_000;
let server: TestServer;
let n = 0;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

interface Peer {
  c: RawClient;
  jid: string;
  bare: string;
}

/** A fresh account's session; `priority` (when given) is sent as initial presence, and its echo awaited. */
async function session(t: ExecutionContext, name: string, resource: string, priority?: number): Promise<Peer> {
  const { c, jid } = await within(online(server.c2sPort, name, `${name}-pw`, resource), WAIT, `${name} logging in`);
  t.teardown(() => c.destroy());
  if (priority !== undefined) {
    const from = c.items.length;
    c.send(`<presence><priority>${priority}</priority></presence>`);
    await within(c.find((el) => el.name === 'presence' && el.attrs.from === jid, from), WAIT, 'own presence');
  }
  return { c, jid, bare: jid.split('/')[0] };
}

async function account(base: string): Promise<string> {
  const name = `${base}${++n}x${process.pid}`;
  await server.addUser(name, `${name}-pw`);
  return name;
}

/** What arrived on p's stream from index `from` up to the answer of a ping sent now. */
async function upToPing(p: Peer, from: number): Promise<Element[]> {
  const id = uid('barrier');
  const reply = await within(p.c.request(pingIq(id), id), WAIT, 'barrier ping');
  const items = p.c.items;
  const end = items.findIndex((it) => it.kind === 'el' && it.el === reply);
  return items.slice(from, end).flatMap((it) => (it.kind === 'el' ? [it.el] : []));
}

/**
 * The messages p received from index `from`: waits for the `expected` ids
 * (deliveries from another worker come in their own time), then for a ping
 * behind them, and returns the ids of all that came, in order.
 */
async function received(p: Peer, from: number, expected: string[]): Promise<string[]> {
  for (const id of expected) await within(p.c.find((el) => el.name === 'message' && el.attrs.id === id, from), WAIT, `${p.jid}: message ${id}`);
  return ids(await upToPing(p, from));
}

/** Message ids, with the condition of an error the server generated (one with an <error/> child). */
const ids = (els: Element[]) =>
  els.filter((el) => el.name === 'message').map((el) => {
    const condition = el.attrs.type === 'error' ? stanzaError(el).condition : undefined;
    return condition ? `${el.attrs.id}:${condition}` : el.attrs.id;
  });

test('to a bare JID with available resources: by type (§8.5.2.1)', async (t) => {
  const to = await account('rcpt');
  const hi = await session(t, to, 'hi', 5);
  const lo = await session(t, to, 'lo', 1);
  const neg = await session(t, to, 'neg', -1);
  const sender = await session(t, await account('sender'), 's');
  const marks = [hi, lo, neg, sender].map((p) => p.c.items.length);
  const msg = (id: string, type: string) => `<message to='${hi.bare}' id='${id}' type='${type}'><body>${type}</body></message>`;
  sender.c.send(msg('normal', 'normal') + msg('chat', 'chat') + msg('headline', 'headline') + msg('groupchat', 'groupchat') + msg('error', 'error'));
  // Once the sender's session has handled all five, every delivery is on its way.
  t.deepEqual(ids(await upToPing(sender, marks[3])), ['groupchat:service-unavailable'], 'groupchat is refused');
  // normal and chat: the highest priority; headline: every non-negative one;
  // error: dropped without a word.
  t.deepEqual(await received(hi, marks[0], ['normal', 'chat', 'headline']), ['normal', 'chat', 'headline']);
  t.deepEqual(await received(lo, marks[1], ['headline']), ['headline']);
  t.deepEqual(await received(neg, marks[2], []), []);
});

test('to a bare JID with no available resource: by type (§8.5.2.2)', async (t) => {
  const to = await account('away');
  const quiet = await session(t, to, 'quiet'); // bound, no presence: not available
  const sender = await session(t, await account('sender'), 's');
  const [q, s] = [quiet.c.items.length, sender.c.items.length];
  const msg = (id: string, type: string) => `<message to='${quiet.bare}' id='${id}' type='${type}'><body>${type}</body></message>`;
  sender.c.send(msg('headline', 'headline') + msg('groupchat', 'groupchat') + msg('error', 'error') + msg('chat', 'chat'));
  // chat is stored offline (test/protocol/offline.test.ts), headline and error dropped, groupchat refused.
  t.deepEqual(ids(await upToPing(sender, s)), ['groupchat:service-unavailable']);
  t.deepEqual(await received(quiet, q, []), []);
  const from = quiet.c.items.length;
  quiet.c.send('<presence/>');
  const stored = await within(quiet.c.find((el) => el.name === 'message', from), WAIT, 'the stored chat');
  t.is(stored.attrs.id, 'chat');
});

test('to a full JID: delivered whatever the type; to a missing resource, by type (§8.5.3)', async (t) => {
  const to = await account('full');
  const here = await session(t, to, 'here', 0);
  const sender = await session(t, await account('sender'), 's');
  let [h, s] = [here.c.items.length, sender.c.items.length];
  const msg = (res: string, id: string, type: string) => `<message to='${here.bare}/${res}' id='${id}' type='${type}'><body>${type}</body></message>`;
  sender.c.send(['normal', 'chat', 'headline', 'groupchat', 'error'].map((type) => msg('here', `${type}-here`, type)).join(''));
  t.deepEqual(ids(await upToPing(sender, s)), []);
  const all = ['normal-here', 'chat-here', 'headline-here', 'groupchat-here', 'error-here'];
  t.deepEqual(await received(here, h, all), all);
  [h, s] = [here.c.items.length, sender.c.items.length];
  // No such resource: normal, chat and headline go as to the bare JID;
  // groupchat is refused; error is dropped.
  sender.c.send(['normal', 'chat', 'headline', 'groupchat', 'error'].map((type) => msg('gone', `${type}-gone`, type)).join(''));
  t.deepEqual(ids(await upToPing(sender, s)), ['groupchat-gone:service-unavailable']);
  const asBare = ['normal-gone', 'chat-gone', 'headline-gone'];
  t.deepEqual(await received(here, h, asBare), asBare);
});
