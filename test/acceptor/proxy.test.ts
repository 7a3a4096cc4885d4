// The PROXY protocol header (acceptor/proxy.ts) on its own: parsing both
// versions, refusing what is not one, and reading one from a real socket
// without taking a byte of what follows it. What a server does with it is
// tested over sockets in test/limits/proxy-protocol.test.ts.
import test from 'ava';
import net from 'node:net';
import { once } from 'node:events';
import { MessageChannel } from 'node:worker_threads';
import { parseProxyHeader, proxyHeaderMissing, readProxyHeader, ProxyHeaderError, V1_MAX_BYTES, V2_MAX_BYTES, V2_SIGNATURE } from '../../src/acceptor/proxy.ts';
import { proxyV1, proxyV2, tlv } from '../helpers/proxy.ts';

/**
 * Feeds `bytes` as the acceptor reads them, exactly as many at a time as
 * proxyHeaderMissing asks: how many it took (the header's length), and what
 * it parsed; throws what the parser throws.
 */
function feed(bytes: Buffer): { taken: number; from: ReturnType<typeof parseProxyHeader> } {
  let taken = 0;
  for (;;) {
    const missing = proxyHeaderMissing(bytes.subarray(0, taken));
    if (missing === 0) return { taken, from: parseProxyHeader(bytes.subarray(0, taken)) };
    if (taken + missing > bytes.length) throw new Error(`asked for ${missing} more bytes past the ${bytes.length} there are`);
    taken += missing;
  }
}

const after = Buffer.from("<?xml version='1.0'?><stream:stream>");

test('v2 over IPv4: the source address and port; nothing after the header is taken', (t) => {
  const h = proxyV2('192.0.2.7', 40001);
  t.is(h.length, 28);
  t.deepEqual(feed(Buffer.concat([h, after])), { taken: 28, from: { address: '192.0.2.7', port: 40001 } });
});

test('v2 over IPv6: the address in its usual short form, IPv4-mapped ones as such', (t) => {
  t.deepEqual(feed(Buffer.concat([proxyV2('2001:db8::5', 443), after])), { taken: 52, from: { address: '2001:db8::5', port: 443 } });
  t.deepEqual(feed(proxyV2('::ffff:192.0.2.8', 1)).from, { address: '::ffff:192.0.2.8', port: 1 });
});

test('v2 TLVs are skipped, however many', (t) => {
  const tlvs = Buffer.concat([tlv(0x01, 'xmpp-client'), tlv(0x05, 'unique-id-0123456789'), tlv(0x20, Buffer.alloc(300, 7))]);
  const h = proxyV2('198.51.100.1', 65535, { tlvs });
  t.deepEqual(feed(Buffer.concat([h, after])), { taken: h.length, from: { address: '198.51.100.1', port: 65535 } });
});

test('v2 LOCAL (the balancer\'s health checks), UNSPEC and UNIX: the connection\'s own endpoints', (t) => {
  t.deepEqual(feed(Buffer.concat([proxyV2('', 0, { local: true }), after])), { taken: 16, from: undefined });
  // LOCAL with addresses: they are ignored.
  const local = proxyV2('192.0.2.7', 1);
  local[12] = 0x20;
  t.is(feed(local).from, undefined);
  const unspec = proxyV2('192.0.2.7', 1);
  unspec[13] = 0x00;
  t.is(feed(unspec).from, undefined);
  const unix = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x31, 0x00, 216]), Buffer.alloc(216)]);
  t.is(feed(unix).from, undefined);
});

test('v1: TCP4, TCP6 and UNKNOWN; read two bytes at a time at most near its end, never past it', (t) => {
  const four = proxyV1('192.0.2.7', 40001);
  t.deepEqual(feed(Buffer.concat([four, after])), { taken: four.length, from: { address: '192.0.2.7', port: 40001 } });
  const six = proxyV1('2001:db8:0:0:0:0:0:5', 5);
  t.deepEqual(feed(Buffer.concat([six, after])), { taken: six.length, from: { address: '2001:db8::5', port: 5 } });
  t.deepEqual(feed(Buffer.from('PROXY UNKNOWN\r\n<')), { taken: 15, from: undefined });
  const unknown = Buffer.from('PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n');
  t.deepEqual(feed(Buffer.concat([unknown, after])), { taken: unknown.length, from: undefined });
  // The longest line there may be (§2.1's example).
  const longest = Buffer.from(`PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`);
  t.is(longest.length, V1_MAX_BYTES);
  t.deepEqual(feed(longest), { taken: V1_MAX_BYTES, from: undefined });
});

const refused = (t: import('ava').ExecutionContext, bytes: Buffer, message: RegExp) => t.throws(() => feed(bytes), { instanceOf: ProxyHeaderError, message });

test('not a header: refused at the first byte that says so', (t) => {
  refused(t, after, /not a PROXY protocol header/);
  refused(t, Buffer.from('GET / HTTP/1.1\r\n\r\n'), /not a PROXY protocol header/);
  // A TLS ClientHello (direct TLS without the header).
  refused(t, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0]), /not a PROXY protocol header/);
  t.throws(() => proxyHeaderMissing(Buffer.from('PROXZ')), { instanceOf: ProxyHeaderError });
  t.throws(() => proxyHeaderMissing(Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x55])), { instanceOf: ProxyHeaderError });
});

