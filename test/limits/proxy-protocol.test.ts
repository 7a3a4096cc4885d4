// A server behind a load balancer that speaks the PROXY protocol
// (XMPP_PROXY_PROTOCOL_FROM): the test is the balancer, at 127.0.0.1,
// writing the header HAProxy's send-proxy-v2 (or send-proxy) writes before
// the client's bytes. The address it names is the client's everywhere: in
// the per-address limits of the acceptor and of the guard, in the log, in
// who may read /metrics. A connection from the balancer without a valid
// header is closed; one from elsewhere needs none.
//
// Every 127/8 address is the loopback on Linux: the connection from an
// address not listed comes from 127.0.0.2.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { LimitedServer } from '../helpers/spawned.ts';
import type { LogLine } from '../helpers/spawned.ts';
import { RawClient, header, plainAuth } from '../helpers/raw.ts';
import { secured, readStreamStart, saslCondition, within } from '../helpers/protocol.ts';
import { get, parseMetrics, total } from '../helpers/metrics.ts';
import { proxyV1, proxyV2, tlv } from '../helpers/proxy.ts';

const WAIT = 20_000;
const onLinux = process.platform === 'linux' ? test : test.skip;

/** The answer to one SASL PLAIN on a secured stream: 'success' or the failure's condition. */
async function plain(c: RawClient, user: string, password: string): Promise<string | undefined> {
  c.send(plainAuth(user, password));
  const el = await within(c.nextEl(), WAIT, `the answer to PLAIN as ${user}`);
  return el.name === 'success' ? 'success' : saslCondition(el);
}

/** A stream secured with STARTTLS, through the "balancer": `prefix` first. */
async function through(t: ExecutionContext, port: number, prefix: Buffer): Promise<RawClient> {
  const { c } = await within(secured(port, undefined, undefined, undefined, prefix), WAIT, 'a secured stream through the balancer');
  t.teardown(() => c.destroy());
  return c;
}

/** Resolves once the connection is closed; fails if the server sent anything on it first. */
async function closedSilently(t: ExecutionContext, c: RawClient, what: string): Promise<void> {
  await within(c.closed, WAIT, what);
  t.is(c.buffer, '', `${what}: nothing sent before the close`);
}

const authenticated = (server: LimitedServer, user: string, from: number) => server.waitForMatch((l) => l.msg === 'authenticated' && l.user === user, from);

