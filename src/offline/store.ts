// Offline message storage (XEP-0160): messages for an account with no
// available resource of non-negative priority wait here, as serialised
// stanzas, until the account next becomes available. Two implementations:
// SQLite in the data directory (one node) and Redis (cluster mode).
//
// `user` is the account's normalised localpart (what parseJid and SASL
// produce), used as an opaque key.

export interface OfflineStore {
  /**
   * Appends a stanza to the user's queue unless it already holds `max`
   * stanzas (or `max` < 1); false when it did not store. The check and the
   * append are one atomic step, whoever else pushes at the same time.
   */
  push(user: string, xml: string, max: number): Promise<boolean>;
  /**
   * Removes and returns every stanza of the user's queue, oldest first, in
   * one atomic step: two takers at once (two threads, two nodes) get
   * disjoint parts, so each stanza is handed out exactly once.
   */
  take(user: string): Promise<string[]>;
  count(user: string): Promise<number>;
  /** Drops the user's queue (e.g. when the account is removed). */
  removeAll(user: string): Promise<void>;
  /** Releases the store; a store backed by a connection resolves once it is closed. Idempotent. */
  close(): void | Promise<void>;
}

/** A limit as the stores apply it: a whole number; anything below 1 stores nothing. */
export function checkMax(max: number): number {
  if (!Number.isSafeInteger(max)) throw new RangeError(`invalid offline message limit ${max}`);
  return max;
}