test('v2 malformed: version, command, family, protocol, too short for its addresses, too long', (t) => {
  const h = () => proxyV2('192.0.2.7', 1);
  const v1 = h();
  v1[12] = 0x11;
  t.throws(() => proxyHeaderMissing(v1.subarray(0, 13)), { instanceOf: ProxyHeaderError, message: /version 1/ });
  const cmd = h();
  cmd[12] = 0x22;
  refused(t, cmd, /unknown command 2/);
  const fam = h();
  fam[13] = 0x41;
  refused(t, fam, /unknown address family/);
  const proto = h();
  proto[13] = 0x13;
  refused(t, proto, /unknown address family or protocol/);
  const short = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x21, 0x00, 12]), Buffer.alloc(12)]);
  refused(t, short, /too few for its addresses/);
  const long = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]);
  t.throws(() => proxyHeaderMissing(long), { instanceOf: ProxyHeaderError, message: new RegExp(`more than ${V2_MAX_BYTES}`) });
});

test('v1 malformed: protocol, addresses, ports, CR without LF, no CRLF within 107 bytes', (t) => {
  refused(t, Buffer.from('PROXY UDP4 192.0.2.7 127.0.0.1 1 2\r\n'), /not TCP4, TCP6 or UNKNOWN/);
  refused(t, Buffer.from('PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n'), /not TCP4, TCP6 or UNKNOWN/);
  refused(t, Buffer.from('PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n'), /not IPv4/);
  refused(t, Buffer.from('PROXY TCP6 192.0.2.7 ::1 1 2\r\n'), /not IPv6/);
  refused(t, Buffer.from('PROXY TCP4 192.0.2.7 127.0.0.1 65536 2\r\n'), /ports/);
  refused(t, Buffer.from('PROXY TCP4 192.0.2.7 127.0.0.1 01 2\r\n'), /ports/);
  refused(t, Buffer.from('PROXY TCP4 192.0.2.7 127.0.0.1  1 2\r\n'), /not TCP4/);
  refused(t, Buffer.from('PROXY TCP4 192.0.2.7\r127.0.0.1 1 2\r\n'), /CR not followed by LF/);
  refused(t, Buffer.from(`PROXY UNKNOWN ${'x'.repeat(200)}\r\n`), /without CRLF in 107 bytes/);
});

test('truncated: a header cut short is never taken as whole', (t) => {
  for (const whole of [proxyV2('192.0.2.7', 1), proxyV2('2001:db8::5', 1, { tlvs: tlv(1, 'h2') }), proxyV1('192.0.2.7', 1)]) {
    for (let n = 0; n < whole.length; n++) {
      t.true(proxyHeaderMissing(whole.subarray(0, n)) > 0, `${n} of ${whole.length} bytes`);
      t.throws(() => parseProxyHeader(whole.subarray(0, n)), { instanceOf: ProxyHeaderError, message: /cut short/ });
    }
  }
});

/**
 * Hands the socket on as the acceptor hands it to a worker (transferred
 * through a message port), and reads what arrives at the receiving end
 * until `after` is whole.
 */
async function rest(t: import('ava').ExecutionContext, socket: net.Socket): Promise<string> {
  const { port1, port2 } = new MessageChannel();
  t.teardown(() => {
    port1.close();
    port2.close();
  });
  port1.postMessage(socket, [socket as never]);
  const [received] = (await once(port2, 'message')) as [net.Socket];
  t.teardown(() => received.destroy());
  received.resume();
  let text = '';
  while (text.length < after.length) text += ((await once(received, 'data')) as [Buffer])[0].toString();
  return text;
}

/** A connection to a listener that reads a PROXY header the acceptor's way; resolves with the server's end and what the client side is. */
async function pair(t: import('ava').ExecutionContext, timeoutMs = 5000) {
  const accepted: net.Socket[] = [];
  const waiting: ((s: net.Socket) => void)[] = [];
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    const w = waiting.shift();
    if (w) w(s);
    else accepted.push(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => client.destroy());
  // Closed by the reader at once (a reset, with bytes unread).
  client.on('error', () => {});
  await once(client, 'connect');
  const socket = accepted.shift() ?? (await new Promise<net.Socket>((r) => waiting.push(r)));
  return { client, reading: readProxyHeader(socket, timeoutMs) };
}

test('read from a socket: the header in the same segment as what follows; that is left to read, and the socket can be handed to a worker', async (t) => {
  const { client, reading } = await pair(t);
  client.write(Buffer.concat([proxyV2('192.0.2.7', 40001), after]));
  const { socket, from } = await reading;
  t.deepEqual(from, { address: '192.0.2.7', port: 40001 });
  t.is(socket.readableLength, 0);
  t.is(await rest(t, socket), after.toString());
});

test('read from a socket: v1 sent a byte at a time', async (t) => {
  const { client, reading } = await pair(t);
  client.setNoDelay(true);
  const bytes = Buffer.concat([proxyV1('192.0.2.9', 9), after]);
  for (const b of bytes) await new Promise<void>((r) => client.write(Buffer.from([b]), () => r()));
  const { socket, from } = await reading;
  t.deepEqual(from, { address: '192.0.2.9', port: 9 });
  t.is(await rest(t, socket), after.toString());
});

const closed = (s: net.Socket) => new Promise((r) => s.once('close', r));

test('read from a socket: no header, a cut one, or none in time: refused, the connection closed', async (t) => {
  const bad = await pair(t);
  bad.client.write(after);
  await t.throwsAsync(bad.reading, { instanceOf: ProxyHeaderError, message: /not a PROXY protocol header/ });
  await closed(bad.client);

  const cut = await pair(t);
  cut.client.end(proxyV2('192.0.2.7', 1).subarray(0, 20));
  await t.throwsAsync(cut.reading, { instanceOf: ProxyHeaderError, message: /closed before its PROXY header was whole/ });

  const silent = await pair(t, 200);
  await t.throwsAsync(silent.reading, { instanceOf: ProxyHeaderError, message: /no PROXY header within 200 ms/ });
  await closed(silent.client);
});
