// XEP-0227 export and import (`user export`, `user import`): the files the
// real Prosody and ejabberd wrote (test/fixtures/xep0227, see its README)
// imported into a running server, then logged in to over XMPP with the old
// passwords: rosters, pending subscription requests both ways and offline
// messages arrive. A round trip (our export into a fresh server) on SQLite
// and PostgreSQL, message archives included (filled over XMPP, compared by
// MAM queries over XMPP: the same messages, order and ids), a hand-written
// archive in the XEP's format, PEP whitelists and the account's PEP byte
// bound, refusals, and accounts with SCRAM-SHA-1
// verifiers only (RFC 6120 §6.4.5: SCRAM-SHA-256 fails, SCRAM-SHA-1 on the
// same stream works).
//
// One test at a time: each starts servers of its own (and imports run the
// CLI, with its own process), and thirteen of them at once on a two-core
// machine starved the logins they wait for past their time limit.
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { xml } from '@xmpp/client';
import { parse as parseXml, type Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { ROOT, run, serverEnv, STEP_MS, within } from '../helpers/process.ts';
import { b64, NS_SASL, online, plainOutcome, scramClient, secured, uid } from '../helpers/protocol.ts';
import { barrier, expect as expectEl, ready, type Peer } from '../helpers/im.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { SqliteRosterStore } from '../../src/roster/sqlite.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { SqliteArchiveStore } from '../../src/mam/sqlite.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresRosterStore } from '../../src/roster/postgres.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';
import { PostgresArchiveStore } from '../../src/mam/postgres.ts';
import { SqlitePersonalStore } from '../../src/personal/sqlite.ts';
import { PostgresPersonalStore } from '../../src/personal/postgres.ts';
import { SqlitePepStore } from '../../src/pep/sqlite.ts';
import { PostgresPepStore } from '../../src/pep/postgres.ts';
import { SqliteBlockStore } from '../../src/blocking/sqlite.ts';
import { PostgresBlockStore } from '../../src/blocking/postgres.ts';
import { NS_OWNER, NS_PUBSUB, NODE_CONFIG, form, iq as pubsubIq, itemIds, items as pepItems, publish } from '../helpers/pep.ts';
import type { ArchivedMessage, ArchiveStore } from '../../src/mam/store.ts';
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
  const s = { accounts: SqliteAccountStore.open(join(d, 'accounts.sqlite'), 4096), roster: SqliteRosterStore.open(join(d, 'roster.sqlite')), offline: SqliteOfflineStore.open(join(d, 'offline.sqlite')), archive: SqliteArchiveStore.open(join(d, 'archive.sqlite')), personal: SqlitePersonalStore.open(join(d, 'personal.sqlite')), pep: SqlitePepStore.open(join(d, 'pep.sqlite')), blocking: SqliteBlockStore.open(join(d, 'blocklist.sqlite')) };
  return { ...s, close: () => [s.accounts, s.roster, s.offline, s.archive, s.personal, s.pep, s.blocking].forEach((x) => x.close()) };
}

/** Every row of an account's archive, in archive order, read from the store page by page. */
async function archiveRows(archive: ArchiveStore, owner: string): Promise<ArchivedMessage[]> {
  const rows: ArchivedMessage[] = [];
  for (;;) {
    const page = await archive.query(owner, { max: 250, last: false, ...(rows.length > 0 ? { afterId: rows[rows.length - 1].id } : {}) });
    rows.push(...page.items);
    if (page.complete) return rows;
  }
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
      archive: await archiveRows(s.archive, u),
      vcard: await s.personal.vcard(u),
      privateXml: await s.personal.privateAll(u),
      // Items as XML, not as bytes: an import serialises what it parsed (the XEP-0398 bridge writes its own with single quotes).
      pep: await Promise.all((await s.pep.nodes(u)).map(async (n) => ({ ...n, items: (await s.pep.items(u, n.node)).map((i) => ({ id: i.id, xml: parseXml(i.xml).toString() })) }))),
      blocked: await s.blocking.list(u),
    };
  }
  return out;
}

