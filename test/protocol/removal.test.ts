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
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { NS_STREAMS_ERR, plainOutcome, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, fresh, isPresence, isPush, ready, rosterItem, rosterOf, subscribe, summary } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { removeAccount } from '../../src/accounts/removal.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let server: TestServer;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

const workerOf = (jid: string) => server.hub.registry.lookup(jid)?.worker;

/** A fresh account with `n` sessions spread over both workers, all ready. */
async function account(t: ExecutionContext, base: string, n = 1): Promise<Peer[]> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const peers: Peer[] = [];
  for (let i = 0; peers.length < n; i++) {
    const p = await connect(t, server.c2sPort, name, `r${i}`);
    if (peers.length > 0 && workerOf(p.jid) === workerOf(peers[peers.length - 1].jid) && i < 20) {
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

function cli(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, XMPP_DATA_DIR: server.config.dataDir, XMPP_DOMAIN: 'localhost', XMPP_LOG_LEVEL: 'warn' };
    const child = spawn(process.execPath, ['src/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => resolve({ code, out }));
  });
}

test('in-band cancellation ends every session of the account, on both workers, and tells its contact (XEP-0077 §3.2, RFC 6121 §2.5.2)', async (t) => {
  const alice = await account(t, 'alice', 2);
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

test('a session that authenticated just before the removal but binds after it is ended at bind', async (t) => {
  const name = fresh('late');
  await server.addUser(name, `${name}-pw`);
  // Bound before: ended by the removal; authenticated before, bound after: ended at its bind.
  const [first] = [await connect(t, server.c2sPort, name, 'first')];
  const { authenticated } = await import('../helpers/protocol.ts');
  const { c } = await authenticated(server.c2sPort, name, `${name}-pw`);
  t.teardown(() => c.destroy());
  const r = await cli(['user', 'remove', name]);
  t.is(r.code, 0, r.out);
  await ended(t, first);
  c.send(`<iq type='set' id='late-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>late</resource></bind></iq>`);
  await c.waitFor(/<not-authorized xmlns=["']urn:ietf:params:xml:ns:xmpp-streams["']/);
  await within(c.closed, WAIT, 'the end of the late stream');
  t.pass();
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
