// Accounts in SQLite (node:sqlite). Several worker threads, and processes,
// open the same file: WAL mode lets readers run beside the one writer and the
// busy timeout makes writers wait for each other instead of failing.
// Each account holds SCRAM verifiers for SHA-1 and SHA-256, each with its own
// salt; never the password. An account imported from another server may
// hold one hash's verifiers only (Prosody keeps SHA-1, an ejabberd set up
// for it SHA-256): the other's columns are then null.
import { openDatabase, transaction } from '../storage/sqlite.ts';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { randomBytes } from 'node:crypto';
import {
  type AccountStore, type ScramCredentials, type ScramHash,
  AccountExistsError, AccountNotFoundError,
  normalizeUsername, newUsername, normalizedOrUndefined, deriveBoth, verifierColumns, importedColumns,
} from './store.ts';


const SCHEMA = `
CREATE TABLE IF NOT EXISTS accounts (
  username TEXT PRIMARY KEY NOT NULL,
  created INTEGER NOT NULL,
  sha1_salt BLOB,
  sha1_iterations INTEGER,
  sha1_stored_key BLOB,
  sha1_server_key BLOB,
  sha256_salt BLOB,
  sha256_iterations INTEGER,
  sha256_stored_key BLOB,
  sha256_server_key BLOB
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY NOT NULL,
  value BLOB NOT NULL
) STRICT;
`;

const COLUMN: Record<ScramHash, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256' };

/** A file made when every verifier was required: the table is rebuilt with nullable ones, rows kept. */
function upgrade(db: DatabaseSync): void {
  const row = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'accounts'").get();
  if (!row || !/sha1_salt BLOB NOT NULL/i.test(String(row.sql))) return;
  transaction(db, true, () =>
    db.exec(`ALTER TABLE accounts RENAME TO accounts_old;
      ${SCHEMA}
      INSERT INTO accounts SELECT * FROM accounts_old;
      DROP TABLE accounts_old;`),
  );
}

function toBuffer(v: unknown): Buffer {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError('expected a BLOB');
}


export class SqliteAccountStore implements AccountStore {
  readonly iterations: number;
  private readonly db: DatabaseSync;
  private readonly secret: Buffer;
  private readonly stmts: {
    exists: StatementSync;
    insert: StatementSync;
    update: StatementSync;
    remove: StatementSync;
    list: StatementSync;
    scram: Record<ScramHash, StatementSync>;
  };
  private closed = false;

  private constructor(db: DatabaseSync, iterations: number) {
    this.db = db;
    this.iterations = iterations;
    db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('scram-fake-salt-key', randomBytes(32));
    this.secret = toBuffer(db.prepare('SELECT value FROM meta WHERE key = ?').get('scram-fake-salt-key')!.value);
    const cols = (h: string) => `${h}_salt, ${h}_iterations, ${h}_stored_key, ${h}_server_key`;
    this.stmts = {
      exists: db.prepare('SELECT 1 AS x FROM accounts WHERE username = ?'),
      insert: db.prepare(`INSERT INTO accounts (username, created, ${cols('sha1')}, ${cols('sha256')})
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING`),
      update: db.prepare(`UPDATE accounts SET
        sha1_salt = ?, sha1_iterations = ?, sha1_stored_key = ?, sha1_server_key = ?,
        sha256_salt = ?, sha256_iterations = ?, sha256_stored_key = ?, sha256_server_key = ?
        WHERE username = ?`),
      remove: db.prepare('DELETE FROM accounts WHERE username = ?'),
      list: db.prepare('SELECT username FROM accounts ORDER BY username'),
      scram: {
        'SHA-1': db.prepare(`SELECT ${cols('sha1')} FROM accounts WHERE username = ?`),
        'SHA-256': db.prepare(`SELECT ${cols('sha256')} FROM accounts WHERE username = ?`),
      },
    };
  }

  /** Opens (creating file and directory if needed) the account database. */
  static open(file: string, iterations: number): SqliteAccountStore {
    if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError(`invalid iteration count ${iterations}`);
    return new SqliteAccountStore(openDatabase(file, SCHEMA, upgrade), iterations);
  }

  fakeSaltKey(): Buffer {
    return this.secret;
  }

  private derive(password: string): Promise<[ScramCredentials, ScramCredentials]> {
    return deriveBoth(password, this.iterations);
  }

  async create(username: string, password: string): Promise<void> {
    const user = newUsername(username);
    if (this.stmts.exists.get(user)) throw new AccountExistsError(`account ${user} already exists`);
    const [sha1, sha256] = await this.derive(password);
    const r = this.stmts.insert.run(user, Date.now(), ...verifierColumns(sha1), ...verifierColumns(sha256));
    if (r.changes === 0) throw new AccountExistsError(`account ${user} already exists`);
  }

  async importAccount(username: string, verifiers: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean> {
    const user = newUsername(username);
    return this.stmts.insert.run(user, Date.now(), ...importedColumns(verifiers)).changes > 0;
  }

  async remove(username: string): Promise<boolean> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return false;
    return this.stmts.remove.run(user).changes > 0;
  }

  async setPassword(username: string, password: string): Promise<void> {
    const user = normalizeUsername(username);
    if (!this.stmts.exists.get(user)) throw new AccountNotFoundError(`no account ${user}`);
    const [sha1, sha256] = await this.derive(password);
    const r = this.stmts.update.run(...verifierColumns(sha1), ...verifierColumns(sha256), user);
    if (r.changes === 0) throw new AccountNotFoundError(`no account ${user}`);
  }

  async exists(username: string): Promise<boolean> {
    const user = normalizedOrUndefined(username);
    return user !== undefined && this.stmts.exists.get(user) !== undefined;
  }

  async list(): Promise<string[]> {
    return this.stmts.list.all().map((row) => String(row.username));
  }

  async scram(username: string, hash: ScramHash): Promise<ScramCredentials | undefined> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return undefined;
    const stmt = this.stmts.scram[hash];
    if (!stmt) throw new TypeError(`unknown SCRAM hash ${String(hash)}`);
    const row = stmt.get(user);
    const h = COLUMN[hash];
    // No verifiers of this hash (an import that had the other's only): none to offer.
    if (!row || row[`${h}_salt`] === null || row[`${h}_stored_key`] === null) return undefined;
    return {
      salt: toBuffer(row[`${h}_salt`]),
      iterations: Number(row[`${h}_iterations`]),
      storedKey: toBuffer(row[`${h}_stored_key`]),
      serverKey: toBuffer(row[`${h}_server_key`]),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