/** The PEP nodes and items of a snapshot's accounts, as the CLI counts them (the XEP-0398 and XEP-0402 bridges add nodes of their own). */
function pepTotals(snap: Record<string, unknown>): string {
  let nodes = 0;
  let items = 0;
  for (const u of Object.values(snap) as { pep: { items: unknown[] }[] }[]) {
    nodes += u.pep.length;
    for (const n of u.pep) items += n.items.length;
  }
  return `${nodes} PEP nodes with ${items} items`;
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

const NS_MAM = 'urn:xmpp:mam:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_DELAY = 'urn:xmpp:delay';
/** Messages erin sends frank: more than a page of the export (200) and of a MAM query (250), and more than one batch of the import (500) on either side. */
const SENT = 520;

/** Logged in over STARTTLS (SCRAM), its roster requested and its initial presence sent. */
async function peer(t: ExecutionContext, server: TestServer, name: string, password: string, resource: string): Promise<Peer> {
  const { c, jid } = await within(online(server.c2sPort, name, password, resource, server.config.domain), WAIT, `${name} logging in`);
  t.teardown(() => c.destroy());
  const p = { c, jid, bare: jid.split('/')[0], name };
  await ready(p);
  return p;
}

/**
 * Fills archives over XMPP: erin and frank (made here) exchange messages,
 * erin writes herself a note and writes to alice, who is offline (archived
 * on both sides, and kept offline for her).
 */
async function converse(t: ExecutionContext, server: TestServer, env: Record<string, string> = {}) {
  const d = server.config.domain;
  for (const n of ['erin', 'frank']) {
    const r = await cli(server, ['user', 'add', n, `${n}-pw`], env);
    t.is(r.code, 0, r.stderr);
  }
  const erin = await peer(t, server, 'erin', 'erin-pw', 'desk');
  const frank = await peer(t, server, 'frank', 'frank-pw', 'phone');
  const seen = frank.c.items.length;
  for (let i = 0; i < SENT; i++) {
    const extra = i % 100 === 0 ? "<active xmlns='http://jabber.org/protocol/chatstates'/>" : '';
    erin.c.send(`<message to='frank@${d}' type='chat' id='e${i}'><body>${i}: &lt;&amp;&gt; &apos;é&quot;</body>${extra}</message>`);
  }
  await expectEl(frank, 'the last of erin\'s messages', (el) => el.name === 'message' && el.getChildText('body') === `${SENT - 1}: <&> 'é"`, seen);
  const back = erin.c.items.length;
  frank.c.send(`<message to='${erin.jid}' type='chat' id='f1'><body>all ${SENT} here</body></message>`);
  await expectEl(erin, "frank's answer", (el) => el.name === 'message' && el.getChildText('body') === `all ${SENT} here`, back);
  erin.c.send(`<message to='erin@${d}' type='normal' id='e-self'><body>a note to myself</body></message>`);
  erin.c.send(`<message to='alice@${d}' type='chat' id='e-alice'><body>for alice, offline</body></message>`);
  await barrier(erin, erin.c.items.length);
  // Her vCard, with a photo (its hash kept too), and private XML of two namespaces (XEP-0049).
  for (const inner of [
    `<vCard xmlns='vcard-temp'><FN>Erin &amp; é</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>${PHOTO}</BINVAL></PHOTO></vCard>`,
    "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='room@muc.example.org' autojoin='true'><nick>erin</nick></conference></storage><x xmlns='example:prefs'>1</x><x xmlns='example:prefs'>2</x></query>",
  ]) {
    const id = uid('pd');
    const r = await within(erin.c.request(`<iq type='set' id='${id}'>${inner}</iq>`, id), WAIT, 'erin: personal data');
    t.is(r.attrs.type, 'result', r.toString());
  }
  // PEP: a node of XEP-0402's options, one made with a configuration of every field kept (more items published than it keeps), one of the defaults.
  const ok = (r: Element) => t.is(r.attrs.type, 'result', r.toString());
  const bookmarks = { 'pubsub#persist_items': 'true', 'pubsub#max_items': 'max', 'pubsub#send_last_published_item': 'never', 'pubsub#access_model': 'whitelist' };
  ok(await publish(erin, 'urn:xmpp:bookmarks:1', "<conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s &amp; é' autojoin='true'><nick>erin</nick></conference>", { id: 'play@muc.example.org', options: bookmarks }));
  ok(await publish(erin, 'urn:xmpp:bookmarks:1', "<conference xmlns='urn:xmpp:bookmarks:1' name='Orchard'/>", { id: 'orchard@muc.example.org', options: bookmarks }));
  const notes = { 'pubsub#access_model': 'roster', 'pubsub#roster_groups_allowed': ['Friends', 'Family & co'], 'pubsub#max_items': '3', 'pubsub#notify_retract': '0', 'pubsub#send_last_published_item': 'on_sub' };
  ok(await pubsubIq(erin, 'set', `<pubsub xmlns='${NS_PUBSUB}'><create node='urn:example:notes'/><configure>${form(NODE_CONFIG, notes)}</configure></pubsub>`));
  for (let i = 1; i <= 4; i++) ok(await publish(erin, 'urn:example:notes', `<note xmlns='urn:example:notes' xmlns:x='urn:example:x' x:n='${i}'>note ${i}</note>`, { id: `n${i}` }));
  ok(await publish(erin, 'http://jabber.org/protocol/tune', "<tune xmlns='http://jabber.org/protocol/tune'><title>Ode</title></tune>"));
  // Her blocklist (XEP-0191), in this order.
  const id = uid('bl');
  ok(await within(erin.c.request(`<iq type='set' id='${id}'><block xmlns='urn:xmpp:blocking'><item jid='mallory@example.org'/><item jid='spam.example'/><item jid='Mallet@Example.ORG/Phone'/></block></iq>`, id), WAIT, 'erin: block'));
}

const PEP_NODES = ['http://jabber.org/protocol/tune', 'urn:example:notes', 'urn:xmpp:bookmarks:1'];

/** Erin's blocklist, and of each of her PEP nodes its configuration and items, over XMPP, serialised. */
async function pepOf(t: ExecutionContext, server: TestServer): Promise<string[]> {
  const erin = await peer(t, server, 'erin', 'erin-pw', 'pep');
  const id = uid('bl');
  const list = await within(erin.c.request(`<iq type='get' id='${id}'><blocklist xmlns='urn:xmpp:blocking'/></iq>`, id), WAIT, 'erin: blocklist');
  const out = [list.getChild('blocklist')!.toString()];
  for (const node of PEP_NODES) {
    const config = await pubsubIq(erin, 'get', `<pubsub xmlns='${NS_OWNER}'><configure node='${node}'/></pubsub>`);
    const got = await pepItems(erin, undefined, node);
    t.is(got.attrs.type, 'result', got.toString());
    out.push(config.getChild('pubsub')!.toString(), got.getChild('pubsub')!.toString());
  }
  return out;
}

const PHOTO = randomBytes(300).toString('base64');

/** Erin's vCard and private XML over XMPP (XEP-0054, XEP-0049), serialised. */
async function personalOf(t: ExecutionContext, server: TestServer): Promise<string[]> {
  const erin = await peer(t, server, 'erin', 'erin-pw', 'personal');
  const out: string[] = [];
  for (const [type, inner] of [['get', "<vCard xmlns='vcard-temp'/>"], ['get', "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"], ['get', "<query xmlns='jabber:iq:private'><x xmlns='example:prefs'/></query>"]]) {
    const id = uid('pd');
    const r = await within(erin.c.request(`<iq type='${type}' id='${id}'>${inner}</iq>`, id), WAIT, 'erin: personal data');
    t.is(r.attrs.type, 'result', r.toString());
    out.push(r.children.map((c) => c.toString()).join(''));
  }
  return out;
}

interface Archived {
  id: string;
  stamp: string;
  from: string;
  body?: string;
  message: string;
}

/** The account's whole archive over XMPP (XEP-0313), paged with RSM: each result's id, delay stamp and message. */
async function archiveOf(p: Peer): Promise<Archived[]> {
  const out: Archived[] = [];
  let after: string | undefined;
  for (;;) {
    const id = uid('mam');
    const from = p.c.items.length;
    const iq = await within(p.c.request(`<iq type='set' id='${id}'><query xmlns='${NS_MAM}' queryid='${id}'><set xmlns='http://jabber.org/protocol/rsm'><max>250</max>${after ? `<after>${after}</after>` : ''}</set></query></iq>`, id), WAIT, `${p.jid}: archive query`);
    if (iq.attrs.type !== 'result') throw new Error(`archive query failed: ${iq.toString()}`);
    const results = p.c.items.slice(from).flatMap((it) => {
      const r = it.kind === 'el' && it.el.name === 'message' ? it.el.getChild('result', NS_MAM) : undefined;
      return r && r.attrs.queryid === id ? [r] : [];
    });
    for (const r of results) {
      const f = r.getChild('forwarded', NS_FORWARD)!;
      const m = f.getChild('message')!;
      out.push({ id: r.attrs.id, stamp: f.getChild('delay', NS_DELAY)!.attrs.stamp, from: m.attrs.from, body: m.getChildText('body') ?? undefined, message: m.toString() });
    }
    if (iq.getChild('fin', NS_MAM)?.attrs.complete === 'true' || results.length === 0) return out;
    after = results[results.length - 1].attrs.id;
  }
}

/** The archives of erin, frank and alice, over XMPP. */
async function archives(t: ExecutionContext, server: TestServer): Promise<Record<string, Archived[]>> {
  const out: Record<string, Archived[]> = {};
  for (const [name, password] of [['erin', 'erin-pw'], ['frank', 'frank-pw'], ['alice', 'alice-pw-1']]) out[name] = await archiveOf(await peer(t, server, name, password, 'mam'));
  return out;
}

/** What converse() archived, as a MAM query shows it. */
function checkArchives(t: ExecutionContext, a: Record<string, Archived[]>, d: string) {
  t.is(a.erin.length, SENT + 3, "erin's: what she sent, frank's answer, her note, her message to alice");
  t.is(a.frank.length, SENT + 1);
  t.is(a.alice.length, 1);
  const bodies = a.erin.map((m) => m.body);
  t.deepEqual(bodies.slice(0, 3), ['0: <&> \'é"', '1: <&> \'é"', '2: <&> \'é"']);
  t.deepEqual(bodies.slice(-3), [`all ${SENT} here`, 'a note to myself', 'for alice, offline']);
  t.deepEqual(a.frank.map((m) => m.body).slice(SENT - 1), [`${SENT - 1}: <&> 'é"`, `all ${SENT} here`]);
  for (const m of Object.values(a).flat()) t.regex(m.id, /^[0-9a-f]{24}$/);
  t.true(a.erin.every((m, i) => i === 0 || a.erin[i - 1].id < m.id), 'in id order');
  t.is(a.alice[0].from, `erin@${d}/desk`);
}

test.serial('an ejabberd export (export_piefxis, SCRAM-SHA-1) imports, and its users log in with their old passwords', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 4 accounts \(0 from a plaintext password, 4 with SCRAM-SHA-1 only\), 4 roster items, 2 pending subscription requests, 1 offline messages/);
  t.regex(r.stderr, /4 user\(s\) of plain\.localhost left out/);
  await checkScenario(t, server, { offline: true });
});

