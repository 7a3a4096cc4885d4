// XEP-0160 offline storage as a module: a message no session of its
// account can take (RFC 6121 §8.5.2.2.1) is kept with a XEP-0203 stamp, up
// to the account's bounds; one with nothing to keep is dropped without a
// word; the rest is refused (the sender gets service-unavailable). It also
// strips, from what clients send, a delay stamp claiming to be ours. The
// rules of what is stored are in offline/offline.ts; delivery, at the
// account's available presence, is the presence service's.
import type { Element } from 'ltx';
import type { Kept, ServerModule } from './module.ts';
import type { OfflineStore } from '../offline/store.ts';
import { contentless, shouldStore, stamp } from '../offline/offline.ts';
import { NS_DELAY, NS_MSGOFFLINE } from '../xmpp/ns.ts';
import { log } from '../log.ts';
import * as metrics from '../metrics/metrics.ts';

export interface OfflineOptions {
  store: OfflineStore;
  domain: string;
  /** Messages and bytes kept per account (0 messages: none kept). */
  max: number;
  maxBytes: number;
}

export function offlineStorage(o: OfflineOptions): ServerModule {
  /** What becomes of a message with nothing to keep (see offline/offline.ts), or undefined when it is to be stored. */
  const unkept = (el: Element): Kept | undefined => {
    if (shouldStore(el)) return undefined;
    const outcome = contentless(el) ? 'dropped' : 'refused';
    metrics.offlineMessage(outcome);
    return outcome;
  };
  // Several to one account at once, one write, in the order given: a message
  // that does not fit is 'full' (as one pushed alone), those after it may still be kept.
  const offlineMany = async (local: string, els: Element[]): Promise<Kept[]> => {
    const kept = els.map(unkept);
    const at = kept.flatMap((k, i) => (k === undefined ? [i] : []));
    if (at.length === 0) return kept as Kept[];
    const now = new Date();
    try {
      const stored = await o.store.pushMany(local, at.map((i) => stamp(els[i], o.domain, now).toString()), { max: o.max, maxBytes: o.maxBytes });
      at.forEach((i, j) => (kept[i] = stored[j] ? 'stored' : 'full'));
      for (const i of at) metrics.offlineMessage(kept[i]!);
    } catch (err) {
      log.warn('offline storage failed', { user: local, messages: at.length, err: String(err) });
      for (const i of at) {
        kept[i] = 'full';
        metrics.offlineMessage('error');
      }
    }
    return kept as Kept[];
  };
  return {
    features: o.max > 0 ? [NS_MSGOFFLINE] : [],
    inbound: (el) => {
      // XEP-0203: a delay from this domain is the server's own mark (offline
      // storage stamps one and keeps it); one a client wrote would pass for it.
      if (el.name === 'message') for (const d of el.getChildren('delay', NS_DELAY)) if (d.attrs.from === o.domain) el.remove(d);
    },
    offline: async (local, el) => (await offlineMany(local, [el]))[0],
    offlineMany,
  };
}
