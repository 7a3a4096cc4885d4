// Offline messages in SQLite (node:sqlite), in their own file beside the
// accounts. On a running node one storage thread holds the file; the CLI (a
// separate process) may open it too: WAL lets readers run beside the one
// writer, and the busy timeout makes writers wait for each other.
//
// push(), pushMany() and fetch() run in BEGIN IMMEDIATE transactions: the write lock is
// taken before reading, so the size checked against the limits, and the
// claim checked before reading the queue, cannot change before the write
// that depends on them.
import { openDatabase, transaction } from '../storage/sqlite.ts';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { type OfflineLimits, type OfflineStore, type StoredMessage, checkFetch, checkLimits, fitting, utf8Bytes } from './store.ts';


// seq never repeats (AUTOINCREMENT: an emptied table does not start again
// at 1), so ORDER BY seq is the order of arrival, and a message stored while
// a session delivers the queue comes after the last one it read. stored (ms since the epoch) is kept for
// inspection and a future expiry; the stanza carries its own delay stamp.
// A claim (offline_claims) names the session delivering the queue and until
// when (ms since the epoch).
const SCHEMA = `
CREATE TABLE IF NOT EXISTS offline (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL,
  stanza TEXT NOT NULL,
  stored INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS offline_by_user ON offline (username, seq);
CREATE TABLE IF NOT EXISTS offline_claims (
  username TEXT PRIMARY KEY NOT NULL,
  owner TEXT NOT NULL,
  until INTEGER NOT NULL
) STRICT;
`;

/** A file made before ids had to be increasing: the table is rebuilt with AUTOINCREMENT, rows and order kept. */
function upgrade(db: DatabaseSync): void {
  const row = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'offline'").get();
  if (!row || /AUTOINCREMENT/i.test(String(row.sql))) return;
  transaction(db, true, () =>
    db.exec(`ALTER TABLE offline RENAME TO offline_old;
      DROP INDEX IF EXISTS offline_by_user;
      ${SCHEMA}
      INSERT INTO offline (seq, username, stanza, stored) SELECT seq, username, stanza, stored FROM offline_old ORDER BY seq;
      DROP TABLE offline_old;`),
  );
}

export class SqliteOfflineStore implements OfflineStore {
  private readonly db: DatabaseSync;
  private readonly stmts: {
    size: StatementSync;
    count: StatementSync;
    insert: StatementSync;
    after: StatementSync;
    removeOne: StatementSync;
    removeUser: StatementSync;
    claim: StatementSync;
    setClaim: StatementSync;
    release: StatementSync;
    releaseAll: StatementSync;
  };
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      size: db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(CAST(stanza AS BLOB))), 0) AS bytes FROM offline WHERE username = ?'),
      count: db.prepare('SELECT COUNT(*) AS n FROM offline WHERE username = ?'),
      insert: db.prepare('INSERT INTO offline (username, stanza, stored) VALUES (?, ?, ?)'),
      after: db.prepare('SELECT seq, stanza FROM offline WHERE username = ? AND seq > ? ORDER BY seq LIMIT ?'),
      removeOne: db.prepare('DELETE FROM offline WHERE username = ? AND seq = ?'),
      removeUser: db.prepare('DELETE FROM offline WHERE username = ?'),
      claim: db.prepare('SELECT owner, until FROM offline_claims WHERE username = ?'),
      setClaim: db.prepare('INSERT INTO offline_claims (username, owner, until) VALUES (?, ?, ?) ON CONFLICT (username) DO UPDATE SET owner = excluded.owner, until = excluded.until'),
      release: db.prepare('DELETE FROM offline_claims WHERE username = ? AND owner = ?'),
      releaseAll: db.prepare('DELETE FROM offline_claims WHERE username = ?'),
    };
  }

  /** Opens (creating file and directory if needed) the offline message database. */
  static open(file: string): SqliteOfflineStore {
    return new SqliteOfflineStore(openDatabase(file, SCHEMA, upgrade));
  }

  /** Runs `fn` holding the database's write lock. */
  private immediate<T>(fn: () => T): T {
    return transaction(this.db, true, fn);
  }

  async push(user: string, xml: string, limits: OfflineLimits): Promise<boolean> {
    return (await this.pushMany(user, [xml], limits))[0];
  }

  async pushMany(user: string, xmls: string[], limits: OfflineLimits): Promise<boolean[]> {
    checkLimits(limits);
    if (limits.max < 1 || xmls.length === 0) return xmls.map(() => false);
    const sizes = xmls.map(utf8Bytes);
    // None can fit: not worth the write lock.
    if (sizes.every((b) => b > limits.maxBytes)) return xmls.map(() => false);
    return this.immediate(() => {
      const row = this.stmts.size.get(user)!;
      const fits = fitting(sizes, Number(row.n), Number(row.bytes), limits);
      const now = Date.now();
      // In the order given: seq (AUTOINCREMENT) is the queue's order.
      for (const [i, xml] of xmls.entries()) if (fits[i]) this.stmts.insert.run(user, xml, now);
      return fits;
    });
  }

  async fetch(user: string, owner: string, after: string, limit: number, leaseMs: number): Promise<StoredMessage[] | null> {
    checkFetch(limit, leaseMs);
    // Only what fetch() hands out: decimal digits ('-1', ' ', '0x10', '1e3' are no ids).
    const from = after === '' ? 0 : /^[0-9]{1,15}$/.test(after) ? Number(after) : NaN;
    if (!Number.isSafeInteger(from)) throw new RangeError(`invalid message id ${JSON.stringify(after)}`);
    return this.immediate(() => {
      const now = Date.now();
      const claim = this.stmts.claim.get(user);
      const live = claim !== undefined && Number(claim.until) > now;
      if (live && String(claim.owner) !== owner) return null;
      const rows = this.stmts.after.all(user, from, limit).map((r) => ({ id: String(r.seq), xml: String(r.stanza) }));
      // Nothing to deliver and no claim of its own: none is taken, so that a
      // session that dies right after (most logins find nothing) holds
      // nothing back for the lease.
      if (rows.length > 0 || live) this.stmts.setClaim.run(user, owner, now + leaseMs);
      return rows;
    });
  }

  async remove(user: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    this.immediate(() => {
      for (const id of ids) this.stmts.removeOne.run(user, Number(id));
    });
  }

  /**
   * Drops every claim: for the one process that delivers from this file (a
   * single node's storage thread), at its start, since the sessions that
   * held them are gone with the process before.
   */
  clearClaims(): void {
    this.db.exec('DELETE FROM offline_claims');
  }

  async release(user: string, owner: string): Promise<void> {
    this.stmts.release.run(user, owner);
  }

  async peek(user: string, after: string, limit: number): Promise<StoredMessage[]> {
    checkFetch(limit, 1);
    const from = after === '' ? 0 : /^[0-9]{1,15}$/.test(after) ? Number(after) : NaN;
    if (!Number.isSafeInteger(from)) throw new RangeError(`invalid message id ${JSON.stringify(after)}`);
    return this.stmts.after.all(user, from, limit).map((r) => ({ id: String(r.seq), xml: String(r.stanza) }));
  }

  async count(user: string): Promise<number> {
    return Number(this.stmts.count.get(user)!.n);
  }

  async removeAll(user: string): Promise<void> {
    this.immediate(() => {
      this.stmts.removeUser.run(user);
      this.stmts.releaseAll.run(user);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