test.serial('a Prosody export (prosody-migrator to xep0227) imports, and its users log in with their old passwords', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', ...['alice', 'bob', 'carol', 'dave'].map((u) => join(FIXTURES, 'prosody', `${u}@localhost.xml`))]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 4 accounts .* 4 roster items, 2 pending subscription requests, 0 offline messages/);
  // Prosody 0.12's XEP-0227 writer has no offline messages (fixtures README).
  await checkScenario(t, server, { offline: false });
});

/** The values of a node's configuration form (an owner's configure answer), by var. */
function configValues(res: Element): Record<string, string[]> {
  const x = res.getChild('pubsub', NS_OWNER)?.getChild('configure')?.getChild('x', 'jabber:x:data');
  return Object.fromEntries((x?.getChildren('field') ?? []).filter((f) => f.attrs.var !== 'FORM_TYPE').map((f) => [f.attrs.var, f.getChildren('value').map((v) => v.getText())]));
}

const PEP_DEFAULTS = { 'pubsub#access_model': ['presence'], 'pubsub#persist_items': ['1'], 'pubsub#max_items': ['1'], 'pubsub#send_last_published_item': ['on_sub_and_presence'], 'pubsub#notify_retract': ['1'], 'pubsub#roster_groups_allowed': [] };

test.serial('PEP from a Prosody export (prosody-migrator, its pep store): the nodes, their configuration and items, served over XMPP as they were', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'prosody-pep')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 2 accounts .*, 4 PEP nodes with 7 items, 0 blocked JIDs/);
  t.is(r.stderr, '', "nothing left out (the owner's own affiliation goes without saying)");
  const alice = await peer(t, server, 'alice', 'alice-pw-1', 'pep');
  const owned = async (node: string) => ({ ids: itemIds(await pepItems(alice, undefined, node)), config: configValues(await pubsubIq(alice, 'get', `<pubsub xmlns='${NS_OWNER}'><configure node='${node}'/></pubsub>`)) });
  t.deepEqual(await owned('urn:xmpp:bookmarks:1'), {
    ids: ['theplay@conference.shakespeare.lit', 'orchard@conference.shakespeare.lit'],
    config: { ...PEP_DEFAULTS, 'pubsub#access_model': ['whitelist'], 'pubsub#max_items': ['256'], 'pubsub#send_last_published_item': ['never'] },
  }, "XEP-0402's options; max_items 'max' is this server's bound");
  t.deepEqual(await owned('urn:example:notes'), {
    ids: ['r1', 'r2', 'r3'],
    config: { ...PEP_DEFAULTS, 'pubsub#max_items': ['5'], 'pubsub#send_last_published_item': ['on_sub'], 'pubsub#notify_retract': ['0'] },
  });
  t.deepEqual(await owned('http://jabber.org/protocol/tune'), { ids: ['tune-1'], config: PEP_DEFAULTS }, 'fields Prosody left empty are the defaults');
  t.deepEqual((await owned('http://jabber.org/protocol/nick')).config['pubsub#access_model'], ['open']);
  const orchard = (await pepItems(alice, undefined, 'urn:xmpp:bookmarks:1', "<item id='orchard@conference.shakespeare.lit'/>")).getChild('pubsub')!.getChild('items')!.getChild('item')!;
  t.is(orchard.getChild('conference', 'urn:xmpp:bookmarks:1')?.getChildText('password'), '<secret>', 'the payload as published');
  // The access models hold: bob (no subscription) reads the open node, not the whitelisted one.
  const bob = await peer(t, server, 'bob', 'bob-pw-2', 'pep');
  t.deepEqual(itemIds(await pepItems(bob, 'alice@localhost', 'http://jabber.org/protocol/nick')), ['current']);
  t.is((await pepItems(bob, 'alice@localhost', 'urn:xmpp:bookmarks:1')).attrs.type, 'error');
});

