// XMPP over WebSocket (RFC 7395) and XEP-0156 discovery on the HTTP
// listeners, with a real WebSocket client (ws) and @xmpp/client, against a
// real server whose TCP users they talk to.
import test from 'ava';
import http from 'node:http';
import https from 'node:https';
import { networkInterfaces } from 'node:os';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { client, xml } from '@xmpp/client';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { authenticated, online, within, uid, NS_SASL, NS_TLS, NS_STREAMS_ERR } from '../helpers/protocol.ts';
import { NS_SM } from '../helpers/im.ts';
import { trustServer, Inbox } from '../helpers/xmpp-client.ts';
import { WsClient, OPEN, CLOSE, NS_FRAMING, openStream, scramLogin, serverCa, wsBind, wsOnline } from '../helpers/ws.ts';
import { reply, type Reply } from '../helpers/http.ts';

const MAX_STANZA = 4096;
let server: TestServer;
test.before(async () => {
  server = await startTestServer({ XMPP_HTTP_PORT: '0', XMPP_HTTPS_PORT: '0', XMPP_MAX_STANZA_BYTES: String(MAX_STANZA) });
  for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina']) await server.addUser(u, `${u}-pw`);
});
test.after.always(() => server?.stop());

const wssUrl = () => `wss://localhost:${server.httpsPort}/xmpp-websocket`;
const wsUrl = (host = '127.0.0.1') => `ws://${host}:${server.httpPort}/xmpp-websocket`;

/** One HTTP request: its status, headers and body. */
function get(url: string, opts: { method?: string; ca?: Buffer } = {}): Promise<Reply> {
  const lib = url.startsWith('https:') ? https : http;
  return reply(lib.request(url, { method: opts.method ?? 'GET', ca: opts.ca }), `${opts.method ?? 'GET'} ${url}`);
}

const mechanisms = (features: Element) => features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];

test('host-meta and host-meta.json (XEP-0156) on both ports list the wss:// and the BOSH https:// endpoints, readable from any origin (CORS)', async (t) => {
  const endpoint = `wss://localhost:${server.httpsPort}/xmpp-websocket`;
  const bosh = `https://localhost:${server.httpsPort}/http-bind`;
  for (const base of [`http://127.0.0.1:${server.httpPort}`, `https://localhost:${server.httpsPort}`]) {
    const ca = serverCa(server);
    const xrd = await get(`${base}/.well-known/host-meta`, { ca });
    t.is(xrd.status, 200, base);
    t.is(xrd.headers['access-control-allow-origin'], '*');
    t.regex(String(xrd.headers['content-type']), /^application\/xrd\+xml/);
    const doc = parseXml(xrd.body) as Element;
    t.is(doc.name, 'XRD');
    t.is(doc.attrs.xmlns, 'http://docs.oasis-open.org/ns/xri/xrd-1.0');
    t.deepEqual(doc.getChildren('Link').map((l) => [l.attrs.rel, l.attrs.href]), [['urn:xmpp:alt-connections:websocket', endpoint], ['urn:xmpp:alt-connections:xbosh', bosh]]);
    const jrd = await get(`${base}/.well-known/host-meta.json`, { ca });
    t.is(jrd.status, 200);
    t.is(jrd.headers['access-control-allow-origin'], '*');
    t.regex(String(jrd.headers['content-type']), /^application\/json/);
    t.deepEqual(JSON.parse(jrd.body), { links: [{ rel: 'urn:xmpp:alt-connections:websocket', href: endpoint }, { rel: 'urn:xmpp:alt-connections:xbosh', href: bosh }] });
    // A browser's preflight.
    const pre = await get(`${base}/.well-known/host-meta.json`, { method: 'OPTIONS', ca });
    t.is(pre.status, 204);
    t.is(pre.headers['access-control-allow-origin'], '*');
    t.is((await get(`${base}/.well-known/host-meta`, { method: 'POST', ca })).status, 405);
  }
});

