// The stream engine under every kind of XML stream (RFC 6120): it owns the
// socket, TLS (STARTTLS or direct, §5), the incremental parser and its
// limits, the stream header and features (§4.7, §4.3), SASL (§6), stream
// errors (§4.9), and the connection as an actor: its events handled one at
// a time, in order, through a mailbox, and its output written in order at
// the pace the peer reads, with XEP-0198 acknowledgements when enabled.
// What a stream is for (a client's session, a peer server, a component) is
// the subclass's policy: which domains it serves, what it offers after
// authentication, what an element means once negotiated, and what becomes
// of output that can no longer be written. The engine calls these hooks,
// as ejabberd's xmpp_stream_in calls its callback module. Under it is a
// byte stream it parses and secures itself (TCP), or a framed transport
// that hands it whole elements and frames its output (WebSocket, BOSH; see
// transport.ts): the rest is the same over either.
import type net from 'node:net';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate } from 'node:tls';
import { Element, escapeXML } from 'ltx';
import { StreamParser } from '../xml/parser.ts';
import { StreamError, SaslFailure } from '../xmpp/errors.ts';
import type { StreamCondition } from '../xmpp/errors.ts';
import { NS_SM, NS_STREAM, NS_TLS, NS_SASL } from '../xmpp/ns.ts';
import type { Mechanism, MechanismContext, MechanismFactory, SaslResult } from '../sasl/mechanism.ts';
import type { Config } from '../config/index.ts';
import { normalizeDomain } from '../xmpp/jid.ts';
import { flat } from '../xml/retain.ts';
import { chainValid, peerChain, xmppAddrs } from '../tls/trust.ts';
import { refuseRenegotiation } from '../tls/renegotiation.ts';
import { log } from '../log.ts';
import type { Logger } from '../log.ts';
import { isFramed } from './transport.ts';
import type { FramedTransport, Peer, Wire } from './transport.ts';
import * as metrics from '../metrics/metrics.ts';
import type { StreamKind } from '../metrics/metrics.ts';
import type { NodeGuard } from '../worker/guard.ts';
import { Saturated } from '../accounts/hashing.ts';
import { accountKey } from '../sasl/util.ts';

/** What the engine needs of its surroundings: the limits it enforces and the TLS identity. */
export interface EngineEnv {
  config: Pick<Config, 'readRateBytes' | 'maxReadsPerSecond' | 'maxStanzaBytes' | 'maxStanzaElements' | 'maxOutboundBytes' | 'maxAuthAttempts' | 'tlsRequired' | 'tlsCa'>;
  secureContext: SecureContext;
  /** XMPP_TLS_CA's certificates: what a peer's certificate must be issued by to count. */
  trustAnchors?: X509Certificate[];
}

export type State = 'wait-stream' | 'negotiating' | 'wait-bind' | 'established' | 'closed';

/**
 * What a routed stanza is, should the connection drop before it is written:
 * a message goes where undeliverable messages go (RFC 6121 §8.5.3.2: another
 * resource, offline storage, or an error to its sender); 'copy' is one of
 * several copies of a message to a bare JID (stored only if no resource is
 * left); 'last' has been rerouted once already (stored or bounced, not
 * routed again); an iq request is answered with an error.
 */
export type Reroute = 'message' | 'copy' | 'last' | 'iq';

/** One piece of output on its way to the client, in order. */
export interface Out {
  xml: string;
  /** Unsolicited (routed here by others): counts toward the slow-reader bound until written. */
  live?: boolean;
  /** A routed stanza that must not be lost if it is never written (see Reroute). */
  reroute?: Reroute;
  /** Called once it has been written to the socket (handed to the kernel): what paces output. */
  written?: () => void;
  /** Called once the client has it: written, or with XEP-0198 acknowledgements on, acknowledged. */
  delivered?: () => void;
  /** Not a stanza (stream-level protocol: XEP-0198's own elements, the closing tag): never counted, never acknowledged. */
  nonza?: boolean;
  /** Its id in offline storage, where it stays until the client has it (XEP-0160 with XEP-0198). */
  stored?: string;
  /** Handed to the socket with acknowledgements on: settled by an ack, or rerouted when the connection ends. */
  tracked?: boolean;
}

/** Stanzas counted mod 2^32 (XEP-0198 §4): how many lie between two counts. */
export const countSince = (h: number, base: number): number => (h - base) >>> 0;

/** XEP-0198 acknowledgements on one stream (Session.enableAcks). */
interface Acks {
  /** Stanzas handed to the socket and not yet acknowledged, in order. */
  unacked: Out[];
  unackedBytes: number;
  /** The client's last acknowledged count (its h). */
  acked: number;
  /** Stanzas from the client handled since acknowledgements began (our h). */
  handled: number;
  /** Stanzas sent since we last asked for an acknowledgement. */
  sinceRequest: number;
  timer: NodeJS.Timeout | undefined;
  /** Past the bound on unacknowledged bytes: the stream is being closed. */
  overflow: boolean;
}

/** XEP-0198: we ask for an acknowledgement after this many stanzas, or this long after an unacknowledged one. */
const ACK_EVERY = 5;
const ACK_AFTER_MS = 5_000;

/**
 * What the server itself has to send a client, read only as the client
 * reads (pending requests, offline messages, contacts' presence at login):
 * next() is called when the output has drained below a low-water mark.
 */
export interface Paced {
  /** The next items (possibly none, after work that produces output elsewhere), or null when done. */
  next(): Promise<Out[] | null>;
  /** The connection is gone, every write completed or failed: release what the source holds. */
  stop?(): void;
}

export interface CloseReason {
  condition?: StreamCondition;
  text?: string;
  /** An application-specific condition (StreamError.app). */
  app?: Element;
  /**
   * The cluster has already let go of this session: its node was fenced
   * (its end is announced by whoever removes the record, membership's join
   * or sweep, once), or another session holds its full JID now (and an
   * unavailable presence from that JID would be taken as the other's). No
   * unbind, no presence broadcast.
   */
  forgotten?: boolean;
  /**
   * On a framed transport that can say it (WebSocket), where the client is
   * to reconnect: the stream ends with <close see-other-uri/> (RFC 7395
   * §3.6.1) instead of the stream error. A byte stream gets the error.
   */
  seeOtherUri?: string;
  /** This node lost its cluster membership (XMPP_SM_DURABLE: the session's durable state stays for the survivors). */
  fenced?: boolean;
}

export type Event =
  | { k: 'start'; name: string; attrs: Record<string, string> }
  // mark: a policy's note on the element as it was read (see StreamEngine.parsed)
  | { k: 'el'; el: Element; cost: number; mark?: number }
  | { k: 'end' }
  | { k: 'error'; condition: StreamCondition; text: string };

