// Password guessing (issue 20, hardening): failed authentications per
// address and per account are answered after a growing delay, then refused
// for a while with <temporary-auth-failure/> (RFC 6120 §6.5.11) before any
// work; SASL messages and passwords are bounded; a worker's password
// hashings are bounded, and a login past its queue is closed at once with
// <resource-constraint/> (RFC 6120 §4.9.3.17). In every case the sessions
// already established are unaffected.
//
// Every 127/8 address is the loopback on Linux: the guessing comes from
// 127.0.0.2, legitimate logins from 127.0.0.3 and 127.0.0.4; 127.0.0.1 (the
// bystanders) is exempt from per-address limits by default
// (XMPP_PER_IP_EXEMPT).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startWithBystanders } from '../helpers/server.ts';
import { online } from '../helpers/protocol.ts';
import { secured, within, othersUnaffected, saslCondition, NS_SASL, b64, until, childEls, NS_STREAMS_ERR } from '../helpers/protocol.ts';
import type { RawClient } from '../helpers/raw.ts';
import { plainAuth } from '../helpers/raw.ts';

const WAIT = 20_000;
const linux = process.platform === 'linux';
const onLinux = linux ? test : test.skip;

/** A secured stream from `from` (STARTTLS done), ready for SASL. */
async function stream(t: ExecutionContext, port: number, from: string): Promise<RawClient> {
  const { c } = await within(secured(port, undefined, undefined, from), WAIT, `a secured stream from ${from}`);
  t.teardown(() => c.destroy());
  return c;
}

/** Sends a SASL PLAIN <auth/> and returns the condition of the answer ('success' or the failure's), and how long it took. */
async function plain(c: RawClient, user: string, password: string): Promise<{ outcome: string | undefined; ms: number }> {
  const t0 = performance.now();
  c.send(plainAuth(user, password));
  const el = await within(c.nextEl(), WAIT, `the answer to PLAIN as ${user}`);
  const ms = performance.now() - t0;
  if (el.name === 'success') return { outcome: 'success', ms };
  if (el.name !== 'failure' || el.attrs.xmlns !== NS_SASL) throw new Error(`expected a SASL outcome, got ${el.toString()}`);
  return { outcome: saslCondition(el), ms };
}

/** One PLAIN attempt on a fresh stream from `from`. */
async function attempt(t: ExecutionContext, port: number, from: string, user: string, password: string): Promise<{ outcome: string | undefined; ms: number }> {
  const c = await stream(t, port, from);
  try {
    return await plain(c, user, password);
  } finally {
    c.destroy();
  }
}

onLinux('failures from one address: answered at once, then after a growing delay, then refused at once with temporary-auth-failure; others log in; bystanders unaffected', async (t) => {
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_AUTH_FAILURES_PER_IP: '6', XMPP_AUTH_FAILURES_PER_ACCOUNT: '0', XMPP_AUTH_FAIL_DELAY_MS: '150', XMPP_LOG_LEVEL: 'error' }, ['alice', 'bob']);
  t.teardown(stop);
  const port = server.c2sPort;
  // One stream takes three attempts (XMPP_MAX_AUTH_ATTEMPTS): the first three failures are a user's typos, answered at once.
  const first = await stream(t, port, '127.0.0.2');
  for (let i = 0; i < 3; i++) t.is((await plain(first, 'alice', `typo-${i}`)).outcome, 'not-authorized');
  // Then 150 ms, 300 ms, 600 ms: at least that long (a loaded machine may take longer, never less).
  const second = await stream(t, port, '127.0.0.2');
  for (const [i, delay] of [150, 300, 600].entries()) {
    const r = await plain(second, 'bob', `guess-${i}`);
    t.is(r.outcome, 'not-authorized', `failure ${4 + i}`);
    t.true(r.ms >= delay - 5, `failure ${4 + i} answered after ${r.ms.toFixed(0)} ms, expected at least ${delay}`);
  }
  // Six failures: the address is refused, even with the right password, before any hashing.
  const refused = await attempt(t, port, '127.0.0.2', 'alice', 'alice-pw');
  t.is(refused.outcome, 'temporary-auth-failure');
  // Another address logs in, as either account.
  t.is((await attempt(t, port, '127.0.0.3', 'alice', 'alice-pw')).outcome, 'success');
  t.is((await attempt(t, port, '127.0.0.3', 'bob', 'bob-pw')).outcome, 'success');
  t.like(server.stats().guard, { authFailures: 6, ipLockouts: 1, authRefusedIp: 1, authDelayed: 3 });
  await othersUnaffected(t, watcher, talker);
});

