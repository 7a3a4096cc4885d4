// A worker's view of the node's registry (HubRegistry) against the real hub,
// with one worker's link held back the way a busy worker reads its port
// late: its replica lags behind a bind another worker was already answered
// for, and a fresh read waits until the replica has caught up.
import test from 'ava';
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { Hub } from '../../src/acceptor/hub.ts';
import { HubRegistry } from '../../src/worker/hub-registry.ts';
import { decode } from '../../src/worker/wire.ts';
import type { FromHub } from '../../src/worker/wire.ts';
import { rec } from '../registry/contract.ts';
import { within } from '../helpers/protocol.ts';

/**
 * A worker's end of its hub link; `hold()` keeps what arrives until
 * `release()`, in order; `held(pred)` resolves with what is held once a held
 * message satisfies `pred`.
 */
function worker(t: { teardown(fn: () => void): void }, hub: Hub, threadId: number) {
  const { port1, port2 } = new MessageChannel();
  t.teardown(() => {
    port1.close();
    port2.close();
  });
  const registry = new HubRegistry(port1);
  let held: FromHub[] | undefined;
  const waiters: (() => void)[] = [];
  port1.on('message', (raw: unknown) => {
    // The welcome comes as a plain object; the rest encoded.
    if (!(raw instanceof Uint8Array)) return;
    const msg = decode<FromHub>(raw);
    if (held) held.push(msg);
    else registry.onHubMessage(msg);
    for (const w of waiters.splice(0)) w();
  });
  hub.admit(port2 as MessagePort, threadId);
  return {
    registry,
    hold: () => (held = []),
    held: async (pred: (m: FromHub) => boolean): Promise<FromHub[]> => {
      while (!held?.some(pred)) await new Promise<void>((r) => waiters.push(r));
      return [...held];
    },
    release: () => {
      const msgs = held ?? [];
      held = undefined;
      for (const m of msgs) registry.onHubMessage(m);
    },
  };
}

test("a fresh read of an account's resources sees a bind the hub applied before, however late the replica is", async (t) => {
  const hub = new Hub();
  t.teardown(() => hub.close());
  const a = worker(t, hub, 1);
  const b = worker(t, hub, 2);
  a.hold();
  const second = rec('victim@localhost', 'second', 'n1', 1);
  const out = await b.registry.bind({ rec: second, policy: 'new-wins', maxResources: 10, exclusiveBare: false });
  t.true(out.ok);
  t.deepEqual(await a.registry.resources('victim@localhost'), [], 'the replica has not heard of it yet');
  let fresh: string[] | undefined;
  const reading = a.registry.resources('victim@localhost', true).then((recs) => (fresh = recs.map((r) => r.jid)));
  // The hub has answered the fresh read (its ack is on the held link),
  // behind the bind's news; the read still waits, for the link.
  const held = await within(a.held((m) => m.t === 'ack'), 5000, "the hub's answer to the fresh read");
  t.deepEqual(held.map((m) => m.t), ['put', 'ack'], "the bind's news comes before the answer");
  t.is(fresh, undefined, 'the fresh read waits for the hub');
  a.release();
  await within(reading, 5000, 'the fresh read once the link is read');
  t.deepEqual(fresh, [second.jid]);
});

test('a fresh read with nothing held answers once the hub has', async (t) => {
  const hub = new Hub();
  t.teardown(() => hub.close());
  const a = worker(t, hub, 1);
  t.deepEqual(await within(a.registry.resources('nobody@localhost', true), 5000, 'the fresh read'), []);
});
