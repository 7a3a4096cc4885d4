// Transcripts: the client-to-server STARTTLS example of RFC 3920 §5.3
// (draft-ietf-xmpp-core-22, in /work/shared/seeds) replayed step by step and
// carried on through SASL and bind (RFC 6120 §9.1), and the SASL ANONYMOUS
// flow with the three resource binding scenarios of XEP-0175.
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header, plainAuth } from '../helpers/raw.ts';
import {
  NS_BIND, NS_CLIENT, NS_SASL, NS_SESSION, NS_STREAM, NS_TLS, PROCEED, STARTTLS,
  bind, childEls, online, ping, readStreamStart, secured, uid, within,
} from '../helpers/protocol.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_ANONYMOUS: 'true', XMPP_CONFLICT_POLICY: 'assign' });
  await server.addUser('juliet', 'juliet-pw');
  await server.addUser('romeo', 'romeo-pw');
});
test.after.always(async () => {
  await server?.stop();
});

const SUCCESS = `<success xmlns='${NS_SASL}'/>`;

/** Checks a response stream header (RFC 6120 §4.7): from, a fresh id, version, namespaces. */
function checkHeader(t: import('ava').ExecutionContext, attrs: Record<string, string>, raw: string): string {
  t.true(raw.startsWith('<stream:stream '), `prefixed stream element: ${raw}`);
  t.is(attrs.from, 'localhost');
  t.is(attrs.version, '1.0');
  t.is(attrs.xmlns, NS_CLIENT);
  t.is(attrs['xmlns:stream'], NS_STREAM);
  t.regex(attrs.id ?? '', /^\S{8,}$/, 'a stream id that is not trivially guessable (§4.7.3)');
  t.false('to' in attrs, 'no to: the initial header had no from');
  return attrs.id;
}

