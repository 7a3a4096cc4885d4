// A worker thread that dies (issue 14: an EMFILE thrown out of a timer) is
// replaced, and the replacement joins the hub and serves; the other
// workers' sessions never notice; the dead worker's sessions are removed
// from the registry and announced unavailable to their contacts; the death
// is logged with its cause and counted.
//
// The worker is made to die from inside, as a real crash does, without
// touching anything from outside: with XMPP_TEST_FAULTS=1 in its environment
// (set here before the server starts, so that every worker thread, the
// replacements too, inherits it) a worker throws out of the thread when the
// hub sends it 'fault'. Without that variable the message is ignored.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { connect, expect, fresh, isPresence, ready, subscribe, WAIT } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { online, othersUnaffected, uid, within } from '../helpers/protocol.ts';
import { trustServer } from '../helpers/xmpp-client.ts';
import { inspector, sharedRedisServer } from '../helpers/redis.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { openAccountStore } from '../../src/accounts/open.ts';
import { K } from '../../src/registry/redis.ts';
import type { Upkept, WorkerLink } from '../../src/acceptor/hub.ts';
import type { Redis } from 'ioredis';

process.env.XMPP_TEST_FAULTS = '1';
const redis = sharedRedisServer(test);
const postgres = sharedPostgresServer(test);

/** The main thread's log lines (JSON on stderr) while `fn` runs, kept out of the test's output. */
async function capturingLog<T>(lines: Record<string, unknown>[], fn: () => Promise<T>): Promise<T> {
  const write = process.stderr.write;
  process.stderr.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
    let other = '';
    for (const line of String(chunk).split('\n')) {
      try {
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        other += `${line}\n`;
      }
    }
    return other === '' || (write as (...a: unknown[]) => boolean).call(this, other, ...rest);
  } as typeof process.stderr.write;
  try {
    return await fn();
  } finally {
    process.stderr.write = write;
  }
}

async function server(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ XMPP_LOG_LEVEL: 'error', ...env });
  t.teardown(() => s.stop());
  return s;
}

/** A fresh account (in the server's own store: SQLite, or PostgreSQL in a cluster) logged in, roster requested and available. */
async function user(t: ExecutionContext, s: TestServer, base: string): Promise<Peer> {
  const name = fresh(base);
  const store = await openAccountStore(s.config);
  try {
    await store.create(name, `${name}-pw`);
  } finally {
    await store.close();
  }
  const p = await connect(t, s.c2sPort, name);
  await ready(p);
  return p;
}

/** Where the registry says a session lives: the hub's (single node), or Redis's (cluster, read through `r`). */
async function workerOf(s: TestServer, p: Peer, r?: Redis): Promise<number | undefined> {
  if (!r) return s.hub.registry.lookup(p.jid)?.worker;
  const json = await r.hget(K.sessions(p.bare), p.jid.slice(p.bare.length + 1));
  return json ? (JSON.parse(json) as { worker: number }).worker : undefined;
}

for (const mode of ['single node', 'cluster'] as const)
test.serial(`${mode}: a worker that dies is replaced; the replacement joins and serves, the other worker's sessions keep chatting, the dead one's are announced unavailable`, async (t) => {
  const s = await server(t, mode === 'cluster' ? { XMPP_REDIS_URL: redis.url, XMPP_DATABASE_URL: await postgres.database(), XMPP_NODE_ID: `death-${process.pid}` } : {});
  const r = mode === 'cluster' ? inspector(t, redis.url) : undefined;
  // Connections go to the least busy worker that serves: logged in one
  // after the other, they alternate between the two.
  const peers: Peer[] = [];
  for (let i = 0; i < 4; i++) peers.push(await user(t, s, 'w'));
  const workers = await Promise.all(peers.map((p) => workerOf(s, p, r)));
  const doomed = workers[0]!;
  const [victim, ...rest] = peers.filter((_, i) => workers[i] === doomed);
  const survivors = peers.filter((_, i) => workers[i] !== doomed);
  t.true(victim !== undefined && survivors.length >= 2, `sessions on both workers: ${workers.join(' ')}`);
  const [watcher, talker] = survivors;
  // The watcher sees the victim's presence (a contact of its).
  await subscribe(watcher, victim);
  await othersUnaffected(t, watcher, talker);

  const lines: Record<string, unknown>[] = [];
  const from = watcher.c.items.length;
  const replaced = await capturingLog(lines, async () => {
    const lost = once(s.hub, 'lost') as Promise<[WorkerLink]>;
    const joined = once(s.hub, 'joined') as Promise<[WorkerLink]>;
    // In a cluster, once removed from Redis, asynchronously.
    const removed = once(s.hub, 'removed') as Promise<[number, number]>;
    t.true(s.hub.sendTo(doomed, { t: 'fault' }));
    const [gone] = await within(lost, WAIT, 'the worker to be taken out of the hub');
    t.is(gone.index, doomed);
    // Its connections went with it: the victim's client sees its stream end.
    await within(victim.c.closed, WAIT, "the dead worker's connection to close");
    for (const p of rest) await within(p.c.closed, WAIT, "the dead worker's other connections to close");
    // Its contact is told, as for any session that ends without a word (RFC 6121 §4.5.2).
    await expect(watcher, "the dead worker's session announced unavailable", isPresence(victim.jid, 'unavailable'), from);
    t.deepEqual(await within(removed, WAIT, "the dead worker's sessions to be removed"), [doomed, 1 + rest.length]);
    const [link] = await within(joined, WAIT, 'a replacement to join the hub');
    await within(s.hub.ready(2), WAIT, 'the replacement to serve');
    return link;
  });
  t.not(replaced.index, doomed, 'the replacement has an index of its own');
  for (const p of [victim, ...rest]) t.is(await workerOf(s, p, r), undefined, "the dead worker's sessions are out of the registry");
  for (const p of survivors) t.not(await workerOf(s, p, r), undefined, "the other worker's are still there");

  // Logged once, at error level, with its cause; and counted.
  const deaths = lines.filter((l) => l.msg === 'worker died');
  t.is(deaths.length, 1, JSON.stringify(lines));
  t.like(deaths[0], { level: 'error', worker: doomed, connections: 1 + rest.length, deaths: 1 });
  // On a single node the sessions are counted at once; in a cluster as they are removed from Redis (a warning of its own).
  t.is(deaths[0].sessions, r ? undefined : 1 + rest.length);
  t.regex(String(deaths[0].cause), /EMFILE/);
  t.like(s.stats(), { workerDeaths: 1, workers: 2 });

  // The sessions of the other worker were never disturbed.
  await othersUnaffected(t, watcher, talker);
  await othersUnaffected(t, talker, watcher);

  // New logins work, and the replacement (the least busy) takes them; its
  // sessions and the survivor's reach each other both ways.
  const newcomer = await user(t, s, 'new');
  t.is(await workerOf(s, newcomer, r), replaced.index);
  await othersUnaffected(t, newcomer, watcher);
  await othersUnaffected(t, watcher, newcomer);
  // The victim can come back (to whichever worker).
  const back = await connect(t, s.c2sPort, victim.name);
  await othersUnaffected(t, back, watcher);
});

