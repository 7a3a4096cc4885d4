// A scripted peer server for federation tests that need to say exactly what
// a remote server says, and to see exactly what ours sends it: it listens on
// port 5269 of a loopback address of its own for our server's stream
// (STARTTLS with its certificate, then dialback, whose key it takes as valid
// without checking: the test trusts it), and opens its own stream to our
// server (STARTTLS presenting its certificate, then SASL EXTERNAL, XEP-0178).
// Both ends are raw streams: the test writes stanzas on `incoming` and finds
// ours on `outgoing()`.
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { RawClient } from './raw.ts';
import { within } from './protocol.ts';
import { WAIT } from './im.ts';
import type { CertFiles } from './pki.ts';

export interface FakePeer {
  domain: string;
  /** Its stream to our server, authenticated: what the test sends as the peer. */
  incoming: RawClient;
  /** Our server's stream to it, once authenticated: the first one our server opens, or the one from `domain` (ours has one per domain of its that sends). */
  outgoing(domain?: string): Promise<RawClient>;
  stop(): Promise<void>;
}

const header = (from: string, to: string, id?: string) =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='${from}' to='${to}'${id ? ` id='${id}'` : ''} version='1.0'>`;

/** The next stream header on `c` (an XML declaration before it skipped): its attributes. */
async function opened(c: RawClient, what: string): Promise<Record<string, string>> {
  let it = await within(c.next(), WAIT, what);
  if (it.kind === 'decl') it = await within(c.next(), WAIT, what);
  if (it.kind !== 'open') throw new Error(`${what}: expected a stream header, got ${it.raw}`);
  return it.attrs;
}

/** Our server's side of a stream it opened to the peer, up to its dialback key, taken as valid. */
async function accept(sock: net.Socket, domain: string, ours: string, cert: { cert: string; key: string }): Promise<{ c: RawClient; from: string }> {
  const c = RawClient.adopt(sock);
  // Answered to the domain of ours that opened it (one stream per sending domain, RFC 6120 §4.7.1).
  const { from = ours } = await opened(c, "our server's header");
  c.send(`${header(domain, from, 'fake-1')}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`);
  await within(c.nextEl('starttls'), WAIT, '<starttls/>');
  c.send(`<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
  await c.starttlsServer(cert);
  await opened(c, "our server's header over TLS");
  c.send(`${header(domain, from, 'fake-2')}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>`);
  const key = await within(c.nextEl('db:result'), WAIT, 'the dialback key');
  c.send(`<db:result from='${domain}' to='${key.attrs.from}' type='valid'/>`);
  c.mark();
  return { c, from };
}

/**
 * A peer for `domain` listening on `address`:5269, with `cert` (valid for
 * `domain`, from a CA our server trusts), already connected to our server
 * at `server.host` (its domain `server.domain`) and authenticated.
 */
export async function fakePeer(opts: { domain: string; address: string; cert: CertFiles; server: { host: string; domain: string } }): Promise<FakePeer> {
  const identity = { cert: readFileSync(opts.cert.cert, 'utf8'), key: readFileSync(opts.cert.key, 'utf8') };
  const accepted: Promise<{ c: RawClient; from: string }>[] = [];
  // Every caller waiting for the next stream: tests of a file run at once and may all be waiting.
  const waiting = new Set<() => void>();
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
    const p = accept(sock, opts.domain, opts.server.domain, identity);
    p.catch(() => sock.destroy());
    accepted.push(p);
    for (const w of waiting) w();
    waiting.clear();
  });
  listener.listen(5269, opts.address);
  await once(listener, 'listening');

  const c = await RawClient.connect(5269, { host: opts.server.host });
  c.send(header(opts.domain, opts.server.domain));
  await opened(c, "our server's header");
  await within(c.nextEl('stream:features'), WAIT, 'features');
  c.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
  await within(c.nextEl('proceed'), WAIT, '<proceed/>');
  await c.starttls(identity);
  c.send(header(opts.domain, opts.server.domain));
  await opened(c, "our server's header over TLS");
  await within(c.nextEl('stream:features'), WAIT, 'features over TLS');
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>${Buffer.from(opts.domain).toString('base64')}</auth>`);
  const outcome = await within(c.nextEl(), WAIT, 'SASL outcome');
  if (outcome.name !== 'success') throw new Error(`SASL EXTERNAL refused: ${outcome.toString()}`);
  c.resetReader();
  c.send(header(opts.domain, opts.server.domain));
  await opened(c, "our server's header after SASL");
  await within(c.nextEl('stream:features'), WAIT, 'features after SASL');
  c.mark();

  return {
    domain: opts.domain,
    incoming: c,
    async outgoing(domain?: string) {
      for (let n = 0; ; n++) {
        while (accepted.length <= n) await within(new Promise<void>((r) => waiting.add(r)), WAIT, `our server's stream${domain ? ` from ${domain}` : ''} to ${opts.domain}`);
        const s = await within(accepted[n], WAIT, `our server's stream to ${opts.domain}, authenticated`);
        if (domain === undefined || s.from === domain) return s.c;
      }
    },
    async stop() {
      c.destroy();
      for (const s of sockets) s.destroy();
      listener.close();
      await once(listener, 'close').catch(() => {});
    },
  };
}
