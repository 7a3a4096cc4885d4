// Issue 14, item 1, scaled down: a flood of idle TCP connections from one
// host runs the server out of file descriptors. Before, whatever thread
// next needed one died: an idle collector reading its memory use threw
// EMFILE out of its timer, killing a worker (and its connections) or, in
// the main thread, the whole process. Now the acceptor refuses connections
// past a cap derived from the open-file limit, and no timer throws.
//
// The server runs as its own process under `ulimit -n 256`, with the idle
// collector every 100 ms so that it runs while the flood holds the
// descriptors. Two bystanders chat through the flood; new logins work once
// it ends; the process lives on and still shuts down cleanly.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import net from 'node:net';
import { LimitedServer } from '../helpers/spawned.ts';
import type { LogLine } from '../helpers/spawned.ts';
import { RawClient, header } from '../helpers/raw.ts';
import { online, othersUnaffected, within } from '../helpers/protocol.ts';

const NOFILE = 256;
const FLOOD = 300;
const WAIT = 15_000;

/** Raw TCP connections that open a stream and then sit idle, from 127.0.0.1. */
class Flood {
  readonly sockets: net.Socket[] = [];
  connected = 0;
  /** Got the server's stream header: accepted. */
  answered = 0;
  /**
   * Closed by the server without a word, before end(): refused. Closes that
   * end() causes are not counted: after it every socket is closed.
   */
  refused = 0;
  private ended = false;
  private waiters: (() => void)[] = [];

  constructor(port: number, n: number) {
    for (let i = 0; i < n; i++) {
      const s = net.connect({ port, host: '127.0.0.1' });
      this.sockets.push(s);
      s.on('connect', () => {
        this.connected++;
        s.write(header());
        this.wake();
      });
      let answered = false;
      s.once('data', () => {
        answered = true;
        this.answered++;
        this.wake();
      });
      s.on('error', () => {});
      s.on('close', () => {
        if (answered || this.ended) return;
        this.refused++;
        this.wake();
      });
    }
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((r) => this.waiters.push(r));
  }

  end(): void {
    this.ended = true;
    for (const s of this.sockets) s.destroy();
  }
}

/**
 * Logs in, trying again while the server still refuses (closes) connections
 * as the flood's are being closed. Each attempt is bounded: one whose SYN
 * met a full listen queue waits seconds for the kernel's retransmission.
 */
async function loginOnceFree(port: number, name: string): Promise<{ c: RawClient; jid: string }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await within(online(port, name, `${name}-pw`, `after${attempt}`), 3000, `login attempt ${attempt}`);
    } catch (err) {
      if (attempt === 20) throw err;
    }
  }
}

