// XEP-0054 vcard-temp: an account's vCard, set by its own clients (an iq
// without 'to', or to its own bare JID) and read by anyone, local or from
// another server, with an iq to the account's bare JID, which the server
// answers on the account's behalf (§3.3). The vCard is kept as the client
// sent it (personal/store.ts), up to MAX_VCARD_BYTES, with the SHA-1 of its
// photo (XEP-0153 §3.1).
//
// XEP-0153's rules (§4) are the client's; what the server adds to them is
// XEP-0398's, in its own module (modules/avatar.ts): the photo hash stamped
// on the account's available presence (§4), and the photo kept in step with
// the XEP-0084 avatar in PEP both ways (§3). This module tells it of every
// vCard a client sets (`api.listen`), before the client is answered.
import { Element, parse as parseXml } from 'ltx';
import type { ServerModule, IqHandler, RemoteIqHandler } from './module.ts';
import type { Session } from '../session/session.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import { log } from '../log.ts';
import { type PersonalStore, MAX_VCARD_BYTES, photoHash, utf8Bytes } from '../personal/store.ts';

export const NS_VCARD = 'vcard-temp';

export interface VcardOptions {
  store: PersonalStore;
}

/** What other modules hear of: a vCard a client set (its photo's hash as stored, '' for none). */
export type VcardListener = (user: string, vcard: Element, photoHash: string) => void | Promise<void>;

export interface VcardApi {
  /** Called after each vCard a client sets, and awaited before the client is answered; its failure is logged and changes nothing for the client. */
  listen(fn: VcardListener): void;
}

/** The account an iq is about: its localpart, normalised (the router found it exists). */
function target(iq: Element): string | undefined {
  if (iq.attrs.to === undefined) return undefined;
  try {
    return parseJid(iq.attrs.to).local || undefined;
  } catch (err) {
    if (err instanceof JidError) return undefined;
    throw err;
  }
}

const empty = () => new Element('vCard', { xmlns: NS_VCARD });

/** The iq's <vCard/> (the router found a payload in vcard-temp; another name is no request of XEP-0054). */
function payloadOf(iq: Element): Element {
  const p = iq.children.find((c): c is Element => typeof c !== 'string')!;
  if (p.name !== 'vCard') throw new StanzaError('bad-request', `<${p.name}/> is not part of vcard-temp`);
  return p;
}

export function vcard(o: VcardOptions): ServerModule & { api: VcardApi } {
  const listeners: VcardListener[] = [];
  /** The account's vCard, or undefined for none. */
  const read = async (local: string): Promise<Element | undefined> => {
    const v = await o.store.vcard(local);
    return v ? (parseXml(v.xml) as Element) : undefined;
  };

  const get: IqHandler = async (iq, session) => {
    payloadOf(iq);
    const local = target(iq) ?? session.username ?? undefined;
    // An anonymous session has no vCard of its own: the empty one.
    if (local === undefined) return empty();
    const v = await read(local);
    if (v) return v;
    // §3.1: one's own, none yet: an empty vCard. §3.3: another's: an error,
    // service-unavailable, the same as for an account that does not exist.
    if (local === session.username) return empty();
    throw new StanzaError('service-unavailable');
  };

  const set: IqHandler = async (iq, session: Session) => {
    const local = target(iq);
    // §3.2: another user's vCard cannot be set.
    if (local !== undefined && local !== session.username) throw new StanzaError('forbidden', "only the account's own vCard can be set");
    if (!session.username) throw new StanzaError('forbidden', 'anonymous sessions keep no vCard');
    const payload = payloadOf(iq);
    const xml = payload.toString();
    if (utf8Bytes(xml) > MAX_VCARD_BYTES) throw new StanzaError('not-acceptable', `a vCard may hold at most ${MAX_VCARD_BYTES} bytes; make the photo smaller`);
    const hash = photoHash(payload);
    const user = session.username;
    await o.store.setVcard(user, { xml, photoHash: hash });
    for (const fn of listeners) {
      try {
        await fn(user, payload, hash);
      } catch (err) {
        log.warn('vCard listener failed', { user, err: String(err) });
      }
    }
    return null;
  };

  // §3.3 for other servers' users: a read, answered on the account's behalf.
  const remoteGet: RemoteIqHandler = async (iq) => {
    payloadOf(iq);
    const local = target(iq);
    const v = local !== undefined ? await read(local) : undefined;
    if (!v) throw new StanzaError('service-unavailable');
    return v;
  };
  const remoteSet: RemoteIqHandler = () => {
    throw new StanzaError('forbidden', "only the account's own vCard can be set");
  };

  return {
    api: { listen: (fn) => void listeners.push(fn) },
    // §4: the server says it supports vcard-temp.
    features: [NS_VCARD],
    account: { [`get ${NS_VCARD}`]: get, [`set ${NS_VCARD}`]: set },
    remoteAccount: { [`get ${NS_VCARD}`]: remoteGet, [`set ${NS_VCARD}`]: remoteSet },
  };
}
