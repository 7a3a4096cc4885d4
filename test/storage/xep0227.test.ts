// XEP-0227 export and import (`user export`, `user import`): the files the
// real Prosody and ejabberd wrote (test/fixtures/xep0227, see its README)
// imported into a running server, then logged in to over XMPP with the old
// passwords: rosters, pending subscription requests both ways and offline
// messages arrive. A round trip (our export into a fresh server) on SQLite
// and PostgreSQL, refusals, and accounts with SCRAM-SHA-1 verifiers only
// (RFC 6120 §6.4.5: SCRAM-SHA-256 fails, SCRAM-SHA-1 on the same stream works).
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { ROOT, run, serverEnv, STEP_MS, within } from '../helpers/process.ts';
import { b64, NS_SASL, plainOutcome, scramClient, secured } from '../helpers/protocol.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresRosterStore } from '../../src/roster/postgres.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';
import type { Xep0227Stores } from '../../src/storage/xep0227.ts';

const FIXTURES = join(ROOT, 'test/fixtures/xep0227');
const WAIT = 15_000;
const pgServer = sharedPostgresServer(test);

/** The CLI on the server's stores. */
async function cli(server: TestServer, args: string[], extra: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'xep0227-cli-'));
  try {
    const env = serverEnv(dir, { XMPP_DATA_DIR: server.config.dataDir, XMPP_DOMAIN: server.config.domain, ...extra });
    return await within(run(process.execPath, ['src/main.ts', ...args], env, { cwd: ROOT }), 2 * STEP_MS, args.join(' '));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Session {
  xmpp: XmppClient;
  stanzas: Element[];
  /** The first stanza (seen so far or to come) that matches. */
  wait(what: string, pred: (el: Element) => boolean): Promise<Element>;
  roster(): Promise<Element[]>;
}

/** Logs in with @xmpp/client over STARTTLS (SCRAM-SHA-1, its choice; or PLAIN when asked). */
async function login(t: ExecutionContext, server: TestServer, username: string, password: string, opts: { plain?: boolean } = {}): Promise<Session> {
  const domain = server.config.domain;
  const credentials = opts.plain ? (authenticate: (c: unknown, m: string) => Promise<void>) => authenticate({ username, password }, 'PLAIN') : undefined;
  const x = xmppClient(server, { username, password, resource: 'imported', ...(credentials ? { credentials } : {}), ...({ domain } as object) });
  const stanzas: Element[] = [];
  const waiters: { pred: (el: Element) => boolean; resolve: (el: Element) => void }[] = [];
  x.on('stanza', (el: Element) => {
    stanzas.push(el);
    for (const w of waiters.filter((w) => w.pred(el))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(el);
    }
  });
  await within(x.start(), WAIT, `${username}@${domain} logging in`);
  t.teardown(() => x.stop().catch(() => {}));
  return {
    xmpp: x,
    stanzas,
    wait: (what, pred) => within(new Promise<Element>((resolve) => {
      const seen = stanzas.find(pred);
      if (seen) resolve(seen);
      else waiters.push({ pred, resolve });
    }), WAIT, what),
    async roster() {
      const q = await within(x.iqCaller.get(xml('query', { xmlns: 'jabber:iq:roster' })), WAIT, 'roster') as Element;
      return q.getChildren('item');
    },
  };
}

const items = (els: Element[]) => els.map((i) => ({ jid: i.attrs.jid, subscription: i.attrs.subscription, ask: i.attrs.ask, name: i.attrs.name, groups: i.getChildren('group').map((g) => g.getText()) }));
const isSubscribe = (from: string) => (el: Element) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === from;
const isBody = (body: string) => (el: Element) => el.name === 'message' && el.getChildText('body') === body;

function sqliteStores(server: TestServer): Xep0227Stores & { close(): void } {
  const d = server.config.dataDir;
  const s = { accounts: SqliteAccountStore.open(join(d, 'accounts.sqlite'), 4096), roster: SqliteRosterStore.open(join(d, 'roster.sqlite')), offline: SqliteOfflineStore.open(join(d, 'offline.sqlite')) };
  return { ...s, close: () => [s.accounts, s.roster, s.offline].forEach((x) => x.close()) };
}

/** What the stores hold for the four fixture users, comparable across servers. */
async function snapshot(s: Xep0227Stores) {
  const out: Record<string, unknown> = {};
  for (const u of await s.accounts.list()) {
    out[u] = {
      sha1: await s.accounts.scram(u, 'SHA-1'),
      sha256: await s.accounts.scram(u, 'SHA-256'),
      roster: (await s.roster.get(u)).items,
      pending: (await s.roster.pendingRequests(u)).map((p) => p.jid),
      offline: (await s.offline.peek!(u, '', 100)).map((m) => m.xml),
    };
  }
  return out;
}

/** The scenario every fixture holds (test/fixtures/xep0227/tools/scenario.py), seen over XMPP. */
async function checkScenario(t: ExecutionContext, server: TestServer, opts: { offline: boolean; plain?: boolean }) {
  const d = server.config.domain;
  const alice = await login(t, server, 'alice', 'alice-pw-1', opts);
  t.deepEqual(items(await alice.roster()), [
    { jid: `bob@${d}`, subscription: 'none', ask: 'subscribe', name: 'Bob', groups: ['Friends'] },
    { jid: `carol@${d}`, subscription: 'both', ask: undefined, name: undefined, groups: [] },
  ], "alice's roster: a request to bob unanswered, a mutual subscription with carol");
  await alice.xmpp.send(xml('presence'));
  await alice.wait("dave's pending request, at alice's initial presence", isSubscribe(`dave@${d}`));
  const bob = await login(t, server, 'bob', 'bob-pw-2', opts);
  t.deepEqual(items(await bob.roster()), []);
  await bob.xmpp.send(xml('presence'));
  await bob.wait("alice's pending request", isSubscribe(`alice@${d}`));
  if (opts.offline) {
    const m = await bob.wait("carol's offline message", isBody('hello bob, from carol'));
    t.is(m.attrs.from, `carol@${d}/fixture`);
    t.regex(m.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp ?? '', /^2026-12-06T02:46:/, 'the stamp of when the old server stored it');
  }
  const dave = await login(t, server, 'dave', 'dave-pw-4', opts);
  t.deepEqual(items(await dave.roster()), [{ jid: `alice@${d}`, subscription: 'none', ask: 'subscribe', name: undefined, groups: [] }]);
  const carol = await login(t, server, 'carol', 'carol-pw-3', opts);
  t.deepEqual(items(await carol.roster()).map((i) => [i.jid, i.subscription]), [[`alice@${d}`, 'both']]);
  t.is(await scramLogin(server, 'alice', 'not-the-password', opts.plain ? 'sha256' : 'sha1', d), 'not-authorized', 'a wrong password is still wrong');
}

test('an ejabberd export (export_piefxis, SCRAM-SHA-1) imports, and its users log in with their old passwords', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 4 accounts \(0 from a plaintext password, 4 with SCRAM-SHA-1 only\), 4 roster items, 2 pending subscription requests, 1 offline messages/);
  t.regex(r.stderr, /4 user\(s\) of plain\.localhost left out/);
  await checkScenario(t, server, { offline: true });
});