test('other paths get 404; the WebSocket endpoint asked without an upgrade gets 426', async (t) => {
  t.is((await get(`http://127.0.0.1:${server.httpPort}/`)).status, 404);
  t.is((await get(`http://127.0.0.1:${server.httpPort}/.well-known/host-meta.xml`)).status, 404);
  t.is((await get(`https://localhost:${server.httpsPort}/xmpp-websocket/x`, { ca: serverCa(server) })).status, 404);
  t.is((await get(`http://127.0.0.1:${server.httpPort}/xmpp-websocket`)).status, 426);
  // A WebSocket to another path is not upgraded.
  await t.throwsAsync(WsClient.connect(`ws://127.0.0.1:${server.httpPort}/other`), { message: /HTTP 404/ });
});

test('a WebSocket without the xmpp subprotocol is refused (RFC 7395 §3.1): 400, no stream', async (t) => {
  await t.throwsAsync(WsClient.connect(wssUrl(), { ca: serverCa(server), protocols: [] }), { message: /HTTP 400/ });
  await t.throwsAsync(WsClient.connect(wssUrl(), { ca: serverCa(server), protocols: ['chat'] }), { message: /HTTP 400/ });
  // Among others, it is chosen.
  const c = await WsClient.connect(wssUrl(), { ca: serverCa(server), protocols: ['chat', 'xmpp'] });
  t.is(c.ws.protocol, 'xmpp');
  await c.close();
});

test('wss://: SCRAM-SHA-256 login, bind, and messages both ways with a TCP user; every message is one element standing alone', async (t) => {
  const c = await WsClient.connect(wssUrl(), { ca: serverCa(server) });
  t.teardown(() => c.close());
  const { open, features } = await openStream(c);
  // RFC 7395 §3.4: the answer is an <open/> of the framing namespace.
  t.is(open.name, 'open');
  t.is(open.attrs.xmlns, NS_FRAMING);
  t.is(open.attrs.from, 'localhost');
  t.is(open.attrs.version, '1.0');
  t.truthy(open.attrs.id);
  t.is(features.name, 'stream:features');
  // §3.9: TLS is the WebSocket's: no STARTTLS offered; SASL at once.
  t.falsy(features.getChild('starttls', NS_TLS));
  t.true(mechanisms(features).includes('SCRAM-SHA-256'), features.toString());
  const after = await scramLogin(c, 'alice', 'alice-pw');
  t.truthy(after.getChild('bind', 'urn:ietf:params:xml:ns:xmpp-bind'));
  t.truthy(after.getChild('sm', NS_SM), 'stream management is offered as on TCP');
  t.truthy(after.getChild('csi', 'urn:xmpp:csi:0'), 'client state indication too');
  const jid = await wsBind(c, 'web');
  t.is(jid, 'alice@localhost/web');

  const bob = await online(server.c2sPort, 'bob', 'bob-pw', 'tcp');
  t.teardown(() => bob.c.destroy());
  c.send(`<message xmlns='jabber:client' to='${bob.jid}' type='chat' id='m1'><body>hello from the web</body></message>`);
  const got = await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'hello from the web'), 10_000, 'bob receiving');
  t.is(got.attrs.from, jid);
  // A stanza with no namespace of its own is in the content namespace, as on TCP.
  c.send(`<message to='${bob.jid}' type='chat'><body>no xmlns</body></message>`);
  await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'no xmlns'), 10_000, 'bob receiving the second');
  bob.c.send(`<message to='${jid}' type='chat' id='m2'><body>hello from TCP</body></message>`);
  const back = await c.find((el) => el.name === 'message');
  t.is(back.attrs.from, bob.jid);
  t.is(back.getChildText('body'), 'hello from TCP');
  t.is(back.attrs.xmlns, 'jabber:client');

  // §3.3.3: each message a document with every declaration it needs.
  for (const raw of c.raw) {
    t.true(raw.startsWith('<'), raw);
    const el = parseXml(raw) as Element;
    if (el.name.startsWith('stream:')) t.is(el.attrs['xmlns:stream'], 'http://etherx.jabber.org/streams', raw);
    else t.truthy(el.attrs.xmlns, raw);
    t.false(raw.includes('<stream:stream') || raw.includes('</stream:stream>'), raw);
  }
});