test.serial("PEP whitelists (Prosody's <affiliations/>) imported, exported and imported again: the members read over XMPP; an account past its PEP bytes is trimmed at import, and publishes after", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xep0227-wl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const field = (v: string, value: string) => `<field var='${v}'><value>${value}</value></field>`;
  const configure = (node: string, fields: string) => `<configure node='${node}'><x xmlns='jabber:x:data' type='submit'>${field('FORM_TYPE', NODE_CONFIG)}${fields}</x></configure>`;
  // Three nodes of 12 items of some 150 KB: past the account's 4 MiB (MAX_ACCOUNT_BYTES).
  const big = ['a', 'b', 'c'].map((x) => `urn:example:big-${x}`);
  const juliet = `<user name='juliet' password='juliet-pw'><pubsub xmlns='${NS_OWNER}'>`
    + configure('urn:example:secret', field('pubsub#access_model', 'whitelist'))
    + "<affiliations node='urn:example:secret'><affiliation jid='juliet@localhost' affiliation='owner'/><affiliation jid='nurse@localhost' affiliation='member'/></affiliations>"
    + big.map((n) => configure(n, field('pubsub#max_items', '20'))).join('')
    + `</pubsub><pubsub xmlns='${NS_PUBSUB}'><items node='urn:example:secret'><item id='s1'><note xmlns='urn:example:notes'>for the nurse</note></item></items>`
    + big.map((n) => `<items node='${n}'>${Array.from({ length: 12 }, (_, i) => `<item id='i${i}'><data xmlns='urn:example:data'>${'x'.repeat(150_000)}</data></item>`).join('')}</items>`).join('')
    + '</pubsub></user>';
  const file = join(dir, 'in.xml');
  writeFileSync(file, `<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'>${juliet}<user name='nurse' password='nurse-pw'/><user name='tybalt' password='tybalt-pw'/></host></server-data>`);
  const a = await startTestServer({ XMPP_WORKERS: '1' });
  t.teardown(() => a.stop());
  const r = await cli(a, ['user', 'import', file]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /note: PEP items past the account's 4194304 bytes \(the oldest of each node not kept\): 1 user\(s\)/);
  const whitelisted = async (server: TestServer) => {
    const nurse = await peer(t, server, 'nurse', 'nurse-pw', 'wl');
    const tybalt = await peer(t, server, 'tybalt', 'tybalt-pw', 'wl');
    return { nurse: itemIds(await pepItems(nurse, 'juliet@localhost', 'urn:example:secret')), tybalt: (await pepItems(tybalt, 'juliet@localhost', 'urn:example:secret')).attrs.type };
  };
  t.deepEqual(await whitelisted(a), { nurse: ['s1'], tybalt: 'error' }, 'the member reads, another account does not');
  // Within its bound: the account publishes (past it, every publish would be policy-violation).
  const j = await peer(t, a, 'juliet', 'juliet-pw', 'pub');
  const res = await publish(j, 'urn:example:new', "<x xmlns='urn:example'/>", { id: 'n1' });
  t.is(res.attrs.type, 'result', res.toString());

  const out = join(dir, 'export.xml');
  const e = await cli(a, ['user', 'export', out]);
  t.is(e.code, 0, e.stderr);
  t.true(readFileSync(out, 'utf8').includes("<affiliations node='urn:example:secret'><affiliation jid='juliet@localhost' affiliation='owner'/><affiliation jid='nurse@localhost' affiliation='member'/></affiliations>"), 'the whitelist as Prosody writes it');
  const b = await startTestServer({ XMPP_WORKERS: '1' });
  t.teardown(() => b.stop());
  const i = await cli(b, ['user', 'import', out]);
  t.is(i.code, 0, i.stderr);
  t.deepEqual(await whitelisted(b), { nurse: ['s1'], tybalt: 'error' }, 'and after the round trip');
});

