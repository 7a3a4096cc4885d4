// Interoperability with @xmpp/client: we must not test the server only
// against our own idea of XMPP.
import test from 'ava';
import { once } from 'node:events';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { xmppClient } from '../helpers/xmpp-client.ts';
import { NS_SASL, NS_TLS } from '../helpers/protocol.ts';
import type { XmppClient } from '../helpers/xmpp-client.ts';

let server: TestServer;
const open: XmppClient[] = [];

test.before(async () => {
  server = await startTestServer({ XMPP_ANONYMOUS: 'true', XMPP_REGISTRATION: 'true' });
  await server.addUser('alice', 'alice-secret');
  await server.addUser('bob', 'bob-secret');
  await server.addUser('carol', 'carol-secret');
});

test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server.stop();
});

async function online(opts: Parameters<typeof xmppClient>[1]): Promise<XmppClient> {
  const c = xmppClient(server, opts);
  c.reconnect.stop();
  open.push(c);
  await c.start();
  return c;
}

function nextStanza(c: XmppClient, pred: (el: Element) => boolean): Promise<Element> {
  return new Promise((resolve) => {
    const on = (el: Element) => {
      if (!pred(el)) return;
      c.off('stanza', on);
      resolve(el);
    };
    c.on('stanza', on);
  });
}

test('STARTTLS + SCRAM-SHA-1 + bind with @xmpp/client', async (t) => {
  const c = xmppClient(server, { username: 'alice', password: 'alice-secret', resource: 'laptop' });
  c.reconnect.stop();
  open.push(c);
  // What went over the wire during negotiation, both ways.
  const sent: Element[] = [];
  const received: Element[] = [];
  c.on('send', (el: Element) => sent.push(el));
  c.on('element', (el: Element) => received.push(el));
  await c.start();
  t.is(c.jid?.toString(), 'alice@localhost/laptop');
  const text = (el: Element) => Buffer.from(el.getText(), 'base64').toString();
  t.is(sent.filter((el) => el.is('starttls', NS_TLS)).length, 1, 'STARTTLS was asked for');
  t.is(received.filter((el) => el.is('proceed', NS_TLS)).length, 1);
  // The mechanism actually used, and a SCRAM-SHA-1 exchange (RFC 5802) behind it.
  const auths = sent.filter((el) => el.is('auth', NS_SASL));
  t.deepEqual(auths.map((a) => a.attrs.mechanism), ['SCRAM-SHA-1']);
  t.regex(text(auths[0]), /^n,,n=alice,r=[^,]+$/, 'client-first-message');
  const challenges = received.filter((el) => el.is('challenge', NS_SASL));
  t.is(challenges.length, 1);
  t.regex(text(challenges[0]), /^r=[^,]+,s=[^,]+,i=\d+$/, 'server-first-message');
  t.regex(text(sent.find((el) => el.is('response', NS_SASL))!), /^c=biws,r=[^,]+,p=[^,]+$/, 'client-final-message');
  const success = received.filter((el) => el.is('success', NS_SASL));
  t.is(success.length, 1);
  t.regex(text(success[0]), /^v=[A-Za-z0-9+/]+=*$/, 'server-final-message: the server signature');
  const pong = await c.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  t.is(pong.attrs.type, 'result');
  await c.stop();
});

test('direct TLS (XEP-0368) with @xmpp/client', async (t) => {
  const c = await online({ username: 'carol', password: 'carol-secret', resource: 'tls', directTls: true });
  t.is(c.jid?.toString(), 'carol@localhost/tls');
  await c.stop();
});

test('wrong password is refused', async (t) => {
  const c = xmppClient(server, { username: 'alice', password: 'wrong' });
  c.reconnect.stop();
  const err = await t.throwsAsync(c.start());
  t.regex(String(err?.message ?? err), /not-authorized/);
  await c.stop().catch(() => {});
});