test('a Prosody export (prosody-migrator to xep0227) imports, and its users log in with their old passwords', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', ...['alice', 'bob', 'carol', 'dave'].map((u) => join(FIXTURES, 'prosody', `${u}@localhost.xml`))]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 4 accounts .* 4 roster items, 2 pending subscription requests, 0 offline messages/);
  // Prosody 0.12's XEP-0227 writer has no offline messages (fixtures README).
  await checkScenario(t, server, { offline: false });
});

test("ejabberd's plaintext passwords become SCRAM verifiers of both hashes, and are not stored", async (t) => {
  const server = await startTestServer({ XMPP_DOMAIN: 'plain.localhost' });
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd', '20261206-024612.xml')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /4 from a plaintext password/);
  await checkScenario(t, server, { offline: true });
  const s = sqliteStores(server);
  t.teardown(() => s.close());
  t.truthy(await s.accounts.scram('alice', 'SHA-256'));
  t.false(readFileSync(join(server.config.dataDir, 'accounts.sqlite')).includes('alice-pw-1'), 'no password in the file');
});

test('an ejabberd export with SCRAM-SHA-256 only: its users log in (SCRAM-SHA-256 and PLAIN), and PLAIN gives them SHA-1 too', async (t) => {
  const server = await startTestServer({ XMPP_DOMAIN: 'sha256.localhost' });
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd')]);
  t.is(r.code, 0, r.stderr);
  const s = sqliteStores(server);
  t.teardown(() => s.close());
  t.is(await s.accounts.scram('bob', 'SHA-1'), undefined);
  t.is(await scramLogin(server, 'bob', 'bob-pw-2', 'sha256', 'sha256.localhost'), 'success');
  // PLAIN (asked of @xmpp/client, which would take SCRAM-SHA-1) for the scenario.
  await checkScenario(t, server, { offline: true, plain: true });
  t.truthy(await s.accounts.scram('bob', 'SHA-1'), 'SHA-1 verifiers added at the PLAIN login');
});

