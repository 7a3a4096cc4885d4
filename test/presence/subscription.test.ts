// The server's Appendix A tables (src/presence/subscription.ts) against the
// transcription the roster store contract drives the stores with: written
// apart from each other from RFC 6121, so that a slip in either shows here.
import test from 'ava';
import { OUTBOUND, INBOUND, sendsTo, receivesFrom } from '../../src/presence/subscription.ts';
import { OUT_SUBSCRIBE, OUT_UNSUBSCRIBE, OUT_SUBSCRIBED, OUT_UNSUBSCRIBED, IN_SUBSCRIBE, IN_UNSUBSCRIBE, IN_SUBSCRIBED, IN_UNSUBSCRIBED } from '../roster/contract.ts';

test('outbound tables are RFC 6121 A.2', (t) => {
  t.deepEqual(OUTBOUND, { subscribe: OUT_SUBSCRIBE, unsubscribe: OUT_UNSUBSCRIBE, subscribed: OUT_SUBSCRIBED, unsubscribed: OUT_UNSUBSCRIBED });
});

test('inbound tables are RFC 6121 A.3', (t) => {
  t.deepEqual(INBOUND, { subscribe: IN_SUBSCRIBE, unsubscribe: IN_UNSUBSCRIBE, subscribed: IN_SUBSCRIBED, unsubscribed: IN_UNSUBSCRIBED });
});

test('presence flows by state (RFC 6121 §2.1.2.5)', (t) => {
  const states = ['none', 'none+out', 'none+in', 'none+out+in', 'to', 'to+in', 'from', 'from+out', 'both'] as const;
  t.deepEqual(states.filter(sendsTo), ['from', 'from+out', 'both']);
  t.deepEqual(states.filter(receivesFrom), ['to', 'to+in', 'both']);
});