/**
 * Reading pauses while more events than MAILBOX_HIGH, or stanzas costing
 * more than MAILBOX_HIGH_COST (their input bytes plus a cost per element
 * and attribute: StreamHandler.element), wait to be handled: a client
 * cannot queue unbounded work, and the memory one connection buffers stays
 * within a few stanzas.
 */
const MAILBOX_HIGH = 64;
const MAILBOX_HIGH_COST = 512 * 1024;
/** Bytes kept in the socket's own buffer; the rest waits in the session's queue. */
const SOCKET_HWM = 64 * 1024;
/** Paced sources are read only while less than this is queued. */
const LOW_WATER = 32 * 1024;
/** The client's own requests wait while this much output is queued for it (their answers would pile up). */
const CONGESTED = 1024 * 1024;
/** Why reading is paused (bits of Session.paused): the read rate, a full mailbox. */
const PAUSED_RATE = 1;
const PAUSED_MAILBOX = 2;
const CLOSE_GRACE_MS = 2000;
/** A read shorter than this counts against XMPP_MAX_READS_PER_SECOND (see tooManyReads). */
const SMALL_READ = 64;
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;
/**
 * The largest SASL message taken, decoded (RFC 6120 §6.4.2 leaves it to the
 * server): far above what any mechanism offered here needs (RFC 4616 asks
 * PLAIN to take 255-octet identities and passwords; SCRAM's messages are a
 * few hundred bytes), and small enough that a huge one costs nothing.
 */
export const MAX_SASL_BYTES = 4096;

/** This thread's streams whose connection is open, of every kind: what /metrics counts by kind and state (metrics/worker.ts). */
export const liveStreams = new Set<StreamEngine>();

export abstract class StreamEngine {
  protected readonly env: EngineEnv;
  /** The stream's id (a client session's, in the registry and in envelopes: a resumed session keeps its own). */
  id = randomBytes(9).toString('base64url');
  state: State = 'wait-stream';
  secure: boolean;
  authenticated = false;
  readonly createdAt = Date.now();
  lastActivity = this.createdAt;

  /** The connection: the TCP socket, or the framed transport. */
  protected readonly raw: Peer;
  /** Where output goes: the TCP socket, the TLS socket over it, or the framed transport. */
  protected socket!: Wire;
  /** A byte stream's TCP socket, which the engine parses and may secure (none on a framed transport). */
  protected readonly tcp: net.Socket | undefined;
  /** A framed transport (RFC 7395): whole elements in, each element out in a frame of its own. */
  protected readonly framed: FramedTransport | undefined;
  /** A byte stream's parser (a framed transport parses its messages itself). */
  protected readonly parser: StreamParser | undefined;
  protected readonly mailbox: Event[] = [];
  /** What the stanzas in the mailbox cost (StreamHandler.element). */
  protected mailboxCost = 0;
  protected busy = false;
  protected headerSent = false;
  /** The client's 'from', echoed as 'to' in our header (RFC 6120 §4.7.2). */
  protected peer: string | undefined;
  protected upgrading = false;
  protected sasl: Mechanism | undefined;
  protected saslName = '';
  /** The mechanism the current SASL attempt named, known or not (for the metrics). */
  private saslAttempt = '';
  /** When the SASL exchange that authenticated this stream began (credentials are read from then on). */
  protected authStartedAt = 0;
  protected authFailures = 0;
  /** PAUSED_* bits: reading resumes when none is left. */
  protected paused = 0;
  protected tokens: number;
  protected refilledAt = Date.now();
  /** Reads (TLS records, TCP reads) in the current second, and when it began (XMPP_MAX_READS_PER_SECOND). */
  protected reads = 0;
  protected readsSince = 0;
  protected resolveDone!: () => void;
  /** Resolves when the connection is fully closed (what was written has been flushed or abandoned). */
  readonly done = new Promise<void>((r) => (this.resolveDone = r));
  protected cleaned = false;
  // Output: the queue not yet handed to the socket, its size, the size of
  // unsolicited output not yet written, and the paced sources.
  protected readonly outq: Out[] = [];
  protected outqLen = 0;
  protected liveLen = 0;
  /** A check of the slow-reader bound is due once pending writes have had their turn (see put). */
  protected slowCheck = false;
  protected outClosed = false;
  /** Writes handed to the socket whose callback has not come yet. */
  protected writing = 0;
  /**
   * Output closed while writes were under way: routed stanzas that come for
   * the session now (or were still queued) wait here, and are rerouted once
   * those writes have ended, after what they reroute: in the order sent
   * (RFC 6120 §10.1), not ahead of what came before them.
   */
  protected late: Out[] | undefined;
  /** XEP-0198 acknowledgements, once the client enabled them. */
  protected acks: Acks | undefined;
  /** The closing tag is queued (finish): nothing may follow it. */
  protected finishing = false;
  protected waitingDrain = false;
  protected readonly sources: Paced[] = [];
  protected pulling = false;
  protected uncongested: (() => void)[] = [];
  /** Waiting for the paced sources to be read to their end. */
  protected drained: (() => void)[] = [];
  /** Why the session ended, for the log line. */
  protected endReason: string | undefined;
  /** The stream's session is being handed to another connection (XEP-0198 §5): the mailbox stops at the next event. */
  protected moving = false;
  /** The JIDs (XmppAddr, RFC 6120 §13.7.1.4) of the peer's certificate, when it presented one that validates against XMPP_TLS_CA. */
  protected certificateJids: string[] | undefined;
  /** The id of our current stream header (what a component's handshake hashes, XEP-0114). */
  protected streamId = '';
  /** The peer sent its closing tag (RFC 6120 §4.4): the stream is over, whatever is still to be handled before it. */
  protected peerClosed = false;
  /** Waiting for the event under way to be handled (idle()); created on first use, as most streams never wait. */
  protected pumpIdle: (() => void)[] | undefined;

  /**
   * Which end of the stream this is (RFC 6120 §4.1): the receiving entity
   * (a connection we accepted) answers headers with its own and offers
   * features; the initiating entity (a stream we open to a peer server)
   * sends its header first, reads the peer's features and negotiates as a
   * client, TLS included.
   */
  protected readonly initiating: boolean;
  /** This stream's logger (see log), made on its first line, and the id it was made for. */
  private logger: Logger | undefined;
  private loggedAs: string | undefined;
  /** The peer's certificate chain, when it presented one (see tlsEstablished). */
  protected peerCertificate: DetailedPeerCertificate | undefined;
  /** The id of the peer's stream header, on an initiating stream (what dialback keys are made of, XEP-0220 §2.1.1). */
  protected peerStreamId = '';

  /** TLS from the first byte (XEP-0368), not STARTTLS. */
  protected readonly tlsFromStart: boolean;

