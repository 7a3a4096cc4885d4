// Abuse that costs the server without guessing passwords (issue 20,
// hardening): in-band registrations in a loop (XEP-0077), TLS
// renegotiation, TLS records of a byte, connections opened in a loop. Each
// is refused or ends its connection, logged and counted; the sessions
// already established are unaffected.
//
// Every 127/8 address is the loopback on Linux: the abuse comes from
// 127.0.0.2; 127.0.0.1 (the bystanders) is exempt from per-address limits
// by default (XMPP_PER_IP_EXEMPT).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { startWithBystanders } from '../helpers/server.ts';
import { secured, within, othersUnaffected, stanzaError, online, until, expectStreamError, readStreamStart } from '../helpers/protocol.ts';
import { RawClient, header } from '../helpers/raw.ts';

const WAIT = 20_000;
const onLinux = process.platform === 'linux' ? test : test.skip;

/** Sends a registration on `c` (XEP-0077 §3.1); the reply. */
async function register(c: RawClient, username: string): Promise<{ type: string | undefined; condition?: string; errorType?: string }> {
  const id = `reg-${username}`;
  const r = await within(c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><username>${username}</username><password>${username}-pw</password></query></iq>`, id), WAIT, `registering ${username}`);
  const e = stanzaError(r);
  return { type: r.attrs.type, condition: e.condition, errorType: e.type };
}

async function stream(t: ExecutionContext, port: number, from: string): Promise<RawClient> {
  const { c } = await within(secured(port, undefined, undefined, from), WAIT, `a secured stream from ${from}`);
  t.teardown(() => c.destroy());
  return c;
}

onLinux('in-band registration: one account per stream (not-allowed), XMPP_REGISTRATION_RATE per address (policy-violation, wait); the exempt address and bystanders unaffected', async (t) => {
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_REGISTRATION: 'true', XMPP_REGISTRATION_RATE: '2/3600', XMPP_LOG_LEVEL: 'error' }, []);
  t.teardown(stop);
  const port = server.c2sPort;
  const first = await stream(t, port, '127.0.0.2');
  t.like(await register(first, 'reg1'), { type: 'result' });
  t.like(await register(first, 'reg2'), { type: 'error', condition: 'not-allowed' }, 'a second account on the same stream');
  const second = await stream(t, port, '127.0.0.2');
  t.like(await register(second, 'reg3'), { type: 'result' }, 'the second of the burst of 2');
  const third = await stream(t, port, '127.0.0.2');
  t.like(await register(third, 'reg4'), { type: 'error', condition: 'policy-violation', errorType: 'wait' }, 'past the rate');
  // 127.0.0.1 is exempt (as Prosody's registration_allowlist has it by default).
  const exempt = await stream(t, port, '127.0.0.1');
  t.like(await register(exempt, 'reg5'), { type: 'result' });
  // What was registered works; what was refused does not exist.
  for (const u of ['reg1', 'reg3', 'reg5']) (await online(port, u, `${u}-pw`)).c.destroy();
  await t.throwsAsync(online(port, 'reg4', 'reg4-pw'));
  await t.throwsAsync(online(port, 'reg2', 'reg2-pw'));
  t.like(server.stats().guard, { registrations: 3, registrationsRefused: 1 });
  await othersUnaffected(t, watcher, talker);
});

/** Connects with TLS 1.2 (which has renegotiation) to a direct-TLS port, opens a stream, and asks to renegotiate: the outcome. */
async function renegotiate(t: ExecutionContext, port: number, streamHeader: string): Promise<'renegotiated' | 'refused'> {
  const sock = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, servername: 'localhost', maxVersion: 'TLSv1.2' });
  t.teardown(() => sock.destroy());
  sock.on('error', () => {});
  await within(once(sock, 'secureConnect'), WAIT, 'the TLS handshake');
  sock.write(streamHeader);
  await within(once(sock, 'data'), WAIT, 'the stream header');
  return within(
    new Promise((resolve) => {
      const asked = sock.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err ? 'refused' : 'renegotiated'));
      if (!asked) resolve('refused');
      sock.once('close', () => resolve('refused'));
    }),
    WAIT,
    'the renegotiation',
  );
}

test('TLS renegotiation asked by a client is refused on client and server-to-server ports, and the server goes on', async (t) => {
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_S2S: 'true', XMPP_S2S_TLS_PORT: '0', XMPP_LOG_LEVEL: 'error' }, ['alice']);
  t.teardown(stop);
  t.is(await renegotiate(t, server.tlsPort, header()), 'refused', 'client port');
  t.is(await renegotiate(t, server.s2sTlsPort!, `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' from='peer.example' version='1.0'>`), 'refused', 'server-to-server port');
  // New logins work, over direct TLS too.
  (await online(server.c2sPort, 'alice', 'alice-pw')).c.destroy();
  const direct = await RawClient.connect(server.tlsPort, { directTls: true });
  t.teardown(() => direct.destroy());
  direct.send(header());
  await within(readStreamStart(direct), WAIT, 'a direct TLS stream');
  await othersUnaffected(t, watcher, talker);
});

test('TLS records of one byte past XMPP_MAX_READS_PER_SECOND end the stream with policy-violation, counted; bystanders unaffected', async (t) => {
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_MAX_READS_PER_SECOND: '300', XMPP_LOG_LEVEL: 'error' }, ['alice']);
  t.teardown(stop);
  const c = await RawClient.connect(server.tlsPort, { directTls: true });
  t.teardown(() => c.destroy());
  c.send(header());
  await within(readStreamStart(c), WAIT, 'the stream');
  // Whitespace between elements is allowed (RFC 6120 §4.6.1): each space its own TLS record (one write, awaited, each).
  const sock = (c as unknown as { sock: tls.TLSSocket }).sock;
  let written = 0;
  while (!c.isClosed && written < 20_000) {
    await new Promise<void>((r) => sock.write(' ', () => r()));
    written++;
  }
  await expectStreamError(t, c, 'policy-violation');
  t.true(written > 300, `${written} records written`);
  await until(() => server.stats().guard.readsExceeded === 1, WAIT, 'the disconnect counted');
  await othersUnaffected(t, watcher, talker);
});

onLinux('new connections from one address past XMPP_CONNECTION_RATE_PER_IP are closed before any byte, counted; the exempt address and bystanders unaffected', async (t) => {
  const { server, watcher, talker, stop } = await startWithBystanders({ XMPP_CONNECTION_RATE_PER_IP: '5', XMPP_LOG_LEVEL: 'error' }, []);
  t.teardown(stop);
  const probe = (from: string) =>
    within(
      new Promise<'accepted' | 'refused'>((resolve) => {
        const s = net.connect({ port: server.c2sPort, host: '127.0.0.1', localAddress: from });
        t.teardown(() => s.destroy());
        s.on('error', () => {});
        s.on('connect', () => s.write(header()));
        s.once('data', () => resolve('accepted'));
        s.on('close', () => resolve('refused'));
      }),
      WAIT,
      `a connection from ${from}`,
    );
  const burst = await Promise.all(Array.from({ length: 30 }, () => probe('127.0.0.2')));
  const accepted = burst.filter((o) => o === 'accepted').length;
  // A burst of two seconds' worth (10), and what a second refills meanwhile.
  t.true(accepted >= 10 && accepted < 30, `${accepted} of 30 accepted`);
  t.is(server.stats().refusedRate, 30 - accepted);
  const exempt = await Promise.all(Array.from({ length: 30 }, () => probe('127.0.0.1')));
  t.deepEqual(exempt.filter((o) => o === 'refused'), []);
  await othersUnaffected(t, watcher, talker);
});
