// Test certificates made with the openssl CLI in a temp directory: a CA,
// certificates it issues (server names as DNS-IDs, accounts or domains as
// XmppAddr), and self-signed ones.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertFiles {
  /** Paths of the PEM certificate and its private key. */
  cert: string;
  key: string;
}

const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A CA (key and certificate files) in `dir`. */
export function testCa(dir: string, name: string): CertFiles {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  execFileSync('openssl', ['req', '-x509', ...newKey, '-days', '2', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { key, cert };
}

/** A certificate issued by `ca` with these subjectAltNames: DNS names and XmppAddr names (RFC 6120 §13.7.1.4). */
export function issue(dir: string, ca: CertFiles, name: string, san: { dns?: string[]; xmpp?: string[] }): CertFiles {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  const names = [...(san.dns ?? []).map((d) => `DNS:${d}`), ...(san.xmpp ?? []).map((j) => `otherName:1.3.6.1.5.5.7.8.5;UTF8:${j}`)];
  writeFileSync(ext, `subjectAltName=${names.join(',')}\n`);
  execFileSync('openssl', ['req', ...newKey, '-subj', `/CN=${name}`, '-keyout', key, '-out', csr], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-out', cert, '-extfile', ext], { stdio: 'ignore' });
  return { key, cert };
}

/** A self-signed certificate for a domain (what a server generates when none is configured). */
export function selfSigned(dir: string, domain: string): CertFiles {
  const key = join(dir, `${domain}-self.key`);
  const cert = join(dir, `${domain}-self.pem`);
  execFileSync('openssl', ['req', '-x509', ...newKey, '-days', '2', '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain}`, '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { key, cert };
}

/** An intermediate CA issued by `ca` (basicConstraints CA:TRUE), to issue certificates in turn. */
export function intermediateCa(dir: string, ca: CertFiles, name: string): CertFiles {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
  execFileSync('openssl', ['req', ...newKey, '-subj', `/CN=${name}`, '-keyout', key, '-out', csr], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-out', cert, '-extfile', ext], { stdio: 'ignore' });
  return { key, cert };
}
