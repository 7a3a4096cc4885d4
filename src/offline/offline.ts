// What goes into offline storage and how it comes out: pure helpers.
//
// shouldStore follows RFC 6121 §8.5.2.2.1 (a message to an account with no
// available resource of non-negative priority: normal and chat are either
// stored or answered with service-unavailable, groupchat MUST get an error,
// headline and error MUST be silently ignored), XEP-0160 §3 (which of them
// to store) and the storage hints of XEP-0334 §4:
//
//   normal (or no type)  stored when it has content (below)
//   chat                 the same
//   unknown type         as normal (RFC 6121 §5.2.2)
//   headline, groupchat, never: the RFC's MUSTs above leave no room for
//   error                storage, so no hint overrides them (XEP-0334 itself
//                        excludes errors from <store/>)
//
//   <no-store/>           not stored, whatever else it carries (XEP-0334 §4.2:
//                         not even temporarily for an offline client); it
//                         wins over <store/>
//   <no-permanent-store/> stored: XEP-0334 §4.1 allows temporary storage for
//                         delivery, which is what offline storage is
//   <store/>              stored even without content
//
// Content: a body or subject, or any payload a user would miss (encrypted
// payloads, invitations, out-of-band data...). A message carrying only chat
// states (XEP-0085), delivery receipts (XEP-0184) or chat markers (XEP-0333),
// with at most a thread, hints and stanza ids beside them, is content-less:
// stale by the time it could be read (XEP-0160 §3, XEP-0085 §5.4). The
// router neither stores nor bounces such a message for an offline or absent
// user: it drops it, since an error would show in the sender's client for a
// "typing..." that nobody missed.
import { type Element, clone } from 'ltx';
import { NS_DELAY, NS_HINTS } from '../xmpp/ns.ts';
import { contentless } from '../xmpp/content.ts';

export { contentless };

/** Whether a message for an account with no available resource goes to offline storage (see above). */
export function shouldStore(el: Element): boolean {
  if (el.getName() !== 'message') return false;
  const type = el.attrs.type ?? 'normal';
  if (type === 'error' || type === 'groupchat' || type === 'headline') return false;
  if (el.getChild('no-store', NS_HINTS)) return false;
  if (el.getChild('store', NS_HINTS)) return true;
  return !contentless(el);
}

/** XEP-0082 DateTime in UTC, as XEP-0203 requires of 'stamp'. */
export function dateTime(at: Date): string {
  return at.toISOString(); // CCYY-MM-DDThh:mm:ss.sssZ; throws RangeError on an invalid date
}

/**
 * A copy of the stanza with a Delayed Delivery element (XEP-0203):
 * <delay xmlns='urn:xmpp:delay' from='{from}' stamp='{at, UTC}'/>, marking
 * when and by whom it was stored. Left as is when it already carries a
 * delay from the same entity (stamping twice changes nothing). A delay
 * added by someone else (the sender's client, a MUC) is kept and ours is
 * added beside it: XEP-0203 delays are per delaying entity. The input is
 * not modified.
 */
export function stamp(el: Element, from: string, at: Date): Element {
  const copy = clone(el);
  const mine = copy.getChildren('delay', NS_DELAY).some((d) => d.attrs.from === from);
  if (!mine) copy.c('delay', { xmlns: NS_DELAY, from, stamp: dateTime(at) });
  return copy;
}
