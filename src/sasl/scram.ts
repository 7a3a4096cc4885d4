// SCRAM (RFC 5802) with SHA-1 and SHA-256 (RFC 7677), without channel
// binding (no -PLUS variants). Exchange:
//   C: gs2-header client-first-message-bare      (start / first step)
//   S: r=cnonce+snonce,s=salt,i=iterations        (challenge)
//   C: c=base64(gs2-header),r=nonce,p=proof        (step)
//   S: v=ServerSignature                           (success data)
// Unknown users get a fake exchange (a salt derived from the username with a
// secret key, the store's iteration count) and fail only at the proof, so the
// exchange does not tell whether an account exists.
//
// An account imported with one hash's verifiers only (SCRAM-SHA-1 from
// Prosody) is answered, for the other mechanism, as an unknown user is:
// the fake exchange, then <not-authorized/>. Mechanisms are offered before
// the client names itself (RFC 6120 §6.4.1), so SCRAM-SHA-256 stays offered
// on every stream; RFC 6120 §6.5.10 makes not-authorized the condition for
// a failure whose cause the server does not disclose (invalid-mechanism or
// mechanism-too-weak, §6.5.5 and §6.5.8, would say the account exists, and
// neither is true of the stream), and §6.4.5 lets the client retry on the
// same stream and fall back to the next mechanism of its list: SCRAM-SHA-1
// then succeeds (the engine allows XMPP_MAX_AUTH_ATTEMPTS tries). A PLAIN
// login or a password change gives the account both hashes.
import { randomBytes, createHmac, timingSafeEqual } from 'node:crypto';
import { SaslFailure } from '../xmpp/errors.ts';
import { normalizeUsername, hashInfo, hmac, digest, type ScramCredentials, type ScramHash } from '../accounts/store.ts';
import type { Mechanism, MechanismContext, MechanismFactory, SaslResult } from './mechanism.ts';
import { admitAccount, authzidMatches, decodeUtf8, fromStore } from './util.ts';

const PROCESS_SECRET = randomBytes(32);
const DEFAULT_ITERATIONS = 4096;

// RFC 5802 §7 grammar pieces.
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/; // nonce characters: printable ASCII but ","
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ATTR_VAL = /^[A-Za-z]=[^,\0]+$/; // extension: attr-val
const SASLNAME = /^(?:[^,=\0]|=2C|=3D)+$/; // value-safe-char / "=2C" / "=3D"

export interface ScramOptions {
  /** Test hook: the server's part of the nonce (printable, no ","). */
  serverNonce?: () => string;
}

function malformed(text: string): SaslFailure {
  return new SaslFailure('malformed-request', text);
}

function decodeSaslname(s: string, what: string): string {
  if (!SASLNAME.test(s)) throw malformed(`bad ${what}`);
  return s.replace(/=2C|=3D/g, (m) => (m === '=2C' ? ',' : '='));
}