  constructor(env: EngineEnv, conn: net.Socket | FramedTransport, directTls: boolean, initiating = false) {
    this.env = env;
    this.tlsFromStart = directTls;
    this.initiating = initiating;
    this.raw = conn;
    this.secure = false;
    this.tokens = env.config.readRateBytes;
    if (isFramed(conn)) {
      liveStreams.add(this);
      conn.onClose(() => liveStreams.delete(this));
      this.tcp = undefined;
      this.parser = undefined;
      this.framed = conn;
      this.socket = conn;
      // RFC 7395 §3.9: TLS, if any, is the WebSocket's; there is no STARTTLS.
      this.secure = conn.secure;
      conn.onClose(() => this.connectionClosed());
      conn.attach({
        read: (n) => {
          if (this.state === 'closed') return;
          this.lastActivity = Date.now();
          this.throttle(n);
        },
        open: (attrs) => this.post({ k: 'start', name: 'open', attrs }),
        element: (el, cost) => this.parsed(el, cost),
        close: () => {
          this.peerClosed = true;
          this.post({ k: 'end' });
        },
        error: (condition, text) => this.post({ k: 'error', condition, text }),
      });
      return;
    }
    const socket = conn;
    this.tcp = socket;
    this.framed = undefined;
    if (!socket.closed) {
      liveStreams.add(this);
      socket.once('close', () => liveStreams.delete(this));
    }
    this.parser = new StreamParser(
      {
        streamStart: (name, attrs) => this.post({ k: 'start', name, attrs }),
        element: (el, cost) => {
          // Nothing after <starttls/> is read as plaintext (RFC 6120 §5.4.3.3).
          if (this.upgrading) return;
          // The receiving end stops at <starttls/>, the initiating one at <proceed/> (§5.4.2.3).
          if (el.name === (this.initiating ? 'proceed' : 'starttls') && !this.secure) this.upgrading = true;
          this.parsed(el, cost);
        },
        streamEnd: () => {
          this.peerClosed = true;
          this.post({ k: 'end' });
        },
        error: (condition, text) => this.post({ k: 'error', condition, text }),
      },
      { maxStanzaBytes: env.config.maxStanzaBytes, maxStanzaElements: env.config.maxStanzaElements },
    );
    socket.setNoDelay(true);
    socket.on('error', (err) => this.log.debug('socket error', { err: err.message }));
    socket.on('close', () => this.connectionClosed());
    if (directTls) {
      this.socket = this.wrapTls(socket);
    } else {
      this.socket = socket;
      this.listen(socket);
    }
  }

  /**
   * A child logger whose lines carry this stream's sid: made on the first
   * line the stream logs (most log two or three in their life), and again
   * when the id changes (a resumed session takes its predecessor's).
   */
  protected get log(): Logger {
    if (this.loggedAs !== this.id || !this.logger) {
      this.logger = log.child({ sid: this.id });
      this.loggedAs = this.id;
    }
    return this.logger;
  }

  /** What the stream runs over, for an operator: tcp (STARTTLS or not), tls (direct TLS), or the framed transport's kind (websocket, bosh). */
  get transportName(): string {
    return this.framed ? this.framed.kind : this.tlsFromStart ? 'tls' : 'tcp';
  }

  /** §4.2: the initiating entity opens the stream (its policy calls this once its fields are set; over direct TLS, the handshake's end does). */
  protected openStream(): void {
    this.write(this.header());
  }

  // ---- the policy: what the subclass decides ----

  /** What kind of stream this is, for the metrics. */
  abstract get kind(): StreamKind;

  /** What carries it, for the metrics: a byte stream (TCP), WebSocket frames or BOSH requests. */
  get transport(): 'tcp' | FramedTransport['kind'] {
    return this.framed ? this.framed.kind : 'tcp';
  }

  /** The content namespace of this kind of stream (RFC 6120 §4.8.2): jabber:client, jabber:server... */
  protected abstract get contentNamespace(): string;
  /** The domain this side speaks for, in its stream header. */
  protected abstract get localDomain(): string;
  /** Whether a stream 'to' this domain is served here (else host-unknown, §4.9.3.6). */
  protected abstract serves(domain: string): boolean;
  /** The state a stream enters once authenticated and restarted. */
  protected abstract get afterAuthentication(): State;
  /** The SASL mechanisms this stream knows, and those it offers now (§6.3.3). */
  protected abstract saslMechanisms(): { known: readonly MechanismFactory[]; offered: readonly MechanismFactory[] };
  protected abstract saslContext(): MechanismContext;
  /** SASL succeeded (§6.4.6): who the peer is now. */
  protected abstract authenticatedAs(result: Extract<SaslResult, { kind: 'success' }>): void;
  /** Stream features beyond STARTTLS and SASL (those before authentication, and all after it). */
  protected abstract addFeatures(f: Element): void;
  /** An element of the stream once the header was read: the (state, element) dispatch (see negotiate). */
  protected abstract onElement(el: Element): Promise<void>;
  /** Output that will never be written and must not be lost (Out.reroute): it goes where the policy says. */
  protected abstract undeliverable(item: Out): void;
  /** Whether output that comes after the stream closed is still taken (and rerouted): a stream others route to. */
  protected abstract get routable(): boolean;
  /** Output that comes after the stream closed is held, behind the writes under way (see late), or no longer. */
  protected abstract lateHeld(held: boolean): void;
  /** The peer's address once known, for the log. */
  protected abstract get address(): string | undefined;
  /** The stream ended: the policy lets go of what it holds. `forgotten`: see CloseReason. */
  protected abstract ended(forgotten: boolean): void;
  /** The log line for the end of the connection. */
  protected abstract logEnd(): void;

  /** Namespace declarations a kind of stream adds to its header (s2s: the dialback prefix, XEP-0220 §2.1.1). */
  protected get headerDeclarations(): string {
    return '';
  }

  /** A kind of stream older than XMPP 1.0's negotiation (XEP-0114 components): no version, no features, no TLS or SASL. */
  protected get prexmpp(): boolean {
    return false;
  }

  /** A parsed top-level element: queued for handling in order (a policy may handle some as they are read). */
  protected parsed(el: Element, cost: number): void {
    this.post({ k: 'el', el, cost });
  }

  /** After an element was handled (or failed): a policy's bookkeeping. */
  protected afterElement(_ev: Event): void {}

  /** Output for the stream that the policy takes instead (a session without its connection); true when taken. */
  protected divert(_item: Out): boolean {
    return false;
  }

  /** A stanza queued for the peer is counted for XEP-0198 from now on (in stream order). */
  protected tracked(_item: Out): void {}

  /** The peer acknowledged `n` more stanzas, up to its count `h`. */
  protected acknowledged(_n: number, _h: number): void {}

  /** The peer half-closed the connection without a closing tag. */
  protected halfClosed(): void {
    this.endReason ??= 'closed by the client';
    this.close();
  }

