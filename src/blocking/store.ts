// The blocklists of XEP-0191 (Blocking Command): every account's blocked
// JIDs, kept normalised (RFC 7622) as the strings a stanza's address is
// compared with. Two implementations of one interface: SQLite in the data
// directory (one node, through the storage thread) and PostgreSQL (a
// cluster). A list is bounded (MAX_BLOCKED); the bound is checked in the
// same transaction as the insert, so two resources blocking at once cannot
// pass it together.
import { parseJid } from '../xmpp/jid.ts';

/** JIDs one account may block (a block that would go beyond is refused whole). */
export const MAX_BLOCKED = 1000;

export class BlocklistFullError extends Error {
  override name = 'BlocklistFullError';
  readonly max: number;
  constructor(max: number) {
    super(`at most ${max} JIDs may be blocked`);
    this.max = max;
  }
}

export interface BlockStore {
  /** The account's blocked JIDs, in the order they were blocked. */
  list(owner: string): Promise<string[]>;
  /** Adds the JIDs (already normalised); returns those that were not blocked yet. Throws BlocklistFullError past `max`, adding none. */
  block(owner: string, jids: string[], max: number): Promise<string[]>;
  /** Removes the JIDs; returns those that were blocked. */
  unblock(owner: string, jids: string[]): Promise<string[]>;
  /** Empties the list (XEP-0191 unblock all, and the account removed); returns what it held. */
  unblockAll(owner: string): Promise<string[]>;
  /** Every account whose list is not empty: what a worker reads once at start, so that a stanza to anyone else reads nothing. */
  blockers(): Promise<string[]>;
  close(): void | Promise<void>;
}

/** A JID as a blocklist keeps it: normalised, as 'local@domain/resource' with empty parts left out. Throws JidError. */
export function normalizeBlocked(raw: string): string {
  const j = parseJid(raw.trim());
  return (j.local ? `${j.local}@` : '') + j.domain + (j.resource ? `/${j.resource}` : '');
}

/**
 * Whether a list blocks the address `jid` (normalised, as stanzas carry it),
 * in the order of XEP-0191 §4 (as XEP-0016 §2.1): the full JID, the bare
 * JID, domain/resource, then the domain (a blocked domain covers its
 * users and its resources, not its subdomains: XEP-0016 §2.1 matches the
 * domain as it is).
 */
export function blocks(list: ReadonlySet<string>, jid: string): boolean {
  if (list.size === 0) return false;
  if (list.has(jid)) return true;
  const slash = jid.indexOf('/');
  const bare = slash < 0 ? jid : jid.slice(0, slash);
  if (list.has(bare)) return true;
  const at = bare.indexOf('@');
  return list.has(at < 0 ? bare : bare.slice(at + 1));
}
