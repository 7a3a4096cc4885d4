// The cluster's one TLS certificate: every node serves the same one, because
// a client behind the load balancer may reach any of them. Creates a
// self-signed certificate (EC P-256, 10 years, names <domain> and *.<domain>)
// unless both files exist already; an existing pair is never touched, so a
// real certificate can be put in their place.
//
//   node cluster/certs.ts     reads XMPP_DOMAIN, XMPP_TLS_CERT, XMPP_TLS_KEY
//
// The compose "certs" service runs it once into the shared volume; the
// launcher calls ensureCertificate() directly.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export interface CertificateFiles {
  cert: string;
  key: string;
  domain: string;
}

/** Creates the pair if missing; returns true when it created it. */
export function ensureCertificate({ cert, key, domain }: CertificateFiles): boolean {
  if (existsSync(cert) && existsSync(key)) return false;
  if (existsSync(cert) !== existsSync(key)) throw new Error(`only one of ${cert} and ${key} exists: remove it or provide both`);
  if (!/^[a-z0-9.-]+$/i.test(domain)) throw new Error(`not a domain name: ${JSON.stringify(domain)}`);
  mkdirSync(dirname(cert), { recursive: true });
  mkdirSync(dirname(key), { recursive: true });
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650',
    '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain},DNS:*.${domain}`,
    '-keyout', key, '-out', cert,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return true;
}

if (import.meta.main) {
  const { XMPP_DOMAIN: domain = 'localhost', XMPP_TLS_CERT: cert, XMPP_TLS_KEY: key } = process.env;
  if (!cert || !key) {
    console.error('certs: XMPP_TLS_CERT and XMPP_TLS_KEY must name the files');
    process.exit(78);
  }
  try {
    console.log(ensureCertificate({ cert, key, domain }) ? `certs: created ${cert} for ${domain}` : `certs: ${cert} exists, kept`);
  } catch (err) {
    console.error(`certs: ${(err as Error).message}`);
    process.exit(1);
  }
}
