// Failures inside one node that must not take its service down (found in
// review, issue 14's spirit): the storage thread dying is survived (another
// is started, the workers get a port to it, logins and offline storage work
// again); a STARTTLS on a secure stream gets <failure/> and the end of the
// connection; a removal notice the admin
// socket cannot understand is refused and kills nothing, and any other line
// it cannot act on (unknown op, null, empty, not JSON) gets an error and
// leaves the socket usable; a claim on an
// offline queue left by a node that stopped does not hold its user's
// messages back after a restart.
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { NS_STREAMS_ERR, NS_TLS, secured, uid, within } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, fresh } from '../helpers/im.ts';
import { environment, spawnServer, START_MS } from '../helpers/process.ts';
import { SqliteOfflineStore } from '../../src/offline/sqlite.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { adminSocketPath } from '../../src/admin/socket.ts';
import type { AdminAnswer } from '../../src/admin/socket.ts';

let server: TestServer;
test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

test.serial('the storage thread dies: another is started, logins and offline storage work again, sessions stay', async (t) => {
  const [a, b] = [fresh('alice'), fresh('bob')];
  await server.addUser(a, `${a}-pw`);
  await server.addUser(b, `${b}-pw`);
  const alice = await connect(t, server.c2sPort, a);
  const storage = server.storage!;
  const first = storage.thread;
  const exited = once(first, 'exit');
  // Listening after the acceptor: once told, every worker has been sent a port to the new thread.
  const restarted = once(storage, 'restarted');
  await first.terminate();
  await within(exited, WAIT, 'the storage thread to exit');
  await within(restarted, WAIT, 'a new storage thread');
  t.not(storage.thread, first, 'a new storage thread');
  // Logins work again (they read the account through the new thread).
  (await connect(t, server.c2sPort, b, 'first')).c.destroy();
  // The session from before still chats, and a message to the offline bob is stored.
  const id = uid('after');
  const from = alice.c.items.length;
  alice.c.send(`<message to='${b}@localhost' id='${id}' type='chat'><body>kept</body></message>`);
  t.deepEqual((await barrier(alice, from)).map((el) => el.toString()), [], 'no error: stored');
  const bob = await connect(t, server.c2sPort, b, 'again');
  const bf = bob.c.items.length;
  bob.c.send('<presence/>');
  await expect(bob, 'the stored message', (el) => el.attrs.id === id, bf);
});

test('STARTTLS on a secure stream: <failure/>, then the connection ends (RFC 6120 §5.4.2.2)', async (t) => {
  const { c } = await secured(server.c2sPort);
  t.teardown(() => c.destroy());
  c.send(`<starttls xmlns='${NS_TLS}'/>`);
  const failure = await within(c.nextEl('failure'), 5000, 'the <failure/>');
  t.is(failure.attrs.xmlns, NS_TLS);
  await within(c.closed, 5000, 'the server ends the connection');
  t.true(c.isClosed);
});

/**
 * A connection to the server's admin socket (one JSON line each way):
 * ask() sends a line and resolves with the answer to it, bounded.
 */
async function adminConnection(t: ExecutionContext): Promise<{ ask: (line: string) => Promise<AdminAnswer> }> {
  const sock = net.connect(adminSocketPath(server.config.dataDir));
  t.teardown(() => sock.destroy());
  await within(once(sock, 'connect'), WAIT, 'a connection to the admin socket');
  sock.setEncoding('utf8');
  let buf = '';
  let closed = false;
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  sock.on('data', (d: string) => {
    buf += d;
    for (let nl; (nl = buf.indexOf('\n')) !== -1; buf = buf.slice(nl + 1)) lines.push(buf.slice(0, nl));
    wake();
  });
  sock.on('close', () => {
    closed = true;
    wake();
  });
  let asked = 0;
  const answer = async (i: number, line: string): Promise<AdminAnswer> => {
    while (lines.length <= i) {
      if (closed) throw new Error(`the admin socket closed before answering ${JSON.stringify(line)}`);
      await new Promise<void>((r) => waiters.push(r));
    }
    return JSON.parse(lines[i]) as AdminAnswer;
  };
  return {
    ask(line) {
      sock.write(`${line}\n`);
      return within(answer(asked++, line), WAIT, `the admin socket's answer to ${JSON.stringify(line)}`);
    },
  };
}

