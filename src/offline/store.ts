// Offline message storage (XEP-0160): messages for an account with no
// available resource of non-negative priority wait here, as serialised
// stanzas, until the account next becomes available. Two implementations:
// SQLite in the data directory (one node) and PostgreSQL (XMPP_DATABASE_URL; a cluster).
//
// `user` is the account's normalised localpart (what parseJid and SASL
// produce), used as an opaque key.
//
// Delivery is paced by the reader and a message leaves the store only once
// it was written to the client's socket: one session at a time holds a
// claim on the user's queue (so two resources becoming available at once do
// not both deliver it), reads it a batch at a time (fetch), and removes
// each message once written (remove). A claim that is not renewed lapses,
// so a session that died while delivering leaves the rest for the next.

/** A stored message and its id in the queue (opaque, increasing in arrival order). */
export interface StoredMessage {
  id: string;
  xml: string;
}

/** Bounds on one user's queue: messages and bytes (UTF-8 of the serialised stanzas). */
export interface OfflineLimits {
  max: number;
  maxBytes: number;
}

export interface OfflineStore {
  /**
   * Appends a stanza to the user's queue unless that would exceed either
   * limit (or max < 1); false when it did not store. The check and the
   * append are one atomic step, whoever else pushes at the same time.
   */
  push(user: string, xml: string, limits: OfflineLimits): Promise<boolean>;
  /**
   * Appends stanzas to the user's queue in one atomic step, in the order
   * given, each as push() would one after the other: one that would exceed
   * either limit is not stored (false at its place) and those after it are
   * still tried. For several messages to one addressee at once (the
   * undelivered messages of a session or node that is gone), at the cost of
   * one write.
   */
  pushMany(user: string, xmls: string[], limits: OfflineLimits): Promise<boolean[]>;
  /**
   * Claims the user's queue for `owner` (renewing the claim if `owner`
   * holds it already) for leaseMs, and returns up to `limit` messages that
   * came after `after` (an id from an earlier fetch; '' for the start),
   * oldest first. Null when another owner holds a live claim. Finding
   * nothing on a queue it did not hold, `owner` takes no claim.
   */
  fetch(user: string, owner: string, after: string, limit: number, leaseMs: number): Promise<StoredMessage[] | null>;
  /** Removes delivered messages by id (ids no longer there are ignored). */
  remove(user: string, ids: string[]): Promise<void>;
  /** Ends `owner`'s claim (no-op when it does not hold it). */
  release(user: string, owner: string): Promise<void>;
  count(user: string): Promise<number>;
  /**
   * Up to `limit` messages after `after` ('' for the start), oldest first,
   * without claiming or removing anything: for an export, beside a server
   * that may be delivering.
   */
  peek(user: string, after: string, limit: number): Promise<StoredMessage[]>;
  /** Drops the user's queue and any claim on it (e.g. when the account is removed). */
  removeAll(user: string): Promise<void>;
  /** Releases the store; a store backed by a connection resolves once it is closed. Idempotent. */
  close(): void | Promise<void>;
}

/** Limits as the stores apply them: whole numbers; a max below 1 stores nothing. */
export function checkLimits(limits: OfflineLimits): OfflineLimits {
  if (!Number.isSafeInteger(limits.max)) throw new RangeError(`invalid offline message limit ${limits.max}`);
  if (!Number.isSafeInteger(limits.maxBytes)) throw new RangeError(`invalid offline byte limit ${limits.maxBytes}`);
  return limits;
}

export function checkFetch(limit: number, leaseMs: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`invalid fetch size ${limit}`);
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 1) throw new RangeError(`invalid claim duration ${leaseMs}`);
}

/**
 * Which of `sizes` (bytes, in order) fit a queue that holds `n` messages of
 * `bytes` in all, each taken as push() would after those before it.
 */
export function fitting(sizes: number[], n: number, bytes: number, limits: OfflineLimits): boolean[] {
  return sizes.map((b) => {
    if (n >= limits.max || bytes + b > limits.maxBytes) return false;
    n++;
    bytes += b;
    return true;
  });
}

export const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');
