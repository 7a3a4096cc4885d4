// SASL EXTERNAL for clients (XEP-0178, the seed's §6.2 rule 2): with
// XMPP_TLS_CA set, a client certificate is asked for (not required); one
// that validates against those anchors and names an account of the server
// as an XmppAddr may log in with EXTERNAL. A certificate from another CA,
// one naming no account here, or none at all: EXTERNAL is not offered.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import { intermediateCa, issue } from '../helpers/pki.ts';
import type { TestServer } from '../helpers/server.ts';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bind, secured, within } from '../helpers/protocol.ts';
import { WAIT } from '../helpers/im.ts';

const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const dir = mkdtempSync(join(tmpdir(), 'xmpp-ext-'));
let server: TestServer;

/** A CA (key and certificate files) in the temp directory. */
function ca(name: string): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { key, cert };
}

/** A client certificate signed by `by`, naming `jids` as XmppAddr (RFC 6120 §13.7.1.4): its PEM and key (and their files). */
function client(by: { key: string; cert: string }, name: string, jids: string[]): { cert: string; key: string; files: { cert: string; key: string } } {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `subjectAltName=${jids.map((j) => `otherName:1.3.6.1.5.5.7.8.5;UTF8:${j}`).join(',')}\n`);
  execFileSync('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', csr], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', by.cert, '-CAkey', by.key, '-CAcreateserial', '-days', '2', '-out', cert, '-extfile', ext], { stdio: 'ignore' });
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8'), files: { cert, key } };
}

const trusted = ca('trusted');
const other = ca('other');

test.before(async () => {
  server = await startTestServer({ XMPP_TLS_CA: trusted.cert });
  await server.addUser('carla', 'carla-pw');
  await server.addUser('dave', 'dave-pw');
});
test.after.always(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const mechanisms = (features: Element) => (features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism') ?? []).map((m) => m.getText());

test('a certificate of the trusted CA naming an account: EXTERNAL offered first, and the login binds that account', async (t) => {
  const { c, features } = await within(secured(server.c2sPort, client(trusted, 'carla', ['carla@localhost'])), WAIT, 'TLS with a certificate');
  t.teardown(() => c.destroy());
  t.is(mechanisms(features)[0], 'EXTERNAL');
  // No authorization identity: the certificate's one account ("=" is an empty initial response).
  await c.exchange(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>=</auth>`, /<success/);
  c.resetReader();
  c.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`);
  await c.waitFor(/<\/stream:features>/);
  const bound = await within(bind(c, 'cert'), WAIT, 'bind');
  t.is(bound.getChild('bind')?.getChildText('jid'), 'carla@localhost/cert');
});

test('an authorization identity the certificate does not name is invalid-authzid; one it names is accepted', async (t) => {
  const both = client(trusted, 'both', ['carla@localhost', 'dave@localhost']);
  const { c } = await within(secured(server.c2sPort, both), WAIT, 'TLS');
  t.teardown(() => c.destroy());
  // Two accounts named: it must say which.
  await c.exchange(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>=</auth>`, /<failure[^>]*><invalid-authzid/);
  await c.exchange(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>${Buffer.from('mallory@localhost').toString('base64')}</auth>`, /<failure[^>]*><invalid-authzid/);
  const { c: d } = await within(secured(server.c2sPort, both), WAIT, 'TLS again');
  t.teardown(() => d.destroy());
  const m = await d.exchange(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>${Buffer.from('dave@localhost').toString('base64')}</auth>`, /<success|<failure/);
  t.is(m[0], '<success');
});

test('no EXTERNAL without a certificate, with one from another CA, or with one naming an account that does not exist', async (t) => {
  for (const [what, identity] of [
    ['no certificate', undefined],
    ['another CA', client(other, 'stranger', ['carla@localhost'])],
  ] as const) {
    const { c, features } = await within(secured(server.c2sPort, identity), WAIT, what);
    c.destroy();
    t.false(mechanisms(features).includes('EXTERNAL'), what);
    t.true(mechanisms(features).includes('SCRAM-SHA-256'), `${what}: the other mechanisms stay`);
  }
  const { c } = await within(secured(server.c2sPort, client(trusted, 'ghost', ['ghost@localhost'])), WAIT, 'a certificate for no account');
  t.teardown(() => c.destroy());
  await c.exchange(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>=</auth>`, /<failure[^>]*><not-authorized/);
});

test('a certificate issued through an intermediate CA the client sends along chains up to the anchor: EXTERNAL', async (t) => {
  const mid = intermediateCa(dir, { cert: trusted.cert, key: trusted.key }, 'mid-ca');
  const leaf = issue(dir, mid, 'via-mid', { xmpp: ['dave@localhost'] });
  // The client presents its certificate followed by the intermediate.
  const identity = { cert: readFileSync(leaf.cert, 'utf8') + readFileSync(mid.cert, 'utf8'), key: readFileSync(leaf.key, 'utf8') };
  const { c, features } = await within(secured(server.c2sPort, identity), WAIT, 'TLS with a chain');
  t.teardown(() => c.destroy());
  t.is(mechanisms(features)[0], 'EXTERNAL');
  await c.exchange(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>=</auth>`, /<success/);
  // Without the intermediate, the leaf alone leads nowhere.
  const { c: d, features: f2 } = await within(secured(server.c2sPort, { cert: readFileSync(leaf.cert, 'utf8'), key: readFileSync(leaf.key, 'utf8') }), WAIT, 'TLS without the chain');
  d.destroy();
  t.false(mechanisms(f2).includes('EXTERNAL'));
});

test('slixmpp, a third-party client, logs in with EXTERNAL and its certificate', async (t) => {
  const id = client(trusted, 'slix', ['carla@localhost']);
  const script = fileURLToPath(new URL('../integration/peers/external_client.py', import.meta.url));
  const serverCa = join(server.config.dataDir, 'tls', 'localhost.crt');
  const proc = spawn('/usr/bin/python3', [script, '127.0.0.1', String(server.c2sPort), 'carla@localhost/slix', id.files.cert, id.files.key, serverCa], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => proc.kill('SIGKILL'));
  let out = '';
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const line = new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    proc.on('exit', (code) => reject(new Error(`slixmpp exited (${String(code)}) before a word: ${err}`)));
  });
  t.is(await within(line, WAIT * 2, 'the slixmpp client'), 'bound carla@localhost/slix');
});
