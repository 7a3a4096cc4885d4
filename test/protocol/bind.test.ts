// Resource binding (RFC 6120 §7) with the default conflict policy (the new
// session wins) and XMPP_MAX_RESOURCES=2, plus RFC 3921 session
// establishment kept for old clients (RFC 6121 Appendix E).
import test from 'ava';
import { startWithBystanders } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import type { RawClient } from '../helpers/raw.ts';
import {
  NS_BIND, NS_SESSION, authenticated, bind, childEls, expectStreamError, online, othersUnaffected, ping, stanzaError, uid, until, within,
} from '../helpers/protocol.ts';

let server: TestServer;
/** Logged in before the tests: a bad bind on another stream must not reach them. */
let watcher: { c: RawClient; jid: string };
let talker: { c: RawClient; jid: string };
let stop: () => Promise<void>;
test.before(async () => {
  ({ server, watcher, talker, stop } = await startWithBystanders({ XMPP_MAX_RESOURCES: '2' }, ['alice', 'bob', 'carol', 'dave', 'erin']));
});
test.after.always(() => stop?.());

test('features after SASL: <bind/> and <session><optional/></session>', async (t) => {
  const { c, features } = await authenticated(server.c2sPort, 'erin', 'erin-pw');
  t.truthy(features.getChild('bind', NS_BIND));
  t.truthy(features.getChild('session', NS_SESSION)?.getChild('optional'));
  c.destroy();
});

for (const [what, resource] of [
  ['longer than 1023 bytes', 'r'.repeat(1024)],
  ['a C1 control character (U+0085)', 'a\u0085b'],
] as const) {
  test(`an invalid resource (${what}) → bad-request iq error, and the stream can still bind`, async (t) => {
    const { c } = await authenticated(server.c2sPort, 'alice', 'alice-pw');
    const id = uid('bind');
    const r = await c.request(`<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'><resource>${resource}</resource></bind></iq>`, id);
    t.is(r.attrs.type, 'error');
    t.deepEqual(stanzaError(r), { type: 'modify', condition: 'bad-request', by: undefined });
    const ok = await bind(c, 'valid');
    t.is(ok.attrs.type, 'result');
    t.is(ok.getChild('bind', NS_BIND)?.getChildText('jid'), 'alice@localhost/valid');
    await othersUnaffected(t, watcher, talker);
    c.destroy();
  });
}

test('conflict, new session wins: the old one gets a <conflict/> stream error and is closed', async (t) => {
  const old = await online(server.c2sPort, 'bob', 'bob-pw', 'dup');
  const { c } = await authenticated(server.c2sPort, 'bob', 'bob-pw');
  const kicked = expectStreamError(t, old.c, 'conflict');
  const r = await bind(c, 'dup');
  t.is(r.attrs.type, 'result');
  t.is(r.getChild('bind', NS_BIND)?.getChildText('jid'), 'bob@localhost/dup');
  await kicked;
  // The full JID now reaches the new session.
  const { c: sender, jid: senderJid } = await online(server.c2sPort, 'erin', 'erin-pw', 'send');
  const id = uid('m');
  sender.send(`<message to='bob@localhost/dup' id='${id}' type='chat'><body>to the new one</body></message>`);
  const m = await within(c.find((el) => el.attrs.id === id), 5000, 'message to the new session');
  t.is(m.attrs.from, senderJid);
  c.destroy();
  sender.destroy();
});

test('XMPP_MAX_RESOURCES=2: a third bind gets resource-constraint; after one leaves, binding works again', async (t) => {
  const one = await online(server.c2sPort, 'carol', 'carol-pw', 'one');
  const two = await online(server.c2sPort, 'carol', 'carol-pw', 'two');
  const { c } = await authenticated(server.c2sPort, 'carol', 'carol-pw');
  const r = await bind(c, 'three');
  t.is(r.attrs.type, 'error');
  t.deepEqual(stanzaError(r), { type: 'wait', condition: 'resource-constraint', by: undefined });
  t.false(c.isClosed, 'the stream stays open');
  t.is((await ping(two.c)).attrs.type, 'result', 'the bound sessions are untouched');
  one.c.destroy();
  await until(() => server.hub.registry.lookup('carol@localhost/one') === undefined, 5000, 'the closed session unbound');
  const again = await bind(c, 'three');
  t.is(again.attrs.type, 'result');
  t.is(again.getChild('bind', NS_BIND)?.getChildText('jid'), 'carol@localhost/three');
  two.c.destroy();
  c.destroy();
});

test('legacy session establishment after bind gets an empty result', async (t) => {
  const { c, jid } = await online(server.c2sPort, 'dave', 'dave-pw', 'legacy');
  const id = uid('sess');
  const r = await c.request(`<iq type='set' id='${id}'><session xmlns='${NS_SESSION}'/></iq>`, id);
  t.is(r.attrs.type, 'result', r.toString());
  t.deepEqual(childEls(r), [], 'an empty result');
  t.true(r.attrs.to === undefined || r.attrs.to === jid);
  // Old clients often address it to the server.
  const id2 = uid('sess');
  const r2 = await c.request(`<iq type='set' id='${id2}' to='localhost'><session xmlns='${NS_SESSION}'/></iq>`, id2);
  t.is(r2.attrs.type, 'result', r2.toString());
  t.deepEqual(childEls(r2), []);
  // Exactly one reply, then the stream carries on.
  t.is((await ping(c)).attrs.type, 'result');
  t.is(c.items.filter((i) => i.kind === 'el' && i.el.attrs.id === id).length, 1);
  c.destroy();
});
