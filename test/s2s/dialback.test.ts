// Federation without trusted certificates, and when things go wrong.
// Servers with self-signed certificates and XMPP_S2S_SECURE_AUTH=false
// authenticate each other with dialback (XEP-0220), each verifying the
// other's key by connecting back to it. A server with secure auth on
// refuses such a peer, and is not used by one; a peer that is not there,
// that never answers, or that goes away: the sender gets an error within
// the configured bounds, and nothing hangs.
import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selfSigned } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { stanzaError } from '../helpers/protocol.ts';
import { expect, isBody, isPresence, newUser } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const pki = mkdtempSync(join(tmpdir(), 'xmpp-s2s-db-'));
const [silentHost, absentHost] = loopbackAddresses(2);
let lax1: Federated;
let lax2: Federated;
let strict: Federated;
let stop: () => Promise<void>;
/** Accepts connections and never says a word. */
let silent: net.Server;

test.before(async () => {
  silent = net.createServer(() => {});
  silent.listen(5269, silentHost);
  await once(silent, 'listening');
  const lax = { XMPP_S2S_SECURE_AUTH: 'false' };
  const f = await federation(
    [
      { domain: 'lax1.example', cert: selfSigned(pki, 'lax1.example'), env: lax },
      { domain: 'lax2.example', cert: selfSigned(pki, 'lax2.example'), env: lax },
      { domain: 'strict.example', cert: selfSigned(pki, 'strict.example') },
    ],
    { env: { XMPP_S2S_CONNECT_TIMEOUT_MS: '1500' }, extra: { 'silent.example': `${silentHost}:5269`, 'absent.example': `${absentHost}:5269` } },
  );
  [lax1, lax2, strict] = f.servers;
  stop = f.stop;
});
test.after.always(async () => {
  silent?.close();
  await stop?.();
  rmSync(pki, { recursive: true, force: true });
});

async function errorFor(p: Peer, to: string): Promise<{ condition: string | undefined; from: string }> {
  const id = `m-${Math.random().toString(36).slice(2)}`;
  const from = p.c.items.length;
  p.c.send(`<message to='${to}' id='${id}' type='chat'><body>anyone there?</body></message>`);
  const err = await expect(p, `the error for ${to}`, (el) => el.name === 'message' && el.attrs.id === id && el.attrs.type === 'error', from);
  return { condition: stanzaError(err).condition, from: err.attrs.from };
}

test('dialback with self-signed certificates and secure auth off: messages both ways, keys verified by connecting back', async (t) => {
  const one = await newUser(t, lax1.server, 'one');
  const two = await newUser(t, lax2.server, 'two');
  one.c.send(`<message to='${two.jid}' type='chat'><body>dialback works</body></message>`);
  t.is((await expect(two, 'the message over dialback', isBody('dialback works'))).attrs.from, one.jid);
  two.c.send(`<message to='${one.bare}' type='chat'><body>and back</body></message>`);
  t.is((await expect(one, 'the answer over dialback', isBody('and back'))).attrs.from, two.jid);
});

test('a server with secure auth on refuses a peer whose certificate does not validate, and does not use one: remote-server-not-found both ways', async (t) => {
  const one = await newUser(t, lax1.server, 'one');
  const s = await newUser(t, strict.server, 'strict');
  // lax1 reaches strict and offers dialback; strict refuses it.
  t.is((await errorFor(one, s.jid)).condition, 'remote-server-not-found');
  // strict does not accept lax1's certificate for its own stream either.
  const back = await errorFor(s, one.jid);
  t.is(back.condition, 'remote-server-not-found');
  t.is(back.from, one.jid);
});

test('a domain whose server is not there: remote-server-not-found; one that never answers: remote-server-timeout', async (t) => {
  const one = await newUser(t, lax1.server, 'one');
  t.is((await errorFor(one, 'someone@absent.example')).condition, 'remote-server-not-found');
  // Within XMPP_S2S_CONNECT_TIMEOUT_MS (1.5 s here), not held for ever.
  t.is((await errorFor(one, 'someone@silent.example')).condition, 'remote-server-timeout');
  // Tried again later, not at once: meanwhile a stanza gets its answer straight away.
  t.is((await errorFor(one, 'someone@absent.example/x')).condition, 'remote-server-not-found');
});

test('a peer that goes away: its streams close, and what is sent to it next gets an error', async (t) => {
  const f = await federation(
    [
      { domain: 'stay.example', cert: selfSigned(pki, 'stay.example') },
      { domain: 'leave.example', cert: selfSigned(pki, 'leave.example') },
    ],
    { env: { XMPP_S2S_SECURE_AUTH: 'false' } },
  );
  t.teardown(() => f.stop());
  const [stay, leave] = f.servers;
  const a = await newUser(t, stay.server, 'a');
  const b = await newUser(t, leave.server, 'b');
  a.c.send(`<message to='${b.jid}' type='chat'><body>before</body></message>`);
  await expect(b, 'the first message', isBody('before'));
  await leave.server.stop();
  t.is((await errorFor(a, b.jid)).condition, 'remote-server-not-found');
});

test('two servers verifying each other at once (both streams opened together) do not wait on each other', async (t) => {
  const f = await federation(
    [
      { domain: 'east.example', cert: selfSigned(pki, 'east.example') },
      { domain: 'west.example', cert: selfSigned(pki, 'west.example') },
    ],
    // A verification that waited on the other's would take this long, and fail.
    { env: { XMPP_S2S_SECURE_AUTH: 'false', XMPP_S2S_CONNECT_TIMEOUT_MS: '20000' } },
  );
  t.teardown(() => f.stop());
  const [east, west] = f.servers;
  const e = await newUser(t, east.server, 'e');
  const w = await newUser(t, west.server, 'w');
  e.c.send(`<message to='${w.jid}' type='chat'><body>from east</body></message>`);
  w.c.send(`<message to='${e.jid}' type='chat'><body>from west</body></message>`);
  // Within the expectation's bound (10 s), shorter than a verification that waited on the other's.
  await Promise.all([expect(w, "east's message", isBody('from east')), expect(e, "west's message", isBody('from west'))]);
  t.pass();
});

test("a graceful shutdown: remote subscribers get every session's unavailable, from every worker, before the streams to them close", async (t) => {
  const f = await federation(
    [
      { domain: 'going.example', cert: selfSigned(pki, 'going.example') },
      { domain: 'staying.example', cert: selfSigned(pki, 'staying.example') },
    ],
    { env: { XMPP_S2S_SECURE_AUTH: 'false' } },
  );
  t.teardown(() => f.stop());
  const [going, staying] = f.servers;
  const watcher = await newUser(t, staying.server, 'watcher');
  // Sessions spread over the going server's two workers: some of their
  // presence leaves through the other worker's stream.
  const users = await Promise.all(Array.from({ length: 4 }, () => newUser(t, going.server, 'leaver')));
  for (const u of users) {
    const wf = watcher.c.items.length;
    watcher.c.send(`<presence to='${u.bare}' type='subscribe'/>`);
    await expect(u, 'the request', isPresence(watcher.bare, 'subscribe'));
    u.c.send(`<presence to='${watcher.bare}' type='subscribed'/>`);
    await expect(watcher, "the user's presence after approving", isPresence(u.jid), wf);
  }
  const from = watcher.c.items.length;
  await going.server.stop();
  for (const u of users) await expect(watcher, `${u.jid} unavailable at shutdown`, isPresence(u.jid, 'unavailable'), from);
  t.pass();
});
