// STARTTLS and SASL when TLS is required (the default): what is offered
// when, every SASL failure condition of RFC 6120 §6.5 the server can
// produce, the retry limit, and a SCRAM-SHA-1 exchange computed here from
// RFC 5802 with the server's signature verified. In-band registration is off
// by default: neither advertised nor served. Each failure leaves the clients
// already logged in unaffected.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startWithBystanders } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header, plainAuth } from '../helpers/raw.ts';
import {
  NS_BIND, NS_SASL, NS_TLS, b64, bind, childEls, expectStreamError, nextSaslFailure, online, othersUnaffected, ping, readStreamStart, scramClient, secured, stanzaError, within,
} from '../helpers/protocol.ts';

const NS_REGISTER = 'jabber:iq:register';
const NS_REGISTER_FEATURE = 'http://jabber.org/features/iq-register';

let server: TestServer;
/** Logged in before the tests: what a failing connection does must not reach them. */
let watcher: { c: RawClient; jid: string };
let talker: { c: RawClient; jid: string };
let stop: () => Promise<void>;
test.before(async () => {
  ({ server, watcher, talker, stop } = await startWithBystanders({}, ['alice', 'bob', 'carol']));
});
test.after.always(() => stop?.());

const auth = (mechanism: string, data = '') => `<auth xmlns='${NS_SASL}' mechanism='${mechanism}'>${data}</auth>`;

/** After a SASL failure the stream is still open for another attempt: a correct one succeeds. */
async function retrySucceeds(t: import('ava').ExecutionContext, c: RawClient): Promise<void> {
  c.send(plainAuth('alice', 'alice-pw'));
  const ok = await c.nextEl();
  t.is(ok.name, 'success', `retry after a failure: ${ok.toString()}`);
}

test('before STARTTLS: only <starttls><required/></starttls>, no mechanisms', async (t) => {
  const c = await RawClient.connect(server.c2sPort);
  c.send(header());
  const { features } = await readStreamStart(c);
  t.deepEqual(childEls(features).map((e) => `${e.name} ${e.attrs.xmlns}`), [`starttls ${NS_TLS}`]);
  t.deepEqual(childEls(features.getChild('starttls')!).map((e) => e.name), ['required']);
  c.destroy();
});

