// Presence and subscriptions (RFC 6121 §3, §4) in the stanza flow: a
// presence stanza from a client is the presence service's
// (presence/presence.ts), not routed as other stanzas are.
import type { ServerModule } from './module.ts';
import type { PresenceService } from '../presence/presence.ts';
import type { Jid } from '../xmpp/jid.ts';
import { JidError, parseJid } from '../xmpp/jid.ts';
import { StanzaError, errorReply } from '../xmpp/errors.ts';

export function presence(service: () => PresenceService): ServerModule {
  return {
    features: [],
    inbound: async (el, session) => {
      if (el.name !== 'presence') return false;
      const bounce = (err: StanzaError) => {
        const reply = errorReply(el, err);
        if (reply) session.send(reply);
        return true;
      };
      let to: Jid | undefined;
      if (el.attrs.to !== undefined) {
        try {
          to = parseJid(el.attrs.to);
        } catch (err) {
          if (err instanceof JidError) return bounce(new StanzaError('jid-malformed', err.message));
          throw err;
        }
      }
      try {
        await service().fromClient(el, session, to);
      } catch (err) {
        if (err instanceof StanzaError) return bounce(err);
        throw err;
      }
      return true;
    },
  };
}
