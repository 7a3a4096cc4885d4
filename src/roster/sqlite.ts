// Rosters in SQLite (node:sqlite), for a single node. Like the account store,
// several worker threads (and processes) open the same file: WAL mode lets
// readers run beside the one writer and the busy timeout makes writers wait
// for each other. Every change is one IMMEDIATE transaction: the item and
// the roster's version move together, and the size limit is checked under
// the write lock. Subscription requests the user has not answered (the '+in'
// of RFC 6121 Appendix A) live beside the items in roster_pending, in arrival
// order (seq, per user), so a transition reads and writes both in the same
// transaction.
import { openDatabase, transaction } from '../storage/sqlite.ts';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { randomBytes } from 'node:crypto';
import {
  type RosterStore, type RosterItem, type RosterItemInput, type RosterChange, type Subscription, type SubscriptionChange,
  type SubState, type TransitionTable, type TransitionResult, type PendingRequest, type TransitionOptions,
  RosterFullError, RosterTooLargeError, EMPTY_VERSION, checkMax, checkTable, planTransition, checkSubscription, compareJids, composeState, decodeDetails, encodeDetails, itemBytes, makeItem, transitionLimits,
} from './store.ts';


const SCHEMA = `
CREATE TABLE IF NOT EXISTS roster_versions (
  username TEXT PRIMARY KEY NOT NULL,
  epoch TEXT NOT NULL,
  counter INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS roster_items (
  username TEXT NOT NULL,
  jid TEXT NOT NULL,
  details TEXT NOT NULL,
  subscription TEXT NOT NULL,
  ask TEXT,
  PRIMARY KEY (username, jid)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roster_pending (
  username TEXT NOT NULL,
  jid TEXT NOT NULL,
  stanza TEXT NOT NULL,
  seq INTEGER NOT NULL,
  PRIMARY KEY (username, jid)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS roster_pending_order ON roster_pending (username, seq);
`;

type Row = Record<string, unknown>;

function rowToItem(row: Row): RosterItem {
  return makeItem(String(row.jid), decodeDetails(String(row.details)), String(row.subscription) as Subscription, row.ask === 'subscribe' ? 'subscribe' : undefined);
}

function checkUser(user: string): void {
  if (typeof user !== 'string' || user.length === 0) throw new TypeError('a roster needs a username');
}


