// Federation test set-ups: servers of our own on their own loopback
// addresses, each listening for peers on the standard port 5269 (as a real
// peer such as Prosody expects, since it finds servers by name only) and
// told where the others are with XMPP_S2S_HOSTS. The addresses are picked
// at random in 127.0.0.0/8, so that test files running at once do not meet.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { startTestServer } from './server.ts';
import type { TestServer } from './server.ts';
import type { CertFiles } from './pki.ts';

/** Fresh loopback addresses, one per server of a test file. */
export function loopbackAddresses(n: number): string[] {
  const a = randomInt(1, 255);
  const b = randomInt(1, 255);
  return Array.from({ length: n }, (_, i) => `127.${a}.${b}.${i + 1}`);
}

export interface Federated {
  domain: string;
  host: string;
  server: TestServer;
}

/**
 * Servers for these domains, each on its own loopback address and port
 * 5269 (`addresses`, or fresh ones), with its certificate, knowing where
 * the others are (and `extra` peers, such as a Prosody), and with `env` on
 * top.
 */
export async function federation(
  peers: { domain: string; cert?: CertFiles; env?: Record<string, string> }[],
  opts: { env?: Record<string, string>; extra?: Record<string, string>; addresses?: string[] } = {},
): Promise<{ servers: Federated[]; stop: () => Promise<void>; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-s2s-'));
  const hosts = opts.addresses ?? loopbackAddresses(peers.length);
  const map = [...peers.map((p, i) => `${p.domain}=${hosts[i]}:5269`), ...Object.entries(opts.extra ?? {}).map(([d, a]) => `${d}=${a}`)].join(',');
  const servers: Federated[] = [];
  for (const [i, p] of peers.entries()) {
    const server = await startTestServer({
      XMPP_DOMAIN: p.domain,
      XMPP_S2S_BIND_HOST: hosts[i],
      XMPP_S2S: 'true',
      XMPP_S2S_PORT: '5269',
      XMPP_S2S_HOSTS: map,
      ...(p.cert ? { XMPP_TLS_CERT: p.cert.cert, XMPP_TLS_KEY: p.cert.key } : {}),
      ...opts.env,
      ...p.env,
    });
    servers.push({ domain: p.domain, host: hosts[i], server });
  }
  return {
    servers,
    dir,
    async stop() {
      await Promise.all(servers.map((s) => s.server.stop()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
