// How many client connections the acceptor lets in. Each one holds a file
// descriptor, and a process out of descriptors fails wherever it next needs
// one: in accept(), in a store, even in reading its own memory use. So the
// acceptor refuses connections past a cap that leaves room for everything
// else the process opens.
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import type { BlockList } from 'node:net';
import type { Config } from '../config/index.ts';

/** Assumed when the limit cannot be read: the usual default soft limit. */
const FALLBACK_LIMIT = 1024;
/** Taken for an unlimited one: the kernel's usual ceiling (fs.nr_open). */
const UNLIMITED = 1 << 20;

/**
 * This process's open-file limit (the soft one: Node raises it to the hard
 * limit as it starts), or undefined when it cannot be read. Linux has it in
 * /proc/self/limits; elsewhere a shell started from here inherits it and
 * says it (`ulimit -n`, POSIX).
 */
export function openFileLimit(): number | undefined {
  const parse = (s: string | undefined) => (s === 'unlimited' ? UNLIMITED : s && /^\d+$/.test(s) ? Number(s) : undefined);
  if (process.platform === 'linux') {
    try {
      return parse(/^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]);
    } catch {
      return undefined;
    }
  }
  if (process.platform === 'win32') return undefined;
  const r = spawnSync('/bin/sh', ['-c', 'ulimit -n'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? parse(r.stdout.trim()) : undefined;
}

export interface ConnectionCap {
  /** Open connections allowed. */
  max: number;
  /** The open-file limit it was derived from (undefined: set in the configuration, or the limit is unknown). */
  limit?: number;
  /** Descriptors kept for the rest of the process. */
  reserve?: number;
}

/**
 * XMPP_MAX_CONNECTIONS, or when 0 the open-file limit less a reserve for
 * everything else: 64 for the process itself (standard streams, event
 * loops, listeners, certificate and log files), 32 per worker thread (its
 * event loop and Redis connections, or on one node the storage thread's
 * SQLite files), and a tenth of the
 * limit, at most 4096, for peers (Redis, other servers) and files opened
 * for a moment. Never below 16.
 */
export function connectionCap(config: Pick<Config, 'maxConnections' | 'workers'>, limit: number | undefined): ConnectionCap {
  if (config.maxConnections > 0) return { max: config.maxConnections };
  const known = limit ?? FALLBACK_LIMIT;
  const reserve = 64 + 32 * config.workers + Math.min(Math.floor(known / 10), 4096);
  return { max: Math.max(16, known - reserve), limit, reserve };
}

/**
 * What the per-address cap counts by: an IPv4 address (also when it comes
 * IPv4-mapped on an IPv6 socket), or the /64 prefix of an IPv6 address,
 * the block one subscriber is usually given whole.
 */
export function addressKey(address: string): string {
  const ip = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1];
  if (!ip.includes(':')) return ip;
  const [head, tail] = ip.split('::');
  const groups = (s: string | undefined) => (s ? s.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : []);
  const h = groups(head);
  const t = groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/** Whether `list` names this address (an IPv4-mapped IPv6 one as its IPv4 address, a scoped one without its zone). */
export function listed(list: BlockList, address: string): boolean {
  const ip = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return list.check(mapped[1], 'ipv4');
  return list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
}
