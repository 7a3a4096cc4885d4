// Names on server-to-server streams: the content namespace, and the
// dialback elements, which peers write with the db: prefix their stream
// header declares (XEP-0220 §2.1.1) or with a default namespace.
import type { Element } from 'ltx';
import { NS_DIALBACK } from './dialback.ts';
import { normalizeDomain } from '../xmpp/jid.ts';

export const NS_SERVER = 'jabber:server';

/** 'result' or 'verify' for a dialback element, else undefined. `headerDb`: the stream header bound db: to the dialback namespace. */
export function dialbackOf(el: Element, headerDb: boolean): 'result' | 'verify' | undefined {
  let local: string;
  if (el.name.startsWith('db:')) {
    const bound = el.attrs['xmlns:db'];
    if (bound !== undefined ? bound !== NS_DIALBACK : !headerDb) return undefined;
    local = el.name.slice(3);
  } else if (el.attrs.xmlns === NS_DIALBACK) local = el.name;
  else return undefined;
  return local === 'result' || local === 'verify' ? local : undefined;
}

/** An element's name without its prefix. */
export const localName = (el: Element): string => el.name.slice(el.name.indexOf(':') + 1);

/** A domain in its normalised form, or undefined when it is none. */
export function safeDomain(d: string | undefined): string | undefined {
  if (!d) return undefined;
  try {
    return normalizeDomain(d);
  } catch {
    return undefined;
  }
}
