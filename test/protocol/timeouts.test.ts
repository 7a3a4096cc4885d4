// Timeouts end a stream with <connection-timeout/> (RFC 6120 §4.9.3.4):
// no resource bound in time, or an established session silent too long.
// Every wait is on what the server sends or on the socket closing.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient, header } from '../helpers/raw.ts';
import { expectStreamError, online, ping, readStreamStart, uid, within } from '../helpers/protocol.ts';

const BIND_TIMEOUT_MS = 300;
const IDLE_TIMEOUT_MS = 300;
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_BIND_TIMEOUT_MS: String(BIND_TIMEOUT_MS), XMPP_IDLE_TIMEOUT_MS: String(IDLE_TIMEOUT_MS) });
  for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await server.addUser(u, `${u}-pw`);
});
test.after.always(async () => {
  await server?.stop();
});

/**
 * Keeps `c` busy (so it never idles out) by pinging the server back to back
 * until `stop` settles; every ping must be answered.
 */
async function keepPinging(t: ExecutionContext, c: RawClient, stop: Promise<unknown>): Promise<number> {
  let done = false;
  void stop.finally(() => (done = true));
  let n = 0;
  while (!done) {
    const r = await within(ping(c), 5000, 'bystander ping');
    t.is(r.attrs.type, 'result');
    n++;
  }
  return n;
}

/** A message from one logged-in client reaches another. */
async function messageGetsThrough(t: ExecutionContext, from: { c: RawClient; jid: string }, to: { c: RawClient; jid: string }): Promise<void> {
  const id = uid('m');
  from.c.send(`<message to='${to.jid}' id='${id}' type='chat'><body>hi</body></message>`);
  const m = await within(to.c.find((el) => el.attrs.id === id), 5000, 'message');
  t.is(m.attrs.from, from.jid);
}

test('no resource bound within XMPP_BIND_TIMEOUT_MS → <connection-timeout/>', async (t) => {
  const bystander = await online(server.c2sPort, 'alice', 'alice-pw', 'b');
  const started = Date.now();
  const c = await RawClient.connect(server.c2sPort);
  c.send(header());
  await readStreamStart(c);
  c.mark();
  const error = expectStreamError(t, c, 'connection-timeout');
  const pings = await keepPinging(t, bystander.c, error.catch(() => {}));
  await error;
  t.true(Date.now() - started >= BIND_TIMEOUT_MS, 'not before the timeout');
  t.true(pings > 0);
  const other = await online(server.c2sPort, 'bob', 'bob-pw', 'b');
  await messageGetsThrough(t, other, bystander);
  bystander.c.destroy();
  other.c.destroy();
});

test('a connection that sends nothing at all also times out', async (t) => {
  const c = await RawClient.connect(server.c2sPort);
  await expectStreamError(t, c, 'connection-timeout', { header: true });
});

test('an established session silent for XMPP_IDLE_TIMEOUT_MS → <connection-timeout/>', async (t) => {
  const idle = await online(server.c2sPort, 'carol', 'carol-pw', 'idle');
  const quietSince = Date.now();
  const bystander = await online(server.c2sPort, 'dave', 'dave-pw', 'b');
  const error = expectStreamError(t, idle.c, 'connection-timeout');
  await keepPinging(t, bystander.c, error.catch(() => {}));
  await error;
  t.true(Date.now() - quietSince >= IDLE_TIMEOUT_MS, 'not before the timeout');
  const other = await online(server.c2sPort, 'erin', 'erin-pw', 'b');
  await messageGetsThrough(t, other, bystander);
  bystander.c.destroy();
  other.c.destroy();
});

test('whitespace keepalives alone keep an established session from idling out (RFC 6120 §4.6.1)', async (t) => {
  const c = await online(server.c2sPort, 'frank', 'frank-pw', 'ka');
  // Only whitespace, paced at a sixth of the idle timeout, for three times the idle timeout.
  const end = Date.now() + 3 * IDLE_TIMEOUT_MS;
  while (Date.now() < end && !c.c.isClosed) {
    c.c.send(' ');
    await new Promise<void>((r) => setTimeout(r, IDLE_TIMEOUT_MS / 6));
  }
  t.false(c.c.isClosed, `still connected; received: ${c.c.buffer.slice(-300)}`);
  t.is((await ping(c.c)).attrs.type, 'result');
  c.c.destroy();
});
