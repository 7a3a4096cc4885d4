// @xmpp/client, the reference third-party client, pointed at a test server.
// The server's self-signed certificate is trusted by adding it to the
// process's CA list, so TLS is verified for real rather than switched off.
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { client } from '@xmpp/client';
import type { TestServer } from './server.ts';

const trusted = new Set<string>();

export function trustServer(server: TestServer): void {
  const pem = readFileSync(join(server.config.dataDir, 'tls', `${server.config.domain}.crt`), 'utf8');
  if (trusted.has(pem)) return;
  trusted.add(pem);
  tls.setDefaultCACertificates([...tls.getCACertificates('default'), ...trusted]);
}

export type XmppClient = ReturnType<typeof client>;

export function xmppClient(server: TestServer, opts: { username?: string; password?: string; resource?: string; directTls?: boolean; credentials?: unknown }): XmppClient {
  trustServer(server);
  const service = opts.directTls ? `xmpps://localhost:${server.tlsPort}` : `xmpp://localhost:${server.c2sPort}`;
  // @xmpp/client gives each step 2 s by default; a CI machine running the
  // whole suite on 2 cores can stall longer than that while node processes boot.
  const xmpp = client({ service, domain: 'localhost', timeout: 15_000, ...opts });
  xmpp.on('error', () => {});
  return xmpp;
}
