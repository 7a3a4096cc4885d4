// A lean XMPP client connection for the load tool: one small state machine
// per connection, from TCP connect through TLS (STARTTLS or direct, XEP-0368),
// SASL (SCRAM-SHA-1, PLAIN, ANONYMOUS) and resource binding to an online
// session; or, for provisioning, only up to the point where in-band
// registration (XEP-0077) may be used. No DOM: see tokenizer.ts.
import net from 'node:net';
import tls from 'node:tls';
import { Tokenizer, attr, childText, errorCondition, startTag } from './tokenizer.ts';
import type { TokenSink } from './tokenizer.ts';
import { ScramClient } from './scram.ts';
import { BoshLink, WsLink } from './web.ts';
import type { Link, LinkOwner, Transport } from './web.ts';

export type TlsMode = 'starttls' | 'direct' | 'none';
export type MechanismName = 'SCRAM-SHA-1' | 'PLAIN' | 'ANONYMOUS';

export interface Target {
  host: string;
  port: number;
  domain: string;
  tls: TlsMode;
  mechanism: MechanismName;
  /** TCP (host, port, tls), or a web transport at `url` (then host, port and tls are not used). */
  transport?: Transport;
  url?: string;
  /** Connect to bound (or to ready, for registration) must take less than this. */
  timeoutMs: number;
}

export interface ConnHandler {
  /** Bound (or, for a registration connection, ready to register). */
  ready(c: Conn): void;
  /** A top-level element received once ready (a stanza). */
  stanza(c: Conn, name: string, raw: string): void;
  /** The connection is gone: `error` is undefined after a close we asked for. Called once. */
  end(c: Conn, error: string | undefined): void;
}

type State = 'connecting' | 'tls' | 'features' | 'starttls' | 'sasl' | 'bind' | 'sm' | 'resume' | 'ready' | 'closing' | 'closed';

const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
const NS_SM = 'urn:xmpp:sm:3';
const CLOSE_GRACE_MS = 3000;
/** XEP-0198: the client asks the server for its count after this many stanzas sent. */
const ACK_EVERY = 5;

/** What a client keeps of a stream management session to resume it on a new connection (XEP-0198 §5). */
export interface ResumeState {
  previd: string;
  jid: string;
  /** Stanzas received (our h). */
  h: number;
  /** Stanzas sent that the server has not acknowledged, in order, and the count before them. */
  outbound: string[];
  outAcked: number;
}

export const now = (): number => performance.now();

// One TLS context for all connections of a thread: building one per
// connection (what tls.connect does when given none) costs more than the rest
// of a connection's set-up on the client side.
let context: tls.SecureContext | undefined;
const secureContext = () => (context ??= tls.createSecureContext());
/** Wall-clock milliseconds with sub-millisecond precision, comparable across threads. */
export const wallNow = (): number => performance.timeOrigin + performance.now();

