// One registry interface for the sessions of the whole server: every full
// JID is bound at most once. Two implementations sit behind it: in memory
// (single node) and Redis (cluster).
import type { ConflictPolicy } from '../config/index.ts';
import type { Departed } from '../presence/presence.ts';

/** Where a session lives and what routing needs to know of it. */
export interface SessionRecord {
  jid: string; // full JID
  bare: string;
  sid: string; // unique per stream, so a stale unbind never removes a successor
  node: string;
  worker: number;
  priority: number;
  available: boolean;
}

export interface BindRequest {
  rec: SessionRecord;
  policy: ConflictPolicy;
  maxResources: number;
  /** ANONYMOUS (XEP-0175): the bare JID must be unused by any other session. */
  exclusiveBare: boolean;
}

/** `dropped`: stale records of a dead node the bind removed on the way; their end is the caller's to announce. */
export type BindOutcome =
  | { ok: true; rec: SessionRecord; replaced?: SessionRecord; dropped?: Departed[] }
  | { ok: false; condition: 'conflict' | 'resource-constraint' | 'unavailable'; dropped?: Departed[] };

export interface SessionRegistry {
  /** Atomic across the whole server: the conflict policy is applied exactly once. */
  bind(req: BindRequest): Promise<BindOutcome>;
  unbind(jid: string, sid: string): Promise<void>;
  /**
   * False when this session must not announce the change: its node is
   * fenced, or another session holds its full JID now. Rejects when the
   * registry cannot be reached: the change is refused.
   */
  setPresence(jid: string, sid: string, available: boolean, priority: number): Promise<boolean>;
  /**
   * Remembers who got directed presence from a session (RFC 6121 §4.6), so
   * that if its node dies the survivors can tell them it is gone; null
   * forgets. Only the cluster registry keeps it: on a single node the session
   * itself tells them, since nothing outlives the node.
   */
  noteDirected(jid: string, sid: string, recipients: string[] | null): Promise<void>;
  /**
   * A session resumed on another worker or node (XEP-0198 §5): its record
   * follows it, if it is still that session's. False when another session
   * holds the full JID now, or the record is gone.
   */
  move(jid: string, sid: string, node: string, worker: number): Promise<boolean>;
  lookup(jid: string): Promise<SessionRecord | undefined>;
  /** `fresh`: read from the source, not from a cache (the cluster registry caches lookups) or a worker's replica of the node's. */
  resources(bare: string, fresh?: boolean): Promise<SessionRecord[]>;
  /**
   * The full JIDs bound on the whole server (every node), a page of about
   * `pageSize` at a time (ONLINE_PAGE by default), for administration
   * (XEP-0133), not routing: read from the source, not a cache, and never
   * more than a page in one command, so that the caller decides how much
   * it reads. External components' records are included (no '@').
   */
  onlinePages?(pageSize?: number): AsyncIterable<string[]>;
}

/** Full JIDs read at a time by SessionRegistry.onlinePages. */
export const ONLINE_PAGE = 1000;

/** Server-assigned resource (RFC 6120 §7.6): unguessable and unique in practice. */
export function randomResource(): string {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4);
}
