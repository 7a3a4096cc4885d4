// The receiving side of a server-to-server stream, spoken to byte by byte
// as a peer server would (RFC 6120 §5.4 flow, XEP-0178, XEP-0220): TLS
// first, SASL EXTERNAL offered only to a certificate valid for the domain
// the header claims, dialback refused to an unverified certificate while
// XMPP_S2S_SECURE_AUTH is on, verification requests answered from the
// shared secret, and the addressing rules for stanzas (invalid-from,
// host-unknown, not-authorized before authentication).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { RawClient } from '../helpers/raw.ts';
import { expectStreamError, within } from '../helpers/protocol.ts';
import { testCa, issue, selfSigned } from '../helpers/pki.ts';
import type { CertFiles } from '../helpers/pki.ts';
import { federation } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { dialbackKey } from '../../src/s2s/dialback.ts';
import { WAIT, expect, newUser } from '../helpers/im.ts';

const SECRET = 'test-dialback-secret';
const pki = mkdtempSync(join(tmpdir(), 'xmpp-s2s-in-'));
const ca = testCa(pki, 'in-ca');
const peerCert = issue(pki, ca, 'peer.example', { dns: ['peer.example'] });
const untrusted = selfSigned(pki, 'peer.example');
let a: Federated;
let stop: () => Promise<void>;

test.before(async () => {
  const f = await federation([{ domain: 'a.example', cert: issue(pki, ca, 'a.example', { dns: ['a.example'] }) }], { env: { XMPP_TLS_CA: ca.cert, XMPP_S2S_SECRET: SECRET } });
  [a] = f.servers;
  stop = f.stop;
});
test.after.always(async () => {
  await stop?.();
  rmSync(pki, { recursive: true, force: true });
});

const header = (from: string, to = 'a.example') =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='${from}' to='${to}' version='1.0'>`;

/** The server's header and features, after one of ours. */
async function opened(c: RawClient, from: string, to?: string): Promise<{ attrs: Record<string, string>; features: Element }> {
  c.send(header(from, to));
  let it = await within(c.next(), WAIT, 'stream header');
  if (it.kind === 'decl') it = await c.next();
  if (it.kind !== 'open') throw new Error(`expected the stream header, got ${it.raw}`);
  const features = await within(c.nextEl('stream:features'), WAIT, 'stream features');
  return { attrs: it.attrs, features };
}

/** Connected to a.example's s2s port, STARTTLS done (with `cert` presented, if any): the secured stream's header and features. */
async function securedAs(t: ExecutionContext, from: string, cert?: CertFiles): Promise<{ c: RawClient; attrs: Record<string, string>; features: Element }> {
  const c = await RawClient.connect(5269, { host: a.host });
  t.teardown(() => c.destroy());
  const first = await opened(c, from);
  t.truthy(first.features.getChild('starttls')?.getChild('required'), 'STARTTLS is required');
  t.is(first.features.getChild('mechanisms'), undefined, 'no SASL before TLS');
  c.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
  await within(c.nextEl('proceed'), WAIT, '<proceed/>');
  await c.starttls(cert ? { cert: readFileSync(cert.cert, 'utf8'), key: readFileSync(cert.key, 'utf8') } : undefined);
  return { c, ...(await opened(c, from)) };
}

const mechanisms = (f: Element) => f.getChild('mechanisms')?.getChildren('mechanism').map((m) => m.getText()) ?? [];

test('the header answers with our domain, an id and the dialback namespace; TLS is required before anything else', async (t) => {
  const c = await RawClient.connect(5269, { host: a.host });
  t.teardown(() => c.destroy());
  const { attrs } = await opened(c, 'peer.example');
  t.is(attrs.from, 'a.example');
  t.is(attrs.to, 'peer.example');
  t.is(attrs.xmlns, 'jabber:server');
  t.is(attrs['xmlns:db'], 'jabber:server:dialback');
  t.truthy(attrs.id);
  c.send(`<db:result from='peer.example' to='a.example'>abc</db:result>`);
  await expectStreamError(t, c, 'policy-violation');
});

test('a stanza before authentication is not-authorized', async (t) => {
  const { c } = await securedAs(t, 'peer.example');
  c.send(`<message from='x@peer.example' to='y@a.example'><body>early</body></message>`);
  await expectStreamError(t, c, 'not-authorized');
});

test('a header to a domain not served here is host-unknown', async (t) => {
  const c = await RawClient.connect(5269, { host: a.host });
  t.teardown(() => c.destroy());
  c.send(header('peer.example', 'elsewhere.example'));
  await expectStreamError(t, c, 'host-unknown', { header: true, ns: 'jabber:server' });
});

test('a certificate valid for the claimed domain gets EXTERNAL; then stanzas from that domain are routed, others are invalid-from', async (t) => {
  const bob = await newUser(t, a.server, 'bob');
  const { c, features } = await securedAs(t, 'peer.example', peerCert);
  t.deepEqual(mechanisms(features), ['EXTERNAL']);
  t.truthy(features.getChild('dialback', 'urn:xmpp:features:dialback'));
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>${Buffer.from('peer.example').toString('base64')}</auth>`);
  t.is((await within(c.nextEl(), WAIT, 'SASL outcome')).name, 'success');
  const after = await opened(c, 'peer.example');
  t.deepEqual(mechanisms(after.features), [], 'nothing more to negotiate');
  c.send(`<message from='carol@peer.example/home' to='${bob.jid}' type='chat'><body>from afar</body></message>`);
  const got = await expect(bob, 'the message from peer.example', (el) => el.getChildText('body') === 'from afar');
  t.is(got.attrs.from, 'carol@peer.example/home');
  // A stanza from a domain the peer did not authenticate.
  c.send(`<message from='mallory@evil.example' to='${bob.jid}'><body>spoofed</body></message>`);
  await expectStreamError(t, c, 'invalid-from');
});