function decodeBase64(s: string, what: string): Buffer {
  if (!BASE64.test(s)) throw malformed(`${what} is not base64`);
  return Buffer.from(s, 'base64');
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

type State =
  | { at: 'initial' }
  | {
      at: 'first-sent';
      gs2Header: string;
      clientFirstBare: string;
      serverFirst: string;
      nonce: string;
      username: string | undefined;
      creds: ScramCredentials | undefined;
    }
  | { at: 'done' };

export class ScramMechanism implements Mechanism {
  private readonly hash: ScramHash;
  private readonly ctx: MechanismContext;
  private readonly serverNonce: () => string;
  private state: State = { at: 'initial' };
  attempted: string | undefined;

  constructor(hash: ScramHash, ctx: MechanismContext, options: ScramOptions = {}) {
    hashInfo(hash); // validates
    this.hash = hash;
    this.ctx = ctx;
    this.serverNonce = options.serverNonce ?? (() => randomBytes(18).toString('base64'));
  }

  async start(initial: Buffer | null): Promise<SaslResult> {
    if (this.state.at !== 'initial') throw malformed('exchange already started');
    // No initial response: ask for client-first with an empty challenge (RFC 6120 §6.4.2).
    if (initial === null) return { kind: 'challenge', data: Buffer.alloc(0) };
    return this.step(initial);
  }

  async step(response: Buffer): Promise<SaslResult> {
    const state = this.state;
    this.state = { at: 'done' }; // any failure ends the exchange
    switch (state.at) {
      case 'initial': return this.clientFirst(decodeUtf8(response));
      case 'first-sent': return this.clientFinal(decodeUtf8(response), state);
      case 'done': throw malformed('exchange already finished');
    }
  }

  private async clientFirst(msg: string): Promise<SaslResult> {
    const parts = msg.split(',');
    if (parts.length < 4) throw malformed('client-first-message too short');
    const [cbflag, authzField] = parts;
    if (cbflag.startsWith('p=')) throw malformed('channel binding is not supported');
    if (cbflag !== 'n' && cbflag !== 'y') throw malformed('bad GS2 channel binding flag');
    let authzid: string | undefined;
    if (authzField !== '') {
      if (!authzField.startsWith('a=')) throw malformed('bad GS2 header');
      authzid = decodeSaslname(authzField.slice(2), 'authzid');
    }
    const gs2Header = `${cbflag},${authzField},`;
    const bare = parts.slice(2);
    if (bare[0].startsWith('m=')) throw malformed('unsupported mandatory extension');
    if (!bare[0].startsWith('n=')) throw malformed('client-first-message has no username');
    const rawUser = decodeSaslname(bare[0].slice(2), 'username');
    this.attempted = rawUser;
    await admitAccount(this.ctx, rawUser);
    if (!bare[1].startsWith('r=')) throw malformed('client-first-message has no nonce');
    const cnonce = bare[1].slice(2);
    if (!PRINTABLE.test(cnonce)) throw malformed('bad client nonce');
    for (const ext of bare.slice(2)) if (!ATTR_VAL.test(ext)) throw malformed('bad extension');

    let username: string | undefined;
    try {
      username = normalizeUsername(rawUser);
    } catch {
      username = undefined; // never an account: continues like an unknown one
    }
    if (authzid !== undefined && !authzidMatches(authzid, username, this.ctx.domain)) {
      throw new SaslFailure('invalid-authzid', 'may only authorize as oneself');
    }

    const store = this.ctx.store;
    const creds = username === undefined ? undefined : await fromStore(() => store.scram(username, this.hash));
    const salt = creds?.salt ?? this.fakeSalt(username ?? rawUser);
    const iterations = creds?.iterations ?? store.iterations ?? DEFAULT_ITERATIONS;

    const snonce = this.serverNonce();
    if (!PRINTABLE.test(snonce)) throw new Error('server nonce must be printable without ","');
    const nonce = cnonce + snonce;
    const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=${iterations}`;
    this.state = { at: 'first-sent', gs2Header, clientFirstBare: bare.join(','), serverFirst, nonce, username, creds };
    return { kind: 'challenge', data: Buffer.from(serverFirst, 'utf8') };
  }

  private async clientFinal(msg: string, s: Extract<State, { at: 'first-sent' }>): Promise<SaslResult> {
    const parts = msg.split(',');
    if (parts.length < 3) throw malformed('client-final-message too short');
    const [cb, nonceAttr] = parts;
    const proofAttr = parts[parts.length - 1];
    if (!cb.startsWith('c=')) throw malformed('client-final-message has no channel binding');
    if (!nonceAttr.startsWith('r=')) throw malformed('client-final-message has no nonce');
    if (!proofAttr.startsWith('p=')) throw malformed('client-final-message has no proof');
    for (const ext of parts.slice(2, -1)) if (!ATTR_VAL.test(ext)) throw malformed('bad extension');
    const cbData = decodeBase64(cb.slice(2), 'channel binding');
    if (!cbData.equals(Buffer.from(s.gs2Header, 'utf8'))) throw malformed('channel binding does not match the GS2 header');
    if (nonceAttr.slice(2) !== s.nonce) throw malformed('wrong nonce');
    const proof = decodeBase64(proofAttr.slice(2), 'proof');
    if (proof.length !== hashInfo(this.hash).length) throw malformed('proof has the wrong length');

    if (!s.creds || s.username === undefined) throw new SaslFailure('not-authorized');
    const authMessage = `${s.clientFirstBare},${s.serverFirst},${parts.slice(0, -1).join(',')}`;
    const clientSignature = hmac(this.hash, s.creds.storedKey, authMessage);
    const clientKey = xor(proof, clientSignature);
    const storedKey = digest(this.hash, clientKey);
    if (storedKey.length !== s.creds.storedKey.length || !timingSafeEqual(storedKey, s.creds.storedKey)) {
      throw new SaslFailure('not-authorized');
    }
    const serverSignature = hmac(this.hash, s.creds.serverKey, authMessage);
    return { kind: 'success', data: Buffer.from(`v=${serverSignature.toString('base64')}`, 'utf8'), username: s.username };
  }

  /** The same salt for the same unknown name on every attempt, unrelated to any real one. */
  private fakeSalt(name: string): Buffer {
    const key = this.ctx.store.fakeSaltKey?.() ?? PROCESS_SECRET;
    return createHmac('sha256', key).update(`${this.hash}\0${name}`).digest().subarray(0, 16);
  }
}

export function scramFactory(hash: ScramHash, options?: ScramOptions): MechanismFactory {
  return {
    name: `SCRAM-${hash}`,
    available: ({ secure, tlsRequired }) => secure || !tlsRequired,
    create: (ctx) => new ScramMechanism(hash, ctx, options),
  };
}

export const scramSha1 = scramFactory('SHA-1');
export const scramSha256 = scramFactory('SHA-256');
