// The message archive (XEP-0313): every account's one-to-one messages, in
// the order the server received them, queried by the account's clients.
// Two implementations of one interface: SQLite in the data directory (one
// node) and PostgreSQL (a cluster).
//
// Ids are made by the worker that archives a message (archiveId) before
// it is written, since the recipient's copy carries it (XEP-0359) before
// the batched write lands. They sort as the server received the messages:
// the time in ms, then a per-thread counter, then random characters drawn
// once per thread that keep ids of different workers and nodes apart. Every query orders by id,
// so every node answers in the same order; `start` and `end` compare ids
// too (an id begins with its time), and one index serves them all.
import { randomBytes } from 'node:crypto';

/** One archived message of one account ('owner', a normalised localpart). */
export interface ArchivedMessage {
  id: string;
  owner: string;
  /** When the server received it (ms since the epoch; the time in the id). */
  stamp: number;
  /** The other party's bare JID, and resource ('' for none). */
  withBare: string;
  withResource: string;
  /** Sent by the owner (true), or received. */
  outgoing: boolean;
  /** The text of its <body/>, for full-text search ('' for none). */
  body: string;
  /** The stanza as archived. */
  xml: string;
}

/** A query, already checked (see MAM's form and RSM parsing in modules/mam.ts). */
export interface ArchiveQuery {
  /** A bare JID matches every resource of it; a full JID only itself. */
  withBare?: string;
  withResource?: string;
  /** Inclusive bounds, ms since the epoch. */
  start?: number;
  end?: number;
  /** Exclusive bounds on ids (XEP-0313 after-id/before-id, and RSM after/before). */
  afterId?: string;
  beforeId?: string;
  /** Only these ids (XEP-0313 §4.1.4 'ids'). */
  ids?: string[];
  /** Words of the body (XEP-0431), all of which a message must contain. */
  text?: string;
  /** Page size (≥ 1). */
  max: number;
  /** The last `max` of the selection (RSM <before/>), instead of the first. */
  last: boolean;
}

export interface ArchivePage {
  /** In archive order, whichever end of the selection they came from. */
  items: ArchivedMessage[];
  /** No more of the selection beyond this page, in the direction of paging. */
  complete: boolean;
}

export type ArchiveDefault = 'always' | 'never' | 'roster';
/** XEP-0313 §6 preferences. */
export interface ArchivePrefs {
  default: ArchiveDefault;
  always: string[];
  never: string[];
}

/** The first and last message of an archive (XEP-0313 #extended metadata). */
export interface ArchiveBounds {
  first?: { id: string; stamp: number };
  last?: { id: string; stamp: number };
}

export interface ArchiveStore {
  /** Writes a batch; an id already there is kept as it is (a retried batch writes nothing twice). */
  append(items: ArchivedMessage[]): Promise<void>;
  query(owner: string, q: ArchiveQuery): Promise<ArchivePage>;
  /** How many messages match the query's filters (the form's after-id and before-id among them; RSM paging is the caller's to leave out). */
  count(owner: string, q: Omit<ArchiveQuery, 'max' | 'last'>): Promise<number>;
  /** Whether the archive holds this id. */
  has(owner: string, id: string): Promise<boolean>;
  bounds(owner: string): Promise<ArchiveBounds>;
  prefs(owner: string): Promise<ArchivePrefs | undefined>;
  setPrefs(owner: string, prefs: ArchivePrefs): Promise<void>;
  /** The account's archive and preferences (the account is removed). */
  removeAll(owner: string): Promise<void>;
  /** Removes up to `limit` messages received before `before` (ms); how many went. */
  prune(before: number, limit: number): Promise<number>;
  close(): void | Promise<void>;
}

/** Bounds on a query's page and its `ids`. */
export const MAX_PAGE = 250;
export const MAX_IDS = 250;
/** Preference lists and full-text words kept per account / query. */
export const MAX_PREF_JIDS = 1000;
export const MAX_TEXT = 256;