test.serial('with a single worker, a login made while it is being replaced waits for the replacement instead of being dropped', async (t) => {
  const s = await server(t, { XMPP_WORKERS: '1' });
  const before = await user(t, s, 'solo');
  const lines: Record<string, unknown>[] = [];
  const p = await capturingLog(lines, async () => {
    const lost = once(s.hub, 'lost');
    const joined = once(s.hub, 'joined');
    t.true(s.hub.sendTo((await workerOf(s, before))!, { t: 'fault' }));
    await within(lost, WAIT, 'the worker to be taken out');
    // No worker serves now: this connection is held until one does.
    const during = user(t, s, 'solo');
    await within(joined, WAIT, 'the replacement to join');
    return within(during, WAIT, 'the login made while no worker served');
  });
  const other = await user(t, s, 'solo');
  await othersUnaffected(t, p, other);
  t.like(s.stats(), { workerDeaths: 1, workers: 1 });
  t.deepEqual(lines.filter((l) => l.msg !== 'worker died' && l.msg !== 'connection lost with its worker'), [], 'nothing else went wrong');
});

test.serial('the upkeep (expired uploads, archive retention) goes on when the worker that ran it dies: the hub has a living worker run it, whatever its number', async (t) => {
  const s = await server(t, { XMPP_HTTPS_PORT: '0', XMPP_MAM_RETENTION_DAYS: '1' });
  trustServer(s);
  await within(s.hub.ready(2), WAIT, 'both workers to serve');
  // Whatever the start's run was doing is done.
  await within(s.hub.upkeep(), WAIT, "the start's upkeep");
  const name = fresh('keeper');
  await s.addUser(name, `${name}-pw`);

  /** A file put through a slot of `name`'s, then made older than its life (30 days by default), as time would: its URL and its place on disk. */
  const expiredFile = async (): Promise<{ url: string; file: string }> => {
    const { c } = await online(s.c2sPort, name, `${name}-pw`, uid('r'));
    try {
      const id = uid('slot');
      const reply = await c.request(`<iq type='get' id='${id}' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='old.txt' size='3' content-type='text/plain'/></iq>`, id);
      const url = reply.getChild('slot', 'urn:xmpp:http:upload:0')!.getChild('put')!.attrs.url;
      t.is((await fetch(url, { method: 'PUT', body: 'old', headers: { 'Content-Type': 'text/plain' } })).status, 201);
      const token = new URL(url).pathname.split('/')[2];
      const db = new DatabaseSync(join(s.config.dataDir, 'upload.sqlite'), { timeout: 10_000 });
      try {
        t.is(Number(db.prepare('UPDATE upload_slots SET uploaded = 1 WHERE token = ?').run(token).changes), 1);
      } finally {
        db.close();
      }
      return { url, file: join(s.config.uploadDir, token) };
    } finally {
      c.destroy();
    }
  };
  const swept = async (f: { url: string; file: string }, r: Upkept | undefined): Promise<Upkept> => {
    t.truthy(r, 'a worker ran it');
    t.like(r, { uploads: 1, archive: 0 }, 'both parts ran');
    t.false(existsSync(f.file), 'the file is gone');
    t.is((await fetch(f.url)).status, 404);
    return r!;
  };

  const first = await expiredFile();
  const before = await swept(first, await within(s.hub.upkeep(), WAIT, 'the upkeep'));
  // The worker that ran it dies; its replacement gets another number.
  const lines: Record<string, unknown>[] = [];
  await capturingLog(lines, async () => {
    const lost = once(s.hub, 'lost');
    const joined = once(s.hub, 'joined') as Promise<[WorkerLink]>;
    t.true(s.hub.sendTo(before.worker, { t: 'fault' }));
    await within(lost, WAIT, 'the worker to be taken out');
    const [link] = await within(joined, WAIT, 'a replacement to join');
    t.not(link.index, before.worker);
    await within(s.hub.ready(2), WAIT, 'the replacement to serve');
  });
  const second = await expiredFile();
  const after = await swept(second, await within(s.hub.upkeep(), WAIT, 'the upkeep after the death'));
  t.not(after.worker, before.worker, 'run by a living worker');
});
