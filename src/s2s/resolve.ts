// Where a peer server is (RFC 6120 §3.2, XEP-0368): XMPP_S2S_HOSTS first;
// else the SRV records _xmpps-server._tcp (direct TLS) and
// _xmpp-server._tcp (STARTTLS), in priority order, weighted at random
// within a priority; else the domain itself on 5269 (its A/AAAA records,
// looked up when connecting). Every lookup has a short timeout: a stanza
// for a domain whose DNS does not answer is bounced soon, not held.
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { SrvRecord } from 'node:dns';
import type { PeerAddress } from '../config/index.ts';

export const DEFAULT_S2S_PORT = 5269;

/** The addresses to try for `domain`, best first; empty when the domain says it offers no XMPP service. */
export async function resolvePeer(domain: string, hosts: ReadonlyMap<string, PeerAddress>, timeoutMs: number): Promise<PeerAddress[]> {
  const fixed = hosts.get(domain);
  if (fixed) return [fixed];
  const bare = domain.replace(/^\[|\]$/g, '');
  if (isIP(bare)) return [{ host: bare, port: DEFAULT_S2S_PORT }];
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  const srv = async (name: string) => {
    try {
      return await resolver.resolveSrv(name);
    } catch {
      return undefined; // no record (or no answer): the next way is tried
    }
  };
  const [tls, plain] = await Promise.all([srv(`_xmpps-server._tcp.${domain}`), srv(`_xmpp-server._tcp.${domain}`)]);
  // RFC 6120 §3.2.1 (RFC 2782): a single record with target "." means no service.
  const none = (r: SrvRecord[] | undefined) => r !== undefined && r.length === 1 && (r[0].name === '.' || r[0].name === '');
  if (none(tls) && none(plain)) return [];
  const out: PeerAddress[] = [];
  for (const r of ordered([...(none(tls) ? [] : (tls ?? [])).map((r) => ({ ...r, directTls: true })), ...(none(plain) ? [] : (plain ?? []))])) {
    out.push({ host: r.name.replace(/\.$/, ''), port: r.port, ...('directTls' in r ? { directTls: true } : {}) });
  }
  // §3.2.2: no SRV record: the domain itself, on the default port.
  if (out.length === 0) out.push({ host: domain, port: DEFAULT_S2S_PORT });
  return out;
}

/** RFC 2782: by priority, then at random weighted by weight within one priority. */
function ordered<T extends SrvRecord>(records: T[]): T[] {
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
