// Floods and slow readers: bounded by the server, without harm to others.
import test from 'ava';
import type net from 'node:net';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { drainedOrClosed, login } from '../helpers/raw.ts';
import type { RawClient } from '../helpers/raw.ts';

const RATE = 100 * 1024;
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_READ_RATE_BYTES: String(RATE), XMPP_WORKERS: '1' });
  for (const u of ['bob', 'carol', 'dave']) await server.addUser(u, `${u}-pw`);
});
test.after.always(() => server.stop());

const socketOf = (c: RawClient) => (c as unknown as { sock: net.Socket }).sock;

async function pingServer(c: RawClient, id: string): Promise<void> {
  await c.exchange(`<iq type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, new RegExp(`<iq[^>]*id=["']${id}["'][^>]*type=["']result|<iq[^>]*type=["']result["'][^>]*id=["']${id}["']`));
}

test.serial('a flooding client is shaped to the read rate and loses nothing', async (t) => {
  const { c: flooder } = await login(server.c2sPort, 'bob', 'bob-pw', 'flood');
  const { c: sink } = await login(server.c2sPort, 'carol', 'carol-pw', 'sink');
  const { c: bystander } = await login(server.c2sPort, 'dave', 'dave-pw', 'calm');
  const n = 1000;
  const pad = 'x'.repeat(250);
  let out = '';
  for (let i = 0; i < n; i++) out += `<message to='carol@localhost/sink' id='f${i}'><body>${i} ${pad}</body></message>`;
  const bytes = Buffer.byteLength(out);
  const started = Date.now();
  flooder.send(out);
  // Others are served while the flood is being read.
  await pingServer(bystander, 'calm1');
  await sink.waitFor(new RegExp(`id=["']f${n - 1}["']`));
  const elapsed = Date.now() - started;
  const ids = [...sink.buffer.matchAll(/<message[^>]*id=["']f(\d+)["']/g)].map((m) => Number(m[1]));
  t.deepEqual(ids, Array.from({ length: n }, (_, i) => i), 'every message arrives, once, in order');
  // The shaper lets one second's worth through at once, the rest at RATE.
  t.true(elapsed >= ((bytes - RATE) / RATE) * 1000 * 0.9, `read ${bytes} bytes in ${elapsed} ms`);
  for (const c of [flooder, sink, bystander]) c.destroy();
});

test.serial('a client that stops reading is disconnected once its queue passes the bound', async (t) => {
  // Unshaped, so that the sender can outpace the reader quickly.
  const server = await startTestServer({ XMPP_READ_RATE_BYTES: '0', XMPP_MAX_OUTBOUND_BYTES: String(1024 * 1024), XMPP_WORKERS: '1' });
  t.teardown(() => server.stop());
  await server.addUser('alice', 'alice-pw');
  await server.addUser('bob', 'bob-pw');
  const { c: slow, jid } = await login(server.c2sPort, 'alice', 'alice-pw', 'slow');
  const { c: sender } = await login(server.c2sPort, 'bob', 'bob-pw', 'sender');
  socketOf(slow).pause();
  const body = 'y'.repeat(4000);
  let i = 0;
  const bounced = sender.waitFor(/<message[^>]*type=["']error["'][\s\S]*?<service-unavailable/);
  let done = false;
  void bounced.then(() => (done = true));
  // Keep sending until the server gives up on the slow reader: after that,
  // messages to it bounce as to an unavailable resource.
  while (!done && i < 20000) {
    // <no-store/> (XEP-0334): once the reader is gone, bounce at once rather than fill its offline store.
    if (!socketOf(sender).write(`<message to='${jid}' type='chat' id='s${i++}'><body>${body}</body><no-store xmlns='urn:xmpp:hints'/></message>`)) {
      // Drained, or closed (then `bounced` rejects and the test fails with the reason).
      await drainedOrClosed(socketOf(sender));
      if (socketOf(sender).destroyed) break;
    }
    if (i % 50 === 0) await new Promise<void>((r) => setImmediate(r));
  }
  await bounced;
  t.is(server.hub.registry.lookup(jid), undefined, 'the slow session is gone from the registry');
  // The sender may itself be cut off for not reading its bounces; a third
  // client is untouched.
  const { c: other } = await login(server.c2sPort, 'bob', 'bob-pw', 'other');
  await pingServer(other, 'after');
  other.destroy();
  slow.destroy();
  sender.destroy();
});
