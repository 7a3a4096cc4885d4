// XEP-0049 private XML storage end to end, over real sockets with real
// TLS: a namespace never set comes back empty, a set is read back (several
// elements of one namespace together, §2.3), each account its own, the
// errors of §2.3 and §3 (no child, no namespace of its own, a reserved
// namespace, another account's storage), the limits, XEP-0048 bookmarks,
// and the data gone with the account.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, connect, fresh, newUser, type Peer } from '../helpers/im.ts';
import { MAX_PRIVATE_BYTES, MAX_PRIVATE_NAMESPACES } from '../../src/personal/store.ts';

const NS_PRIVATE = 'jabber:iq:private';
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '1' });
});
test.after.always(async () => {
  await server?.stop();
});

async function iq(p: Peer, type: 'get' | 'set', inner: string, to?: string): Promise<Element> {
  const id = uid('priv');
  return within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}><query xmlns='${NS_PRIVATE}'>${inner}</query></iq>`, id), WAIT, `${p.jid}: private ${type} ${inner.slice(0, 40)}`);
}

const stored = (res: Element) => res.getChild('query', NS_PRIVATE)!.children.filter((c): c is Element => typeof c !== 'string');

function ok(t: ExecutionContext, res: Element, what: string): void {
  t.is(res.attrs.type, 'result', `${what}: ${res.toString()}`);
}
function refused(t: ExecutionContext, res: Element, condition: string, type: string): void {
  t.is(res.attrs.type, 'error', res.toString());
  t.deepEqual(stanzaError(res), { type, condition, by: undefined });
}

test('disco#info of the server lists jabber:iq:private, where clients look for it (poezio: no remote bookmark storage without it)', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const id = uid('disco');
  const res = await within(alice.c.request(`<iq type='get' id='${id}' to='${server.config.domain}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, id), WAIT, 'disco');
  t.is(res.attrs.type, 'result', res.toString());
  t.true(res.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === NS_PRIVATE), res.toString());
});

test('a namespace never set comes back as asked (empty); a set is read back whole; each account has its own', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const none = await iq(alice, 'get', "<prefs xmlns='example:prefs'/>");
  ok(t, none, 'get before any');
  t.deepEqual(stored(none).map((e) => e.toString()), ['<prefs xmlns="example:prefs"/>']);

  const set = await iq(alice, 'set', "<prefs xmlns='example:prefs'><nick>Hamlet</nick></prefs><prefs xmlns='example:prefs' n='2'>&amp;é</prefs><x xmlns='other:ns'>o</x>");
  ok(t, set, 'set of two namespaces');
  t.is(set.children.length, 0);
  const got = await iq(alice, 'get', "<prefs xmlns='example:prefs'/>");
  t.deepEqual(stored(got).map((e) => e.toString()), ['<prefs xmlns="example:prefs"><nick>Hamlet</nick></prefs>', '<prefs xmlns="example:prefs" n="2">&amp;é</prefs>'], 'both elements of the namespace, in order (§2.3)');
  t.is(stored(await iq(alice, 'get', "<x xmlns='other:ns'/>"))[0].getText(), 'o');
  t.is(stored(await iq(alice, 'get', "<prefs xmlns='example:prefs'/>", alice.bare)).length, 2, "to one's own bare JID");
  t.is(stored(await iq(bob, 'get', "<prefs xmlns='example:prefs'/>"))[0].children.length, 0, "bob's is his own (empty)");

  // A set replaces the namespace's value; an empty element clears it.
  ok(t, await iq(alice, 'set', "<prefs xmlns='example:prefs'><nick>Ophelia</nick></prefs>"), 'replace');
  t.deepEqual(stored(await iq(alice, 'get', "<prefs xmlns='example:prefs'/>")).map((e) => e.getChildText('nick')), ['Ophelia']);
  ok(t, await iq(alice, 'set', "<prefs xmlns='example:prefs'/>"), 'clear');
  t.is(stored(await iq(alice, 'get', "<prefs xmlns='example:prefs'/>"))[0].children.length, 0);
});

