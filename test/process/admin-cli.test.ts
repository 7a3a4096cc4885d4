// Runtime administration from the command line (`sessions list|kick`,
// `stats`, `announce`) against a running node, over its administration
// socket, with real clients logged in: @xmpp/client over direct TLS, and
// raw streams over STARTTLS. What the commands print is what the sessions
// are; a kick ends exactly the sessions named, with a stream error, and no
// other; an announcement reaches every session.
import test from 'ava';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Element } from 'ltx';
import { xml } from '@xmpp/client';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { START_MS, STEP_MS, within, serverEnv, ServerProcess, run } from '../helpers/process.ts';
import { connect, expect } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { NS_STREAMS_ERR, childEls } from '../helpers/protocol.ts';
import { xmppClient, Inbox } from '../helpers/xmpp-client.ts';
import type { SessionInfo } from '../../src/admin/tasks.ts';

let server: ServerProcess;
let env: NodeJS.ProcessEnv;
let dir: string;

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xmpp-admin-cli-'));
  env = serverEnv(dir, { XMPP_WORKERS: '2' });
  server = new ServerProcess(process.execPath, ['src/main.ts', 'start'], env);
  await within(server.waitForLog('listening'), START_MS, 'the "listening" log line');
  const store = SqliteAccountStore.open(join(env.XMPP_DATA_DIR!, 'accounts.sqlite'), 4096);
  for (const name of ['alice', 'bob', 'carol', 'dave']) await store.create(name, `${name}-pw`);
  store.close();
});
test.after.always(() => {
  server?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The CLI, as an operator runs it beside the node (same configuration). */
async function cli(...args: string[]) {
  return within(run(process.execPath, ['src/main.ts', ...args], env), 60_000, `xmpp-server ${args.join(' ')}`);
}

async function listed(...extra: string[]): Promise<{ sessions: SessionInfo[]; nodes: { node: string; total: number }[]; missing: number }> {
  const r = await cli('sessions', 'list', '--json', ...extra);
  if (r.code !== 0) throw new Error(`sessions list exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { sessions: SessionInfo[]; nodes: { node: string; total: number }[]; missing: number };
}

/** The stream error a raw session got, once its connection closed. */
async function streamError(p: Peer, from: number): Promise<string | undefined> {
  const el = await expect(p, 'a stream error', (e) => e.name === 'stream:error', from);
  await within(p.c.closed, STEP_MS, `${p.jid}: connection closed`);
  return childEls(el).find((c) => c.attrs.xmlns === NS_STREAMS_ERR && c.name !== 'text')?.name;
}

test.serial('the administration socket is the owner\'s only (0600), in the data directory', (t) => {
  t.is(statSync(join(env.XMPP_DATA_DIR!, 'admin.sock')).mode & 0o777, 0o600);
});

test.serial('sessions list, stats and announce show and reach every session: @xmpp/client over direct TLS and raw streams over STARTTLS', async (t) => {
  const certFile = join(env.XMPP_DATA_DIR!, 'tls', 'localhost.crt');
  const xmpp = xmppClient({ c2sPort: server.c2sPort, tlsPort: server.tlsPort, certFile }, { username: 'alice', password: 'alice-pw', resource: 'phone', directTls: true });
  const inbox = new Inbox(xmpp);
  await within(xmpp.start(), STEP_MS, 'alice/phone (@xmpp/client) online');
  t.teardown(() => xmpp.stop().catch(() => {}));
  await xmpp.send(xml('presence'));
  const laptop = await connect(t, server.c2sPort, 'alice', 'laptop');
  const bob = await connect(t, server.c2sPort, 'bob', 'desk');

  const all = await listed();
  t.deepEqual(all.sessions.map((s) => s.jid), ['alice@localhost/laptop', 'alice@localhost/phone', 'bob@localhost/desk']);
  t.is(all.nodes.length, 1);
  t.is(all.nodes[0].total, 3);
  t.is(all.missing, 0);
  for (const s of all.sessions) {
    t.like(s, { ip: '127.0.0.1', secure: true, detached: false, node: all.nodes[0].node });
    t.true(typeof s.port === 'number' && s.port > 0, JSON.stringify(s));
    t.true(Date.now() - Date.parse(s.since) < 120_000, s.since);
    t.true(Number.isInteger(s.worker) && s.worker >= 0);
  }
  t.is(all.sessions.find((s) => s.jid.endsWith('/phone'))!.transport, 'tls', 'direct TLS');
  t.is(all.sessions.find((s) => s.jid.endsWith('/laptop'))!.transport, 'tcp', 'STARTTLS');
  t.true(all.sessions.find((s) => s.jid.endsWith('/phone'))!.resumable, '@xmpp/client enables resumption (XEP-0198)');

  // One account's, by bare JID or by username; the table for a person.
  t.deepEqual((await listed('--user', 'alice@localhost')).sessions.map((s) => s.jid), ['alice@localhost/laptop', 'alice@localhost/phone']);
  t.deepEqual((await listed('--user', 'bob')).sessions.map((s) => s.jid), ['bob@localhost/desk']);
  t.deepEqual((await listed('--user', 'alice@localhost/laptop')).sessions.map((s) => s.jid), ['alice@localhost/laptop']);
  const table = await cli('sessions', 'list', '--user', 'alice');
  t.is(table.code, 0, table.stderr);
  const rows = table.stdout.trimEnd().split('\n');
  t.regex(rows[0], /^JID\s+ADDRESS\s+SINCE\s+NODE\s+WORKER\s+TRANSPORT$/);
  t.regex(rows[1], /^alice@localhost\/laptop\s+127\.0\.0\.1:\d+\s+\d{4}-\d\d-\d\dT\S+Z\s+\S+\s+\d+\s+tcp$/);
  t.regex(rows[2], /^alice@localhost\/phone\s+127\.0\.0\.1:\d+\s+\S+\s+\S+\s+\d+\s+tls, resumable$/);
  t.is(table.stderr, '2 session(s) of alice@localhost on 1 node(s)\n');

  const stats = await cli('stats', '--json');
  t.is(stats.code, 0, stats.stderr);
  const [node] = (JSON.parse(stats.stdout) as { answers: { v: { connections: number; workers: { sessions: number; connections: number }[] } }[] }).answers;
  t.is(node.v.workers.length, 2, 'XMPP_WORKERS=2');
  t.is(node.v.workers.reduce((n, w) => n + w.sessions, 0), 3);
  t.true(node.v.workers.reduce((n, w) => n + w.connections, 0) >= 3);
  t.true(node.v.connections >= 3, 'connections the acceptor counts');
  const human = await cli('stats');
  t.regex(human.stdout, /^total: \d+ connections, 3 sessions on 1 node\(s\)$/m);

  // An announcement: a headline from the server to each session.
  const marks = [laptop.c.items.length, bob.c.items.length];
  const said = await cli('announce', 'maintenance', 'at', 'noon');
  t.is(said.code, 0, said.stderr);
  t.is(said.stdout, 'announced to 3 session(s)\n');
  const isAnnouncement = (el: Element) => el.name === 'message' && el.attrs.from === 'localhost' && el.attrs.type === 'headline' && el.getChildText('body') === 'maintenance at noon';
  await expect(laptop, 'the announcement', isAnnouncement, marks[0]);
  await expect(bob, 'the announcement', isAnnouncement, marks[1]);
  await within(inbox.find(isAnnouncement), STEP_MS, '@xmpp/client: the announcement');
  t.pass();
});

test.serial('sessions kick ends the session named (full JID) or every session of an account (bare JID) with a stream error, and no other', async (t) => {
  const one = await connect(t, server.c2sPort, 'carol', 'one');
  const two = await connect(t, server.c2sPort, 'carol', 'two');
  const dave = await connect(t, server.c2sPort, 'dave', 'desk');
  const from = [one.c.items.length, two.c.items.length];

  const k1 = await cli('sessions', 'kick', 'carol@localhost/one');
  t.is(k1.code, 0, k1.stderr);
  t.is(k1.stdout, 'ended 1 session(s) of carol@localhost/one\n');
  t.is(await streamError(one, from[0]), 'policy-violation');
  await server.waitForMatch((l) => l.msg === 'session ended' && l.jid === 'carol@localhost/one');
  t.deepEqual((await listed('--user', 'carol')).sessions.map((s) => s.jid), ['carol@localhost/two'], 'the other session of the account stays');

  const k2 = await cli('sessions', 'kick', 'carol');
  t.is(k2.code, 0, k2.stderr);
  t.is(k2.stdout, 'ended 1 session(s) of carol@localhost\n');
  t.is(await streamError(two, from[1]), 'policy-violation');
  await server.waitForMatch((l) => l.msg === 'session ended' && l.jid === 'carol@localhost/two');
  t.deepEqual((await listed('--user', 'carol')).sessions, []);

  // Nobody of that name online: exit 1; the other account's session never noticed.
  const none = await cli('sessions', 'kick', 'carol');
  t.is(none.code, 1);
  t.is(none.stderr, 'error: no session of carol@localhost is online\n');
  const bad = await cli('sessions', 'kick', 'carol@elsewhere.example');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^error: "carol@elsewhere\.example" is not the JID of an account of localhost/);
  await within(dave.c.exchange(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=(["'])p1\1/), STEP_MS, "dave's ping");
  t.pass();
});

test.serial('usage errors, and no server on the data directory', async (t) => {
  for (const args of [['sessions'], ['sessions', 'kick'], ['sessions', 'list', '--user'], ['sessions', 'frob'], ['stats', 'x'], ['announce'], ['reload', 'now']]) {
    const r = await cli(...args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, /^usage: xmpp-server <command>/, args.join(' '));
  }
  const r = await within(run(process.execPath, ['src/main.ts', 'stats'], { ...env, XMPP_DATA_DIR: join(env.XMPP_DATA_DIR!, 'nowhere') }), STEP_MS, 'stats without a server');
  t.is(r.code, 1);
  t.regex(r.stderr, /^error: no server runs on .*nowhere: no administration socket/);
});
