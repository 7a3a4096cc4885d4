// The data directory holds password hashes, rosters, offline messages and the
// TLS key: it is created readable by its owner only (0700), and so is every
// file the server and the CLI create in it (0600). What an operator or an
// older version made more open is reported, not changed.
import { closeSync, mkdirSync, openSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Creates the directory (and its missing parents) for the owner only; an existing one is left as it is. */
export function makePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/**
 * Creates an empty file for the owner only unless it exists. SQLite creates
 * a database 0644 but gives its -wal and -shm files the database's mode:
 * a database created here first keeps all three private.
 */
export function makePrivateFile(file: string): void {
  try {
    closeSync(openSync(file, 'wx', PRIVATE_FILE_MODE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

export interface OpenEntry {
  path: string;
  /** Permission bits, e.g. "0644". */
  mode: string;
  expected: string;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/** The data directory and what it holds, where group or others have any access; nothing when it does not exist. */
export function openToOthers(dataDir: string): OpenEntry[] {
  const out: OpenEntry[] = [];
  const check = (path: string) => {
    let st;
    try {
      st = statSync(path); // a symlink is judged by what it points to
    } catch {
      return; // gone meanwhile, or a dangling link: nothing to read
    }
    if ((st.mode & 0o077) === 0) return;
    out.push({ path, mode: octal(st.mode), expected: octal(st.isDirectory() ? PRIVATE_DIR_MODE : PRIVATE_FILE_MODE) });
  };
  try {
    if (!statSync(dataDir).isDirectory()) return out;
  } catch {
    return out;
  }
  check(dataDir);
  for (const name of readdirSync(dataDir, { recursive: true }) as string[]) check(join(dataDir, name));
  return out;
}
