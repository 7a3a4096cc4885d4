// External components (XEP-0114) over real sockets: the jabber:component:accept
// handshake, stanzas between a component's domain and the server's users
// both ways (the users on either worker of the node), errors for a
// component that is away or misbehaves, one connection per component, and
// the server's disco#items listing it.
import test from 'ava';
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient } from '../helpers/raw.ts';
import { uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, expect, newUser } from '../helpers/im.ts';

// One component domain per test: the tests run at once, and a component has one connection.
const DOMAINS = ['bots.localhost', 'gate.localhost', 'spoof.localhost'];
const SECRET = 'c0mp0nent-secret';
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_COMPONENT_PORT: '0', XMPP_COMPONENTS: [...DOMAINS.map((d) => `${d}=${SECRET}`), 'other.localhost=x'].join(',') });
});
test.after.always(async () => {
  await server?.stop();
});

const header = (to: string) => `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${to}'>`;

/** A component connection: its stream header sent and the server's read; the server's stream id. */
async function open(to: string): Promise<{ c: RawClient; id: string }> {
  const c = await RawClient.connect(server.componentPort!);
  const m = await c.exchange(header(to), /<stream:stream[^>]*\bid=["']([^"']+)["'][^>]*>/);
  return { c, id: m[1] };
}

/** Connected and handshaken (XEP-0114 §3). */
async function component(t: import('ava').ExecutionContext, domain: string): Promise<RawClient> {
  const { c, id } = await open(domain);
  t.teardown(() => c.destroy());
  await c.exchange(`<handshake>${createHash('sha1').update(id + SECRET).digest('hex')}</handshake>`, /<handshake\s*\/>/);
  return c;
}

test('handshake, then messages both ways between a user and an address of the component', async (t) => {
  const DOMAIN = DOMAINS[0];
  const comp = await component(t, DOMAIN);
  const alice = await newUser(t, server, 'alice');
  const mark = comp.items.length;
  alice.c.send(`<message to='echo@${DOMAIN}' type='chat' id='to-bot'><body>hello bot</body></message>`);
  const got = await within(comp.find((el: Element) => el.name === 'message' && el.attrs.id === 'to-bot', mark), WAIT, 'the message at the component');
  t.is(got.attrs.from, alice.jid, "the server stamped the user's full JID");
  t.is(got.getChildText('body'), 'hello bot');
  // The component's namespace, said explicitly, is not what the client gets.
  comp.send(`<message xmlns='jabber:component:accept' from='echo@${DOMAIN}/r' to='${alice.jid}' type='chat' id='from-bot'><body>hello human</body></message>`);
  const back = await expect(alice, 'the answer', (el) => el.name === 'message' && el.attrs.id === 'from-bot');
  t.is(back.attrs.from, `echo@${DOMAIN}/r`);
  t.not(back.attrs.xmlns, 'jabber:component:accept');
  // An iq to the component's domain itself, answered by the component.
  const id = uid('ping');
  const at = comp.items.length;
  alice.c.send(`<iq type='get' to='${DOMAIN}' id='${id}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  const iq = await within(comp.find((el: Element) => el.name === 'iq' && el.attrs.id === id, at), WAIT, 'the iq at the component');
  comp.send(`<iq type='result' from='${DOMAIN}' to='${iq.attrs.from}' id='${id}'/>`);
  const res = await expect(alice, 'the result', (el) => el.name === 'iq' && el.attrs.id === id);
  t.is(res.attrs.type, 'result');
});

test('a wrong secret is not-authorized; a domain not configured is host-unknown; a second connection for one component is conflict', async (t) => {
  const DOMAIN = DOMAINS[1];
  const { c, id } = await open(DOMAIN);
  t.teardown(() => c.destroy());
  c.send(`<handshake>${createHash('sha1').update(id + 'wrong').digest('hex')}</handshake>`);
  await c.waitFor(/<not-authorized/);
  t.regex(c.buffer, /<stream:error><not-authorized xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']\/>/);
  const { c: stranger } = await (async () => {
    const s = await RawClient.connect(server.componentPort!);
    s.send(header('nobody.localhost'));
    return { c: s };
  })();
  t.teardown(() => stranger.destroy());
  await stranger.waitFor(/<host-unknown/);
  t.regex(stranger.buffer, /<stream:error><host-unknown /);
  await component(t, DOMAIN);
  const second = await open(DOMAIN);
  t.teardown(() => second.c.destroy());
  second.c.send(`<handshake>${createHash('sha1').update(second.id + SECRET).digest('hex')}</handshake>`);
  await second.c.waitFor(/<conflict/);
  t.regex(second.c.buffer, /<stream:error><conflict /);
  await within(second.c.closed, WAIT, 'the refused connection closed');
});

test("a component's stanza without 'to' is improper-addressing", async (t) => {
  const quiet = await startTestServer({ XMPP_COMPONENT_PORT: '0', XMPP_COMPONENTS: `${DOMAINS[2]}=${SECRET}` });
  t.teardown(() => quiet.stop());
  const c = await RawClient.connect(quiet.componentPort!);
  t.teardown(() => c.destroy());
  const m = await c.exchange(header(DOMAINS[2]), /<stream:stream[^>]*\bid=["']([^"']+)["'][^>]*>/);
  await c.exchange(`<handshake>${createHash('sha1').update(m[1] + SECRET).digest('hex')}</handshake>`, /<handshake\s*\/>/);
  c.send(`<message from='x@${DOMAINS[2]}'><body>to nobody</body></message>`);
  await within(c.closed, WAIT, 'the connection closed');
  t.regex(c.buffer, /<stream:error><improper-addressing /);
});

test("a component's stanza must come from its own domain (invalid-from)", async (t) => {
  const comp = await component(t, DOMAINS[2]);
  comp.send(`<message from='mallory@localhost' to='anyone@localhost'><body>spoof</body></message>`);
  await comp.waitFor(/<invalid-from/);
  t.regex(comp.buffer, /<stream:error><invalid-from /);
  await within(comp.closed, WAIT, 'the connection closed');
});

test('a component that is not connected: its users get service-unavailable; disco#items of the server lists the components', async (t) => {
  const alice = await newUser(t, server, 'lonely');
  alice.c.send(`<message to='someone@other.localhost' type='chat' id='nobody-home'><body>hi</body></message>`);
  const err = await expect(alice, 'the error', (el) => el.name === 'message' && el.attrs.id === 'nobody-home');
  t.is(err.attrs.type, 'error');
  t.truthy(err.getChild('error')?.getChild('service-unavailable'));
  const id = uid('items');
  const items = await within(alice.c.request(`<iq type='get' to='localhost' id='${id}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`, id), WAIT, 'disco#items');
  t.deepEqual(items.getChild('query')!.getChildren('item').map((i) => i.attrs.jid).sort(), [...DOMAINS, 'other.localhost', 'pubsub.localhost', 'conference.localhost'].sort(), 'the components and the hosted services');
  t.deepEqual((await barrier(alice, 0)).filter((el) => el.name === 'stream:error'), []);
});

test('a component connection that never completes its handshake is closed (connection-timeout)', async (t) => {
  const quick = await startTestServer({ XMPP_COMPONENT_PORT: '0', XMPP_COMPONENTS: `${DOMAINS[0]}=${SECRET}`, XMPP_BIND_TIMEOUT_MS: '500' });
  t.teardown(() => quick.stop());
  const c = await RawClient.connect(quick.componentPort!);
  t.teardown(() => c.destroy());
  c.send(header(DOMAINS[0]));
  await within(c.closed, WAIT, 'the connection closed');
  t.regex(c.buffer, /<stream:error><connection-timeout /);
});
