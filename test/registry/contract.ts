// One contract for every SessionRegistry implementation (in memory, Redis):
// the same cases, the same expectations.
import test from 'ava';
import type { SessionRecord, SessionRegistry, BindRequest } from '../../src/registry/registry.ts';
import type { ConflictPolicy } from '../../src/config/index.ts';

export interface Fixture {
  registry: SessionRegistry;
  node: string;
  /** A second registry on another node, where the implementation has nodes. */
  other?: SessionRegistry;
  otherNode?: string;
}

let seq = 0;
export function rec(bare: string, resource: string, node: string, worker = 0): SessionRecord {
  return { jid: `${bare}/${resource}`, bare, sid: `sid-${++seq}`, node, worker, priority: 0, available: false };
}

const req = (r: SessionRecord, policy: ConflictPolicy = 'new-wins', maxResources = 10, exclusiveBare = false): BindRequest => ({ rec: r, policy, maxResources, exclusiveBare });

export function registryContract(label: string, open: () => Promise<Fixture>): void {
  const bare = () => `u${++seq}@localhost`;

  test(`${label}: bind, lookup, resources, unbind`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    const a = rec(b, 'one', node);
    const out = await g.bind(req(a));
    t.true(out.ok);
    t.is((await g.lookup(a.jid))?.sid, a.sid);
    t.deepEqual((await g.resources(b)).map((r) => r.jid), [a.jid]);
    await g.unbind(a.jid, 'not-its-sid');
    t.truthy(await g.lookup(a.jid), 'an unbind with another stream id removes nothing');
    await g.unbind(a.jid, a.sid);
    t.is(await g.lookup(a.jid), undefined);
    t.deepEqual(await g.resources(b), []);
  });

  test(`${label}: new-wins replaces and reports the old session`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    const first = rec(b, 'r', node);
    const second = rec(b, 'r', node, 1);
    t.true((await g.bind(req(first))).ok);
    const out = await g.bind(req(second));
    t.true(out.ok);
    t.is(out.ok && out.replaced?.sid, first.sid);
    t.is((await g.lookup(first.jid))?.sid, second.sid);
    await g.unbind(first.jid, first.sid); // the loser's late unbind
    t.is((await g.lookup(first.jid))?.sid, second.sid, 'the winner stays bound');
  });

  test(`${label}: old-wins refuses the new bind`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    const first = rec(b, 'r', node);
    t.true((await g.bind(req(first, 'old-wins'))).ok);
    t.deepEqual(await g.bind(req(rec(b, 'r', node), 'old-wins')), { ok: false, condition: 'conflict' });
    t.is((await g.lookup(first.jid))?.sid, first.sid);
  });

  test(`${label}: assign gives the newcomer another resource`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    const first = rec(b, 'r', node);
    await g.bind(req(first, 'assign'));
    const out = await g.bind(req(rec(b, 'r', node), 'assign'));
    t.true(out.ok);
    if (!out.ok) return;
    t.not(out.rec.jid, first.jid);
    t.true(out.rec.jid.startsWith(`${b}/`));
    t.is(out.replaced, undefined);
    t.is((await g.resources(b)).length, 2);
  });

  test(`${label}: the resource limit counts the account's sessions`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    t.true((await g.bind(req(rec(b, 'a', node), 'new-wins', 2))).ok);
    t.true((await g.bind(req(rec(b, 'b', node), 'new-wins', 2))).ok);
    t.deepEqual(await g.bind(req(rec(b, 'c', node), 'new-wins', 2)), { ok: false, condition: 'resource-constraint' });
    t.true((await g.bind(req(rec(b, 'a', node), 'new-wins', 2))).ok, 'replacing does not count twice');
  });

  test(`${label}: an exclusive bare JID (ANONYMOUS) is refused when in use`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    t.true((await g.bind(req(rec(b, 'x', node), 'new-wins', 10, true))).ok);
    t.deepEqual(await g.bind(req(rec(b, 'y', node), 'new-wins', 10, true)), { ok: false, condition: 'conflict' });
  });

  test(`${label}: presence updates what routing sees`, async (t) => {
    const { registry: g, node } = await open();
    const b = bare();
    const a = rec(b, 'p', node);
    await g.bind(req(a));
    await g.setPresence(a.jid, a.sid, true, 5);
    const got = await g.lookup(a.jid);
    t.is(got?.available, true);
    t.is(got?.priority, 5);
    await g.setPresence(a.jid, 'stale', false, 0);
    t.is((await g.lookup(a.jid))?.available, true, 'a stale stream cannot change it');
  });

  test(`${label}: concurrent binds of one full JID leave exactly one holder`, async (t) => {
    const fx = await open();
    const regs = [fx.registry, fx.other ?? fx.registry];
    const nodes = [fx.node, fx.otherNode ?? fx.node];
    const b = bare();
    const recs = Array.from({ length: 20 }, (_, i) => rec(b, 'same', nodes[i % 2], i));
    const outs = await Promise.all(recs.map((r, i) => regs[i % 2].bind(req(r, 'old-wins'))));
    t.is(outs.filter((o) => o.ok).length, 1, 'old-wins: exactly one bind succeeds');
    const winner = recs[outs.findIndex((o) => o.ok)];
    t.is((await regs[0].lookup(winner.jid))?.sid, winner.sid);
    t.is((await regs[1].lookup(winner.jid))?.sid, winner.sid);
  });

  test(`${label}: a resumed session's record moves with it, only while it is that session's`, async (t) => {
    const fx = await open();
    const to = fx.otherNode ?? fx.node;
    const b = bare();
    const a = rec(b, 'm', fx.node, 0);
    await fx.registry.bind(req(a));
    t.false(await (fx.other ?? fx.registry).move(a.jid, 'not-its-sid', to, 3), 'another stream id moves nothing');
    t.true(await (fx.other ?? fx.registry).move(a.jid, a.sid, to, 3));
    for (const g of [fx.registry, fx.other ?? fx.registry]) {
      const got = await g.lookup(a.jid);
      t.is(got?.sid, a.sid);
      t.is(got?.node, to);
      t.is(got?.worker, 3);
    }
    await fx.registry.unbind(a.jid, a.sid);
    t.false(await fx.registry.move(a.jid, a.sid, fx.node, 0), 'a record that is gone does not come back');
    t.is(await fx.registry.lookup(a.jid), undefined);
  });
}
