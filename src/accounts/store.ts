// Account storage contract and the credential maths behind it. Only SCRAM
// verifiers (RFC 5802 §3: salt, iteration count, StoredKey, ServerKey) are
// kept, never a password; PLAIN is checked by deriving them again.
import { pbkdf2, randomBytes, createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import saslprep from 'saslprep';
import { normalizeLocal, JidError } from '../xmpp/jid.ts';

export type ScramHash = 'SHA-1' | 'SHA-256';
export const SCRAM_HASHES: readonly ScramHash[] = ['SHA-1', 'SHA-256'];

export interface ScramCredentials {
  salt: Buffer;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
}

export interface AccountStore {
  /** Throws InvalidUsernameError, InvalidPasswordError, AccountExistsError. */
  create(username: string, password: string): Promise<void>;
  /** False when there was no such account. */
  remove(username: string): Promise<boolean>;
  /** Throws InvalidUsernameError, InvalidPasswordError, AccountNotFoundError. */
  setPassword(username: string, password: string): Promise<void>;
  exists(username: string): Promise<boolean>;
  /** Normalised usernames, sorted. */
  list(): Promise<string[]>;
  /** Undefined when there is no such account (or the name cannot be one). */
  scram(username: string, hash: ScramHash): Promise<ScramCredentials | undefined>;
  /**
   * Creates an account from verifiers made elsewhere (an XEP-0227 import):
   * those of one hash or both, as given. False, and nothing written, when
   * the account exists. Throws InvalidUsernameError, and TypeError when
   * there are none.
   */
  importAccount(username: string, verifiers: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean>;
  /** Releases the store; a store backed by a connection resolves once it is closed. Idempotent. */
  close(): void | Promise<void>;
  /** PBKDF2 iterations used for new verifiers; SCRAM's fake exchange for unknown users announces the same. */
  readonly iterations?: number;
  /**
   * A secret shared by everything using this store (every thread, every
   * process), keying the fake salts SCRAM shows for unknown users so that
   * they are the same on every connection. Without it a per-thread one is used.
   */
  fakeSaltKey?(): Buffer;
}

export class InvalidUsernameError extends Error {
  override name = 'InvalidUsernameError';
}
export class InvalidPasswordError extends Error {
  override name = 'InvalidPasswordError';
}
export class AccountExistsError extends Error {
  override name = 'AccountExistsError';
}
export class AccountNotFoundError extends Error {
  override name = 'AccountNotFoundError';
}

/**
 * The one spelling of a username: a JID localpart (RFC 7622 §3.3), prepared
 * with the UsernameCaseMapped profile (RFC 8265 §3.3) by the JID code, so
 * that SASL, the CLI, registration and stanza addresses agree.
 */
export function normalizeUsername(raw: string): string {
  if (typeof raw !== 'string') throw new InvalidUsernameError('invalid username');
  try {
    return normalizeLocal(raw);
  } catch (err) {
    if (err instanceof JidError) throw new InvalidUsernameError(err.message.replace('localpart', 'username'));
    throw err;
  }
}

/**
 * The localpart prefix of ANONYMOUS sessions' JIDs (XEP-0175). No account may
 * start with it: an anonymous JID must never name an account, and a session
 * record (of a dead node, say) is known to be anonymous by its JID alone.
 */
export const ANON_PREFIX = 'anon-';

/** normalizeUsername, for a new account: also refuses the anonymous prefix. */
export function newUsername(raw: string): string {
  const s = normalizeUsername(raw);
  if (s.startsWith(ANON_PREFIX)) throw new InvalidUsernameError(`invalid username ${JSON.stringify(raw)}: "${ANON_PREFIX}" is reserved for anonymous sessions`);
  return s;
}

/** Node's name for the hash and its output length in bytes. */
export function hashInfo(hash: ScramHash): { algorithm: 'sha1' | 'sha256'; length: number } {
  switch (hash) {
    case 'SHA-1': return { algorithm: 'sha1', length: 20 };
    case 'SHA-256': return { algorithm: 'sha256', length: 32 };
    default: throw new TypeError(`unknown SCRAM hash ${String(hash)}`);
  }
}

export function hmac(hash: ScramHash, key: Buffer, data: Buffer | string): Buffer {
  return createHmac(hashInfo(hash).algorithm, key).update(data).digest();
}

export function digest(hash: ScramHash, data: Buffer | string): Buffer {
  return createHash(hashInfo(hash).algorithm).update(data).digest();
}

/**
 * The longest password taken, in UTF-8 bytes: hashing is priced by its
 * length too (a 180 KB one cost 19 ms of PBKDF2), and no person types more.
 * RFC 4616 §2 asks a server to take 255 octets at least.
 */
export const MAX_PASSWORD_BYTES = 1024;

/**
 * SASLprep (RFC 4013) of a password. Queries (authentication) allow
 * unassigned code points; stored strings (setting a password) do not.
 * Throws InvalidPasswordError when the result is unusable or empty.
 */
export function preparePassword(password: string, stored = false): string {
  if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) throw new InvalidPasswordError(`password longer than ${MAX_PASSWORD_BYTES} bytes`);
  let prepared: string;
  try {
    prepared = saslprep(password, { allowUnassigned: !stored });
  } catch (err) {
    throw new InvalidPasswordError(`password not allowed: ${(err as Error).message}`);
  }
  if (prepared.length === 0) throw new InvalidPasswordError('empty password');
  return prepared;
}

const pbkdf2Async = promisify(pbkdf2);

/**
 * RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i),
 * StoredKey = H(HMAC(SaltedPassword, "Client Key")),
 * ServerKey = HMAC(SaltedPassword, "Server Key").
 * PBKDF2 runs on the libuv thread pool, never on the event loop.
 */
export async function deriveScram(password: string, hash: ScramHash, iterations: number, salt?: Buffer): Promise<ScramCredentials> {
  if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError(`invalid iteration count ${iterations}`);
  const { algorithm, length } = hashInfo(hash);
  const prepared = preparePassword(password);
  const s = salt ? Buffer.from(salt) : randomBytes(16);
  const salted = await pbkdf2Async(Buffer.from(prepared, 'utf8'), s, iterations, length, algorithm);
  const clientKey = hmac(hash, salted, 'Client Key');
  return {
    salt: s,
    iterations,
    storedKey: digest(hash, clientKey),
    serverKey: hmac(hash, salted, 'Server Key'),
  };
}

/** Checks a password (SASL PLAIN) against stored verifiers, in constant time. */
export async function verifyPassword(creds: ScramCredentials, hash: ScramHash, password: string): Promise<boolean> {
  let derived: ScramCredentials;
  try {
    derived = await deriveScram(password, hash, creds.iterations, creds.salt);
  } catch (err) {
    if (err instanceof InvalidPasswordError) return false;
    throw err;
  }
  return derived.storedKey.length === creds.storedKey.length && timingSafeEqual(derived.storedKey, creds.storedKey);
}

/** A name that can never be an account: lookups answer "no such account". */
export function normalizedOrUndefined(username: string): string | undefined {
  try {
    return normalizeUsername(username);
  } catch (err) {
    if (err instanceof InvalidUsernameError) return undefined;
    throw err;
  }
}

/** New verifiers for both hashes from a password that is to be stored (SASLprep's stored-string rules): what every store keeps. */
export async function deriveBoth(password: string, iterations: number): Promise<[ScramCredentials, ScramCredentials]> {
  preparePassword(password, true); // stored string rules: no unassigned code points
  return Promise.all([deriveScram(password, 'SHA-1', iterations), deriveScram(password, 'SHA-256', iterations)]);
}

/** A verifier as a row's four columns: salt, iterations, StoredKey, ServerKey. */
export function verifierColumns(c: ScramCredentials): [Buffer, number, Buffer, Buffer] {
  return [c.salt, c.iterations, c.storedKey, c.serverKey];
}

/** Checks verifiers given for an import: at least one hash, each well formed; the row's eight columns (null where a hash is missing). */
export function importedColumns(verifiers: Partial<Record<ScramHash, ScramCredentials>>): (Buffer | number | null)[] {
  const given = SCRAM_HASHES.filter((h) => verifiers[h] !== undefined);
  if (given.length === 0) throw new TypeError('no SCRAM verifiers');
  return SCRAM_HASHES.flatMap((h) => {
    const c = verifiers[h];
    if (!c) return [null, null, null, null];
    const { length } = hashInfo(h);
    if (!Number.isSafeInteger(c.iterations) || c.iterations < 1) throw new RangeError(`invalid SCRAM-${h} iteration count ${c.iterations}`);
    if (c.storedKey.length !== length || c.serverKey.length !== length) throw new RangeError(`SCRAM-${h} keys must be ${length} bytes`);
    if (c.salt.length === 0) throw new RangeError(`empty SCRAM-${h} salt`);
    return verifierColumns(c);
  });
}