test('RFC 3920 §5.3 C2S STARTTLS example, then SASL PLAIN and bind', async (t) => {
  const c = await RawClient.connect(server.c2sPort);
  // Step 1: client initiates the stream.
  c.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`);
  // Step 2: the server responds with a stream header.
  let it = await c.next();
  if (it.kind === 'decl') {
    t.regex(it.raw, /^<\?xml version=(['"])1\.0\1( encoding=(['"])UTF-8\3)?\?>$/i);
    it = await c.next();
  }
  if (it.kind !== 'open') return t.fail(`expected the stream header, got ${it.raw}`);
  const id1 = checkHeader(t, it.attrs, it.raw);
  // Step 3: STARTTLS, required; nothing that depends on TLS yet (RFC 6120 §5.3.1).
  const f1 = await c.nextEl('stream:features');
  const starttls = f1.getChild('starttls', NS_TLS);
  t.truthy(starttls, `<starttls/> offered: ${f1.toString()}`);
  t.truthy(starttls?.getChild('required'), 'TLS is mandatory-to-negotiate');
  t.is(f1.getChild('mechanisms', NS_SASL), undefined, 'no SASL mechanisms before TLS');
  t.deepEqual(childEls(f1).map((e) => e.name), ['starttls'], 'only STARTTLS is advertised');
  // Step 4 and 5: STARTTLS command, proceed, byte for byte, and nothing after it in plaintext.
  c.send(STARTTLS);
  it = await c.next();
  t.is(it.raw, PROCEED);
  t.is(c.buffer.slice(c.buffer.indexOf(PROCEED) + PROCEED.length), '', 'no plaintext after <proceed/>');
  // Step 6: TLS over the same TCP connection.
  await c.starttls();
  t.regex(c.tlsProtocol ?? '', /^TLSv1\.[23]$/);
  // Step 7: the client restarts the stream over TLS.
  c.send(header());
  // Step 8: a new header with a new id, and the SASL mechanisms.
  const s2 = await readStreamStart(c);
  const id2 = checkHeader(t, s2.attrs, s2.raw);
  t.not(id2, id1, 'a new stream id after the restart (RFC 6120 §4.7.3)');
  t.is(s2.features.getChild('starttls', NS_TLS), undefined, 'STARTTLS is not offered again');
  const mechs = s2.features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];
  for (const m of ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS']) t.true(mechs.includes(m), `${m} offered over TLS: ${mechs.join(' ')}`);
  // Step 9: SASL (RFC 6120 §6.4), PLAIN with an initial response; <success/> byte for byte.
  c.send(plainAuth('juliet', 'juliet-pw'));
  it = await c.next();
  t.is(it.raw, SUCCESS);
  // The stream restart after SASL (§6.4.6): yet another id; bind and the optional legacy session.
  c.send(header());
  const s3 = await readStreamStart(c);
  const id3 = checkHeader(t, s3.attrs, s3.raw);
  t.not(id3, id2);
  t.truthy(s3.features.getChild('bind', NS_BIND), `bind offered: ${s3.features.toString()}`);
  t.is(s3.features.getChild('mechanisms', NS_SASL), undefined, 'no mechanisms once authenticated');
  // Resource binding (RFC 6120 §7.4, §9.1.3).
  c.send(`<iq id='tn281v37' type='set'><bind xmlns='${NS_BIND}'><resource>balcony</resource></bind></iq>`);
  const r = await c.nextEl('iq');
  t.is(r.attrs.type, 'result');
  t.is(r.attrs.id, 'tn281v37');
  t.is(r.getChild('bind', NS_BIND)?.getChildText('jid'), 'juliet@localhost/balcony');
  // The stream is usable, and closing it is answered by the closing tag and a close (§4.4).
  const pong = await ping(c);
  t.is(pong.attrs.type, 'result');
  c.mark();
  c.send('</stream:stream>');
  it = await within(c.next(), 5000, 'closing tag');
  t.is(it.raw, '</stream:stream>');
  await within(c.closed, 1500, 'connection close');
});

test("RFC 6120 §4.7.2, §9.1.1: a header with from='juliet@localhost' gets a response header with to='juliet@localhost'", async (t) => {
  const c = await RawClient.connect(server.c2sPort);
  c.send(`<?xml version='1.0'?><stream:stream from='juliet@localhost' to='localhost' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`);
  const { attrs } = await readStreamStart(c);
  t.is(attrs.from, 'localhost');
  t.is(attrs.to, 'juliet@localhost', 'the response header echoes the initiating entity\'s from as to');
  c.destroy();
});

test('the features after SASL: bind, and session as optional (RFC 6121 Appendix E)', async (t) => {
  const { c } = await secured(server.c2sPort);
  c.send(plainAuth('romeo', 'romeo-pw'));
  t.is((await c.next()).raw, SUCCESS);
  c.send(header());
  const { features } = await readStreamStart(c);
  t.truthy(features.getChild('bind', NS_BIND));
  const session = features.getChild('session', NS_SESSION);
  t.truthy(session, `session feature: ${features.toString()}`);
  t.truthy(session?.getChild('optional'), 'session establishment is optional');
  c.destroy();
});

/** XEP-0175 steps 1–7 (after TLS): ANONYMOUS, no challenge, immediate <success/>, restart, bind required. */
async function anonymous(t: import('ava').ExecutionContext, trace?: string): Promise<RawClient> {
  const { c, features } = await secured(server.c2sPort);
  const mechs = features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];
  t.true(mechs.includes('ANONYMOUS'), `ANONYMOUS offered: ${mechs.join(' ')}`);
  c.send(trace === undefined
    ? `<auth xmlns='${NS_SASL}' mechanism='ANONYMOUS'/>`
    : `<auth xmlns='${NS_SASL}' mechanism='ANONYMOUS'>${Buffer.from(trace).toString('base64')}</auth>`);
  const it = await c.next();
  t.is(it.raw, SUCCESS, 'no challenge: immediate success');
  c.send(header());
  const { features: f2 } = await readStreamStart(c);
  t.truthy(f2.getChild('bind', NS_BIND));
  return c;
}

const bareOf = (jid: string) => jid.split('/')[0];

test('XEP-0175 scenario 1: ANONYMOUS, the client names its resource and the server accepts it', async (t) => {
  const a = await anonymous(t);
  const b = await anonymous(t, 'sirhc@example.com');
  const ra = await bind(a, 'someresource');
  const rb = await bind(b, 'someresource');
  const ja = ra.getChild('bind', NS_BIND)?.getChildText('jid') ?? '';
  const jb = rb.getChild('bind', NS_BIND)?.getChildText('jid') ?? '';
  t.regex(ja, /^[^@/]+@localhost\/someresource$/, 'a full JID with the requested resource');
  t.regex(jb, /^[^@/]+@localhost\/someresource$/);
  t.not(bareOf(ja), bareOf(jb), 'each anonymous session has a unique bare JID');
  t.false(['juliet', 'romeo'].includes(ja.split('@')[0]), 'not an existing account');
  // The server addresses the session by that JID.
  const pong = await ping(a);
  t.is(pong.attrs.type, 'result');
  t.is(pong.attrs.to, ja);
  a.destroy();
  b.destroy();
});

test('XEP-0175 scenario 2: the server overrules a requested resource already in use (policy assign)', async (t) => {
  const { c: first, jid: j1 } = await online(server.c2sPort, 'romeo', 'romeo-pw', 'orchard');
  t.is(j1, 'romeo@localhost/orchard');
  const second = (await secured(server.c2sPort)).c;
  second.send(plainAuth('romeo', 'romeo-pw'));
  t.is((await second.next()).raw, SUCCESS);
  second.send(header());
  await readStreamStart(second);
  const id = uid('bind');
  second.send(`<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'><resource>orchard</resource></bind></iq>`);
  const r = await second.nextEl('iq');
  t.is(r.attrs.type, 'result');
  t.is(r.attrs.id, id);
  const j2 = r.getChild('bind', NS_BIND)?.getChildText('jid') ?? '';
  t.regex(j2, /^romeo@localhost\/.+$/);
  t.not(j2, 'romeo@localhost/orchard', 'the server assigned another resource');
  // Both sessions live on.
  t.is((await ping(first)).attrs.type, 'result');
  t.is((await ping(second)).attrs.to, j2);
  first.destroy();
  second.destroy();
});

test('XEP-0175 scenario 3: ANONYMOUS with an empty bind, the server assigns the resource', async (t) => {
  const c = await anonymous(t);
  const id = uid('bind');
  c.send(`<iq type='set' id='${id}'><bind xmlns='${NS_BIND}'/></iq>`);
  const r = await c.nextEl('iq');
  t.is(r.attrs.type, 'result');
  t.is(r.attrs.id, id);
  const jid = r.getChild('bind', NS_BIND)?.getChildText('jid') ?? '';
  t.regex(jid, /^[^@/]+@localhost\/[^/]+$/, `a full JID: ${jid}`);
  c.destroy();
});

test('XEP-0175: many anonymous sessions, all bare JIDs distinct', async (t) => {
  const clients = await Promise.all(Array.from({ length: 5 }, () => anonymous(t)));
  const jids = await Promise.all(clients.map(async (c) => (await bind(c)).getChild('bind', NS_BIND)?.getChildText('jid') ?? ''));
  t.is(new Set(jids.map(bareOf)).size, jids.length, jids.join(' '));
  for (const c of clients) c.destroy();
});
