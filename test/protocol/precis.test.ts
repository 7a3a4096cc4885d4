// JID preparation over real streams (RFC 7622, RFC 8265): in-band
// registration, SASL, resource binding and stanza addresses all use the one
// PRECIS preparation, so a look-alike of an account is refused or reaches
// that very account, and a malformed address gets jid-malformed.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startWithBystanders } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header, login, plainAuth } from '../helpers/raw.ts';
import {
  NS_BIND, NS_SASL, authenticated, b64, bind, nextSaslFailure, online, othersUnaffected, readStreamStart, scramClient, secured, stanzaError, uid, within,
} from '../helpers/protocol.ts';

const NS_REGISTER = 'jabber:iq:register';

let server: TestServer;
let watcher: { c: RawClient; jid: string };
let talker: { c: RawClient; jid: string };
let stop: () => Promise<void>;
test.before(async () => {
  ({ server, watcher, talker, stop } = await startWithBystanders({ XMPP_REGISTRATION: 'true' }, ['bob', 'alice', 'carol']));
});
test.after.always(() => stop?.());

/** In-band registration (XEP-0077 §3.1) on a fresh secured stream; returns the reply. */
async function register(username: string, password: string) {
  const { c } = await secured(server.c2sPort);
  const id = uid('reg');
  const r = await within(c.request(`<iq type='set' id='${id}'><query xmlns='${NS_REGISTER}'><username>${username}</username><password>${password}</password></query></iq>`, id), 5000, `registration of ${JSON.stringify(username)}`);
  c.destroy();
  return r;
}

/** SASL PLAIN on a fresh secured stream: 'success' or the failure's condition. */
async function plain(user: string, password: string): Promise<string | undefined> {
  const { c } = await secured(server.c2sPort);
  c.send(plainAuth(user, password));
  const el = await within(c.nextEl(), 5000, `PLAIN as ${JSON.stringify(user)}`);
  c.destroy();
  return el.name === 'success' ? 'success' : el.getChildElements()[0]?.name;
}

test('in-band registration refuses look-alikes of an account (invisible, bidi-control and unassigned code points) and maps width and case variants onto it', async (t) => {
  for (const name of ['bob\u200b', 'b\u00adob', '\u202ebob', 'bo\u2060b', 'bob\u0378']) {
    const r = await register(name, 'imposter-pw');
    t.is(r.attrs.type, 'error', `${JSON.stringify(name)}: ${r.toString()}`);
    t.deepEqual(stanzaError(r), { type: 'modify', condition: 'not-acceptable', by: stanzaError(r).by }, JSON.stringify(name));
    t.is(await plain(name, 'imposter-pw'), 'not-authorized', `no account ${JSON.stringify(name)} was made`);
  }
  for (const name of ['ＢＯＢ', 'BoB']) {
    const r = await register(name, 'imposter-pw');
    t.deepEqual(stanzaError(r), { type: 'cancel', condition: 'conflict', by: stanzaError(r).by }, `${JSON.stringify(name)} is bob`);
  }
  t.is(await plain('bob', 'bob-pw'), 'success', 'bob keeps his password');
  t.is(await plain('bob', 'imposter-pw'), 'not-authorized');
  await othersUnaffected(t, watcher, talker);
});

test('SASL PLAIN and SCRAM-SHA-256 with a width or case variant of the username reach the same account', async (t) => {
  const viaPlain = await login(server.c2sPort, 'ＢＯＢ', 'bob-pw', 'fullwidth');
  t.is(viaPlain.jid, 'bob@localhost/fullwidth');
  viaPlain.c.destroy();

  const { c } = await secured(server.c2sPort);
  const clientFirstBare = `n=Ｂob,r=${randomBytes(12).toString('base64')}`;
  c.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-256'>${b64('n,,' + clientFirstBare)}</auth>`);
  const serverFirst = Buffer.from((await within(c.nextEl('challenge'), 5000, 'challenge')).getText(), 'base64').toString();
  const { clientFinal } = scramClient('sha256', 'bob-pw', clientFirstBare, serverFirst, 'n,,');
  c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  t.is((await within(c.nextEl(), 5000, 'outcome')).name, 'success');
  c.send(header());
  await readStreamStart(c);
  t.is((await bind(c, 'scram')).getChild('bind', NS_BIND)?.getChildText('jid'), 'bob@localhost/scram');
  c.destroy();

  // A look-alike is not a spelling of bob: it fails like any unknown user.
  const { c: c2 } = await secured(server.c2sPort);
  c2.send(plainAuth('b\u00adob', 'bob-pw'));
  t.is(await within(nextSaslFailure(t, c2), 5000, 'failure'), 'not-authorized');
  c2.destroy();
});

