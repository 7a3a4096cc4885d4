// @xmpp/client, the reference third-party client, pointed at a test server.
// The server's self-signed certificate is trusted by adding it to the
// process's CA list, so TLS is verified for real rather than switched off.
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { client } from '@xmpp/client';
import type { Element } from 'ltx';
import type { TestServer } from './server.ts';

const trusted = new Set<string>();

/** A server @xmpp/client can reach: a test server, or a cluster node with the cluster's certificate. */
export type Target = TestServer | { c2sPort: number; tlsPort: number; certFile: string };

export function trustServer(server: Target): void {
  const file = 'certFile' in server ? server.certFile : join(server.config.dataDir, 'tls', `${server.config.domain}.crt`);
  const pem = readFileSync(file, 'utf8');
  if (trusted.has(pem)) return;
  trusted.add(pem);
  tls.setDefaultCACertificates([...tls.getCACertificates('default'), ...trusted]);
}

export type XmppClient = ReturnType<typeof client>;

export function xmppClient(server: Target, opts: { username?: string; password?: string; resource?: string; directTls?: boolean; credentials?: unknown }): XmppClient {
  trustServer(server);
  const service = opts.directTls ? `xmpps://localhost:${server.tlsPort}` : `xmpp://localhost:${server.c2sPort}`;
  // @xmpp/client gives each step 2 s by default; a CI machine running the
  // whole suite on 2 cores can stall longer than that while node processes boot.
  const xmpp = client({ service, domain: 'localhost', timeout: 15_000, ...opts });
  xmpp.on('error', () => {});
  return xmpp;
}

/** What the tests use of @xmpp/client beyond src/types/xmpp-client.d.ts. */
export type Untyped = XmppClient & {
  socket: { socket?: { destroy(): void; _parent?: { destroy(): void } } } | null;
  iqCallee: { set(ns: string, name: string, handler: () => unknown): void };
  streamManagement: { enabled: boolean; inbound: number };
};

/** Ends the TCP connection at once: no </stream:stream>, no unavailable presence, no TLS close_notify. */
export function kill(xmpp: XmppClient): void {
  // xmpp.socket is @xmpp/tls's wrapper after STARTTLS; .socket is the tls.TLSSocket over the TCP socket.
  const secure = (xmpp as Untyped).socket?.socket;
  secure?.destroy();
  secure?._parent?.destroy();
}

/**
 * @xmpp/client enables stream management (XEP-0198), but the iq replies
 * its iqCaller takes never reach its stream management counter (the
 * caller's middleware runs first and does not pass them on): its h falls
 * behind by one per reply, and what it had would come again at the next
 * login or resumption. Counted for it here.
 */
export function countIqReplies(xmpp: XmppClient): void {
  const sm = (xmpp as Untyped).streamManagement;
  xmpp.on('element', (el: Element) => {
    if (sm.enabled && el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error')) sm.inbound += 1;
  });
}

/** Every stanza a client received, in order; waits for the ones a test expects. */
export class Inbox {
  readonly els: Element[] = [];
  private waiters: (() => void)[] = [];
  closed = false;

  constructor(xmpp: XmppClient) {
    xmpp.on('stanza', (el: Element) => {
      this.els.push(el);
      this.wake();
    });
    xmpp.on('disconnect', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get length(): number {
    return this.els.length;
  }

  /** The first stanza from index `from` on that satisfies `pred`. */
  async find(pred: (el: Element) => boolean, from = 0): Promise<Element> {
    for (let i = from; ; ) {
      for (; i < this.els.length; i++) if (pred(this.els[i])) return this.els[i];
      if (this.closed) throw new Error('the connection closed before the awaited stanza arrived');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

