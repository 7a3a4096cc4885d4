// Is a node (or the load balancer) answering? The container HEALTHCHECK
// asks the node's /readyz when it has an HTTP listener (200: it accepts,
// and reaches the registry and the database), else opens an XMPP stream and
// waits for the stream header in reply; the launcher opens streams through
// the load balancer to know that it forwards to a live node.
//
//   node cluster/healthcheck.ts    GET /readyz on 127.0.0.1:$XMPP_HTTPS_PORT (or $XMPP_HTTP_PORT),
//                                  else a stream to 127.0.0.1:$XMPP_C2S_PORT (default 5222); exit 0 or 1
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import https from 'node:https';

export interface ProbeOptions {
  host?: string;
  port: number;
  domain: string;
  /** Direct TLS (XEP-0368) instead of a plain connection. */
  tls?: boolean;
  /** The stream's namespace: jabber:server on a server-to-server port. */
  ns?: 'jabber:client' | 'jabber:server';
  timeoutMs?: number;
}

/** Resolves once the server answers a stream header with its own; rejects on error, close or timeout. */
export function probe({ host = '127.0.0.1', port, domain, tls: direct = false, ns = 'jabber:client', timeoutMs = 3000 }: ProbeOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const header = `<?xml version='1.0'?><stream:stream xmlns='${ns}' xmlns:stream='http://etherx.jabber.org/streams' to='${domain}' version='1.0'>`;
    const sock: net.Socket = direct
      ? tls.connect({ host, port, servername: domain, rejectUnauthorized: false }, () => sock.write(header))
      : net.connect({ host, port }, () => sock.write(header));
    let got = '';
    const done = (err?: Error) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`no stream header from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      got += d;
      if (got.includes('<stream:stream')) done();
    });
    sock.on('error', (err) => done(err));
    sock.on('close', () => done(new Error(`${host}:${port} closed the connection before its stream header${got ? `: ${got.slice(0, 200)}` : ''}`)));
  });
}

/** Resolves once the HTTPS listener at `port` answers its host-meta (XEP-0156) with 200; rejects on error, another status or timeout. */
export function probeHttps(port: number, domain: string, timeoutMs = 3000, host = '127.0.0.1'): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host, port, path: '/.well-known/host-meta', servername: domain, rejectUnauthorized: false, timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve();
      else reject(new Error(`${host}:${port} answered host-meta with ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${host}:${port} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Resolves once the node's /readyz answers 200 (over TLS with `secure`); rejects with its answer otherwise, on error or timeout. */
export function probeReady(port: number, secure: boolean, timeoutMs = 3000, host = '127.0.0.1'): Promise<void> {
  return new Promise((resolve, reject) => {
    // The node's own certificate, whatever it names: its health is asked, not its identity.
    const opts = { host, port, path: '/readyz', timeout: timeoutMs, agent: false, ...(secure ? { rejectUnauthorized: false } : {}) };
    const req = (secure ? https : http).get(opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body = (body + d).slice(0, 200)));
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${host}:${port} /readyz answered ${res.statusCode}: ${body.trim()}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${host}:${port} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

if (import.meta.main) {
  const port = Number(process.env.XMPP_C2S_PORT ?? 5222);
  const web = [[process.env.XMPP_HTTPS_PORT, true], [process.env.XMPP_HTTP_PORT, false]].find(([p]) => p !== undefined && /^[1-9]\d*$/.test(p as string)) as [string, boolean] | undefined;
  (web ? probeReady(Number(web[0]), web[1]) : probe({ port, domain: process.env.XMPP_DOMAIN ?? 'localhost' })).then(
    () => process.exit(0),
    (err: Error) => {
      console.error(`unhealthy: ${err.message}`);
      process.exit(1);
    },
  );
}
