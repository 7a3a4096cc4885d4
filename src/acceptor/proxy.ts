// The PROXY protocol (HAProxy's `send-proxy`, `send-proxy-v2`): a load
// balancer that passes TCP through writes, before the connection's first
// byte of its own, a header saying whom the connection is from. The
// acceptor reads it from the balancers of XMPP_PROXY_PROTOCOL_FROM, a byte
// count at a time that never goes past the header's end (the bytes after it,
// a stream header or a TLS ClientHello, are left in the socket for the
// worker that serves the connection).
//
// Specification: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
// (§2.1 the human-readable header, version 1; §2.2 the binary one, version 2).
import net, { SocketAddress, isIPv4, isIPv6 } from 'node:net';

/** §2.2: the twelve bytes every version 2 header begins with. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** §2.1: a version 1 line is at most 107 bytes, its CRLF included. */
export const V1_MAX_BYTES = 107;
/**
 * A version 2 header's bound here, its TLVs included. The format allows
 * 16 + 65535; addresses take at most 216 bytes and HAProxy's TLVs (SSL
 * details, unique id, authority) a few hundred more.
 */
export const V2_MAX_BYTES = 4096;
/** How long a load balancer has to send the whole header: it sends it as it connects. */
export const PROXY_HEADER_TIMEOUT_MS = 5000;
/** The shortest header of either version: "PROXY UNKNOWN\r\n". */
const SHORTEST = 15;

export class ProxyHeaderError extends Error {
  override name = 'ProxyHeaderError';
}

/** Whom the header says the connection is from. */
export interface ProxiedFrom {
  address: string;
  port: number;
}

/**
 * How many more bytes the header that `head` begins needs; 0 once it is
 * whole. Never more than the header has left, so that reading exactly this
 * many leaves the connection's own bytes unread. Throws ProxyHeaderError as
 * soon as `head` cannot begin a valid header.
 */
export function proxyHeaderMissing(head: Buffer): number {
  if (head.length === 0) return SHORTEST;
  if (head[0] === V2_SIGNATURE[0]) {
    const n = Math.min(head.length, V2_SIGNATURE.length);
    if (!head.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) throw new ProxyHeaderError('not a PROXY protocol header');
    if (head.length > 12) versionAndCommand(head[12]);
    if (head.length < 16) return 16 - head.length;
    const total = 16 + head.readUInt16BE(14);
    if (total > V2_MAX_BYTES) throw new ProxyHeaderError(`PROXY v2 header of ${total} bytes, more than ${V2_MAX_BYTES}`);
    return total - head.length;
  }
  const n = Math.min(head.length, V1_PREFIX.length);
  if (!head.subarray(0, n).equals(V1_PREFIX.subarray(0, n))) throw new ProxyHeaderError('not a PROXY protocol header');
  const cr = head.indexOf(0x0d);
  if (cr >= 0 && cr < head.length - 1) {
    if (head[cr + 1] !== 0x0a || cr + 2 !== head.length) throw new ProxyHeaderError('PROXY v1 header: CR not followed by LF at its end');
    return 0;
  }
  if (head.length >= V1_MAX_BYTES) throw new ProxyHeaderError(`PROXY v1 header without CRLF in ${V1_MAX_BYTES} bytes`);
  // The line ends with CRLF: two more bytes are never too many, one after a CR.
  return cr === head.length - 1 ? 1 : 2;
}

/** §2.2: the 13th byte, version (high nibble, 2) and command (low: 0 LOCAL, 1 PROXY). */
function versionAndCommand(b: number): 'local' | 'proxy' {
  if (b >> 4 !== 2) throw new ProxyHeaderError(`PROXY v2 header of version ${b >> 4}`);
  const command = b & 0x0f;
  // "The receiver must drop connections presenting unexpected values here."
  if (command > 1) throw new ProxyHeaderError(`PROXY v2 header with unknown command ${command}`);
  return command === 0 ? 'local' : 'proxy';
}

/**
 * The whole header parsed: whom the connection is from, or undefined when
 * the header says to use the connection's own endpoints (a connection of
 * the balancer itself: v2 LOCAL, as its health checks send; v1 UNKNOWN; an
 * address family other than IPv4 and IPv6). TLVs are skipped.
 */
export function parseProxyHeader(header: Buffer): ProxiedFrom | undefined {
  const missing = proxyHeaderMissing(header);
  if (missing !== 0) throw new ProxyHeaderError(missing > 0 ? 'PROXY header cut short' : 'bytes after the PROXY header');
  return header[0] === V2_SIGNATURE[0] ? parseV2(header) : parseV1(header.toString('latin1', V1_PREFIX.length, header.length - 2));
}

