// Server dialback (XEP-0220) keys, made as XEP-0185 recommends: an HMAC of
// the two domains and the stream id under a secret, so that the server
// that made a key can check it later without keeping it, and so can any
// node of the cluster that has the same secret.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const NS_DIALBACK = 'jabber:server:dialback';
export const NS_DIALBACK_FEATURE = 'urn:xmpp:features:dialback';

/** XEP-0185 §3: HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' stream id), in hex. */
export function dialbackKey(secret: string, receiving: string, originating: string, streamId: string): string {
  const k = createHash('sha256').update(secret).digest('hex');
  return createHmac('sha256', k).update(`${receiving} ${originating} ${streamId}`).digest('hex');
}

/** Whether `key` is the one this server would have made (in constant time). */
export function keyValid(secret: string, receiving: string, originating: string, streamId: string, key: string): boolean {
  const want = Buffer.from(dialbackKey(secret, receiving, originating, streamId));
  const got = Buffer.from(key.trim());
  return got.length === want.length && timingSafeEqual(got, want);
}

/** The secret when XMPP_S2S_SECRET is not set: derived from the TLS private key, which every node of a cluster serving the domain holds. */
export function secretFromKey(keyPem: string): string {
  return createHmac('sha256', keyPem).update('xmpp-server dialback secret (XEP-0185)').digest('hex');
}