test("errors: no child (§2.3 not-acceptable), no namespace of its own or a reserved one (not-acceptable), two namespaces in a get (bad-request), another account's storage (§3 forbidden)", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  refused(t, await iq(alice, 'get', ''), 'not-acceptable', 'modify');
  refused(t, await iq(alice, 'set', ''), 'not-acceptable', 'modify');
  refused(t, await iq(alice, 'set', '<prefs>inherits jabber:iq:private</prefs>'), 'not-acceptable', 'modify');
  for (const ns of ['jabber:client', 'jabber:server', NS_PRIVATE]) {
    refused(t, await iq(alice, 'set', `<x xmlns='${ns}'>1</x>`), 'not-acceptable', 'modify');
    refused(t, await iq(alice, 'get', `<x xmlns='${ns}'/>`), 'not-acceptable', 'modify');
  }
  refused(t, await iq(alice, 'get', "<a xmlns='a:a'/><b xmlns='b:b'/>"), 'bad-request', 'modify');
  ok(t, await iq(bob, 'set', "<s xmlns='secret:ns'>bob's</s>"), "bob's own");
  refused(t, await iq(alice, 'get', "<s xmlns='secret:ns'/>", bob.bare), 'forbidden', 'auth');
  refused(t, await iq(alice, 'set', "<s xmlns='secret:ns'>alice's</s>", bob.bare), 'forbidden', 'auth');
  t.is(stored(await iq(bob, 'get', "<s xmlns='secret:ns'/>"))[0].getText(), "bob's", 'unchanged');
  // Nothing was stored by the refused sets.
  t.is(stored(await iq(alice, 'get', "<s xmlns='secret:ns'/>"))[0].children.length, 0);
});

test('limits: a namespace larger than MAX_PRIVATE_BYTES is not-acceptable; more than MAX_PRIVATE_NAMESPACES namespaces is policy-violation, and changes nothing', async (t) => {
  const alice = await newUser(t, server, 'alice');
  refused(t, await iq(alice, 'set', `<big xmlns='big:ns'>${'x'.repeat(MAX_PRIVATE_BYTES)}</big>`), 'not-acceptable', 'modify');
  t.is(stored(await iq(alice, 'get', "<big xmlns='big:ns'/>"))[0].children.length, 0);
  const many = Array.from({ length: MAX_PRIVATE_NAMESPACES }, (_, i) => `<e xmlns='n:${i}'>${i}</e>`).join('');
  ok(t, await iq(alice, 'set', many), `${MAX_PRIVATE_NAMESPACES} namespaces`);
  refused(t, await iq(alice, 'set', "<e xmlns='n:one-more'>x</e><e xmlns='n:0'>changed</e>"), 'policy-violation', 'modify');
  t.is(stored(await iq(alice, 'get', "<e xmlns='n:0'/>"))[0].getText(), '0', 'the refused set changed nothing');
  ok(t, await iq(alice, 'set', "<e xmlns='n:0'>replaced</e>"), 'a namespace kept already can still change');
  ok(t, await iq(alice, 'set', "<e xmlns='n:1'/><e xmlns='n:new'>in its place</e>"), 'one cleared, one added');
});

test('XEP-0048 bookmarks in private storage work as any namespace, and go with the account', async (t) => {
  const name = fresh('dave');
  await server.addUser(name, `${name}-pw`);
  const p = await connect(t, server.c2sPort, name, 'one');
  const bookmarks = "<storage xmlns='storage:bookmarks'><conference name='Council' autojoin='true' jid='council@conference.example.org'><nick>dave</nick></conference><url name='XSF' url='https://xmpp.org/'/></storage>";
  ok(t, await iq(p, 'set', bookmarks), 'bookmarks set');
  p.c.destroy();
  const later = await connect(t, server.c2sPort, name, 'two');
  const got = stored(await iq(later, 'get', "<storage xmlns='storage:bookmarks'/>"));
  t.is(got[0].getChild('conference')!.attrs.jid, 'council@conference.example.org');
  t.is(got[0].getChild('conference')!.getChildText('nick'), 'dave');
  t.is(got[0].getChild('url')!.attrs.url, 'https://xmpp.org/');
  const id = uid('unreg');
  const removed = await within(later.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, id), WAIT, 'in-band removal');
  t.is(removed.attrs.type, 'result', removed.toString());
  await server.addUser(name, `${name}-pw`);
  const again = await connect(t, server.c2sPort, name, 'three');
  t.is(stored(await iq(again, 'get', "<storage xmlns='storage:bookmarks'/>"))[0].children.length, 0, 'a new account of the same name starts with none');
});