function escapeText(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function escapeAttr(s: string): string {
  return escapeText(s).replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

export interface ConnOptions {
  /** Username; ignored for ANONYMOUS. */
  user: string;
  password: string;
  /** Resource to ask for; empty: the server picks one. */
  resource: string;
  /** Send initial presence once bound. */
  presence: boolean;
  /** Stop after TLS (for in-band registration) instead of authenticating. */
  registerOnly?: boolean;
  /** Enable XEP-0198 stream management after binding; then answer <r/> with what was received. */
  sm?: boolean;
  /** With sm: ask for resumption, and keep what was sent until the server acknowledges it. */
  resume?: boolean;
  /** Resume this session instead of binding a new one. */
  resumeFrom?: ResumeState;
}

export class Conn implements TokenSink, LinkOwner {
  readonly target: Target;
  readonly opts: ConnOptions;
  readonly handler: ConnHandler;
  /** Free for the workload's use. */
  tag = 0;
  user = 0;
  state: State = 'connecting';
  /** performance.now() at connect and at bind. */
  readonly startedAt: number;
  boundAt = 0;
  jid = '';
  private raw!: net.Socket;
  private sock!: net.Socket;
  /** A web transport (WebSocket, BOSH) instead of the sockets. */
  private link: Link | undefined;
  private secure = false;
  private authenticated = false;
  private scram: ScramClient | undefined;
  private readonly tok: Tokenizer;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;
  /** XEP-0198: stanzas received since <enabled/> (mod 2^32). */
  private handled = 0;
  /** XEP-0198 §5: the session's resumption id, and what the server has not acknowledged (with `resume`). */
  private previd = '';
  private outbound: string[] = [];
  private outAcked = 0;
  private sinceRequest = 0;

  constructor(target: Target, opts: ConnOptions, handler: ConnHandler) {
    this.target = target;
    this.opts = opts;
    this.handler = handler;
    this.tok = new Tokenizer(this);
    this.startedAt = now();
    this.timer = setTimeout(() => this.fail('timeout'), target.timeoutMs);
    if (target.transport === 'websocket' || target.transport === 'bosh') {
      // No STARTTLS on a web transport: the URL's scheme says whether it is TLS.
      this.secure = true;
      this.tok.reset(true);
      const web = { url: target.url!, domain: target.domain, secureContext: secureContext() };
      if (target.transport === 'websocket') this.link = new WsLink(web, this);
      else {
        this.link = new BoshLink(web, this);
        this.link.open();
      }
      return;
    }
    if (target.tls === 'direct') {
      this.state = 'tls';
      const t = tls.connect({ host: target.host, port: target.port, servername: target.domain, secureContext: secureContext(), rejectUnauthorized: false, ALPNProtocols: ['xmpp-client'] });
      this.raw = t;
      this.sock = t;
      t.setNoDelay(true);
      t.on('secureConnect', () => {
        this.secure = true;
        this.state = 'features';
        this.sendHeader();
      });
      t.setEncoding('utf8');
      t.on('data', (s: string) => this.tok.write(s));
    } else {
      const s = net.connect({ host: target.host, port: target.port });
      this.raw = s;
      this.sock = s;
      s.setNoDelay(true);
      s.on('connect', () => {
        this.state = 'features';
        this.sendHeader();
      });
      if (target.tls === 'none') {
        s.setEncoding('utf8');
        s.on('data', (d: string) => this.tok.write(d));
      } else {
        // Plaintext before STARTTLS is ASCII; no decoder state to keep.
        s.on('data', (d: Buffer) => this.tok.write(d.toString('latin1')));
      }
    }
    this.raw.on('error', (err: NodeJS.ErrnoException) => this.socketError(err));
    this.raw.on('close', () => this.closed());
  }

  private socketError(err: NodeJS.ErrnoException): void {
    if (this.state === 'connecting') this.fail('connect');
    else if (this.state === 'tls' || this.state === 'starttls') this.fail('tls');
    else if (this.state === 'closing') this.finish(undefined);
    else this.fail(err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'closed' : err.code?.startsWith('bosh:') ? err.code : `socket:${err.code ?? 'error'}`);
  }

  // ---- LinkOwner (web transports) ----

  linkOpened(header: boolean): void {
    if (this.state !== 'connecting') return;
    this.state = 'features';
    if (header) this.sendHeader();
  }

  linkFrame(text: string): void {
    // RFC 7395 §3.4, §3.6: the framing's stream header and end are elements of their own.
    if (text.startsWith('<open')) return;
    if (text.startsWith('<close')) {
      if (text.includes('see-other-uri')) return this.fail('see-other-uri');
      return this.end();
    }
    this.tok.write(text);
  }

  linkData(text: string): void {
    this.tok.write(text);
  }

  linkError(code: string | undefined): void {
    const err = new Error(code ?? 'error') as NodeJS.ErrnoException;
    err.code = code;
    this.socketError(err);
  }

  linkClosed(error?: string): void {
    if (error && this.state !== 'closing') this.fail(error);
    else this.closed();
  }

  private destroyTransport(): void {
    if (this.link) this.link.destroy();
    else this.raw.destroy();
  }

  /** Whitespace on TCP; a WebSocket ping; nothing on BOSH, whose held request is renewed anyway. */
  keepalive(): void {
    if (this.state !== 'ready') return;
    if (this.link) this.link.keepalive();
    else this.write(' ');
  }

  private closed(): void {
    if (this.state === 'closing' || this.state === 'closed') this.finish(undefined);
    else if (this.state === 'connecting') this.fail('connect');
    else if (this.state === 'tls' || this.state === 'starttls') this.fail('tls');
    else this.fail('closed');
  }

  /** One element (or, on TCP, any text). */
  write(s: string): void {
    if (this.state === 'closed') return;
    if (this.link) this.link.send([s]);
    else this.sock.write(s);
  }

  private writeList(list: string[]): void {
    if (this.state === 'closed') return;
    if (this.link) this.link.send(list);
    else this.sock.write(list.join(''));
  }

  private sendHeader(): void {
    if (this.link) return this.link.open();
    this.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${escapeAttr(this.target.domain)}' version='1.0'>`);
  }

  // ---- TokenSink ----

  header(_tag: string): void {
    // The server's header needs no answer: its features follow.
  }

  end(): void {
    if (this.state === 'closing') {
      if (this.link) this.link.end();
      else this.sock.end();
      return;
    }
    this.fail('closed');
  }

  element(name: string, raw: string): void {
    if (name === 'stream:error' || name.endsWith(':error') || name === 'error') {
      this.fail(`stream-error:${errorCondition(raw)}`);
      return;
    }
    switch (this.state) {
      case 'ready':
        if (this.opts.sm) {
          if (name === 'r') return this.write(`<a xmlns='${NS_SM}' h='${this.handled}'/>`);
          if (name === 'a') return this.acked(Number(attr(startTag(raw), 'h')));
          if (name === 'iq' || name === 'message' || name === 'presence') this.handled = (this.handled + 1) >>> 0;
        }
        this.handler.stanza(this, name, raw);
        return;
      case 'sm':
        if (name === 'enabled') return this.smEnabled(raw);
        if (name === 'failed') return this.fail('sm:failed');
        if (name === 'iq' || name === 'message' || name === 'presence') return;
        break;
      case 'features':
        if (name === 'stream:features' || name.endsWith(':features') || name === 'features') return this.features(raw);
        break;
      case 'starttls':
        if (name === 'proceed') return this.startTls();
        if (name === 'failure') return this.fail('tls');
        break;
      case 'sasl':
        if (name === 'challenge') return this.challenge(raw);
        if (name === 'success') return this.success(raw);
        if (name === 'failure') return this.fail(`auth-failure:${errorCondition(raw)}`);
        break;
      case 'resume':
        if (name === 'resumed') return this.resumed(raw);
        if (name === 'failed') return this.fail('sm:resume-failed');
        break;
      case 'bind':
        if (name === 'iq' && attr(startTag(raw), 'id') === 'bind1') return this.bound(raw);
        if (name === 'iq' || name === 'message' || name === 'presence') return;
        break;
      case 'closing':
        return;
    }
    this.fail(`unexpected:${name}`);
  }

  // ---- negotiation ----

  private features(raw: string): void {
    const t = this.target;
    if (!this.secure && t.tls === 'starttls') {
      if (!raw.includes('<starttls')) return this.fail('tls:not-offered');
      this.state = 'starttls';
      this.write(`<starttls xmlns='${NS_TLS}'/>`);
      return;
    }
    if (!this.authenticated) {
      if (this.opts.registerOnly) {
        this.toReady();
        return;
      }
      if (!raw.includes(`>${t.mechanism}<`)) return this.fail(`auth-failure:${t.mechanism}-not-offered`);
      this.state = 'sasl';
      let initial: string;
      if (t.mechanism === 'SCRAM-SHA-1') {
        this.scram = new ScramClient(this.opts.user, this.opts.password);
        initial = this.scram.first();
      } else if (t.mechanism === 'PLAIN') {
        initial = Buffer.from(`\0${this.opts.user}\0${this.opts.password}`).toString('base64');
      } else {
        initial = '=';
      }
      this.write(`<auth xmlns='${NS_SASL}' mechanism='${t.mechanism}'>${initial}</auth>`);
      return;
    }
    const from = this.opts.resumeFrom;
    if (from) {
      if (!raw.includes('<sm')) return this.fail('sm:not-offered');
      this.state = 'resume';
      this.write(`<resume xmlns='${NS_SM}' previd='${escapeAttr(from.previd)}' h='${from.h}'/>`);
      return;
    }
    if (!raw.includes('<bind')) return this.fail('bind:not-offered');
    this.state = 'bind';
    const r = this.opts.resource;
    this.write(`<iq type='set' id='bind1'><bind xmlns='${NS_BIND}'>${r ? `<resource>${escapeText(r)}</resource>` : ''}</bind></iq>`);
  }

  private startTls(): void {
    this.state = 'starttls';
    this.raw.removeAllListeners('data');
    this.tok.reset();
    const t = tls.connect({ socket: this.raw, servername: this.target.domain, secureContext: secureContext(), rejectUnauthorized: false });
    this.sock = t;
    t.setEncoding('utf8');
    t.on('data', (s: string) => this.tok.write(s));
    // The TLS layer's errors mean what the plain socket's do: a reset after
    // our closing tag is the end of a finished session, not a TLS failure.
    t.on('error', (err: NodeJS.ErrnoException) => this.socketError(err));
    t.on('secureConnect', () => {
      this.secure = true;
      this.state = 'features';
      this.sendHeader();
    });
  }

  private challenge(raw: string): void {
    const scram = this.scram;
    if (!scram) return this.fail('auth-failure:unexpected-challenge');
    const data = (childless(raw) ?? '').trim();
    scram.final(data).then(
      (resp) => {
        if (this.state === 'sasl') this.write(`<response xmlns='${NS_SASL}'>${resp}</response>`);
      },
      () => this.fail('auth-failure:malformed-challenge'),
    );
  }

  private success(raw: string): void {
    if (this.scram) {
      const data = (childless(raw) ?? '').trim();
      if (!this.scram.verify(data)) return this.fail('auth-failure:bad-server-signature');
      this.scram = undefined;
    }
    this.authenticated = true;
    this.state = 'features';
    this.tok.reset(this.link !== undefined);
    this.sendHeader();
  }

  private bound(raw: string): void {
    const tag = startTag(raw);
    if (attr(tag, 'type') !== 'result') return this.fail(`bind:${errorCondition(raw, 'error')}`);
    this.jid = childText(raw, 'jid') ?? '';
    this.boundAt = now();
    if (this.opts.sm) {
      this.state = 'sm';
      this.write(this.opts.resume ? `<enable xmlns='${NS_SM}' resume='true'/>` : `<enable xmlns='${NS_SM}'/>`);
      return;
    }
    if (this.opts.presence) this.write('<presence/>');
    this.toReady();
  }

  private smEnabled(raw: string): void {
    this.previd = attr(startTag(raw), 'id') ?? '';
    if (this.opts.resume && !this.previd) return this.fail('sm:resumption-not-granted');
    if (this.opts.presence) this.sendStanzas(['<presence/>']);
    this.toReady();
  }

  /** <resumed/>: the counts go on; what the server did not get is sent again, in order. */
  private resumed(raw: string): void {
    const from = this.opts.resumeFrom!;
    this.previd = from.previd;
    this.jid = from.jid;
    this.handled = from.h;
    this.outbound = from.outbound;
    this.outAcked = from.outAcked;
    this.acked(Number(attr(startTag(raw), 'h')));
    this.boundAt = now();
    if (this.outbound.length > 0) this.writeList(this.outbound);
    this.toReady();
  }

  /** The server's count: what it has is no longer kept. */
  private acked(h: number): void {
    if (!this.opts.resume || !Number.isInteger(h)) return;
    const n = (h - this.outAcked) >>> 0;
    if (n > this.outbound.length) return this.fail('sm:ack-too-high');
    this.outbound.splice(0, n);
    this.outAcked = h >>> 0;
  }

  /**
   * Stanzas for the server, written at once; with resumption they are kept
   * until acknowledged, and an acknowledgement is asked for every few.
   */
  sendStanzas(list: string[]): void {
    if (this.state !== 'ready' && this.state !== 'sm') return;
    if (this.opts.resume) {
      this.outbound.push(...list);
      this.sinceRequest += list.length;
      if (this.sinceRequest >= ACK_EVERY) {
        this.sinceRequest = 0;
        list = [...list, `<r xmlns='${NS_SM}'/>`];
      }
    }
    this.writeList(list);
  }

  /** What resuming this session on a new connection takes (XEP-0198 §5); undefined without resumption. */
  resumeState(): ResumeState | undefined {
    if (!this.previd) return undefined;
    return { previd: this.previd, jid: this.jid, h: this.handled, outbound: [...this.outbound], outAcked: this.outAcked };
  }

  private toReady(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.state = 'ready';
    this.handler.ready(this);
  }

  // ---- ending ----

  /** Closes the stream politely: our closing tag, then the server's, then the socket. */
  close(): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (this.state !== 'ready') {
      this.fail('unfinished');
      return;
    }
    this.state = 'closing';
    // XEP-0198 §4: what was received is acknowledged before the stream closes, or the server keeps it for the next login.
    const ack = this.opts.sm ? [`<a xmlns='${NS_SM}' h='${this.handled}'/>`] : [];
    if (this.link) this.link.close(ack);
    else this.sock.write(`${ack.join('')}</stream:stream>`);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.destroyTransport();
      this.finish(undefined);
    }, CLOSE_GRACE_MS);
  }

  /** Drops the connection at once (no closing tag), as a network failure would. */
  drop(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.destroyTransport();
    this.finish(undefined);
  }

  fail(kind: string): void {
    if (this.ended) return;
    this.state = 'closed';
    this.destroyTransport();
    this.finish(kind);
  }

  private finish(error: string | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.state = 'closed';
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.handler.end(this, error);
  }
}

/** The text content of a childless element's raw text. */
function childless(raw: string): string | undefined {
  const gt = raw.indexOf('>');
  if (gt === -1 || raw.charCodeAt(gt - 1) === 47) return '';
  const end = raw.lastIndexOf('</');
  return end > gt ? raw.slice(gt + 1, end) : '';
}
