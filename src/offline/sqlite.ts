// Offline messages in SQLite (node:sqlite), in their own file beside the
// accounts. Every worker thread (and a CLI process) may open the same file:
// WAL lets readers run beside the one writer, and the busy timeout makes
// writers wait for each other instead of failing.
//
// push() and take() each run in a BEGIN IMMEDIATE transaction: it takes the
// write lock before reading, so the count checked against the limit, and the
// rows read for delivery, cannot change before the write that depends on
// them. (A plain transaction would read a snapshot first and could fail with
// SQLITE_BUSY_SNAPSHOT on upgrading, which the busy timeout does not retry.)
import { openDatabase } from '../storage/sqlite.ts';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { type OfflineStore, checkMax } from './store.ts';


// seq is the rowid: always above every row present, so ORDER BY seq is the
// order of arrival of what is queued. stored (ms since the epoch) is kept for
// inspection and a future expiry; the stanza carries its own delay stamp.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS offline (
  seq INTEGER PRIMARY KEY,
  username TEXT NOT NULL,
  stanza TEXT NOT NULL,
  stored INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS offline_by_user ON offline (username, seq);
`;

export class SqliteOfflineStore implements OfflineStore {
  private readonly db: DatabaseSync;
  private readonly stmts: {
    count: StatementSync;
    insert: StatementSync;
    select: StatementSync;
    remove: StatementSync;
  };
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      count: db.prepare('SELECT COUNT(*) AS n FROM offline WHERE username = ?'),
      insert: db.prepare('INSERT INTO offline (username, stanza, stored) VALUES (?, ?, ?)'),
      select: db.prepare('SELECT stanza FROM offline WHERE username = ? ORDER BY seq'),
      remove: db.prepare('DELETE FROM offline WHERE username = ?'),
    };
  }

  /** Opens (creating file and directory if needed) the offline message database. */
  static open(file: string): SqliteOfflineStore {
    const db = openDatabase(file, SCHEMA);
    return new SqliteOfflineStore(db);
  }

  /** Runs `fn` holding the database's write lock; commits, or rolls back on a throw. */
  private immediate<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const out = fn();
      this.db.exec('COMMIT');
      return out;
    } catch (err) {
      if (this.db.isTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async push(user: string, xml: string, max: number): Promise<boolean> {
    if (checkMax(max) < 1) return false;
    return this.immediate(() => {
      if (Number(this.stmts.count.get(user)!.n) >= max) return false;
      this.stmts.insert.run(user, xml, Date.now());
      return true;
    });
  }

  async take(user: string): Promise<string[]> {
    return this.immediate(() => {
      const rows = this.stmts.select.all(user).map((r) => String(r.stanza));
      if (rows.length > 0) this.stmts.remove.run(user);
      return rows;
    });
  }

  async count(user: string): Promise<number> {
    return Number(this.stmts.count.get(user)!.n);
  }

  async removeAll(user: string): Promise<void> {
    this.stmts.remove.run(user);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
