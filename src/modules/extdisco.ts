// XEP-0215 External Service Discovery: the STUN and TURN servers of
// XMPP_EXTDISCO_SERVICES, told to the server's own users (a client needs
// them to set up calls, XEP-0167/XEP-0176), with credentials for the TURN
// servers made for each user from XMPP_TURN_SECRET, as the TURN REST API
// (coturn's use-auth-secret) expects: the username is the time the
// credentials expire (Unix seconds) and the user, the password the base64 of
// the HMAC-SHA1 of the username keyed with the secret. The TURN server
// checks them with the same secret; nothing is stored, nothing crosses
// between nodes.
import { Element } from 'ltx';
import { createHmac } from 'node:crypto';
import type { ServerModule } from './module.ts';
import type { ExternalService } from '../config/index.ts';
import { StanzaError } from '../xmpp/errors.ts';

export const NS_EXTDISCO = 'urn:xmpp:extdisco:2';

export interface ExtdiscoOptions {
  services: readonly ExternalService[];
  /** XMPP_TURN_SECRET; '' for none (TURN servers are listed without credentials). */
  secret: string;
  /** How long credentials are valid, in seconds. */
  ttlSeconds: number;
  now?: () => number;
}

/** TURN REST API credentials for `user`, valid until `expires` (Unix seconds). */
export function turnCredentials(secret: string, user: string, expires: number): { username: string; password: string } {
  const username = `${expires}:${user}`;
  return { username, password: createHmac('sha1', secret).update(username).digest('base64') };
}

export function extdisco(o: ExtdiscoOptions): ServerModule {
  const now = o.now ?? Date.now;
  const isTurn = (s: ExternalService) => s.type === 'turn' || s.type === 'turns';

  /** The <service/> of one service, with the user's credentials for a TURN server when there is a secret. */
  const serviceEl = (s: ExternalService, user: string): Element => {
    const el = new Element('service', { type: s.type, host: s.host, port: String(s.port), transport: s.transport });
    if (isTurn(s) && o.secret !== '') {
      const expires = Math.floor(now() / 1000) + o.ttlSeconds;
      const { username, password } = turnCredentials(o.secret, user, expires);
      // §2: 'expires' a XEP-0082 date-time in UTC.
      el.attrs.username = username;
      el.attrs.password = password;
      el.attrs.expires = new Date(expires * 1000).toISOString().replace('.000Z', 'Z');
    }
    return el;
  };

  return {
    // §5: an entity that supports the protocol MUST say so; this one does when it has something to tell.
    features: o.services.length > 0 ? [NS_EXTDISCO] : [],
    server: {
      [`get ${NS_EXTDISCO}`]: (iq, session) => {
        // Only the server's authenticated users ask (the server handler is for local sessions; peer servers' entities do not get here).
        const user = session.username;
        if (!user) throw new StanzaError('forbidden');
        const payload = iq.children.find((c): c is Element => typeof c !== 'string')!;
        if (payload.name === 'services') {
          // §3.1 all services; §3.2 those of one type.
          const type = payload.attrs.type as string | undefined;
          const out = new Element('services', { xmlns: NS_EXTDISCO, ...(type !== undefined ? { type } : {}) });
          for (const s of o.services) if (type === undefined || s.type === type) out.cnode(serviceEl(s, user));
          return out;
        }
        if (payload.name === 'credentials') {
          // §3.3: each <service/> asked for MUST name the host and the type (a port MAY narrow it down).
          const asked = payload.getChildren('service');
          if (asked.length === 0 || asked.some((a) => !a.attrs.host || !a.attrs.type)) throw new StanzaError('bad-request', 'name the service by its host and type');
          const out = new Element('credentials', { xmlns: NS_EXTDISCO });
          for (const a of asked) {
            const port = a.attrs.port as string | undefined;
            for (const s of o.services) {
              if (s.host.toLowerCase() !== String(a.attrs.host).toLowerCase() || s.type !== a.attrs.type || (port !== undefined && String(s.port) !== port)) continue;
              if (isTurn(s) && o.secret !== '') out.cnode(serviceEl(s, user));
            }
          }
          // §3.3: credentials that cannot be had are an error (item-not-found among those it names).
          if (out.children.length === 0) throw new StanzaError('item-not-found', 'no credentials for such a service here');
          return out;
        }
        throw new StanzaError('bad-request', 'a <services/> or <credentials/> query is expected');
      },
    },
  };
}
