// XEP-0198 Stream Management: acknowledgements and resumption. A client
// that enables it gets every stanza the server sends kept until it
// acknowledges it. With resumption, a connection that dies unnoticed (a
// phone leaving Wi-Fi, a lid closed) only detaches the session: it stays
// bound and available, queues what comes for it, and the client's next
// connection, on any worker of any node, resumes it and gets what it did
// not acknowledge, in order (session/resumption.ts). Without resumption, or
// when it runs out, what the client did not acknowledge goes where
// undeliverable stanzas go (another resource, offline storage, an error to
// the sender). The counting, the server's own ack requests and the bound on
// what waits for an ack are the session's (Session.enableAcks); this module
// speaks the protocol.
import { Element } from 'ltx';
import { StreamError } from '../xmpp/errors.ts';
import { NS_SM } from '../xmpp/ns.ts';
import type { ServerModule } from './module.ts';
import type { Session } from '../session/session.ts';
import { resumptionId } from '../session/resumption.ts';
import * as metrics from '../metrics/metrics.ts';

const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

const failed = (condition: string, h?: number, extra = '') => `<failed xmlns='${NS_SM}'${h === undefined ? '' : ` h='${h}'`}><${condition} xmlns='${NS_STANZAS}'/>${extra}</failed>`;

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
  // §3: offered once the client is authenticated (before binding: resumption takes the place of a bind).
  streamFeatures: () => [new Element('sm', { xmlns: NS_SM })],
  nonzas: {
    [`enable ${NS_SM}`]: (el, session) => {
      // §3: only after binding, and once.
      if (session.state !== 'established' || session.acksEnabled) return session.sendNonza(failed('unexpected-request'));
      session.enableAcks();
      const resume = el.attrs.resume === 'true' || el.attrs.resume === '1';
      // An anonymous identity lives as long as its stream (XEP-0175): nothing to resume.
      if (!resume || session.username === null) return session.sendNonza(`<enabled xmlns='${NS_SM}'/>`);
      // §5: the client may ask for less time than the server allows, not more.
      let ms = session.ctx.config.smResumeTimeoutMs;
      const asked = Number(el.attrs.max);
      if (Number.isInteger(asked) && asked > 0 && asked * 1000 < ms) ms = Math.max(1000, asked * 1000);
      const token = session.enableResumption(ms);
      session.sendNonza(`<enabled xmlns='${NS_SM}' id='${resumptionId(session.jid!, token)}' resume='true' max='${Math.floor(ms / 1000)}'/>`);
    },
    [`resume ${NS_SM}`]: async (el, session) => {
      // §5: in place of binding a resource, on an authenticated stream.
      if (session.state !== 'wait-bind' || session.username === null) return session.sendNonza(failed(session.state === 'wait-bind' ? 'item-not-found' : 'unexpected-request'));
      const previd = el.attrs.previd;
      if (typeof previd !== 'string' || previd === '') {
        metrics.resumption('item-not-found');
        return session.sendNonza(failed('item-not-found'));
      }
      const h = count(el);
      const out = await session.ctx.resumption.resume(session, `${session.username}@${session.ctx.config.domain}`, previd, h);
      metrics.resumption(out?.condition ?? 'resumed');
      if (!out) return;
      if (out.condition === 'item-not-found') return session.sendNonza(failed('item-not-found'));
      // §4: the client claims more than was sent.
      session.sendNonza(failed('undefined-condition', out.handled, `<handled-count-too-high xmlns='${NS_SM}' h='${h}' send-count='${out.sent}'/>`));
    },
    // In order: h counts the stanzas handled before it.
    [`r ${NS_SM}`]: (el, session) => {
      needsAcks(el, session);
      session.sendNonza(`<a xmlns='${NS_SM}' h='${session.handled}'/>`);
    },
  },
  // §3, §5: enabling or resuming before authentication is unexpected.
  negotiating: {
    [`enable ${NS_SM}`]: (_el, session) => session.sendNonza(failed('unexpected-request')),
    [`resume ${NS_SM}`]: (_el, session) => session.sendNonza(failed('unexpected-request')),
  },
  // As it is read: an ack settles what was sent, which a login burst may be waiting for.
  immediate: {
    [`a ${NS_SM}`]: (el, session) => {
      needsAcks(el, session);
      session.ack(count(el));
    },
  },
};
