// JIDs (RFC 7622): parse, validate and normalise. Localparts take the
// UsernameCaseMapped profile and resourceparts the OpaqueString profile
// (RFC 8265, src/xmpp/precis.ts); domainparts are IDNA2008 domain names in
// U-label form, or IP literals. Two spellings of one JID normalise alike, and
// a look-alike either maps to the same JID or is refused.
import { isIPv6 } from 'node:net';
import tr46 from 'tr46';
import { usernameCaseMapped, opaqueString, checkClass, PrecisError } from './precis.ts';

export interface Jid {
  local: string;
  domain: string;
  resource: string;
}

// RFC 7622 §3.3.1: not allowed in a localpart, on top of the profile.
const LOCAL_FORBIDDEN = /["&'/:<>@]/;
// RFC 7622 §3.2 to §3.4: 1 to 1023 octets. Preparation never shrinks a string
// below a quarter of its UTF-16 length, so longer input is refused unread.
const MAX = 1023;

// Longer than MAX UTF-8 bytes; a UTF-16 unit takes at most three, so short strings need no count.
const tooLong = (s: string) => s.length * 3 > MAX && Buffer.byteLength(s, 'utf8') > MAX;

export class JidError extends Error {
  override name = 'JidError';
}

function prepared(what: string, raw: string, profile: (s: string) => string): string {
  if (raw.length > 4 * MAX) throw new JidError(`invalid ${what}: longer than ${MAX} bytes`);
  let s: string;
  try {
    s = profile(raw);
  } catch (err) {
    if (err instanceof PrecisError) throw new JidError(`invalid ${what} ${JSON.stringify(raw)}: ${err.message}`);
    throw err;
  }
  if (tooLong(s)) throw new JidError(`invalid ${what}: longer than ${MAX} bytes`);
  return s;
}

/** A localpart (RFC 7622 §3.3): UsernameCaseMapped, without " & ' / : < > @. */
export function normalizeLocal(raw: string): string {
  const s = prepared('localpart', raw, usernameCaseMapped);
  if (LOCAL_FORBIDDEN.test(s)) throw new JidError(`invalid localpart ${JSON.stringify(raw)}: contains a forbidden character`);
  return s;
}

/** A resourcepart (RFC 7622 §3.4): OpaqueString. */
export function normalizeResource(raw: string): string {
  return prepared('resourcepart', raw, opaqueString);
}

// RFC 5890 §2.3.1: an NR-LDH label (lowercased). "xn--" and any other "??--"
// label is reserved: A-labels go through IDNA below, the rest are refused.
const NR_LDH = /^(?!-)(?!..--)[a-z0-9-]{1,63}(?<!-)$/;
const HOST_NAME = /^(?:(?!-)(?!..--)[a-z0-9-]{1,63}(?<!-)\.)*(?!-)(?!..--)[a-z0-9-]{1,63}(?<!-)$/;
const ASCII_DOMAIN = /^[\x21-\x7e]+$/;
const IDNA = { checkHyphens: true, checkBidi: true, checkJoiners: true, useSTD3ASCIIRules: true, processingOption: 'nontransitional' } as const;
const DNS_MAX = 253;
const IDNA_CACHE_SIZE = 1000;
const idnaCache = new Map<string, string>();

/**
 * An internationalized domain name (RFC 7622 §3.2.2): UTS #46 mapping (case,
 * width, NFC) to U-labels, then IDNA2008's rules: hyphens, joiners, the Bidi
 * Rule and lengths (by tr46), and code points that are valid in an
 * identifier (PVALID, or CONTEXTJ/CONTEXTO in context; by the PRECIS tables,
 * which the IDNA2008 tables resemble, and which refuse the symbols and the
 * code points unassigned in their Unicode version that UTS #46 lets through).
 */
function idnaDomain(d: string): string {
  const { domain, error } = tr46.toUnicode(d, IDNA);
  if (error || tr46.toASCII(d, { ...IDNA, verifyDNSLength: true }) === null) throw new Error('not an IDNA2008 domain name');
  for (const label of domain.split('.')) {
    if (label.length === 0) throw new Error('empty label');
    try {
      checkClass(label, false);
    } catch (err) {
      if (err instanceof PrecisError) throw new Error(err.message, { cause: err });
      throw err;
    }
  }
  return domain;
}

function asciiProblem(labels: string[]): string {
  for (const l of labels) {
    if (l.length === 0) return 'an empty label';
    if (l.length > 63) return 'a label longer than 63 octets';
    if (!NR_LDH.test(l)) return `the label ${JSON.stringify(l)} is not a host name label (letters, digits and hyphens, a hyphen neither first, last nor third and fourth; RFC 5890 §2.3.1)`;
  }
  return `longer than ${DNS_MAX} octets`;
}

/** A domainpart (RFC 7622 §3.2): a domain name as U-labels, or an IP literal. */
export function normalizeDomain(raw: string): string {
  if (raw.length > 4 * MAX) throw new JidError('invalid domainpart: longer than 1023 bytes');
  // §3.2: a final dot is not part of the domainpart.
  const s = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  // §3.2.1: an IPv6 address in brackets (RFC 3986 IP-literal), or an IPv4 address.
  if (s.startsWith('[')) {
    const ip = s.slice(1, -1);
    if (s.endsWith(']') && /^[0-9A-Fa-f:.]+$/.test(ip) && isIPv6(ip)) return s.toLowerCase();
    throw new JidError(`invalid domainpart ${JSON.stringify(raw)}: not an IPv6 address in brackets`);
  }
  if (s.length === 0) throw new JidError('invalid domainpart: empty');
  if (ASCII_DOMAIN.test(s)) {
    const d = s.toLowerCase();
    // A dotted-quad IPv4 address (§3.2.1) passes as a host name.
    if (d.length <= DNS_MAX && HOST_NAME.test(d)) return d;
    const labels = d.split('.');
    if (!labels.some((l) => l.startsWith('xn--'))) throw new JidError(`invalid domainpart ${JSON.stringify(raw)}: ${asciiProblem(labels)}`);
  }
  let d = idnaCache.get(s);
  if (d !== undefined) return d;
  try {
    d = idnaDomain(s);
  } catch (err) {
    throw new JidError(`invalid domainpart ${JSON.stringify(raw)}: ${(err as Error).message}`);
  }
  if (tooLong(d)) throw new JidError('invalid domainpart: longer than 1023 bytes');
  // UTS #46 processing costs tens of microseconds, and a few domains recur.
  if (idnaCache.size >= IDNA_CACHE_SIZE) idnaCache.clear();
  idnaCache.set(s, d);
  return d;
}

/** Parses and normalises a JID string (§3.1); throws JidError when malformed. */
export function parseJid(s: string): Jid {
  const slash = s.indexOf('/');
  const beforeRes = slash === -1 ? s : s.slice(0, slash);
  const at = beforeRes.indexOf('@');
  const local = at === -1 ? '' : normalizeLocal(beforeRes.slice(0, at));
  const domain = normalizeDomain(at === -1 ? beforeRes : beforeRes.slice(at + 1));
  const resource = slash === -1 ? '' : normalizeResource(s.slice(slash + 1));
  return { local, domain, resource };
}

export function bare(j: Jid): string {
  return j.local ? `${j.local}@${j.domain}` : j.domain;
}

export function full(j: Jid): string {
  return j.resource ? `${bare(j)}/${j.resource}` : bare(j);
}
