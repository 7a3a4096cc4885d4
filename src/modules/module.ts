// Server features are modules, one per XEP: each advertises its disco
// features and answers the iq payloads it owns, keyed "type namespace".
import type { Element } from 'ltx';
import type { StanzaError } from '../xmpp/errors.ts';
import type { Session } from '../session/session.ts';

/**
 * Returns the result payload (or null for an empty result), or throws a
 * StanzaError. `after` runs once the result is on its way, for what must
 * follow it on the wire (XEP-0077 §3.2: the result, then the stream closes).
 */
export type IqResult = Element | null | { payload: Element | null; after: () => void };
export type IqHandler = (iq: Element, session: Session) => Promise<IqResult> | IqResult;

export interface ServerModule {
  features: string[];
  /** iq addressed to the server's domain, keyed "get urn:xmpp:ping". */
  server?: Record<string, IqHandler>;
  /** iq addressed to an account's bare JID, answered by the server on its behalf. */
  account?: Record<string, IqHandler>;
}

export type { StanzaError };
