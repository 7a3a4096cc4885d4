// Whether a certificate stands for a server's domain (RFC 6120 §13.7.2.1,
// RFC 6125 §6), on certificates made by openssl for the purpose.
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validFor } from '../../src/tls/trust.ts';

const dir = mkdtempSync(join(tmpdir(), 'xmpp-identity-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

/** A self-signed certificate with this subject and these subjectAltName entries (openssl syntax). */
function cert(name: string, subject: string, san?: string): X509Certificate {
  const key = join(dir, `${name}.key`);
  const out = join(dir, `${name}.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', subject, ...(san ? ['-addext', `subjectAltName=${san}`] : []), '-keyout', key, '-out', out], { stdio: 'ignore' });
  return new X509Certificate(readFileSync(out));
}

test('DNS-ID: the exact name, and a wildcard only for one whole leftmost label', (t) => {
  const c = cert('dns', '/CN=ignored.example', 'DNS:exact.example,DNS:*.wild.example');
  t.true(validFor(c, 'exact.example'));
  t.true(validFor(c, 'EXACT.example'), 'names compare without case');
  t.true(validFor(c, 'a.wild.example'));
  t.false(validFor(c, 'wild.example'), 'a wildcard needs a label');
  t.false(validFor(c, 'a.b.wild.example'), 'a wildcard is one label');
  t.false(validFor(c, 'ignored.example'), 'the CN does not count when there are DNS names');
  t.false(validFor(c, 'other.example'));
});

test('SRV-ID (_xmpp-server, _xmpps-server) and XmppAddr name the domain too; the CN only without subjectAltName DNS names', (t) => {
  const c = cert('srv', '/CN=x', 'otherName:1.3.6.1.5.5.7.8.7;IA5STRING:_xmpp-server.srv.example,otherName:1.3.6.1.5.5.7.8.7;IA5STRING:_xmpps-server.tls.example,otherName:1.3.6.1.5.5.7.8.5;UTF8:addr.example');
  t.true(validFor(c, 'srv.example'));
  t.true(validFor(c, 'tls.example'));
  t.true(validFor(c, 'addr.example'));
  t.false(validFor(c, 'x'));
  // An SRV-ID of another service is not one of ours.
  const imap = cert('imap', '/CN=y', 'otherName:1.3.6.1.5.5.7.8.7;IA5STRING:_imap.mail.example');
  t.false(validFor(imap, 'mail.example'));
  t.true(validFor(cert('cn', '/CN=legacy.example'), 'legacy.example'), 'an old certificate with the name only in its CN');
});

test('a domain that is an IP address is matched against iPAddress names', (t) => {
  const c = cert('ip', '/CN=x', 'IP:127.0.0.7,IP:::1');
  t.true(validFor(c, '127.0.0.7'));
  t.true(validFor(c, '[::1]'));
  t.false(validFor(c, '127.0.0.8'));
});

test('an internationalised domain matches the A-label form of DNS names (RFC 6125 §6.2.1)', (t) => {
  const c = cert('idn', '/CN=x', 'DNS:xn--bcher-kva.example,DNS:*.xn--caf-dma.example');
  t.true(validFor(c, 'bücher.example'));
  t.true(validFor(c, 'xn--bcher-kva.example'));
  t.true(validFor(c, 'menu.café.example'));
  t.false(validFor(c, 'bucher.example'));
});
