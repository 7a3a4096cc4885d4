// The slots of the HTTP upload service (XEP-0363): what each upload URL is
// for (its owner, file name, size and media type), whether its file was
// put, and when. The files themselves are on disk (upload/files.ts); this
// store is what every worker of every node agrees on: which token is a
// slot, that a slot is put once, and how much an account holds. Two
// implementations of one interface: SQLite in the data directory (one node,
// through the storage thread) and PostgreSQL (a cluster, migration 12).
//
// A slot's life: 'pending' from the request (XEP-0363 §4) until its PUT
// starts, which must be before `putUntil`; 'writing' while one PUT (only
// one: claim() is atomic) streams the file to disk; 'done' once the file is
// in place, from when it is served until it expires. A PUT that fails puts
// the slot back to 'pending' (the client may try again within the window).
//
// What counts towards an account's quota: its files not yet expired, and
// its slots that may still be put (pending or writing within the window
// and the time a PUT may take). Counted by the store in the transaction
// that adds a slot, so that two requests at once cannot both pass.

/** A slot as the service keeps it. */
export interface UploadSlot {
  /** The unguessable part of the URLs (and the file's name on disk). */
  token: string;
  /** The account's localpart. */
  owner: string;
  filename: string;
  size: number;
  /** The media type the file is served with ('' until the PUT, when the request named none). */
  type: string;
  /** When it was requested (ms since the epoch). */
  created: number;
  /** The PUT must start before this (ms). */
  putUntil: number;
  state: 'pending' | 'writing' | 'done';
  /** When the file was put (ms); 0 until then. */
  uploaded: number;
}

/** What a slot request adds. */
export type NewSlot = Omit<UploadSlot, 'state' | 'uploaded'>;

/** The clock and the rules a store applies (the service's settings). */
export interface UploadRules {
  /** Now (ms). */
  now: number;
  /** How long a PUT may take once started: a slot whose window closed less than this ago may still be being written. */
  writeMs: number;
  /** A file's life after its upload (ms); 0: for ever. */
  expireMs: number;
}

/** The bounds a new slot must keep. */
export interface UploadBounds {
  /** Bytes the owner may hold, this slot included; 0: no bound. */
  quotaBytes: number;
  /** Files and open slots the owner may hold, this one included. */
  maxFiles: number;
}

/** The owner would hold more than its quota (bytes or files): `retryAt` (ms), when some of it is released, if it ever is. */
export class UploadQuotaError extends Error {
  override name = 'UploadQuotaError';
  readonly retryAt: number;

  constructor(message: string, retryAt: number) {
    super(message);
    // 0: nothing the owner holds is released by time (files kept for ever).
    this.retryAt = retryAt;
  }
}

export interface UploadStore {
  /** Adds a slot within the owner's bounds (counted in the same transaction); UploadQuotaError, adding nothing, beyond them. */
  reserve(slot: NewSlot, bounds: UploadBounds, rules: UploadRules): Promise<void>;
  /** A slot by its token, whatever its state (expired ones until they are removed). */
  slot(token: string): Promise<UploadSlot | undefined>;
  /**
   * Bytes promised and not yet on disk: the sizes of every owner's slots
   * that may still be put or are being written (within their window and
   * the time a PUT may take), which the free-space check sets aside.
   */
  openBytes(rules: UploadRules): Promise<number>;
  /** Takes a pending slot whose window is open for one PUT ('writing'): false when it is not pending, or its window closed. */
  claim(token: string, now: number): Promise<boolean>;
  /** A PUT that failed: the slot is pending again. */
  release(token: string): Promise<void>;
  /** The PUT succeeded: the slot is done, served with `type` from `now` on; false when it was not being written. */
  complete(token: string, type: string, now: number): Promise<boolean>;
  /** Up to `limit` slots to remove now: files past their life, and slots never put whose window and write time are over. */
  expired(rules: UploadRules, limit: number): Promise<UploadSlot[]>;
  /** Removes these slots (their files are gone). */
  remove(tokens: string[]): Promise<void>;
  /** Removes every slot of the owner, whatever its state (its account is removed); returns their tokens, whose files are to go. */
  removeOwner(owner: string): Promise<string[]>;
  close(): void | Promise<void>;
}

/** What an owner holds now: the bytes and number of its live slots, and when the first of them is released (ms; undefined: never, files kept for ever). */
export interface Holding {
  bytes: number;
  files: number;
  firstRelease: number | undefined;
}

/**
 * The check reserve() makes on what the owner holds now: throws
 * UploadQuotaError when one more slot of `size` bytes would not fit.
 */
export function checkQuota(held: Holding, size: number, bounds: UploadBounds): void {
  const overBytes = bounds.quotaBytes > 0 && held.bytes + size > bounds.quotaBytes;
  const overFiles = held.files + 1 > bounds.maxFiles;
  if (!overBytes && !overFiles) return;
  const message = overBytes ? `you hold ${held.bytes} bytes of uploads; ${size} more would pass your quota of ${bounds.quotaBytes}` : `you hold ${held.files} uploads, the most allowed`;
  throw new UploadQuotaError(message, held.firstRelease ?? 0);
}