  /**
   * The connection is gone without our closing it (a reset, a write error):
   * what still waited for room in the socket goes where undeliverable
   * output goes, behind the writes that failed with it.
   */
  protected connectionClosed(): void {
    this.endReason ??= 'connection lost';
    this.cleanup();
    this.outClosed = true;
    const left = this.outq.splice(0);
    this.outqLen = 0;
    // What the peer did not acknowledge (XEP-0198), then what never
    // reached the socket, then what came for the stream as it closed.
    const unacked = this.acks ? this.acks.unacked.splice(0) : [];
    if (this.acks?.timer) clearTimeout(this.acks.timer);
    const held = this.late ?? [];
    if (this.late) {
      this.late = undefined;
      this.lateHeld(false);
    }
    for (const item of [...unacked, ...left, ...held]) this.reroute(item);
    this.logEnd();
    // Every write has completed or failed by now: the sources may let go.
    for (const src of this.sources.splice(0)) src.stop?.();
    for (const w of [...this.uncongested.splice(0), ...this.drained.splice(0)]) w();
    this.resolveDone();
  }


  protected listen(sock: net.Socket): void {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('end', () => this.halfClosed());
    sock.resume();
  }

  /** Whether the TLS handshake asks the peer for a certificate (the receiving end; one that validates may stand for SASL EXTERNAL). */
  protected get asksCertificate(): boolean {
    return this.env.config.tlsCa !== '';
  }

  /** The server name an initiating stream asks for in its TLS handshake (SNI): the peer's domain. */
  protected get serverName(): string | undefined {
    return undefined;
  }

  /** The protocols an initiating stream offers in its TLS handshake (ALPN; XEP-0368 for direct TLS). */
  protected get alpn(): string[] | undefined {
    return undefined;
  }

  /**
   * TLS is in place: what the peer's certificate says. A client's names an
   * account (XmppAddr) when it chains up to XMPP_TLS_CA; a peer server's is
   * judged by its policy.
   */
  protected tlsEstablished(): void {
    const chain = this.peerCertificate;
    if (chain && this.asksCertificate && chainValid(chain, this.env.trustAnchors ?? [])) this.certificateJids = xmppAddrs(chain.subjectaltname);
  }

  protected wrapTls(raw: net.Socket): tls.TLSSocket {
    const t = this.initiating
      ? // Validated after the handshake (tls/trust.ts): a peer whose certificate does not validate may still be accepted by dialback (XMPP_S2S_SECURE_AUTH=false).
        tls.connect({ socket: raw, secureContext: this.env.secureContext, servername: this.serverName, rejectUnauthorized: false, ...(this.alpn ? { ALPNProtocols: this.alpn } : {}) })
      : new tls.TLSSocket(raw, { isServer: true, secureContext: this.env.secureContext, requestCert: this.asksCertificate, rejectUnauthorized: false });
    // A client's renegotiation (TLS 1.2 and older) costs a handshake each time and is never needed: refused, as Prosody does (the connection ends).
    if (!this.initiating) {
      refuseRenegotiation(t, (err) => {
        this.log.info('TLS renegotiation refused: disconnected', { jid: this.address, ip: this.raw.remoteAddress, port: this.raw.remotePort, err: err.message });
        this.endReason ??= 'TLS renegotiation refused';
        this.raw.destroy();
      });
    }
    t.once(this.initiating ? 'secureConnect' : 'secure', () => {
      this.peerCertificate = peerChain(t);
      this.tlsEstablished();
      this.secure = true;
      this.upgrading = false;
      this.restart();
    });
    t.on('error', (err) => {
      // RFC 6120 §5.4.3.2: on TLS failure the server closes the TCP connection.
      // A connection that never opened a stream (a load balancer's health
      // check, a port scan) is no news.
      (this.authenticated || this.initiating ? this.log.info : this.log.debug)('TLS negotiation failed', { ip: this.raw.remoteAddress, port: this.raw.remotePort, err: err.message });
      this.endReason ??= `TLS failed: ${err.message}`;
      this.raw.destroy();
    });
    this.listen(t);
    return t;
  }

  protected onData(chunk: Buffer): void {
    if (this.state === 'closed' || this.upgrading) return;
    this.lastActivity = Date.now();
    if (this.tooManyReads(chunk.length)) return;
    this.throttle(chunk.length);
    this.parser!.write(chunk);
  }

  /**
   * Counts a small read (each TLS record is a read): a client sending
   * records of a byte or two makes every byte cost a decryption, an event
   * and a parse, which the byte rate does not see. Past
   * XMPP_MAX_READS_PER_SECOND small ones in one second the stream ends with
   * policy-violation (logged); true then. Reads of SMALL_READ bytes or more
   * are not counted: a client sending thousands of stanzas a second (a
   * bridge, a bot) sends a record per stanza, and the byte rate bounds those.
   */
  protected tooManyReads(bytes: number): boolean {
    const max = this.env.config.maxReadsPerSecond;
    if (max === 0 || bytes >= SMALL_READ || !this.readsBounded) return false;
    const now = this.lastActivity;
    if (now - this.readsSince >= 1000) {
      this.readsSince = now;
      this.reads = 0;
    }
    if (++this.reads <= max) return false;
    this.log.warn('too many reads per second: disconnected', { jid: this.address, ip: this.raw.remoteAddress, port: this.raw.remotePort, reads: this.reads, max });
    this.readsExceeded();
    this.socket.pause();
    this.endReason = 'too many reads per second';
    this.close({ condition: 'policy-violation', text: `more than ${max} reads (TLS records) in a second` });
    return true;
  }

  /**
   * Whether XMPP_MAX_READS_PER_SECOND applies: to every stream, except a
   * server-to-server one once its peer is authenticated, which may carry
   * many small stanzas of many users a second (and whose bytes are still
   * bounded by the read rate).
   */
  protected get readsBounded(): boolean {
    return true;
  }

  /** A policy's note that a connection was ended for too many reads (counted by the node). */
  protected readsExceeded(): void {}

  /** Shapes reading to readRateBytes per second: a flood is slowed, not dropped. */
  protected throttle(n: number): void {
    const rate = this.env.config.readRateBytes;
    if (rate === 0) return;
    const now = Date.now();
    this.tokens = Math.min(rate, this.tokens + ((now - this.refilledAt) * rate) / 1000);
    this.refilledAt = now;
    this.tokens -= n;
    if (this.tokens < 0 && !(this.paused & PAUSED_RATE)) {
      this.pause(PAUSED_RATE);
      setTimeout(() => this.unpause(PAUSED_RATE), Math.ceil((-this.tokens * 1000) / rate)).unref();
    }
  }

  protected pause(why: number): void {
    this.paused |= why;
    this.socket.pause();
  }

  protected unpause(why: number): void {
    this.paused &= ~why;
    if (this.paused === 0 && this.state !== 'closed') this.socket.resume();
  }

  // ---- the mailbox: one event at a time, in order ----