export class SqliteRosterStore implements RosterStore {
  private readonly db: DatabaseSync;
  private readonly stmts: {
    version: StatementSync;
    bump: StatementSync;
    items: StatementSync;
    item: StatementSync;
    count: StatementSync;
    bytes: StatementSync;
    asking: StatementSync;
    insert: StatementSync;
    updateDetails: StatementSync;
    updateSubscription: StatementSync;
    remove: StatementSync;
    removeItems: StatementSync;
    removeVersion: StatementSync;
    pending: StatementSync;
    pendingAll: StatementSync;
    pendingCount: StatementSync;
    pendingInsert: StatementSync;
    pendingRemove: StatementSync;
    pendingRemoveAll: StatementSync;
  };
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.stmts = {
      version: db.prepare('SELECT epoch, counter FROM roster_versions WHERE username = ?'),
      bump: db.prepare(`INSERT INTO roster_versions (username, epoch, counter) VALUES (?, ?, 1)
        ON CONFLICT (username) DO UPDATE SET counter = counter + 1 RETURNING epoch, counter`),
      items: db.prepare('SELECT jid, details, subscription, ask FROM roster_items WHERE username = ?'),
      item: db.prepare('SELECT jid, details, subscription, ask FROM roster_items WHERE username = ? AND jid = ?'),
      count: db.prepare('SELECT COUNT(*) AS n FROM roster_items WHERE username = ?'),
      bytes: db.prepare('SELECT COALESCE(SUM(LENGTH(CAST(jid AS BLOB)) + LENGTH(CAST(details AS BLOB))), 0) AS n FROM roster_items WHERE username = ?'),
      asking: db.prepare("SELECT COUNT(*) AS n FROM roster_items WHERE username = ? AND ask = 'subscribe' AND subscription IN ('none', 'from')"),
      insert: db.prepare('INSERT INTO roster_items (username, jid, details, subscription, ask) VALUES (?, ?, ?, ?, ?)'),
      updateDetails: db.prepare('UPDATE roster_items SET details = ? WHERE username = ? AND jid = ?'),
      updateSubscription: db.prepare('UPDATE roster_items SET subscription = ?, ask = ? WHERE username = ? AND jid = ?'),
      remove: db.prepare('DELETE FROM roster_items WHERE username = ? AND jid = ?'),
      removeItems: db.prepare('DELETE FROM roster_items WHERE username = ?'),
      removeVersion: db.prepare('DELETE FROM roster_versions WHERE username = ?'),
      pending: db.prepare('SELECT stanza FROM roster_pending WHERE username = ? AND jid = ?'),
      pendingAll: db.prepare('SELECT jid, stanza FROM roster_pending WHERE username = ? ORDER BY seq'),
      pendingCount: db.prepare('SELECT COUNT(*) AS n FROM roster_pending WHERE username = ?'),
      // Replaces a stale request (one the state did not count) as a new arrival.
      pendingInsert: db.prepare(`INSERT OR REPLACE INTO roster_pending (username, jid, stanza, seq)
        VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM roster_pending WHERE username = ?1))`),
      pendingRemove: db.prepare('DELETE FROM roster_pending WHERE username = ? AND jid = ?'),
      pendingRemoveAll: db.prepare('DELETE FROM roster_pending WHERE username = ?'),
    };
  }

  /** Opens (creating file and directory if needed) the roster database; ':memory:' for a private one. */
  static open(file: string): SqliteRosterStore {
    const db = openDatabase(file, SCHEMA);
    return new SqliteRosterStore(db);
  }

  private tx<T>(write: boolean, fn: () => T): T {
    return transaction(this.db, write, fn);
  }

  private currentVersion(user: string): string {
    const row = this.stmts.version.get(user);
    return row ? `${String(row.epoch)}.${String(row.counter)}` : EMPTY_VERSION;
  }

  private bump(user: string): string {
    const row = this.stmts.bump.get(user, randomBytes(6).toString('base64url'))!;
    return `${String(row.epoch)}.${String(row.counter)}`;
  }

  private full(user: string, max: number): boolean {
    return Number(this.stmts.count.get(user)!.n) >= max;
  }

  async get(user: string): Promise<{ version: string; items: RosterItem[] }> {
    checkUser(user);
    return this.tx(false, () => ({
      version: this.currentVersion(user),
      items: this.stmts.items.all(user).map(rowToItem).sort((a, b) => compareJids(a.jid, b.jid)),
    }));
  }

  async item(user: string, jid: string): Promise<RosterItem | undefined> {
    checkUser(user);
    const row = this.stmts.item.get(user, jid);
    return row ? rowToItem(row) : undefined;
  }

  async set(user: string, input: RosterItemInput, max: number, maxBytes = Number.MAX_SAFE_INTEGER): Promise<RosterChange> {
    checkUser(user);
    checkMax(max);
    checkMax(maxBytes);
    const details = encodeDetails(input);
    return this.tx(true, () => {
      const row = this.stmts.item.get(user, input.jid);
      if (!row && this.full(user, max)) throw new RosterFullError(max);
      const others = Number(this.stmts.bytes.get(user)!.n) - (row ? itemBytes(input.jid, String(row.details)) : 0);
      if (others + itemBytes(input.jid, details) > maxBytes) throw new RosterTooLargeError(maxBytes);
      if (row) {
        this.stmts.updateDetails.run(details, user, input.jid);
      } else {
        this.stmts.insert.run(user, input.jid, details, 'none', null);
      }
      const version = this.bump(user);
      return { version, item: rowToItem(this.stmts.item.get(user, input.jid)!) };
    });
  }

  async remove(user: string, jid: string): Promise<RosterChange | undefined> {
    checkUser(user);
    return this.tx(true, () => {
      this.stmts.pendingRemove.run(user, jid);
      const row = this.stmts.item.get(user, jid);
      if (!row) return undefined;
      this.stmts.remove.run(user, jid);
      return { version: this.bump(user), item: rowToItem(row) };
    });
  }

  async setSubscription(user: string, jid: string, subscription: Subscription, ask: 'subscribe' | undefined, create?: { max: number }): Promise<SubscriptionChange | undefined> {
    checkUser(user);
    checkSubscription(subscription, ask);
    if (create) checkMax(create.max);
    return this.tx(true, () => {
      const row = this.stmts.item.get(user, jid);
      if (!row) {
        if (!create) return undefined;
        if (this.full(user, create.max)) throw new RosterFullError(create.max);
        this.stmts.insert.run(user, jid, encodeDetails({ groups: [] }), subscription, ask ?? null);
      } else {
        const before = rowToItem(row);
        if (before.subscription === subscription && before.ask === ask) return { version: this.currentVersion(user), item: before, changed: false };
        this.stmts.updateSubscription.run(subscription, ask ?? null, user, jid);
      }
      const version = this.bump(user);
      return { version, item: rowToItem(this.stmts.item.get(user, jid)!), changed: true };
    });
  }

  async removeAll(user: string): Promise<void> {
    checkUser(user);
    this.tx(true, () => {
      this.stmts.removeItems.run(user);
      this.stmts.removeVersion.run(user);
      this.stmts.pendingRemoveAll.run(user);
    });
  }

  async transition(user: string, jid: string, table: TransitionTable, opts: TransitionOptions): Promise<TransitionResult> {
    checkUser(user);
    const { max, maxPending, maxOutgoing } = transitionLimits(opts);
    checkTable(table);
    return this.tx(true, () => {
      const row = this.stmts.item.get(user, jid);
      const current = row ? rowToItem(row) : undefined;
      const pending = this.stmts.pending.get(user, jid) !== undefined;
      const { before, after, next, createItem, changeItem, addPending, dropPending, addAsk } = planTransition(current, pending, table);
      if (after === before) return { before, after };
      if (createItem && this.full(user, max)) return { before, after: before, full: 'items' };
      // A contact already in the roster is no stranger: its request is let in beyond the limit.
      if (addPending && !pending && !current && Number(this.stmts.pendingCount.get(user)!.n) >= maxPending) return { before, after: before, full: 'pending' };
      if (addAsk && Number(this.stmts.asking.get(user)!.n) >= maxOutgoing) return { before, after: before, full: 'outgoing' };
      if (addPending) this.stmts.pendingInsert.run(user, jid, opts.request ?? '');
      if (dropPending) this.stmts.pendingRemove.run(user, jid);
      if (!changeItem) return { before, after };
      if (createItem) this.stmts.insert.run(user, jid, encodeDetails({ groups: [] }), next.subscription, next.ask ?? null);
      else this.stmts.updateSubscription.run(next.subscription, next.ask ?? null, user, jid);
      const version = this.bump(user);
      return { before, after, change: { version, item: rowToItem(this.stmts.item.get(user, jid)!) } };
    });
  }

  async state(user: string, jid: string): Promise<SubState> {
    checkUser(user);
    return this.tx(false, () => {
      const row = this.stmts.item.get(user, jid);
      return composeState(row ? rowToItem(row) : undefined, this.stmts.pending.get(user, jid) !== undefined);
    });
  }

  async pendingRequests(user: string): Promise<PendingRequest[]> {
    checkUser(user);
    return this.stmts.pendingAll.all(user).map((r) => ({ jid: String(r.jid), stanza: String(r.stanza) }));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