test('stream management over WebSocket: enabled with resumption, the connection lost, resumed on a new WebSocket with what was not acknowledged and what came meanwhile', async (t) => {
  const { c, jid } = await wsOnline(server, 'carol', 'carol-pw', 'sm');
  t.teardown(() => c.close());
  c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await c.find((el) => el.name === 'enabled');
  t.is(enabled.attrs.xmlns, NS_SM);
  t.is(enabled.attrs.resume, 'true');
  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('r'));
  t.teardown(() => bob.c.destroy());
  bob.c.send(`<message to='${jid}' type='chat'><body>one</body></message>`);
  await c.find((el) => el.name === 'message' && el.getChildText('body') === 'one');
  // Gone without a word: the session waits, detached.
  c.kill();
  await c.closed;
  bob.c.send(`<message to='${jid}' type='chat'><body>two</body></message>`);
  // Answered by the server, not stored offline: the session still takes messages.
  bob.c.send(`<iq type='get' id='still' to='${jid.split('/')[0]}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
  await within(bob.c.find((el) => el.attrs.id === 'still'), 10_000, 'a barrier');

  const again = await WsClient.connect(wssUrl(), { ca: serverCa(server) });
  t.teardown(() => again.close());
  await openStream(again);
  await scramLogin(again, 'carol', 'carol-pw');
  again.send(`<resume xmlns='${NS_SM}' previd='${enabled.attrs.id}' h='0'/>`);
  const resumed = await again.next();
  t.is(resumed.name, 'resumed', resumed.toString());
  t.is(resumed.attrs.previd, enabled.attrs.id);
  const bodies: string[] = [];
  while (bodies.length < 2) {
    const el = await again.find((e) => e.name === 'message');
    bodies.push(el.getChildText('body') ?? '');
  }
  t.deepEqual(bodies, ['one', 'two'], 'unacknowledged, then what came while detached, in order');
  // Live again, under the same full JID.
  bob.c.send(`<message to='${jid}' type='chat'><body>three</body></message>`);
  t.is((await again.find((e) => e.name === 'message')).getChildText('body'), 'three');
});

test('a session detached from a WebSocket resumes on TCP, with what was not acknowledged', async (t) => {
  const { c, jid } = await wsOnline(server, 'carol', 'carol-pw', 'to-tcp');
  t.teardown(() => c.close());
  c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await c.find((el) => el.name === 'enabled');
  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('t'));
  t.teardown(() => bob.c.destroy());
  bob.c.send(`<message to='${jid}' type='chat'><body>kept</body></message>`);
  await c.find((el) => el.name === 'message');
  c.kill();
  await c.closed;
  const { c: tcp } = await authenticated(server.c2sPort, 'carol', 'carol-pw');
  t.teardown(() => tcp.destroy());
  tcp.send(`<resume xmlns='${NS_SM}' previd='${enabled.attrs.id}' h='0'/>`);
  const resumed = await within(tcp.nextEl(), 10_000, 'the answer to <resume/>');
  t.is(resumed.name, 'resumed', resumed.toString());
  const again = await within(tcp.find((el) => el.name === 'message'), 10_000, 'the message again');
  t.is(again.getChildText('body'), 'kept');
  t.is(again.attrs.to, jid);
});

test('<close/> from the client is answered with <close/>, then the WebSocket closes normally (RFC 7395 §3.6)', async (t) => {
  const { c, jid } = await wsOnline(server, 'dave', 'dave-pw', 'close');
  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('c'));
  t.teardown(() => bob.c.destroy());
  c.send(CLOSE);
  const last = await c.next();
  t.is(last.name, 'close');
  t.is(last.attrs.xmlns, NS_FRAMING);
  t.is(await within(c.closed, 10_000, 'the WebSocket closing'), 1000);
  // The session is over: a message to its full JID is refused.
  bob.c.send(`<iq type='get' id='gone' to='${jid}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  const answer = await within(bob.c.find((el) => el.attrs.id === 'gone'), 10_000, 'the answer');
  t.is(answer.attrs.type, 'error');
});