test('after authentication, a stanza to a domain not served here is host-unknown', async (t) => {
  const { c } = await securedAs(t, 'peer.example', peerCert);
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>`);
  t.is((await within(c.nextEl(), WAIT, 'SASL outcome')).name, 'success');
  await opened(c, 'peer.example');
  c.send(`<message from='carol@peer.example' to='someone@elsewhere.example'><body>x</body></message>`);
  await expectStreamError(t, c, 'host-unknown');
});

test('no EXTERNAL for a certificate that is not valid for the claimed domain, or not trusted; dialback is refused with secure auth on', async (t) => {
  // Valid for peer.example, but the header claims other.example.
  const wrongName = await securedAs(t, 'other.example', peerCert);
  t.deepEqual(mechanisms(wrongName.features), []);
  wrongName.c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>`);
  t.is((await within(wrongName.c.nextEl(), WAIT, 'SASL outcome')).name, 'failure');
  // Self-signed: not offered, and dialback for it is refused (XMPP_S2S_SECURE_AUTH defaults to true).
  const self = await securedAs(t, 'peer.example', untrusted);
  t.deepEqual(mechanisms(self.features), []);
  self.c.send(`<db:result from='peer.example' to='a.example'>${'0'.repeat(64)}</db:result>`);
  const r = await within(self.c.nextEl('db:result'), WAIT, 'dialback answer');
  t.is(r.attrs.type, 'error');
  t.truthy(r.getChild('error')?.getChild('not-authorized'));
  // No certificate at all: the same.
  const none = await securedAs(t, 'peer.example');
  t.deepEqual(mechanisms(none.features), []);
});

test('dialback over a connection whose certificate proves the domain is valid at once, and several domains may share it', async (t) => {
  const both = issue(pki, ca, 'multi', { dns: ['one.example', 'two.example'] });
  const { c } = await securedAs(t, 'one.example', both);
  c.send(`<db:result from='one.example' to='a.example'>${'1'.repeat(64)}</db:result>`);
  t.is((await within(c.nextEl('db:result'), WAIT, 'dialback answer')).attrs.type, 'valid');
  c.send(`<db:result from='two.example' to='a.example'>${'2'.repeat(64)}</db:result>`);
  const second = await within(c.nextEl('db:result'), WAIT, 'dialback answer');
  t.is(second.attrs.type, 'valid');
  t.is(second.attrs.from, 'a.example');
  t.is(second.attrs.to, 'two.example');
  // Our own domain, claimed by a peer: refused.
  c.send(`<db:result from='a.example' to='a.example'>${'4'.repeat(64)}</db:result>`);
  const own = await within(c.nextEl('db:result'), WAIT, 'dialback answer for our own domain');
  t.is(own.attrs.type, 'error');
  t.truthy(own.getChild('error')?.getChild('not-authorized'));
    // A domain on this server that is not ours: an error, not a verdict (XEP-0220 §2.4).
  c.send(`<db:result from='one.example' to='nowhere.example'>${'3'.repeat(64)}</db:result>`);
  const err = await within(c.nextEl('db:result'), WAIT, 'dialback error');
  t.is(err.attrs.type, 'error');
  t.truthy(err.getChild('error')?.getChild('item-not-found'));
});

test('verification requests are answered from the shared secret (XEP-0185): valid for our key, invalid for another', async (t) => {
  const { c } = await securedAs(t, 'peer.example');
  const key = dialbackKey(SECRET, 'peer.example', 'a.example', 'stream-1');
  c.send(`<db:verify from='peer.example' to='a.example' id='stream-1'>${key}</db:verify>`);
  const ok = await within(c.nextEl('db:verify'), WAIT, 'verify answer');
  t.like(ok.attrs, { type: 'valid', from: 'a.example', to: 'peer.example', id: 'stream-1' });
  c.send(`<db:verify from='peer.example' to='a.example' id='stream-2'>${key}</db:verify>`);
  t.is((await within(c.nextEl('db:verify'), WAIT, 'verify answer')).attrs.type, 'invalid');
  c.send(`<db:verify from='peer.example' to='nowhere.example' id='stream-1'>${key}</db:verify>`);
  const err = await within(c.nextEl('db:verify'), WAIT, 'verify error');
  t.is(err.attrs.type, 'error');
});

test('a dialback key that is not plain printable text is refused (it would be written into our db:verify)', async (t) => {
  const { c } = await securedAs(t, 'peer.example', peerCert);
  c.send(`<db:result from='peer.example' to='a.example'>abc&lt;/db:verify&gt;&lt;message/&gt;</db:result>`);
  const r = await within(c.nextEl('db:result'), WAIT, 'dialback answer');
  t.is(r.attrs.type, 'error');
  t.truthy(r.getChild('error')?.getChild('bad-request'));
  c.send(`<db:result from='peer.example' to='a.example'>${'k'.repeat(300)}</db:result>`);
  t.truthy((await within(c.nextEl('db:result'), WAIT, 'dialback answer')).getChild('error')?.getChild('bad-request'), 'nor one too long');
});

test('a stanza between servers without a from is improper-addressing', async (t) => {
  const { c } = await securedAs(t, 'peer.example', peerCert);
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>`);
  t.is((await within(c.nextEl(), WAIT, 'SASL outcome')).name, 'success');
  await opened(c, 'peer.example');
  c.send(`<message to='someone@a.example'><body>who am I?</body></message>`);
  await expectStreamError(t, c, 'improper-addressing');
});
