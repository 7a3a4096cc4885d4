// A client connection as an actor: it owns its socket, parser and stream
// state, and handles its events one at a time, in order, through a mailbox.
// The stream state is explicit and every (state, element) pair has a
// defined answer (RFC 6120 §4–§7).
import type net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { Element, escapeXML, parse as parseXml } from 'ltx';
import { StreamParser } from '../xml/parser.ts';
import { StreamError, StanzaError, SaslFailure, errorReply } from '../xmpp/errors.ts';
import type { StreamCondition } from '../xmpp/errors.ts';
import { NS_SM, NS_STREAM, NS_CLIENT, NS_TLS, NS_SASL, NS_BIND, NS_SESSION, NS_REGISTER, NS_REGISTER_FEATURE } from '../xmpp/ns.ts';
import { normalizeDomain, normalizeResource, JidError } from '../xmpp/jid.ts';
import { MECHANISMS } from '../sasl/mechanism.ts';
import type { Mechanism, SaslResult } from '../sasl/mechanism.ts';
import type { NonzaHandler } from '../modules/module.ts';
import { randomResource } from '../registry/registry.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { registerUnauthenticated } from '../modules/register.ts';
import { NS_ROSTERVER } from '../modules/roster.ts';
import { priorityOf } from '../presence/presence.ts';
import type { WorkerContext } from '../worker/context.ts';
import { flat } from '../xml/retain.ts';
import { log } from '../log.ts';

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
  /** Handed to the socket with acknowledgements on: settled by an ack, or rerouted when the connection ends. */
  tracked?: boolean;
}

/**
 * A session on its way from one connection to another (XEP-0198 §5), on
 * this worker or across the cluster: everything the client's session is,
 * apart from its connection. What waits in `queue` is what the client has
 * not acknowledged, then what was never sent, in order.
 */
export interface Handoff {
  sid: string;
  jid: string;
  bare: string;
  available: boolean;
  priority: number;
  lastPresence?: string;
  directed?: string[];
  carbons: boolean;
  rosterRequested: boolean;
  createdAt: number;
  token: string;
  resumeMs: number;
  /** Our h: stanzas from the client handled. */
  handled: number;
  /** The client's h, which the queue follows. */
  acked: number;
  queue: { xml: string; reroute?: Reroute }[];
}

/** Why a handoff was refused: the session is gone (or going), or the client claims more than was sent. */
export type HandoffRefusal = { gone: true } | { gone: false; sent: number };

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
}

