// RFC 6121 Appendix A: how each subscription stanza changes the state of a
// (user, contact) pair, on the side that sends it (A.2, "outbound") and on
// the side that receives it (A.3, "inbound"). States not listed in a table
// are left unchanged by that event. Pre-approval (§3.4) is not offered, so
// an unsolicited outbound "subscribed" changes nothing (A.2.3, None).
import type { SubState, TransitionTable } from '../roster/store.ts';

export type SubscriptionType = 'subscribe' | 'subscribed' | 'unsubscribe' | 'unsubscribed';
export const SUBSCRIPTION_TYPES: readonly SubscriptionType[] = ['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed'];

export function isSubscriptionType(type: string | undefined): type is SubscriptionType {
  return (SUBSCRIPTION_TYPES as readonly (string | undefined)[]).includes(type);
}

/** A.2: the sender's own state with the addressee. */
export const OUTBOUND: Record<SubscriptionType, TransitionTable> = {
  // A.2.1
  subscribe: { 'none': 'none+out', 'none+in': 'none+out+in', 'from': 'from+out' },
  // A.2.2
  unsubscribe: { 'none+out': 'none', 'none+out+in': 'none+in', 'to': 'none', 'to+in': 'none+in', 'from+out': 'from', 'both': 'from' },
  // A.2.3
  subscribed: { 'none+in': 'from', 'none+out+in': 'from+out', 'to+in': 'both' },
  // A.2.4
  unsubscribed: { 'none+in': 'none', 'none+out+in': 'none+out', 'to+in': 'to', 'from': 'none', 'from+out': 'none+out', 'both': 'to' },
};

/** A.3: the addressee's state with the sender. */
export const INBOUND: Record<SubscriptionType, TransitionTable> = {
  // A.3.1
  subscribe: { 'none': 'none+in', 'none+out': 'none+out+in', 'to': 'to+in' },
  // A.3.2
  unsubscribe: { 'none+in': 'none', 'none+out+in': 'none+out', 'to+in': 'to', 'from': 'none', 'from+out': 'none+out', 'both': 'to' },
  // A.3.3
  subscribed: { 'none+out': 'to', 'none+out+in': 'to+in', 'from+out': 'both' },
  // A.3.4
  unsubscribed: { 'none+out': 'none', 'none+out+in': 'none+in', 'to': 'none', 'to+in': 'none+in', 'from+out': 'from', 'both': 'from' },
};

/** The contact receives the user's presence (subscription "from" or "both", RFC 6121 §2.1.2.5). */
export function sendsTo(state: SubState): boolean {
  return state === 'from' || state === 'from+out' || state === 'both';
}

/** The user receives the contact's presence (subscription "to" or "both"). */
export function receivesFrom(state: SubState): boolean {
  return state === 'to' || state === 'to+in' || state === 'both';
}
