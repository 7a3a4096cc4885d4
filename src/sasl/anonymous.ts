// SASL ANONYMOUS (RFC 4505, XEP-0175): no credentials, no challenge. The
// optional trace is checked for form and otherwise ignored.
import { SaslFailure } from '../xmpp/errors.ts';
import type { Mechanism, MechanismFactory, SaslResult } from './mechanism.ts';
import { decodeUtf8 } from './util.ts';

const MAX_TRACE_CHARS = 255; // RFC 4505 §3: up to 255 UTF-8 characters

export class AnonymousMechanism implements Mechanism {
  private done = false;

  async start(initial: Buffer | null): Promise<SaslResult> {
    if (this.done) throw new SaslFailure('malformed-request', 'exchange already finished');
    this.done = true;
    if (initial !== null) {
      const trace = decodeUtf8(initial);
      let chars = 0;
      for (const _ of trace) chars++;
      if (chars > MAX_TRACE_CHARS) throw new SaslFailure('malformed-request', 'trace longer than 255 characters');
    }
    return { kind: 'success', username: null };
  }

  async step(_response: Buffer): Promise<SaslResult> {
    this.done = true;
    throw new SaslFailure('malformed-request', 'ANONYMOUS has no further steps');
  }
}

export const anonymous: MechanismFactory = {
  name: 'ANONYMOUS',
  available: ({ secure, tlsRequired, anonymous }) => anonymous && (secure || !tlsRequired),
  create: () => new AnonymousMechanism(),
};