onLinux('failures for one account: refused for a while from everywhere but the addresses it logged in from lately; its text says why', async (t) => {
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_AUTH_FAILURES_PER_IP: '0', XMPP_AUTH_FAILURES_PER_ACCOUNT: '4', XMPP_AUTH_FAIL_DELAY_MS: '10', XMPP_LOG_LEVEL: 'error' }, ['carol', 'dave']);
  t.teardown(stop);
  const port = server.c2sPort;
  // carol logs in from 127.0.0.4 before the guessing: an address of hers.
  t.is((await attempt(t, port, '127.0.0.4', 'carol', 'carol-pw')).outcome, 'success');
  for (let i = 0; i < 4; i++) t.is((await attempt(t, port, '127.0.0.2', 'Carol', `guess-${i}`)).outcome, 'not-authorized', `guess ${i} (the name as typed counts as the account)`);
  // Refused, right password or not, from an address she never used...
  const c = await stream(t, port, '127.0.0.3');
  c.send(plainAuth('carol', 'carol-pw'));
  const el = await within(c.nextEl(), WAIT, 'the refusal');
  t.is(saslCondition(el), 'temporary-auth-failure');
  t.regex(el.getChildText('text') ?? '', /too many failed attempts for this account/);
  // ... also over SCRAM, at its first message (nothing to hash there, nothing said of the account beyond the refusal).
  const s = await stream(t, port, '127.0.0.3');
  s.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-256'>${b64('n,,n=carol,r=abcdefghijklmnop')}</auth>`);
  t.is(saslCondition(await within(s.nextEl(), WAIT, 'the SCRAM refusal')), 'temporary-auth-failure');
  // ... but not from hers, and not for another account.
  t.is((await attempt(t, port, '127.0.0.4', 'carol', 'carol-pw')).outcome, 'success');
  t.is((await attempt(t, port, '127.0.0.3', 'dave', 'dave-pw')).outcome, 'success');
  t.like(server.stats().guard, { accountLockouts: 1, authRefusedAccount: 2 });
  await othersUnaffected(t, watcher, talker);
});

