// A node that shuts down while a client is not reading (issue 14 item 4):
// what was queued for the client and could not be written before the grace
// period ran out goes where undeliverable messages go, offline storage here,
// and the client gets it at its next login after the restart. Every message
// is read on the old connection or delivered from storage, never lost (one
// whose write was under way at the cut may come both ways).
import test from 'ava';
import { join } from 'node:path';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { barrier, connect, expect, ready } from '../helpers/im.ts';
import { uid } from '../helpers/protocol.ts';
import { START_MS, within, environment, spawnServer } from '../helpers/process.ts';

const socketOf = (c: unknown) => (c as { sock: import('node:net').Socket }).sock;

test('messages queued for a client that does not read when the node stops are stored, and delivered after the restart', async (t) => {
  const { env, dir } = await environment(t);
  Object.assign(env, {
    XMPP_MAX_OUTBOUND_BYTES: String(64 * 1024 * 1024),
    XMPP_MAX_OFFLINE: '100000',
    XMPP_MAX_OFFLINE_BYTES: String(256 * 1024 * 1024),
    XMPP_READ_RATE_BYTES: '0',
  });
  const first = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(first.waitForLog('listening'), START_MS, 'the start');
  const accounts = SqliteAccountStore.open(join(dir, 'data', 'accounts.sqlite'), 4096);
  await accounts.create('victim', 'victim-pw');
  await accounts.create('sender', 'sender-pw');
  accounts.close();

  const victim = await connect(t, first.c2sPort, 'victim', 'slow');
  await ready(victim);
  const sender = await connect(t, first.c2sPort, 'sender', 's');
  socketOf(victim.c).pause();
  // Far more than the kernel's buffers take: the rest waits in the server.
  const sent: string[] = [];
  for (let batch = 0; batch < 40; batch++) {
    const from = sender.c.items.length;
    for (let i = 0; i < 50; i++) {
      const id = uid('q');
      sent.push(id);
      sender.c.send(`<message to='${victim.jid}' id='${id}' type='chat'><body>${'q'.repeat(4000)}</body></message>`);
    }
    await barrier(sender, from);
  }
  // Stopped while the client reads nothing: what the grace period does not
  // see written is stored. Then the client reads what reached it.
  first.child.kill('SIGTERM');
  t.deepEqual(await within(first.closed, START_MS, 'the exit'), { code: 0, signal: null }, first.transcript());
  socketOf(victim.c).resume();
  await within(victim.c.closed, START_MS, 'the end of the connection');
  const read = victim.c.items.flatMap((it) => (it.kind === 'el' && it.el.name === 'message' ? [it.el.attrs.id] : []));
  t.true(read.length < sent.length, `some were still queued at the stop (read ${read.length} of ${sent.length})`);

  const second = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(second.waitForLog('listening'), START_MS, 'the restart');
  const again = await connect(t, second.c2sPort, 'victim', 'again');
  const from = again.c.items.length;
  again.c.send('<presence/>');
  // Offline messages come paced, and the barrier's answer may pass them: the
  // last one sent, which was never read, is waited for first.
  await expect(again, 'the last message sent, stored', (el) => el.name === 'message' && el.attrs.id === sent[sent.length - 1], from);
  const stored = (await barrier(again, from)).filter((el) => el.name === 'message').map((m) => m.attrs.id);
  // What was read is the start of what was sent, in order; what was stored
  // is its end, in order, from at most where the reading stopped. The two
  // meet where writes were under way when the connection was cut: a
  // message whose write did not complete may have reached the client all
  // the same (without stream management the server cannot know), so it is
  // stored too. Nothing is lost.
  t.deepEqual(read, sent.slice(0, read.length), 'read: the first ones, in order');
  const k = sent.length - stored.length;
  t.deepEqual(stored, sent.slice(k), 'stored: the last ones, in order');
  t.true(k <= read.length, `nothing between what was read (${read.length}) and what was stored (from ${k})`);
  second.child.kill('SIGTERM');
  await second.closed;
});