test('<auth/> before STARTTLS when TLS is required → <encryption-required/>', async (t) => {
  const c = await RawClient.connect(server.c2sPort);
  c.send(header());
  await readStreamStart(c);
  c.send(plainAuth('alice', 'alice-pw'));
  const it = await c.next();
  t.regex(it.raw, /^<failure xmlns=(["'])urn:ietf:params:xml:ns:xmpp-sasl\1><encryption-required\/>(<text[^>]*>[^<]*<\/text>)?<\/failure>$/);
  // The stream stays up: STARTTLS is still possible.
  c.send(`<starttls xmlns='${NS_TLS}'/>`);
  t.is((await c.next()).raw, `<proceed xmlns='${NS_TLS}'/>`);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('plaintext pipelined after <starttls/> is not processed (RFC 6120 §5.4.3.3)', async (t) => {
  const c = await RawClient.connect(server.c2sPort);
  c.send(header());
  await readStreamStart(c);
  // One write: the command and an injected stanza behind it, as an attacker on the path could add.
  c.send(`<starttls xmlns='${NS_TLS}'/><iq type='get' id='injected' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
  const it = await c.next();
  t.is(it.raw, `<proceed xmlns='${NS_TLS}'/>`);
  // Nothing else in plaintext (a stream error there would also break the TLS handshake).
  await c.starttls();
  c.send(header());
  const { features } = await readStreamStart(c);
  t.truthy(features.getChild('mechanisms', NS_SASL));
  c.send(plainAuth('alice', 'alice-pw'));
  t.is((await c.nextEl()).name, 'success');
  c.send(header());
  await readStreamStart(c);
  t.is((await bind(c, 'inject')).attrs.type, 'result');
  t.is((await ping(c)).attrs.type, 'result');
  t.false(c.items.some((i) => i.kind === 'el' && i.el.attrs.id === 'injected'), 'the injected iq was never answered');
  c.destroy();
});

test('an unknown mechanism → <invalid-mechanism/>, and the stream stays usable', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(auth('X-NOT-A-MECHANISM', '='));
  t.is(await nextSaslFailure(t, c), 'invalid-mechanism');
  await retrySucceeds(t, c);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('bad base64 → <incorrect-encoding/>', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(auth('PLAIN', 'not*base64!'));
  t.is(await nextSaslFailure(t, c), 'incorrect-encoding');
  await retrySucceeds(t, c);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('PLAIN without NUL separators → <malformed-request/>', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(auth('PLAIN', b64('alicealice-pw')));
  t.is(await nextSaslFailure(t, c), 'malformed-request');
  await retrySucceeds(t, c);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('<auth/> without a mechanism attribute → <invalid-mechanism/> (RFC 6120 §6.5.7)', async (t) => {
  // RFC 6120 §6.5.7 names exactly this case: "The initiating entity did not
  // specify a mechanism, or requested a mechanism that is not supported".
  const { c } = await secured(server.c2sPort);
  c.send(`<auth xmlns='${NS_SASL}'>${b64('\0alice\0alice-pw')}</auth>`);
  t.is(await nextSaslFailure(t, c), 'invalid-mechanism');
  await retrySucceeds(t, c);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test("PLAIN with another user's authzid → <invalid-authzid/>", async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(auth('PLAIN', b64('bob@localhost\0alice\0alice-pw')));
  t.is(await nextSaslFailure(t, c), 'invalid-authzid');
  // One's own bare JID as authzid is fine.
  c.send(auth('PLAIN', b64('alice@localhost\0alice\0alice-pw')));
  t.is((await c.nextEl()).name, 'success');
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('a wrong password → <not-authorized/>', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(plainAuth('alice', 'wrong'));
  t.is(await nextSaslFailure(t, c), 'not-authorized');
  await retrySucceeds(t, c);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('an unknown user → <not-authorized/> (not distinguishable from a wrong password)', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(plainAuth('nobody', 'whatever'));
  t.is(await nextSaslFailure(t, c), 'not-authorized');
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('<abort/> in the middle of SCRAM → <aborted/>, then a fresh attempt succeeds', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(auth('SCRAM-SHA-1', b64(`n,,n=alice,r=${randomBytes(12).toString('base64')}`)));
  const ch = await c.nextEl('challenge');
  t.is(ch.attrs.xmlns, NS_SASL);
  t.regex(Buffer.from(ch.getText(), 'base64').toString(), /^r=[^,]+,s=[^,]+,i=\d+$/);
  c.send(`<abort xmlns='${NS_SASL}'/>`);
  t.is(await nextSaslFailure(t, c), 'aborted');
  await retrySucceeds(t, c);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('after XMPP_MAX_AUTH_ATTEMPTS (3) failures the stream is closed with <policy-violation/>', async (t) => {
  const { c } = await secured(server.c2sPort);
  for (let i = 1; i <= 2; i++) {
    c.send(plainAuth('alice', `wrong-${i}`));
    t.is(await nextSaslFailure(t, c), 'not-authorized', `attempt ${i}`);
  }
  c.send(plainAuth('alice', 'wrong-3'));
  t.is(await nextSaslFailure(t, c), 'not-authorized', 'the third failure is still reported');
  // RFC 6120 §6.4.5: past the retries, a stream error, which SHOULD be <policy-violation/>.
  await expectStreamError(t, c, 'policy-violation');
  await othersUnaffected(t, watcher, talker);
  // Others can still log in.
  const { c: ok } = await online(server.c2sPort, 'carol', 'carol-pw', 'after');
  t.is((await ping(ok)).attrs.type, 'result');
  ok.destroy();
});

for (const [mech, hash] of [['SCRAM-SHA-1', 'sha1'], ['SCRAM-SHA-256', 'sha256']] as const) {
  test(`a raw ${mech} exchange: client proof computed here, server signature verified`, async (t) => {
    const { c, features } = await secured(server.c2sPort);
    const mechs = features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];
    t.true(mechs.includes(mech));
    const cnonce = randomBytes(18).toString('base64');
    const gs2 = 'n,,';
    const clientFirstBare = `n=bob,r=${cnonce}`;
    c.send(auth(mech, b64(gs2 + clientFirstBare)));
    const ch = await c.nextEl('challenge');
    const serverFirst = Buffer.from(ch.getText(), 'base64').toString();
    const { attrs, clientFinal, serverSignature } = scramClient(hash, 'bob-pw', clientFirstBare, serverFirst, gs2);
    t.true(attrs.r.startsWith(cnonce) && attrs.r.length > cnonce.length, 'the server extends the client nonce');
    t.true(Number(attrs.i) >= 4096, 'at least 4096 iterations (RFC 7677)');
    c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
    const ok = await c.nextEl();
    t.is(ok.name, 'success', ok.toString());
    t.is(ok.attrs.xmlns, NS_SASL);
    // RFC 6120 §6.4.6: the additional data (server-final-message) rides in <success/>.
    t.is(Buffer.from(ok.getText(), 'base64').toString(), `v=${serverSignature.toString('base64')}`, 'the server proves it knows the password');
    c.send(header());
    const { features: f } = await readStreamStart(c);
    t.truthy(f.getChild('bind', NS_BIND));
    // One resource per mechanism: the two tests run at once, and the same full JID would replace the other's session.
    const r = await bind(c, `scram-${hash}`);
    t.is(r.getChild('bind', NS_BIND)?.getChildText('jid'), `bob@localhost/scram-${hash}`);
    c.destroy();
  });
}

test('SCRAM-SHA-1 with a wrong proof → <not-authorized/>', async (t) => {
  const { c } = await secured(server.c2sPort);
  const clientFirstBare = `n=bob,r=${randomBytes(12).toString('base64')}`;
  c.send(auth('SCRAM-SHA-1', b64('n,,' + clientFirstBare)));
  const serverFirst = Buffer.from((await c.nextEl('challenge')).getText(), 'base64').toString();
  const { clientFinal } = scramClient('sha1', 'not-bobs-password', clientFirstBare, serverFirst, 'n,,');
  c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  t.is(await within(nextSaslFailure(t, c), 5000, 'failure'), 'not-authorized');
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('in-band registration is off by default: the secured stream does not advertise it (XEP-0077 §8)', async (t) => {
  const { c, features } = await secured(server.c2sPort);
  t.truthy(features.getChild('mechanisms', NS_SASL), 'these are the features of the secured, unauthenticated stream');
  t.deepEqual(childEls(features).filter((e) => e.attrs.xmlns === NS_REGISTER_FEATURE || e.attrs.xmlns === NS_REGISTER), [], features.toString());
  c.destroy();
});

test('in-band registration is off by default: a pre-auth jabber:iq:register get gets service-unavailable (XEP-0077 §3.1) and the stream goes on', async (t) => {
  const { c } = await secured(server.c2sPort);
  const reply = await c.request(`<iq type='get' id='reg1'><query xmlns='${NS_REGISTER}'/></iq>`, 'reg1');
  t.is(reply.attrs.type, 'error');
  t.like(stanzaError(reply), { type: 'cancel', condition: 'service-unavailable' });
  // The stream is still negotiating: authentication works on it.
  c.send(plainAuth('bob', 'bob-pw'));
  await c.waitFor(/<success xmlns=["']urn:ietf:params:xml:ns:xmpp-sasl["']/);
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('in-band registration is off by default: a pre-auth registration set is refused and creates no account', async (t) => {
  const { c } = await secured(server.c2sPort);
  const reply = await c.request(`<iq type='set' id='reg2'><query xmlns='${NS_REGISTER}'><username>mallory</username><password>mallory-pw</password></query></iq>`, 'reg2');
  t.like(stanzaError(reply), { type: 'cancel', condition: 'service-unavailable' });
  t.false(reply.toString().includes('mallory-pw'), 'the password is not echoed back');
  c.mark();
  c.send(plainAuth('mallory', 'mallory-pw'));
  t.is(await nextSaslFailure(t, c), 'not-authorized', 'there is no account mallory');
  c.destroy();
  await othersUnaffected(t, watcher, talker);
});