test('SASL messages over 4096 bytes and PLAIN passwords over 1024 bytes are malformed-request, a 255-byte one (RFC 4616 §2) works; registration refuses a long password', async (t) => {
  const long255 = 'p'.repeat(255);
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_REGISTRATION: 'true', XMPP_LOG_LEVEL: 'error' }, ['erin']);
  t.teardown(stop);
  await server.addUser('frank', long255);
  const port = server.c2sPort;
  const c = await stream(t, port, '127.0.0.1');
  t.is((await plain(c, 'erin', 'x'.repeat(1025))).outcome, 'malformed-request', 'a password of 1025 bytes');
  // A 180 KB password (what the probe sent): refused before it is even decoded.
  c.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${b64(`\0erin\0${'y'.repeat(180 * 1024)}`)}</auth>`);
  const big = await within(c.nextEl(), WAIT, 'the answer to a huge PLAIN message');
  t.is(saslCondition(big), 'malformed-request');
  t.regex(big.getChildText('text') ?? '', /4096 bytes/);
  t.is((await attempt(t, port, '127.0.0.1', 'frank', long255)).outcome, 'success', 'a 255-byte password');
  t.is((await attempt(t, port, '127.0.0.1', 'erin', 'erin-pw')).outcome, 'success');
  // In-band registration (XEP-0077) with a password of 1025 bytes: not-acceptable, no account.
  const r = await stream(t, port, '127.0.0.1');
  const reply = await within(r.request(`<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>gina</username><password>${'z'.repeat(1025)}</password></query></iq>`, 'reg'), WAIT, 'the registration answer');
  t.is(reply.attrs.type, 'error');
  t.truthy(reply.getChild('error')?.getChild('not-acceptable'), reply.toString());
  t.is((await attempt(t, port, '127.0.0.1', 'gina', 'z'.repeat(1025))).outcome, 'malformed-request');
  await othersUnaffected(t, watcher, talker);
});

test('a worker whose password hashings are queued to the bound closes further PLAIN logins at once with resource-constraint; all are answered; bystanders unaffected', async (t) => {
  // One worker, one hashing at a time, two waiting; slow hashing (PBKDF2 with many iterations).
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_WORKERS: '1', XMPP_HASH_CONCURRENCY: '1', XMPP_HASH_QUEUE: '2', XMPP_SCRAM_ITERATIONS: '1000000', XMPP_AUTH_FAILURES_PER_ACCOUNT: '0', XMPP_LOG_LEVEL: 'error' }, []);
  t.teardown(stop);
  const port = server.c2sPort;
  // Secured first, so that the logins reach the worker together: unknown users cost the same hashing as known ones.
  const streams = await Promise.all(Array.from({ length: 10 }, () => stream(t, port, '127.0.0.1')));
  for (const [i, c] of streams.entries()) c.send(plainAuth(`nobody${i}`, 'pw'));
  const outcomes = await Promise.all(
    streams.map(async (c) => {
      const el = await within(c.nextEl(), 60_000, 'the answer to a PLAIN login');
      if (el.name === 'failure') return saslCondition(el);
      if (el.name === 'stream:error') return childEls(el).find((x) => x.attrs.xmlns === NS_STREAMS_ERR && x.name !== 'text')?.name;
      return el.name;
    }),
  );
  const refused = outcomes.filter((o) => o === 'resource-constraint').length;
  t.true(refused >= 1, `some logins refused: ${outcomes.join(', ')}`);
  t.true(outcomes.filter((o) => o === 'not-authorized').length >= 3, `the running one and those queued were checked: ${outcomes.join(', ')}`);
  t.is(outcomes.filter((o) => o !== 'resource-constraint' && o !== 'not-authorized').length, 0, outcomes.join(', '));
  await until(() => server.stats().guard.hashRefused === refused, WAIT, 'the refusals counted');
  await othersUnaffected(t, watcher, talker);
});

test('a saturated worker lets the login of an account with a session waiting to be resumed (XEP-0198) take the place of another, and it resumes', async (t) => {
  // Hashings slow enough (a second or so each) that the queue is still full when alice's login comes.
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_WORKERS: '1', XMPP_HASH_CONCURRENCY: '1', XMPP_HASH_QUEUE: '1', XMPP_SCRAM_ITERATIONS: '1500000', XMPP_AUTH_FAILURES_PER_ACCOUNT: '0', XMPP_LOG_LEVEL: 'error' }, ['alice']);
  t.teardown(stop);
  const port = server.c2sPort;
  // alice's session asks for resumption (XEP-0198 §5), then loses its connection: it waits, detached.
  const alice = await online(port, 'alice', 'alice-pw', 'phone');
  alice.c.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const enabled = await within(alice.c.find((el) => el.name === 'enabled'), WAIT, '<enabled/>');
  alice.c.destroy();
  await until(() => server.hub.guard!.admit('127.0.0.9', 'alice').resuming, WAIT, 'the session detached');
  // Six logins at once: one hashes, one waits, four are refused (seen: the queue is full). alice's
  // stream is secured beforehand, so that her login follows the refusals at once, well within a hashing.
  const back = await stream(t, port, '127.0.0.1');
  const streams = await Promise.all(Array.from({ length: 6 }, () => stream(t, port, '127.0.0.1')));
  const answers = streams.map((c) => within(c.nextEl(), 60_000, 'an answer'));
  for (const [i, c] of streams.entries()) c.send(plainAuth(`nobody${i}`, 'pw'));
  const cond = (el: Element) => (el.name === 'stream:error' ? childEls(el).find((x) => x.name !== 'text')?.name : el.name === 'failure' ? saslCondition(el) : el.name);
  const settled: string[] = [];
  for (const a of answers) void a.then((el) => settled.push(cond(el) ?? '?'));
  await until(() => settled.filter((o) => o === 'resource-constraint').length === 4, WAIT, 'four refused');
  // alice's client logs in to resume: its hashing takes the waiting one's place.
  back.send(plainAuth('alice', 'alice-pw'));
  const ok = await within(back.nextEl(), 60_000, "alice's login");
  t.is(ok.name, 'success', ok.toString());
  const all = await Promise.all(answers.map((a) => a.then(cond)));
  t.is(all.filter((o) => o === 'resource-constraint').length, 5, all.join(', '));
  t.is(all.filter((o) => o === 'not-authorized').length, 1, all.join(', '));
  back.resetReader();
  back.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`);
  await within(back.find((el) => el.name === 'stream:features'), WAIT, 'features after SASL');
  back.send(`<resume xmlns='urn:xmpp:sm:3' previd='${enabled.attrs.id}' h='0'/>`);
  const resumed = await within(back.find((el) => el.name === 'resumed' || el.name === 'failed'), WAIT, 'the resumption');
  t.is(resumed.name, 'resumed', resumed.toString());
  await othersUnaffected(t, watcher, talker);
});
