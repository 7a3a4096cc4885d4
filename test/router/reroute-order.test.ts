// Messages that lost their session (its node died before confirming them,
// its connection closed with them unwritten) are rerouted in the order they
// were sent, per addressee: whichever lookup answers first, offline storage
// keeps them in that order (RFC 6120 §10.1), with one registry lookup and
// one offline write for all that wait together, and shutdown (idle()) waits
// for all of them.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { Router } from '../../src/router/router.ts';
import type { RouterDeps } from '../../src/router/router.ts';
import type { Kept, ServerModule } from '../../src/modules/module.ts';
import type { SessionRecord } from '../../src/registry/registry.ts';
import { offlineStorage } from '../../src/modules/offline.ts';
import { PostgresOfflineStore } from '../../src/offline/postgres.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import type { OfflineStore } from '../../src/offline/store.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const pg = sharedPostgresServer(test);

const message = (body: string, to = 'alice@localhost/gone') => `<message to='${to}' from='bob@localhost/r' type='chat'><body>${body}</body></message>`;
const bodies = (n: number, prefix = 'm') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const bodyOf = (xml: string) => /<body>([^<]*)<\/body>/.exec(xml)?.[1];
const turns = (n: number) => new Promise<void>((resolve) => {
  const next = (k: number) => (k <= 0 ? resolve() : setImmediate(() => next(k - 1)));
  next(n);
});

/**
 * A router with no resource for anybody, whose lookups answer the later the
 * earlier they were asked (as a pool's connections may): the first waits
 * the longest. `resources` may be given other records.
 */
function router(modules: ServerModule[], opts: { resources?: () => SessionRecord[]; failRegistry?: boolean; sessions?: Map<string, unknown>; asked?: () => void } = {}) {
  const calls = { resources: 0, exists: 0, bounced: [] as Element[] };
  const r = new Router({
    domain: 'localhost',
    node: 'n',
    worker: 0,
    sessions: opts.sessions ?? new Map(),
    closing: new Map(),
    local: new Map(),
    components: new Map(),
    modules,
    registry: {
      resources: async (_bare: string, fresh?: boolean) => {
        if (fresh) return []; // offlineWaiting's: nobody to tell
        const k = calls.resources++;
        opts.asked?.();
        await turns(Math.max(0, 5 - k));
        if (opts.failRegistry) throw new Error('Redis is away');
        return opts.resources?.() ?? [];
      },
    },
    accountExists: async () => {
      const k = calls.exists++;
      await turns(Math.max(0, 5 - k));
      return true;
    },
  } as unknown as RouterDeps);
  // Bounces go back to their sender: here, into the list.
  r.routeInternal = async (el: Element) => void calls.bounced.push(el);
  return { r, calls };
}

/** An offline hook that records what it is given, in order (single or batch). */
function recording() {
  const stored: string[] = [];
  const writes: number[] = [];
  const keep = (el: Element): Kept => (stored.push(el.getChildText('body')!), 'stored');
  const module: ServerModule = {
    features: [],
    offline: async (_local, el) => keep(el),
    offlineMany: async (_local, els) => {
      writes.push(els.length);
      return els.map(keep);
    },
  };
  return { module, stored, writes };
}

test('messages rerouted at once are stored in the order given, with one lookup and one write for the batch', async (t) => {
  const { module, stored, writes } = recording();
  const { r, calls } = router([module]);
  const sent = bodies(50);
  for (const b of sent) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  t.deepEqual(stored, sent);
  t.is(calls.resources, 1, 'one registry lookup');
  t.is(calls.exists, 1, 'one account lookup');
  t.deepEqual(writes, [50], 'one offline write');
  t.deepEqual(calls.bounced, []);
});

test("what comes while a batch is under way is the next batch, after it; 'last' and 'copy' keep their place", async (t) => {
  const { module, stored, writes } = recording();
  let asked!: () => void;
  const lookup = new Promise<void>((resolve) => (asked = resolve));
  const { r, calls } = router([module], { asked: () => asked() });
  r.rerouted(message('m0'), 'message', 'gone');
  r.rerouted(message('m1'), 'last', 'gone');
  // The first batch is waiting for its lookup (the slowest): these wait for it.
  await lookup;
  r.rerouted(message('m2'), 'copy', 'gone');
  r.rerouted(message('m3'), 'message', 'other');
  r.rerouted(message('m4'), 'last', 'gone');
  await r.idle();
  t.deepEqual(stored, ['m0', 'm1', 'm2', 'm3', 'm4']);
  t.deepEqual(writes, [2, 3]);
  t.is(calls.resources, 2, 'one registry lookup per batch');
});

test('a batch whose write fails is not lost with it: what it had not done goes one by one, stored or back to its sender', async (t) => {
  const stored: string[] = [];
  let single = 0;
  const module: ServerModule = {
    features: [],
    // The single hook keeps the first five and refuses the rest as full (its sender gets an error).
    offline: async (_local, el) => (single++ < 5 ? (stored.push(el.getChildText('body')!), 'stored') : 'full'),
    offlineMany: async () => {
      throw new Error('the batch write broke');
    },
  };
  const { r, calls } = router([module]);
  for (const b of bodies(8)) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  t.deepEqual(stored, bodies(5), 'stored one by one, in order');
  t.deepEqual(calls.bounced.map((el) => [el.attrs.type, el.getChildText('body')]), [['error', 'm5'], ['error', 'm6'], ['error', 'm7']], 'the rest bounced');
});

