// The HTTP listener's connections, served in the worker the acceptor
// handed them to, as it hands a client's TCP connection: this worker reads
// the request (TLS first on the HTTPS port), answers the XEP-0156
// discovery documents, upgrades /xmpp-websocket to a WebSocket whose
// stream is a client session like any other (web/websocket.ts), hands the
// requests to /http-bind to BOSH (web/bosh.ts), whose sessions are client
// sessions too, and serves the PUT and GET URLs of HTTP upload
// (upload/http.ts). The acceptor only accepts.
import http from 'node:http';
import tls from 'node:tls';
import { refuseRenegotiation } from '../tls/renegotiation.ts';
import { isIP } from 'node:net';
import type net from 'node:net';
import type { BlockList } from 'node:net';
import type { SecureContext } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { Config } from '../config/index.ts';
import { trustedProxiesOf, publicUrlOf, metricsAllowedOf } from '../config/index.ts';
import { WebSocketTransport } from './websocket.ts';
import { UPLOAD_PATH, UPLOAD_WRITE_MS } from '../upload/http.ts';
import type { UploadHttp } from '../upload/http.ts';
import { BOSH_PATH, bodyLimit, terminateBody } from './bosh.ts';
import type { RequestInfo, Responder } from './bosh.ts';
import { log } from '../log.ts';
import { listed } from '../acceptor/limits.ts';

export const WEBSOCKET_PATH = '/xmpp-websocket';
/** XEP-0156 §3: the link relations of a WebSocket and a BOSH endpoint. */
const REL_WEBSOCKET = 'urn:xmpp:alt-connections:websocket';
const REL_BOSH = 'urn:xmpp:alt-connections:xbosh';
const NS_XRD = 'http://docs.oasis-open.org/ns/xri/xrd-1.0';
/** A connection that has not sent a whole request for this long, or idles between requests, is closed. */
const HTTP_IDLE_MS = 30_000;
/** A request's headers must all have come within this (else 408), and the whole request within XMPP_HTTP_REQUEST_TIMEOUT_MS. */
const HTTP_HEADERS_MS = 20_000;

/** The ports the HTTP listeners got (0 in the configuration picks one): what host-meta announces. */
export interface HttpPorts {
  http?: number;
  https?: number;
}

export interface WebEnv {
  config: Pick<Config, 'domain' | 'maxStanzaBytes' | 'maxStanzaElements' | 'httpTrustedProxies' | 'httpPublicUrl' | 'metrics' | 'boshMaxWait' | 'httpRequestTimeoutMs'>;
  secureContext: SecureContext;
  /** A WebSocket ready to carry a stream: the worker makes it a client session. */
  session(transport: WebSocketTransport): void;
  /** A BOSH request's body (web/bosh.ts BoshService.request). */
  bosh(body: Buffer, info: RequestInfo, to: Responder): void;
  /** HTTP upload's URLs (XEP-0363), when the service is on. */
  upload?: UploadHttp;
  /** The node's metrics in the Prometheus text format (gathered from every thread by the hub). */
  metrics(): Promise<string>;
  /** Why the node should not be given new connections now (/readyz); undefined when it should. */
  readiness(): Promise<string | undefined>;
}

/** How long a /readyz check's answer stands for the requests after it. */
const READY_CACHE_MS = 1000;

