// Helpers shared by the SASL mechanisms (kept apart from mechanism.ts so the
// mechanisms and the registry list do not import each other).
import { SaslFailure } from '../xmpp/errors.ts';
import { parseJid, type Jid } from '../xmpp/jid.ts';
import { normalizedOrUndefined } from '../accounts/store.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decodes a mechanism message; malformed UTF-8 is a malformed request. */
export function decodeUtf8(data: Buffer): string {
  try {
    return utf8.decode(data);
  } catch {
    throw new SaslFailure('malformed-request', 'message is not UTF-8');
  }
}

/**
 * Whether an authorization identity names the authenticated user: the bare
 * JID username@domain (both parts normalised, as JIDs compare).
 */
export function authzidMatches(authzid: string, username: string | undefined, domain: string): boolean {
  if (username === undefined) return false;
  let j: Jid;
  try {
    j = parseJid(authzid);
  } catch {
    return false;
  }
  return j.resource === '' && j.local === username && j.domain === domain;
}

/** Wraps a store call: its failures are temporary-auth-failure (RFC 6120 §6.5.11). */
export async function fromStore<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw new SaslFailure('temporary-auth-failure', `account store unavailable: ${(err as Error).message}`);
  }
}

/** What failed authentications are counted under: the account's normalised name, or the name as given when it cannot be one. */
export function accountKey(raw: string): string {
  return normalizedOrUndefined(raw) ?? raw;
}

/**
 * Asks the context whether attempts as `user` are refused for a while
 * (too many failures for that account lately: XMPP_AUTH_FAILURES_PER_ACCOUNT);
 * throws temporary-auth-failure (RFC 6120 §6.5.11) if so, before any work.
 * Otherwise says whether the account has a session waiting to be resumed.
 */
export async function admitAccount(ctx: { admit?: (user: string) => Promise<{ left: number; resuming: boolean }> }, raw: string): Promise<{ resuming: boolean }> {
  const { left, resuming } = (await ctx.admit?.(accountKey(raw))) ?? { left: 0, resuming: false };
  if (left > 0) throw new SaslFailure('temporary-auth-failure', `too many failed attempts for this account: try again in ${Math.ceil(left / 1000)} s`);
  return { resuming };
}