test('on PostgreSQL too, an account with SCRAM-SHA-256 verifiers only is kept (migration 6) and logs in', async (t) => {
  const url = await pgServer.database();
  const server = await startTestServer({ XMPP_DOMAIN: 'sha256.localhost', XMPP_DATABASE_URL: url });
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd')], { XMPP_DATABASE_URL: url });
  t.is(r.code, 0, r.stderr);
  const accounts = await PostgresAccountStore.open(url, 4096);
  t.teardown(() => accounts.close());
  t.is(await accounts.scram('bob', 'SHA-1'), undefined);
  t.truthy(await accounts.scram('bob', 'SHA-256'));
  t.is(await scramLogin(server, 'bob', 'bob-pw-2', 'sha256', 'sha256.localhost'), 'success');
  t.is(await scramLogin(server, 'bob', 'bob-pw-2', 'sha1', 'sha256.localhost'), 'not-authorized', 'no SHA-1 verifiers to check against');
});

/** SCRAM over STARTTLS on a fresh stream: 'success' (the server's signature checked) or the failure's condition. */
async function scramLogin(server: TestServer, user: string, password: string, hash: 'sha1' | 'sha256', domain?: string): Promise<string> {
  const { c } = await within(secured(server.c2sPort, undefined, domain), WAIT, 'STARTTLS');
  try {
    return await scramOn(c, user, password, hash);
  } finally {
    c.destroy();
  }
}

async function scramOn(c: Awaited<ReturnType<typeof secured>>['c'], user: string, password: string, hash: 'sha1' | 'sha256'): Promise<string> {
  const mech = hash === 'sha1' ? 'SCRAM-SHA-1' : 'SCRAM-SHA-256';
  const clientFirstBare = `n=${user},r=${randomBytes(18).toString('base64')}`;
  c.send(`<auth xmlns='${NS_SASL}' mechanism='${mech}'>${b64(`n,,${clientFirstBare}`)}</auth>`);
  const challenge = await within(c.nextEl(), WAIT, `${mech}: challenge`);
  if (challenge.name !== 'challenge') return challenge.children.find((x) => typeof x !== 'string')?.toString() ?? challenge.toString();
  const serverFirst = Buffer.from(challenge.getText(), 'base64').toString();
  const { clientFinal, serverSignature } = scramClient(hash, password, clientFirstBare, serverFirst, 'n,,');
  c.send(`<response xmlns='${NS_SASL}'>${b64(clientFinal)}</response>`);
  const end = await within(c.nextEl(), WAIT, `${mech}: outcome`);
  if (end.name === 'success') return Buffer.from(end.getText(), 'base64').toString() === `v=${serverSignature.toString('base64')}` ? 'success' : 'bad server signature';
  return (end.children.find((x) => typeof x !== 'string') as Element | undefined)?.name ?? end.toString();
}

