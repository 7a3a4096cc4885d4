// XEP-0215 External Service Discovery against a real server: the STUN and
// TURN servers of XMPP_EXTDISCO_SERVICES, TURN credentials of the TURN REST
// API checked as a TURN server would (HMAC-SHA1 of the username with the
// shared secret), and a server with none configured.
import test from 'ava';
import { createHmac } from 'node:crypto';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { online, stanzaError, uid, NS_DISCO_INFO } from '../helpers/protocol.ts';
import type { RawClient } from '../helpers/raw.ts';

const NS = 'urn:xmpp:extdisco:2';
const SECRET = 'coturn static-auth-secret';
const TTL = 3600;

let server: TestServer;
let bare: TestServer;
test.before(async () => {
  [server, bare] = await Promise.all([
    startTestServer({ XMPP_EXTDISCO_SERVICES: 'stun:stun.example.org,turn:turn.example.org?transport=udp,turns:turn.example.org,turn:turn.example.org:3479?transport=tcp', XMPP_TURN_SECRET: SECRET, XMPP_TURN_TTL_SECONDS: String(TTL) }),
    startTestServer(),
  ]);
  await server.addUser('alice', 'alice-pw');
  await bare.addUser('alice', 'alice-pw');
});
test.after.always(() => Promise.all([server?.stop(), bare?.stop()]));

async function ask(c: RawClient, payload: string): Promise<Element> {
  const id = uid('ext');
  return c.request(`<iq type='get' id='${id}' to='localhost'>${payload}</iq>`, id);
}

/** What a TURN server with the secret checks: the password is the HMAC-SHA1 of the username; the username starts with when it expires. */
function checkCredentials(t: import('ava').ExecutionContext, s: Element, before: number, user: string): void {
  const { username, password, expires } = s.attrs;
  const m = /^(\d+):(.+)$/.exec(String(username));
  t.truthy(m, username);
  t.is(m![2], user);
  t.is(password, createHmac('sha1', SECRET).update(username).digest('base64'));
  const at = Number(m![1]);
  t.true(at >= Math.floor(before / 1000) + TTL && at <= Math.ceil(Date.now() / 1000) + TTL, `${at}`);
  // §2: 'expires' in XEP-0082 form, UTC, the same time.
  t.regex(String(expires), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.is(Date.parse(expires) / 1000, at);
}

test('the server says it supports XEP-0215 (§5), and lists every service, TURN ones with credentials valid for the TTL (§3.1)', async (t) => {
  const { c } = await online(server.c2sPort, 'alice', 'alice-pw', 'ext');
  t.teardown(() => c.destroy());
  const info = await ask(c, `<query xmlns='${NS_DISCO_INFO}'/>`);
  t.true(info.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === NS));
  const before = Date.now();
  const r = await ask(c, `<services xmlns='${NS}'/>`);
  t.is(r.attrs.type, 'result', r.toString());
  const list = r.getChild('services', NS)!.getChildren('service');
  t.deepEqual(list.map((s) => [s.attrs.type, s.attrs.host, s.attrs.port, s.attrs.transport]), [
    ['stun', 'stun.example.org', '3478', 'udp'],
    ['turn', 'turn.example.org', '3478', 'udp'],
    ['turns', 'turn.example.org', '5349', 'tcp'],
    ['turn', 'turn.example.org', '3479', 'tcp'],
  ]);
  t.false('username' in list[0].attrs, 'STUN needs no credentials');
  for (const s of list.slice(1)) checkCredentials(t, s, before, 'alice');
});

test('services of one type (§3.2)', async (t) => {
  const { c } = await online(server.c2sPort, 'alice', 'alice-pw', 'type');
  t.teardown(() => c.destroy());
  const r = await ask(c, `<services xmlns='${NS}' type='turn'/>`);
  const services = r.getChild('services', NS)!;
  t.is(services.attrs.type, 'turn');
  t.deepEqual(services.getChildren('service').map((s) => s.attrs.port), ['3478', '3479']);
  t.deepEqual((await ask(c, `<services xmlns='${NS}' type='ftp'/>`)).getChild('services', NS)!.getChildren('service'), []);
});

test('credentials for a service named by host and type, narrowed by port (§3.3); none to give, or a service not named fully, is an error', async (t) => {
  const { c } = await online(server.c2sPort, 'alice', 'alice-pw', 'creds');
  t.teardown(() => c.destroy());
  const before = Date.now();
  const r = await ask(c, `<credentials xmlns='${NS}'><service host='turn.example.org' type='turn'/></credentials>`);
  const got = r.getChild('credentials', NS)!.getChildren('service');
  t.deepEqual(got.map((s) => s.attrs.port), ['3478', '3479'], 'both ports of that host and type');
  for (const s of got) checkCredentials(t, s, before, 'alice');
  const one = await ask(c, `<credentials xmlns='${NS}'><service host='TURN.example.org' type='turn' port='3479'/></credentials>`);
  t.deepEqual(one.getChild('credentials', NS)!.getChildren('service').map((s) => s.attrs.port), ['3479']);
  t.is(stanzaError(await ask(c, `<credentials xmlns='${NS}'><service host='turn.example.org' type='turn' port='9'/></credentials>`)).condition, 'item-not-found');
  t.is(stanzaError(await ask(c, `<credentials xmlns='${NS}'><service host='stun.example.org' type='stun'/></credentials>`)).condition, 'item-not-found', 'STUN has none');
  t.is(stanzaError(await ask(c, `<credentials xmlns='${NS}'><service type='turn'/></credentials>`)).condition, 'bad-request');
  t.is(stanzaError(await ask(c, `<credentials xmlns='${NS}'/>`)).condition, 'bad-request');
  t.is(stanzaError(await ask(c, `<other xmlns='${NS}'/>`)).condition, 'bad-request');
});

test('a server with no external services configured neither advertises the protocol nor answers it', async (t) => {
  const { c } = await online(bare.c2sPort, 'alice', 'alice-pw', 'none');
  t.teardown(() => c.destroy());
  const info = await ask(c, `<query xmlns='${NS_DISCO_INFO}'/>`);
  t.false(info.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === NS));
  t.is(stanzaError(await ask(c, `<services xmlns='${NS}'/>`)).condition, 'service-unavailable');
});
