// SASL mechanisms (RFC 6120 §6, RFC 4422): the contract between the stream
// code and each mechanism, and the list offered, best first.
import type { AccountStore } from '../accounts/store.ts';
import { scramSha1, scramSha256 } from './scram.ts';
import { plain } from './plain.ts';
import { anonymous } from './anonymous.ts';
import { external } from './external.ts';

export type SaslResult =
  | { kind: 'challenge'; data: Buffer }
  /** username: the normalised localpart; null for ANONYMOUS. */
  | { kind: 'success'; data?: Buffer; username: string | null };
// Failures are thrown as SaslFailure carrying the RFC 6120 §6.5 condition.

export interface Mechanism {
  /** The username the client gave, once known (for the log of a failed attempt). */
  readonly attempted?: string;
  /** initial: the initial response (null: none sent; empty Buffer: "=" was sent). */
  start(initial: Buffer | null): Promise<SaslResult>;
  step(response: Buffer): Promise<SaslResult>;
}

export interface MechanismContext {
  store: AccountStore;
  domain: string;
  /** TLS in place */
  secure: boolean;
  /** The JIDs (XmppAddr) of the client's certificate, when it presented one that validates (EXTERNAL). */
  certificateJids?: string[];
  channelBinding?: never;
  /**
   * Once the client named itself: how long attempts as this account (its
   * accountKey) are still refused here (left 0: go on), and whether it has
   * a session waiting to be resumed. None: no throttling.
   */
  admit?(user: string): Promise<{ left: number; resuming: boolean }>;
  /** Runs a password hashing within the worker's bound (accounts/hashing.ts), first when `resuming`; throws Saturated when it is full. None: at once. */
  hashing?<T>(fn: () => Promise<T>, resuming: boolean): Promise<T>;
}

export interface MechanismFactory {
  name: string;
  /** Whether to offer it in this context. */
  available(ctx: { secure: boolean; tlsRequired: boolean; anonymous: boolean; certificateJids?: string[] }): boolean;
  create(ctx: MechanismContext): Mechanism;
}

/** In preference order. */
export const MECHANISMS: MechanismFactory[] = [external, scramSha256, scramSha1, plain, anonymous];