type Event =
  | { k: 'start'; name: string; attrs: Record<string, string> }
  | { k: 'el'; el: Element; cost: number; presence?: number }
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
const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class Session {
  readonly ctx: WorkerContext;
  /** The session's id, in the registry and in envelopes: a resumed session keeps its own (adopt). */
  id = randomBytes(9).toString('base64url');
  state: State = 'wait-stream';
  secure: boolean;
  authenticated = false;
  /** Normalised localpart of the account; null for ANONYMOUS. */
  username: string | null = null;
  anonLocal: string | undefined;
  jid: string | undefined;
  bare: string | undefined;
  available = false;
  /** RFC 6121 §2.1.6: this resource requested the roster (an "interested resource"): it gets roster pushes. */
  rosterRequested = false;
  priority = 0;
  /** The last available presence this session broadcast: the answer to probes (RFC 6121 §4.3.2). */
  lastPresence: Element | undefined;
  /** Who got directed presence from this session while available (RFC 6121 §4.6); created on first use, as most sessions send none. */
  directed: Set<string> | undefined;
  /** XEP-0280: this resource gets carbon copies. */
  carbons = false;
  /**
   * The broadcast presence received last and not yet processed (its
   * availability and priority): routing sees it from the moment it is read
   * (a message right after initial presence is delivered, not stored).
   */
  announced: { available: boolean; priority: number } | undefined;
  private presenceSeq = 0;
  readonly createdAt = Date.now();
  lastActivity = this.createdAt;

  private readonly raw: net.Socket;
  private socket: net.Socket;
  private readonly parser: StreamParser;
  private readonly mailbox: Event[] = [];
  /** What the stanzas in the mailbox cost (StreamHandler.element). */
  private mailboxCost = 0;
  private busy = false;
  private headerSent = false;
  /** The client's 'from', echoed as 'to' in our header (RFC 6120 §4.7.2). */
  private peer: string | undefined;
  private upgrading = false;
  private sasl: Mechanism | undefined;
  private saslName = '';
  /** When the SASL exchange that authenticated this stream began (credentials are read from then on). */
  private authStartedAt = 0;
  private authFailures = 0;
  /** PAUSED_* bits: reading resumes when none is left. */
  private paused = 0;
  private tokens: number;
  private refilledAt = Date.now();
  private resolveDone!: () => void;
  /** Resolves when the connection is fully closed (what was written has been flushed or abandoned). */
  readonly done = new Promise<void>((r) => (this.resolveDone = r));
  private cleaned = false;
  // Output: the queue not yet handed to the socket, its size, the size of
  // unsolicited output not yet written, and the paced sources.
  private readonly outq: Out[] = [];
  private outqLen = 0;
  private liveLen = 0;
  private outClosed = false;
  /** Writes handed to the socket whose callback has not come yet. */
  private writing = 0;
  /**
   * Output closed while writes were under way: routed stanzas that come for
   * the session now (or were still queued) wait here, and are rerouted once
   * those writes have ended, after what they reroute: in the order sent
   * (RFC 6120 §10.1), not ahead of what came before them.
   */
  private late: Out[] | undefined;
  /** XEP-0198 acknowledgements, once the client enabled them. */
  private acks: Acks | undefined;
  /** The closing tag is queued (finish): nothing may follow it. */
  private finishing = false;
  private waitingDrain = false;
  private readonly sources: Paced[] = [];
  private pulling = false;
  private uncongested: (() => void)[] = [];
  /** Waiting for the paced sources to be read to their end. */
  private drained: (() => void)[] = [];
  /** Why the session ended, for the log line. */
  private endReason: string | undefined;
  /** XEP-0198 §5: the secret half of this session's resumption id, once the client asked for resumption. */
  private resumeToken: string | undefined;
  /** How long this session waits, detached, for its client to resume it. */
  private resumeMs = 0;
  /** The connection is gone and the session waits to be resumed (hibernation): output queues up. */
  detached = false;
  private hibernation: NodeJS.Timeout | undefined;
  /** Being handed to another connection: no second taker, no end of its own. */
  private moving = false;
  /** Handed to another connection: this object is an empty shell. */
  private moved = false;
  /** When this session got its current connection (bound or resumed): only a connection opened after that may take it over. */
  private attachedAt = 0;
  private pumpIdle: (() => void)[] = [];
  /** The connection closed while the session was being handed over. */
  private lostWhileMoving = false;

  constructor(ctx: WorkerContext, socket: net.Socket, directTls: boolean) {
    this.ctx = ctx;
    this.raw = socket;
    this.secure = false;
    this.tokens = ctx.config.readRateBytes;
    this.parser = new StreamParser(
      {
        streamStart: (name, attrs) => this.post({ k: 'start', name, attrs }),
        element: (el, cost) => {
          // Nothing after <starttls/> is read as plaintext (RFC 6120 §5.4.3.3).
          if (this.upgrading) return;
          if (el.name === 'starttls' && !this.secure) this.upgrading = true;
          // Only a nonza carries a namespace of its own: a stanza costs no lookup here.
          const ns = el.attrs.xmlns;
          const now = this.state === 'established' && ns !== undefined && ns !== NS_CLIENT ? this.ctx.hooks.immediate.get(`${el.name} ${ns}`) : undefined;
          if (now) return this.immediately(now, el);
          this.post({ k: 'el', el, cost, presence: this.announce(el) });
        },
        streamEnd: () => this.post({ k: 'end' }),
        error: (condition, text) => this.post({ k: 'error', condition, text }),
      },
      { maxStanzaBytes: ctx.config.maxStanzaBytes, maxStanzaElements: ctx.config.maxStanzaElements },
    );
    socket.setNoDelay(true);
    socket.on('error', (err) => log.debug('socket error', { sid: this.id, err: err.message }));
    socket.on('close', () => {
      if (this.moved) {
        this.logEnd();
        return this.resolveDone();
      }
      // Lost while being handed over: the handoff goes on (or, refused, the session detaches).
      if (this.moving) {
        this.lostWhileMoving = true;
        return this.resolveDone();
      }
      // A connection lost under a resumable session (not one we or the
      // client ended): the session waits for the client to come back.
      if (this.resumable) {
        this.hibernate();
        return this.resolveDone();
      }
      this.endReason ??= 'connection lost';
      this.cleanup();
      // Gone without our closing it (a reset, a write error): what still
      // waited for room in the socket goes where undeliverable stanzas go,
      // behind the writes that failed with it.
      this.outClosed = true;
      const left = this.outq.splice(0);
      this.outqLen = 0;
      // What the client did not acknowledge (XEP-0198), then what never
      // reached the socket, then what came for the session as it closed.
      const unacked = this.acks ? this.acks.unacked.splice(0) : [];
      if (this.acks?.timer) clearTimeout(this.acks.timer);
      const held = this.late ?? [];
      if (this.late) {
        this.late = undefined;
        this.ctx.closing.delete(this.id);
      }
      for (const item of [...unacked, ...left, ...held]) this.reroute(item);
      this.logEnd();
      // Every write has completed or failed by now: the sources may let go.
      for (const src of this.sources.splice(0)) src.stop?.();
      for (const w of [...this.uncongested.splice(0), ...this.drained.splice(0)]) w();
      this.resolveDone();
    });
    if (directTls) {
      this.socket = this.wrapTls();
    } else {
      this.socket = socket;
      this.listen(socket);
    }
    ctx.all.add(this);
  }

  private listen(sock: net.Socket): void {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('end', () => {
      // Half-closed without a closing tag: lost, as far as resumption goes (XEP-0198 §5).
      if (this.resumable) return void this.raw.destroy();
      this.endReason ??= 'closed by the client';
      this.close();
    });
    sock.resume();
  }

  private wrapTls(): tls.TLSSocket {
    const t = new tls.TLSSocket(this.raw, { isServer: true, secureContext: this.ctx.secureContext });
    t.on('secure', () => {
      this.secure = true;
      this.upgrading = false;
      this.restart();
    });
    t.on('error', (err) => {
      // RFC 6120 §5.4.3.2: on TLS failure the server closes the TCP connection.
      // A connection that never opened a stream (a load balancer's health
      // check, a port scan) is no news.
      (this.authenticated ? log.info : log.debug)('TLS negotiation failed', { sid: this.id, ip: this.raw.remoteAddress, port: this.raw.remotePort, err: err.message });
      this.endReason ??= `TLS failed: ${err.message}`;
      this.raw.destroy();
    });
    this.listen(t);
    return t;
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed' || this.upgrading) return;
    this.lastActivity = Date.now();
    this.throttle(chunk.length);
    this.parser.write(chunk);
  }

  /** Shapes reading to readRateBytes per second: a flood is slowed, not dropped. */
  private throttle(n: number): void {
    const rate = this.ctx.config.readRateBytes;
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

  private pause(why: number): void {
    this.paused |= why;
    this.socket.pause();
  }

  private unpause(why: number): void {
    this.paused &= ~why;
    if (this.paused === 0 && this.state !== 'closed') this.socket.resume();
  }

  // ---- the mailbox: one event at a time, in order ----

  private post(ev: Event): void {
    this.mailbox.push(ev);
    if (ev.k === 'el') this.mailboxCost += ev.cost;
    if ((this.mailbox.length > MAILBOX_HIGH || this.mailboxCost > MAILBOX_HIGH_COST) && !(this.paused & PAUSED_MAILBOX)) this.pause(PAUSED_MAILBOX);
    if (!this.busy) void this.pump();
  }

  private async pump(): Promise<void> {
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
          // Processed: the session's own state says it now.
          if (ev.k === 'el' && ev.presence === this.presenceSeq) this.announced = undefined;
          // What a stanza causes is written before the next is handled, the
          // login burst included (paced: as fast as the client reads it).
          while (this.sources.length > 0 && !this.outClosed && !this.socket.destroyed && !this.moving) await new Promise<void>((r) => this.drained.push(r));
        } catch (err) {
          if (ev.k === 'el' && ev.presence === this.presenceSeq) this.announced = undefined;
          this.failed(err);
        }
      }
    } finally {
      this.busy = false;
      if (this.paused & PAUSED_MAILBOX && this.mailbox.length === 0) this.unpause(PAUSED_MAILBOX);
      for (const w of this.pumpIdle.splice(0)) w();
    }
  }

  /** Resolves once no event is being handled (the one under way, if any, is done). */
  private idle(): Promise<void> {
    return this.busy ? new Promise((r) => this.pumpIdle.push(r)) : Promise.resolve();
  }

  /** A nonza handled as it is read (ServerModule.immediate). */
  private immediately(handler: NonzaHandler, el: Element): void {
    try {
      void Promise.resolve(handler(el, this)).catch((err: unknown) => this.failed(err));
    } catch (err) {
      this.failed(err);
    }
  }

  /** What handling an element threw: its stream error, or internal-server-error (logged). */
  private failed(err: unknown): void {
    if (err instanceof StreamError) this.close({ condition: err.condition, text: err.message === err.condition ? undefined : err.message, app: err.app });
    else {
      log.error('session failed', { sid: this.id, err: (err as Error).stack ?? String(err) });
      this.close({ condition: 'internal-server-error' });
    }
  }

  private async handle(ev: Event): Promise<void> {
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

  private onStreamStart(name: string, attrs: Record<string, string>): void {
    if (this.state !== 'wait-stream') throw new StreamError('not-well-formed', 'a stream header inside the stream');
    this.peer = attrs.from === undefined ? undefined : flat(attrs.from);
    const colon = name.indexOf(':');
    const prefix = colon === -1 ? '' : name.slice(0, colon);
    const local = colon === -1 ? name : name.slice(colon + 1);
    const streamNs = prefix ? attrs[`xmlns:${prefix}`] : attrs.xmlns;
    if (prefix && streamNs === undefined) throw new StreamError('bad-namespace-prefix', `prefix ${prefix} is not declared`);
    if (local !== 'stream' || streamNs !== NS_STREAM) throw new StreamError('invalid-namespace', `the stream element must be <stream xmlns='${NS_STREAM}'>`);
    // §4.8.2: the content namespace of a client stream is jabber:client.
    if (prefix && attrs.xmlns !== NS_CLIENT) throw new StreamError('invalid-namespace', `the content namespace must be ${NS_CLIENT}`);
    if (attrs.to !== undefined) {
      let to: string;
      try {
        to = normalizeDomain(attrs.to);
      } catch {
        throw new StreamError('improper-addressing', `'to' is not a domain`);
      }
      if (to !== this.ctx.config.domain) throw new StreamError('host-unknown', `${attrs.to} is not served here`);
    }
    // §4.7.5: a missing version means 0.9; we speak 1.x only.
    const version = attrs.version;
    if (version === undefined) throw new StreamError('unsupported-version', 'this server requires version 1.0');
    const m = /^(\d+)\.(\d+)$/.exec(version);
    if (!m) throw new StreamError('bad-format', `version ${JSON.stringify(version)} is not MAJOR.MINOR`);
    if (Number(m[1]) !== 1) throw new StreamError('unsupported-version', 'this server speaks version 1.0');
    this.state = this.authenticated ? 'wait-bind' : 'negotiating';
    // Header and features in one write (one TCP segment): some clients and
    // load tools take the first packet after their request as its answer.
    this.write(this.header() + this.features().toString());
  }

  /** Our stream header, once per stream; '' when it was sent already. */
  private header(): string {
    if (this.headerSent) return '';
    this.headerSent = true;
    const d = this.ctx.config.domain;
    const to = this.peer !== undefined ? ` to='${escapeXML(this.peer)}'` : '';
    return `<?xml version='1.0'?><stream:stream xmlns='${NS_CLIENT}' xmlns:stream='${NS_STREAM}' id='${randomBytes(12).toString('base64url')}' from='${d}'${to} version='1.0' xml:lang='en'>`;
  }

  private mechanismsOffered() {
    const c = this.ctx.config;
    return MECHANISMS.filter((m) => m.available({ secure: this.secure, tlsRequired: c.tlsRequired, anonymous: c.anonymous }));
  }

  /** Whether authentication may happen on this stream yet (RFC 6120 §5.3.1). */
  private get mayAuthenticate(): boolean {
    return this.secure || !this.ctx.config.tlsRequired;
  }

  private features(): Element {
    const f = new Element('stream:features');
    const c = this.ctx.config;
    if (!this.authenticated) {
      if (!this.secure) {
        const st = f.c('starttls', { xmlns: NS_TLS });
        if (c.tlsRequired) st.c('required');
      }
      if (this.mayAuthenticate) {
        const mechs = f.c('mechanisms', { xmlns: NS_SASL });
        for (const m of this.mechanismsOffered()) mechs.c('mechanism').t(m.name);
        if (c.registration) f.c('register', { xmlns: NS_REGISTER_FEATURE });
      }
    } else {
      f.c('bind', { xmlns: NS_BIND });
      f.c('ver', { xmlns: NS_ROSTERVER }); // RFC 6121 §2.6.1: roster versioning
      // RFC 3921's session establishment, optional for old clients (RFC 6121 Appendix E).
      f.c('session', { xmlns: NS_SESSION }).c('optional');
      for (const offer of this.ctx.hooks.streamFeatures) for (const el of offer(this)) f.cnode(el);
    }
    return f;
  }

  private restart(): void {
    this.state = 'wait-stream';
    this.headerSent = false;
    this.parser.reset();
  }

  // ---- elements, by state ----

  private async onElement(el: Element): Promise<void> {
    const ns = el.attrs.xmlns;
    switch (this.state) {
      case 'negotiating':
        if (el.name === 'starttls' && ns === NS_TLS) return this.startTls();
        if (ns === NS_SASL) return this.onSasl(el);
        if (el.name === 'iq' && this.mayAuthenticate && el.getChild('query', NS_REGISTER)) {
          if (this.ctx.config.registration) return this.preAuthIq(el);
          // XEP-0077 §3.1: a host without in-band registration MUST answer service-unavailable.
          // Without the payload: it may carry a password.
          return this.replyError(new Element('iq', el.attrs), new StanzaError('service-unavailable', 'in-band registration is not offered here'));
        }
        break;
      case 'wait-bind': {
        if (el.name === 'iq' && el.attrs.type === 'set' && el.getChild('bind', NS_BIND)) return this.bind(el);
        const nonza = this.ctx.hooks.nonzas.get(`${el.name} ${ns}`);
        if (nonza) return nonza(el, this);
        break;
      }
      case 'established':
        // RFC 6120 §7.7.2.1: one resource per stream here; binding another is not allowed.
        if (isStanza(el)) {
          if (el.name === 'iq' && el.attrs.type === 'set' && el.getChild('bind', NS_BIND)) this.replyError(el, new StanzaError('not-allowed', 'a resource is already bound to this stream'));
          else await this.ctx.router.fromClient(el, this);
          // XEP-0198 §4: every stanza handled counts, answered with an error or not.
          if (this.acks) this.acks.handled = (this.acks.handled + 1) >>> 0;
          return;
        }
        {
          const nonza = this.ctx.hooks.nonzas.get(`${el.name} ${ns}`);
          if (nonza) return nonza(el, this);
        }
        break;
      default:
        throw new StreamError('not-well-formed', 'element outside a stream');
    }
    if (ns === NS_TLS || ns === NS_SASL || ns === NS_BIND) throw new StreamError('policy-violation', `<${el.name}/> is not expected now`);
    // §4.9.3.12: stanzas before authentication and binding are not processed.
    if (isStanza(el)) {
      if (this.state === 'wait-bind' && el.name === 'iq' && el.attrs.type === 'set' && el.getChild('session', NS_SESSION)) {
        throw new StreamError('not-authorized', 'bind a resource before establishing a session');
      }
      throw new StreamError('not-authorized', 'authenticate and bind a resource first');
    }
    throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a stanza of ${NS_CLIENT}`);
  }

  // ---- STARTTLS (RFC 6120 §5.4) ----

  private startTls(): void {
    if (this.secure) {
      // §5.4.2.2: TLS cannot start (it is already in place): <failure/>, then close.
      this.endReason = 'STARTTLS on a secure stream';
      this.finish(`<failure xmlns='${NS_TLS}'/></stream:stream>`);
      return;
    }
    this.write(`<proceed xmlns='${NS_TLS}'/>`);
    this.raw.removeAllListeners('data');
    this.raw.removeAllListeners('end');
    this.upgrading = true;
    this.socket = this.wrapTls();
  }

  // ---- SASL (RFC 6120 §6) ----

  private async onSasl(el: Element): Promise<void> {
    if (el.name === 'auth') {
      if (this.sasl) return this.saslFail(new SaslFailure('malformed-request', 'an exchange is already in progress'));
      if (!this.mayAuthenticate) return this.saslFail(new SaslFailure('encryption-required', 'negotiate TLS first'));
      const name = el.attrs.mechanism;
      // RFC 6120 §6.5.7: no mechanism named is invalid-mechanism.
      if (!name) return this.saslFail(new SaslFailure('invalid-mechanism', 'no mechanism named'));
      const factory = MECHANISMS.find((m) => m.name === name);
      if (!factory) return this.saslFail(new SaslFailure('invalid-mechanism', `${name} is not supported`));
      if (!this.mechanismsOffered().includes(factory)) {
        return this.saslFail(new SaslFailure(factory.name === 'PLAIN' && !this.secure ? 'mechanism-too-weak' : 'invalid-mechanism', `${name} is not offered here`));
      }
      const initial = decodeSasl(el.getText());
      if (initial instanceof SaslFailure) return this.saslFail(initial);
      this.sasl = factory.create({ store: this.ctx.accounts, domain: this.ctx.config.domain, secure: this.secure });
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

  private async saslStep(step: () => Promise<SaslResult>): Promise<void> {
    let r: SaslResult;
    try {
      r = await step();
    } catch (err) {
      if (err instanceof SaslFailure) return this.saslFail(err);
      log.error('SASL mechanism failed', { sid: this.id, err: String(err) });
      return this.saslFail(new SaslFailure('temporary-auth-failure'));
    }
    if (this.state === 'closed') return;
    if (r.kind === 'challenge') {
      this.write(`<challenge xmlns='${NS_SASL}'>${r.data.toString('base64')}</challenge>`);
      return;
    }
    this.sasl = undefined;
    this.authenticated = true;
    this.username = r.username;
    log.info('authenticated', { sid: this.id, user: r.username ?? '(anonymous)', mechanism: this.saslName, ip: this.raw.remoteAddress, port: this.raw.remotePort });
    // XEP-0175: an anonymous user gets a bare JID unique on the domain.
    if (r.username === null) this.anonLocal = `${ANON_PREFIX}${randomBytes(12).toString('hex')}`;
    const data = r.data && r.data.length > 0 ? r.data.toString('base64') : '';
    this.write(data ? `<success xmlns='${NS_SASL}'>${data}</success>` : `<success xmlns='${NS_SASL}'/>`);
    this.restart(); // §6.4.6: both sides restart the stream
  }

  private saslFail(f: SaslFailure): void {
    const attempted = this.sasl?.attempted;
    this.sasl = undefined;
    this.write(f.toElement().toString());
    const fields = { sid: this.id, user: attempted, mechanism: this.saslName || undefined, ip: this.raw.remoteAddress, port: this.raw.remotePort, reason: f.message === f.condition ? f.condition : `${f.condition}: ${f.message}` };
    if (f.condition === 'aborted') {
      log.info('authentication aborted', fields);
      return;
    }
    log.info('authentication failed', fields);
    // §6.4.5: a limited number of retries, then the stream is closed.
    if (++this.authFailures >= this.ctx.config.maxAuthAttempts) {
      log.warn('too many failed authentication attempts', { sid: this.id, ip: this.raw.remoteAddress, port: this.raw.remotePort });
      this.close({ condition: 'policy-violation', text: 'too many failed authentication attempts' });
    }
  }

  private async preAuthIq(iq: Element): Promise<void> {
    let reply: Element | undefined;
    try {
      const payload = await registerUnauthenticated(iq, this);
      reply = new Element('iq', { type: 'result', id: iq.attrs.id });
      if (payload) reply.cnode(payload);
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      reply = errorReply(iq, err);
    }
    if (reply) this.send(reply);
  }

  // ---- resource binding (RFC 6120 §7, XEP-0175) ----

  private async bind(iq: Element): Promise<void> {
    const requested = iq.getChild('bind', NS_BIND)!.getChildText('resource');
    let resource: string;
    try {
      resource = requested ? normalizeResource(requested) : randomResource();
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      return this.replyError(iq, new StanzaError('bad-request', err.message));
    }
    const c = this.ctx.config;
    for (let attempt = 0; ; attempt++) {
      const local = this.username ?? this.anonLocal!;
      const bare = `${local}@${c.domain}`;
      const rec = { jid: `${bare}/${resource}`, bare, sid: this.id, node: this.ctx.node, worker: this.ctx.index, priority: 0, available: false };
      const outcome = await this.ctx.registry.bind({ rec, policy: c.conflictPolicy, maxResources: c.maxResourcesPerAccount, exclusiveBare: this.username === null });
      // Announced before this bind is answered: the end of a dropped record
      // of this very full JID must reach contacts before its new presence.
      if (outcome.dropped) await this.ctx.router.presence.departed(outcome.dropped);
      if (this.state === 'closed') {
        if (outcome.ok) void this.ctx.registry.unbind(outcome.rec.jid, this.id);
        return;
      }
      if (!outcome.ok) {
        if (this.username === null && outcome.condition === 'conflict' && attempt < 3) {
          this.anonLocal = `${ANON_PREFIX}${randomBytes(12).toString('hex')}`;
          continue;
        }
        if (outcome.condition === 'conflict') return this.replyError(iq, new StanzaError('conflict', 'the resource is in use'));
        if (outcome.condition === 'resource-constraint') return this.replyError(iq, new StanzaError('resource-constraint', 'too many sessions for this account'));
        // The registry cannot be reached: refuse rather than risk a duplicate JID.
        return this.replyError(iq, new StanzaError('resource-constraint', 'the session registry is unavailable; try again shortly'));
      }
      if (outcome.replaced) this.ctx.router.kick(outcome.replaced, 'conflict', 'replaced by a new session');
      // Kept for the session's life: copies, not slices of the chunk the bind came in.
      this.jid = flat(outcome.rec.jid);
      this.bare = flat(bare);
      this.state = 'established';
      this.attachedAt = Date.now();
      this.ctx.sessions.set(this.id, this);
      this.ctx.local.set(this.jid, this);
      this.ctx.router.presence.attach(this);
      // Replaced already, by a session whose kick arrived before our bind's answer.
      const kicked = this.ctx.router.takeEarlyKick(this.id);
      if (kicked) return this.close(kicked);
      // The account was removed while this stream authenticated: the removal
      // ended the sessions there were, before this one was among them.
      const removed = this.username === null ? undefined : this.ctx.removed.get(this.username);
      if (removed !== undefined && removed.at >= this.authStartedAt) return this.close({ condition: 'not-authorized', text: 'the account was removed' });
      const reply = new Element('iq', { type: 'result', id: iq.attrs.id });
      reply.c('bind', { xmlns: NS_BIND }).c('jid').t(this.jid);
      this.send(reply);
      log.debug('bound', { sid: this.id, jid: this.jid });
      return;
    }
  }

  /** A stanza error in answer to `iq`, on this stream. */
  private replyError(iq: Element, err: StanzaError): void {
    const reply = errorReply(iq, err);
    if (reply) this.send(reply);
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

  /**
   * A stanza routed to this session; false when it can no longer take one.
   * `live` (default): unsolicited; `reroute`: what to do with it if it is
   * never written.
   */
  deliver(xml: string, opts: { live?: boolean; reroute?: Reroute } = {}): boolean {
    // Closed: only held behind writes under way (see `late`), and only what has somewhere to go.
    if ((this.state !== 'established' || this.outClosed) && (this.late === undefined || !opts.reroute)) return false;
    const out: Out = { xml, live: opts.live ?? true, reroute: opts.reroute };
    if (!this.outClosed) for (const hook of this.ctx.hooks.outbound) if (hook(this, out)) return true;
    this.put(out);
    return true;
  }

  /** A stanza an outbound hook held back (ServerModule.outbound), sent now. */
  sendHeld(out: Out): void {
    this.put(out);
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

  /** Whether a message to the bare JID may come here now (RFC 6121 §8.5.2.1), by the presence last received. */
  get takesBareMessages(): boolean {
    const a = this.announced;
    return a ? a.available && a.priority >= 0 : this.available && this.priority >= 0;
  }

  /** Whether presence broadcasts and subscription requests come here now: available, by the presence last received (RFC 6121 §4.2). */
  get availableNow(): boolean {
    return this.announced ? this.announced.available : this.available;
  }

  /** Notes a broadcast presence as it is read (see `announced`); its sequence number, to clear it once processed. */
  private announce(el: Element): number | undefined {
    // Also while binding: a client may send its presence right behind its bind.
    if (el.name !== 'presence' || el.attrs.to !== undefined || (this.state !== 'established' && this.state !== 'wait-bind')) return undefined;
    const type = el.attrs.type;
    if (type === undefined) {
      this.announced = { available: true, priority: priorityOf(el) };
    } else if (type === 'unavailable') {
      this.announced = { available: false, priority: this.priority };
    } else return undefined;
    return ++this.presenceSeq;
  }

  private write(s: string): void {
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

  /**
   * XEP-0198 §5: this session may outlive its connection for `ms`, to be
   * resumed by another; the secret of its resumption id.
   */
  enableResumption(ms: number): string {
    this.resumeToken ??= randomBytes(18).toString('base64url');
    this.resumeMs = ms;
    return this.resumeToken;
  }

  /** Whether this session outlives a lost connection (XEP-0198 §5). */
  get resumable(): boolean {
    return this.resumeToken !== undefined && this.state === 'established' && !this.cleaned && !this.moving && !this.detached;
  }

  /** The resumption secret, for the one who presents it (compared by the caller in constant time). */
  get resumptionToken(): string | undefined {
    return this.resumeToken;
  }

  /**
   * The connection is lost: the session stays bound and available (its
   * contacts see nothing), keeps what the client did not acknowledge, and
   * queues what comes for it, until it is resumed or resumeMs passes.
   */
  private hibernate(): void {
    this.detached = true;
    this.endReason = undefined;
    this.mailbox.length = 0;
    this.mailboxCost = 0;
    const a = this.acks!;
    if (a.timer) clearTimeout(a.timer);
    a.timer = undefined;
    // Sources read at the pace of a connection stop; the offline messages
    // they handed out and nobody acknowledged are still stored (and come
    // from storage once resumed).
    for (const src of this.sources.splice(0)) src.stop?.();
    for (const w of [...this.uncongested.splice(0), ...this.drained.splice(0)]) w();
    this.ctx.all.delete(this);
    this.ctx.detached.set(this.id, this);
    // XEP-0352 §5.2: the client state ends with the stream; what it held is queued.
    for (const hook of this.ctx.hooks.detached) hook(this);
    this.hibernation = setTimeout(() => {
      this.endReason = 'not resumed in time';
      this.close();
    }, this.resumeMs);
    this.hibernation.unref();
    log.info('session detached', { sid: this.id, jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, waitMs: this.resumeMs, unacked: a.unacked.length });
  }

  /** A detached session ends (not resumed in time, replaced, shut down): what it kept goes where undeliverable stanzas go. */
  private endDetached(reason: CloseReason): void {
    this.detached = false;
    clearTimeout(this.hibernation);
    this.ctx.detached.delete(this.id);
    this.endReason ??= reason.condition ? `${reason.condition}${reason.text ? `: ${reason.text}` : ''} while detached` : 'ended while detached';
    this.outClosed = true;
    const items = [...(this.acks?.unacked.splice(0) ?? []), ...this.outq.splice(0)];
    this.outqLen = 0;
    this.cleanup(reason.forgotten);
    for (const item of items) this.reroute(item);
    this.logEnd();
  }

  /**
   * Gives this session up to another connection that resumes it (XEP-0198
   * §5), here or anywhere in the cluster, once: what the client
   * acknowledged (`h`) is settled first, and the rest is handed over, in
   * order. The session leaves this worker's tables without ending: no
   * unbind, no unavailable presence. A connection it still has is closed.
   * `into`, a connection of this worker, adopts it in the same step.
   * `since`: when the taking connection was opened (by the wall clock).
   */
  async handOff(h: number, since: number, into?: (handoff: Handoff) => unknown): Promise<Handoff | HandoffRefusal> {
    if (this.moving || this.resumeToken === undefined || (this.state !== 'established' && !this.detached) || this.cleaned) return { gone: true };
    // Two connections racing for one session: the one that lost finds it on
    // a connection newer than itself, which it must not take over.
    if (!this.detached && since <= this.attachedAt) return { gone: true };
    const a = this.acks!;
    // §4: the client cannot have had more than was sent; refused before anything changes.
    if (countSince(h, a.acked) > a.unacked.length) return { gone: false, sent: (a.acked + a.unacked.length) >>> 0 };
    this.moving = true;
    this.ack(h);
    // The stanza being handled finishes first (it counts in our h); what
    // waits behind it is the client's to send again. Output read at the
    // pace of the old connection stops, and an offline delivery lets its
    // claim go before the session's next one starts elsewhere.
    this.mailbox.length = 0;
    this.mailboxCost = 0;
    for (const src of this.sources.splice(0)) src.stop?.();
    for (const w of [...this.uncongested.splice(0), ...this.drained.splice(0)]) w();
    await this.idle();
    await this.ctx.router.presence.stopDelivery(this);
    if (!this.cleaned && !this.detached) {
      // XEP-0352 §5.2: held output joins the queue; the new stream begins active.
      for (const hook of this.ctx.hooks.detached) hook(this);
    }
    if (this.cleaned || this.state === 'closed') {
      // Ended meanwhile (a kick, the outbound bound): nothing to hand over.
      this.moving = false;
      return { gone: true };
    }
    const items = [...a.unacked.splice(0), ...this.outq.splice(0)];
    this.outqLen = 0;
    a.unackedBytes = 0;
    if (a.timer) clearTimeout(a.timer);
    clearTimeout(this.hibernation);
    // Offline messages handed out and not acknowledged are still stored: they come again from there.
    const queue = items.filter((it) => !it.nonza && !(it.delivered && !it.reroute)).map((it) => (it.reroute ? { xml: it.xml, reroute: it.reroute } : { xml: it.xml }));
    const handoff: Handoff = {
      sid: this.id,
      jid: this.jid!,
      bare: this.bare!,
      available: this.available,
      priority: this.priority,
      lastPresence: this.lastPresence?.toString(),
      directed: this.directed ? [...this.directed] : undefined,
      carbons: this.carbons,
      rosterRequested: this.rosterRequested,
      createdAt: this.createdAt,
      token: this.resumeToken,
      resumeMs: this.resumeMs,
      handled: a.handled,
      acked: a.acked,
      queue,
    };
    for (const src of this.sources.splice(0)) src.stop?.();
    this.moved = true;
    this.cleaned = true;
    this.outClosed = true;
    this.ctx.all.delete(this);
    this.ctx.detached.delete(this.id);
    if (this.ctx.sessions.get(this.id) === this) this.ctx.sessions.delete(this.id);
    if (this.ctx.local.get(this.jid!) === this) this.ctx.local.delete(this.jid!);
    this.ctx.router.presence.detach(this);
    this.endReason = 'resumed on another connection';
    if (this.detached || this.lostWhileMoving) {
      this.detached = false;
      this.state = 'closed';
      this.logEnd();
    } else {
      // §5: the old connection is replaced; it is told so, as far as it still reads.
      this.state = 'closed';
      const err = this.header() + new StreamError('conflict', 'this session was resumed on another connection').toElement().toString();
      this.socket.end(`${err}</stream:stream>`);
      setTimeout(() => this.raw.destroy(), CLOSE_GRACE_MS).unref();
    }
    // A taker on this worker adopts it before anything else runs.
    into?.(handoff);
    return handoff;
  }

  /**
   * This connection, authenticated as the session's account and not bound,
   * becomes the session handed over (XEP-0198 §5): its address, presence,
   * roster interest, carbons and directed presence, and its counts. It
   * answers <resumed/>, then sends again what the client did not
   * acknowledge, in order, then live traffic.
   */
  adopt(h: Handoff, previd: string): void {
    this.id = h.sid;
    this.jid = h.jid;
    this.bare = h.bare;
    this.available = h.available;
    this.priority = h.priority;
    this.lastPresence = h.lastPresence === undefined ? undefined : parseXml(h.lastPresence);
    this.directed = h.directed ? new Set(h.directed) : undefined;
    this.carbons = h.carbons;
    this.rosterRequested = h.rosterRequested;
    this.resumeToken = h.token;
    this.resumeMs = h.resumeMs;
    this.acks = { unacked: [], unackedBytes: 0, acked: h.acked, handled: h.handled, sinceRequest: 0, timer: undefined, overflow: false };
    this.state = 'established';
    this.attachedAt = Date.now();
    this.ctx.sessions.set(this.id, this);
    this.ctx.local.set(this.jid, this);
    this.ctx.router.arrived(this.id);
    this.ctx.router.presence.attach(this);
    this.sendNonza(`<resumed xmlns='${NS_SM}' previd='${escapeXML(previd)}' h='${h.handled}'/>`);
    for (const it of h.queue) this.put({ xml: it.xml, reroute: it.reroute });
    // Offline messages handed out on the old stream and not acknowledged are still stored: they come again.
    if (this.available) this.ctx.router.presence.flushOffline(this);
    log.info('session resumed', { sid: this.id, jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, resent: h.queue.length });
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
    for (const it of a.unacked.splice(0, n)) {
      a.unackedBytes -= it.xml.length;
      it.delivered?.();
    }
    if (a.unacked.length === 0 && a.timer) {
      clearTimeout(a.timer);
      a.timer = undefined;
    }
  }

  private requestAck(): void {
    const a = this.acks!;
    a.sinceRequest = 0;
    if (a.timer) clearTimeout(a.timer);
    a.timer = undefined;
    if (!this.outClosed) this.put({ xml: `<r xmlns='${NS_SM}'/>`, nonza: true });
  }

  private put(item: Out): void {
    // The connection is gone and the session is about to wait for its client (its close event is on its way).
    if (this.detached || (this.socket.destroyed && (this.resumable || this.moving))) return this.queueDetached(item);
    if (this.outClosed || this.socket.destroyed) {
      this.unwritten(item);
      return;
    }
    // Counted from <enabled/> on, in the order of the stream (XEP-0198 §4).
    if (this.acks && !item.nonza) item.tracked = true;
    this.outq.push(item);
    this.outqLen += item.xml.length;
    if (item.live) {
      this.liveLen += item.xml.length;
      // A reader this slow would make us buffer without bound.
      if (this.liveLen > this.ctx.config.maxOutboundBytes) return this.slowReader();
    }
    this.flush();
  }

  /** Output for a detached session: kept for the connection that resumes it, within the slow-reader bound. */
  private queueDetached(item: Out): void {
    if (item.nonza) return; // stream-level: for a stream that is gone
    item.tracked = true;
    item.live = false;
    this.outq.push(item);
    this.outqLen += item.xml.length;
    if (this.outqLen + this.acks!.unackedBytes > this.ctx.config.maxOutboundBytes) {
      this.endReason = 'too much queued while detached';
      this.close();
    }
  }

  /** Hands queued output to the socket, up to SOCKET_HWM unless `all`. */
  private flush(all = false): void {
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
      sock.write(item.xml, (err) => this.afterWrite(item, err));
    }
    const a = this.acks;
    if (a && !this.outClosed && !this.finishing && !a.overflow) {
      // A client that takes stanzas and never acknowledges them would make us keep them without bound.
      if (a.unackedBytes > this.ctx.config.maxOutboundBytes) {
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

  private afterWrite(item: Out, err: Error | null | undefined): void {
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
      this.ctx.closing.delete(this.id);
      for (const it of held) this.reroute(it);
    }
    // The socket's buffer went down: a paced source may be read again.
    if (this.sources.length > 0) this.pull();
  }

  /** Output that will never be written: a routed stanza goes where undeliverable ones go, behind writes under way. */
  private unwritten(item: Out): void {
    if (this.late && item.reroute) this.late.push(item);
    else this.reroute(item);
  }

  private reroute(item: Out): void {
    if (item.reroute) this.ctx.router.rerouted(item.xml, item.reroute, this.id);
  }

  /** No more output; with writes still under way, what comes for the session now waits behind them (see `late`). */
  private closeOutput(): void {
    this.outClosed = true;
    // With acknowledgements, nothing is settled before the connection is gone.
    if ((this.writing > 0 || this.acks) && this.late === undefined && this.jid) {
      this.late = [];
      this.ctx.closing.set(this.id, this);
    }
  }

  /** Reads the first paced source when the output is low. */
  private pull(): void {
    if (this.sources.length === 0 && this.drained.length > 0) for (const w of this.drained.splice(0)) w();
    if (this.pulling || this.sources.length === 0 || this.outClosed || this.socket.destroyed) return;
    if (this.outqLen + this.socket.writableLength >= LOW_WATER) return;
    const src = this.sources[0];
    this.pulling = true;
    const failed = (err: unknown) => {
      this.pulling = false;
      log.warn('paced output failed', { sid: this.id, jid: this.jid, err: String(err) });
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

  private slowReader(): void {
    log.warn('slow reader disconnected', { sid: this.id, jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, queued: this.liveLen + this.outqLen });
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

  /**
   * A connection found dead (idle past the bound): a resumable session
   * loses only its connection and waits for its client (XEP-0198 §5); any
   * other ends with a stream error.
   */
  disconnect(condition: StreamCondition, text: string): void {
    if (!this.resumable) return this.close({ condition, text });
    log.info('connection dropped', { sid: this.id, jid: this.jid, condition, text });
    this.raw.destroy();
  }

  /** False once the stream is closed (PresenceSession). */
  get open(): boolean {
    return this.state !== 'closed';
  }

  /**
   * Ends the stream, with a stream error when a condition is given (RFC
   * 6120 §4.9.1). What was queued is written first; what the client does
   * not read within the grace period is rerouted.
   */
  close(reason: CloseReason = {}): void {
    if (this.detached) return this.endDetached(reason);
    if (this.state === 'closed') return;
    let out = '';
    if (reason.condition) {
      // §4.9.1.2: a stream error needs an open stream.
      out = this.header() + new StreamError(reason.condition, reason.text, reason.app).toElement().toString();
      (reason.condition === 'system-shutdown' || !this.jid ? log.debug : log.info)('stream error', { sid: this.id, jid: this.jid, condition: reason.condition, text: reason.text });
    }
    this.endReason ??= reason.condition ? `stream error ${reason.condition}${reason.text ? `: ${reason.text}` : ''}` : 'closed by the server';
    this.finish(`${out}</stream:stream>`, reason.forgotten);
  }

  /** Writes what is queued and `last`, ends the connection, and gives the peer CLOSE_GRACE_MS to read it. */
  private finish(last: string, forgotten?: boolean): void {
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

  private cleanup(forgotten = false): void {
    this.state = 'closed';
    if (this.cleaned) return;
    this.cleaned = true;
    this.ctx.all.delete(this);
    if (this.jid && this.ctx.local.get(this.jid) === this) this.ctx.local.delete(this.jid);
    if (this.jid && this.ctx.sessions.delete(this.id) && !forgotten) {
      void this.ctx.registry.unbind(this.jid, this.id);
      // RFC 6121 §4.5.2: gone without a word is unavailable all the same.
      this.ctx.router.presence.sessionEnded(this);
    }
    if (this.jid) this.ctx.router.presence.detach(this);
    this.mailbox.length = 0;
  }

  /** One line per session that bound a resource (an operator's record); others at debug level. */
  private logEnd(): void {
    const fields = { sid: this.id, jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, durationMs: Date.now() - this.createdAt, reason: this.endReason };
    if (this.jid) log.info('session ended', fields);
    else log.debug('connection ended', { ...fields, user: this.username ?? undefined });
  }
}

function isStanza(el: Element): boolean {
  return (el.name === 'message' || el.name === 'presence' || el.name === 'iq') && (el.attrs.xmlns === undefined || el.attrs.xmlns === NS_CLIENT);
}

/** SASL data is base64; "=" is an empty response, no text is none (RFC 6120 §6.4.2). */
function decodeSasl(text: string): Buffer | null | SaslFailure {
  const t = text.trim();
  if (t === '') return null;
  if (t === '=') return Buffer.alloc(0);
  if (t.length % 4 !== 0 || !B64.test(t)) return new SaslFailure('incorrect-encoding', 'the data is not base64');
  return Buffer.from(t, 'base64');
}
