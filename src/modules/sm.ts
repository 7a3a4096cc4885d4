// XEP-0198 Stream Management, acknowledgements only (resumption is not
// offered yet): a client that enables it gets every stanza the server sends
// kept until it acknowledges it, so that a connection that dies unnoticed
// (a phone leaving Wi-Fi, a lid closed) loses nothing: what the client did
// not acknowledge goes where undeliverable stanzas go (another resource,
// offline storage, an error to the sender) once the connection is gone.
// The counting, the server's own ack requests and the bound on what waits
// for an ack are the session's (Session.enableAcks); this module speaks the
// protocol.
import { Element } from 'ltx';
import { StreamError } from '../xmpp/errors.ts';
import { NS_SM } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';
import type { Session } from '../session/session.ts';

const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

const failed = (condition: string, h?: number) => `<failed xmlns='${NS_SM}'${h === undefined ? '' : ` h='${h}'`}><${condition} xmlns='${NS_STANZAS}'/></failed>`;

/** An h attribute: an unsigned 32-bit integer (XEP-0198 §4). */
function count(el: Element): number {
  const h = el.attrs.h;
  if (typeof h !== 'string' || !/^[0-9]{1,10}$/.test(h) || Number(h) > 0xffffffff) throw new StreamError('invalid-xml', `<${el.name}/> needs an h between 0 and 2^32-1`);
  return Number(h);
}

const needsAcks = (el: Element, session: Session) => {
  if (!session.acksEnabled) throw new StreamError('unsupported-stanza-type', `<${el.name}/> before stream management was enabled`);
};

export const sm: ServerModule = {
  features: [],
  // §3: offered once the client is authenticated.
  streamFeatures: () => [new Element('sm', { xmlns: NS_SM })],
  nonzas: {
    [`enable ${NS_SM}`]: (_el, session) => {
      // §3: only after binding, and once.
      if (session.state !== 'established' || session.acksEnabled) return session.sendNonza(failed('unexpected-request'));
      session.enableAcks();
      // No 'id' nor 'resume': resumption is not offered (§5: then neither may be sent).
      session.sendNonza(`<enabled xmlns='${NS_SM}'/>`);
    },
    [`resume ${NS_SM}`]: (_el, session) => {
      // §5: resumption is not offered (no 'resume' in <enabled/>): the client binds a new session.
      session.sendNonza(failed('feature-not-implemented'));
    },
    // In order: h counts the stanzas handled before it.
    [`r ${NS_SM}`]: (el, session) => {
      needsAcks(el, session);
      session.sendNonza(`<a xmlns='${NS_SM}' h='${session.handled}'/>`);
    },
  },
  // As it is read: an ack settles what was sent, which a login burst may be waiting for.
  immediate: {
    [`a ${NS_SM}`]: (el, session) => {
      needsAcks(el, session);
      session.ack(count(el));
    },
  },
};
