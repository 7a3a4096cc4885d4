// XEP-0352 Client State Indication over real streams: offered once the
// client is authenticated; while a client says it is inactive, its
// contacts' presence updates are held (the latest of each) and sent when it
// is active again or the held set outgrows its bound, and everything else
// routed to it (messages, iq requests, subscription requests, its own
// account's presence) goes at once. "Held" is shown without waiting on
// time: stanzas from one sender reach a client in the order sent (RFC 6120
// §10.1), so a presence that was not held would come before the message
// its sender sent after it.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { authenticated, secured, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, fresh, isPresence, newUser, subscribe } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const NS_CSI = 'urn:xmpp:csi:0';
const MAX_HELD = 2;
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_CSI_MAX_HELD: String(MAX_HELD) });
});
test.after.always(async () => {
  await server?.stop();
});

const user = (t: ExecutionContext, base: string, resource = 'r') => newUser(t, server, base, resource);

/** Index of the first element after `from` that matches, or -1. */
function indexOf(p: Peer, pred: (el: Element) => boolean, from = 0): number {
  return p.c.items.findIndex((it, i) => i >= from && it.kind === 'el' && pred(it.el));
}
const status = (el: Element) => el.getChildText('status');
const isMessage = (from: string, body: string) => (el: Element) => el.name === 'message' && el.attrs.from === from && el.getChildText('body') === body;

test('offered after authentication only (XEP-0352 §4.1)', async (t) => {
  const { c, features } = await within(secured(server.c2sPort), WAIT, 'a secured stream');
  c.destroy();
  t.falsy(features.getChild('csi', NS_CSI), 'not before authentication');
  const name = fresh('feat');
  await server.addUser(name, `${name}-pw`);
  const after = await within(authenticated(server.c2sPort, name, `${name}-pw`), WAIT, 'authentication');
  after.c.destroy();
  t.truthy(after.features.getChild('csi', NS_CSI));
});

test("while inactive, a contact's presence updates are held, only the latest, and sent on <active/>; its message comes at once", async (t) => {
  const a = await user(t, 'watcher');
  const b = await user(t, 'contact');
  await subscribe(a, b);
  const from = a.c.items.length;
  a.c.send(`<inactive xmlns='${NS_CSI}'/>`);
  await barrier(a, from); // processed in order with what follows (§5.1)
  for (const s of ['one', 'two', 'three']) b.c.send(`<presence><status>${s}</status></presence>`);
  b.c.send(`<message to='${a.jid}' type='chat'><body>still there?</body></message>`);
  const msg = await expect(a, 'the message, at once', isMessage(b.jid, 'still there?'), from);
  const at = indexOf(a, (el) => el === msg, from);
  t.is(indexOf(a, isPresence(b.jid), from), -1, 'no presence of the contact before its message');
  t.true(at > from);

  const before = a.c.items.length;
  a.c.send(`<active xmlns='${NS_CSI}'/>`);
  const got = (await barrier(a, before)).filter((el) => isPresence(b.jid)(el));
  t.deepEqual(got.map(status), ['three'], 'only the latest, once active');
});

