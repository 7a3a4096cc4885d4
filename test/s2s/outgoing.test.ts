// The initiating side against peers that misbehave, played by a scripted
// fake server on its own loopback address: one that offers no STARTTLS,
// one that refuses our dialback key, one that ends the stream with an
// error, and one that authenticates us and then stops reading. Each time
// the sender gets an error within the bounds, and the server goes on.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testCa, issue } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { stanzaError, within } from '../helpers/protocol.ts';
import { expect, isBody, newUser } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';

const dir = mkdtempSync(join(tmpdir(), 'xmpp-s2s-out-'));
const ca = testCa(dir, 'out-ca');
const FAKES = ['notls', 'refuses', 'errors', 'deaf', 'liar', 'quiet', 'stall'] as const;
const fakeCert = issue(dir, ca, 'fake', { dns: FAKES.map((k) => `${k}.example`) });
const [ourAddr, ...fakeAddrs] = loopbackAddresses(FAKES.length + 1);
/** What the quiet peer received on its secured stream, and a wake-up for whoever waits on it. */
let quietGot = '';
let quietChanged: (() => void) | undefined;
/** What the liar received: it must never see a stanza. */
let liarGot = '';
type Fake = (typeof FAKES)[number];
let ours: Federated;
let stop: () => Promise<void>;
const servers: net.Server[] = [];
/** What the deaf peer received before it stopped reading: its sockets, to be released at the end. */
const deafSockets: net.Socket[] = [];

