// What the SQLite stores (accounts, rosters, offline messages) share: one
// file each in the data directory, opened by every worker thread (and the
// CLI). WAL lets readers run beside the one writer; the busy timeout makes
// writers wait for each other instead of failing.
import { DatabaseSync } from 'node:sqlite';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { makePrivateDir, makePrivateFile } from './files.ts';

export const BUSY_TIMEOUT_MS = 10_000;

/** A store that was to be opened only if it exists, and does not. */
export class StoreMissingError extends Error {
  override name = 'StoreMissingError';
  readonly path: string;

  constructor(path: string) {
    super(`no database at ${path}`);
    this.path = path;
  }
}

/** Throws StoreMissingError unless the database file exists. */
export function requireDatabase(file: string): void {
  if (!existsSync(resolve(file))) throw new StoreMissingError(resolve(file));
}

export interface OpenOptions {
  /** Only open a store that exists (StoreMissingError otherwise): the CLI must not create one the server never reads. */
  existing?: boolean;
}

/** The file of the store `name` in the data directory; with `existing`, throws StoreMissingError when there is none. */
export function storeFile(dataDir: string, name: string, { existing = false }: OpenOptions = {}): string {
  const file = join(dataDir, `${name}.sqlite`);
  if (existing) requireDatabase(file);
  return file;
}

/**
 * Opens (creating file and directory if needed, for the owner only; ':memory:'
 * for a private one) and applies the schema, then `upgrade` (an older file brought up to it); closed if either fails.
 */
export function openDatabase(file: string, schema: string, upgrade?: (db: DatabaseSync) => void): DatabaseSync {
  const memory = file === ':memory:';
  if (!memory) {
    makePrivateDir(dirname(resolve(file)));
    makePrivateFile(resolve(file));
  }
  const db = new DatabaseSync(memory ? file : resolve(file), { timeout: BUSY_TIMEOUT_MS });
  try {
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = NORMAL');
    db.exec(schema);
    upgrade?.(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Runs `fn` in a transaction and commits, or rolls back on a throw:
 * IMMEDIATE (the write lock at once, so two writers never deadlock on an
 * upgrade from reading) for changes, deferred for reads.
 */
export function transaction<T>(db: DatabaseSync, write: boolean, fn: () => T): T {
  db.exec(write ? 'BEGIN IMMEDIATE' : 'BEGIN');
  try {
    const out = fn();
    db.exec('COMMIT');
    return out;
  } catch (err) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw err;
  }
}