test('while inactive, what the client must see or answer goes at once: iq requests, subscription requests, its own resources', async (t) => {
  const a = await user(t, 'busy', 'phone');
  const b = await user(t, 'peer');
  const stranger = await user(t, 'stranger');
  await subscribe(a, b);
  const from = a.c.items.length;
  a.c.send(`<inactive xmlns='${NS_CSI}'/>`);
  await barrier(a, from);

  b.c.send('<presence><status>held</status></presence>');
  const id = uid('ping');
  b.c.send(`<iq type='get' id='${id}' to='${a.jid}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  const iq = await expect(a, 'the ping', (el) => el.name === 'iq' && el.attrs.id === id, from);
  t.is(iq.attrs.from, b.jid);
  t.is(indexOf(a, isPresence(b.jid), from), -1, 'the presence before it is held');
  a.c.send(`<iq type='result' id='${id}' to='${b.jid}'/>`);

  stranger.c.send(`<presence to='${a.bare}' type='subscribe'/>`);
  await expect(a, 'the subscription request', isPresence(stranger.bare, 'subscribe'), from);

  const laptop = await connect(t, server.c2sPort, a.name, 'laptop');
  laptop.c.send('<presence/>');
  await expect(a, "its own other resource's presence", isPresence(laptop.jid), from);
  t.is(indexOf(a, isPresence(b.jid), from), -1, 'the contact is still held');
});

test(`held presence of more than XMPP_CSI_MAX_HELD (${MAX_HELD}) contacts is all sent, in the order of their updates`, async (t) => {
  const a = await user(t, 'many');
  const contacts: Peer[] = [];
  for (let i = 0; i <= MAX_HELD; i++) {
    const c = await user(t, `c${i}`);
    await subscribe(a, c);
    contacts.push(c);
  }
  const from = a.c.items.length;
  a.c.send(`<inactive xmlns='${NS_CSI}'/>`);
  await barrier(a, from);
  for (const [i, c] of contacts.slice(0, MAX_HELD).entries()) {
    c.c.send(`<presence><status>s${i}</status></presence>`);
    // Held: the contact's next message comes first.
    c.c.send(`<message to='${a.jid}'><body>m${i}</body></message>`);
    await expect(a, `m${i}`, isMessage(c.jid, `m${i}`), from);
    t.is(indexOf(a, isPresence(c.jid), from), -1, `s${i} held`);
  }
  const last = contacts[MAX_HELD];
  last.c.send(`<presence><status>s${MAX_HELD}</status></presence>`);
  await expect(a, 'the held presence, once one more is held than the bound', isPresence(last.jid), from);
  const sent = a.c.items.slice(from).flatMap((it) => (it.kind === 'el' && it.el.name === 'presence' && contacts.some((c) => it.el.attrs.from === c.jid) ? [status(it.el)] : []));
  t.deepEqual(sent, contacts.map((_, i) => `s${i}`));
});

test('an unknown nonza is still a stream error (unsupported-stanza-type)', async (t) => {
  const a = await user(t, 'odd');
  const from = a.c.items.length;
  a.c.send(`<inactive xmlns='urn:example:not-csi'/>`);
  const err = await expect(a, 'the stream error', (el) => el.name === 'stream:error', from);
  t.truthy(err.getChild('unsupported-stanza-type'));
});

test('with stream management, a held presence is counted when it is sent, not when it was held (XEP-0352 with XEP-0198)', async (t) => {
  const NS_SM = 'urn:xmpp:sm:3';
  const a = await user(t, 'counted');
  const b = await user(t, 'counter');
  await subscribe(a, b);
  let from = a.c.items.length;
  a.c.send(`<inactive xmlns='urn:xmpp:csi:0'/>`);
  await barrier(a, from); // inactive before the contact's presence comes
  from = a.c.items.length;
  a.c.send(`<enable xmlns='${NS_SM}'/>`);
  await expect(a, '<enabled/>', (el) => el.name === 'enabled', from);
  b.c.send('<presence><status>held</status></presence>');
  b.c.send(`<message to='${a.jid}' type='chat'><body>now</body></message>`);
  await expect(a, 'the message', isMessage(b.jid, 'now'), from);
  // Sent since <enabled/>: the message only (the presence is held). The client acknowledges it.
  a.c.send(`<a xmlns='${NS_SM}' h='1'/>`);
  from = a.c.items.length;
  a.c.send(`<active xmlns='urn:xmpp:csi:0'/>`);
  await expect(a, 'the held presence', isPresence(b.jid), from);
  // Now sent, and counted: acknowledging two in all is right (one more would be an error).
  a.c.send(`<a xmlns='${NS_SM}' h='2'/>`);
  const after = (await barrier(a, from)).filter((el) => el.name === 'stream:error');
  t.deepEqual(after, [], 'h=2 accepted');
  // Exactly two were counted, and the barrier's answer: a fourth is more than was sent.
  from = a.c.items.length;
  a.c.send(`<a xmlns='${NS_SM}' h='4'/>`);
  const err = await expect(a, 'the stream error', (el) => el.name === 'stream:error', from);
  t.truthy(err.getChild('undefined-condition'));
});
