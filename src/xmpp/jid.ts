// JIDs (RFC 7622): parse, validate and normalise. Localpart and domain are
// case-folded so that one account has one spelling; the resource is kept.

export interface Jid {
  local: string;
  domain: string;
  resource: string;
}

const LOCAL_FORBIDDEN = /[\s"&'/:<>@\p{Cc}]/u;
const CONTROL = /\p{Cc}/u;
const MAX = 1023;

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

export class JidError extends Error {
  override name = 'JidError';
}

export function normalizeLocal(raw: string): string {
  const s = raw.normalize('NFKC').toLowerCase();
  if (s.length === 0 || bytes(s) > MAX || LOCAL_FORBIDDEN.test(s)) throw new JidError(`invalid localpart ${JSON.stringify(raw)}`);
  return s;
}

export function normalizeResource(raw: string): string {
  const s = raw.normalize('NFC');
  if (s.length === 0 || bytes(s) > MAX || CONTROL.test(s) || s.trim() !== s) throw new JidError(`invalid resource ${JSON.stringify(raw)}`);
  return s;
}

export function normalizeDomain(raw: string): string {
  const s = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  const d = s.normalize('NFKC').toLowerCase();
  if (d.length === 0 || bytes(d) > MAX || /[\s/@<>"'&\p{Cc}]/u.test(d)) throw new JidError(`invalid domain ${JSON.stringify(raw)}`);
  return d;
}

/** Parses and normalises a JID string; throws JidError when malformed (§3). */
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
