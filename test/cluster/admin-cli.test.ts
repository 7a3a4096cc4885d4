// Runtime administration from the command line in a cluster of two nodes
// (a private Redis and PostgreSQL): the CLI beside one node reaches the
// whole cluster through it. `sessions list` and `stats` show both nodes'
// sessions, each where it lives; `sessions kick` ends a session that lives
// on the other node; `announce` reaches sessions on both.
import test from 'ava';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import type { Element } from 'ltx';
import { startCluster } from '../helpers/cluster.ts';
import type { NodeProcess, TestCluster } from '../helpers/cluster.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { NS_STREAMS_ERR, childEls, within } from '../helpers/protocol.ts';
import { WAIT, clusterPeers, expect } from '../helpers/im.ts';
import { run } from '../helpers/process.ts';
import type { SessionInfo } from '../../src/admin/tasks.ts';

let cluster: TestCluster;
let accounts: PostgresAccountStore;

test.before(async () => {
  cluster = await startCluster(['c1', 'c2']);
  accounts = await PostgresAccountStore.open(cluster.databaseUrl, 4096);
});
test.after.always(async () => {
  await accounts?.close();
  await cluster?.stop();
});

const { user } = clusterPeers(() => accounts);

/** The CLI run beside `node`: its data directory (where its administration socket is) and the cluster's settings. */
async function cli(node: NodeProcess, ...args: string[]) {
  const config = join(node.dataDir, 'cli.config.json');
  writeFileSync(config, '{}\n');
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('XMPP_')) env[k] = v;
  Object.assign(env, { XMPP_CONFIG: config, XMPP_DATA_DIR: node.dataDir, XMPP_DOMAIN: 'localhost', XMPP_NODE_ID: node.name, XMPP_REDIS_URL: cluster.redis.url, XMPP_DATABASE_URL: cluster.databaseUrl });
  return within(run(process.execPath, ['src/main.ts', ...args], env), 60_000, `xmpp-server ${args.join(' ')} beside ${node.name}`);
}

test.serial('sessions list and stats beside one node show the sessions of both nodes, each where it lives', async (t) => {
  const [n1, n2] = cluster.nodes;
  const here = await user(t, n1, 'here');
  const there = await user(t, n2, 'there');
  for (const beside of [n1, n2]) {
    const r = await cli(beside, 'sessions', 'list', '--json');
    t.is(r.code, 0, r.stderr);
    const a = JSON.parse(r.stdout) as { sessions: SessionInfo[]; nodes: { node: string; total: number }[]; missing: number };
    t.deepEqual(a.nodes.map((n) => n.node), ['c1', 'c2'], `asked beside ${beside.name}`);
    t.is(a.missing, 0);
    t.like(a.sessions.find((s) => s.jid === here.jid), { node: 'c1', ip: '127.0.0.1', transport: 'tcp', secure: true });
    t.like(a.sessions.find((s) => s.jid === there.jid), { node: 'c2', ip: '127.0.0.1', transport: 'tcp', secure: true });
  }
  const one = await cli(n1, 'sessions', 'list', '--json', '--user', there.bare);
  t.deepEqual((JSON.parse(one.stdout) as { sessions: SessionInfo[] }).sessions.map((s) => [s.jid, s.node]), [[there.jid, 'c2']]);

  const s = await cli(n2, 'stats', '--json');
  t.is(s.code, 0, s.stderr);
  const stats = JSON.parse(s.stdout) as { answers: { node: string; v: { workers: { sessions: number }[] } }[]; missing: number };
  t.deepEqual(stats.answers.map((n) => n.node), ['c1', 'c2']);
  t.is(stats.missing, 0);
  for (const n of stats.answers) t.true(n.v.workers[0].sessions >= 1, `${n.node} holds a session`);
});

test.serial('sessions kick beside node 1 ends a session on node 2; announce beside node 2 reaches both nodes', async (t) => {
  const [n1, n2] = cluster.nodes;
  const here = await user(t, n1, 'listener');
  const there = await user(t, n2, 'kicked');
  const marks = [here.c.items.length, there.c.items.length];

  const said = await cli(n2, 'announce', 'the cluster restarts at noon');
  t.is(said.code, 0, said.stderr);
  t.regex(said.stdout, /^announced to \d+ session\(s\)\n$/);
  const isAnnouncement = (el: Element) => el.name === 'message' && el.attrs.from === 'localhost' && el.attrs.type === 'headline' && el.getChildText('body') === 'the cluster restarts at noon';
  await expect(here, 'the announcement on node 1', isAnnouncement, marks[0]);
  await expect(there, 'the announcement on node 2', isAnnouncement, marks[1]);

  const from = there.c.items.length;
  const k = await cli(n1, 'sessions', 'kick', there.bare);
  t.is(k.code, 0, k.stderr);
  t.is(k.stdout, `ended 1 session(s) of ${there.bare}\n`);
  const el = await expect(there, 'a stream error', (e) => e.name === 'stream:error', from);
  t.is(childEls(el).find((c) => c.attrs.xmlns === NS_STREAMS_ERR && c.name !== 'text')?.name, 'policy-violation');
  await within(there.c.closed, WAIT, 'the kicked session closed');
  // The other node's user was not touched.
  await within(here.c.exchange(`<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, /id=(["'])p1\1/), WAIT, 'a ping on node 1');
});
