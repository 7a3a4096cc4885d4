// Personal data an account keeps on the server: its vCard (XEP-0054
// vcard-temp) and its private XML (XEP-0049 jabber:iq:private), one store
// for both, as they share their life (made by the account's clients, read
// at login, removed with the account, exported in its XEP-0227 <user>).
// Two implementations of one interface: SQLite in the data directory (one
// node, through the storage thread) and PostgreSQL (a cluster, migration 8).
// Values are kept as serialised XML: the server checks them on the way in
// (modules/vcard.ts, modules/private.ts) and gives them back as they were.
//
// Compare-and-set: what keeps a copy of this data in step with PEP
// (modules/avatar.ts, modules/bookmarks.ts) reads a value, changes a part
// of it and writes it back, and may run for one account on several workers
// and nodes at once (two devices, each changing its own bookmark). Its
// writes are swaps: they happen only if the value is still the one read,
// else the bridge reads again and redoes its change. The value itself is
// the tag compared (a changed value is another string): no version column,
// so no migration, and a value changed and changed back is as good as
// unchanged for a change computed from that value alone. A lock across
// nodes was the other way; it would hold a PostgreSQL connection (or a
// lease in the storage thread) for the length of a bridge's PEP calls, and
// need clearing when its holder dies; a failed swap costs one more read.
import { createHash } from 'node:crypto';
import type { Element } from 'ltx';

/** A stored vCard: the <vCard xmlns='vcard-temp'> element, and the SHA-1 (hex) of its PHOTO's binary ('' for none; XEP-0153). */
export interface StoredVcard {
  xml: string;
  photoHash: string;
}

/** One namespace of an account's private XML: the elements stored under it, serialised one after the other. */
export interface PrivateEntry {
  ns: string;
  xml: string;
}

/** The largest vCard kept, serialised (a photo of about 140 KB once decoded; XEP-0153 asks avatars of under 8 KB). */
export const MAX_VCARD_BYTES = 192 * 1024;
/** The largest value of one private XML namespace, serialised (some 500 XEP-0048 bookmarks). */
export const MAX_PRIVATE_BYTES = 64 * 1024;
/** Namespaces of private XML one account may keep. */
export const MAX_PRIVATE_NAMESPACES = 64;

/** A set would make the account keep more namespaces than allowed. */
export class PrivateStorageFullError extends Error {
  override name = 'PrivateStorageFullError';
  readonly max: number;
  constructor(max: number) {
    super(`no more than ${max} namespaces of private XML per account`);
    this.max = max;
  }
}

export interface PersonalStore {
  vcard(user: string): Promise<StoredVcard | undefined>;
  /** The SHA-1 of the vCard's photo alone ('' for a vCard without one), undefined for no vCard: what presence needs (XEP-0398 §4), without the photo. */
  photoHash(user: string): Promise<string | undefined>;
  /** Replaces the account's vCard. */
  setVcard(user: string, vcard: StoredVcard): Promise<void>;
  /**
   * Replaces the vCard only if the stored one is still `expected` (its xml,
   * compared whole; undefined: no vCard); false, changing nothing, when
   * another write came between: a read, change and write back that loses
   * no one else's change (see Compare-and-set above).
   */
  swapVcard(user: string, expected: string | undefined, vcard: StoredVcard): Promise<boolean>;
  /** The value kept under one namespace, or undefined. */
  privateXml(user: string, ns: string): Promise<string | undefined>;
  /**
   * Replaces the values of the given namespaces at once (an entry whose
   * xml is '' removes its namespace); throws PrivateStorageFullError, and
   * changes nothing, when the account would keep more than `maxNamespaces`.
   */
  setPrivateXml(user: string, entries: PrivateEntry[], maxNamespaces: number): Promise<void>;
  /**
   * Replaces one namespace's value only if it is still `expected`
   * (undefined: not set; `xml` '' removes it); false, changing nothing, when
   * another write came between. PrivateStorageFullError as setPrivateXml.
   */
  swapPrivateXml(user: string, ns: string, expected: string | undefined, xml: string, maxNamespaces: number): Promise<boolean>;
  /** Every namespace the account keeps, sorted by namespace (XEP-0227 export). */
  privateAll(user: string): Promise<PrivateEntry[]>;
  /** The account's vCard and private XML (the account is removed). */
  removeAll(user: string): Promise<void>;
  close(): void | Promise<void>;
}

/**
 * XEP-0153 §3.1: the SHA-1 of the image data itself (its BINVAL decoded,
 * whitespace ignored, §4.5), in lower-case hex; '' when the vCard has no
 * photo data.
 */
export function photoHash(vcard: Element): string {
  const binval = vcard.getChild('PHOTO')?.getChild('BINVAL');
  const b64 = binval ? binval.getText().replace(/\s+/g, '') : '';
  if (b64 === '') return '';
  const data = Buffer.from(b64, 'base64');
  return data.length === 0 ? '' : createHash('sha1').update(data).digest('hex');
}

export const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');
