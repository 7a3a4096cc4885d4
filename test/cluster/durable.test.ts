// XMPP_SM_DURABLE across real cluster nodes: a resumable session's
// unacknowledged stanzas and counts are kept in Redis as they change, so
// that after its node is killed with -9 the client resumes on a surviving
// node with nothing lost: what it did not acknowledge comes from the
// durable state, what reached the cluster after the death from offline
// storage, in that order, each once; and it is available again.
import test, { type ExecutionContext } from 'ava';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { Redis } from 'ioredis';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { authenticated, within } from '../helpers/protocol.ts';
import { WAIT, barrier, clusterPeers, expect, isPresence, subscribe, NS_SM, isSm, isBody } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';

let cluster: TestCluster;
let accounts: PostgresAccountStore;
let r: Redis;

test.before(async () => {
  cluster = await startCluster(['u0', 'u1'], { XMPP_NODE_LEASE_MS: '3000', XMPP_SM_DURABLE: 'true' });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  r = new Redis(cluster.redis.url);
});
test.after.always(async () => {
  r?.disconnect();
  await accounts?.close();
  await cluster?.stop();
});

const { user } = clusterPeers(() => accounts);
const isStanza = (el: Element) => el.name === 'message' || el.name === 'presence' || el.name === 'iq';
const stanzas = (p: Peer, from: number) => p.c.items.slice(from).flatMap((it) => (it.kind === 'el' && isStanza(it.el) ? [it.el] : []));

test('a node killed with -9: its client resumes on a surviving node, with what it did not acknowledge and what came after the death, in order, once', async (t: ExecutionContext) => {
  const [survivor, doomed] = cluster.nodes;
  const alice = await user(t, doomed, 'durable');
  const bob = await user(t, survivor, 'watcher');
  await subscribe(bob, alice);
  const from = alice.c.items.length;
  alice.c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await expect(alice, '<enabled/>', isSm('enabled'), from);
  const next = alice.c.items.findIndex((it) => it.kind === 'el' && it.el === enabled) + 1;
  for (const body of ['m1', 'm2', 'm3']) bob.c.send(`<message to='${alice.jid}' type='chat'><body>${body}</body></message>`);
  await expect(alice, 'm3', isBody('m3'), next);
  // Everything up to m1 acknowledged; m2 and m3 read but not acknowledged.
  const got = stanzas(alice, next);
  const h = got.findIndex(isBody('m1')) + 1;
  alice.c.send(`<a xmlns='${NS_SM}' h='${h}'/>`);
  // Written to Redis (a pipeline per turn of the event loop): the count
  // acknowledged is h, and the list holds exactly the stanzas read and not
  // acknowledged, in order.
  const unacked = got.slice(h).map((el) => el.getChildText('body') ?? el.name);
  const durable = async () => {
    const sid = await r.get(`xmpp:smj:${alice.jid}`);
    const [acked, q] = await Promise.all([r.hget(`xmpp:sm:${sid}`, 'acked'), r.lrange(`xmpp:smq:${sid}`, 0, -1)]);
    const bodies = q.map((e) => {
      const el = parseXml((JSON.parse(e) as { x: string }).x) as Element;
      return el.getChildText('body') ?? el.name;
    });
    return { acked: Number(acked), bodies };
  };
  const deadline = Date.now() + WAIT;
  for (let d = await durable(); d.acked !== h || JSON.stringify(d.bodies) !== JSON.stringify(unacked); d = await durable()) {
    if (Date.now() > deadline) throw new Error(`the durable state never held acked=${h}, ${JSON.stringify(unacked)}: ${JSON.stringify(d)}`);
    await new Promise((res) => setTimeout(res, 10));
  }
  t.true(unacked.includes('m2') && unacked.includes('m3'), 'm2 and m3 kept');

  doomed.proc.kill('SIGKILL');
  await doomed.exited;
  alice.c.destroy();
  for (const body of ['m4', 'm5']) bob.c.send(`<message to='${alice.jid}' type='chat'><body>${body}</body></message>`);
  t.deepEqual((await barrier(bob, 0)).filter((el) => el.attrs.type === 'error').map(String), [], 'nothing bounced');

  const { c } = await within(authenticated(survivor.c2sPort, alice.name, `${alice.name}-pw`), WAIT, 'alice on the survivor');
  t.teardown(() => c.destroy());
  c.send(`<resume xmlns='${NS_SM}' previd='${enabled.attrs.id}' h='${h}'/>`);
  const answer = await within(c.nextEl(), WAIT, 'the answer to <resume/>');
  t.true(isSm('resumed')(answer), answer.toString());
  const again: Peer = { ...alice, c };
  await expect(again, 'm5', isBody('m5'));
  const bodies = stanzas(again, 0).flatMap((el) => (el.name === 'message' && el.attrs.from === bob.jid ? [el.getChildText('body')] : []));
  t.deepEqual(bodies, ['m2', 'm3', 'm4', 'm5']);
  // Live again, and available to its contacts.
  const mark = c.items.length;
  bob.c.send(`<message to='${alice.jid}' type='chat'><body>m6</body></message>`);
  await expect(again, 'm6, live', isBody('m6'), mark);
  await expect(bob, "alice's presence again", (el) => isPresence(alice.jid)(el), 0);
  const last = (await barrier(bob, 0)).filter((el) => el.name === 'presence' && el.attrs.from === alice.jid).pop();
  t.is(last?.attrs.type, undefined, 'available, last');
});