test('SCRAM-SHA-1-only accounts: SCRAM-SHA-256 fails with not-authorized, SCRAM-SHA-1 on the same stream succeeds (RFC 6120 §6.4.5); a password change gives both hashes', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'prosody')]);
  t.is(r.code, 0, r.stderr);
  const s = sqliteStores(server);
  t.teardown(() => s.close());
  t.is(await s.accounts.scram('alice', 'SHA-256'), undefined, 'Prosody kept SHA-1 only');
  // The server still offers SCRAM-SHA-256 (it cannot know who will log in).
  const { c, features } = await within(secured(server.c2sPort), WAIT, 'STARTTLS');
  t.teardown(() => c.destroy());
  t.true(features.getChild('mechanisms', NS_SASL)!.getChildren('mechanism').some((m) => m.getText() === 'SCRAM-SHA-256'));
  t.is(await scramOn(c, 'alice', 'alice-pw-1', 'sha256'), 'not-authorized', 'as an unknown user would: nothing tells the account exists');
  t.is(await scramOn(c, 'alice', 'alice-pw-1', 'sha1'), 'success', 'the next mechanism, on the same stream');
  t.is(await s.accounts.scram('alice', 'SHA-256'), undefined, 'SCRAM cannot make SHA-256 verifiers: the password is not known');
  // A password change in band (XEP-0077) stores both.
  const carol = await login(t, server, 'carol', 'carol-pw-3');
  const iq = carol.xmpp.iqCaller as unknown as { set(el: Element): Promise<Element> };
  await within(iq.set(xml('query', { xmlns: 'jabber:iq:register' }, xml('username', {}, 'carol'), xml('password', {}, 'carol-new-pw'))), WAIT, 'password change');
  t.truthy(await s.accounts.scram('carol', 'SHA-256'));
  t.is(await scramLogin(server, 'carol', 'carol-new-pw', 'sha256'), 'success');
  t.is(await scramLogin(server, 'carol', 'carol-new-pw', 'sha1'), 'success');
  // And so does `user passwd`.
  const p = await cli(server, ['user', 'passwd', 'dave', 'dave-new-pw']);
  t.is(p.code, 0, p.stderr);
  t.is(await scramLogin(server, 'dave', 'dave-new-pw', 'sha256'), 'success');
});

test('a round trip on SQLite: our export imported into a fresh server holds the same data', async (t) => {
  const a = await startTestServer();
  t.teardown(() => a.stop());
  t.is((await cli(a, ['user', 'import', join(FIXTURES, 'ejabberd')])).code, 0);
  t.is((await cli(a, ['user', 'passwd', 'carol', 'carol-pw-3'])).code, 0, 'one account with both hashes');
  const file = join(mkdtempSync(join(tmpdir(), 'xep0227-')), 'export.xml');
  t.teardown(() => rmSync(join(file, '..'), { recursive: true, force: true }));
  const e = await cli(a, ['user', 'export', file]);
  t.is(e.code, 0, e.stderr);
  t.regex(e.stdout, /exported 4 accounts, 4 roster items, 2 pending subscription requests, 1 offline messages/);
  t.false(readFileSync(file, 'utf8').includes('password'), 'no password attribute');
  const b = await startTestServer();
  t.teardown(() => b.stop());
  const i = await cli(b, ['user', 'import', file]);
  t.is(i.code, 0, i.stderr);
  const sa = sqliteStores(a);
  const sb = sqliteStores(b);
  t.teardown(() => [sa, sb].forEach((s) => s.close()));
  t.deepEqual(await snapshot(sb), await snapshot(sa));
  await checkScenario(t, b, { offline: true });
});

