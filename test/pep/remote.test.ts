// The remote contacts' resources PEP keeps (pep/remote.ts), in memory (a
// single node's hub, reached through HubPep's messages) and in Redis (a
// cluster): one contract for both, and the bounds (per account, in all),
// the least recently seen going first; and the verified vers Redis keeps
// for the cluster, bounded in number, the least recently used going first.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { MemoryRemoteResources, PepShared, HubPep, redisRemoteResources, type RemoteResources } from '../../src/pep/remote.ts';
import { sharedRedisServer, inspector } from '../helpers/redis.ts';
import { uid } from '../helpers/protocol.ts';
import { K } from '../../src/registry/redis.ts';
import { redisCaps } from '../../src/pep/caps.ts';

const redis = sharedRedisServer(test);

const sorted = async (r: RemoteResources, owner: string) => (await r.list(owner)).sort((a, b) => (a.jid < b.jid ? -1 : 1));

function contract(name: string, make: (t: ExecutionContext, perAccount: number) => RemoteResources): void {
  test(`${name}: available returns what was known, unavailable forgets a resource, or every resource of a bare JID`, async (t) => {
    const r = make(t, 10);
    const owner = uid('owner');
    t.is(await r.available(owner, 'c@peer/a', ''), undefined, 'new');
    t.is(await r.available(owner, 'c@peer/a', 'sha-1 V1'), '', 'had no caps');
    t.is(await r.available(owner, 'c@peer/a', 'sha-1 V1'), 'sha-1 V1', 'the same caps');
    t.is(await r.available(owner, 'c@peer/b', 'sha-1 V2'), undefined);
    t.is(await r.available(owner, 'd@peer/a', 'sha-1 V1'), undefined);
    t.deepEqual(await sorted(r, owner), [{ jid: 'c@peer/a', caps: 'sha-1 V1' }, { jid: 'c@peer/b', caps: 'sha-1 V2' }, { jid: 'd@peer/a', caps: 'sha-1 V1' }]);
    t.deepEqual(await r.list(uid('other')), [], "another account's");
    await r.unavailable(owner, 'c@peer/a');
    t.deepEqual((await sorted(r, owner)).map((x) => x.jid), ['c@peer/b', 'd@peer/a']);
    await r.available(owner, 'c@peer/c', '');
    await r.unavailable(owner, 'c@peer');
    t.deepEqual((await sorted(r, owner)).map((x) => x.jid), ['d@peer/a'], "a bare JID's unavailable: all of its resources");
    t.is(await r.available(owner, 'c@peer/a', 'sha-1 V1'), undefined, 'available again: new');
  });

  test(`${name}: at most the per-account bound, the least recently seen dropped`, async (t) => {
    const r = make(t, 3);
    const owner = uid('owner');
    for (const x of ['a', 'b', 'c']) await r.available(owner, `c@peer/${x}`, '');
    // 'a' seen again: 'b' is now the least recently seen.
    await r.available(owner, 'c@peer/a', 'sha-1 V');
    await r.available(owner, 'c@peer/d', '');
    t.deepEqual((await sorted(r, owner)).map((x) => x.jid), ['c@peer/a', 'c@peer/c', 'c@peer/d']);
  });
}

contract('memory', (_t, perAccount) => new MemoryRemoteResources(perAccount));
// The hub's copy as a worker reaches it: calls as messages, answers by number.
contract('hub', (_t, perAccount) => {
  const shared = new PepShared(new MemoryRemoteResources(perAccount));
  const hub: HubPep = new HubPep((q, m, a) => void shared.call(m, structuredClone(a)).then((v) => hub.answered(q, structuredClone(v ?? null))));
  return hub;
});
contract('redis', (t, perAccount) => redisRemoteResources(inspector(t, redis.url), perAccount));

test('memory: at most the total bound across accounts, the least recently seen dropped', async (t) => {
  const r = new MemoryRemoteResources(10, 4);
  for (const [owner, x] of [['o1', 'a'], ['o2', 'a'], ['o1', 'b'], ['o2', 'b']]) await r.available(owner, `c@peer/${x}`, '');
  await r.available('o1', 'c@peer/a', '');
  await r.available('o3', 'c@peer/a', '');
  t.is(r.size, 4);
  t.deepEqual((await r.list('o2')).map((x) => x.jid), ['c@peer/b'], "o2's a was the least recently seen");
  await r.available('o3', 'c@peer/b', '');
  t.deepEqual((await r.list('o1')).map((x) => x.jid), ['c@peer/a'], "then o1's b");
});

test('redis: an account’s resources expire a while after their last change', async (t) => {
  const conn = inspector(t, redis.url);
  const r = redisRemoteResources(conn, 10, 100);
  const owner = uid('owner');
  await r.available(owner, 'c@peer/a', '');
  const ttl = await conn.ttl(K.pepRemote(owner));
  t.true(ttl > 0 && ttl <= 100, `ttl ${ttl}`);
});

test('hub: verified caps shared by the workers (SharedCaps)', async (t) => {
  const shared = new PepShared();
  const hub: HubPep = new HubPep((q, m, a) => void shared.call(m, structuredClone(a)).then((v) => hub.answered(q, structuredClone(v ?? null))));
  t.is(await hub.get({ hash: 'sha-1', ver: 'V' }), undefined);
  await hub.set({ hash: 'SHA-1', ver: 'V' }, new Set(['urn:a', 'urn:b']));
  t.deepEqual([...((await hub.get({ hash: 'sha-1', ver: 'V' })) ?? [])].sort(), ['urn:a', 'urn:b']);
});

test('redis: verified vers kept for the cluster are at most the bound, the least recently written or read dropped with their keys; each expires after its last use', async (t) => {
  const conn = inspector(t, redis.url);
  const caps = redisCaps(conn, 100, 3);
  const ver = (x: string) => ({ hash: 'sha-1', ver: uid(x) });
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(ver);
  for (const v of [a, b, c]) await caps.set(v, new Set([`urn:${v.ver}`]));
  // a read: b is now the least recently used.
  t.deepEqual([...((await caps.get(a)) ?? [])], [`urn:${a.ver}`]);
  await caps.set(d, new Set());
  t.is(await caps.get(b), undefined, 'b dropped');
  t.is(await conn.exists(K.caps(`sha-1 ${b.ver}`)), 0, 'its key with it');
  for (const v of [a, c, d]) t.truthy(await caps.get(v), v.ver);
  t.is(await conn.zcard(K.capsIndex), 3);
  const ttl = await conn.ttl(K.caps(`sha-1 ${a.ver}`));
  t.true(ttl > 0 && ttl <= 100, `ttl ${ttl}`);
});
