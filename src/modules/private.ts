// XEP-0049 private XML storage (jabber:iq:private): an account's clients
// keep XML under namespaces of their own (XEP-0048 bookmarks under
// storage:bookmarks, client preferences), one value per namespace: the
// elements of that namespace the last set carried. Only the account's own
// sessions may read or write it. Limits: MAX_PRIVATE_BYTES per namespace,
// MAX_PRIVATE_NAMESPACES per account (personal/store.ts).
//
// XEP-0048 bookmarks stored here are kept in step with XEP-0402 PEP
// bookmarks (its §5.3) by their own module (modules/bookmarks.ts), which
// this one tells of every set (`api.listen`): it may refuse a value first,
// and hears of it once stored, before the client is answered.
import { Element, parse as parseXml } from 'ltx';
import type { ServerModule, IqHandler, RemoteIqHandler } from './module.ts';
import type { Session } from '../session/session.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import { NS_CLIENT } from '../xmpp/ns.ts';
import { log } from '../log.ts';
import { type PersonalStore, type PrivateEntry, MAX_PRIVATE_BYTES, MAX_PRIVATE_NAMESPACES, utf8Bytes } from '../personal/store.ts';

export const NS_PRIVATE = 'jabber:iq:private';
/** Namespaces refused (XEP-0049 §2.3 lets a server refuse reserved ones): the stanzas' own, and this protocol's. */
const RESERVED = new Set([NS_CLIENT, 'jabber:server', NS_PRIVATE]);

/** What another module keeps in step with one namespace of private XML. */
export interface PrivateListener {
  ns: string;
  /** Before a set is stored: a StanzaError thrown refuses the whole set (the elements of the namespace that it carries). */
  check?(user: string, els: Element[]): void;
  /** Once stored (the namespace's value, serialised; '' for none): awaited before the client is answered, its failure logged. */
  changed(user: string, xml: string): void | Promise<void>;
}

export interface PrivateApi {
  listen(l: PrivateListener): void;
}

export interface PrivateOptions {
  store: PersonalStore;
  maxBytes?: number;
  maxNamespaces?: number;
}

const isElement = (c: Element | string): c is Element => typeof c !== 'string';

/** §3 (Forbidden): only the account's own storage (an iq without 'to', or to its bare JID). */
function owner(iq: Element, session: Session): string {
  if (iq.attrs.to !== undefined) {
    let local: string | undefined;
    try {
      const j = parseJid(iq.attrs.to);
      local = j.resource ? undefined : j.local;
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
    }
    if (local === undefined || local !== session.username) throw new StanzaError('forbidden', "only the account's own private XML can be read or written");
  }
  if (!session.username) throw new StanzaError('forbidden', 'anonymous sessions keep no private XML');
  return session.username;
}

/** The iq's <query/> (the router found a payload in jabber:iq:private). */
function queryOf(iq: Element): Element {
  const q = iq.children.find(isElement)!;
  if (q.name !== 'query') throw new StanzaError('bad-request', `<${q.name}/> is not part of jabber:iq:private`);
  return q;
}

/** The namespaces of a query's children, checked: each with a namespace of its own, none reserved (§2.3). */
function children(query: Element): { el: Element; ns: string }[] {
  const els = query.children.filter(isElement);
  // §2.3: at least one child element, or not-acceptable.
  if (els.length === 0) throw new StanzaError('not-acceptable', 'the query must hold an element of the namespace to read or write');
  return els.map((el) => {
    // No xmlns of its own (or a prefixed name): it is not "scoped by its own namespace" (§2.1).
    const ns = el.name.includes(':') ? undefined : el.attrs.xmlns;
    if (ns === undefined || ns === '') throw new StanzaError('not-acceptable', `<${el.name}> must carry a namespace of its own (xmlns)`);
    if (RESERVED.has(ns)) throw new StanzaError('not-acceptable', `${ns} is a reserved namespace`);
    return { el, ns };
  });
}

export function privateStorage(o: PrivateOptions): ServerModule & { api: PrivateApi } {
  const listeners: PrivateListener[] = [];
  const maxBytes = o.maxBytes ?? MAX_PRIVATE_BYTES;
  const maxNamespaces = o.maxNamespaces ?? MAX_PRIVATE_NAMESPACES;

  const get: IqHandler = async (iq, session) => {
    const user = owner(iq, session);
    const asked = children(queryOf(iq));
    // §2.3: a client MUST NOT ask for more than one namespace at once.
    if (asked.length > 1) throw new StanzaError('bad-request', 'one namespace per get');
    const { el, ns } = asked[0];
    const q = new Element('query', { xmlns: NS_PRIVATE });
    const xml = await o.store.privateXml(user, ns);
    if (xml === undefined) {
      // Never set: the element asked for, back as it came (empty).
      q.cnode(new Element(el.name, { xmlns: ns }));
      return q;
    }
    for (const c of (parseXml(`<q xmlns='${NS_PRIVATE}'>${xml}</q>`) as Element).children) if (isElement(c)) q.cnode(c);
    return q;
  };

  const set: IqHandler = async (iq, session) => {
    const user = owner(iq, session);
    const els = children(queryOf(iq));
    // §2.3: a set may hold several elements of one namespace; they are that namespace's value together.
    for (const l of listeners) {
      const mine = els.filter((e) => e.ns === l.ns).map((e) => e.el);
      if (mine.length > 0) l.check?.(user, mine);
    }
    const byNs = new Map<string, string[]>();
    for (const { el, ns } of els) {
      const list = byNs.get(ns) ?? [];
      // An element with nothing in it stores nothing: it is what a get of an unset namespace gives back.
      if (el.children.length > 0 || Object.keys(el.attrs).some((k) => k !== 'xmlns')) list.push(el.toString());
      byNs.set(ns, list);
    }
    const entries: PrivateEntry[] = [];
    for (const [ns, list] of byNs) {
      const xml = list.join('');
      if (utf8Bytes(xml) > maxBytes) throw new StanzaError('not-acceptable', `private XML of one namespace may hold at most ${maxBytes} bytes`);
      entries.push({ ns, xml });
    }
    try {
      await o.store.setPrivateXml(user, entries, maxNamespaces);
    } catch (err) {
      if ((err as Error).name === 'PrivateStorageFullError') throw new StanzaError('policy-violation', `an account may keep private XML under at most ${maxNamespaces} namespaces`);
      throw err;
    }
    for (const e of entries) {
      for (const l of listeners) {
        if (l.ns !== e.ns) continue;
        try {
          await l.changed(user, e.xml);
        } catch (err) {
          log.warn('private XML listener failed', { user, ns: e.ns, err: String(err) });
        }
      }
    }
    return null;
  };

  // From another server: never the account's own (XEP-0049 §4).
  const remote: RemoteIqHandler = () => {
    throw new StanzaError('forbidden', "only the account's own private XML can be read or written");
  };

  return {
    api: { listen: (l) => void listeners.push(l) },
    // The server's disco#info says it (XEP-0030 §3.1: the protocols it supports), as clients ask before using it:
    // poezio, finding neither jabber:iq:private nor pubsub#publish there, has no remote bookmark storage (issue 18).
    features: [NS_PRIVATE],
    account: { [`get ${NS_PRIVATE}`]: get, [`set ${NS_PRIVATE}`]: set },
    remoteAccount: { [`get ${NS_PRIVATE}`]: remote, [`set ${NS_PRIVATE}`]: remote },
  };
}
