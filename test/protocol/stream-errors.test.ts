// Stream-level bad input (RFC 6120 §4.9, §11): each is answered by exactly
// the stream error condition the RFC names, then </stream:stream>, then the
// connection is closed, and the others on the server notice nothing.
import test from 'ava';
import { startWithBystanders } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header } from '../helpers/raw.ts';
import { NS_PING, authenticated, expectStreamError, online, othersUnaffected, ping, pingIq, readStreamStart, uid, within } from '../helpers/protocol.ts';

let server: TestServer;
let watcher: { c: RawClient; jid: string };
let talker: { c: RawClient; jid: string };
let users = 0;
let stop: () => Promise<void>;
test.before(async () => {
  ({ server, watcher, talker, stop } = await startWithBystanders({ XMPP_MAX_STANZA_BYTES: '4096' }, [...Array.from({ length: 16 }, (_, i) => `u${i}`)]));
});
test.after.always(() => stop?.());

/** A logged-in client of its own (a fresh account, so tests running together do not meet). */
function newUser(): Promise<{ c: RawClient; jid: string }> {
  const u = `u${users++}`;
  return online(server.c2sPort, u, `${u}-pw`, 'bad');
}

/** A plain connection with the stream opened (header and features read). */
async function opened(): Promise<RawClient> {
  const c = await RawClient.connect(server.c2sPort);
  c.send(header());
  await readStreamStart(c);
  return c;
}

const BAD_HEADERS: [string, string, string][] = [
  ['invalid-namespace', 'wrong stream namespace', `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams/wrong' to='localhost' version='1.0'>`],
  ['invalid-namespace', 'wrong content namespace', `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`],
  ['host-unknown', 'a domain not served here', `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>`],
  ['unsupported-version', "version='2.0'", `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='2.0'>`],
  ['unsupported-version', 'no version (0.9)', `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>`],
  ['bad-format', "version='abc'", `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='abc'>`],
  // RFC 6120 §4.9.3.2 gives this very example: the stream prefix is not declared.
  ['bad-namespace-prefix', 'an undeclared stream prefix', `<stream:stream xmlns='jabber:client' to='localhost' version='1.0'>`],
  ['unsupported-encoding', 'an XML declaration naming another encoding', `<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`],
  ['restricted-xml', 'a DOCTYPE before the header', `<?xml version='1.0'?><!DOCTYPE stream:stream><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`],
];

for (const [condition, what, bytes] of BAD_HEADERS) {
  test(`stream header: ${what} → <${condition}/>`, async (t) => {
    const c = await RawClient.connect(server.c2sPort);
    c.send(bytes);
    await expectStreamError(t, c, condition, { header: true });
    t.false(c.items.some((i) => i.kind === 'el' && i.el.name === 'stream:features'), 'no features on a refused stream');
    await othersUnaffected(t, watcher, talker);
  });
}

const BAD_PRE_AUTH: [string, string, string][] = [
  ['not-well-formed', 'mismatched end tag', `<message to='watcher@localhost'><body>hi</message>`],
  ['not-well-formed', 'unquoted attribute value', `<message to=watcher@localhost><body>hi</body></message>`],
  ['not-well-formed', 'attribute without a value', `<message to><body>hi</body></message>`],
  ['restricted-xml', 'a comment', `<!-- hello -->`],
  ['restricted-xml', 'a processing instruction', `<?xml-stylesheet href='x'?>`],
  ['restricted-xml', 'an entity reference &foo;', `<message to='watcher@localhost'><body>&foo;</body></message>`],
  ['not-authorized', 'a stanza before authentication', `<message to='watcher@localhost' type='chat'><body>sneaky</body></message>`],
  ['not-authorized', 'an iq before authentication', `<iq type='get' id='p1' to='localhost'><ping xmlns='${NS_PING}'/></iq>`],
];

for (const [condition, what, bytes] of BAD_PRE_AUTH) {
  test(`in the stream before authentication: ${what} → <${condition}/>`, async (t) => {
    const c = await opened();
    c.mark();
    c.send(bytes);
    await expectStreamError(t, c, condition);
    await othersUnaffected(t, watcher, talker);
  });
}

test('after SASL but before bind: a stanza → <not-authorized/> (RFC 6120 §7.1)', async (t) => {
  const u = `u${users++}`;
  const { c } = await authenticated(server.c2sPort, u, `${u}-pw`);
  c.mark();
  c.send(`<message to='${watcher.jid}' id='unbound' type='chat'><body>no resource yet</body></message>`);
  await expectStreamError(t, c, 'not-authorized');
  await othersUnaffected(t, watcher, talker);
  t.false(watcher.c.items.some((i) => i.kind === 'el' && i.el.attrs.id === 'unbound'), 'not delivered');
});

test('after login: mismatched tags → <not-well-formed/>', async (t) => {
  const { c } = await newUser();
  c.send(`<message to='${watcher.jid}'><body>half</message>`);
  await expectStreamError(t, c, 'not-well-formed');
  await othersUnaffected(t, watcher, talker);
});

