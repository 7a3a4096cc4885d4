// The archive of a node on PostgreSQL (XMPP_DATABASE_URL), against a
// private PostgreSQL: messages are archived there, and a database that stops
// answering does not stall routing: the archive's bounded buffer fills,
// then senders get resource-constraint (wait) while everything else goes
// on; once the database answers again, every message that was accepted is
// in the archive, and none that was refused.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { startTestServer } from '../helpers/server.ts';
import { sharedPostgresServer } from '../helpers/postgres.ts';
import type { PostgresServer } from '../helpers/postgres.ts';
import { PostgresAccountStore } from '../../src/accounts/postgres.ts';
import { PostgresArchiveStore } from '../../src/mam/postgres.ts';
import { stanzaError, uid } from '../helpers/protocol.ts';
import { barrier, connect, expect, isBody, ready } from '../helpers/im.ts';

const pgServer = sharedPostgresServer(test);

/** Stops (SIGSTOP) or resumes (SIGCONT) the postmaster and its backends: a database that hangs, not one that refuses. */
function signal(server: PostgresServer, sig: 'SIGSTOP' | 'SIGCONT'): void {
  const pid = Number(readFileSync(join(server.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  let children: number[] = [];
  try {
    children = execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    // pgrep exits 1 when there are none.
  }
  for (const p of sig === 'SIGSTOP' ? [pid, ...children] : [...children, pid]) process.kill(p, sig);
  // As root the postmaster runs under runuser, which stops itself when its child stops: it must go on too.
  const parent = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
  if (sig === 'SIGCONT' && parent > 1 && readFileSync(`/proc/${parent}/comm`, 'utf8').trim() === 'runuser') process.kill(parent, 'SIGCONT');
}

test('a database that hangs: the buffer fills, senders are told to wait, routing goes on; afterwards every accepted message is archived', async (t) => {
  const url = await pgServer.database();
  const accounts = await PostgresAccountStore.open(url, 4096);
  for (const u of ['alice', 'bob']) await accounts.create(u, `${u}-pw`);
  await accounts.close();
  // One worker: both archive rows of a message go through one buffer of 100.
  const server = await startTestServer({ XMPP_DATABASE_URL: url, XMPP_WORKERS: '1', XMPP_MAM_MAX_BUFFERED: '100' });
  t.teardown(() => server.stop());
  const alice = await connect(t, server.c2sPort, 'alice');
  await ready(alice);
  const bob = await connect(t, server.c2sPort, 'bob');
  await ready(bob);
  // Preferences read once (cached), so the test's stop finds nothing else to wait for.
  let bf = bob.c.items.length;
  alice.c.send(`<message to='${bob.bare}' type='chat'><body>warm-up</body></message>`);
  bob.c.send(`<message to='${alice.bare}' type='chat'><body>warm-up back</body></message>`);
  await expect(bob, 'warm-up', isBody('warm-up'), bf);
  await barrier(bob, bob.c.items.length);
  // A query waits for the worker's archive writes: after it, the buffer is empty.
  const qid = uid('q');
  t.is((await bob.c.request(`<iq type='set' id='${qid}'><query xmlns='urn:xmpp:mam:2'/></iq>`, qid)).attrs.type, 'result');

  signal(pgServer.server, 'SIGSTOP');
  let resumed = false;
  t.teardown(() => {
    if (!resumed) signal(pgServer.server, 'SIGCONT');
  });
  const af = alice.c.items.length;
  bf = bob.c.items.length;
  const ids: string[] = [];
  for (let i = 0; i < 80; i++) {
    const id = uid('m');
    ids.push(id);
    alice.c.send(`<message to='${bob.bare}' type='chat' id='${id}'><body>held ${i}</body></message>`);
  }
  const back = await barrier(alice, af);
  const refused = back.filter((el) => el.name === 'message' && el.attrs.type === 'error');
  // 100 rows: 50 messages (each one row for alice, one for bob); the rest refused.
  t.is(refused.length, 30);
  for (const r of refused) t.like(stanzaError(r), { type: 'wait', condition: 'resource-constraint' });
  const refusedIds = new Set(refused.map((r) => r.attrs.id));
  t.deepEqual([...refusedIds], ids.slice(50));
  // Delivered: the accepted ones, each with its archive id; nothing refused reached bob.
  await expect(bob, 'the last accepted', isBody('held 49'), bf);
  const gotBodies = (await barrier(bob, bf)).filter((el) => el.name === 'message').map((el) => el.getChildText('body'));
  t.deepEqual(gotBodies, Array.from({ length: 50 }, (_, i) => `held ${i}`));
  // Routing goes on: presence and what is not archived pass.
  bf = bob.c.items.length;
  alice.c.send(`<message to='${bob.bare}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`);
  await expect(bob, 'the chat state', (el) => el.getChild('composing') !== undefined, bf);

  signal(pgServer.server, 'SIGCONT');
  resumed = true;
  // The writer retries on its own pause (at most 5 s): the rows land then.
  const store = await PostgresArchiveStore.open(url);
  t.teardown(() => store.close());
  for (let i = 0; i < 200 && (await store.count('bob', {})) < 52; i++) await new Promise((r) => setTimeout(r, 50));
  // Then new messages are archived again.
  const after = alice.c.items.length;
  alice.c.send(`<message to='${bob.bare}' type='chat'><body>after</body></message>`);
  t.deepEqual((await barrier(alice, after)).filter((el) => el.attrs.type === 'error'), []);
  const q2 = uid('q');
  await bob.c.request(`<iq type='set' id='${q2}'><query xmlns='urn:xmpp:mam:2'/></iq>`, q2);
  const archived = await store.query('bob', { max: 250, last: false });
  const bodies = archived.items.map((m) => m.body);
  t.deepEqual(bodies.filter((b) => b.startsWith('held')), Array.from({ length: 50 }, (_, i) => `held ${i}`), 'every accepted message, once, in order; none refused');
  t.is(bodies.at(-1), 'after');
});