const TIME_DIGITS = 12; // hex ms: until the year 10889
let lastMs = 0;
let counter = 0;
/** This thread's mark in the ids it makes (a random draw per id cost more than the rest of archiving a row). */
const THREAD_TAG = randomBytes(4).toString('hex');

/** A new id, greater than every id this thread made before (see the header). */
export function archiveId(now = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    counter = 0;
  } else if (++counter > 0xffff) {
    // 65536 in one ms: borrow the next ms rather than repeat.
    lastMs += 1;
    counter = 0;
  }
  return hexTime(lastMs) + (counter & 0xffff).toString(16).padStart(4, '0') + THREAD_TAG;
}

const hexTime = (ms: number): string => Math.floor(ms).toString(16).padStart(TIME_DIGITS, '0');

/** The id of the `seq`th message (0..65535) of the ms `ms`: what archiveId makes, for messages archived with a time of their own (imports). */
export function idAt(ms: number, seq: number): string {
  return hexTime(ms) + (seq & 0xffff).toString(16).padStart(4, '0') + randomBytes(4).toString('hex');
}

/** When the message with this id was received (ms); NaN for what is no id of ours. */
export function stampOf(id: string): number {
  return isArchiveId(id) ? parseInt(id.slice(0, TIME_DIGITS), 16) : NaN;
}

export function isArchiveId(id: string): boolean {
  return /^[0-9a-f]{24}$/.test(id);
}

/** The smallest and largest id of a given ms: `start`/`end` as id bounds. */
export const idFloor = (ms: number): string => Math.max(0, Math.floor(ms)).toString(16).padStart(TIME_DIGITS, '0') + '0'.repeat(12);
export const idCeil = (ms: number): string => Math.max(0, Math.floor(ms)).toString(16).padStart(TIME_DIGITS, '0') + 'f'.repeat(12);

/**
 * The WHERE clause of a query's filters, for both SQL stores: `param`
 * adds a value and returns its placeholder, `textMatch` the backend's
 * full-text condition on a placeholder holding the quoted words.
 */
export function sqlFilters(owner: string, q: Omit<ArchiveQuery, 'max' | 'last'>, param: (v: unknown) => string, textMatch: (p: string) => string): string {
  const where = [`owner = ${param(owner)}`];
  if (q.withBare !== undefined) where.push(`with_bare = ${param(q.withBare)}`);
  if (q.withResource) where.push(`with_resource = ${param(q.withResource)}`);
  if (q.start !== undefined) where.push(`id >= ${param(idFloor(q.start))}`);
  if (q.end !== undefined) where.push(`id <= ${param(idCeil(q.end))}`);
  if (q.afterId !== undefined) where.push(`id > ${param(q.afterId)}`);
  if (q.beforeId !== undefined) where.push(`id < ${param(q.beforeId)}`);
  if (q.ids !== undefined) where.push(q.ids.length === 0 ? 'FALSE' : `id IN (${q.ids.map((id) => param(id)).join(', ')})`);
  if (q.text !== undefined) {
    const words = textWords(q.text);
    // No word to look for: nothing matches (a search for punctuation finds nothing).
    where.push(words.length === 0 ? 'FALSE' : textMatch(param(words.map((w) => `"${w}"`).join(' '))));
  }
  return where.join(' AND ');
}

/** Whether `prefs` let the owner's archive keep a message exchanged with `peer` (a bare JID); `inRoster` asked only for 'roster'. */
export async function prefsAllow(prefs: ArchivePrefs, peer: string, inRoster: () => Promise<boolean>): Promise<boolean> {
  // XEP-0313 §6.1: the lists override the default; 'never' wins over 'always'.
  if (prefs.never.includes(peer)) return false;
  if (prefs.always.includes(peer)) return true;
  if (prefs.default === 'always') return true;
  if (prefs.default === 'never') return false;
  return inRoster();
}

/** The words of a full-text query: letters and digits only, so that no backend's query syntax leaks through. */
export function textWords(text: string): string[] {
  return (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []).slice(0, 32);
}
