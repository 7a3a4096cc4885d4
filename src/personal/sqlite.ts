// The personal data store in SQLite (node:sqlite), personal.sqlite beside
// the other stores; on a running node the storage thread alone writes it.
// setPrivateXml runs in a BEGIN IMMEDIATE transaction: the count of
// namespaces checked against the limit cannot change before the write; the
// swaps compare and write in one too (store.ts, Compare-and-set).
import { openDatabase, transaction } from '../storage/sqlite.ts';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { type PersonalStore, type PrivateEntry, type StoredVcard, PrivateStorageFullError } from './store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS vcards (
  username TEXT PRIMARY KEY NOT NULL,
  vcard TEXT NOT NULL,
  photo_hash TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS private_xml (
  username TEXT NOT NULL,
  ns TEXT NOT NULL,
  xml TEXT NOT NULL,
  PRIMARY KEY (username, ns)
) STRICT;
`;

export class SqlitePersonalStore implements PersonalStore {
  private readonly db: DatabaseSync;
  private readonly stmts: Record<'vcard' | 'hash' | 'setVcard' | 'priv' | 'setPriv' | 'delPriv' | 'has' | 'count' | 'all' | 'delVcards' | 'delAll', StatementSync>;
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      vcard: db.prepare('SELECT vcard, photo_hash FROM vcards WHERE username = ?'),
      hash: db.prepare('SELECT photo_hash FROM vcards WHERE username = ?'),
      setVcard: db.prepare('INSERT INTO vcards (username, vcard, photo_hash) VALUES (?, ?, ?) ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard, photo_hash = excluded.photo_hash'),
      priv: db.prepare('SELECT xml FROM private_xml WHERE username = ? AND ns = ?'),
      setPriv: db.prepare('INSERT INTO private_xml (username, ns, xml) VALUES (?, ?, ?) ON CONFLICT (username, ns) DO UPDATE SET xml = excluded.xml'),
      delPriv: db.prepare('DELETE FROM private_xml WHERE username = ? AND ns = ?'),
      has: db.prepare('SELECT 1 AS x FROM private_xml WHERE username = ? AND ns = ?'),
      count: db.prepare('SELECT count(*) AS n FROM private_xml WHERE username = ?'),
      all: db.prepare('SELECT ns, xml FROM private_xml WHERE username = ? ORDER BY ns'),
      delVcards: db.prepare('DELETE FROM vcards WHERE username = ?'),
      delAll: db.prepare('DELETE FROM private_xml WHERE username = ?'),
    };
  }

  static open(file: string): SqlitePersonalStore {
    return new SqlitePersonalStore(openDatabase(file, SCHEMA));
  }

  async vcard(user: string): Promise<StoredVcard | undefined> {
    const row = this.stmts.vcard.get(user) as { vcard: string; photo_hash: string } | undefined;
    return row ? { xml: row.vcard, photoHash: row.photo_hash } : undefined;
  }

  async photoHash(user: string): Promise<string | undefined> {
    return (this.stmts.hash.get(user) as { photo_hash: string } | undefined)?.photo_hash;
  }

  async setVcard(user: string, vcard: StoredVcard): Promise<void> {
    this.stmts.setVcard.run(user, vcard.xml, vcard.photoHash);
  }

  async swapVcard(user: string, expected: string | undefined, vcard: StoredVcard): Promise<boolean> {
    return transaction(this.db, true, () => {
      if ((this.stmts.vcard.get(user) as { vcard: string } | undefined)?.vcard !== expected) return false;
      this.stmts.setVcard.run(user, vcard.xml, vcard.photoHash);
      return true;
    });
  }

  async privateXml(user: string, ns: string): Promise<string | undefined> {
    const row = this.stmts.priv.get(user, ns) as { xml: string } | undefined;
    return row?.xml;
  }

  async setPrivateXml(user: string, entries: PrivateEntry[], maxNamespaces: number): Promise<void> {
    transaction(this.db, true, () => this.writePrivate(user, entries, maxNamespaces));
  }

  async swapPrivateXml(user: string, ns: string, expected: string | undefined, xml: string, maxNamespaces: number): Promise<boolean> {
    return transaction(this.db, true, () => {
      if ((this.stmts.priv.get(user, ns) as { xml: string } | undefined)?.xml !== expected) return false;
      this.writePrivate(user, [{ ns, xml }], maxNamespaces);
      return true;
    });
  }

  /** Within a write transaction. */
  private writePrivate(user: string, entries: PrivateEntry[], maxNamespaces: number): void {
    let added = false;
    for (const e of entries) {
      if (e.xml === '') {
        this.stmts.delPriv.run(user, e.ns);
        continue;
      }
      if (this.stmts.has.get(user, e.ns) === undefined) added = true;
      this.stmts.setPriv.run(user, e.ns, e.xml);
    }
    // Checked after the writes, which the throw rolls back: one count however many entries.
    if (added && Number((this.stmts.count.get(user) as { n: number }).n) > maxNamespaces) throw new PrivateStorageFullError(maxNamespaces);
  }

  async privateAll(user: string): Promise<PrivateEntry[]> {
    return (this.stmts.all.all(user) as unknown as PrivateEntry[]).map((r) => ({ ns: r.ns, xml: r.xml }));
  }

  async removeAll(user: string): Promise<void> {
    transaction(this.db, true, () => {
      this.stmts.delVcards.run(user);
      this.stmts.delAll.run(user);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
