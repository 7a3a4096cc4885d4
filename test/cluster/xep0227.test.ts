// `user import` against a running cluster: the blocklists it writes (from
// ejabberd's export, test/fixtures/xep0227/ejabberd-pep) are enforced at
// once on every node, whose workers keep which accounts block anyone and
// were told through Redis, as for a change made in band.
import test from 'ava';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { startCluster } from '../helpers/cluster.ts';
import type { TestCluster } from '../helpers/cluster.ts';
import { online, within } from '../helpers/protocol.ts';
import { WAIT, expect, ready } from '../helpers/im.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let cluster: TestCluster;

test.before(async () => {
  cluster = await startCluster(['x1', 'x2']);
});
test.after.always(async () => {
  await cluster?.stop();
});

test('blocklists imported into a running cluster are enforced on every node at once', async (t) => {
  const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, ['src/main.ts', 'user', 'import', join(ROOT, 'test/fixtures/xep0227/ejabberd-pep')], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, XMPP_REDIS_URL: cluster.redis.url, XMPP_DATABASE_URL: cluster.databaseUrl, XMPP_DOMAIN: 'localhost', XMPP_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('exit', (code) => resolve({ code, out }));
  });
  t.is(result.code, 0, result.out);
  t.regex(result.out, /3 blocked JIDs/);
  for (const node of cluster.nodes) {
    const { c, jid } = await within(online(node.c2sPort, 'alice', 'alice-pw-1', node.name), WAIT, `alice logging in to ${node.name}`);
    t.teardown(() => c.destroy());
    const alice = { c, jid, bare: 'alice@localhost', name: 'alice' };
    await ready(alice);
    const from = c.items.length;
    c.send(`<message to='mallory@example.org' id='m-${node.name}' type='chat'><body>hi</body></message>`);
    const err = await expect(alice, `the error on ${node.name}`, (el) => el.name === 'message' && el.attrs.id === `m-${node.name}`, from);
    t.truthy(err.getChild('error')?.getChild('blocked', 'urn:xmpp:blocking:errors'), `${node.name}: ${err.toString()}`);
  }
});