test('a round trip on PostgreSQL: our export imported into a fresh database holds the same data', async (t) => {
  const a = await startTestServer({ XMPP_DATABASE_URL: await pgServer.database() });
  t.teardown(() => a.stop());
  t.is((await cli(a, ['user', 'import', join(FIXTURES, 'ejabberd')], { XMPP_DATABASE_URL: a.config.databaseUrl! })).code, 0);
  const file = join(mkdtempSync(join(tmpdir(), 'xep0227-')), 'export.xml');
  t.teardown(() => rmSync(join(file, '..'), { recursive: true, force: true }));
  const e = await cli(a, ['user', 'export', file], { XMPP_DATABASE_URL: a.config.databaseUrl! });
  t.is(e.code, 0, e.stderr);
  const b = await startTestServer({ XMPP_DATABASE_URL: await pgServer.database() });
  t.teardown(() => b.stop());
  const i = await cli(b, ['user', 'import', file], { XMPP_DATABASE_URL: b.config.databaseUrl! });
  t.is(i.code, 0, i.stderr);
  const open = async (url: string) => ({ accounts: await PostgresAccountStore.open(url, 4096), roster: await PostgresRosterStore.open(url), offline: await PostgresOfflineStore.open(url) });
  const sa = await open(a.config.databaseUrl!);
  const sb = await open(b.config.databaseUrl!);
  t.teardown(async () => {
    for (const s of [sa, sb]) for (const x of [s.accounts, s.roster, s.offline]) await x.close();
  });
  const snap = await snapshot(sa);
  t.is(Object.keys(snap).length, 4);
  t.deepEqual(await snapshot(sb), snap);
  await checkScenario(t, b, { offline: true });
});

test('an import is refused whole when an account exists (unless --skip-existing), and bad input is named', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  await server.addUser('bob', 'someone-else');
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd')]);
  t.is(r.code, 1);
  t.regex(r.stderr, /1 account\(s\) of the input exist here already: bob\. Nothing was imported; --skip-existing/);
  const s = sqliteStores(server);
  t.teardown(() => s.close());
  t.deepEqual(await s.accounts.list(), ['bob']);
  const k = await cli(server, ['user', 'import', '--skip-existing', join(FIXTURES, 'ejabberd')]);
  t.is(k.code, 0, k.stderr);
  t.regex(k.stdout, /imported 3 accounts[\s\S]*left 1 existing account\(s\) as they were: bob/);
  t.is(await plainOutcome(server.c2sPort, 'bob', 'someone-else'), 'success', "bob's password is his own");
  t.is((await cli(server, ['user', 'import', '--skip-existing', join(FIXTURES, 'ejabberd')])).code, 0, 'idempotent');
  // Bad input: nothing written, the element named.
  const dir = mkdtempSync(join(tmpdir(), 'xep0227-bad-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bad = join(dir, 'bad.xml');
  writeFileSync(bad, `<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='erin' password='x'/><user name='frank'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>many</iter-count><salt>c2FsdA==</salt><server-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</server-key><stored-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</stored-key></scram-credentials></user></host></server-data>`);
  const b = await cli(server, ['user', 'import', bad]);
  t.is(b.code, 1);
  t.regex(b.stderr, /bad\.xml: <user name="frank">: <scram-credentials mechanism='SCRAM-SHA-1'>: <iter-count> "many" is not a positive count/);
  t.false(await s.accounts.exists('erin'), 'nothing written, not even the good user before it');
  writeFileSync(bad, `<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='erin' password='x'></host></server-data>`);
  const w = await cli(server, ['user', 'import', bad]);
  t.is(w.code, 1);
  t.regex(w.stderr, /bad\.xml: not well-formed XML: end tag <\/host> does not match <user>/);
});