test('after login: a comment inside a stanza → <restricted-xml/>', async (t) => {
  const { c } = await newUser();
  c.send(`<message to='${watcher.jid}'><!-- x --><body>x</body></message>`);
  await expectStreamError(t, c, 'restricted-xml');
  await othersUnaffected(t, watcher, talker);
});

test('after login: a 10 KB stanza over XMPP_MAX_STANZA_BYTES=4096 → <policy-violation/>', async (t) => {
  const { c } = await newUser();
  c.send(`<message to='${watcher.jid}' id='big'><body>${'x'.repeat(10 * 1024)}</body></message>`);
  await expectStreamError(t, c, 'policy-violation');
  await othersUnaffected(t, watcher, talker);
  t.false(watcher.c.items.some((i) => i.kind === 'el' && i.el.attrs.id === 'big'), 'the oversized stanza was not delivered');
});

test('after login: a stanza with a forged from → <invalid-from/>', async (t) => {
  const { c } = await newUser();
  c.send(`<message from='${talker.jid}' to='${watcher.jid}' id='forged' type='chat'><body>it is me, talker</body></message>`);
  await expectStreamError(t, c, 'invalid-from');
  await othersUnaffected(t, watcher, talker);
  t.false(watcher.c.items.some((i) => i.kind === 'el' && i.el.attrs.id === 'forged'), 'the forged stanza was not delivered');
});

test('after login: an unknown top-level element → <unsupported-stanza-type/>', async (t) => {
  const { c } = await newUser();
  c.send(`<foo xmlns='jabber:client'><bar/></foo>`);
  await expectStreamError(t, c, 'unsupported-stanza-type');
  await othersUnaffected(t, watcher, talker);
});

test('after login: a stanza in the jabber:server namespace → <unsupported-stanza-type/>', async (t) => {
  const { c } = await newUser();
  c.send(`<message xmlns='jabber:server' to='${watcher.jid}' id='srv' type='chat'><body>x</body></message>`);
  await expectStreamError(t, c, 'unsupported-stanza-type');
  await othersUnaffected(t, watcher, talker);
  t.false(watcher.c.items.some((i) => i.kind === 'el' && i.el.attrs.id === 'srv'), 'not delivered');
});

test('after login: a 3 KB stanza under XMPP_MAX_STANZA_BYTES=4096 is delivered', async (t) => {
  const { c, jid } = await newUser();
  const id = uid('mid');
  const body = 'y'.repeat(3 * 1024);
  c.send(`<message to='${watcher.jid}' id='${id}' type='chat'><body>${body}</body></message>`);
  const m = await within(watcher.c.find((el) => el.attrs.id === id), 5000, 'the 3 KB message');
  t.is(m.attrs.from, jid);
  t.is(m.getChildText('body'), body);
  t.false(c.isClosed);
  c.destroy();
});

test('after login: whitespace keepalives between stanzas are accepted', async (t) => {
  const { c } = await newUser();
  c.send(' ');
  c.send('\n');
  c.send(`\t \r\n${pingIq('ka1')}   ${pingIq('ka2')}\n`);
  const r1 = await c.nextEl('iq');
  const r2 = await c.nextEl('iq');
  t.deepEqual([r1.attrs.id, r1.attrs.type, r2.attrs.id, r2.attrs.type], ['ka1', 'result', 'ka2', 'result']);
  c.send(' ');
  const r3 = await ping(c);
  t.is(r3.attrs.type, 'result');
  t.false(c.isClosed);
  c.destroy();
});

test('after login: </stream:stream> is answered with </stream:stream> and a close', async (t) => {
  const { c } = await newUser();
  c.send('</stream:stream>');
  const it = await within(c.next(), 5000, 'closing tag');
  t.is(it.raw, '</stream:stream>', 'no stream error, just the closing tag');
  await within(c.closed, 1500, 'connection close');
  await othersUnaffected(t, watcher, talker);
});

test('before authentication: </stream:stream> is answered with </stream:stream> and a close', async (t) => {
  const c = await opened();
  c.mark();
  c.send('</stream:stream>');
  const it = await within(c.next(), 5000, 'closing tag');
  t.is(it.raw, '</stream:stream>');
  await within(c.closed, 1500, 'connection close');
});

test('a client that disconnects abruptly mid-stanza does not disturb others', async (t) => {
  const { c, jid } = await newUser();
  // In one write, so the ping's answer shows that the server read the half stanza too.
  c.send(`${pingIq('before-cut')}<message to='${watcher.jid}' id='cut' type='chat'><body>this stanza never en`);
  t.is((await c.nextEl('iq')).attrs.id, 'before-cut');
  c.destroy();
  await c.closed;
  await othersUnaffected(t, watcher, talker);
  t.false(watcher.c.items.some((i) => i.kind === 'el' && i.el.attrs.id === 'cut'), 'the half stanza was not delivered');
  // The dead session's address is unavailable now: a message to it comes back as an error.
  const id = uid('gone');
  talker.c.send(`<message to='${jid}' id='${id}' type='chat'><body>anyone?</body><no-store xmlns='urn:xmpp:hints'/></message>`);
  const bounce = await within(talker.c.find((el) => el.attrs.id === id), 5000, 'bounce');
  t.is(bounce.attrs.type, 'error');
});
