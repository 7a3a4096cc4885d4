// Blocklists (XEP-0191) in SQLite, in their own file beside the other
// stores; on a running node the storage thread alone writes it.
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { openDatabase, transaction } from '../storage/sqlite.ts';
import { type BlockStore, BlocklistFullError } from './store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS blocklist (
  seq INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  jid TEXT NOT NULL,
  UNIQUE (owner, jid)
) STRICT;
`;

export class SqliteBlockStore implements BlockStore {
  private readonly db: DatabaseSync;
  private readonly stmts: Record<'list' | 'has' | 'count' | 'insert' | 'remove' | 'removeAll' | 'blockers', StatementSync>;
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      list: db.prepare('SELECT jid FROM blocklist WHERE owner = ? ORDER BY seq'),
      has: db.prepare('SELECT 1 AS x FROM blocklist WHERE owner = ? AND jid = ?'),
      count: db.prepare('SELECT COUNT(*) AS n FROM blocklist WHERE owner = ?'),
      insert: db.prepare('INSERT INTO blocklist (owner, jid) VALUES (?, ?) ON CONFLICT (owner, jid) DO NOTHING'),
      remove: db.prepare('DELETE FROM blocklist WHERE owner = ? AND jid = ?'),
      removeAll: db.prepare('DELETE FROM blocklist WHERE owner = ?'),
      blockers: db.prepare('SELECT DISTINCT owner FROM blocklist'),
    };
  }

  static open(file: string): SqliteBlockStore {
    return new SqliteBlockStore(openDatabase(file, SCHEMA));
  }

  async list(owner: string): Promise<string[]> {
    return (this.stmts.list.all(owner) as { jid: string }[]).map((r) => r.jid);
  }

  async block(owner: string, jids: string[], max: number): Promise<string[]> {
    return transaction(this.db, true, () => {
      const added = [...new Set(jids)].filter((j) => this.stmts.has.get(owner, j) === undefined);
      const n = Number((this.stmts.count.get(owner) as { n: number }).n);
      if (n + added.length > max) throw new BlocklistFullError(max);
      for (const j of added) this.stmts.insert.run(owner, j);
      return added;
    });
  }

  async unblock(owner: string, jids: string[]): Promise<string[]> {
    return transaction(this.db, true, () => [...new Set(jids)].filter((j) => Number(this.stmts.remove.run(owner, j).changes) > 0));
  }

  async unblockAll(owner: string): Promise<string[]> {
    return transaction(this.db, true, () => {
      const had = (this.stmts.list.all(owner) as { jid: string }[]).map((r) => r.jid);
      this.stmts.removeAll.run(owner);
      return had;
    });
  }

  async blockers(): Promise<string[]> {
    return (this.stmts.blockers.all() as { owner: string }[]).map((r) => r.owner);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
