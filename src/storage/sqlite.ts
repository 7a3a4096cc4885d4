// What the SQLite stores (accounts, rosters, offline messages) share: one
// file each in the data directory, opened by every worker thread (and the
// CLI). WAL lets readers run beside the one writer; the busy timeout makes
// writers wait for each other instead of failing.
import { DatabaseSync } from 'node:sqlite';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export const BUSY_TIMEOUT_MS = 10_000;

/** Opens (creating file and directory if needed; ':memory:' for a private one) and applies the schema. */
export function openDatabase(file: string, schema: string): DatabaseSync {
  const memory = file === ':memory:';
  if (!memory) mkdirSync(dirname(resolve(file)), { recursive: true, mode: 0o700 });
  const db = new DatabaseSync(memory ? file : resolve(file), { timeout: BUSY_TIMEOUT_MS });
  try {
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = NORMAL');
    db.exec(schema);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