  protected post(ev: Event): void {
    this.mailbox.push(ev);
    if (ev.k === 'el') {
      this.mailboxCost += ev.cost;
      metrics.stanzaIn(ev.el.name, metrics.sourceOf(this.kind));
    }
    if ((this.mailbox.length > MAILBOX_HIGH || this.mailboxCost > MAILBOX_HIGH_COST) && !(this.paused & PAUSED_MAILBOX)) this.pause(PAUSED_MAILBOX);
    if (!this.busy) void this.pump();
  }

  protected async pump(): Promise<void> {
    this.busy = true;
    try {
      while (this.mailbox.length > 0 && this.state !== 'closed') {
        // A client that does not read its answers is not served more of them.
        while (this.outqLen > CONGESTED && !this.socket.destroyed && !this.outClosed && !this.moving) await new Promise<void>((r) => this.uncongested.push(r));
        if (this.outClosed || this.moving) break;
        const ev = this.mailbox.shift()!;
        if (ev.k === 'el') this.mailboxCost -= ev.cost;
        try {
          await this.handle(ev);
          this.afterElement(ev);
          // What a stanza causes is written before the next is handled, the
          // login burst included (paced: as fast as the client reads it).
          while (this.sources.length > 0 && !this.outClosed && !this.socket.destroyed && !this.moving) await new Promise<void>((r) => this.drained.push(r));
        } catch (err) {
          this.afterElement(ev);
          this.failed(err);
        }
      }
    } finally {
      this.busy = false;
      if (this.paused & PAUSED_MAILBOX && this.mailbox.length === 0) this.unpause(PAUSED_MAILBOX);
      if (this.pumpIdle) for (const w of this.pumpIdle.splice(0)) w();
    }
  }

  /** Resolves once no event is being handled (the one under way, if any, is done). */
  protected idle(): Promise<void> {
    return this.busy ? new Promise((r) => (this.pumpIdle ??= []).push(r)) : Promise.resolve();
  }

  /** Work on an element as it is read, ahead of the mailbox (a policy's immediate nonzas); what it throws ends the stream as in the mailbox. */
  protected immediately(handler: () => void | Promise<void>): void {
    try {
      void Promise.resolve(handler()).catch((err: unknown) => this.failed(err));
    } catch (err) {
      this.failed(err);
    }
  }

  /** What handling an element threw: its stream error, or internal-server-error (logged). */
  protected failed(err: unknown): void {
    if (err instanceof StreamError) this.close({ condition: err.condition, text: err.message === err.condition ? undefined : err.message, app: err.app });
    else {
      this.log.error('session failed', { err: (err as Error).stack ?? String(err) });
      this.close({ condition: 'internal-server-error' });
    }
  }

  protected async handle(ev: Event): Promise<void> {
    switch (ev.k) {
      case 'start':
        return this.onStreamStart(ev.name, ev.attrs);
      case 'end':
        // RFC 6120 §4.4: answer the closing tag with ours, then close.
        return this.close();
      case 'error':
        return this.close({ condition: ev.condition, text: ev.text });
      case 'el':
        return this.onElement(ev.el);
    }
  }

  // ---- stream header (RFC 6120 §4.7, §4.8) ----

  protected onStreamStart(name: string, attrs: Record<string, string>): void {
    if (this.state !== 'wait-stream') throw new StreamError('not-well-formed', 'a stream header inside the stream');
    if (!this.initiating) this.peer = attrs.from === undefined ? undefined : flat(attrs.from);
    // A framed transport's header is its <open/>, whose namespace it checked (RFC 7395 §3.3.2).
    if (!this.framed) {
      const colon = name.indexOf(':');
      const prefix = colon === -1 ? '' : name.slice(0, colon);
      const local = colon === -1 ? name : name.slice(colon + 1);
      const streamNs = prefix ? attrs[`xmlns:${prefix}`] : attrs.xmlns;
      if (prefix && streamNs === undefined) throw new StreamError('bad-namespace-prefix', `prefix ${prefix} is not declared`);
      if (local !== 'stream' || streamNs !== NS_STREAM) throw new StreamError('invalid-namespace', `the stream element must be <stream xmlns='${NS_STREAM}'>`);
      // §4.8.2: the content namespace is the kind of stream's.
      if (prefix && attrs.xmlns !== this.contentNamespace) throw new StreamError('invalid-namespace', `the content namespace must be ${this.contentNamespace}`);
    }
    if (attrs.to !== undefined) {
      let to: string;
      try {
        to = normalizeDomain(attrs.to);
      } catch {
        throw new StreamError('improper-addressing', `'to' is not a domain`);
      }
      if (!this.serves(to)) throw new StreamError('host-unknown', `${attrs.to} is not served here`);
    }
    if (this.initiating) {
      // The peer's answer to our header: its features follow, for the policy to act on.
      if (attrs.version === undefined || !/^1\.\d+$/.test(attrs.version)) throw new StreamError('unsupported-version', 'this server speaks version 1.0');
      this.peerStreamId = attrs.id ?? '';
      this.state = this.authenticated ? this.afterAuthentication : 'negotiating';
      return;
    }
    if (this.prexmpp) {
      // A stream of the kind that predates stream features (XEP-0114): no version, no features.
      this.state = 'negotiating';
      this.write(this.header());
      return;
    }
    // §4.7.5: a missing version means 0.9; we speak 1.x only.
    const version = attrs.version;
    if (version === undefined) throw new StreamError('unsupported-version', 'this server requires version 1.0');
    const m = /^(\d+)\.(\d+)$/.exec(version);
    if (!m) throw new StreamError('bad-format', `version ${JSON.stringify(version)} is not MAJOR.MINOR`);
    if (Number(m[1]) !== 1) throw new StreamError('unsupported-version', 'this server speaks version 1.0');
    this.state = this.authenticated ? this.afterAuthentication : 'negotiating';
    // Header and features in one write (one TCP segment): some clients and
    // load tools take the first packet after their request as its answer.
    this.write(this.header() + this.streamFeatures().toString());
  }

  /** Our stream header, once per stream; '' when it was sent already. */
  protected header(): string {
    if (this.headerSent) return '';
    this.headerSent = true;
    const d = this.localDomain;
    const to = this.peer !== undefined ? ` to='${escapeXML(this.peer)}'` : '';
    // §4.7.3: only the receiving entity gives the stream an id.
    this.streamId = this.initiating ? '' : randomBytes(12).toString('base64url');
    const version = this.prexmpp ? '' : ` version='1.0'`;
    const attrs = `${this.streamId ? ` id='${this.streamId}'` : ''} from='${escapeXML(d)}'${to}${version} xml:lang='en'`;
    if (this.framed) return this.framed.header(attrs);
    return `<?xml version='1.0'?><stream:stream xmlns='${this.contentNamespace}' xmlns:stream='${NS_STREAM}'${this.headerDeclarations}${attrs}>`;
  }

  /** The end of our stream (RFC 6120 §4.4; RFC 7395 §3.6 on a framed transport). */
  protected get footer(): string {
    return this.framed ? this.framed.footer : '</stream:stream>';
  }

