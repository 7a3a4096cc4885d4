// Removing an account ends it everywhere at once: every live session of the
// account is closed (<not-authorized/>), on every worker, its roster and
// offline messages are gone, and its contacts are told as RFC 6121 §2.5.2
// tells them of a removed item: the account's resources go unavailable, the
// subscriptions are cancelled (unsubscribe, unsubscribed), and their roster
// items change. The removal comes in band (XEP-0077 §3.2) or from the CLI
// (`user remove`, told to the running server through its admin socket), or
// from the CLI with no server running.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { NS_SASL, NS_STREAMS_ERR, authenticated, b64, bindIq, expectStreamError, plainOutcome, readStreamStart, scramClient, secured, uid, within } from '../helpers/protocol.ts';
import { header } from '../helpers/raw.ts';
import { WAIT, barrier, connect, expect, fresh, isPresence, isPush, ready, rosterItem, rosterOf, subscribe, summary } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { pairStates, removeAccount } from '../../src/accounts/removal.ts';
import { SUB_STATES } from '../../src/roster/store.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let server: TestServer;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

const workerOf = (jid: string) => server.hub.registry.lookup(jid)?.worker;

/**
 * A fresh account with `n` sessions spread over both workers (each on
 * another worker than the one before), all ready; fails when 20 logins in a
 * row land on the worker of the session before.
 */
async function account(t: ExecutionContext, base: string, n = 1): Promise<Peer[]> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const peers: Peer[] = [];
  for (let i = 0; peers.length < n; i++) {
    if (i === 20) throw new Error(`${name}: ${i} logins, none on another worker than ${peers[peers.length - 1].jid}'s (worker ${workerOf(peers[peers.length - 1].jid)})`);
    const p = await connect(t, server.c2sPort, name, `r${i}`);
    if (workerOf(p.jid) === undefined) throw new Error(`${p.jid} is bound but not in the hub's registry`);
    if (peers.length > 0 && workerOf(p.jid) === workerOf(peers[peers.length - 1].jid)) {
      p.c.destroy();
      continue;
    }
    await ready(p);
    peers.push(p);
  }
  return peers;
}

/** Waits for the stream error and the end of a removed account's session. */
async function ended(t: ExecutionContext, p: Peer): Promise<void> {
  const err = await expect(p, 'the stream error', (el) => el.name === 'stream:error');
  t.truthy(err.getChild('not-authorized', NS_STREAMS_ERR), err.toString());
  await within(p.c.closed, WAIT, `${p.jid}: the end of the stream`);
}

/** What the contact sees: unavailable from each resource, unsubscribe and unsubscribed, the push to "none". */
async function toldContact(t: ExecutionContext, bob: Peer, removed: Peer[], from: number): Promise<void> {
  const bare = removed[0].bare;
  for (const p of removed) await expect(bob, `unavailable from ${p.jid}`, isPresence(p.jid, 'unavailable'), from);
  await expect(bob, 'unsubscribe', isPresence(bare, 'unsubscribe'), from);
  await expect(bob, 'unsubscribed', isPresence(bare, 'unsubscribed'), from);
  await expect(bob, 'the push to none', (el) => isPush(bare)(el) && rosterItem(el)?.attrs.subscription === 'none', from);
  t.deepEqual(summary(await rosterOf(bob)), [[bare, 'none', undefined]], "bob's roster keeps the item, with no subscription left");
}

function stores() {
  const dir = server.config.dataDir;
  return {
    accounts: SqliteAccountStore.open(join(dir, 'accounts.sqlite'), 4096),
    roster: SqliteRosterStore.open(join(dir, 'roster.sqlite')),
    offline: SqliteOfflineStore.open(join(dir, 'offline.sqlite')),
  };
}

/** The account's data is gone: no login, no roster, no offline message, no pending request. */
async function gone(t: ExecutionContext, name: string): Promise<void> {
  const s = stores();
  try {
    t.false(await s.accounts.exists(name));
    t.deepEqual((await s.roster.get(name)).items, []);
    t.deepEqual(await s.roster.pendingRequests(name), []);
    t.is(await s.offline.count(name), 0);
  } finally {
    s.accounts.close();
    s.roster.close();
    s.offline.close();
  }
  t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'not-authorized', 'the password of the removed account no longer logs in');
}

/** Runs the CLI on the server's data directory; bounded (a CLI that hangs fails the test with what it said). */
function cli(args: string[]): Promise<{ code: number | null; out: string }> {
  return within(new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, XMPP_DATA_DIR: server.config.dataDir, XMPP_DOMAIN: 'localhost', XMPP_LOG_LEVEL: 'warn' };
    const child = spawn(process.execPath, ['src/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => resolve({ code, out }));
  }), 30_000, `the CLI: ${args.join(' ')}`);
}

