// A BOSH session whose node dies (XEP-0124 over a cluster, with
// XMPP_SM_DURABLE): the BOSH session itself lived on that node and dies
// with it, as a TCP connection would; its client opens a new BOSH session
// on a surviving node and resumes the XMPP session there with XEP-0198,
// getting what it did not acknowledge and what reached the cluster after
// the death, in order, once, and is live again.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { Redis } from 'ioredis';
import { startCluster, type TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { within } from '../helpers/protocol.ts';
import { WAIT, barrier, clusterPeers, isBody, NS_SM } from '../helpers/im.ts';
import { BoshClient, boshBind, boshScram, payloads } from '../helpers/bosh.ts';

let cluster: TestCluster;
let accounts: PostgresAccountStore;
let r: Redis;

test.before(async () => {
  cluster = await startCluster(['w0', 'w1'], { XMPP_SM_DURABLE: 'true', XMPP_NODE_LEASE_MS: '3000', XMPP_HTTPS_PORT: '0' });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  r = new Redis(cluster.redis.url);
});
test.after.always(async () => {
  r?.disconnect();
  await accounts?.close();
  await cluster?.stop();
});

const { account, user } = clusterPeers(() => accounts);
const url = (port: number | undefined) => `https://localhost:${port}/http-bind`;
const isStanza = (el: Element) => el.name === 'message' || el.name === 'presence' || el.name === 'iq';

/** A BOSH client that also keeps, in order, every payload it received (find() takes from its inbox, not from this). */
function recording(c: BoshClient): Element[] {
  const seen: Element[] = [];
  const send = c.send.bind(c);
  c.send = async (content, attrs) => {
    const body = await send(content, attrs);
    seen.push(...payloads(body));
    return body;
  };
  return seen;
}

test('a BOSH session whose node is killed with -9: a new BOSH session on the surviving node resumes the XMPP session (XEP-0198), with what was not acknowledged and what came after the death, in order, once, and it is live', async (t) => {
  const [survivor, doomed] = cluster.nodes;
  const ca = readFileSync(cluster.certFile);
  const name = await account('webby');
  const bob = await user(t, survivor, 'sender');

  const c = new BoshClient(url(doomed.httpsPort), { ca });
  t.teardown(() => c.close());
  const seen = recording(c);
  await c.create();
  t.regex(c.sid, new RegExp(`\\.${doomed.name}$`), 'the BOSH session lives on the node to be killed');
  await boshScram(c, name, `${name}-pw`);
  const jid = await boshBind(c, 'web');
  // Available (RFC 6121 §4.2): what is stored offline is for available sessions.
  await c.send(`<presence xmlns='jabber:client'/>`);
  await c.find((el) => el.name === 'presence' && el.attrs.from === jid);
  await c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await c.find((el) => el.name === 'enabled' && el.attrs.xmlns === NS_SM);
  t.is(enabled.attrs.resume, 'true');
  const next = seen.indexOf(enabled) + 1;

  for (const body of ['m1', 'm2', 'm3']) bob.c.send(`<message to='${jid}' type='chat'><body>${body}</body></message>`);
  await c.find(isBody('m3'));
  // Everything up to m1 acknowledged; m2 and m3 received but not acknowledged.
  const got = seen.slice(next).filter(isStanza);
  const h = got.findIndex(isBody('m1')) + 1;
  t.true(h > 0);
  // The acknowledgement's request is held (nothing to answer it with), as a
  // browser's long poll is, when the node dies: its answer never comes.
  const acking = c.send(`<a xmlns='${NS_SM}' h='${h}'/>`).catch((err: unknown) => err);
  // Written to Redis (a pipeline per turn of the event loop): the count
  // acknowledged is h, and the list holds exactly what was received and not acknowledged.
  const unacked = got.slice(h).map((el) => el.getChildText('body') ?? el.name);
  t.deepEqual(unacked, ['m2', 'm3']);
  const durable = async () => {
    const sid = await r.get(`xmpp:smj:${jid}`);
    const [acked, q] = await Promise.all([r.hget(`xmpp:sm:${sid}`, 'acked'), r.lrange(`xmpp:smq:${sid}`, 0, -1)]);
    return { acked: Number(acked), bodies: q.map((e) => (parseXml((JSON.parse(e) as { x: string }).x) as Element).getChildText('body')) };
  };
  const deadline = Date.now() + WAIT;
  for (let d = await durable(); d.acked !== h || JSON.stringify(d.bodies) !== JSON.stringify(unacked); d = await durable()) {
    if (Date.now() > deadline) throw new Error(`the durable state never held acked=${h}, ${JSON.stringify(unacked)}: ${JSON.stringify(d)}`);
    await new Promise((res) => setTimeout(res, 10));
  }

  doomed.proc.kill('SIGKILL');
  await doomed.exited;
  await acking;
  c.close();
  for (const body of ['m4', 'm5']) bob.c.send(`<message to='${jid}' type='chat'><body>${body}</body></message>`);
  t.deepEqual((await barrier(bob, 0)).filter((el) => el.attrs.type === 'error').map(String), [], 'nothing bounced');

  // A new BOSH session, on the survivor: logged in, and <resume/> in place of a bind.
  const again = new BoshClient(url(survivor.httpsPort), { ca });
  t.teardown(() => again.close());
  const seenAgain = recording(again);
  await again.create();
  t.regex(again.sid, new RegExp(`\\.${survivor.name}$`));
  await boshScram(again, name, `${name}-pw`);
  await again.send(`<resume xmlns='${NS_SM}' previd='${enabled.attrs.id}' h='${h}'/>`);
  const answer = await within(
    again.find((el) => el.attrs.xmlns === NS_SM && (el.name === 'resumed' || el.name === 'failed')),
    WAIT * 3,
    'the answer to <resume/>',
  );
  t.is(answer.name, 'resumed', answer.toString());
  t.is(answer.attrs.previd, enabled.attrs.id);
  // From Redis: the node that held it is dead (its log line may come after the answer).
  await within(survivor.waitForLog(/session resumed from its durable state/), WAIT, "the survivor's log");
  await again.find(isBody('m5'));
  const fromBob = () => seenAgain.flatMap((el) => (el.name === 'message' && el.attrs.from === bob.jid ? [el.getChildText('body')] : []));
  t.deepEqual(fromBob(), ['m2', 'm3', 'm4', 'm5']);
  t.true(seenAgain.indexOf(answer) < seenAgain.findIndex(isBody('m2')), '<resumed/> first');
  t.true(seenAgain.filter(isBody('m2')).every((el) => el.attrs.to === jid), 'to the same full JID');
  // Live again.
  bob.c.send(`<message to='${jid}' type='chat'><body>m6</body></message>`);
  await again.find(isBody('m6'));
  t.deepEqual(fromBob(), ['m2', 'm3', 'm4', 'm5', 'm6'], 'each once');
});
