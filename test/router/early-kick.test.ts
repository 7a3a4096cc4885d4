// A kick that reaches a worker before the session it replaces has finished
// binding there is kept for that session, within bounds of time and number.
import test from 'ava';
import { Router } from '../../src/router/router.ts';
import type { RouterDeps } from '../../src/router/router.ts';

// Nothing but the session table is used on this path.
const router = () => new Router({ domain: 'localhost', node: 'n', worker: 0, sessions: new Map(), modules: [] } as unknown as RouterDeps);
const kick = (r: Router, sid: string) => r.onEnvelope({ t: 'kick', jid: `a@localhost/${sid}`, sid, condition: 'conflict', text: 'replaced' });

test('an early kick is taken once by the session it was for', (t) => {
  const r = router();
  kick(r, 's1');
  t.is(r.takeEarlyKick('s2'), undefined);
  t.deepEqual(r.takeEarlyKick('s1'), { condition: 'conflict', text: 'replaced' });
  t.is(r.takeEarlyKick('s1'), undefined);
});

test('at most 10,000 are kept: the oldest go first', (t) => {
  const r = router();
  for (let i = 0; i <= 10_000; i++) kick(r, `s${i}`);
  t.is(r.takeEarlyKick('s0'), undefined);
  t.truthy(r.takeEarlyKick('s1'));
  t.truthy(r.takeEarlyKick('s10000'));
});

test('a kick older than 30 s is dropped when the next one comes', (t) => {
  const r = router();
  const realNow = Date.now;
  let clock = realNow();
  Date.now = () => clock;
  try {
    kick(r, 'old');
    clock += 20_000;
    kick(r, 'newer');
    clock += 10_001;
    kick(r, 'newest');
  } finally {
    Date.now = realNow;
  }
  t.is(r.takeEarlyKick('old'), undefined);
  t.truthy(r.takeEarlyKick('newer'));
  t.truthy(r.takeEarlyKick('newest'));
});