/** The Prometheus text exposition format, version 0.0.4 (what prom-client writes). */
const METRICS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Whether a plain (ws://) connection counts as secure for authentication
 * (RFC 7395 §6; RFC 6120 §5.3.1 wants TLS before it), and who the client
 * is. From a configured TLS-terminating proxy it is secure when the proxy
 * says the client came over TLS (X-Forwarded-Proto), and X-Forwarded-For's
 * last address, the one the proxy added, is the client's. From loopback
 * it never left the machine: secure, unless a proxy there (not configured
 * as trusted) says the client came in plain text.
 */
export function plainTrust(remote: string | undefined, headers: http.IncomingHttpHeaders, proxies: BlockList): { secure: boolean; client: string | undefined } {
  const proto = lastValue(headers['x-forwarded-proto'])?.toLowerCase();
  const tlsSaid = proto === 'https' || proto === 'wss';
  const address = remote === undefined ? undefined : unmapped(remote);
  if (address !== undefined && isIP(address) !== 0 && listed(proxies, address)) {
    const forwarded = lastValue(headers['x-forwarded-for']);
    return { secure: tlsSaid, client: forwarded !== undefined && isIP(unmapped(forwarded)) !== 0 ? forwarded : remote };
  }
  return { secure: remote !== undefined && isLoopback(remote) && (proto === undefined || tlsSaid), client: remote };
}

/** The last of a header's comma-separated values (the one the nearest proxy wrote), if any. */
function lastValue(h: string | string[] | undefined): string | undefined {
  const v = Array.isArray(h) ? h[h.length - 1] : h;
  if (v === undefined) return undefined;
  const last = v.slice(v.lastIndexOf(',') + 1).trim();
  return last === '' ? undefined : last;
}

/** An IPv4 address as an IPv6 socket reports it (::ffff:a.b.c.d) in its own form. */
function unmapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function isLoopback(address: string): boolean {
  const a = unmapped(address);
  return a === '::1' || a.startsWith('127.');
}

/** The endpoints host-meta lists, with `path`: the TLS one; the plain one only when there is no other (a local set-up). */
function endpoints(config: Pick<Config, 'domain' | 'httpPublicUrl'>, ports: HttpPorts, path: string, tlsScheme: string, plainScheme: string): string[] {
  const base = publicUrlOf(config);
  if (base !== '') return [`${tlsScheme}${base.slice('https'.length)}${path}`];
  const host = config.domain.includes(':') && !config.domain.startsWith('[') ? `[${config.domain}]` : config.domain;
  if (ports.https !== undefined) return [`${tlsScheme}://${host}:${ports.https}${path}`];
  if (ports.http !== undefined) return [`${plainScheme}://${host}:${ports.http}${path}`];
  return [];
}

/**
 * Where a web client of a cluster node that stops serving it (shutdown, or
 * the node fenced) is to reconnect: the cluster's public WebSocket
 * endpoint (XMPP_HTTP_PUBLIC_URL, the load balancer), which a living node
 * answers (RFC 7395 §3.6.1, "for load-balancing purposes"). None for a
 * single node: it has no other to send the client to.
 */
export function elsewhereUri(config: WebEnv['config'] & Pick<Config, 'redisUrl'>): string | undefined {
  if (config.redisUrl === '' || publicUrlOf(config) === '') return undefined;
  return websocketEndpoints(config, {})[0];
}

/** The WebSocket endpoints host-meta lists (wss://, or ws:// in a local set-up). */
export function websocketEndpoints(config: Pick<Config, 'domain' | 'httpPublicUrl'>, ports: HttpPorts): string[] {
  return endpoints(config, ports, WEBSOCKET_PATH, 'wss', 'ws');
}

/** The BOSH endpoints host-meta lists (https://, or http:// in a local set-up). */
export function boshEndpoints(config: Pick<Config, 'domain' | 'httpPublicUrl'>, ports: HttpPorts): string[] {
  return endpoints(config, ports, BOSH_PATH, 'https', 'http');
}

/** XEP-0156 §3.2 host-meta (XRD) and host-meta.json (JRD): the WebSocket endpoints, then the BOSH ones. */
export function hostMeta(websocket: string[], bosh: string[] = []): { xml: string; json: string } {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;');
  const links = [...websocket.map((href) => ({ rel: REL_WEBSOCKET, href })), ...bosh.map((href) => ({ rel: REL_BOSH, href }))];
  const xml = `<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='${NS_XRD}'>\n${links.map((l) => `  <Link rel='${l.rel}' href='${esc(l.href)}'/>\n`).join('')}</XRD>\n`;
  return { xml, json: `${JSON.stringify({ links })}\n` };
}

/** Headers that let a web page of any origin read the discovery documents (XEP-0156 §3.2 asks for CORS). */
const CORS = { 'Access-Control-Allow-Origin': '*', 'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS', 'Access-Control-Allow-Headers': 'Content-Type' };
/** The same for BOSH's POSTs, which carry no credentials (the session id is in the body). */
const BOSH_CORS = { 'Access-Control-Allow-Origin': '*', 'Access-Control-Allow-Methods': 'POST, OPTIONS', 'Access-Control-Allow-Headers': 'Content-Type' };

export class WebServer {
  private readonly env: WebEnv;
  private readonly http: http.Server;
  private readonly wss: WebSocketServer;
  private readonly proxies: BlockList;
  /** XMPP_METRICS: who may read /metrics; served at all only when it lists someone. */
  private readonly metricsAllowed: BlockList;
  private readonly metricsServed: boolean;
  private ports: HttpPorts = {};
  /** /readyz's last check: under way (no `at`), or done at `at`. */
  private ready: { p: Promise<string | undefined>; at: number | undefined } | undefined;
  /** XMPP_HTTP_REQUEST_TIMEOUT_MS. */
  private readonly requestMs: number;
  private docs: { xml: string; json: string } | undefined;

  constructor(env: WebEnv) {
    this.env = env;
    this.proxies = trustedProxiesOf(env.config);
    this.metricsAllowed = metricsAllowedOf(env.config);
    this.metricsServed = env.config.metrics.trim() !== '';
    // Never listens: the acceptor hands it connections. Node's defaults bound headers (16 KiB) and URLs.
    // Node's bound is the server's, for every request: with uploads on it is
    // the upload PUT's, and every other request gets XMPP_HTTP_REQUEST_TIMEOUT_MS
    // from timed() (else any client could trickle a BOSH body for as long).
    this.requestMs = env.config.httpRequestTimeoutMs;
    const requestTimeout = env.upload ? Math.max(UPLOAD_WRITE_MS, this.requestMs) : this.requestMs;
    const headersTimeout = Math.min(HTTP_HEADERS_MS, this.requestMs);
    const check = Math.min(5_000, Math.max(50, Math.floor(this.requestMs / 4)));
    this.http = http.createServer({ keepAliveTimeout: 5_000, headersTimeout, requestTimeout, connectionsCheckingInterval: check }, (req, res) => this.request(req, res));
    // 'Expect: 100-continue' (large PUTs): the upload decides whether to go on before the body is sent; other requests go on at once.
    this.http.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      if (!(this.env.upload && (req.url ?? '').startsWith(UPLOAD_PATH))) res.writeContinue();
      this.request(req, res);
    });
    // Node enforces the two bounds above (a request sent a byte at a time)
    // from a timer it starts when the server says it listens: said here, as
    // the acceptor listens for it. A WebSocket leaves their reach once upgraded.
    this.http.emit('listening');
    this.http.timeout = HTTP_IDLE_MS;
    this.http.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.upgrade(req, socket, head));
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      log.debug('bad HTTP request', { ip: socket.remoteAddress, err: err.code ?? err.message });
      if (socket.writable && err.code !== 'ECONNRESET') socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      // Compression would hold a zlib context per connection; XMPP's stanzas are small.
      perMessageDeflate: false,
      // A message past the stanza bound but within twice it is read and
      // refused by the parser with a policy-violation stream error; one
      // larger is cut off by the WebSocket itself (close code 1009) before
      // it is buffered.
      maxPayload: 2 * env.config.maxStanzaBytes,
      // RFC 7395 §3.1: the server answers with the xmpp subprotocol (upgrade() refused the others).
      handleProtocols: () => 'xmpp',
    });
  }

  /** Shutdown: HTTP connections between or in requests end now (WebSockets end with their sessions). */
  close(): void {
    this.http.closeAllConnections();
  }

  /** Serves one connection of the HTTP (`secure` false) or HTTPS listener; resolves when it is closed. */
  serve(socket: net.Socket, secure: boolean, ports: HttpPorts): Promise<string> {
    if (ports.http !== this.ports.http || ports.https !== this.ports.https) {
      this.ports = ports;
      this.docs = undefined;
    }
    const closed = new Promise<string>((resolve) => socket.once('close', () => resolve('closed')));
    socket.on('error', (err) => log.debug('HTTP connection error', { ip: socket.remoteAddress, err: err.message }));
    if (secure) {
      const t = new tls.TLSSocket(socket, { isServer: true, secureContext: this.env.secureContext, ALPNProtocols: ['http/1.1'] });
      // No client-initiated renegotiation (TLS 1.2), as on the XMPP ports.
      refuseRenegotiation(t, (err) => {
        log.info('TLS renegotiation refused: disconnected', { ip: socket.remoteAddress, err: err.message });
        socket.destroy();
      });
      // A failed handshake (a scanner, a client that does not trust the certificate) is no news.
      t.on('error', (err) => {
        log.debug('HTTPS connection failed', { ip: socket.remoteAddress, err: err.message });
        socket.destroy();
      });
      this.http.emit('connection', t);
    } else {
      this.http.emit('connection', socket);
    }
    socket.resume();
    return closed;
  }

  private request(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (this.env.upload && !(req.method === 'PUT' && path.startsWith(UPLOAD_PATH))) this.timed(req, res);
    if (path === '/.well-known/host-meta' || path === '/.well-known/host-meta.json') {
      if (req.method === 'OPTIONS') return void res.writeHead(204, { ...CORS, 'Access-Control-Max-Age': '86400' }).end();
      if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { ...CORS, Allow: 'GET, HEAD, OPTIONS' }).end();
      this.docs ??= hostMeta(websocketEndpoints(this.env.config, this.ports), boshEndpoints(this.env.config, this.ports));
      const json = path.endsWith('.json');
      const body = json ? this.docs.json : this.docs.xml;
      res.writeHead(200, { ...CORS, 'Content-Type': json ? 'application/json' : 'application/xrd+xml; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'max-age=3600' });
      return void res.end(req.method === 'HEAD' ? undefined : body);
    }
    if (this.env.upload && path.startsWith(UPLOAD_PATH)) return this.env.upload.handle(req, res, path);
    if (path === '/healthz' || path === '/readyz' || (path === '/metrics' && this.metricsServed)) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': 0 }).end();
      if (path === '/healthz') return text(res, req, 200, 'ok\n');
      if (path === '/readyz') {
        void this.readiness().then(
          (why) => (why === undefined ? text(res, req, 200, 'ready\n') : text(res, req, 503, `not ready: ${why}\n`)),
          (err: unknown) => {
            log.warn('readiness could not be checked', { err: String(err) });
            text(res, req, 503, 'not ready: the check failed\n');
          },
        );
        return;
      }
      if (!this.mayScrape(req)) return text(res, req, 403, 'metrics are not served to this address (XMPP_METRICS)\n');
      void this.env.metrics().then(
        (body) => text(res, req, 200, body, METRICS_TYPE),
        (err: unknown) => {
          log.warn('metrics could not be served', { err: String(err) });
          text(res, req, 503, 'metrics are unavailable now\n');
        },
      );
      return;
    }
    if (path === WEBSOCKET_PATH) {
      const body = 'a WebSocket endpoint (RFC 7395): connect with the xmpp subprotocol\n';
      return void res.writeHead(426, { Upgrade: 'websocket', Connection: 'Upgrade', 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) }).end(body);
    }
    if (path === BOSH_PATH) return this.bosh(req, res);
    res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': 10 }).end('not found\n');
  }

  /**
   * /readyz's answer: one check (a database ping and a registry check) at
   * a time, its answer kept READY_CACHE_MS, however many ask: the path is
   * not authenticated, and each check costs a round trip to the stores.
   */
  private readiness(): Promise<string | undefined> {
    const now = Date.now();
    if (this.ready && (this.ready.at === undefined || now - this.ready.at < READY_CACHE_MS)) return this.ready.p;
    const entry: { p: Promise<string | undefined>; at: number | undefined } = { p: this.env.readiness(), at: undefined };
    const done = () => (entry.at = Date.now());
    entry.p.then(done, done);
    this.ready = entry;
    return entry.p;
  }

  /**
   * With uploads on, Node's bound on a request's arrival is the upload
   * PUT's (10 minutes): any other request that is not whole within
   * XMPP_HTTP_REQUEST_TIMEOUT_MS of its headers gets what Node would have
   * answered, 408, and its connection is closed.
   */
  private timed(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.complete) return;
    const timer = setTimeout(() => {
      if (req.complete) return;
      log.debug('HTTP request not whole in time: connection closed', { ip: req.socket.remoteAddress, path: (req.url ?? '/').split('?', 1)[0], ms: this.requestMs });
      if (!res.headersSent && !res.destroyed) res.writeHead(408, { Connection: 'close', 'Content-Length': 0 }).end(() => req.socket.destroy());
      else req.socket.destroy();
    }, this.requestMs);
    timer.unref();
    const clear = () => clearTimeout(timer);
    req.once('end', clear);
    req.once('close', clear);
  }

  /**
   * Whether this request may read /metrics: its client's address is in
   * XMPP_METRICS. A request relayed by a proxy in XMPP_HTTP_TRUSTED_PROXIES
   * counts from the address the proxy names (X-Forwarded-For's last);
   * one that says it was relayed (a forwarding header) by a proxy not
   * trusted is refused, whatever the proxy's address: a reverse proxy on
   * loopback would otherwise pass every client off as local.
   */
  private mayScrape(req: http.IncomingMessage): boolean {
    const remote = req.socket.remoteAddress;
    if (remote === undefined || isIP(unmapped(remote)) === 0) return false;
    let client = remote;
    const forwarded = lastValue(req.headers['x-forwarded-for']);
    if (listed(this.proxies, remote)) {
      if (forwarded !== undefined) client = forwarded;
    } else if (forwarded !== undefined || req.headers.forwarded !== undefined || req.headers['x-real-ip'] !== undefined) return false;
    return isIP(unmapped(client)) !== 0 && listed(this.metricsAllowed, client);
  }

  /** XEP-0124 §5: a BOSH request is a POST whose body is one <body/>; the answer may be held up to the session's 'wait'. */
  private bosh(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method === 'OPTIONS') return void res.writeHead(204, { ...BOSH_CORS, 'Access-Control-Max-Age': '86400' }).end();
    if (req.method !== 'POST') {
      const body = 'a BOSH endpoint (XEP-0124, XEP-0206): POST a <body/>\n';
      return void res.writeHead(405, { ...BOSH_CORS, Allow: 'POST, OPTIONS', 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) }).end(req.method === 'HEAD' ? undefined : body);
    }
    const socket = req.socket;
    const limit = bodyLimit(this.env.config);
    const tooLarge = () => {
      // No session is touched: its id is in the body not read. The connection closes, its unread rest with it.
      log.info('BOSH request body too large: refused', { ip: socket.remoteAddress, limit });
      const body = terminateBody('policy-violation');
      res.writeHead(413, { ...BOSH_CORS, 'Content-Type': 'text/xml; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close' }).end(body);
      req.removeAllListeners('data');
      req.resume();
    };
    const declared = Number(req.headers['content-length']);
    if (declared > limit) return tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return tooLarge();
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (size > limit) return;
      const encrypted = (socket as tls.TLSSocket).encrypted === true;
      const trust = encrypted ? { secure: true, client: socket.remoteAddress } : plainTrust(socket.remoteAddress, req.headers, this.proxies);
      // A held request waits for up to the session's 'wait' with no byte on its connection: longer than the idle bound.
      socket.setTimeout((this.env.config.boshMaxWait + 30) * 1000);
      const to: Responder = {
        send: (body, status, type) => {
          if (res.headersSent || res.destroyed) return;
          socket.setTimeout(HTTP_IDLE_MS);
          res.writeHead(status, { ...BOSH_CORS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' }).end(body);
        },
        close: () => socket.destroy(),
      };
      this.env.bosh(Buffer.concat(chunks), { secure: trust.secure, client: trust.client, port: trust.client === socket.remoteAddress ? socket.remotePort : undefined }, to);
    });
  }

  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    socket.setTimeout(0);
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== WEBSOCKET_PATH || (req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return refuse(socket, 404, 'Not Found', 'not found\n');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    // RFC 7395 §3.1: only the xmpp subprotocol carries XMPP; a WebSocket without it is not served.
    if (!offered.includes('xmpp')) return refuse(socket, 400, 'Bad Request', 'the xmpp WebSocket subprotocol is required (RFC 7395)\n');
    const encrypted = (socket as tls.TLSSocket).encrypted === true;
    const trust = encrypted ? { secure: true, client: socket.remoteAddress } : plainTrust(socket.remoteAddress, req.headers, this.proxies);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const c = this.env.config;
      const transport = new WebSocketTransport(ws, socket, {
        secure: trust.secure,
        remoteAddress: trust.client,
        remotePort: trust.client === socket.remoteAddress ? socket.remotePort : undefined,
        maxStanzaBytes: c.maxStanzaBytes,
        maxStanzaElements: c.maxStanzaElements,
      });
      this.env.session(transport);
    });
  }
}

/** A short answer that is never cached (health and metrics change by the second). */
function text(res: http.ServerResponse, req: http.IncomingMessage, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  if (res.writableEnded || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' }).end(req.method === 'HEAD' ? undefined : body);
}

function refuse(socket: net.Socket, code: number, reason: string, body: string): void {
  socket.end(`HTTP/1.1 ${code} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
