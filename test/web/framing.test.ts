// The pieces of the web listener that need no server: cutting the engine's
// output into RFC 7395 messages, which plain connections count as secure,
// what host-meta says, and the settings.
import test from 'ava';
import { BlockList } from 'node:net';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { frames } from '../../src/web/websocket.ts';
import { plainTrust, websocketEndpoints, boshEndpoints, hostMeta } from '../../src/web/http.ts';
import { loadConfig, ConfigError, trustedProxiesOf } from '../../src/config/index.ts';

const NS_STREAM = 'http://etherx.jabber.org/streams';

test('output is cut into one message per top-level element, each with the declarations it needs (RFC 7395 §3.3.3)', (t) => {
  const open = `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='x' from='localhost' version='1.0' xml:lang='en'/>`;
  const features = `<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>PLAIN</mechanism></mechanisms></stream:features>`;
  t.deepEqual(frames(open + features, 'jabber:client'), [open, `<stream:features xmlns:stream='${NS_STREAM}'><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>PLAIN</mechanism></mechanisms></stream:features>`]);
  // A stanza inherits the content namespace on TCP: here it is said.
  t.deepEqual(frames(`<message to="a@b" id="1"><body>x &lt; y</body></message>`, 'jabber:client'), [`<message xmlns='jabber:client' to="a@b" id="1"><body>x &lt; y</body></message>`]);
  // One that says its namespace is left alone; an attribute value that looks like a declaration does not count as one.
  t.deepEqual(frames(`<r xmlns='urn:xmpp:sm:3'/>`, 'jabber:client'), [`<r xmlns='urn:xmpp:sm:3'/>`]);
  t.deepEqual(frames(`<iq id=' xmlns=&apos;x&apos;' type='result'/>`, 'jabber:client'), [`<iq xmlns='jabber:client' id=' xmlns=&apos;x&apos;' type='result'/>`]);
  // An error and the end, as the engine writes them together.
  const parts = frames(`<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error><close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`, 'jabber:client');
  t.is(parts.length, 2);
  for (const p of parts) t.truthy((parseXml(p) as Element).name);
  t.is((parseXml(parts[0]) as Element).attrs['xmlns:stream'], NS_STREAM);
  // Nested elements of the same name, self-closing children, '>' in quoted values.
  t.deepEqual(frames(`<message><x><x/></x><y a='>'/></message><presence/>`, 'c'), [`<message xmlns='c'><x><x/></x><y a='>'/></message>`, `<presence xmlns='c'/>`]);
  t.deepEqual(frames('', 'c'), []);
});

test('plain connections: secure from loopback unless a proxy there says plain HTTP; from a trusted proxy only when it says TLS, its client named', (t) => {
  const none = new BlockList();
  t.deepEqual(plainTrust('127.0.0.1', {}, none), { secure: true, client: '127.0.0.1' });
  t.deepEqual(plainTrust('::1', {}, none), { secure: true, client: '::1' });
  t.deepEqual(plainTrust('::ffff:127.0.0.2', {}, none).secure, true);
  t.deepEqual(plainTrust('127.0.0.1', { 'x-forwarded-proto': 'http' }, none).secure, false);
  t.deepEqual(plainTrust('127.0.0.1', { 'x-forwarded-proto': 'https' }, none).secure, true);
  t.deepEqual(plainTrust('203.0.113.5', {}, none), { secure: false, client: '203.0.113.5' });
  // Headers from anyone else are not believed.
  t.deepEqual(plainTrust('203.0.113.5', { 'x-forwarded-proto': 'https', 'x-forwarded-for': '198.51.100.1' }, none), { secure: false, client: '203.0.113.5' });
  t.deepEqual(plainTrust(undefined, {}, none).secure, false);
  const proxies = trustedProxiesOf({ httpTrustedProxies: '10.0.0.0/8, fd00::/8,192.0.2.1' });
  t.deepEqual(plainTrust('10.1.2.3', { 'x-forwarded-proto': 'https', 'x-forwarded-for': '198.51.100.1, 203.0.113.9' }, proxies), { secure: true, client: '203.0.113.9' });
  t.deepEqual(plainTrust('::ffff:10.1.2.3', { 'x-forwarded-proto': 'https' }, proxies).secure, true);
  t.deepEqual(plainTrust('fd00::1', { 'x-forwarded-proto': 'wss' }, proxies).secure, true);
  t.deepEqual(plainTrust('192.0.2.1', { 'x-forwarded-proto': 'http' }, proxies), { secure: false, client: '192.0.2.1' });
  t.deepEqual(plainTrust('192.0.2.1', {}, proxies).secure, false);
  // A forwarded address that is no address is not taken.
  t.deepEqual(plainTrust('192.0.2.1', { 'x-forwarded-proto': 'https', 'x-forwarded-for': 'junk' }, proxies).client, '192.0.2.1');
  t.deepEqual(plainTrust('192.0.2.2', { 'x-forwarded-proto': 'https' }, proxies).secure, false);
});

