// SASL EXTERNAL (RFC 4422 Appendix A) for clients with a certificate
// (XEP-0178, the seed's §6.2 rule 2): offered when the client presented a
// certificate that validates against XMPP_TLS_CA and names, as an XmppAddr
// (RFC 6120 §13.7.1.4), an account of this server. The authorization
// identity, if the client gives one, must be one of the certificate's JIDs;
// with none, the certificate must name exactly one account here.
import { SaslFailure } from '../xmpp/errors.ts';
import { JidError, parseJid } from '../xmpp/jid.ts';
import type { Mechanism, MechanismContext, MechanismFactory, SaslResult } from './mechanism.ts';
import { decodeUtf8 } from './util.ts';

class ExternalMechanism implements Mechanism {
  private readonly ctx: MechanismContext;
  private done = false;
  attempted: string | undefined;

  constructor(ctx: MechanismContext) {
    this.ctx = ctx;
  }

  async start(initial: Buffer | null): Promise<SaslResult> {
    if (this.done) throw new SaslFailure('malformed-request', 'exchange already finished');
    // No initial response: the empty challenge asks for the authorization identity (RFC 4422 §5).
    if (initial === null) return { kind: 'challenge', data: Buffer.alloc(0) };
    return this.finish(initial);
  }

  async step(response: Buffer): Promise<SaslResult> {
    if (this.done) throw new SaslFailure('malformed-request', 'exchange already finished');
    return this.finish(response);
  }

  private async finish(authzid: Buffer): Promise<SaslResult> {
    this.done = true;
    const ours = (this.ctx.certificateJids ?? []).flatMap((j) => {
      try {
        const jid = parseJid(j);
        return jid.domain === this.ctx.domain && jid.local && !jid.resource ? [jid.local] : [];
      } catch (err) {
        if (err instanceof JidError) return [];
        throw err;
      }
    });
    let user: string;
    if (authzid.length === 0) {
      if (ours.length !== 1) throw new SaslFailure('invalid-authzid', 'the certificate names more than one account here: say which');
      user = ours[0];
    } else {
      let wanted;
      try {
        wanted = parseJid(decodeUtf8(authzid));
      } catch {
        throw new SaslFailure('invalid-authzid', 'not a JID');
      }
      if (wanted.domain !== this.ctx.domain || !wanted.local || wanted.resource || !ours.includes(wanted.local)) throw new SaslFailure('invalid-authzid', 'the certificate does not name that account');
      user = wanted.local;
    }
    this.attempted = user;
    if (!(await this.ctx.store.exists(user))) throw new SaslFailure('not-authorized');
    return { kind: 'success', username: user };
  }
}

export const external: MechanismFactory = {
  name: 'EXTERNAL',
  available: ({ secure, certificateJids }) => secure && (certificateJids?.length ?? 0) > 0,
  create: (ctx) => new ExternalMechanism(ctx),
};