test('a removal notice the admin socket cannot understand is refused; the workers live on', async (t) => {
  const admin = await adminConnection(t);
  const [first, second] = await Promise.all([admin.ask(JSON.stringify({ op: 'removed', notice: { user: 'someone' } })), admin.ask('not json')]);
  t.deepEqual(first, { ok: false, error: 'a removal notice without the fields it needs' });
  t.like(second, { ok: false });
  t.regex(second.ok ? '' : second.error, /is not valid JSON/);
  const u = fresh('still');
  await server.addUser(u, `${u}-pw`);
  const p = await connect(t, server.c2sPort, u);
  await barrier(p, 0);
});

test('the admin socket answers an unknown op, null, an empty line and lines that are not JSON with an error, and stays usable', async (t) => {
  const u = fresh('admin');
  await server.addUser(u, `${u}-pw`);
  const p = await connect(t, server.c2sPort, u);
  const admin = await adminConnection(t);
  const refused: [string, string | RegExp][] = [
    [JSON.stringify({ op: 'frobnicate' }), 'unknown request "frobnicate"'],
    ['null', 'unknown request undefined'],
    ['{}', 'unknown request undefined'],
    ['[]', 'unknown request undefined'],
    ['', /^Unexpected end of JSON input/],
    ['not json', /is not valid JSON/],
    ['{"op": "removed", "notice"', /JSON/],
    [JSON.stringify({ op: 'removed' }), 'a removal notice without the fields it needs'],
    [JSON.stringify({ op: 'changed', kind: 'blocklist' }), 'a change notice without the fields it needs'],
    [JSON.stringify({ op: 'changed', kind: 'roster', user: u }), 'a change notice without the fields it needs'],
  ];
  for (const [line, error] of refused) {
    const answer = await admin.ask(line);
    t.is(answer.ok, false, `${JSON.stringify(line)}: ${JSON.stringify(answer)}`);
    const text = answer.ok ? '' : answer.error;
    if (typeof error === 'string') t.is(text, error, JSON.stringify(line));
    else t.regex(text, error, JSON.stringify(line));
  }
  // The same connection still takes a request the server acts on: the
  // account's session ends as for a removal.
  const notice = { user: u, bare: `${u}@localhost`, at: Date.now(), contacts: [] };
  t.deepEqual(await admin.ask(JSON.stringify({ op: 'removed', notice })), { ok: true });
  const err = await expect(p, 'the stream error', (el) => el.name === 'stream:error');
  t.truthy(err.getChild('not-authorized', NS_STREAMS_ERR), err.toString());
  await within(p.c.closed, WAIT, 'the end of the stream');
  // A new connection is answered too, and the workers live on.
  t.deepEqual(await (await adminConnection(t)).ask('null'), { ok: false, error: 'unknown request undefined' });
  const v = fresh('after');
  await server.addUser(v, `${v}-pw`);
  await barrier(await connect(t, server.c2sPort, v), 0);
});

test('a claim on an offline queue left by a node that stopped does not hold back its messages after a restart', async (t) => {
  const { env, dir } = await environment(t);
  const data = join(dir, 'data');
  const first = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(first.waitForLog('listening'), START_MS, 'the start');
  const accounts = SqliteAccountStore.open(join(data, 'accounts.sqlite'), 4096);
  await accounts.create('bob', 'bob-pw');
  accounts.close();
  first.child.kill('SIGTERM');
  await within(first.closed, START_MS, 'the first server to stop');
  // What a session of a node that died left: a message, and its claim.
  const offline = SqliteOfflineStore.open(join(data, 'offline.sqlite'));
  await offline.push('bob', `<message to='bob@localhost' id='waiting' type='chat'><body>x</body></message>`, { max: 10, maxBytes: 10_000 });
  t.not(await offline.fetch('bob', 'a-session-that-died', '', 10, 3_600_000), null);
  offline.close();
  const second = spawnServer(t, process.execPath, ['src/main.ts', 'start'], env);
  await within(second.waitForLog('listening'), START_MS, 'the restart');
  const bob = await connect(t, second.c2sPort, 'bob', 'r');
  const from = bob.c.items.length;
  bob.c.send('<presence/>');
  await expect(bob, 'the message', (el) => el.attrs.id === 'waiting', from);
  second.child.kill('SIGTERM');
  await within(second.closed, START_MS, 'the second server to stop');
});