const header = (from: string, id: string) =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='${from}' to='ours.example' id='${id}' version='1.0'>`;

/** A fake peer for `domain`, behaving as `kind` says once our stream opens. */
function fakePeer(kind: Fake, domain: string, socket: net.Socket): void {
  let buffer = '';
  let sock: net.Socket = socket;
  const on = (s: net.Socket) =>
    s.on('data', (d: Buffer) => {
      if (kind === 'liar') liarGot += d.toString();
      if (kind === 'quiet' && phase >= 4) {
        quietGot += d.toString();
        quietChanged?.();
      }
      buffer += d.toString();
      step();
    });
  let phase = 0;
  const step = () => {
    if (phase === 0 && /<stream:stream[^>]*>/.test(buffer)) {
      phase = 1;
      buffer = '';
      if (kind === 'notls') return sock.write(`${header(domain, 'n1')}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>`);
      if (kind === 'errors') return sock.write(`${header(domain, 'e1')}<stream:error><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
      // liar: a SASL success and a dialback "valid" nobody asked for, before any TLS.
      if (kind === 'liar') return sock.write(`${header(domain, 'l1')}<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><db:result from='${domain}' to='ours.example' type='valid'/><stream:features/>`);
      sock.write(`${header(domain, 's1')}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`);
    } else if (phase === 1 && buffer.includes('<starttls')) {
      phase = 2;
      buffer = '';
      sock.removeAllListeners('data');
      sock.write(`<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, () => {
        const t = new tls.TLSSocket(sock, { isServer: true, cert: readFileSync(fakeCert.cert), key: readFileSync(fakeCert.key) });
        t.on('error', () => {});
        sock = t;
        on(t);
      });
    } else if (phase === 2 && /<stream:stream[^>]*>/.test(buffer)) {
      phase = 3;
      buffer = '';
      sock.write(`${header(domain, 's2')}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>`);
    } else if (phase === 3 && /<db:result[^>]*>[^<]*<\/db:result>/.test(buffer)) {
      phase = 4;
      buffer = '';
      if (kind === 'refuses') return sock.write(`<db:result from='${domain}' to='ours.example' type='invalid'/>`);
      // stall: never answers the key; the stream is never authenticated.
      if (kind === 'stall') return;
      // quiet: a good peer that reads everything.
      if (kind === 'quiet') return sock.write(`<db:result from='${domain}' to='ours.example' type='valid'/>`);
      // deaf: says the key is valid, then reads nothing more.
      sock.write(`<db:result from='${domain}' to='ours.example' type='valid'/>`);
      sock.pause();
      deafSockets.push(sock);
    }
  };
  on(sock);
}

test.before(async () => {
  for (const [i, kind] of FAKES.entries()) {
    const srv = net.createServer((s) => {
      s.on('error', () => {});
      fakePeer(kind, `${kind}.example`, s);
    });
    srv.listen(5269, fakeAddrs[i]);
    await once(srv, 'listening');
    servers.push(srv);
  }
  const f = await federation([{ domain: 'ours.example', cert: issue(dir, ca, 'ours.example', { dns: ['ours.example'] }) }], {
    addresses: [ourAddr],
    env: { XMPP_TLS_CA: ca.cert, XMPP_MAX_OUTBOUND_BYTES: '131072', XMPP_S2S_CONNECT_TIMEOUT_MS: '3000', XMPP_S2S_IDLE_TIMEOUT_MS: '1000' },
    extra: Object.fromEntries(FAKES.map((k, i) => [`${k}.example`, `${fakeAddrs[i]}:5269`])),
  });
  [ours] = f.servers;
  stop = f.stop;
});
test.after.always(async () => {
  for (const s of deafSockets) s.destroy();
  for (const s of servers) s.close();
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

async function bounced(t: ExecutionContext, p: Peer, to: string): Promise<string | undefined> {
  const id = `b${Math.random().toString(36).slice(2)}`;
  const from = p.c.items.length;
  p.c.send(`<message to='${to}' id='${id}' type='chat'><body>x</body></message>`);
  const err = await expect(p, `the error for ${to}`, (el) => el.attrs.id === id && el.attrs.type === 'error', from);
  t.is(err.attrs.from, to);
  return stanzaError(err).condition;
}

test('a peer that offers no STARTTLS is not used: remote-server-not-found', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  t.is(await bounced(t, me, 'x@notls.example'), 'remote-server-not-found');
});

test('a peer that refuses our dialback key: remote-server-not-found', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  t.is(await bounced(t, me, 'x@refuses.example'), 'remote-server-not-found');
});

test('a peer that answers with a stream error: remote-server-not-found', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  t.is(await bounced(t, me, 'x@errors.example'), 'remote-server-not-found');
});

test('a peer that stops reading is a slow reader: the stream is dropped, what it did not take bounces, and the server goes on', async (t) => {
  // Many senders, so that the bounces each one gets stay within its own
  // bound while together they send far more than XMPP_MAX_OUTBOUND_BYTES
  // (128 KiB here) plus what the kernel buffers.
  const senders = await Promise.all(Array.from({ length: 30 }, () => newUser(t, ours.server, 'me')));
  const other = await newUser(t, ours.server, 'other');
  const body = 'y'.repeat(4096);
  const marks = senders.map((p) => p.c.items.length);
  for (const [n, p] of senders.entries()) for (let i = 0; i < 20; i++) p.c.send(`<message to='x@deaf.example' id='d${n}-${i}' type='chat'><body>${body}</body></message>`);
  const bounces = await Promise.all(senders.map((p, n) => expect(p, 'a bounce for what the deaf peer did not take', (el) => el.attrs.type === 'error' && (el.attrs.id ?? '').startsWith(`d${n}-`), marks[n], 30_000).catch(() => undefined)));
  const got = bounces.filter((b) => b !== undefined);
  t.true(got.length > 0, 'what the peer did not read came back');
  for (const b of got) t.is(stanzaError(b!).condition, 'remote-server-not-found');
  // The server still serves its users.
  senders[0].c.send(`<message to='${other.jid}' type='chat'><body>still here</body></message>`);
  await expect(other, 'a local message after the slow peer', isBody('still here'));
});

test('answers nobody asked for (a SASL success, a dialback result before TLS) authenticate nothing: no stanza goes to that peer', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  t.is(await bounced(t, me, 'x@liar.example'), 'remote-server-not-found');
  t.notRegex(liarGot, /<message/);
});

test('an outgoing stream that carried nothing for XMPP_S2S_IDLE_TIMEOUT_MS is closed', async (t) => {
  const me = await newUser(t, ours.server, 'me');
  me.c.send(`<message to='x@quiet.example' type='chat'><body>one message</body></message>`);
  // The peer reads the message, then our closing tag once the stream has been idle (1 s here).
  await within(
    new Promise<void>((resolve) => {
      const check = () => {
        if (/<body>one message<\/body>[\s\S]*<\/stream:stream>/.test(quietGot)) resolve();
      };
      quietChanged = check;
      check();
    }),
    10_000,
    'the message, then the closing tag of an idle stream',
  );
  t.pass();
});

test('while a stream is being set up, at most XMPP_S2S_MAX_QUEUE stanzas wait (the rest get resource-constraint); when it never authenticates, they get remote-server-timeout', async (t) => {
  // A server of its own (the same domain, another address) with a queue of 5.
  const f = await federation([{ domain: 'ours.example', cert: issue(dir, ca, 'ours-q.example', { dns: ['ours.example'] }) }], {
    env: { XMPP_TLS_CA: ca.cert, XMPP_S2S_CONNECT_TIMEOUT_MS: '3000', XMPP_S2S_MAX_QUEUE: '5' },
    extra: { 'stall.example': `${fakeAddrs[FAKES.indexOf('stall')]}:5269` },
  });
  t.teardown(() => f.stop());
  const me = await newUser(t, f.servers[0].server, 'me');
  const from = me.c.items.length;
  for (let i = 0; i < 8; i++) me.c.send(`<message to='x@stall.example' id='q${i}' type='chat'><body>${i}</body></message>`);
  const errors = await Promise.all(Array.from({ length: 8 }, (_, i) => expect(me, `the error for message ${i}`, (el) => el.attrs.id === `q${i}` && el.attrs.type === 'error', from, 15_000)));
  const conditions = errors.map((e) => stanzaError(e).condition);
  t.deepEqual(conditions.filter((c) => c === 'resource-constraint').length, 3, conditions.join(' '));
  t.deepEqual(conditions.filter((c) => c === 'remote-server-timeout').length, 5, conditions.join(' '));
});