test('host-meta lists the TLS endpoints, or the public URL behind a proxy; the plain ones only when there is no other', (t) => {
  const config = { domain: 'chat.example', httpPublicUrl: '' };
  t.deepEqual(websocketEndpoints(config, { http: 5280, https: 5443 }), ['wss://chat.example:5443/xmpp-websocket']);
  t.deepEqual(websocketEndpoints(config, { http: 5280 }), ['ws://chat.example:5280/xmpp-websocket']);
  t.deepEqual(websocketEndpoints({ ...config, httpPublicUrl: 'https://chat.example/xmpp/' }, { http: 5280, https: 5443 }), ['wss://chat.example/xmpp/xmpp-websocket']);
  t.deepEqual(boshEndpoints(config, { http: 5280, https: 5443 }), ['https://chat.example:5443/http-bind']);
  t.deepEqual(boshEndpoints(config, { http: 5280 }), ['http://chat.example:5280/http-bind']);
  t.deepEqual(boshEndpoints({ ...config, httpPublicUrl: 'https://chat.example/xmpp/' }, { https: 5443 }), ['https://chat.example/xmpp/http-bind']);
  t.deepEqual(boshEndpoints(config, {}), []);
  const { xml, json } = hostMeta(['wss://chat.example:5443/xmpp-websocket'], ['https://chat.example:5443/http-bind']);
  const doc = parseXml(xml) as Element;
  t.deepEqual(doc.getChildren('Link').map((l) => [l.attrs.rel, l.attrs.href]), [
    ['urn:xmpp:alt-connections:websocket', 'wss://chat.example:5443/xmpp-websocket'],
    ['urn:xmpp:alt-connections:xbosh', 'https://chat.example:5443/http-bind'],
  ]);
  t.deepEqual(JSON.parse(json), {
    links: [
      { rel: 'urn:xmpp:alt-connections:websocket', href: 'wss://chat.example:5443/xmpp-websocket' },
      { rel: 'urn:xmpp:alt-connections:xbosh', href: 'https://chat.example:5443/http-bind' },
    ],
  });
});

test('the web settings are checked at start', (t) => {
  const c = loadConfig({ XMPP_HTTP_PORT: '5280', XMPP_HTTPS_PORT: '0', XMPP_HTTP_TRUSTED_PROXIES: '10.0.0.1, fd00::/8', XMPP_HTTP_PUBLIC_URL: 'https://chat.example/' });
  t.is(c.httpPort, '5280');
  t.is(c.httpsPort, '0');
  t.is(loadConfig({}).httpPort, '', 'off by default');
  t.is(loadConfig({}).httpsPort, '', 'off by default');
  t.throws(() => loadConfig({ XMPP_HTTPS_PORT: '70000' }), { instanceOf: ConfigError, message: /XMPP_HTTPS_PORT/ });
  t.throws(() => loadConfig({ XMPP_HTTP_TRUSTED_PROXIES: '10.0.0.0/33' }), { instanceOf: ConfigError, message: /XMPP_HTTP_TRUSTED_PROXIES/ });
  t.throws(() => loadConfig({ XMPP_HTTP_TRUSTED_PROXIES: 'proxy.example' }), { instanceOf: ConfigError, message: /XMPP_HTTP_TRUSTED_PROXIES/ });
  t.throws(() => loadConfig({ XMPP_HTTP_PUBLIC_URL: 'http://chat.example/' }), { instanceOf: ConfigError, message: /XMPP_HTTP_PUBLIC_URL/ });
});
