// Accounts in PostgreSQL, for a cluster: the same rows as the SQLite store
// (SCRAM verifiers for SHA-1 and SHA-256, each with its own salt; never the
// password), every statement parameterised, through a pool shared by the
// process's users of it. The schema is the migrations' (storage/postgres.ts).
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { acquirePool } from '../storage/postgres.ts';
import {
  type AccountStore, type ScramCredentials, type ScramHash,
  AccountExistsError, AccountNotFoundError,
  normalizeUsername, newUsername, normalizedOrUndefined, deriveBoth, verifierColumns, importedColumns,
} from './store.ts';

const COLUMN: Record<ScramHash, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256' };
const FAKE_SALT_KEY = 'scram-fake-salt-key';
/** PostgreSQL's unique_violation. */
const UNIQUE_VIOLATION = '23505';

interface Row {
  salt: Buffer | null;
  iterations: number | null;
  stored_key: Buffer | null;
  server_key: Buffer | null;
}

export class PostgresAccountStore implements AccountStore {
  readonly iterations: number;
  private readonly pool: pg.Pool;
  private readonly releasePool: () => Promise<void>;
  private readonly secret: Buffer;
  private closing: Promise<void> | undefined;

  private constructor(pool: pg.Pool, release: () => Promise<void>, iterations: number, secret: Buffer) {
    this.pool = pool;
    this.releasePool = release;
    this.iterations = iterations;
    this.secret = secret;
  }

  /** Connects, brings the schema up to date, and reads (or makes, once for all nodes) the fake-salt key. */
  static async open(url: string, iterations: number): Promise<PostgresAccountStore> {
    if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError(`invalid iteration count ${iterations}`);
    const { pool, release } = await acquirePool(url);
    try {
      await pool.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [FAKE_SALT_KEY, randomBytes(32)]);
      const r = await pool.query<{ value: Buffer }>('SELECT value FROM meta WHERE key = $1', [FAKE_SALT_KEY]);
      return new PostgresAccountStore(pool, release, iterations, r.rows[0].value);
    } catch (err) {
      await release();
      throw err;
    }
  }

  fakeSaltKey(): Buffer {
    return this.secret;
  }

  private derive(password: string): Promise<[ScramCredentials, ScramCredentials]> {
    return deriveBoth(password, this.iterations);
  }

  async create(username: string, password: string): Promise<void> {
    const user = newUsername(username);
    if (await this.exists(user)) throw new AccountExistsError(`account ${user} already exists`);
    const [sha1, sha256] = await this.derive(password);
    try {
      const r = await this.pool.query(
        `INSERT INTO accounts (username, created, sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (username) DO NOTHING`,
        [user, Date.now(), ...verifierColumns(sha1), ...verifierColumns(sha256)],
      );
      if (r.rowCount === 0) throw new AccountExistsError(`account ${user} already exists`);
    } catch (err) {
      if ((err as { code?: string }).code === UNIQUE_VIOLATION) throw new AccountExistsError(`account ${user} already exists`);
      throw err;
    }
  }

  async importAccount(username: string, verifiers: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean> {
    const user = newUsername(username);
    const columns = importedColumns(verifiers);
    const r = await this.pool.query(
      `INSERT INTO accounts (username, created, sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (username) DO NOTHING`,
      [user, Date.now(), ...columns],
    );
    return (r.rowCount ?? 0) > 0;
  }

  async remove(username: string): Promise<boolean> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return false;
    return ((await this.pool.query('DELETE FROM accounts WHERE username = $1', [user])).rowCount ?? 0) > 0;
  }

  async setPassword(username: string, password: string): Promise<void> {
    const user = normalizeUsername(username);
    if (!(await this.exists(user))) throw new AccountNotFoundError(`no account ${user}`);
    const [sha1, sha256] = await this.derive(password);
    const r = await this.pool.query(
      `UPDATE accounts SET sha1_salt = $1, sha1_iterations = $2, sha1_stored_key = $3, sha1_server_key = $4,
         sha256_salt = $5, sha256_iterations = $6, sha256_stored_key = $7, sha256_server_key = $8 WHERE username = $9`,
      [...verifierColumns(sha1), ...verifierColumns(sha256), user],
    );
    if (r.rowCount === 0) throw new AccountNotFoundError(`no account ${user}`);
  }

  async exists(username: string): Promise<boolean> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return false;
    return ((await this.pool.query('SELECT 1 FROM accounts WHERE username = $1', [user])).rowCount ?? 0) > 0;
  }

  async list(): Promise<string[]> {
    // COLLATE "C": code-point order, as the SQLite store sorts.
    return (await this.pool.query<{ username: string }>('SELECT username FROM accounts ORDER BY username COLLATE "C"')).rows.map((r) => r.username);
  }

  async scram(username: string, hash: ScramHash): Promise<ScramCredentials | undefined> {
    const user = normalizedOrUndefined(username);
    if (user === undefined) return undefined;
    const h = COLUMN[hash];
    if (!h) throw new TypeError(`unknown SCRAM hash ${String(hash)}`);
    const r = await this.pool.query<Row>(`SELECT ${h}_salt AS salt, ${h}_iterations AS iterations, ${h}_stored_key AS stored_key, ${h}_server_key AS server_key FROM accounts WHERE username = $1`, [user]);
    const row = r.rows[0];
    // A row without this hash's verifiers (an imported SHA-1-only account) has none to offer.
    if (!row || row.salt === null || row.iterations === null || row.stored_key === null || row.server_key === null) return undefined;
    return { salt: row.salt, iterations: row.iterations, storedKey: row.stored_key, serverKey: row.server_key };
  }

  close(): Promise<void> {
    this.closing ??= this.releasePool();
    return this.closing;
  }
}