  /** Whether TLS is mandatory-to-negotiate on this stream (RFC 6120 §5.3.1): XMPP_TLS_REQUIRED for clients. */
  protected get tlsMandatory(): boolean {
    return this.env.config.tlsRequired;
  }

  /** Whether authentication may happen on this stream yet (RFC 6120 §5.3.1). */
  protected get mayAuthenticate(): boolean {
    return this.secure || !this.tlsMandatory;
  }
  /** Header's features: STARTTLS and SASL before authentication, then the policy's (§4.3.2). */
  protected streamFeatures(): Element {
    const f = new Element('stream:features');
    if (!this.authenticated) {
      // RFC 7395 §3.9: never STARTTLS on a framed transport.
      if (!this.secure && !this.framed) {
        const st = f.c('starttls', { xmlns: NS_TLS });
        if (this.tlsMandatory) st.c('required');
      }
      if (this.mayAuthenticate) {
        const mechs = f.c('mechanisms', { xmlns: NS_SASL });
        for (const m of this.saslMechanisms().offered) mechs.c('mechanism').t(m.name);
      }
    }
    this.addFeatures(f);
    return f;
  }

  protected restart(): void {
    this.state = 'wait-stream';
    this.headerSent = false;
    this.parser?.reset();
    // §5.4.3.3, §6.4.6: the initiating entity opens the new stream.
    if (this.initiating) this.openStream();
  }
  /** While negotiating: STARTTLS and SASL are the engine's; true when the element was one of theirs. */
  protected async negotiate(el: Element): Promise<boolean> {
    const ns = el.attrs.xmlns;
    if (el.name === 'starttls' && ns === NS_TLS) {
      this.startTls();
      return true;
    }
    if (ns === NS_SASL) {
      await this.onSasl(el);
      return true;
    }
    return false;
  }

  // ---- STARTTLS (RFC 6120 §5.4) ----

  protected startTls(): void {
    if (this.secure || this.framed) {
      // §5.4.2.2: TLS cannot start (it is already in place, or belongs to the framing, RFC 7395 §3.9): <failure/>, then close.
      this.endReason = this.framed ? 'STARTTLS on a framed transport' : 'STARTTLS on a secure stream';
      this.finish(`<failure xmlns='${NS_TLS}'/>${this.footer}`);
      return;
    }
    this.write(`<proceed xmlns='${NS_TLS}'/>`);
    this.upgradeToTls();
  }

  /** The TLS handshake begins on the connection (after <proceed/>, sent or read): nothing more is read in plaintext. */
  protected upgradeToTls(): void {
    const tcp = this.tcp!;
    tcp.removeAllListeners('data');
    tcp.removeAllListeners('end');
    this.upgrading = true;
    this.socket = this.wrapTls(tcp);
  }

  // ---- SASL (RFC 6120 §6) ----

  /** The node's record of failed authentications (client streams): a growing delay, then a temporary refusal; undefined: none. */
  protected get authGuard(): NodeGuard | undefined {
    return undefined;
  }

  /** The peer's address as the guard counts it: the client's, also behind a trusted proxy. */
  protected get peerAddress(): string {
    return this.raw.remoteAddress ?? '';
  }

  protected async onSasl(el: Element): Promise<void> {
    if (el.name === 'auth') {
      if (this.sasl) return this.saslFail(new SaslFailure('malformed-request', 'an exchange is already in progress'));
      this.saslAttempt = el.attrs.mechanism ?? '';
      if (!this.mayAuthenticate) return this.saslFail(new SaslFailure('encryption-required', 'negotiate TLS first'));
      const name = el.attrs.mechanism;
      // RFC 6120 §6.5.7: no mechanism named is invalid-mechanism.
      if (!name) return this.saslFail(new SaslFailure('invalid-mechanism', 'no mechanism named'));
      const { known, offered } = this.saslMechanisms();
      const factory = known.find((m) => m.name === name);
      if (!factory) return this.saslFail(new SaslFailure('invalid-mechanism', `${name} is not supported`));
      if (!offered.includes(factory)) {
        return this.saslFail(new SaslFailure(factory.name === 'PLAIN' && !this.secure ? 'mechanism-too-weak' : 'invalid-mechanism', `${name} is not offered here`));
      }
      const initial = decodeSasl(el.getText());
      if (initial instanceof SaslFailure) return this.saslFail(initial);
      // An address that failed too often lately is refused before any work (RFC 6120 §6.5.11: try again later).
      const left = (await this.authGuard?.check(this.peerAddress)) ?? 0;
      if (this.state === 'closed') return;
      if (left > 0) return this.saslFail(new SaslFailure('temporary-auth-failure', `too many failed attempts from your address: try again in ${Math.ceil(left / 1000)} s`));
      this.sasl = factory.create(this.saslContext());
      this.saslName = factory.name;
      this.authStartedAt = Date.now();
      return this.saslStep(() => this.sasl!.start(initial));
    }
    if (el.name === 'response') {
      if (!this.sasl) return this.saslFail(new SaslFailure('malformed-request', 'no exchange in progress'));
      const data = decodeSasl(el.getText());
      if (data instanceof SaslFailure) return this.saslFail(data);
      return this.saslStep(() => this.sasl!.step(data ?? Buffer.alloc(0)));
    }
    if (el.name === 'abort') {
      this.sasl = undefined;
      // §6.4.4: the receiving entity returns <failure><aborted/></failure>.
      this.write(new SaslFailure('aborted').toElement().toString());
      return;
    }
    throw new StreamError('policy-violation', `<${el.name}/> is not a SASL request`);
  }

  protected async saslStep(step: () => Promise<SaslResult>): Promise<void> {
    let r: SaslResult;
    try {
      r = await step();
    } catch (err) {
      if (err instanceof SaslFailure) return this.saslFail(err);
      // The worker's password hashings are queued to the bound: refused at once rather than left to time out (RFC 6120 §4.9.3.17).
      if (err instanceof Saturated) {
        this.endReason = 'the server is busy (password hashing queue full)';
        throw new StreamError('resource-constraint', 'the server is too busy to check passwords now: try again later');
      }
      this.log.error('SASL mechanism failed', { err: String(err) });
      return this.saslFail(new SaslFailure('temporary-auth-failure'));
    }
    if (this.state === 'closed') return;
    if (r.kind === 'challenge') {
      this.write(`<challenge xmlns='${NS_SASL}'>${r.data.toString('base64')}</challenge>`);
      return;
    }
    this.sasl = undefined;
    this.authenticated = true;
    metrics.login(this.saslName, this.kind);
    if (r.username !== null) this.authGuard?.succeeded(this.peerAddress, r.username);
    this.authenticatedAs(r);
    const data = r.data && r.data.length > 0 ? r.data.toString('base64') : '';
    this.write(data ? `<success xmlns='${NS_SASL}'>${data}</success>` : `<success xmlns='${NS_SASL}'/>`);
    this.restart(); // §6.4.6: both sides restart the stream
  }

