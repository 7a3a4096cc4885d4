// The node's guard (acceptor/guard.ts) and a worker's bound on password
// hashing (accounts/hashing.ts), on their own, with a clock the test moves:
// what the streams ask of them is tested over sockets in test/limits.
import test from 'ava';
import { Guard, FREE_FAILURES } from '../../src/acceptor/guard.ts';
import { HashGate, Saturated } from '../../src/accounts/hashing.ts';
import type { HashPriority } from '../../src/accounts/hashing.ts';
import { ConnectionRate } from '../../src/acceptor/server.ts';
import { setLogLevel } from '../../src/log.ts';

// Lock-outs and refusals are logged at warn: kept out of the test's output.
setLogLevel('error');

const settings = { perIpExempt: '127.0.0.1,::1', authFailuresPerIp: 5, authFailuresPerAccount: 4, authLockoutMs: 60_000, authFailDelayMs: 100, registrationRate: '2/60' };

function clocked(over: Partial<typeof settings> = {}) {
  let now = 1_000_000;
  const guard = new Guard({ ...settings, ...over }, () => now);
  return { guard, advance: (ms: number) => (now += ms) };
}

test('failures per address: free, then doubling delays up to 16 times, then a refusal for the lockout, then forgotten', (t) => {
  const { guard, advance } = clocked({ authFailuresPerIp: 10, authFailuresPerAccount: 0 });
  const delays = Array.from({ length: 9 }, () => guard.failed('203.0.113.7', null));
  t.deepEqual(delays, [0, 0, 0, 100, 200, 400, 800, 1600, 1600]);
  t.is(FREE_FAILURES, 3);
  t.is(guard.check('203.0.113.7'), 0, 'nine failures: not yet');
  guard.failed('203.0.113.7', null);
  t.is(guard.check('203.0.113.7'), 60_000);
  t.is(guard.check('203.0.113.8'), 0, 'another address');
  advance(59_999);
  t.is(guard.check('203.0.113.7'), 1);
  advance(1);
  t.is(guard.check('203.0.113.7'), 0);
  t.is(guard.failed('203.0.113.7', null), 0, 'a new window: free again');
  t.like(guard.counters, { authFailures: 11, ipLockouts: 1, authRefusedIp: 2, authDelayed: 7 });
});

test('an IPv6 address counts by its /64; exempt addresses (IPv4-mapped too) are not counted', (t) => {
  const { guard } = clocked({ authFailuresPerAccount: 0 });
  for (let i = 0; i < 5; i++) guard.failed(`2001:db8:1:2::${i + 1}`, null);
  t.true(guard.check('2001:db8:1:2:ffff::9') > 0);
  t.is(guard.check('2001:db8:1:3::1'), 0);
  for (let i = 0; i < 20; i++) guard.failed('::ffff:127.0.0.1', null);
  t.is(guard.check('127.0.0.1'), 0);
  t.true(guard.exempted('::ffff:127.0.0.1'));
  t.true(guard.exempted('::1'));
  t.false(guard.exempted('127.0.0.2'));
});

test('failures per account: refused except from the addresses it logged in from; a success forgets them', (t) => {
  const { guard } = clocked({ authFailuresPerIp: 0 });
  guard.succeeded('198.51.100.1', 'alice');
  for (let i = 0; i < 4; i++) guard.failed('203.0.113.7', 'alice');
  t.is(guard.admit('203.0.113.9', 'alice').left, 60_000);
  t.is(guard.admit('198.51.100.1', 'alice').left, 0, 'her own address');
  t.is(guard.failed('198.51.100.1', 'alice'), 0, 'nor are its failures counted');
  t.is(guard.admit('203.0.113.9', 'bob').left, 0);
  guard.succeeded('198.51.100.1', 'alice');
  t.is(guard.admit('203.0.113.9', 'alice').left, 0);
  t.like(guard.counters, { accountLockouts: 1, authRefusedAccount: 1 });
});

test('registrations per address: a burst, then the rate; exempt addresses always', (t) => {
  const { guard, advance } = clocked();
  t.deepEqual([guard.register('203.0.113.7'), guard.register('203.0.113.7'), guard.register('203.0.113.7')], [true, true, false]);
  advance(29_999);
  t.false(guard.register('203.0.113.7'));
  advance(2);
  t.true(guard.register('203.0.113.7'), 'one every 30 s');
  t.true(guard.register('203.0.113.8'));
  for (let i = 0; i < 10; i++) t.true(guard.register('::1'));
  t.like(guard.counters, { registrations: 14, registrationsRefused: 2 });
  t.true(clocked({ registrationRate: '0' }).guard.register('203.0.113.7'));
});

test('sessions waiting to be resumed are known per account until they are not', (t) => {
  const { guard } = clocked();
  guard.detached('alice', true);
  guard.detached('alice', true);
  guard.detached('alice', false);
  t.true(guard.admit('203.0.113.7', 'alice').resuming);
  guard.detached('alice', false);
  t.false(guard.admit('203.0.113.7', 'alice').resuming);
});

test('new connections per address: a burst of two seconds, then the rate', (t) => {
  let now = 0;
  const rate = new ConnectionRate(5, () => now);
  const first = Array.from({ length: 12 }, () => rate.take('a'));
  t.is(first.filter(Boolean).length, 10);
  t.true(rate.take('b'));
  now += 200;
  t.true(rate.take('a'));
  t.false(rate.take('a'));
  t.true(new ConnectionRate(0).take('a'));
});

test('hashing: never more at once than allowed; waiting jobs run resumptions first, then logins, then changes; a full queue refuses or bumps a lower class', async (t) => {
  const refused: number[] = [];
  const gate = new HashGate(1, 3, () => refused.push(1));
  const order: string[] = [];
  let release!: () => void;
  const blocker = gate.run('change', () => new Promise<void>((r) => (release = r)));
  const job = (p: HashPriority, name: string) =>
    gate.run(p, async () => {
      t.is(gate.active, 1);
      order.push(name);
    });
  const c1 = job('change', 'c1');
  const l1 = job('login', 'l1');
  const c2 = job('change', 'c2');
  // Full (3 waiting): a resumption bumps the latest change, a login the latest change too; another change is refused.
  const r1 = job('resume', 'r1');
  const l2 = job('login', 'l2');
  await t.throwsAsync(job('change', 'c3'), { instanceOf: Saturated });
  await t.throwsAsync(c2, { instanceOf: Saturated });
  await t.throwsAsync(c1, { instanceOf: Saturated });
  t.is(gate.waiting, 3);
  release();
  await Promise.all([blocker, l1, r1, l2]);
  t.deepEqual(order, ['r1', 'l1', 'l2']);
  t.is(refused.length, 3);
  t.is(gate.active, 0);
});