test('a message over XMPP_MAX_STANZA_BYTES ends the stream with policy-violation; one far over it is cut off by the WebSocket (1009)', async (t) => {
  const { c } = await wsOnline(server, 'erin', 'erin-pw', 'big');
  c.send(`<message xmlns='jabber:client' to='bob@localhost' type='chat'><body>${'x'.repeat(MAX_STANZA + 100)}</body></message>`);
  const err = await c.find((el) => el.name === 'stream:error');
  t.truthy(err.getChild('policy-violation', NS_STREAMS_ERR), err.toString());
  t.is((await c.next()).name, 'close');
  await within(c.closed, 10_000, 'closed');

  const { c: c2 } = await wsOnline(server, 'erin', 'erin-pw', 'bigger');
  c2.send(`<message xmlns='jabber:client' to='bob@localhost'><body>${'y'.repeat(3 * MAX_STANZA)}</body></message>`);
  t.is(await within(c2.closed, 10_000, 'closed'), 1009);
});

test('a message that is not one complete element ends the stream with not-well-formed (RFC 7395 §3.3.3)', async (t) => {
  for (const bad of [`<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>`, `<message xmlns='jabber:client'><body>half`, `<x:y/>`]) {
    const c = await WsClient.connect(wssUrl(), { ca: serverCa(server) });
    await openStream(c);
    c.send(bad);
    const err = await c.find((el) => el.name === 'stream:error');
    t.truthy(err.getChild('not-well-formed', NS_STREAMS_ERR), `${bad}: ${err.toString()}`);
    t.is((await c.next()).name, 'close');
    await within(c.closed, 10_000, 'closed');
  }
});

test('STARTTLS on a WebSocket is refused with <failure/> and the stream closed (RFC 7395 §3.9)', async (t) => {
  const c = await WsClient.connect(wsUrl(), {});
  await openStream(c);
  c.send(`<starttls xmlns='${NS_TLS}'/>`);
  const failure = await c.next();
  t.is(failure.name, 'failure');
  t.is(failure.attrs.xmlns, NS_TLS);
  t.is((await c.next()).name, 'close');
  await within(c.closed, 10_000, 'closed');
});

test('plain ws:// from loopback counts as secure: SASL offered and a login works; a local proxy saying the client came in plain HTTP gets no SASL', async (t) => {
  const c = await WsClient.connect(wsUrl(), {});
  t.teardown(() => c.close());
  const { features } = await openStream(c);
  t.falsy(features.getChild('starttls', NS_TLS));
  t.true(mechanisms(features).includes('PLAIN'), features.toString());
  await scramLogin(c, 'frank', 'frank-pw');
  t.is(await wsBind(c, 'plain'), 'frank@localhost/plain');

  const proxied = await WsClient.connect(wsUrl(), { headers: { 'X-Forwarded-Proto': 'http', 'X-Forwarded-For': '198.51.100.7' } });
  t.teardown(() => proxied.close());
  const { features: none } = await openStream(proxied);
  t.deepEqual(mechanisms(none), [], none.toString());
  t.falsy(none.getChild('starttls', NS_TLS));
  // Authentication is refused as before TLS on TCP (RFC 6120 §5.3.1).
  proxied.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${Buffer.from('\0frank\0frank-pw').toString('base64')}</auth>`);
  const failure = await proxied.next();
  t.is(failure.name, 'failure');
  t.truthy(failure.getChild('encryption-required'), failure.toString());
});

/** An address of this machine that is not loopback, if it has one. */
function externalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}
const external = externalIPv4();
(external ? test : test.skip)('plain ws:// from another address: no SASL; from a trusted proxy that says the client came over TLS, SASL', async (t) => {
  // No trusted proxy: what the connection says of itself is not believed.
  const other = await startTestServer({ XMPP_BIND_HOST: '0.0.0.0', XMPP_HTTP_PORT: '0' });
  t.teardown(() => other.stop());
  const url = `ws://${external}:${other.httpPort}/xmpp-websocket`;
  const c = await WsClient.connect(url, { localAddress: external, headers: { 'X-Forwarded-Proto': 'https' } });
  t.teardown(() => c.close());
  const { features } = await openStream(c);
  t.deepEqual(mechanisms(features), [], `not loopback, not a trusted proxy: ${features.toString()}`);
  t.falsy(features.getChild('starttls', NS_TLS));

  const trusting = await startTestServer({ XMPP_BIND_HOST: '0.0.0.0', XMPP_HTTP_PORT: '0', XMPP_HTTP_TRUSTED_PROXIES: `${external}/32` });
  t.teardown(() => trusting.stop());
  const turl = `ws://${external}:${trusting.httpPort}/xmpp-websocket`;
  const plain = await WsClient.connect(turl, { localAddress: external });
  t.teardown(() => plain.close());
  t.deepEqual(mechanisms((await openStream(plain)).features), [], 'a trusted proxy that does not say TLS');
  const viaTls = await WsClient.connect(turl, { localAddress: external, headers: { 'X-Forwarded-Proto': 'https', 'X-Forwarded-For': '203.0.113.9' } });
  t.teardown(() => viaTls.close());
  t.true(mechanisms((await openStream(viaTls)).features).includes('SCRAM-SHA-256'));
});