  protected async saslFail(f: SaslFailure): Promise<void> {
    const attempted = this.sasl?.attempted;
    this.sasl = undefined;
    metrics.loginFailure(this.saslAttempt, f.condition, this.kind);
    // Wrong credentials count against the address and the account; past a few, the answer waits longer each time.
    const guard = f.condition === 'not-authorized' ? this.authGuard : undefined;
    const delayMs = guard ? await guard.failed(this.peerAddress, attempted === undefined ? null : accountKey(attempted)) : 0;
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    if (this.state === 'closed') return;
    this.write(f.toElement().toString());
    const fields = { user: attempted, mechanism: this.saslName || undefined, ip: this.raw.remoteAddress, port: this.raw.remotePort, reason: f.message === f.condition ? f.condition : `${f.condition}: ${f.message}`, ...(delayMs > 0 ? { delayMs } : {}) };
    if (f.condition === 'aborted') {
      this.log.info('authentication aborted', fields);
      return;
    }
    this.log.info('authentication failed', fields);
    // §6.4.5: a limited number of retries, then the stream is closed.
    if (++this.authFailures >= this.env.config.maxAuthAttempts) {
      this.log.warn('too many failed authentication attempts', { ip: this.raw.remoteAddress, port: this.raw.remotePort });
      this.close({ condition: 'policy-violation', text: 'too many failed authentication attempts' });
    }
  }

  // ---- output ----
  //
  // Everything for the client goes through one queue, in order. At most
  // SOCKET_HWM bytes sit in the socket's buffer; the rest waits here and is
  // written as the client reads. Only unsolicited output (stanzas routed
  // here by others) counts toward the slow-reader bound: the client's own
  // answers hold back its next requests instead (the mailbox waits), and
  // what the server sends at login comes from paced sources, read only when
  // the queue is low. A routed message that cannot be written is rerouted,
  // never dropped.

  /** An answer or a server-made stanza for this client. */
  send(el: Element): void {
    this.put({ xml: el.toString() });
  }

  /** Adds a paced source (see Paced), read after those added before it. */
  pace(src: Paced): void {
    if (this.state === 'closed') {
      src.stop?.();
      return;
    }
    this.sources.push(src);
    this.pull();
  }

  protected write(s: string): void {
    this.put({ xml: s, nonza: true });
  }

  /** A stream-level element a module answers with (not a stanza: not counted by XEP-0198). */
  sendNonza(xml: string): void {
    this.put({ xml, nonza: true });
  }

  // ---- acknowledgements (XEP-0198 §4) ----

  get acksEnabled(): boolean {
    return this.acks !== undefined;
  }

  /** Stanzas from the client handled since acknowledgements began (the h we report). */
  get handled(): number {
    return this.acks?.handled ?? 0;
  }

  /**
   * From now on a stanza sent to the client is done only once the client
   * acknowledges it: until then it is kept, and if the connection ends
   * first it goes where undeliverable stanzas go.
   */
  enableAcks(): void {
    this.acks ??= { unacked: [], unackedBytes: 0, acked: 0, handled: 0, sinceRequest: 0, timer: undefined, overflow: false };
  }

  /** The client's <a h=.../>: what it acknowledged is done. */
  ack(h: number): void {
    const a = this.acks;
    if (!a) return;
    const n = countSince(h, a.acked);
    // XEP-0198 §4: more than was sent is an error of the client's.
    if (n > a.unacked.length) {
      const sent = (a.acked + a.unacked.length) >>> 0;
      throw new StreamError('undefined-condition', `handled count too high: h=${h}, but ${sent} sent`, new Element('handled-count-too-high', { xmlns: NS_SM, h: String(h), 'send-count': String(sent) }));
    }
    a.acked = h >>> 0;
    const done = a.unacked.splice(0, n);
    // Said once the queue no longer holds them.
    if (n > 0) this.acknowledged(n, a.acked);
    for (const it of done) {
      a.unackedBytes -= it.xml.length;
      it.delivered?.();
    }
    if (a.unacked.length === 0 && a.timer) {
      clearTimeout(a.timer);
      a.timer = undefined;
    }
  }

  protected requestAck(): void {
    const a = this.acks!;
    a.sinceRequest = 0;
    if (a.timer) clearTimeout(a.timer);
    a.timer = undefined;
    if (!this.outClosed) this.put({ xml: `<r xmlns='${NS_SM}'/>`, nonza: true });
  }

  protected put(item: Out): void {
    if (this.divert(item)) return;
    if (this.outClosed || this.socket.destroyed) {
      this.unwritten(item);
      return;
    }
    // Counted from <enabled/> on, in the order of the stream (XEP-0198 §4).
    if (this.acks && !item.nonza) item.tracked = true;
    this.outq.push(item);
    this.outqLen += item.xml.length;
    // Said once the queue holds it.
    if (item.tracked) this.tracked(item);
    if (item.live) {
      this.liveLen += item.xml.length;
      // A reader this slow would make us buffer without bound. Stanzas that
      // come together (a batch from another worker, a burst of rerouted
      // ones) sit in TLS's buffer until the writes under way complete, even
      // for a reader that takes everything: the bound is judged once those
      // writes had their turn, and past four times it at once, so that no
      // burst makes the buffer unbounded.
      const bound = this.env.config.maxOutboundBytes;
      if (this.liveLen > 4 * bound) return this.slowReader();
      if (this.liveLen > bound && !this.slowCheck) {
        this.slowCheck = true;
        setImmediate(() => {
          this.slowCheck = false;
          if (this.liveLen > bound && !this.outClosed && !this.socket.destroyed) this.slowReader();
        });
      }
    }
    this.flush();
  }

  /** Hands queued output to the socket, up to SOCKET_HWM unless `all`. */
  protected flush(all = false): void {
    const sock = this.socket;
    if (sock.destroyed) return;
    while (this.outq.length > 0 && (all || sock.writableLength < SOCKET_HWM)) {
      const item = this.outq.shift()!;
      this.outqLen -= item.xml.length;
      this.writing++;
      const a = this.acks;
      if (a && item.tracked) {
        a.unacked.push(item);
        a.unackedBytes += item.xml.length;
        a.sinceRequest++;
        a.timer ??= setTimeout(() => this.acks && this.acks.unacked.length > 0 && this.requestAck(), ACK_AFTER_MS).unref();
      }
      if (!item.nonza) metrics.stanzaOut(item.xml, metrics.sourceOf(this.kind));
      sock.write(item.xml, (err) => this.afterWrite(item, err));
    }
    const a = this.acks;
    if (a && !this.outClosed && !this.finishing && !a.overflow) {
      // A client that takes stanzas and never acknowledges them would make us keep them without bound.
      if (a.unackedBytes > this.env.config.maxOutboundBytes) {
        a.overflow = true;
        this.endReason = 'too many unacknowledged stanzas';
        this.close({ condition: 'policy-violation', text: 'too many unacknowledged stanzas' });
        return;
      }
      if (a.sinceRequest >= ACK_EVERY) this.requestAck();
    }
    if (this.outq.length > 0 && !this.waitingDrain) {
      this.waitingDrain = true;
      sock.once('drain', () => {
        this.waitingDrain = false;
        this.flush();
      });
    }
    if (this.outqLen <= CONGESTED && this.uncongested.length > 0) for (const w of this.uncongested.splice(0)) w();
    this.pull();
  }

