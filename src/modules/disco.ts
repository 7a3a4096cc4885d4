// XEP-0030: Service Discovery. The server lists every module's features;
// an account answers with its identity (XEP-0030 §3.1, "account/registered").
import { Element } from 'ltx';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { ServerModule } from './module.ts';
import type { Session } from '../session/session.ts';

/** `services`: domains of the server's own that disco#items lists (its external components, XEP-0114). */
export function disco(modules: () => ServerModule[], services: () => string[] = () => []): ServerModule {
  const info = (identity: Record<string, string>, features: () => string[], more: () => Record<string, string>[] = () => []) => (iq: Element) => {
    const node = iq.getChild('query')!.attrs.node;
    if (node) throw new StanzaError('item-not-found');
    const q = new Element('query', { xmlns: NS_DISCO_INFO });
    q.c('identity', identity);
    for (const i of more()) q.c('identity', i);
    for (const f of [...new Set(features())].sort()) q.c('feature', { var: f });
    return q;
  };
  const all = () => [NS_DISCO_INFO, NS_DISCO_ITEMS, ...modules().flatMap((m) => m.features)];
  // A node of the server's JID is the module's that owns it (ad-hoc commands), else there is none.
  const byNode = (kind: 'info' | 'items', then: (iq: Element) => Element) => async (iq: Element, session?: Session) => {
    const node = iq.getChild('query')!.attrs.node;
    if (!node) return then(iq);
    for (const m of modules()) {
      const q = await m.discoNode?.(kind, node, session);
      if (q) return q;
    }
    throw new StanzaError('item-not-found');
  };
  const server = {
    [`get ${NS_DISCO_INFO}`]: byNode('info', info({ category: 'server', type: 'im', name: 'xmpp-server' }, all)),
    [`get ${NS_DISCO_ITEMS}`]: byNode('items', (iq: Element) => {
      if (iq.getChild('query')!.attrs.node) throw new StanzaError('item-not-found');
      const q = new Element('query', { xmlns: NS_DISCO_ITEMS });
      for (const jid of services()) q.c('item', { jid });
      return q;
    }),
  };
  const account = {
    [`get ${NS_DISCO_INFO}`]: info({ category: 'account', type: 'registered' }, () => [NS_DISCO_INFO, ...modules().flatMap((m) => m.accountFeatures ?? [])], () => modules().flatMap((m) => m.accountIdentities ?? [])),
    [`get ${NS_DISCO_ITEMS}`]: () => new Element('query', { xmlns: NS_DISCO_ITEMS }),
  };
  // Other servers' entities see the same (XEP-0030 does not depend on where the asker is).
  return { features: [], server, account, remoteServer: server, remoteAccount: account };
}