test('@xmpp/client over wss:// logs in and exchanges messages with a TCP user', async (t) => {
  trustServer(server);
  const xmpp = client({ service: wssUrl(), domain: 'localhost', username: 'gina', password: 'gina-pw', resource: 'xmppjs', timeout: 15_000 });
  xmpp.on('error', () => {});
  t.teardown(() => xmpp.stop().catch(() => {}));
  const inbox = new Inbox(xmpp);
  const address = await within(xmpp.start(), 45_000, '@xmpp/client online over WebSocket');
  t.is(String(address), 'gina@localhost/xmppjs');
  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('x'));
  t.teardown(() => bob.c.destroy());
  await xmpp.send(xml('message', { to: bob.jid, type: 'chat' }, xml('body', {}, 'from @xmpp/client')));
  const got = await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'from @xmpp/client'), 10_000, 'bob receiving');
  t.is(got.attrs.from, 'gina@localhost/xmppjs');
  bob.c.send(`<message to='gina@localhost/xmppjs' type='chat'><body>to @xmpp/client</body></message>`);
  const back = await inbox.find((el) => el.name === 'message' && el.getChildText('body') === 'to @xmpp/client');
  t.is(back.attrs.from, bob.jid);
});

test('an open from another domain is host-unknown, as on TCP', async (t) => {
  const c = await WsClient.connect(wssUrl(), { ca: serverCa(server) });
  c.send(OPEN('elsewhere.example'));
  await c.next('open');
  const err = await c.find((el) => el.name === 'stream:error');
  t.truthy(err.getChild('host-unknown', NS_STREAMS_ERR), err.toString());
  await within(c.closed, 10_000, 'closed');
});

test('idle past XMPP_IDLE_TIMEOUT_MS: a silent WebSocket session gets connection-timeout; WebSocket pings keep one alive (RFC 7395 §3.8)', async (t) => {
  const idle = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_IDLE_TIMEOUT_MS: '1500' });
  t.teardown(() => idle.stop());
  for (const u of ['quiet', 'pinger']) await idle.addUser(u, `${u}-pw`);
  // The pinger's last stanza comes first: without its pings it would time out no later than the other.
  const pinger = await wsOnline(idle, 'pinger', 'pinger-pw', 'p');
  t.teardown(() => pinger.c.close());
  const pings = setInterval(() => pinger.c.ws.ping(), 300);
  t.teardown(() => clearInterval(pings));
  const quiet = await wsOnline(idle, 'quiet', 'quiet-pw', 'q');
  const err = await quiet.c.find((el) => el.name === 'stream:error', 15_000);
  t.truthy(err.getChild('connection-timeout', NS_STREAMS_ERR), err.toString());
  await within(quiet.c.closed, 10_000, 'the silent one closed');
  // Another silent one, logged in only now, times out too: by then the
  // pinger has sent no stanza for more than twice the bound, whatever the
  // phase of each worker's sweep.
  const later = await wsOnline(idle, 'quiet', 'quiet-pw', 'q2');
  await within(later.c.closed, 15_000, 'the second silent one closed');
  t.is(pinger.c.closeCode, undefined);
  pinger.c.send(`<iq xmlns='jabber:client' type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>`);
  t.is((await pinger.c.find((el) => el.attrs.id === 'alive')).attrs.type, 'result');
});
