// XEP-0030: Service Discovery. The server lists every module's features;
// an account answers with its identity (XEP-0030 §3.1, "account/registered").
import { Element } from 'ltx';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { ServerModule } from './module.ts';

/** `services`: domains of the server's own that disco#items lists (its external components, XEP-0114). */
export function disco(modules: () => ServerModule[], services: () => string[] = () => []): ServerModule {
  const info = (identity: Record<string, string>, features: () => string[]) => (iq: Element) => {
    const node = iq.getChild('query')!.attrs.node;
    if (node) throw new StanzaError('item-not-found');
    const q = new Element('query', { xmlns: NS_DISCO_INFO });
    q.c('identity', identity);
    for (const f of [...new Set(features())].sort()) q.c('feature', { var: f });
    return q;
  };
  const all = () => [NS_DISCO_INFO, NS_DISCO_ITEMS, ...modules().flatMap((m) => m.features)];
  const server = {
    [`get ${NS_DISCO_INFO}`]: info({ category: 'server', type: 'im', name: 'xmpp-server' }, all),
    [`get ${NS_DISCO_ITEMS}`]: (iq: Element) => {
      if (iq.getChild('query')!.attrs.node) throw new StanzaError('item-not-found');
      const q = new Element('query', { xmlns: NS_DISCO_ITEMS });
      for (const jid of services()) q.c('item', { jid });
      return q;
    },
  };
  const account = {
    [`get ${NS_DISCO_INFO}`]: info({ category: 'account', type: 'registered' }, () => [NS_DISCO_INFO, ...modules().flatMap((m) => m.accountFeatures ?? [])]),
    [`get ${NS_DISCO_ITEMS}`]: () => new Element('query', { xmlns: NS_DISCO_ITEMS }),
  };
  // Other servers' entities see the same (XEP-0030 does not depend on where the asker is).
  return { features: [], server, account, remoteServer: server, remoteAccount: account };
}