test('a right-to-left username that registration accepts also logs in with SASL PLAIN', async (t) => {
  // Ends with a European digit: the Bidi Rule allows it (RFC 5893 §2 rule 3),
  // stringprep's bidi check (RFC 3454 §6) does not.
  const name = '\u05d3\u05d5\u05d37';
  const r = await register(name, 'dov-pw');
  t.is(r.attrs.type, 'result', r.toString());
  const s = await login(server.c2sPort, name, 'dov-pw', 'rtl');
  t.is(s.jid, `${name}@localhost/rtl`);
  s.c.destroy();
  // Latin and Hebrew letters in one name break the Bidi Rule (rules 2 and 5).
  const mixed = await register('dov\u05d3', 'dov-pw');
  t.is(stanzaError(mixed).condition, 'not-acceptable', mixed.toString());
});

test('a password change names the own account in any spelling of it (XEP-0077 §3.3)', async (t) => {
  const carol = await online(server.c2sPort, 'carol', 'carol-pw', 'pw');
  const id = uid('pw');
  const r = await within(carol.c.request(`<iq type='set' id='${id}' to='localhost'><query xmlns='${NS_REGISTER}'><username>ＣａＲＯＬ</username><password>carol-new</password></query></iq>`, id), 5000, 'password change');
  t.is(r.attrs.type, 'result', r.toString());
  carol.c.destroy();
  t.is(await plain('carol', 'carol-new'), 'success');
});

test('a resource keeps spaces and symbols (OpaqueString) and refuses invisible code points', async (t) => {
  const spaced = await online(server.c2sPort, 'alice', 'alice-pw', ' my phone ♥ ');
  t.is(spaced.jid, 'alice@localhost/ my phone ♥ ');
  spaced.c.destroy();
  const { c } = await authenticated(server.c2sPort, 'alice', 'alice-pw');
  for (const bad of ['phone\u200b', 'pho\u00adne', '\u202ephone']) {
    const r = await bind(c, bad);
    t.is(r.attrs.type, 'error', `${JSON.stringify(bad)}: ${r.toString()}`);
    t.is(stanzaError(r).condition, 'bad-request', JSON.stringify(bad));
  }
  c.destroy();
});

for (const to of ['bob@localhost:5222', 'bob@[::1', 'bob@chat..example', 'bob\u200b@localhost']) {
  test(`a message and an iq to ${JSON.stringify(to)} are answered with jid-malformed, not routed`, async (t) => {
    const mid = uid('m');
    talker.c.send(`<message to='${to}' id='${mid}' type='chat'><body>hi</body></message>`);
    const m = await within(talker.c.find((el) => el.attrs.id === mid), 5000, 'message error');
    t.is(m.attrs.type, 'error', m.toString());
    t.deepEqual(stanzaError(m), { type: 'modify', condition: 'jid-malformed', by: stanzaError(m).by });
    const iid = uid('iq');
    talker.c.send(`<iq to='${to}' id='${iid}' type='get'><ping xmlns='urn:xmpp:ping'/></iq>`);
    const i = await within(talker.c.find((el) => el.attrs.id === iid), 5000, 'iq error');
    t.is(i.attrs.type, 'error', i.toString());
    t.deepEqual(stanzaError(i), { type: 'modify', condition: 'jid-malformed', by: stanzaError(i).by });
  });
}
