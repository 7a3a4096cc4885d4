// The upload slot store in SQLite (node:sqlite), upload.sqlite beside the
// other stores; on a running node the storage thread alone writes it.
// reserve() counts what the owner holds and adds the slot in one BEGIN
// IMMEDIATE transaction: no other slot comes between.
import { openDatabase, transaction } from '../storage/sqlite.ts';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { type Holding, type NewSlot, type UploadBounds, type UploadRules, type UploadSlot, type UploadStore, checkQuota } from './store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS upload_slots (
  token TEXT PRIMARY KEY NOT NULL,
  owner TEXT NOT NULL,
  filename TEXT NOT NULL,
  size INTEGER NOT NULL,
  type TEXT NOT NULL,
  created INTEGER NOT NULL,
  put_until INTEGER NOT NULL,
  state TEXT NOT NULL,
  uploaded INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS upload_slots_owner ON upload_slots (owner);
CREATE INDEX IF NOT EXISTS upload_slots_done ON upload_slots (uploaded) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS upload_slots_open ON upload_slots (put_until) WHERE state <> 'done';
`;

// ?1 owner, ?2 now, ?3 write time, ?4 file life (0: for ever).
const HOLDING = `
SELECT coalesce(sum(size), 0) AS bytes, count(*) AS files,
  min(CASE WHEN state = 'done' THEN (CASE WHEN ?4 > 0 THEN uploaded + ?4 END) ELSE put_until + ?3 END) AS first
FROM upload_slots
WHERE owner = ?1 AND (CASE WHEN state = 'done' THEN (?4 = 0 OR uploaded + ?4 > ?2) ELSE put_until + ?3 > ?2 END)`;
// ?1 now, ?2 write time, ?3 file life, ?4 limit.
const EXPIRED = `
SELECT * FROM upload_slots WHERE state = 'done' AND ?3 > 0 AND uploaded + ?3 <= ?1
UNION ALL
SELECT * FROM upload_slots WHERE state <> 'done' AND put_until + ?2 <= ?1
LIMIT ?4`;

interface Row {
  token: string;
  owner: string;
  filename: string;
  size: number;
  type: string;
  created: number;
  put_until: number;
  state: UploadSlot['state'];
  uploaded: number;
}

export const slotOf = (r: Row): UploadSlot => ({ token: r.token, owner: r.owner, filename: r.filename, size: Number(r.size), type: r.type, created: Number(r.created), putUntil: Number(r.put_until), state: r.state, uploaded: Number(r.uploaded) });

export class SqliteUploadStore implements UploadStore {
  private readonly db: DatabaseSync;
  private readonly stmts: Record<'holding' | 'open' | 'insert' | 'slot' | 'claim' | 'release' | 'complete' | 'expired' | 'remove' | 'removeOwner', StatementSync>;
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      holding: db.prepare(HOLDING),
      // ?1 now, ?2 write time; put_until alone on one side, for the index of open slots.
      open: db.prepare("SELECT coalesce(sum(size), 0) AS bytes FROM upload_slots WHERE state <> 'done' AND put_until > ?1 - ?2"),
      insert: db.prepare("INSERT INTO upload_slots (token, owner, filename, size, type, created, put_until, state, uploaded) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0)"),
      slot: db.prepare('SELECT * FROM upload_slots WHERE token = ?'),
      claim: db.prepare("UPDATE upload_slots SET state = 'writing' WHERE token = ? AND state = 'pending' AND put_until > ?"),
      release: db.prepare("UPDATE upload_slots SET state = 'pending' WHERE token = ? AND state = 'writing'"),
      complete: db.prepare("UPDATE upload_slots SET state = 'done', type = ?, uploaded = ? WHERE token = ? AND state = 'writing'"),
      expired: db.prepare(EXPIRED),
      remove: db.prepare('DELETE FROM upload_slots WHERE token = ?'),
      removeOwner: db.prepare('DELETE FROM upload_slots WHERE owner = ? RETURNING token'),
    };
  }

  static open(file: string): SqliteUploadStore {
    return new SqliteUploadStore(openDatabase(file, SCHEMA));
  }

  async reserve(slot: NewSlot, bounds: UploadBounds, rules: UploadRules): Promise<void> {
    transaction(this.db, true, () => {
      const h = this.stmts.holding.get(slot.owner, rules.now, rules.writeMs, rules.expireMs) as { bytes: number; files: number; first: number | null };
      const held: Holding = { bytes: Number(h.bytes), files: Number(h.files), firstRelease: h.first === null ? undefined : Number(h.first) };
      checkQuota(held, slot.size, bounds);
      this.stmts.insert.run(slot.token, slot.owner, slot.filename, slot.size, slot.type, slot.created, slot.putUntil);
    });
  }

  async openBytes(rules: UploadRules): Promise<number> {
    return Number((this.stmts.open.get(rules.now, rules.writeMs) as { bytes: number }).bytes);
  }

  async slot(token: string): Promise<UploadSlot | undefined> {
    const row = this.stmts.slot.get(token) as Row | undefined;
    return row ? slotOf(row) : undefined;
  }

  async claim(token: string, now: number): Promise<boolean> {
    return Number(this.stmts.claim.run(token, now).changes) === 1;
  }

  async release(token: string): Promise<void> {
    this.stmts.release.run(token);
  }

  async complete(token: string, type: string, now: number): Promise<boolean> {
    return Number(this.stmts.complete.run(type, now, token).changes) === 1;
  }

  async expired(rules: UploadRules, limit: number): Promise<UploadSlot[]> {
    return (this.stmts.expired.all(rules.now, rules.writeMs, rules.expireMs, limit) as unknown as Row[]).map(slotOf);
  }

  async remove(tokens: string[]): Promise<void> {
    if (tokens.length === 0) return;
    transaction(this.db, true, () => {
      for (const t of tokens) this.stmts.remove.run(t);
    });
  }

  async removeOwner(owner: string): Promise<string[]> {
    return (this.stmts.removeOwner.all(owner) as { token: string }[]).map((r) => r.token);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