function parseV1(line: string): ProxiedFrom | undefined {
  const fields = line.split(' ');
  // §2.1: with UNKNOWN, the rest of the line is to be ignored and the real endpoints used.
  if (fields[0] === 'UNKNOWN') return undefined;
  if (fields.length !== 5 || (fields[0] !== 'TCP4' && fields[0] !== 'TCP6')) throw new ProxyHeaderError('PROXY v1 header: not TCP4, TCP6 or UNKNOWN with two addresses and two ports');
  const [proto, src, dst, sport, dport] = fields;
  const valid = proto === 'TCP4' ? isIPv4 : isIPv6;
  if (!valid(src) || !valid(dst)) throw new ProxyHeaderError(`PROXY v1 header: addresses not ${proto === 'TCP4' ? 'IPv4' : 'IPv6'}`);
  const port = (p: string) => (/^(0|[1-9]\d{0,4})$/.test(p) && Number(p) <= 65535 ? Number(p) : NaN);
  if (Number.isNaN(port(sport)) || Number.isNaN(port(dport))) throw new ProxyHeaderError('PROXY v1 header: ports not 0 to 65535');
  return { address: new SocketAddress({ address: src, family: proto === 'TCP4' ? 'ipv4' : 'ipv6' }).address, port: port(sport) };
}

function parseV2(h: Buffer): ProxiedFrom | undefined {
  const command = versionAndCommand(h[12]);
  const len = h.readUInt16BE(14);
  const family = h[13] >> 4;
  const transport = h[13] & 0x0f;
  if (family > 3 || transport > 2) throw new ProxyHeaderError(`PROXY v2 header with unknown address family or protocol 0x${h[13].toString(16)}`);
  // LOCAL: "the receiver must accept this connection as valid and must use the real connection endpoints".
  // UNSPEC and UNIX: no address of the client's that a per-address limit could count.
  if (command === 'local' || family === 0 || family === 3) return undefined;
  const size = family === 1 ? 4 : 16;
  if (len < 2 * size + 4) throw new ProxyHeaderError(`PROXY v2 header: ${len} bytes after the prefix, too few for its addresses`);
  const src = h.subarray(16, 16 + size);
  const address = family === 1 ? [...src].join('.') : new SocketAddress({ address: [...Array(8).keys()].map((i) => src.readUInt16BE(2 * i).toString(16)).join(':'), family: 'ipv6' }).address;
  return { address, port: h.readUInt16BE(16 + 2 * size) };
}

/** The internal field that holds a Socket's libuv handle (as worker/socket.ts uses it). */
type WithHandle = { _handle: object | null };

/**
 * Reads the PROXY header that begins a connection just accepted (paused,
 * nothing read yet), and resolves with a socket over the same connection in
 * the same state, only the header consumed, and whom the header names. It
 * reads into buffers of exactly the size the header still needs (Socket's
 * `onread` with a buffer made for each read), so that nothing beyond the
 * header leaves the kernel's buffer: the bytes after it are the worker's to
 * read, in the clear or through TLS. Rejects with ProxyHeaderError, the
 * connection closed, when the header is not valid, the connection ends
 * before it is whole, or it is not whole within `timeoutMs`.
 *
 * The socket it resolves with is for handing to a worker (transferred, as
 * the acceptor does), where it gets a handle of its own: in this thread
 * its handle would still read into the reader's buffers.
 */
export function readProxyHeader(accepted: net.Socket, timeoutMs: number): Promise<{ socket: net.Socket; from: ProxiedFrom | undefined }> {
  const shell = accepted as unknown as WithHandle;
  const handle = shell._handle;
  const allowHalfOpen = accepted.allowHalfOpen;
  // The accepted Socket gives its handle up and is done with, as Node's own
  // transfer of a socket to a worker does (its server counts it closed).
  shell._handle = null;
  accepted.destroy();
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    let missing = proxyHeaderMissing(head);
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reader.destroy();
      reject(err);
    };
    const reader = new net.Socket({
      handle,
      allowHalfOpen,
      onread: {
        buffer: () => Buffer.allocUnsafe(Math.max(missing, 1)),
        callback: (n: number, buf: Uint8Array) => {
          if (settled) return false;
          head = Buffer.concat([head, buf.subarray(0, n)]);
          try {
            missing = proxyHeaderMissing(head);
            if (missing > 0) return true;
            const from = parseProxyHeader(head);
            settled = true;
            clearTimeout(timer);
            // Once this read is over (and reading stopped by the false
            // returned), a fresh Socket takes the handle, in the state of one
            // just accepted with pauseOnConnect.
            queueMicrotask(() => {
              const self = reader as unknown as WithHandle;
              const h = self._handle;
              self._handle = null;
              const socket = new net.Socket({ handle: h, allowHalfOpen, pauseOnCreate: true, readable: true, writable: true } as net.SocketConstructorOpts);
              // Node refuses to transfer a socket that has read anything, lest
              // bytes read but not yet consumed be lost with it: here nothing
              // past the header was read, and nothing is buffered.
              Object.defineProperty(socket, 'bytesRead', { value: 0 });
              resolve({ socket, from });
            });
          } catch (err) {
            queueMicrotask(() => fail(err as Error));
          }
          return false;
        },
      },
    } as net.SocketConstructorOpts);
    const timer = setTimeout(() => fail(new ProxyHeaderError(`no PROXY header within ${timeoutMs} ms`)), timeoutMs);
    reader.on('error', (err) => fail(new ProxyHeaderError(`connection failed before its PROXY header was whole: ${err.message}`)));
    reader.on('end', () => fail(new ProxyHeaderError('connection closed before its PROXY header was whole')));
    reader.on('close', () => fail(new ProxyHeaderError('connection closed before its PROXY header was whole')));
  });
}
