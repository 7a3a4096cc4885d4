// The cluster transport's "not taken" (src/cluster/transport.ts) against a
// Redis stand-in that counts the subscribers the test says: when a node
// dies, an envelope published while its subscription still lingered and a
// later one that found nobody are both reported not taken, the earlier
// first, so that what follows (offline storage) keeps the order they were
// sent in.
import test from 'ava';
import type { Redis } from 'ioredis';
import { NodeTransport } from '../../src/cluster/transport.ts';
import { K } from '../../src/registry/redis.ts';
import { encodeBuffer } from '../../src/worker/wire.ts';

test('envelopes to a node that died are not taken in the order they were sent, whatever their publishes learned first', async (t) => {
  // The first publish still counts the dead node's subscriber; the second finds nobody.
  const listeners = [1, 0];
  const published: number[] = [];
  const redis = {
    publish: async () => {
      const n = listeners.shift() ?? 0;
      published.push(n);
      return n;
    },
  } as unknown as Redis;
  const transport = new NodeTransport(redis, 'n1', () => 0, () => {});
  const outcomes: string[] = [];
  const first = transport.send('n2', 0, { t: 'offline', jid: 'a@localhost/r', sid: 's' }).then((taken) => outcomes.push(`first ${taken}`));
  const second = transport.send('n2', 0, { t: 'offline', jid: 'a@localhost/r', sid: 's' }).then((taken) => outcomes.push(`second ${taken}`));
  await Promise.all([first, second]);
  t.deepEqual(published, [1, 0], 'no second try was needed for the first');
  t.deepEqual(outcomes, ['first false', 'second false']);
});

test('an envelope confirmed is taken; "nobody listens" on another channel leaves it alone', async (t) => {
  const redis = { publish: async (channel: string) => (channel.includes('n3') ? 0 : 1) } as unknown as Redis;
  const transport = new NodeTransport(redis, 'n1', () => 0, () => {});
  let settled = false;
  const toN2 = transport.send('n2', 0, { t: 'offline', jid: 'a@localhost/r', sid: 's' }).then((taken) => {
    settled = true;
    return taken;
  });
  t.false(await transport.send('n3', 0, { t: 'offline', jid: 'a@localhost/r', sid: 's' }));
  await new Promise((r) => setImmediate(r));
  t.false(settled, 'the envelope to n2 waits for its confirmation');
  // n2's worker confirms number 1 of n1/0.
  transport.receive(encodeBuffer({ t: 'ok', node: 'n2', worker: 0, inc: (transport as unknown as { inc: string }).inc, to: K.channel('n2', 0), ns: [1] }));
  t.true(await toN2);
});