test('in-band cancellation ends every session of the account, on both workers, and tells its contact (XEP-0077 §3.2, RFC 6121 §2.5.2)', async (t) => {
  const alice = await account(t, 'alice', 2);
  t.not(workerOf(alice[0].jid), workerOf(alice[1].jid), 'one session on each worker');
  const [bob] = await account(t, 'bob');
  await subscribe(alice[0], bob);
  await subscribe(bob, alice[0]);
  // A message waiting for alice, and a request from a stranger: they go too.
  const carol = (await account(t, 'carol'))[0];
  carol.c.send(`<presence to='${alice[0].bare}' type='subscribe'/>`);
  await expect(alice[0], "carol's request", isPresence(carol.bare, 'subscribe'));
  const b = bob.c.items.length;
  const c = carol.c.items.length;
  const id = uid('remove');
  alice[0].c.send(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`);
  await expect(alice[0], 'the result', (el) => el.attrs.id === id && el.attrs.type === 'result');
  await Promise.all(alice.map((p) => ended(t, p)));
  await toldContact(t, bob, alice, b);
  // Carol's request is answered as declined (her item loses its ask).
  await expect(carol, 'unsubscribed from alice', isPresence(alice[0].bare, 'unsubscribed'), c);
  await gone(t, alice[0].name);
  await barrier(bob, b);
});

test('`user remove` while the server runs: the sessions end at once and the contact is told', async (t) => {
  const alice = await account(t, 'alice', 2);
  t.not(workerOf(alice[0].jid), workerOf(alice[1].jid), 'one session on each worker');
  const [bob] = await account(t, 'bob');
  await subscribe(alice[1], bob);
  await subscribe(bob, alice[1]);
  const b = bob.c.items.length;
  const r = await cli(['user', 'remove', alice[0].name]);
  t.is(r.code, 0, r.out);
  t.regex(r.out, new RegExp(`removed ${alice[0].name}@localhost`));
  await Promise.all(alice.map((p) => ended(t, p)));
  await toldContact(t, bob, alice, b);
  await gone(t, alice[0].name);
});

test('streams not bound yet when the account is removed end too: one authenticated at once, one mid-SASL at its bind', async (t) => {
  // Bound sessions on both workers: once both have ended, each worker has the removal.
  const bound = await account(t, 'late', 2);
  const name = bound[0].name;
  // Authenticated before the removal, not bound: the removal ends it, unasked.
  const { c: authed } = await within(authenticated(server.c2sPort, name, `${name}-pw`), WAIT, 'the authenticated stream');
  t.teardown(() => authed.destroy());
  // Mid-SASL at the removal: SCRAM has read the credentials (the challenge
  // came), the proof goes after the removal. SASL succeeds on what it read;
  // the removal is caught at the bind.
  const { c: mid } = await within(secured(server.c2sPort), WAIT, 'the mid-SASL stream');
  t.teardown(() => mid.destroy());
  const clientFirstBare = `n=${name},r=${randomBytes(12).toString('base64')}`;
  mid.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-256'>${b64('n,,' + clientFirstBare)}</auth>`);
  const serverFirst = Buffer.from((await within(mid.nextEl('challenge'), WAIT, 'the SCRAM challenge')).getText(), 'base64').toString();

  const r = await cli(['user', 'remove', name]);
  t.is(r.code, 0, r.out);
  await Promise.all(bound.map((p) => ended(t, p)));
  await expectStreamError(t, authed, 'not-authorized');

  const { clientFinal } = scramClient('sha256', `${name}-pw`, clientFirstBare, serverFirst, 'n,,');
  mid.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  t.is((await within(mid.nextEl(), WAIT, 'the SCRAM outcome')).name, 'success', 'the removal did not end a stream that had not authenticated yet');
  mid.send(header());
  await within(readStreamStart(mid), WAIT, 'the restarted stream');
  mid.send(bindIq('late-bind', 'late'));
  // No bind result first: the stream error answers the bind.
  await expectStreamError(t, mid, 'not-authorized');
  t.is(server.hub.registry.lookup(`${name}@localhost/late`), undefined, 'no session left bound');
});

test('removal with no server running changes the contacts\' rosters in the stores all the same', async (t) => {
  const s = stores();
  t.teardown(() => {
    s.accounts.close();
    s.roster.close();
    s.offline.close();
  });
  const [alice, bob] = [fresh('alice'), fresh('bob')];
  await s.accounts.create(alice, 'pw');
  await s.accounts.create(bob, 'pw');
  await s.roster.setSubscription(alice, `${bob}@localhost`, 'both', undefined, { max: 10 });
  await s.roster.setSubscription(bob, `${alice}@localhost`, 'both', undefined, { max: 10 });
  await s.offline.push(alice, '<message/>', { max: 10, maxBytes: 1000 });
  const notice = await removeAccount(s, 'localhost', alice);
  t.deepEqual(notice?.contacts.map((c) => [c.jid, c.stanzas, c.push?.item.subscription]), [[`${bob}@localhost`, ['unsubscribe', 'unsubscribed'], 'none']]);
  t.is((await s.roster.item(bob, `${alice}@localhost`))?.subscription, 'none');
  t.false(await s.accounts.exists(alice));
  t.is(await s.offline.count(alice), 0);
  t.is(await removeAccount(s, 'localhost', alice), undefined, 'removing again: nothing there');
});

test('the pairs a removal cancels carry the state the roster store gives each, in every state of RFC 6121 A.1', async (t) => {
  const s = stores();
  t.teardown(() => s.roster.close());
  const alice = fresh('alice');
  const contact = (state: string) => `${state.replaceAll('+', '-')}@elsewhere.example`;
  // Each state from 'none' in one step: the table says where 'none' goes.
  for (const state of SUB_STATES) await s.roster.transition(alice, contact(state), { none: state }, { max: 100, request: '<presence/>' });
  const pairs = await pairStates(s.roster, alice);
  const expected = new Map<string, string>();
  for (const state of SUB_STATES) if (state !== 'none') expected.set(contact(state), state);
  t.deepEqual(new Map([...pairs].sort()), new Map([...expected].sort()));
  for (const [jid, state] of pairs) t.is(state, await s.roster.state(alice, jid), jid);
});
