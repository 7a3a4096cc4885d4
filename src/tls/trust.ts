// Whether a peer's certificate is to be trusted, and for which names. A
// TLS socket made around an accepted connection does not verify its peer
// itself, and a peer server's certificate is judged for the domain it
// claims later in the stream (RFC 6120 §13.7.2), so the chain and the
// identity are checked here, after the handshake, the same way for
// incoming and outgoing streams, clients and servers.
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import type { PeerCertificate, DetailedPeerCertificate, TLSSocket } from 'node:tls';

/** PEM text holding any number of certificates, as X509Certificate objects. */
export function pemCertificates(pem: string): X509Certificate[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => new X509Certificate(m[0]));
}

let system: X509Certificate[] | undefined;
/** The system's trust store (Node's bundled roots, or the OpenSSL store with --use-openssl-ca), parsed once per thread. */
export function systemAnchors(): X509Certificate[] {
  system ??= tls.rootCertificates.flatMap((pem) => {
    try {
      return [new X509Certificate(pem)];
    } catch {
      return [];
    }
  });
  return system;
}

/** The most intermediates a chain may hold. */
const MAX_DEPTH = 8;

const current = (c: X509Certificate, now: number) => now >= Date.parse(c.validFrom) && now <= Date.parse(c.validTo);

/**
 * Whether the peer's certificate chains up to one of the anchors: each
 * certificate, the leaf and the intermediates the peer sent, within its
 * validity period and signed by the next, the last by an anchor. The peer
 * certificate comes from TLSSocket.getPeerCertificate(true).
 */
export function chainValid(peer: DetailedPeerCertificate, anchors: readonly X509Certificate[]): boolean {
  const now = Date.now();
  let cert: DetailedPeerCertificate | undefined = peer;
  let x = new X509Certificate(peer.raw);
  for (let depth = 0; depth <= MAX_DEPTH; depth++) {
    if (!current(x, now)) return false;
    const c = x;
    if (anchors.some((a) => c.checkIssued(a) && current(a, now) && c.verify(a.publicKey))) return true;
    const next: DetailedPeerCertificate | undefined = cert?.issuerCertificate;
    // A self-signed certificate not among the anchors ends the chain.
    if (!next || next === cert || next.raw.equals(cert!.raw)) return false;
    const y = new X509Certificate(next.raw);
    if (!c.checkIssued(y) || !c.verify(y.publicKey) || !y.ca) return false;
    cert = next;
    x = y;
  }
  return false;
}

/** The XmppAddr names of a certificate's subjectAltName (RFC 6120 §13.7.1.4), as Node prints them. */
export function xmppAddrs(san: string | undefined): string[] {
  if (!san) return [];
  return [...san.matchAll(/othername:XmppAddr:([^,\s]+)/g)].map((m) => m[1]);
}

/**
 * RFC 6120 §13.7.2.1 with RFC 6125 §6: whether a server certificate stands
 * for `domain`: a DNS-ID (a wildcard only as the whole leftmost label), an
 * SRV-ID for _xmpp-server or _xmpps-server, or an XmppAddr naming it; the
 * Common Name only when the certificate has no such name.
 */
export function validFor(cert: X509Certificate | PeerCertificate, domain: string): boolean {
  const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert.raw);
  // DNS names and SRV-IDs are in A-labels (RFC 6125 §6.2.1); an XmppAddr may be in either form.
  const u = domain.toLowerCase();
  const d = domainToASCII(u) || u;
  const san = x.subjectAltName ?? '';
  if (xmppAddrs(san).some((a) => a.toLowerCase() === u || a.toLowerCase() === d)) return true;
  for (const m of san.matchAll(/othername:SRVName:([^,\s]+)/g)) {
    const srv = m[1].toLowerCase();
    if (srv === `_xmpp-server.${d}` || srv === `_xmpps-server.${d}`) return true;
  }
  // A domain that is an IP address (RFC 7622 §3.2) is an iPAddress name.
  const ip = d.replace(/^\[|\]$/g, '');
  if (isIP(ip)) return x.checkIP(ip) !== undefined;
  // RFC 6125 §6.4.4: the Common Name only when no other identifier is there.
  const subject = /(^|, )(DNS:|othername:(SRVName|XmppAddr):)/.test(san) ? 'never' : 'default';
  return x.checkHost(d, { subject, wildcards: true, partialWildcards: false, multiLabelWildcards: false, singleLabelSubdomains: false }) !== undefined;
}

/** The peer's certificate chain after the handshake, if it sent one. */
export function peerChain(t: TLSSocket): DetailedPeerCertificate | undefined {
  const c = t.getPeerCertificate(true);
  return c && c.raw ? c : undefined;
}
