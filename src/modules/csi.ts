// XEP-0352 Client State Indication: a client says the user is not looking
// (<inactive/>) or is again (<active/>), and the server holds back what can
// wait meanwhile: presence updates of contacts, only the latest of each
// (§3.2 gives it as the example). Everything else routed to the client goes
// at once: messages, iq requests it must answer, subscription requests,
// errors, its own account's presence. <active/> sends what was held, in the
// order of each contact's latest update; so does a held set that grows past
// its bounds (contacts, or half the slow-reader byte bound, so that sending
// it at once leaves room under that bound), so that holding never lets one
// session keep more than its output queue would.
import { Element, parse } from 'ltx';
import { NS_CSI } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';
import type { Out, Session } from '../session/session.ts';

interface Held {
  /** Latest presence of each contact's full JID, in the order of those updates. */
  byFrom: Map<string, Out>;
  bytes: number;
}

/** Its bounds are read from the session's config at each use (a reload may change them). */
export function csi(): ServerModule {
  /** Sessions that said they are inactive; the state ends with the session (not restored on resumption, XEP-0352 §5.2). */
  const inactive = new WeakMap<Session, Held>();

  const flush = (session: Session) => {
    const held = inactive.get(session);
    if (!held) return;
    const out = [...held.byFrom.values()];
    held.byFrom.clear();
    held.bytes = 0;
    for (const o of out) session.sendHeld(o);
  };

  return {
    features: [],
    streamFeatures: () => [new Element('csi', { xmlns: NS_CSI })],
    nonzas: {
      [`inactive ${NS_CSI}`]: (_el, session) => {
        if (!inactive.has(session)) inactive.set(session, { byFrom: new Map(), bytes: 0 });
      },
      [`active ${NS_CSI}`]: (_el, session) => {
        flush(session);
        inactive.delete(session);
      },
    },
    // §5.2: the state is not kept across resumption; what was held is queued for the next stream.
    detached: (session) => {
      flush(session);
      inactive.delete(session);
    },
    outbound: (session, out) => {
      const held = inactive.get(session);
      if (!held || !out.xml.startsWith('<presence')) return false;
      let el: Element;
      try {
        el = parse(out.xml);
      } catch {
        return false;
      }
      const { from, type } = el.attrs;
      if (from === undefined || (type !== undefined && type !== 'unavailable')) return false;
      // The account's own resources: the client tracks them (and its own presence is its answer).
      const slash = from.indexOf('/');
      if ((slash === -1 ? from : from.slice(0, slash)) === session.bare) return false;
      const before = held.byFrom.get(from);
      if (before) {
        held.byFrom.delete(from);
        held.bytes -= before.xml.length;
      }
      held.byFrom.set(from, out);
      held.bytes += out.xml.length;
      // Half the slow-reader bound at most: what is sent at once must leave room under it.
      if (held.byFrom.size > session.ctx.config.csiMaxHeld || held.bytes > session.ctx.config.maxOutboundBytes / 2) flush(session);
      return true;
    },
  };
}