onLinux('behind a PROXY protocol balancer: the client it names is the one logged, limited and allowed; no header from it is a closed connection', async (t) => {
  const server = await LimitedServer.start(t, {
    XMPP_PROXY_PROTOCOL_FROM: '127.0.0.1',
    XMPP_AUTH_FAILURES_PER_IP: '2',
    XMPP_AUTH_FAILURES_PER_ACCOUNT: '0',
    XMPP_MAX_CONNECTIONS_PER_IP: '2',
    XMPP_HTTP_PORT: '0',
    XMPP_METRICS: '127.0.0.1',
  });
  await server.addUser('alice', 'alice-pw');
  await server.addUser('bob', 'bob-pw');
  const c2s = server.c2sPort;
  const httpPort = server.logs.find((l) => l.msg === 'listening')!.httpPort as number;

  // A login through the balancer (v2, as send-proxy-v2): the log names the client and its port.
  let mark = server.logs.length;
  const a = await through(t, c2s, proxyV2('192.0.2.8', 40008));
  t.is(await plain(a, 'alice', 'alice-pw'), 'success');
  t.like(await authenticated(server, 'alice', mark), { ip: '192.0.2.8', port: 40008 });

  // Its TLVs (HAProxy's proxy-v2-options) are skipped.
  mark = server.logs.length;
  const withTlvs = await through(t, c2s, proxyV2('192.0.2.12', 12, { tlvs: Buffer.concat([tlv(0x01, 'xmpp-client'), tlv(0x05, 'id-0123')]) }));
  t.is(await plain(withTlvs, 'bob', 'bob-pw'), 'success');
  t.like(await authenticated(server, 'bob', mark), { ip: '192.0.2.12', port: 12 });

  // Direct TLS: the header comes before the TLS handshake.
  mark = server.logs.length;
  const d = await RawClient.connect(server.tlsPort, { directTls: true, prefix: proxyV2('192.0.2.10', 40010) });
  t.teardown(() => d.destroy());
  t.truthy(d.tlsProtocol);
  d.send(header());
  await within(readStreamStart(d), WAIT, 'the direct TLS stream');
  t.is(await plain(d, 'bob', 'bob-pw'), 'success');
  t.like(await authenticated(server, 'bob', mark), { ip: '192.0.2.10', port: 40010 });

  // A peer server's stream through the balancer (the server-to-server port).
  const s2sPort = server.logs.find((l) => l.msg === 'listening')!.s2sPort as number;
  const peer = await RawClient.connect(s2sPort, { prefix: proxyV2('192.0.2.30', 40030) });
  t.teardown(() => peer.destroy());
  await peer.exchange("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='peer.example' to='localhost' version='1.0'>", /<stream:stream\b[^>]*>/);
  peer.destroy();

  // An IPv6 client, and the text version of the header (send-proxy).
  mark = server.logs.length;
  t.is(await plain(await through(t, c2s, proxyV2('2001:db8::5', 5)), 'alice', 'alice-pw'), 'success');
  t.like(await authenticated(server, 'alice', mark), { ip: '2001:db8::5', port: 5 });
  mark = server.logs.length;
  t.is(await plain(await through(t, c2s, proxyV1('192.0.2.11', 40011)), 'alice', 'alice-pw'), 'success');
  t.like(await authenticated(server, 'alice', mark), { ip: '192.0.2.11', port: 40011 });
  // LOCAL (the balancer's own connection, as its health checks are): from the balancer.
  mark = server.logs.length;
  t.is(await plain(await through(t, c2s, proxyV2('', 0, { local: true })), 'alice', 'alice-pw'), 'success');
  t.regex(String((await authenticated(server, 'alice', mark)).ip), /^(::ffff:)?127\.0\.0\.1$/);

  // Failed authentications count for the address named: two from
  // 192.0.2.7 and its next attempt is refused, even with the right
  // password; 192.0.2.8, through the same balancer, is not.
  const guessing = await through(t, c2s, proxyV2('192.0.2.7', 1));
  for (let i = 0; i < 2; i++) t.is(await plain(guessing, 'alice', `guess-${i}`), 'not-authorized');
  guessing.destroy();
  t.like(await server.waitForMatch((l) => l.msg.startsWith('too many failed authentications from one address')), { ip: '192.0.2.7' });
  t.is(await plain(await through(t, c2s, proxyV2('192.0.2.7', 2)), 'alice', 'alice-pw'), 'temporary-auth-failure');
  t.is(await plain(await through(t, c2s, proxyV2('192.0.2.8', 3)), 'alice', 'alice-pw'), 'success');

  // The acceptor's per-address cap counts the address named: a third
  // connection of 192.0.2.20 is closed at once, 192.0.2.21's is served.
  const first = await through(t, c2s, proxyV2('192.0.2.20', 1));
  const second = await through(t, c2s, proxyV2('192.0.2.20', 2));
  const third = await RawClient.connect(c2s, { prefix: proxyV2('192.0.2.20', 3) });
  t.teardown(() => third.destroy());
  third.send(header());
  await closedSilently(t, third, 'the third connection of 192.0.2.20');
  t.like(await server.waitForMatch((l) => l.msg.startsWith('connection refused: too many from one address')), { address: '192.0.2.20' });
  await through(t, c2s, proxyV2('192.0.2.21', 1));
  first.destroy();
  second.destroy();

  // From the balancer without a header (a client reaching the node
  // around it): closed without a word, logged with the balancer's address.
  const bare = await RawClient.connect(c2s);
  t.teardown(() => bare.destroy());
  bare.send(header());
  await closedSilently(t, bare, 'a stream from the balancer without a header');
  const refusal: LogLine = await server.waitForMatch((l) => l.msg.startsWith('connection closed: no valid PROXY protocol header'));
  t.like(refusal, { level: 'warn', balancer: '127.0.0.1' });
  t.regex(String(refusal.err), /not a PROXY protocol header/);
  // Direct TLS without a header: its ClientHello is no header either.
  await t.throwsAsync(RawClient.connect(server.tlsPort, { directTls: true }));

  // From elsewhere, no header is expected.
  const other = await RawClient.connect(c2s, { localAddress: '127.0.0.2' });
  t.teardown(() => other.destroy());
  other.send(header());
  await within(readStreamStart(other), WAIT, 'a stream from 127.0.0.2');

  // The HTTP listener: /metrics for 127.0.0.1 (XMPP_METRICS) through the
  // balancer, not for another client of it. The refusals are counted.
  t.is((await get(httpPort, '/metrics', { prefix: proxyV2('192.0.2.9', 9) })).status, 403);
  const metrics = await get(httpPort, '/metrics', { prefix: proxyV2('127.0.0.1', 9) });
  t.is(metrics.status, 200);
  const samples = parseMetrics(metrics.body);
  t.is(total(samples, 'xmpp_connections_refused_total', { reason: 'proxy_header' }), 2, 'the stream and the direct TLS connection without a header');
  t.is(total(samples, 'xmpp_connections_refused_total', { reason: 'per_ip' }), 1);
  t.is(total(samples, 'xmpp_auth_throttle_total', { event: 'refused_ip' }), 1);
  // Without a header, from the balancer: closed, not answered.
  await t.throwsAsync(get(httpPort, '/healthz'));
});

onLinux('a header cut short, or none within the bound: the connection is closed', async (t) => {
  const server = await LimitedServer.start(t, { XMPP_PROXY_PROTOCOL_FROM: '127.0.0.0/8' });
  const cut = await RawClient.connect(server.c2sPort, { prefix: proxyV2('192.0.2.7', 1).subarray(0, 20) });
  t.teardown(() => cut.destroy());
  cut.end();
  await closedSilently(t, cut, 'a connection whose header was cut short');
  t.regex(String((await server.waitForMatch((l) => l.msg.startsWith('connection closed: no valid PROXY protocol header'))).err), /closed before its PROXY header was whole/);
  // Nothing at all: closed after the bound (5 s; its log line is summed up with the first's later).
  const silent = await RawClient.connect(server.c2sPort, { localAddress: '127.0.0.2' });
  t.teardown(() => silent.destroy());
  const t0 = performance.now();
  await closedSilently(t, silent, 'a connection that sends nothing');
  t.true(performance.now() - t0 >= 4900, 'not before the bound');
});
