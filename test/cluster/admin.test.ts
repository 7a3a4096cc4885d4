// XEP-0133 service administration in a cluster of two nodes (a private
// Redis and PostgreSQL): the admin, logged in to node 1, lists users online
// on both nodes, ends a session that lives on node 2, deletes a user whose
// session is on node 2 (the removal reaches it there), and sends an
// announcement that reaches sessions on both nodes.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { NS_STREAMS_ERR, childEls, plainOutcome, uid, within } from '../helpers/protocol.ts';
import { WAIT, clusterPeers, expect } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const NS_COMMANDS = 'http://jabber.org/protocol/commands';
const NS_ADMIN = 'http://jabber.org/protocol/admin';
const BOSS = 'boss';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['a1', 'a2'], { XMPP_ADMINS: `${BOSS}@localhost` });
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
  await accounts.create(BOSS, `${BOSS}-pw`);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { user, connect } = clusterPeers(() => accounts);

async function command(p: Peer, name: string, sessionid?: string, fields?: Record<string, string | string[]>, action?: string): Promise<Element> {
  const id = uid('cmd');
  const form = fields
    ? `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NS_ADMIN}</value></field>${Object.entries(fields).map(([k, v]) => `<field var='${k}'>${(Array.isArray(v) ? v : [v]).map((x) => `<value>${x}</value>`).join('')}</field>`).join('')}</x>`
    : '';
  const attrs = `node='${NS_ADMIN}#${name}'${sessionid ? ` sessionid='${sessionid}'` : ''}${action ? ` action='${action}'` : ''}`;
  const res = await within(p.c.request(`<iq type='set' id='${id}' to='localhost'><command xmlns='${NS_COMMANDS}' ${attrs}>${form}</command></iq>`, id), WAIT, `${p.jid}: ${name}`);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res.getChild('command', NS_COMMANDS)!;
}

async function run(p: Peer, name: string, fields: Record<string, string | string[]>, action?: string): Promise<Element> {
  const first = await command(p, name);
  return command(p, name, first.attrs.sessionid, fields, action);
}

const values = (cmd: Element, name: string) => cmd.getChild('x', 'jabber:x:data')?.getChildren('field').find((f) => f.attrs.var === name)?.getChildren('value').map((v) => v.getText()) ?? [];

async function streamEnded(p: Peer, from: number): Promise<string | undefined> {
  const el = await expect(p, 'a stream error', (e) => e.name === 'stream:error', from);
  await within(p.c.closed, WAIT, `${p.jid}: connection closed`);
  return childEls(el).find((c) => c.attrs.xmlns === NS_STREAMS_ERR && c.name !== 'text')?.name;
}

const boss = (t: ExecutionContext) => connect(t, cluster.nodes[0], BOSS, `desk-${uid('r')}`);

test('the admin on node 1 lists users online on both nodes, and ends a session on node 2', async (t) => {
  const [n1, n2] = cluster.nodes;
  const admin = await boss(t);
  const here = await user(t, n1, 'here');
  const there = await user(t, n2, 'there');
  const listed = await run(admin, 'get-online-users-list', { max_items: 'none' });
  const online = values(listed, 'onlineuserjids');
  t.true(online.includes(here.bare), 'a user of node 1');
  t.true(online.includes(there.bare), 'a user of node 2');
  t.true(Number(values(await command(admin, 'get-online-users-num'), 'onlineusersnum')[0]) >= 3);
  const stats = await run(admin, 'user-stats', { accountjid: there.bare });
  t.deepEqual(values(stats, 'onlineresources'), [n2.name]);

  const from = there.c.items.length;
  const ended = await run(admin, 'end-user-session', { accountjids: there.bare });
  t.is(ended.attrs.status, 'completed');
  t.is(await streamEnded(there, from), 'policy-violation', 'the session on node 2 ended');
  t.is(await plainOutcome(n2.c2sPort, there.name, `${there.name}-pw`), 'success', 'the account stays');
});

test('the admin on node 1 deletes a user whose session is on node 2: the session ends there, the account is gone', async (t) => {
  const [, n2] = cluster.nodes;
  const admin = await boss(t);
  const victim = await user(t, n2, 'victim');
  const from = victim.c.items.length;
  const done = await run(admin, 'delete-user', { accountjids: victim.bare }, 'complete');
  t.is(done.attrs.status, 'completed');
  t.is(await streamEnded(victim, from), 'not-authorized');
  t.false(await accounts.exists(victim.name));
  t.is(await plainOutcome(n2.c2sPort, victim.name, `${victim.name}-pw`), 'not-authorized');
});

test('an announcement from node 1 reaches sessions on both nodes', async (t) => {
  const [n1, n2] = cluster.nodes;
  const admin = await boss(t);
  const a = await user(t, n1, 'ann');
  const b = await user(t, n2, 'ann');
  const [fa, fb] = [a.c.items.length, b.c.items.length];
  const text = `going down ${uid('ann')}`;
  const sent = await run(admin, 'announce', { announcement: text });
  t.is(sent.attrs.status, 'completed');
  for (const [p, from] of [[a, fa], [b, fb]] as const) {
    const m = await expect(p, 'the announcement', (e) => e.name === 'message' && e.getChildText('body') === text, from);
    t.is(m.attrs.type, 'headline');
    t.is(m.attrs.from, 'localhost');
  }
});
