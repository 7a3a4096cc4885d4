// Where a peer server is (RFC 6120 §3.2, XEP-0368): XMPP_S2S_HOSTS first;
// else the SRV records _xmpps-server._tcp (direct TLS) and
// _xmpp-server._tcp (STARTTLS), in priority order, weighted at random
// within a priority; else the domain itself on 5269. Names are turned into
// addresses here too (A and AAAA), so that every lookup has the short
// timeout XMPP_S2S_DNS_TIMEOUT_MS and goes to XMPP_S2S_DNS_SERVERS when
// set: a stanza for a domain whose DNS does not answer is bounced soon,
// not held. A name DNS does not know is looked up in /etc/hosts (read
// here rather than through getaddrinfo, whose slow lookups would hold the
// threads every worker of the process shares). At most MAX_ADDRESSES are
// tried: whoever runs a domain's DNS cannot make us connect to hundreds.
import { Resolver } from 'node:dns/promises';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { SrvRecord } from 'node:dns';
import type { PeerAddress } from '../config/index.ts';

export const DEFAULT_S2S_PORT = 5269;
export const MAX_ADDRESSES = 8;

/** How peers are looked up: the DNS servers (empty: the system's), the bound on each lookup, and when to give up altogether (Date.now() time). */
export interface LookupOptions {
  servers: string[];
  timeoutMs: number;
  deadline?: number;
}

/** The addresses to try for `domain`, best first; empty when the domain says it offers no XMPP service, or has no address. */
export async function resolvePeer(domain: string, hosts: ReadonlyMap<string, PeerAddress>, opts: LookupOptions): Promise<PeerAddress[]> {
  const fixed = hosts.get(domain);
  if (fixed) return [fixed];
  const bare = domain.replace(/^\[|\]$/g, '');
  if (isIP(bare)) return [{ host: bare, port: DEFAULT_S2S_PORT }];
  const resolver = new Resolver({ timeout: opts.timeoutMs, tries: 1 });
  if (opts.servers.length > 0) resolver.setServers(opts.servers);
  // Past the deadline, the lookups under way end (their callers get nothing).
  const stop = opts.deadline === undefined ? undefined : setTimeout(() => resolver.cancel(), Math.max(0, opts.deadline - Date.now()));
  stop?.unref();
  try {
    return await lookupPeer(resolver, domain);
  } finally {
    clearTimeout(stop);
  }
}

async function lookupPeer(resolver: Resolver, domain: string): Promise<PeerAddress[]> {
  const srv = async (name: string) => {
    try {
      return await resolver.resolveSrv(name);
    } catch {
      return undefined; // no record (or no answer): the next way is tried
    }
  };
  const [tls, plain] = await Promise.all([srv(`_xmpps-server._tcp.${domain}`), srv(`_xmpp-server._tcp.${domain}`)]);
  // RFC 6120 §3.2.1 (RFC 2782): a single record with target "." means that service is not offered.
  const none = (r: SrvRecord[] | undefined) => r !== undefined && r.length === 1 && (r[0].name === '.' || r[0].name === '');
  const usable = (r: SrvRecord[] | undefined) => (r === undefined || none(r) ? [] : r);
  const targets: PeerAddress[] = ordered([...usable(tls).map((r) => ({ ...r, directTls: true })), ...usable(plain)]).map((r) => ({
    host: r.name.replace(/\.$/, ''),
    port: r.port,
    ...('directTls' in r ? { directTls: true } : {}),
  }));
  // §3.2.2: no SRV record for STARTTLS and none usable for direct TLS: the domain itself, on the default port.
  if (plain === undefined && usable(tls).length === 0) targets.push({ host: domain, port: DEFAULT_S2S_PORT });
  const out: PeerAddress[] = [];
  for (const t of targets.slice(0, MAX_ADDRESSES)) {
    for (const address of await addressesOf(resolver, t.host)) {
      out.push({ ...t, host: address });
      if (out.length >= MAX_ADDRESSES) return out;
    }
  }
  return out;
}

/** A name's IPv4 and IPv6 addresses from DNS, else from /etc/hosts. */
async function addressesOf(resolver: Resolver, name: string): Promise<string[]> {
  if (isIP(name)) return [name];
  const [v4, v6] = await Promise.all([resolver.resolve4(name).catch(() => [] as string[]), resolver.resolve6(name).catch(() => [] as string[])]);
  if (v4.length + v6.length > 0) return [...v4, ...v6];
  return etcHosts().get(name.toLowerCase()) ?? [];
}

let hosts: { at: number; mtime: number; map: Map<string, string[]> } | undefined;
/** /etc/hosts as name → addresses, read again when it changed (checked at most once a second). */
function etcHosts(): Map<string, string[]> {
  const now = Date.now();
  if (hosts && now - hosts.at < 1000) return hosts.map;
  let mtime = 0;
  try {
    mtime = statSync('/etc/hosts').mtimeMs;
  } catch {
    // no such file: no names
  }
  if (hosts && hosts.mtime === mtime) {
    hosts.at = now;
    return hosts.map;
  }
  const map = new Map<string, string[]>();
  try {
    for (const line of readFileSync('/etc/hosts', 'utf8').split('\n')) {
      const [address, ...names] = line.replace(/#.*/, '').trim().split(/\s+/);
      if (!address || isIP(address) === 0) continue;
      for (const n of names) map.set(n.toLowerCase(), [...(map.get(n.toLowerCase()) ?? []), address]);
    }
  } catch {
    // unreadable: no names
  }
  hosts = { at: now, mtime, map };
  return map;
}

/** RFC 2782: by priority, then at random weighted by weight within one priority. */
export function ordered<T extends SrvRecord>(records: T[]): T[] {
  const byPriority = new Map<number, T[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const out: T[] = [];
  for (const p of [...byPriority.keys()].sort((a, b) => a - b)) {
    const group = byPriority.get(p)!;
    while (group.length > 0) {
      const total = group.reduce((n, r) => n + r.weight, 0);
      let pick = Math.random() * total;
      let i = 0;
      while (i < group.length - 1 && (pick -= group[i].weight) >= 0) i++;
      out.push(group.splice(total === 0 ? 0 : i, 1)[0]);
    }
  }
  return out;
}
