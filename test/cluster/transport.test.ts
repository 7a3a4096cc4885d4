// The cluster transport's "not taken" (src/cluster/transport.ts) against a
// Redis stand-in that counts the subscribers the test says: when a node
// dies, an envelope published while its subscription still lingered and a
// later one that found nobody are both reported not taken, the earlier
// first, so that what follows (offline storage) keeps the order they were
// sent in.
import test from 'ava';
import type { Redis } from 'ioredis';
import { NodeTransport } from '../../src/cluster/transport.ts';
import { DurableSessions } from '../../src/session/durable.ts';
import type { DurableSession } from '../../src/session/durable.ts';
import type { SessionState } from '../../src/session/session.ts';
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

test('XMPP_SM_DURABLE: a delivery is confirmed to its sender only behind the durable write of what it queued', async (t) => {
  // One connection, as in a worker: Redis runs its commands in the order they are written to it.
  const written: string[] = [];
  let confirmed!: () => void;
  const confirmation = new Promise<void>((r) => (confirmed = r));
  const redis = {
    defineCommand: () => {},
    publish: async (channel: string) => {
      written.push(`publish ${channel}`);
      if (channel === K.channel('n1', 0)) confirmed();
      return 1;
    },
    pipeline: () => {
      const queued: string[] = [];
      const p = {
        rpush: (key: string) => (queued.push(`rpush ${key}`), p),
        hset: (key: string) => (queued.push(`hset ${key}`), p),
        exec: async () => {
          written.push(...queued);
          return queued.map(() => [null, 1]);
        },
      };
      return p;
    },
  } as unknown as Redis;
  const durable = new DurableSessions(redis);
  const session: DurableSession = { id: 's', snapshot: () => ({}) as SessionState, durableCounts: () => ({ handled: 0, acked: 0 }), durableQueue: () => [] };
  // The session takes the stanza as the envelope is handled: its queue grows, to be written to Redis.
  const transport = new NodeTransport(redis, 'n2', () => 0, (env) => env.t === 'deliver' && durable.push(session, 'token', { x: env.xml }), () => durable.flush());
  transport.receive(encodeBuffer({ t: 'env', node: 'n1', worker: 0, inc: 'i', n: 1, env: { t: 'deliver', jid: 'a@localhost/r', sid: 's', xml: '<message/>' } }));
  await confirmation;
  t.deepEqual(written.slice(0, 2), [`rpush ${K.smq('s')}`, `hset ${K.sm('s')}`], 'the queued stanza reached Redis first');
  t.is(written[2], `publish ${K.channel('n1', 0)}`);
});
