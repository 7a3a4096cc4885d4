// Messages that lost their session (its node died before confirming them)
// are rerouted in the order they were sent: when the lookups of the first
// take longer than those of the next, the next still waits its turn, so
// that offline storage keeps them in order.
import test from 'ava';
import { Router } from '../../src/router/router.ts';
import type { RouterDeps } from '../../src/router/router.ts';
import type { ServerModule } from '../../src/modules/module.ts';

const message = (body: string) => `<message to='alice@localhost/gone' from='bob@localhost/r' type='chat'><body>${body}</body></message>`;

test('two messages rerouted one after the other are stored in that order, whichever lookup answers first', async (t) => {
  const stored: string[] = [];
  const offline: ServerModule = {
    offline: async (_local, el) => {
      stored.push(el.getChildText('body')!);
      return 'stored';
    },
  } as ServerModule;
  let lookups = 0;
  const router = new Router({
    domain: 'localhost',
    node: 'n',
    worker: 0,
    sessions: new Map(),
    closing: new Map(),
    local: new Map(),
    modules: [offline],
    // No resource left: each message is stored, once its account is known to exist.
    registry: { resources: async () => [] },
    // The first lookup answers a turn of the event loop later than the next, which answers at once.
    accountExists: () => (++lookups === 1 ? new Promise<boolean>((res) => setImmediate(() => res(true))) : Promise.resolve(true)),
  } as unknown as RouterDeps);
  router.rerouted(message('m4'), 'message', 'gone');
  router.rerouted(message('m5'), 'message', 'gone');
  await router.idle();
  t.is(lookups, 2);
  t.deepEqual(stored, ['m4', 'm5']);
});
