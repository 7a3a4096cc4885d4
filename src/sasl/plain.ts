// SASL PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd, in one message.
// Only over TLS. The password is checked against the stored SCRAM-SHA-256
// verifiers by deriving them again; an account that has SCRAM-SHA-1 ones
// only (imported from a server that never kept SHA-256) is checked against
// those; an account with one hash's verifiers only gets both from the
// password it just proved.
import { randomBytes, createHmac } from 'node:crypto';
import { SaslFailure } from '../xmpp/errors.ts';
import { normalizeUsername, verifyPassword, MAX_PASSWORD_BYTES, type ScramCredentials } from '../accounts/store.ts';
import type { Mechanism, MechanismContext, MechanismFactory, SaslResult } from './mechanism.ts';
import { admitAccount, authzidMatches, decodeUtf8, fromStore } from './util.ts';
import { log } from '../log.ts';

const PROCESS_SECRET = randomBytes(32);
/** A localpart is at most 1023 bytes (RFC 7622 §3.3.1); RFC 4616 §2 asks for 255 at least. */
const MAX_AUTHCID_BYTES = 1023;

export class PlainMechanism implements Mechanism {
  private readonly ctx: MechanismContext;
  private done = false;
  attempted: string | undefined;

  constructor(ctx: MechanismContext) {
    this.ctx = ctx;
  }

  async start(initial: Buffer | null): Promise<SaslResult> {
    if (!this.ctx.secure) {
      this.done = true;
      throw new SaslFailure('mechanism-too-weak', 'PLAIN needs TLS');
    }
    // No initial response: ask for it with an empty challenge (RFC 6120 §6.4.2).
    if (initial === null) return { kind: 'challenge', data: Buffer.alloc(0) };
    return this.step(initial);
  }

  async step(response: Buffer): Promise<SaslResult> {
    if (this.done) throw new SaslFailure('malformed-request', 'exchange already finished');
    this.done = true;
    if (!this.ctx.secure) throw new SaslFailure('mechanism-too-weak', 'PLAIN needs TLS');

    const parts = decodeUtf8(response).split('\0');
    if (parts.length !== 3) throw new SaslFailure('malformed-request', 'PLAIN message needs exactly two NUL separators');
    const [authzid, authcid, password] = parts;
    if (authcid.length === 0) throw new SaslFailure('malformed-request', 'empty authentication identity');
    // RFC 4616 §2 asks a server to take identities and passwords of 255 octets at least; longer than any account can have is refused before any hashing.
    if (Buffer.byteLength(authcid) > MAX_AUTHCID_BYTES) throw new SaslFailure('malformed-request', `authentication identity longer than ${MAX_AUTHCID_BYTES} bytes`);
    this.attempted = authcid;
    if (password.length === 0) throw new SaslFailure('malformed-request', 'empty password');
    if (Buffer.byteLength(password) > MAX_PASSWORD_BYTES) throw new SaslFailure('malformed-request', `password longer than ${MAX_PASSWORD_BYTES} bytes`);
    const { resuming } = await admitAccount(this.ctx, authcid);

    let username: string | undefined;
    try {
      username = normalizeUsername(authcid);
    } catch {
      username = undefined; // cannot be an account: fails below like an unknown one
    }
    if (authzid !== '' && !authzidMatches(authzid, username, this.ctx.domain)) {
      throw new SaslFailure('invalid-authzid', 'may only authorize as oneself');
    }

    const store = this.ctx.store;
    let hash: 'SHA-256' | 'SHA-1' = 'SHA-256';
    let creds = username === undefined ? undefined : await fromStore(() => store.scram(username, 'SHA-256'));
    if (!creds && username !== undefined) {
      creds = await fromStore(() => store.scram(username, 'SHA-1'));
      if (creds) hash = 'SHA-1';
    }
    // Unknown users cost the same PBKDF2 work as known ones, against a verifier nothing matches.
    const target: ScramCredentials = creds ?? {
      salt: createHmac('sha256', store.fakeSaltKey?.() ?? PROCESS_SECRET).update(`PLAIN\0${authcid}`).digest().subarray(0, 16),
      iterations: store.iterations ?? 4096,
      storedKey: randomBytes(32),
      serverKey: randomBytes(32),
    };
    const ok = await (this.ctx.hashing ? this.ctx.hashing(() => verifyPassword(target, hash, password), resuming) : verifyPassword(target, hash, password));
    if (!ok || !creds || username === undefined) throw new SaslFailure('not-authorized');
    // An import may have left one hash's verifiers only (SHA-1 from Prosody, SHA-256 from an ejabberd set up so).
    const other = hash === 'SHA-1' || !(await fromStore(() => store.scram(username, 'SHA-1')));
    if (other) {
      // The password is known now: the account gets verifiers of both hashes.
      // The login stands if this fails (the store went away): the next one tries again.
      await store.setPassword(username, password).catch((err: unknown) => log.warn('verifiers of both hashes not given to an account that had one only', { user: username, err: String(err) }));
    }
    return { kind: 'success', username };
  }
}

export const plain: MechanismFactory = {
  name: 'PLAIN',
  available: ({ secure }) => secure,
  create: (ctx) => new PlainMechanism(ctx),
};
