// The message archive in SQLite (node:sqlite), in its own file beside the
// other stores; on a running node the storage thread alone writes it.
// With full-text search on (XMPP_MAM_FULLTEXT), bodies are indexed for it
// (XEP-0431) in an FTS5 table without a copy of the text (contentless),
// kept in step by triggers. The insert trigger exists only while it is on,
// and its presence says the index is whole: turned on, the index is built
// from the archive; turned off, it is emptied. (Indexing makes writing a
// row about 3.5 times as dear.)
import { openDatabase, transaction } from '../storage/sqlite.ts';
import type { DatabaseSync, StatementSync, SQLInputValue } from 'node:sqlite';
import { type ArchiveBounds, type ArchivedMessage, type ArchivePage, type ArchivePrefs, type ArchiveQuery, type ArchiveStore, sqlFilters } from './store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS archive (
  seq INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  id TEXT NOT NULL,
  stamp INTEGER NOT NULL,
  with_bare TEXT NOT NULL,
  with_resource TEXT NOT NULL,
  outgoing INTEGER NOT NULL,
  body TEXT NOT NULL,
  stanza TEXT NOT NULL,
  UNIQUE (owner, id)
) STRICT;
CREATE INDEX IF NOT EXISTS archive_with ON archive (owner, with_bare, id);
CREATE INDEX IF NOT EXISTS archive_stamp ON archive (stamp);
CREATE VIRTUAL TABLE IF NOT EXISTS archive_text USING fts5 (body, content = '', contentless_delete = 1);
CREATE TRIGGER IF NOT EXISTS archive_text_out AFTER DELETE ON archive WHEN old.body <> '' BEGIN
  DELETE FROM archive_text WHERE rowid = old.seq;
END;
CREATE TABLE IF NOT EXISTS archive_prefs (
  owner TEXT PRIMARY KEY NOT NULL,
  mode TEXT NOT NULL,
  always TEXT NOT NULL,
  never TEXT NOT NULL
) STRICT;
`;

const TEXT_TRIGGER = `CREATE TRIGGER archive_text_in AFTER INSERT ON archive WHEN new.body <> '' BEGIN
  INSERT INTO archive_text (rowid, body) VALUES (new.seq, new.body);