  protected afterWrite(item: Out, err: Error | null | undefined): void {
    this.writing--;
    if (item.live) this.liveLen -= item.xml.length;
    if (!err) {
      // A tracked stanza is the client's once it acknowledges it (or rerouted at the end).
      if (!item.tracked) item.delivered?.();
      item.written?.();
    } else if (!item.tracked) this.reroute(item); // ahead of anything held in `late`
    if (this.writing === 0 && this.late && !this.acks) {
      const held = this.late;
      this.late = undefined;
      this.lateHeld(false);
      for (const it of held) this.reroute(it);
    }
    // The socket's buffer went down: a paced source may be read again.
    if (this.sources.length > 0) this.pull();
  }

  /** Output that will never be written: a routed stanza goes where undeliverable ones go, behind writes under way. */
  protected unwritten(item: Out): void {
    if (this.late && item.reroute) this.late.push(item);
    else this.reroute(item);
  }
  protected reroute(item: Out): void {
    if (item.reroute) this.undeliverable(item);
  }

  /** No more output; with writes still under way, what comes for the session now waits behind them (see `late`). */
  protected closeOutput(): void {
    this.outClosed = true;
    // With acknowledgements, nothing is settled before the connection is gone.
    if ((this.writing > 0 || this.acks) && this.late === undefined && this.routable) {
      this.late = [];
      this.lateHeld(true);
    }
  }

  /** Reads the first paced source when the output is low. */
  protected pull(): void {
    if (this.sources.length === 0 && this.drained.length > 0) for (const w of this.drained.splice(0)) w();
    if (this.pulling || this.sources.length === 0 || this.outClosed || this.socket.destroyed) return;
    if (this.outqLen + this.socket.writableLength >= LOW_WATER) return;
    const src = this.sources[0];
    this.pulling = true;
    const failed = (err: unknown) => {
      this.pulling = false;
      this.log.warn('paced output failed', { jid: this.address, err: String(err) });
      if (this.sources[0] === src) this.sources.shift();
      src.stop?.();
      this.pull();
    };
    src.next().then((items) => {
      try {
        this.pulling = false;
        if (items === null) {
          if (this.sources[0] === src) this.sources.shift();
        } else for (const it of items) this.put(it);
        this.pull();
      } catch (err) {
        failed(err);
      }
    }, failed);
  }

  protected slowReader(): void {
    this.log.warn('slow reader disconnected', { jid: this.address, ip: this.raw.remoteAddress, port: this.raw.remotePort, queued: this.liveLen + this.outqLen });
    this.endReason = 'slow reader';
    this.state = 'closed';
    this.closeOutput();
    // Out of the routing tables first: what is rerouted must not come back here.
    this.cleanup();
    const left = this.outq.splice(0);
    this.outqLen = 0;
    // Writes under way fail with the socket and are rerouted from afterWrite.
    this.socket.destroy();
    for (const item of left) this.unwritten(item);
  }

  /** False once the stream is closed. */
  get open(): boolean {
    return this.state !== 'closed';
  }

  /**
   * Ends the stream, with a stream error when a condition is given (RFC
   * 6120 §4.9.1). What was queued is written first; what the client does
   * not read within the grace period is rerouted.
   */
  close(reason: CloseReason = {}): void {
    if (this.state === 'closed') return;
    const redirect = reason.seeOtherUri !== undefined ? this.framed?.redirect?.(reason.seeOtherUri) : undefined;
    if (redirect !== undefined) {
      this.log.debug('stream redirected', { jid: this.address, to: reason.seeOtherUri, why: reason.condition });
      this.endReason ??= `redirected to ${reason.seeOtherUri}${reason.condition ? ` (${reason.condition})` : ''}`;
      return this.finish(redirect, reason.forgotten);
    }
    let out = '';
    if (reason.condition) {
      // §4.9.1.2: a stream error needs an open stream.
      out = this.header() + new StreamError(reason.condition, reason.text, reason.app).toElement().toString();
      (reason.condition === 'system-shutdown' || !this.address ? this.log.debug : this.log.info)('stream error', { jid: this.address, condition: reason.condition, text: reason.text });
    }
    this.endReason ??= reason.condition ? `stream error ${reason.condition}${reason.text ? `: ${reason.text}` : ''}` : 'closed by the server';
    this.finish(`${out}${this.footer}`, reason.forgotten);
  }

  /** Writes what is queued and `last`, ends the connection, and gives the peer CLOSE_GRACE_MS to read it. */
  protected finish(last: string, forgotten?: boolean): void {
    this.put({ xml: last, nonza: true });
    // Nothing after the closing tag: no ack request, no second close (flush's checks).
    this.finishing = true;
    this.flush(true);
    this.closeOutput();
    this.state = 'closed';
    this.socket.end();
    // The peer should answer with its closing tag; do not wait forever.
    setTimeout(() => this.raw.destroy(), CLOSE_GRACE_MS).unref();
    this.cleanup(forgotten);
  }
  /** Ends the connection with `last` as its final words, without the engine's own closing (the stream was given up), and gives the peer CLOSE_GRACE_MS to read them. */
  protected abandon(last: string): void {
    this.socket.end(last);
    setTimeout(() => this.raw.destroy(), CLOSE_GRACE_MS).unref();
  }

  /** The stream is over for the policy (once): its tables, its peers' view of it. */
  protected cleanup(forgotten = false): void {
    this.state = 'closed';
    if (this.cleaned) return;
    this.cleaned = true;
    this.ended(forgotten);
    this.mailbox.length = 0;
  }
}

/** SASL data is base64; "=" is an empty response, no text is none (RFC 6120 §6.4.2). */
function decodeSasl(text: string): Buffer | null | SaslFailure {
  const t = text.trim();
  if (t === '') return null;
  if (t === '=') return Buffer.alloc(0);
  // Refused before it is decoded: what a mechanism's message may be is bounded (see MAX_SASL_BYTES).
  if (t.length > Math.ceil(MAX_SASL_BYTES / 3) * 4) return new SaslFailure('malformed-request', `SASL messages are limited to ${MAX_SASL_BYTES} bytes`);
  if (t.length % 4 !== 0 || !B64.test(t)) return new SaslFailure('incorrect-encoding', 'the data is not base64');
  return Buffer.from(t, 'base64');
}
