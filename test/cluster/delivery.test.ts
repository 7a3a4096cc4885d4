// Delivery across nodes under failures, with real processes and a sustained
// flow of messages counted by id at the receiver and at the sender: with
// Redis frozen (SIGSTOP) for seconds, the publishes that time out run late
// when it thaws; and a node killed with -9 while messages to its sessions
// are in flight. Each message must end exactly one way: delivered (live, or
// later from offline storage) or bounced with an error, never both, never
// neither.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { login } from '../helpers/raw.ts';
import type { RawClient } from '../helpers/raw.ts';
import { until } from '../helpers/protocol.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

/** Messages per second in the flow. */
const RATE = 200;

async function cluster(t: ExecutionContext, names: string[], env: Record<string, string>): Promise<TestCluster> {
  const c = await startCluster(names, env);
  t.teardown(() => c.stop());
  const accounts = await PostgresAccountStore.open(c.databaseUrl, 4096);
  for (const u of ['alice', 'bob']) await accounts.create(u, `${u}-pw`);
  await accounts.close();
  return c;
}

/** Message ids on a stream: those received as messages, and those bounced back as errors. */
function ids(c: RawClient, type: 'chat' | 'error'): string[] {
  return c.items.flatMap((it) => (it.kind === 'el' && it.el.name === 'message' && (it.el.attrs.type ?? 'normal') === type && it.el.attrs.id?.startsWith('d') ? [it.el.attrs.id] : []));
}

/** Sends `n` messages at RATE per second from `from` to `to`, calling `at(i)` before message i; resolves when all are sent. */
function flow(from: RawClient, to: string, n: number, at: (i: number) => void | Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    let i = 0;
    const timer = setInterval(() => {
      void (async () => {
        for (let k = 0; k < RATE / 50 && i < n; k++, i++) {
          await at(i);
          from.send(`<message to='${to}' type='chat' id='d${i}'><body>${i}</body></message>`);
        }
        if (i >= n) {
          clearInterval(timer);
          resolve();
        }
      })().catch(reject);
    }, 20);
  });
}

function tally(t: ExecutionContext, n: number, delivered: string[], bounced: string[]): { lost: string[]; both: string[]; twice: number } {
  const got = new Set(delivered);
  const err = new Set(bounced);
  const lost: string[] = [];
  const both: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `d${i}`;
    if (!got.has(id) && !err.has(id)) lost.push(id);
    if (got.has(id) && err.has(id)) both.push(id);
  }
  t.log(`${n} sent: ${got.size} delivered (${delivered.length - got.size} twice), ${err.size} bounced`);
  return { lost, both, twice: delivered.length - got.size };
}

test('Redis frozen for 5 s under a flow across nodes: every message delivered once or bounced, never both, none lost', async (t) => {
  // A lease longer than the freeze: fencing is not this test's subject.
  const c = await cluster(t, ['d1', 'd2'], { XMPP_NODE_LEASE_MS: '30000' });
  const { c: alice } = await login(c.nodes[0].c2sPort, 'alice', 'alice-pw', 'a');
  const { c: bob, jid: bobJid } = await login(c.nodes[1].c2sPort, 'bob', 'bob-pw', 'b');
  t.teardown(() => {
    alice.destroy();
    bob.destroy();
  });
  const n = RATE * 8;
  let thawed: Promise<void> | undefined;
  await flow(alice, bobJid, n, (i) => {
    if (i === RATE * 1.5) {
      c.redis.signal('SIGSTOP');
      thawed = new Promise((r) => setTimeout(() => r(c.redis.signal('SIGCONT')), 5000));
    }
    // The flow goes on through the freeze and after it.
  });
  await thawed;
  await until(() => new Set([...ids(bob, 'chat'), ...ids(alice, 'error')]).size >= n, 60_000, 'every message delivered or bounced');
  const { lost, both, twice } = tally(t, n, ids(bob, 'chat'), ids(alice, 'error'));
  t.deepEqual(lost, []);
  t.deepEqual(both, [], 'an error means not delivered');
  t.is(twice, 0, 'each handled once');
});

test('a node killed with -9 under a flow to its session: each message delivered, stored offline or bounced; none lost, none both delivered and bounced', async (t) => {
  const c = await cluster(t, ['k1', 'k2'], { XMPP_NODE_LEASE_MS: '3000', XMPP_MAX_OFFLINE: '10000', XMPP_MAX_OFFLINE_BYTES: '10000000' });
  const [survivor, doomed] = c.nodes;
  const { c: alice } = await login(survivor.c2sPort, 'alice', 'alice-pw', 'a');
  const { c: bob, jid: bobJid } = await login(doomed.c2sPort, 'bob', 'bob-pw', 'b');
  t.teardown(() => {
    alice.destroy();
    bob.destroy();
  });
  const n = RATE * 5;
  await flow(alice, bobJid, n, (i) => {
    if (i === RATE * 2) doomed.proc.kill('SIGKILL');
  });
  await doomed.exited;
  const live = ids(bob, 'chat');
  // Bob comes back on the survivor (another resource) and takes what was stored, or rerouted to him.
  const { c: again } = await login(survivor.c2sPort, 'bob', 'bob-pw', 'b2');
  t.teardown(() => again.destroy());
  again.send('<presence/>');
  await until(() => new Set([...live, ...ids(again, 'chat'), ...ids(alice, 'error')]).size >= n, 60_000, 'every message delivered, stored or bounced');
  const stored = ids(again, 'chat');
  const { lost, both } = tally(t, n, [...live, ...stored], ids(alice, 'error'));
  t.deepEqual(lost, []);
  t.deepEqual(both, [], 'no message both delivered and bounced');
  t.true(stored.length > 0, 'what was sent after the death reached bob again');
});
