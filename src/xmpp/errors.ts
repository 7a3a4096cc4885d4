// Errors as values carrying their RFC condition; the one place that maps
// them to XML. Only conditions RFC 6120 defines can be constructed.
import { Element } from 'ltx';
import { NS_STREAMS_ERR, NS_STANZAS_ERR, NS_SASL } from './ns.ts';

/** RFC 6120 §4.9.3 */
export const STREAM_CONDITIONS = [
  'bad-format', 'bad-namespace-prefix', 'conflict', 'connection-timeout', 'host-gone', 'host-unknown',
  'improper-addressing', 'internal-server-error', 'invalid-from', 'invalid-namespace', 'invalid-xml',
  'not-authorized', 'not-well-formed', 'policy-violation', 'remote-connection-failed', 'reset',
  'resource-constraint', 'restricted-xml', 'see-other-host', 'system-shutdown', 'undefined-condition',
  'unsupported-encoding', 'unsupported-feature', 'unsupported-stanza-type', 'unsupported-version',
] as const;
export type StreamCondition = (typeof STREAM_CONDITIONS)[number];

/** RFC 6120 §8.3.3, with the error type §8.3.3 gives each condition. */
export const STANZA_CONDITIONS = {
  'bad-request': 'modify', 'conflict': 'cancel', 'feature-not-implemented': 'cancel', 'forbidden': 'auth',
  'gone': 'cancel', 'internal-server-error': 'cancel', 'item-not-found': 'cancel', 'jid-malformed': 'modify',
  'not-acceptable': 'modify', 'not-allowed': 'cancel', 'not-authorized': 'auth', 'policy-violation': 'modify',
  'recipient-unavailable': 'wait', 'redirect': 'modify', 'registration-required': 'auth',
  'remote-server-not-found': 'cancel', 'remote-server-timeout': 'wait', 'resource-constraint': 'wait',
  'service-unavailable': 'cancel', 'subscription-required': 'auth', 'undefined-condition': 'cancel',
  'unexpected-request': 'wait',
} as const;
export type StanzaCondition = keyof typeof STANZA_CONDITIONS;
export type StanzaErrorType = 'auth' | 'cancel' | 'continue' | 'modify' | 'wait';

/** RFC 6120 §6.5 */
export const SASL_CONDITIONS = [
  'aborted', 'account-disabled', 'credentials-expired', 'encryption-required', 'incorrect-encoding',
  'invalid-authzid', 'invalid-mechanism', 'malformed-request', 'mechanism-too-weak', 'not-authorized',
  'temporary-auth-failure',
] as const;
export type SaslCondition = (typeof SASL_CONDITIONS)[number];

export class StreamError extends Error {
  readonly condition: StreamCondition;
  /** An application-specific condition beside the defined one (RFC 6120 §4.9.4). */
  readonly app: Element | undefined;
  constructor(condition: StreamCondition, text?: string, app?: Element) {
    super(text ?? condition);
    this.condition = condition;
    this.app = app;
  }
  toElement(): Element {
    const el = new Element('stream:error');
    el.c(this.condition, { xmlns: NS_STREAMS_ERR });
    if (this.message !== this.condition) el.c('text', { xmlns: NS_STREAMS_ERR, 'xml:lang': 'en' }).t(this.message);
    if (this.app) el.cnode(this.app);
    return el;
  }
}

export class StanzaError extends Error {
  readonly condition: StanzaCondition;
  readonly type: StanzaErrorType;
  constructor(condition: StanzaCondition, text?: string, type?: StanzaErrorType) {
    super(text ?? condition);
    this.condition = condition;
    this.type = type ?? STANZA_CONDITIONS[condition];
  }
  /** The <error/> child of an error stanza (RFC 6120 §8.3.2). */
  toElement(by?: string): Element {
    const el = new Element('error', by ? { type: this.type, by } : { type: this.type });
    el.c(this.condition, { xmlns: NS_STANZAS_ERR });
    if (this.message !== this.condition) el.c('text', { xmlns: NS_STANZAS_ERR, 'xml:lang': 'en' }).t(this.message);
    return el;
  }
}

export class SaslFailure extends Error {
  readonly condition: SaslCondition;
  constructor(condition: SaslCondition, text?: string) {
    super(text ?? condition);
    this.condition = condition;
  }
  toElement(): Element {
    const el = new Element('failure', { xmlns: NS_SASL });
    el.c(this.condition);
    if (this.message !== this.condition) el.c('text', { 'xml:lang': 'en' }).t(this.message);
    return el;
  }
}

/**
 * Turns a stanza into the error reply to it (RFC 6120 §8.3.1): addresses
 * swapped, type "error", the original payload kept. A stanza without 'to'
 * was addressed to the sender's own account (§10.3): the answer comes on
 * the account's behalf, without 'from' (§8.1.2.1). Returns undefined for a
 * stanza that must not be answered with an error (an error itself).
 */
export function errorReply(stanza: Element, err: StanzaError): Element | undefined {
  if (stanza.attrs.type === 'error') return undefined;
  const attrs: Record<string, string> = { type: 'error' };
  if (stanza.attrs.id !== undefined) attrs.id = stanza.attrs.id;
  if (stanza.attrs.from !== undefined) attrs.to = stanza.attrs.from;
  if (stanza.attrs.to !== undefined) attrs.from = stanza.attrs.to;
  const reply = new Element(stanza.name, attrs);
  // §8.3.1: an iq error SHOULD include the original payload; keep it for all kinds.
  for (const child of stanza.children) if (typeof child !== 'string') reply.cnode(child);
  reply.cnode(err.toElement());
  return reply;
}
