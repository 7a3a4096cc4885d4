// XMPP_TLS_REQUIRED=false: authentication is allowed on the plain stream,
// but only with mechanisms that do not reveal the password (RFC 6120 §6.4.1,
// §13.8): SCRAM is offered, PLAIN is neither offered nor accepted there. A
// refused PLAIN leaves the clients already logged in unaffected.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startWithBystanders } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header, plainAuth } from '../helpers/raw.ts';
import { NS_BIND, NS_SASL, NS_TLS, b64, bind, nextSaslFailure, othersUnaffected, ping, readStreamStart, scramClient, secured } from '../helpers/protocol.ts';

let server: TestServer;
let watcher: { c: RawClient; jid: string };
let talker: { c: RawClient; jid: string };
let stop: () => Promise<void>;
test.before(async () => {
  ({ server, watcher, talker, stop } = await startWithBystanders({ XMPP_TLS_REQUIRED: 'false' }, ['alice']));
});
test.after.always(() => stop?.());

async function plainStream(): Promise<{ c: RawClient; mechs: string[]; features: import('ltx').Element }> {
  const c = await RawClient.connect(server.c2sPort);
  c.send(header());
  const { features } = await readStreamStart(c);
  const mechs = features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];
  return { c, mechs, features };
}

test('plain stream: STARTTLS offered but not required; SCRAM offered, PLAIN not', async (t) => {
  const { c, mechs, features } = await plainStream();
  const st = features.getChild('starttls', NS_TLS);
  t.truthy(st);
  t.is(st?.getChild('required'), undefined, 'TLS is voluntary-to-negotiate');
  t.true(mechs.includes('SCRAM-SHA-1'), mechs.join(' '));
  t.true(mechs.includes('SCRAM-SHA-256'), mechs.join(' '));
  t.false(mechs.includes('PLAIN'), 'PLAIN would send the password in the clear');
  c.destroy();
});

test('plain stream: PLAIN anyway → <mechanism-too-weak/>', async (t) => {
  const { c } = await plainStream();
  c.send(plainAuth('alice', 'alice-pw'));
  t.is(await nextSaslFailure(t, c), 'mechanism-too-weak');
  await othersUnaffected(t, watcher, talker);
  c.destroy();
});

test('plain stream: a raw SCRAM-SHA-1 exchange succeeds and binds', async (t) => {
  const { c } = await plainStream();
  const clientFirstBare = `n=alice,r=${randomBytes(12).toString('base64')}`;
  c.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-1'>${b64('n,,' + clientFirstBare)}</auth>`);
  const serverFirst = Buffer.from((await c.nextEl('challenge')).getText(), 'base64').toString();
  const { clientFinal, serverSignature } = scramClient('sha1', 'alice-pw', clientFirstBare, serverFirst, 'n,,');
  c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  const ok = await c.nextEl('success');
  t.is(Buffer.from(ok.getText(), 'base64').toString(), `v=${serverSignature.toString('base64')}`);
  c.send(header());
  const { features } = await readStreamStart(c);
  t.truthy(features.getChild('bind', NS_BIND));
  t.is((await bind(c, 'plain')).getChild('bind', NS_BIND)?.getChildText('jid'), 'alice@localhost/plain');
  t.is((await ping(c)).attrs.type, 'result');
  c.destroy();
});

test('after STARTTLS on the same server, PLAIN is offered and works', async (t) => {
  const { c, features } = await secured(server.c2sPort);
  const mechs = features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];
  t.true(mechs.includes('PLAIN'), mechs.join(' '));
  c.send(plainAuth('alice', 'alice-pw'));
  t.is((await c.nextEl()).name, 'success');
  c.destroy();
});
