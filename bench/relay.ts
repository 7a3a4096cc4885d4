// A bare TLS relay: the runtime's ceiling for the chat workload. It does what
// an XMPP server must do at the least to route a message between two TLS
// clients (decrypt, find the destination, encrypt) and nothing else: no XML,
// no SASL, no stanza, one thread. bench/compare/ runs the same chat workload
// through it (bench/compare/relay-driver.ts) to see how close the server
// comes to what Node.js itself can do on one core.
//
//   node bench/relay.ts --port 0 --cert cert.pem --key key.pem [--host 127.0.0.1]
//
// It prints {"msg":"listening","port":P,"pid":N} on stdout when ready and
// runs until SIGINT or SIGTERM.
//
// Protocol: length-framed binary, in both directions. A frame is a 4-byte
// big-endian length L, then L bytes: a 4-byte big-endian peer id, then the
// payload. A client's first frame names itself (its own id, empty payload);
// the relay answers with the same frame once the id is taken. After that,
// every frame a client sends names its destination; the relay rewrites the
// id to the sender's and writes the frame, bytes unchanged otherwise, to the
// destination's connection. A frame for an unknown destination comes back to
// its sender with id 0xffffffff.
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

export const HEADER_BYTES = 8;
export const NO_SUCH_PEER = 0xffffffff;
/** Largest frame accepted (length field), as an XMPP server bounds a stanza. */
export const MAX_FRAME_BYTES = 262144;

/** One frame: length, id, payload. */
export function frame(id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  b.writeUInt32BE(4 + payload.length, 0);
  b.writeUInt32BE(id, 4);
  payload.copy(b, HEADER_BYTES);
  return b;
}

/**
 * Splits a byte stream into frames: `push` each chunk, and `onFrame` gets
 * every complete frame (a view of the chunk when it lies within one, header
 * included), in order.
 */
export class Framer {
  private pending: Buffer | undefined;
  private readonly onFrame: (f: Buffer) => void;

  constructor(onFrame: (f: Buffer) => void) {
    this.onFrame = onFrame;
  }

  /** Returns false on a malformed or oversized frame (the stream is then unusable). */
  push(chunk: Buffer): boolean {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (len < 4 || len > MAX_FRAME_BYTES) return false;
      if (buf.length - off < 4 + len) break;
      this.onFrame(buf.subarray(off, off + 4 + len));
      off += 4 + len;
    }
    if (off < buf.length) {
      // Keep the tail: copied, so that the chunk it came from can go.
      buf = buf.subarray(off);
      this.pending = Buffer.from(buf);
    }
    return true;
  }
}

export interface Relay {
  port: number;
  close(): Promise<void>;
}

export function startRelay(opts: { host: string; port: number; cert: Buffer; key: Buffer }): Promise<Relay> {
  const peers = new Map<number, tls.TLSSocket>();
  const server = tls.createServer({ cert: opts.cert, key: opts.key });
  // Destinations written to during one read: uncorked together after it.
  const corked = new Set<tls.TLSSocket>();
  server.on('secureConnection', (sock) => {
    sock.setNoDelay(true);
    let id = -1;
    const framer = new Framer((f) => {
      if (id === -1) {
        const want = f.readUInt32BE(4);
        if (want === NO_SUCH_PEER || peers.has(want)) {
          sock.destroy();
          return;
        }
        id = want;
        peers.set(id, sock);
        sock.write(frame(id));
        return;
      }
      const dest = peers.get(f.readUInt32BE(4));
      if (dest === undefined) {
        f.writeUInt32BE(NO_SUCH_PEER, 4);
        sock.write(f);
        return;
      }
      f.writeUInt32BE(id, 4);
      if (!corked.has(dest)) {
        dest.cork();
        corked.add(dest);
      }
      dest.write(f);
    });
    sock.on('data', (chunk: Buffer) => {
      const ok = framer.push(chunk);
      for (const d of corked) d.uncork();
      corked.clear();
      if (!ok) sock.destroy();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (id !== -1 && peers.get(id) === sock) peers.delete(id);
    });
  });
  server.on('tlsClientError', () => {});
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port, backlog: 511 }, () => {
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr ? addr.port : opts.port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of peers.values()) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      cert: { type: 'string' },
      key: { type: 'string' },
    },
  });
  if (!values.cert || !values.key) {
    console.error('usage: node bench/relay.ts --cert cert.pem --key key.pem [--port P] [--host H]');
    process.exit(2);
  }
  const relay = await startRelay({ host: values.host, port: Number(values.port), cert: readFileSync(values.cert), key: readFileSync(values.key) });
  console.log(JSON.stringify({ msg: 'listening', port: relay.port, pid: process.pid }));
  const stop = () => void relay.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
