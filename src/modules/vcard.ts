// XEP-0054 vcard-temp: an account's vCard, set by its own clients (an iq
// without 'to', or to its own bare JID) and read by anyone, local or from
// another server, with an iq to the account's bare JID, which the server
// answers on the account's behalf (§3.3). The vCard is kept as the client
// sent it (personal/store.ts), up to MAX_VCARD_BYTES, with the SHA-1 of its
// photo (XEP-0153 §3.1).
//
// XEP-0153's rules (§4) are all the client's: the server has no part in
// them, and adding a <x xmlns='vcard-temp:x:update'/> to a client's presence
// would tell its other resources it follows them (§4.3, rule 1) when it may
// not. Injecting the hash is XEP-0398 §4's rule, which comes with XEP-0398's
// conversion to and from PEP avatars (XEP-0084): left until there is PEP.
import { Element, parse as parseXml } from 'ltx';
import type { ServerModule, IqHandler, RemoteIqHandler } from './module.ts';
import type { Session } from '../session/session.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import { type PersonalStore, MAX_VCARD_BYTES, photoHash, utf8Bytes } from '../personal/store.ts';

export const NS_VCARD = 'vcard-temp';

export interface VcardOptions {
  store: PersonalStore;
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

export function vcard(o: VcardOptions): ServerModule {
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
    await o.store.setVcard(session.username, { xml, photoHash: photoHash(payload) });
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
    // §4: the server says it supports vcard-temp.
    features: [NS_VCARD],
    account: { [`get ${NS_VCARD}`]: get, [`set ${NS_VCARD}`]: set },
    remoteAccount: { [`get ${NS_VCARD}`]: remoteGet, [`set ${NS_VCARD}`]: remoteSet },
  };
}
