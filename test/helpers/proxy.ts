// PROXY protocol headers as a load balancer writes them (HAProxy's
// proxy-protocol.txt: §2.1 version 1, §2.2 version 2), for the tests to
// send before a connection's own bytes.
import { isIPv6, SocketAddress } from 'node:net';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function ipBytes(address: string): Buffer {
  if (!isIPv6(address)) return Buffer.from(address.split('.').map(Number));
  // Expand '::' into its zero groups, then two bytes a group.
  const full = new SocketAddress({ address, family: 'ipv6' }).address;
  const [head, tail] = full.split('::');
  // A dotted IPv4 tail (::ffff:192.0.2.8) is two groups.
  const groups = (s: string | undefined) => (s ? s.split(':').flatMap((g) => (g.includes('.') ? [((Number(g.split('.')[0]) << 8) | Number(g.split('.')[1])).toString(16), ((Number(g.split('.')[2]) << 8) | Number(g.split('.')[3])).toString(16)] : [g])) : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

/**
 * A version 2 header: PROXY from `src`:`srcPort` to `dst`:`dstPort` over TCP
 * (IPv4 or IPv6 as `src` is), or LOCAL (`local`: the balancer's own
 * connection, addresses left out), followed by `tlvs` (raw bytes).
 */
export function proxyV2(src: string, srcPort: number, opts: { dst?: string; dstPort?: number; local?: boolean; tlvs?: Buffer } = {}): Buffer {
  const six = isIPv6(src);
  const dst = opts.dst ?? (six ? '::1' : '127.0.0.1');
  const addresses = opts.local ? Buffer.alloc(0) : Buffer.concat([ipBytes(src), ipBytes(dst), Buffer.from([srcPort >> 8, srcPort & 0xff, (opts.dstPort ?? 5222) >> 8, (opts.dstPort ?? 5222) & 0xff])]);
  const body = Buffer.concat([addresses, opts.tlvs ?? Buffer.alloc(0)]);
  const prefix = Buffer.alloc(4);
  prefix[0] = opts.local ? 0x20 : 0x21;
  prefix[1] = opts.local ? 0x00 : six ? 0x21 : 0x11;
  prefix.writeUInt16BE(body.length, 2);
  return Buffer.concat([SIGNATURE, prefix, body]);
}

/** A TLV of version 2 (type, 16-bit length, value). */
export function tlv(type: number, value: Buffer | string): Buffer {
  const v = Buffer.from(value);
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(v.length, 1);
  return Buffer.concat([h, v]);
}

/** A version 1 line: TCP4 or TCP6 as `src` is. */
export function proxyV1(src: string, srcPort: number, dst = isIPv6(src) ? '::1' : '127.0.0.1', dstPort = 5222): Buffer {
  return Buffer.from(`PROXY ${isIPv6(src) ? 'TCP6' : 'TCP4'} ${src} ${dst} ${srcPort} ${dstPort}\r\n`, 'latin1');
}