async function scenario(t: ExecutionContext, env: Record<string, string>): Promise<{ server: LimitedServer; flood: Flood }> {
  const server = await LimitedServer.start(t, { XMPP_IDLE_GC_MS: '100', XMPP_LOG_LEVEL: 'debug', ...env }, { nofile: NOFILE });
  for (const name of ['alice', 'bob', 'carol']) await server.addUser(name, `${name}-pw`);
  const alice = await within(online(server.c2sPort, 'alice', 'alice-pw'), WAIT, 'alice logging in');
  t.teardown(() => alice.c.destroy());
  const bob = await within(online(server.c2sPort, 'bob', 'bob-pw'), WAIT, 'bob logging in');
  t.teardown(() => bob.c.destroy());

  // Every thread's idle collector runs once the flood's burst has left it
  // quiet, while the flood still holds its descriptors (it is held until the
  // bystanders have chatted): lines from here on.
  const mark = server.logs.length;
  const flood = new Flood(server.c2sPort, FLOOD);
  t.teardown(() => flood.end());
  // Every flood connection is answered or closed (one may stay in the
  // listen queue while no descriptor is free): more than the limit allows
  // cannot all be answered, so the process is out of descriptors or at its cap.
  await within(flood.until(() => flood.answered + flood.refused >= FLOOD - 1), WAIT, 'the flood to be answered or refused').catch((err: Error) => {
    throw new Error(`${err.message}: ${flood.connected} connected, ${flood.answered} answered, ${flood.refused} refused`);
  });
  t.true(flood.answered < NOFILE, `${flood.answered} flood connections accepted under a limit of ${NOFILE}`);
  const collected = () => new Set(server.logs.slice(mark).filter((l) => l.msg === 'idle collection').map((l) => l.thread));
  await within(server.waitUntil(() => collected().size === 3 && collected().has(0), 'idle collections during the flood'), WAIT, 'an idle collection on every thread during the flood');

  // The bystanders chat through it.
  await othersUnaffected(t, alice, bob);
  await othersUnaffected(t, bob, alice);

  flood.end();
  // The server has let go of the flood once it has ended each connection it
  // accepted (until then a login may still meet a full table and be closed).
  const ended = () => server.logs.filter((l) => l.msg === 'connection ended').length;
  await within(server.waitUntil(() => ended() >= flood.answered, "the flood's connections to end"), WAIT, "the server to end the flood's connections");
  // New logins work once the flood is gone, and the bystanders are still there.
  const carol = await within(loginOnceFree(server.c2sPort, 'carol'), WAIT, 'carol logging in after the flood').catch((err: Error) => {
    throw new Error(`${err.message}; the server's log:\n${server.transcript()}`);
  });
  t.teardown(() => carol.c.destroy());
  await othersUnaffected(t, carol, alice);
  await othersUnaffected(t, bob, carol);

  t.true(server.running);
  t.deepEqual(server.logs.filter((l: LogLine) => l.level === 'error'), [], 'no worker died, no timer failed');
  server.child.kill('SIGTERM');
  t.deepEqual(await within(server.closed, WAIT, 'the server to exit'), { code: 0, signal: null }, server.transcript());
  return { server, flood };
}

test('under `ulimit -n 256`, a flood of idle connections is capped at the derived default: refused at once, counted, logged at a bounded rate', async (t) => {
  const { server, flood } = await scenario(t, {});
  const { answered, refused } = flood;
  const listening = server.logs.find((l) => l.msg === 'listening')!;
  t.like(listening, { openFileLimit: NOFILE });
  const max = listening.maxConnections as number;
  t.true(max > 0 && max < NOFILE - 64, `cap ${max}`);
  // The bystanders hold two of the cap's connections; every other flood
  // connection was refused (the cap is well below the open-file limit:
  // every connection was accepted, none left in the listen queue).
  t.is(answered, max - 2);
  t.is(refused, FLOOD - answered, `${refused} of ${FLOOD} refused, ${answered} answered`);
  const lines = server.logs.filter((l) => l.msg === 'connection refused: the node is full (XMPP_MAX_CONNECTIONS)');
  t.true(lines.length >= 1 && lines.length <= 2, `${lines.length} lines for ${refused} refusals`);
  t.like(lines[0], { level: 'warn', address: '127.0.0.1', max });
});

test('with XMPP_MAX_CONNECTIONS above the open-file limit, the process runs out of descriptors and lives on', async (t) => {
  const { server, flood } = await scenario(t, { XMPP_MAX_CONNECTIONS: '100000' });
  const { answered, refused } = flood;
  t.like(server.logs.find((l) => l.msg === 'listening'), { maxConnections: 100000 });
  // Past what the descriptors allow, the rest were refused by libuv's last
  // resort (a descriptor kept for this: accept and close), before the flood
  // ended (one may have stayed in the listen queue); none by the cap.
  t.true(refused > 0 && refused >= FLOOD - 1 - answered, `${refused} of ${FLOOD} refused, ${answered} answered`);
  t.is(server.logs.filter((l) => l.msg === 'connection refused: the node is full (XMPP_MAX_CONNECTIONS)').length, 0);
});