test.serial('blocklists from an ejabberd export (export_piefxis: the default privacy lists mod_blocking keeps) are enforced by the running server at once; what is no plain block is said', async (t) => {
  const server = await startTestServer();
  t.teardown(() => server.stop());
  const r = await cli(server, ['user', 'import', join(FIXTURES, 'ejabberd-pep')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 2 accounts .*, 0 PEP nodes with 0 items, 3 blocked JIDs/, 'ejabberd 23.01 writes no PEP');
  t.regex(r.stderr, /note: privacy list items of type group \(not kept\): 1 user\(s\)/);
  t.regex(r.stderr, /note: privacy list items about some kinds of stanza only \(not kept\): 1 user\(s\)/);
  const blocklist = async (p: Peer) => {
    const id = uid('bl');
    const res = await within(p.c.request(`<iq type='get' id='${id}'><blocklist xmlns='urn:xmpp:blocking'/></iq>`, id), WAIT, 'blocklist');
    return res.getChild('blocklist')!.getChildren('item').map((i) => i.attrs.jid);
  };
  const alice = await peer(t, server, 'alice', 'alice-pw-1', 'blocking');
  t.deepEqual(await blocklist(alice), ['mallory@example.org', 'spam.example']);
  const bob = await peer(t, server, 'bob', 'bob-pw-2', 'blocking');
  t.deepEqual(await blocklist(bob), ['tybalt@example.com'], "the one item of bob's list that denies a JID everything");
  // The workers, started before alice existed, were told: a message to a blocked JID is refused (XEP-0191 §5.3).
  for (const to of ['mallory@example.org', 'anyone@spam.example']) {
    const from = alice.c.items.length;
    alice.c.send(`<message to='${to}' id='m-${to}' type='chat'><body>hi</body></message>`);
    const err = await expectEl(alice, `the error for ${to}`, (el) => el.name === 'message' && el.attrs.id === `m-${to}`, from);
    t.is(err.attrs.type, 'error');
    t.truthy(err.getChild('error')?.getChild('not-acceptable', 'urn:ietf:params:xml:ns:xmpp-stanzas'), err.toString());
    t.truthy(err.getChild('error')?.getChild('blocked', 'urn:xmpp:blocking:errors'), err.toString());
  }
});

test.serial("ejabberd's plaintext passwords become SCRAM verifiers of both hashes, and are not stored", async (t) => {
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

test.serial('an ejabberd export with SCRAM-SHA-256 only: its users log in (SCRAM-SHA-256 and PLAIN), and PLAIN gives them SHA-1 too', async (t) => {
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

test.serial('on PostgreSQL too, an account with SCRAM-SHA-256 verifiers only is kept (migration 6) and logs in', async (t) => {
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

test.serial('SCRAM-SHA-1-only accounts: SCRAM-SHA-256 fails with not-authorized, SCRAM-SHA-1 on the same stream succeeds (RFC 6120 §6.4.5); a password change gives both hashes', async (t) => {
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

test.serial('a round trip on SQLite: our export imported into a fresh server holds the same data, and the same archives over XMPP', async (t) => {
  const a = await startTestServer({ XMPP_WORKERS: '1' });
  t.teardown(() => a.stop());
  t.is((await cli(a, ['user', 'import', join(FIXTURES, 'ejabberd')])).code, 0);
  t.is((await cli(a, ['user', 'passwd', 'carol', 'carol-pw-3'])).code, 0, 'one account with both hashes');
  await converse(t, a);
  // A query waits for its worker's writes (one worker): everything is in the store before the export.
  const before = await archives(t, a);
  checkArchives(t, before, 'localhost');
  const personal = await personalOf(t, a);
  t.regex(personal[0], /<FN>Erin &amp; é<\/FN>/);
  const pepBefore = await pepOf(t, a);
  t.regex(pepBefore[0], /<item jid="mallory@example\.org"\/><item jid="spam\.example"\/><item jid="mallet@example\.org\/Phone"\/>/, 'the blocklist, normalised, in order');
  t.deepEqual([...pepBefore[4].matchAll(/<item id="([^"]+)"/g)].map((m) => m[1]), ['n2', 'n3', 'n4'], 'what the node keeps (pubsub#max_items 3)');
  const sa = sqliteStores(a);
  t.teardown(() => sa.close());
  const pepCounts = pepTotals(await snapshot(sa));
  const file = join(mkdtempSync(join(tmpdir(), 'xep0227-')), 'export.xml');
  t.teardown(() => rmSync(join(file, '..'), { recursive: true, force: true }));
  const e = await cli(a, ['user', 'export', file]);
  t.is(e.code, 0, e.stderr);
  t.regex(e.stdout, new RegExp(`exported 6 accounts, 4 roster items, 2 pending subscription requests, 1 offline messages, ${2 * SENT + 5} archived messages`), 'alice got her offline message when she logged in to query her archive');
  const text = readFileSync(file, 'utf8');
  t.false(text.includes('password'), 'no password attribute');
  const shape = /<user name='erin'>.*?<archive xmlns='urn:xmpp:pie:0#mam'><result xmlns='urn:xmpp:mam:2' id='[0-9a-f]{24}'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z'\/><message [^>]*xmlns="jabber:client"/;
  t.true(shape.test(text), "the archive as XEP-0227 §'Message Archive' has it");
  t.true(e.stdout.includes(`, 1 vCards, 2 namespaces of private XML, ${pepCounts}, 3 blocked JIDs to `), e.stdout);
  t.regex(text, /<user name='erin'>.*?<vCard xmlns="vcard-temp"><FN>Erin &amp; é<\/FN>.*?<\/vCard><query xmlns='jabber:iq:private'><x xmlns="example:prefs">1<\/x><x xmlns="example:prefs">2<\/x><storage xmlns="storage:bookmarks">/, 'the vCard and private XML in the user, as XEP-0227 has them');
  t.regex(text, /<user name='erin'>.*?<query xmlns='jabber:iq:privacy'><default name='blocklist'\/><list name='blocklist'><item type='jid' value='mallory@example\.org' action='deny' order='1'\/><item type='jid' value='spam\.example' action='deny' order='2'\/>/, "the blocklist as the default privacy list (XEP-0227 §'Privacy Lists')");
  t.regex(text, /<user name='erin'>.*?<pubsub xmlns='http:\/\/jabber\.org\/protocol\/pubsub#owner'><configure node='http:\/\/jabber\.org\/protocol\/tune'><x xmlns='jabber:x:data' type='submit'>.*?<\/pubsub><pubsub xmlns='http:\/\/jabber\.org\/protocol\/pubsub'><items node='http:\/\/jabber\.org\/protocol\/tune'><item id='[^']+'><tune xmlns="http:\/\/jabber\.org\/protocol\/tune">/, "PEP as XEP-0227 §'Personal Eventing Protocol' has it");
  const b = await startTestServer({ XMPP_WORKERS: '1' });
  t.teardown(() => b.stop());
  const i = await cli(b, ['user', 'import', file]);
  t.is(i.code, 0, i.stderr);
  t.regex(i.stdout, new RegExp(`imported 6 accounts .* 1 offline messages, ${2 * SENT + 5} archived messages, 1 vCards, 2 namespaces of private XML, ${pepCounts}, 3 blocked JIDs`));
  const sb = sqliteStores(b);
  t.teardown(() => sb.close());
  t.deepEqual(await snapshot(sb), await snapshot(sa), 'every archived row as it was (ids, stamps, with, direction, body, stanza)');
  t.deepEqual(await archives(t, b), before, 'the same messages, in the same order, with the same ids and stamps');
  t.deepEqual(await personalOf(t, b), personal, 'the same vCard and private XML over XMPP');
  t.deepEqual(await pepOf(t, b), pepBefore, 'the same blocklist, PEP configurations and items over XMPP');
  await checkScenario(t, b, { offline: true });
});

test.serial('a round trip on PostgreSQL: our export imported into a fresh database holds the same data, and the same archives over XMPP', async (t) => {
  const a = await startTestServer({ XMPP_WORKERS: '1', XMPP_DATABASE_URL: await pgServer.database() });
  t.teardown(() => a.stop());
  const envA = { XMPP_DATABASE_URL: a.config.databaseUrl! };
  t.is((await cli(a, ['user', 'import', join(FIXTURES, 'ejabberd')], envA)).code, 0);
  await converse(t, a, envA);
  const before = await archives(t, a);
  checkArchives(t, before, 'localhost');
  const personal = await personalOf(t, a);
  const pepBefore = await pepOf(t, a);
  const file = join(mkdtempSync(join(tmpdir(), 'xep0227-')), 'export.xml');
  t.teardown(() => rmSync(join(file, '..'), { recursive: true, force: true }));
  const e = await cli(a, ['user', 'export', file], envA);
  t.is(e.code, 0, e.stderr);
  t.regex(e.stdout, new RegExp(`exported 6 accounts, .* ${2 * SENT + 5} archived messages, 1 vCards, 2 namespaces of private XML, \\d+ PEP nodes with \\d+ items, 3 blocked JIDs`));
  const b = await startTestServer({ XMPP_WORKERS: '1', XMPP_DATABASE_URL: await pgServer.database() });
  t.teardown(() => b.stop());
  const i = await cli(b, ['user', 'import', file], { XMPP_DATABASE_URL: b.config.databaseUrl! });
  t.is(i.code, 0, i.stderr);
  const open = async (url: string) => ({ accounts: await PostgresAccountStore.open(url, 4096), roster: await PostgresRosterStore.open(url), offline: await PostgresOfflineStore.open(url), archive: await PostgresArchiveStore.open(url), personal: await PostgresPersonalStore.open(url), pep: await PostgresPepStore.open(url), blocking: await PostgresBlockStore.open(url) });
  const sa = await open(a.config.databaseUrl!);
  const sb = await open(b.config.databaseUrl!);
  t.teardown(async () => {
    for (const s of [sa, sb]) for (const x of [s.accounts, s.roster, s.offline, s.archive, s.personal, s.pep, s.blocking]) await x.close();
  });
  const snap = await snapshot(sa);
  t.is(Object.keys(snap).length, 6);
  t.true(e.stdout.includes(`, ${pepTotals(snap)}, 3 blocked JIDs to `), e.stdout);
  t.deepEqual(await snapshot(sb), snap);
  t.truthy((snap.erin as { vcard?: { photoHash: string } }).vcard?.photoHash.match(/^[0-9a-f]{40}$/), "the photo's hash kept (XEP-0153)");
  t.deepEqual(await archives(t, b), before, 'the same messages, in the same order, with the same ids and stamps');
  t.deepEqual(await personalOf(t, b), personal, 'the same vCard and private XML over XMPP');
  t.deepEqual(await pepOf(t, b), pepBefore, 'the same blocklist, PEP configurations and items over XMPP');
  const erinNodes = (snap.erin as { pep: { node: string }[] }).pep.map((n) => n.node);
  t.true(PEP_NODES.every((n) => erinNodes.includes(n)), `her nodes, among those of the bridges: ${erinNodes.join(', ')}`);
  await checkScenario(t, b, { offline: true });
});

test.serial('an import is refused whole when an account exists (unless --skip-existing), and bad input is named', async (t) => {
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
  writeFileSync(bad, `<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='frank'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>2000000</iter-count><salt>c2FsdA==</salt><server-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</server-key><stored-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</stored-key></scram-credentials></user></host></server-data>`);
  const slow = await cli(server, ['user', 'import', bad]);
  t.is(slow.code, 1);
  t.regex(slow.stderr, /<iter-count> 2000000 is more than 1000000 \(a login would take too long\)/);
  writeFileSync(bad, `<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='erin' password='x'></host></server-data>`);
  const w = await cli(server, ['user', 'import', bad]);
  t.is(w.code, 1);
  t.regex(w.stderr, /bad\.xml: <user name="erin">: not well-formed XML: end tag <\/host> does not match <user>/);
});

test.serial("a hand-written archive in XEP-0227's format (its example's) imports: the MAM query returns it in the stamps' order, with ids of this archive; a re-run replaces what a stopped one left", async (t) => {
  const server = await startTestServer({ XMPP_DOMAIN: 'capulet.lit', XMPP_WORKERS: '1' });
  t.teardown(() => server.stop());
  const file = join(FIXTURES, 'handwritten', 'archive.xml');
  const s = sqliteStores(server);
  t.teardown(() => s.close());
  const dry = await cli(server, ['user', 'import', '--dry-run', file]);
  t.is(dry.code, 0, dry.stderr);
  t.regex(dry.stdout, /would import 1 accounts \(1 from a plaintext password, 0 with SCRAM-SHA-1 only\), 0 roster items, 0 pending subscription requests, 0 offline messages, 3 archived messages/);
  t.false(await s.accounts.exists('juliet'));
  t.is(await s.archive.count('juliet', {}), 0, 'a dry run writes nothing');
  const r = await cli(server, ['user', 'import', file]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /imported 1 accounts .* 3 archived messages/);
  t.is(r.stderr, '', 'nothing left out');

  const juliet = await peer(t, server, 'juliet', 'juliet-pw', 'balcony');
  const got = await archiveOf(juliet);
  t.deepEqual(got.map((m) => [m.stamp, m.from, m.body]), [
    ['2010-07-10T23:08:25.000Z', 'romeo@montague.lit/orchard', "Call me but love, and I'll be new baptized; Henceforth I never will be Romeo."],
    ['2010-07-10T23:09:32.000Z', 'juliet@capulet.lit/balcony', "What man art thou that thus bescreen'd in night so stumblest on my counsel?"],
    ['2010-07-10T23:09:32.000Z', 'romeo@montague.lit/orchard', 'By a name I know not how to tell thee who I am.'],
  ], "the stamps' order, and the file's within one second");
  for (const m of got) t.regex(m.id, /^[0-9a-f]{24}$/, "ids of this archive: the other server's are not ours to keep");
  t.true(got[0].id < got[1].id && got[1].id < got[2].id);
  t.regex(got[1].message, /id=["']8a54s["']/, 'the stanza as it was');
  const rows = await archiveRows(s.archive, 'juliet');
  t.deepEqual(rows.map((m) => [m.withBare, m.withResource, m.outgoing]), [['romeo@montague.lit', 'orchard', false], ['romeo@montague.lit', 'orchard', true], ['romeo@montague.lit', 'orchard', false]]);
  t.deepEqual(rows.map((m) => m.id), got.map((m) => m.id));

  // An import that stopped after the archive, before the account: run again, the archive it left is replaced, not doubled.
  t.true(await s.accounts.remove('juliet'));
  const again = await cli(server, ['user', 'import', file]);
  t.is(again.code, 0, again.stderr);
  t.is(await s.archive.count('juliet', {}), 3);
  const skip = await cli(server, ['user', 'import', '--skip-existing', file]);
  t.is(skip.code, 0, skip.stderr);
  t.regex(skip.stdout, /imported 0 accounts[\s\S]*left 1 existing account\(s\) as they were: juliet/);
  t.is(await s.archive.count('juliet', {}), 3, 'an account left as it is keeps its archive as it is');
});

test.serial('a bad archive item is named, and nothing is imported', async (t) => {
  const server = await startTestServer({ XMPP_DOMAIN: 'capulet.lit' });
  t.teardown(() => server.stop());
  const s = sqliteStores(server);
  t.teardown(() => s.close());
  const dir = mkdtempSync(join(tmpdir(), 'xep0227-bad-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bad = join(dir, 'bad.xml');
  const item = (id: string, delay: string, from: string, to: string) =>
    `<result xmlns='urn:xmpp:mam:2' id='${id}'><forwarded xmlns='urn:xmpp:forward:0'>${delay}<message xmlns='jabber:client' from='${from}' to='${to}' type='chat'><body>${id}</body></message></forwarded></result>`;
  const delay = "<delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>";
  const doc = (items: string) => `<server-data xmlns='urn:xmpp:pie:0'><host jid='capulet.lit'><user name='nurse' password='x'><archive xmlns='urn:xmpp:pie:0#mam'>${items}</archive></user></host></server-data>`;
  const cases: [string, RegExp][] = [
    [doc(item('a1', delay, 'romeo@montague.lit', 'nurse@capulet.lit') + item('a2', '', 'romeo@montague.lit', 'nurse@capulet.lit')), /bad\.xml: <user name="nurse">: <archive>: <result id="a2"> \(item 2\) has no <delay xmlns='urn:xmpp:delay'> in <forwarded>/],
    [doc(item('b1', delay.replace('2010-07-10T23:08:25Z', 'yesterday'), 'romeo@montague.lit', 'nurse@capulet.lit')), /<result id="b1"> \(item 1\): <delay>: stamp="yesterday" is not an XEP-0082 date-time/],
    [doc(item('c1', delay, 'romeo@montague.lit', 'tybalt@capulet.lit')), /<result id="c1"> \(item 1\): the message is neither from nor to nurse@capulet\.lit/],
  ];
  for (const [text, error] of cases) {
    writeFileSync(bad, text);
    const r = await cli(server, ['user', 'import', bad]);
    t.is(r.code, 1, r.stdout);
    t.regex(r.stderr, error);
  }
  t.false(await s.accounts.exists('nurse'), 'nothing written');
  t.is(await s.archive.count('nurse', {}), 0);
});