END;`;

/** Turns the full-text index on (built from what is archived) or off (emptied); nothing when it is so already. */
function setFulltext(db: DatabaseSync, on: boolean): void {
  const indexed = db.prepare("SELECT 1 AS x FROM sqlite_master WHERE type = 'trigger' AND name = 'archive_text_in'").get() !== undefined;
  if (on === indexed) return;
  transaction(db, true, () => {
    db.exec("INSERT INTO archive_text (archive_text) VALUES ('delete-all')");
    if (on) {
      db.exec("INSERT INTO archive_text (rowid, body) SELECT seq, body FROM archive WHERE body <> ''");
      db.exec(TEXT_TRIGGER);
    } else {
      db.exec('DROP TRIGGER archive_text_in');
    }
  });
}

export interface ArchiveOpenOptions {
  /** Full-text search on or off (the index built or emptied); undefined: as the file has it (the CLI, beside a server). */
  fulltext?: boolean;
}

interface Row {
  id: string;
  owner: string;
  stamp: number;
  with_bare: string;
  with_resource: string;
  outgoing: number;
  body: string;
  stanza: string;
}

const toMessage = (r: Row): ArchivedMessage => ({ id: r.id, owner: r.owner, stamp: Number(r.stamp), withBare: r.with_bare, withResource: r.with_resource, outgoing: Boolean(r.outgoing), body: r.body, xml: r.stanza });

export class SqliteArchiveStore implements ArchiveStore {
  private readonly db: DatabaseSync;
  private readonly stmts: Record<'insert' | 'has' | 'first' | 'last' | 'prefs' | 'setPrefs' | 'removeAll' | 'removePrefs' | 'prune', StatementSync>;
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      insert: db.prepare('INSERT INTO archive (owner, id, stamp, with_bare, with_resource, outgoing, body, stanza) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, id) DO NOTHING'),
      has: db.prepare('SELECT 1 AS x FROM archive WHERE owner = ? AND id = ?'),
      first: db.prepare('SELECT id, stamp FROM archive WHERE owner = ? ORDER BY id LIMIT 1'),
      last: db.prepare('SELECT id, stamp FROM archive WHERE owner = ? ORDER BY id DESC LIMIT 1'),
      prefs: db.prepare('SELECT mode, always, never FROM archive_prefs WHERE owner = ?'),
      setPrefs: db.prepare('INSERT INTO archive_prefs (owner, mode, always, never) VALUES (?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET mode = excluded.mode, always = excluded.always, never = excluded.never'),
      removeAll: db.prepare('DELETE FROM archive WHERE owner = ?'),
      removePrefs: db.prepare('DELETE FROM archive_prefs WHERE owner = ?'),
      prune: db.prepare('DELETE FROM archive WHERE seq IN (SELECT seq FROM archive WHERE stamp < ? ORDER BY stamp LIMIT ?)'),
    };
  }

  static open(file: string, opts: ArchiveOpenOptions = {}): SqliteArchiveStore {
    const db = openDatabase(file, SCHEMA);
    try {
      if (opts.fulltext !== undefined) setFulltext(db, opts.fulltext);
    } catch (err) {
      db.close();
      throw err;
    }
    return new SqliteArchiveStore(db);
  }

  async append(items: ArchivedMessage[]): Promise<void> {
    if (items.length === 0) return;
    transaction(this.db, true, () => {
      for (const m of items) this.stmts.insert.run(m.owner, m.id, m.stamp, m.withBare, m.withResource, m.outgoing ? 1 : 0, m.body, m.xml);
    });
  }

  private select(owner: string, q: Omit<ArchiveQuery, 'max' | 'last'>): { where: string; values: SQLInputValue[] } {
    const values: SQLInputValue[] = [];
    const where = sqlFilters(owner, q, (v) => (values.push(v as SQLInputValue), '?'), (p) => `seq IN (SELECT rowid FROM archive_text WHERE archive_text MATCH ${p})`);
    return { where, values };
  }

  async query(owner: string, q: ArchiveQuery): Promise<ArchivePage> {
    const { where, values } = this.select(owner, q);
    // One more than the page says whether the selection goes on.
    const rows = this.db.prepare(`SELECT id, owner, stamp, with_bare, with_resource, outgoing, body, stanza FROM archive WHERE ${where} ORDER BY id ${q.last ? 'DESC' : 'ASC'} LIMIT ?`).all(...values, q.max + 1) as unknown as Row[];
    const complete = rows.length <= q.max;
    const page = rows.slice(0, q.max).map(toMessage);
    if (q.last) page.reverse();
    return { items: page, complete };
  }

  async count(owner: string, q: Omit<ArchiveQuery, 'max' | 'last'>): Promise<number> {
    const { where, values } = this.select(owner, q);
    return Number((this.db.prepare(`SELECT COUNT(*) AS n FROM archive WHERE ${where}`).get(...values) as { n: number }).n);
  }

  async has(owner: string, id: string): Promise<boolean> {
    return this.stmts.has.get(owner, id) !== undefined;
  }

  async bounds(owner: string): Promise<ArchiveBounds> {
    const first = this.stmts.first.get(owner) as { id: string; stamp: number } | undefined;
    const last = this.stmts.last.get(owner) as { id: string; stamp: number } | undefined;
    return {
      ...(first ? { first: { id: first.id, stamp: Number(first.stamp) } } : {}),
      ...(last ? { last: { id: last.id, stamp: Number(last.stamp) } } : {}),
    };
  }

  async prefs(owner: string): Promise<ArchivePrefs | undefined> {
    const row = this.stmts.prefs.get(owner) as { mode: string; always: string; never: string } | undefined;
    if (!row) return undefined;
    return { default: row.mode as ArchivePrefs['default'], always: JSON.parse(row.always) as string[], never: JSON.parse(row.never) as string[] };
  }

  async setPrefs(owner: string, prefs: ArchivePrefs): Promise<void> {
    this.stmts.setPrefs.run(owner, prefs.default, JSON.stringify(prefs.always), JSON.stringify(prefs.never));
  }

  async removeAll(owner: string): Promise<void> {
    transaction(this.db, true, () => {
      this.stmts.removeAll.run(owner);
      this.stmts.removePrefs.run(owner);
    });
  }

  async prune(before: number, limit: number): Promise<number> {
    return Number(this.stmts.prune.run(before, limit).changes);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