test('SASL ANONYMOUS gives a unique bare JID (XEP-0175)', async (t) => {
  const a = await online({});
  const b = await online({});
  const ja = a.jid!.toString();
  const jb = b.jid!.toString();
  t.regex(ja, /^[^@]+@localhost\/.+$/);
  t.not(ja.split('/')[0], jb.split('/')[0]);
  await Promise.all([a.stop(), b.stop()]);
});

test('in-band registration (XEP-0077), then login with the new account', async (t) => {
  // Register from inside the SASL step: the stream is already secured and
  // not yet authenticated, which is where XEP-0077 §3.1 registration happens.
  const reg = xmppClient(server, {
    credentials: async (auth: (c: { username: string; password: string }, m: string) => Promise<void>, mechanisms: string[]) => {
      const form = await reg.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:register' })));
      t.truthy(form.getChild('query')?.getChild('username'));
      // The prefix of anonymous JIDs is not for accounts.
      const refused = await t.throwsAsync(reg.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:register' }, xml('username', {}, 'Anon-dave'), xml('password', {}, 'dave-secret')))));
      t.is((refused as Error & { condition?: string }).condition, 'not-acceptable');
      await reg.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:register' }, xml('username', {}, 'dave'), xml('password', {}, 'dave-secret'))));
      await auth({ username: 'dave', password: 'dave-secret' }, mechanisms.find((m) => m !== 'ANONYMOUS')!);
    },
  });
  reg.reconnect.stop();
  open.push(reg);
  await reg.start();
  t.is(reg.jid?.toString().split('/')[0], 'dave@localhost');
  await reg.stop();
  const again = await online({ username: 'dave', password: 'dave-secret' });
  t.is(again.jid?.toString().split('/')[0], 'dave@localhost');
  await again.stop();
});

test('two clients on different workers exchange messages (UTF-8, emoji, escaped characters)', async (t) => {
  const a = await online({ username: 'alice', password: 'alice-secret', resource: 'one' });
  const worker = (jid: string) => server.hub.registry.lookup(jid)!.worker;
  // Piscina gives each connection to the least busy worker; other tests'
  // connections come and go, so connect until bob lands beside, not with, alice.
  let b: XmppClient | undefined;
  for (let i = 0; i < 6 && !b; i++) {
    const c = await online({ username: 'bob', password: 'bob-secret', resource: 'two' });
    if (worker('bob@localhost/two') !== worker('alice@localhost/one')) b = c;
    else await c.stop();
  }
  if (!b) return t.fail('no connection reached the second worker');
  t.not(worker('alice@localhost/one'), worker('bob@localhost/two'));
  await a.send(xml('presence'));
  await b.send(xml('presence'));

  const body = 'Grüße, 世界! 🎉👩‍💻 <tag> & "quotes" \'apos\'';
  const got = nextStanza(b, (el) => el.is('message'));
  await a.send(xml('message', { to: 'bob@localhost/two', type: 'chat', id: 'm1' }, xml('body', {}, body)));
  const m = await got;
  t.is(m.getChildText('body'), body);
  t.is(m.attrs.from, 'alice@localhost/one');

  // Bare JID: delivered to the available resource.
  const back = nextStanza(a, (el) => el.is('message'));
  await b.send(xml('message', { to: 'alice@localhost', type: 'chat' }, xml('body', {}, 'réponse ✓')));
  const r = await back;
  t.is(r.getChildText('body'), 'réponse ✓');
  t.is(r.attrs.from, 'bob@localhost/two');
  await Promise.all([a.stop(), b.stop()]);
});

test('resource conflict: the new session wins, the old one gets <conflict/>', async (t) => {
  const first = await online({ username: 'bob', password: 'bob-secret', resource: 'phone' });
  const failed = once(first, 'error');
  const second = await online({ username: 'bob', password: 'bob-secret', resource: 'phone' });
  t.is(second.jid?.toString(), 'bob@localhost/phone');
  const [err] = (await failed) as [{ condition?: string }];
  t.is(err.condition, 'conflict');
  t.is(server.hub.registry.resources('bob@localhost').filter((r) => r.jid === 'bob@localhost/phone').length, 1);
  await second.stop();
});
