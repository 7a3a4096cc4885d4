// XEP-0280 Message Carbons: a resource that enables carbons gets a copy of
// the chat messages its account's other resources send and receive, so that
// every client of a user shows the whole conversation. Whether a resource
// enabled them is session state; the module hooks into the stanza flow (a
// message sent, before routing; a message received, once routing decided
// who gets it) and sends copies to every other resource marked "carbons
// only", and each session's worker drops them for a session that did not
// enable carbons.
import { Element, clone } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import { NS_CARBONS, NS_CHATSTATES, NS_CLIENT, NS_FORWARD, NS_HINTS, NS_MARKERS, NS_RECEIPTS } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';
import type { Session } from '../session/session.ts';
import type { SessionRecord } from '../registry/registry.ts';
import { log } from '../log.ts';

/** XEP-0280 §6.1: which messages are copied. */
export function carbonsEligible(el: Element): boolean {
  if (el.name !== 'message') return false;
  const type = el.attrs.type ?? 'normal';
  if (type === 'groupchat' || type === 'headline' || type === 'error') return false;
  // §7: the sender opted out; §6.1: a carbon is never copied again.
  if (el.getChild('private', NS_CARBONS) || el.getChild('no-copy', NS_HINTS)) return false;
  if (el.getChild('sent', NS_CARBONS) || el.getChild('received', NS_CARBONS)) return false;
  if (type === 'chat') return true;
  // A normal message with a body, or IM payloads a user's other clients track.
  return Boolean(el.getChild('body') || el.getChild('received', NS_RECEIPTS) || el.getChild('request', NS_RECEIPTS) || el.getChildByAttr('xmlns', NS_MARKERS) || el.getChildByAttr('xmlns', NS_CHATSTATES));
}

/** The copy for one resource of `bare`: the message wrapped as sent or received (§6, §7). */
export function carbonCopy(el: Element, kind: 'sent' | 'received', bare: string, to: string): Element {
  const inner = clone(el);
  inner.attrs.xmlns = NS_CLIENT;
  const msg = new Element('message', { from: bare, to, type: el.attrs.type ?? 'normal' });
  msg.c(kind, { xmlns: NS_CARBONS }).c('forwarded', { xmlns: NS_FORWARD }).cnode(inner);
  return msg;
}

/** What carbons need of the router. */
export interface CarbonsRouting {
  /** The account's bound sessions, wherever they live. */
  resources(bare: string): Promise<SessionRecord[]>;
  /** A copy to one session, taken only by one that enabled carbons. */
  deliver(rec: SessionRecord, el: Element, only: 'carbons'): void;
}

/** §4: <enable/> and <disable/>, addressed to the user's own account; copies of what is sent and received. */
export function carbons(routing: () => CarbonsRouting): ServerModule {
  /** Messages whose sender asked for no copies (§7): neither sent nor received carbons. */
  const privates = new WeakSet<Element>();
  /** A copy, wrapped as sent or received, to the account's resources other than `except`. */
  const copy = (el: Element, kind: 'sent' | 'received', bare: string, except: readonly Pick<SessionRecord, 'sid'>[]) => {
    const r = routing();
    void r.resources(bare).then(
      (recs) => {
        for (const rec of recs) if (!except.some((e) => e.sid === rec.sid)) r.deliver(rec, carbonCopy(el, kind, bare, rec.jid), 'carbons');
      },
      (err: unknown) => log.debug('carbons: registry unavailable', { err: String(err) }),
    );
  };
  return {
    features: [NS_CARBONS],
    account: {
      [`set ${NS_CARBONS}`]: (iq: Element, session: Session) => {
        const to = iq.attrs.to;
        if (to !== undefined && to !== session.bare) throw new StanzaError('forbidden', 'carbons are enabled by the account itself');
        const req = iq.getChild('enable', NS_CARBONS) ?? iq.getChild('disable', NS_CARBONS);
        if (!req) throw new StanzaError('bad-request', 'expected <enable/> or <disable/>');
        session.carbons = req.name === 'enable';
        return null;
      },
    },
    inbound: (el, session) => {
      if (el.name !== 'message') return;
      // §7: <private/> keeps a message out of carbons; it is not passed on.
      const priv = el.getChild('private', NS_CARBONS);
      if (priv) {
        el.remove(priv);
        privates.add(el);
      } else if (carbonsEligible(el)) copy(el, 'sent', session.bare!, [{ sid: session.id }]);
    },
    routed: (el, bare, to) => {
      if (!privates.has(el) && carbonsEligible(el)) copy(el, 'received', bare, to);
    },
  };
}