test('addressees are independent: each has its own queue, in its own order', async (t) => {
  const { module, stored } = recording();
  const { r, calls } = router([module]);
  for (let i = 0; i < 10; i++) {
    r.rerouted(message(`a${i}`), 'message', 'gone');
    r.rerouted(message(`c${i}`, 'carol@localhost/x'), 'message', 'gone');
  }
  await r.idle();
  t.deepEqual(stored.filter((b) => b.startsWith('a')), bodies(10, 'a'));
  t.deepEqual(stored.filter((b) => b.startsWith('c')), bodies(10, 'c'));
  t.is(calls.resources, 2);
});

test('a registry that fails: the batch is stored, in order', async (t) => {
  const { module, stored, writes } = recording();
  const { r } = router([module], { failRegistry: true });
  for (const b of bodies(20)) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  t.deepEqual(stored, bodies(20));
  t.deepEqual(writes, [20]);
});

test('a resource left takes them in order (as rerouted once: "last"); those it cannot take are stored in order', async (t) => {
  const { module, stored, writes } = recording();
  const got: { xml: string; reroute?: string }[] = [];
  let room = 5;
  const other = { jid: 'alice@localhost/other', deliver: (xml: string, o: { reroute?: string }) => room-- > 0 && got.push({ xml, reroute: o.reroute }) > 0 };
  const rec: SessionRecord = { jid: 'alice@localhost/other', bare: 'alice@localhost', sid: 'other', node: 'n', worker: 0, priority: 0, available: true };
  const { r, calls } = router([module], { resources: () => [rec], sessions: new Map([['other', other]]) });
  for (const b of bodies(12)) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  t.deepEqual(got.map((g) => bodyOf(g.xml)), bodies(5));
  t.true(got.every((g) => g.reroute === 'last'));
  t.deepEqual(stored, bodies(12).slice(5));
  t.deepEqual(writes, [7]);
  t.is(calls.resources, 1);
  t.is(calls.exists, 0, 'the account has a resource: no account lookup');
});

test('a batch whose write fails stores one by one only what no resource took: a message delivered is not stored too', async (t) => {
  const stored: string[] = [];
  const module: ServerModule = {
    features: [],
    offline: async (_local, el) => (stored.push(el.getChildText('body')!), 'stored'),
    offlineMany: async () => {
      throw new Error('the batch write broke');
    },
  };
  const got: string[] = [];
  let room = 2;
  const other = { jid: 'alice@localhost/other', deliver: (xml: string) => room-- > 0 && got.push(bodyOf(xml)!) > 0 };
  const rec: SessionRecord = { jid: 'alice@localhost/other', bare: 'alice@localhost', sid: 'other', node: 'n', worker: 0, priority: 0, available: true };
  const { r, calls } = router([module], { resources: () => [rec], sessions: new Map([['other', other]]) });
  // 'last' goes to storage (whose batch write fails); the others are offered to the resource left, which takes two.
  r.rerouted(message('m0'), 'last', 'gone');
  for (const b of ['m1', 'm2', 'm3']) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  t.deepEqual(got, ['m1', 'm2'], 'taken by the resource left');
  t.deepEqual(stored, ['m0', 'm3'], 'stored one by one: what it did not take, and not what it did');
  t.deepEqual(calls.bounced, []);
});

test('the session that could not write them is not offered them again: stored', async (t) => {
  const { module, stored } = recording();
  const gone = { jid: 'alice@localhost/gone', deliver: () => t.fail('offered to the session that lost them') };
  const rec: SessionRecord = { jid: 'alice@localhost/gone', bare: 'alice@localhost', sid: 'gone', node: 'n', worker: 0, priority: 0, available: true };
  const { r } = router([module], { resources: () => [rec], sessions: new Map([['gone', gone]]) });
  for (const b of bodies(4)) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  t.deepEqual(stored, bodies(4));
});

/** Through the offline module into a real store: the queue's order, and what does not fit bounced. */
async function throughStore(t: ExecutionContext, store: OfflineStore) {
  const { r, calls } = router([offlineStorage({ store, domain: 'localhost', max: 150, maxBytes: 10_000_000 })]);
  const sent = bodies(200);
  for (const b of sent) r.rerouted(message(b), 'message', 'gone');
  await r.idle();
  const kept = await store.peek('alice', '', 1000);
  t.deepEqual(kept.map((m) => bodyOf(m.xml)), sent.slice(0, 150), 'stored in the order sent, up to the limit');
  t.true(kept.every((m) => m.xml.includes("urn:xmpp:delay")), 'stamped (XEP-0203)');
  // Those past the limit: service-unavailable to their sender, as one at a time.
  t.deepEqual(calls.bounced.map((el) => el.getChildText('body')), sent.slice(150));
  t.true(calls.bounced.every((el) => el.attrs.type === 'error' && el.attrs.to === 'bob@localhost/r' && el.getChild('error')?.getChild('service-unavailable') !== undefined));
  t.is(calls.resources, 1);
}

test('PostgreSQL: 200 messages rerouted at once to one offline account are stored in the order sent; past the limit bounced', async (t) => {
  const store = await PostgresOfflineStore.open(await pg.database());
  t.teardown(() => store.close());
  await throughStore(t, store);
});

test('SQLite: the same', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-reroute-'));
  const store = SqliteOfflineStore.open(join(dir, 'offline.sqlite'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await throughStore(t, store);
});
