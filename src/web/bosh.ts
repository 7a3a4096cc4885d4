// BOSH (XEP-0124) carrying XMPP (XEP-0206) at /http-bind: a client's
// stream as a series of HTTP requests, each a <body/> wrapper of whole
// elements, each answered with a <body/> of whole elements. A BOSH session
// is a framed transport (stream/transport.ts) under the same stream engine
// and client session as TCP and WebSocket: negotiation, SASL, binding,
// stream management, CSI, limits and pacing are the engine's. What is
// BOSH's own is here: the session's parameters (§7), request ids and their
// window (§14), held requests and waits (§8), acknowledgements (§9),
// inactivity and pauses (§10), overactivity and polling (§11, §12),
// termination and the binding conditions (§13, §17), stream restarts
// (XEP-0206 §5).
//
// Where a session lives (a cluster, or several workers of one node): the
// HTTP requests of one session come on whatever connections the browser
// opens, and the acceptor (or the load balancer in front of the nodes,
// which passes TLS through and so cannot route by session) hands each
// connection to any worker of any node. The session lives in the worker
// that created it, and its id says which: `<random>.<worker>.<node>`. A
// worker that reads a request for a session of another worker forwards
// the request's body there and writes the answer that comes back: over
// the worker's direct port to a worker of the same node, over the cluster
// transport (cluster/transport.ts, Redis, sent until confirmed) to another
// node. The id carries the owner, so routing costs no registry lookup and
// no shared state (but for the list of live nodes, read at most once a
// second, which an id naming another node must be in); the random part (128 bits) is what makes it
// unguessable (§19.3). A session dies with its worker or node, as a TCP
// connection does: what outlives it is the XMPP session, which its client
// resumes with XEP-0198 from a new BOSH session on any node (after the
// death of its node, with XMPP_SM_DURABLE).
import { randomBytes, createHash } from 'node:crypto';
import { parse as parseXml, escapeXML } from 'ltx';
import type { Element } from 'ltx';
import { StreamParser } from '../xml/parser.ts';
import type { XmlErrorCondition } from '../xml/parser.ts';
import type { FramedTransport, FrameSink } from '../stream/transport.ts';
import type { Config } from '../config/index.ts';
import { addressKey } from '../acceptor/limits.ts';
import { NS_CLIENT, NS_STREAM } from '../xmpp/ns.ts';
import { frames } from './websocket.ts';
import { log, Throttled } from '../log.ts';

export const BOSH_PATH = '/http-bind';
export const NS_HTTPBIND = 'http://jabber.org/protocol/httpbind';
export const NS_XBOSH = 'urn:xmpp:xbosh';
/** The version of XEP-0124 this follows (§7.2 'ver': the lower of the client's and ours). */
const VERSION: [number, number] = [1, 11];
/**
 * Requests held at once (§7.1 'hold'): one is what a client without HTTP
 * pipelining uses; two lets a pipelining one always have a request to be
 * answered on. Each holds an HTTP connection open.
 */
const MAX_HOLD = 2;
/** §7.2 'polling': the shortest interval, in seconds, between two empty requests of a client that polls (§12). */
const POLLING_S = 5;
/** Payload bytes put in one answer (at least one element, whatever its size): more waits for the next request. */
const ANSWER_BYTES = 64 * 1024;
/** §14.3: answers kept for a client that acknowledges them (§9.2), until it does; the oldest go past this. */
const UNACKED_KEPT = 8;
/**
 * §14.3: connections one unanswered request waits on at once, the first and
 * the latest sending of it (a client sends a request again when its
 * connection broke); an older one is closed. Without a bound, one request
 * sent again and again held a connection and its HTTP objects each.
 */
const MAX_WAITING = 2;
/** §9.2: a response the client has not acknowledged this long after it was sent is reported as missing. */
const REPORT_AFTER_MS = 2000;
/**
 * Sessions one address may have in one worker when XMPP_MAX_CONNECTIONS_PER_IP
 * is 0: a BOSH session costs no connection of its own (one HTTP connection
 * may create any number), so it is bounded here instead.
 */
const DEFAULT_SESSIONS_PER_ADDRESS = 256;
/** Content types a client may ask the answers to carry (§7.1 'content'); others get the default. */
const CONTENT_TYPE = /^(?:text\/xml|application\/xml|text\/plain)(?:\s*;\s*charset=(?:utf-8|"utf-8"))?$/i;
const DEFAULT_CONTENT_TYPE = 'text/xml; charset=utf-8';
/** The engine's stream header and end, which are not sent: a BOSH stream's are the session's creation and termination. */
const NS_INTERNAL = 'urn:x-bosh-internal';
const HEADER = `<open xmlns='${NS_INTERNAL}'`;
const FOOTER = `<close xmlns='${NS_INTERNAL}'/>`;

/** The terminal binding conditions (§17.2). */
export type BindingCondition =
  | 'bad-request'
  | 'host-gone'
  | 'host-unknown'
  | 'improper-addressing'
  | 'internal-server-error'
  | 'item-not-found'
  | 'other-request'
  | 'policy-violation'
  | 'remote-connection-failed'
  | 'remote-stream-error'
  | 'see-other-uri'
  | 'system-shutdown'
  | 'undefined-condition';

/** §17.1: what a legacy client (no 'ver') gets instead of these conditions. */
const LEGACY_STATUS: Partial<Record<BindingCondition, number>> = { 'bad-request': 400, 'policy-violation': 403, 'item-not-found': 404 };

/** Where an answer goes: the HTTP request it answers, here or on the worker that read it. */
export interface Responder {
  /** The answer: a <body/> with this status and content type. */
  send(body: string, status: number, contentType: string): void;
  /** The connection closes without an answer. */
  close(): void;
}

/** What the HTTP layer knows of a request. */
export interface RequestInfo {
  /** Over TLS, or plain from loopback or a trusted TLS-terminating proxy (web/http.ts plainTrust). */
  secure: boolean;
  client: string | undefined;
  port: number | undefined;
}

/** Worker ↔ worker (and node ↔ node): a request for a session that lives there, and its answer (see the top of this file). */
export type BoshEnvelope = (
  | { t: 'bosh'; q: number; node: string; worker: number; body: Uint8Array; secure: boolean; client?: string; port?: number }
  | { t: 'bosh-res'; q: number; body?: string; status?: number; type?: string; close?: true }
) & { jid?: undefined; sid?: undefined; fwd?: undefined };

/** The largest request body read (a larger one is refused, 413): the largest stanza twice over, as a WebSocket message. */
export function bodyLimit(config: Pick<Config, 'maxStanzaBytes'>): number {
  return 2 * config.maxStanzaBytes;
}

/** A terminal binding condition with no session behind it (§17.2). */
export function terminateBody(condition?: BindingCondition, content = ''): string {
  return wrap(` type='terminate'${condition ? ` condition='${condition}'` : ''}`, content);
}

function wrap(attrs: string, content: string): string {
  const open = `<body xmlns='${NS_HTTPBIND}' xmlns:stream='${NS_STREAM}'${attrs}`;
  return content === '' ? `${open}/>` : `${open}>${content}</body>`;
}

/** A request's <body/>: its attributes, its payloads, and what was wrong with it. */
interface Parsed {
  attrs: Record<string, string>;
  els: { el: Element; cost: number }[];
  /** The payloads are not well-formed or over the limits: the stream ends with this (as on TCP). */
  error?: { condition: XmlErrorCondition; text: string };
  bytes: number;
}

/** §6: the body of a request, or undefined when it is no <body/> of BOSH's namespace. */
export function parseBody(buf: Buffer, limits: Pick<Config, 'maxStanzaBytes' | 'maxStanzaElements'>): Parsed | undefined {
  let attrs: Record<string, string> | undefined;
  let ended = false;
  const els: Parsed['els'] = [];
  let error: Parsed['error'];
  const parser = new StreamParser(
    {
      streamStart: (name, a) => {
        if (name === 'body' && a.xmlns === NS_HTTPBIND) attrs = a;
        else error ??= { condition: 'not-well-formed', text: 'not a BOSH <body/>' };
      },
      element: (el, cost) => {
        // XEP-0206 §2: payloads with no namespace of their own (or the wrapper's) are jabber:client ones, as on a TCP stream.
        if (el.attrs.xmlns === NS_HTTPBIND) delete el.attrs.xmlns;
        els.push({ el, cost });
      },
      streamEnd: () => (ended = true),
      error: (condition, text) => (error ??= { condition, text }),
    },
    { maxStanzaBytes: limits.maxStanzaBytes, maxStanzaElements: limits.maxStanzaElements },
  );
  parser.write(buf);
  if (attrs === undefined) return undefined;
  // §6: the wrapper holds whole elements and ends.
  if (!ended && !error) error = { condition: 'not-well-formed', text: 'the <body/> does not end' };
  return { attrs, els, error, bytes: buf.length };
}

/** An attribute of XEP-0206's namespace, whatever its prefix. */
function xbosh(attrs: Record<string, string>, local: string): string | undefined {
  for (const [k, v] of Object.entries(attrs)) if (k.startsWith('xmlns:') && v === NS_XBOSH) return attrs[`${k.slice(6)}:${local}`];
  return undefined;
}

/** §14.1: a positive integer below 2^53. */
function ridOf(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d{1,16}$/.test(s)) return undefined;
  const n = Number(s);
  return n > 0 && n <= Number.MAX_SAFE_INTEGER ? n : undefined;
}

function seconds(s: string | undefined): number | undefined {
  return s !== undefined && /^\d{1,6}$/.test(s) ? Number(s) : undefined;
}

/**
 * A session id as logs show it: 48 bits of its hash, enough to follow one
 * session through the log, not to take it over, and its worker and node.
 */
export function sidTag(sid: string): string {
  const owner = sid.indexOf('.');
  return `${createHash('sha256').update(sid).digest('base64url').slice(0, 8)}${owner < 0 ? '' : sid.slice(owner)}`;
}

/** The worker (and node) a session id names as its owner. */
export function ownerOf(sid: string): { node: string; worker: number } | undefined {
  const m = /^[A-Za-z0-9_-]{22}\.(\d{1,4})\.([A-Za-z0-9._-]{1,64})$/.exec(sid);
  return m ? { node: m[2], worker: Number(m[1]) } : undefined;
}

/** A request of a session, from its arrival to its answer. */
interface Req {
  rid: number;
  p: Parsed;
  /** Where the answer goes (more than one when the client sent the request again before it was answered, §14.3). */
  to: Responder[];
  at: number;
  /** No payloads, and not a pause, a termination or a restart. */
  empty: boolean;
  pause: boolean;
  terminate: boolean;
  timer?: NodeJS.Timeout;
  /** §9.2: the answer says this response seems lost. */
  report?: { rid: number; time: number };
}

/** A request sent again while unanswered: this connection waits for its answer too, within MAX_WAITING (the oldest sending after the first is closed). */
function waitOn(req: Req, to: Responder): void {
  req.to.push(to);
  while (req.to.length > MAX_WAITING) req.to.splice(1, 1)[0].close();
}

/** Output on its way to the client: whole elements, and the engine's callback once it is in an answer. */
interface Chunk {
  xml: string;
  cb?: (err?: Error | null) => void;
}

/** How the stream ends: how the answer that ends it is marked (§17.2), and what it carries (XEP-0206 §6). */
interface Ending {
  condition?: BindingCondition;
  content?: string;
}

export interface SessionParams {
  sid: string;
  rid: number;
  /** Seconds a request is held at most (§7.2 'wait'). */
  wait: number;
  hold: number;
  inactivity: number;
  maxpause: number;
  ver: string | undefined;
  acks: boolean;
  contentType: string;
  secure: boolean;
  client: string | undefined;
  port: number | undefined;
  /** §15: the client's first key, if it uses key sequencing. */
  newkey: string | undefined;
}

/** One BOSH session: the client's side of it (§7 to §17) and the engine's framed transport. */
export class BoshSession implements FramedTransport {
  readonly kind = 'bosh';
  readonly secure: boolean;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly footer = FOOTER;
  readonly sid: string;
  /** What the log says of the session: the sid is its credential (§19.3), so only a hash of it, and where it lives. */
  readonly tag: string;
  private readonly p: SessionParams;
  /** §7.2 'requests': requests the client may have unanswered at once. */
  private readonly requests: number;
  private sink: FrameSink | undefined;
  private readonly closers: (() => void)[] = [];
  private drainers: (() => void)[] = [];
  /** The next rid in sequence: every lower one has arrived. */
  private expected: number;
  /** Arrived ahead of a lower one (§14.2), by rid. */
  private readonly early = new Map<number, Req>();
  /** In order, not yet read (reading is paused). */
  private readonly queue: Req[] = [];
  /** Read and waiting for their answers, in rid order (§8). */
  private readonly held: Req[] = [];
  /** The last answers (§14.3), by rid, and when each was sent (§9.2). */
  private readonly answered = new Map<number, { body: string; at: number }>();
  private readonly out: Chunk[] = [];
  private outBytes = 0;
  private ending: Ending | undefined;
  /** Over: the termination was sent, or the session was lost. */
  private finished = false;
  private readPaused = false;
  private started = false;
  private soonSet = false;
  /** §10: no request pending: the client must send one before this fires. */
  private idleTimer: NodeJS.Timeout | undefined;
  /** §10: the inactivity a pause asked for, until the next request. */
  private pauseS: number | undefined;
  /** §11, §12: the last new request, and whether the last answer carried payloads. */
  private lastNew: { at: number; empty: boolean } | undefined;
  private lastAnswerEmpty = false;
  /** The engine's stream id (XEP-0206 §4 'authid'). */
  private streamId: string | undefined;
  /** §15: the key the next request's must hash to. */
  private key: string | undefined;
  private readonly gone: (s: BoshSession) => void;

  constructor(p: SessionParams, gone: (s: BoshSession) => void) {
    this.p = p;
    this.sid = p.sid;
    this.tag = sidTag(p.sid);
    this.secure = p.secure;
    this.remoteAddress = p.client;
    this.remotePort = p.port;
    this.requests = p.hold + 1;
    this.expected = p.rid;
    this.key = p.newkey;
    this.gone = gone;
  }

  // ---- requests ----

  /** A request of this session (its first creates it). */
  receive(p: Parsed, info: RequestInfo, to: Responder): void {
    if (this.finished) {
      const cached = ridOf(p.attrs.rid);
      const c = cached === undefined ? undefined : this.answered.get(cached);
      if (c) return to.send(c.body, 200, this.p.contentType);
      return this.refuse(to, 'item-not-found');
    }
    // §19.1 (security considerations): a session begun over an encrypted
    // connection is never continued over a plain one; that connection is
    // closed, the session kept (closing it would let anyone end it).
    if (this.secure && !info.secure) {
      log.info('BOSH request over a plain connection for a secure session: connection closed', { sid: this.tag, ip: info.client });
      return to.close();
    }
    const rid = ridOf(p.attrs.rid);
    if (rid === undefined) return this.fail('bad-request', 'no valid rid', to);
    this.clearIdle();
    const now = Date.now();
    if (rid < this.expected) {
      // §14.3: a request sent again (its connection broke): the answer again, or, not yet answered, the answer when it comes.
      const cached = this.answered.get(rid);
      if (cached) {
        to.send(cached.body, 200, this.p.contentType);
        // Nothing new is pending: the inactivity bound runs again.
        return this.idleCheck();
      }
      const pending = this.held.find((r) => r.rid === rid) ?? this.queue.find((r) => r.rid === rid);
      if (pending) return waitOn(pending, to);
      // §14.3: the answer is no longer kept: item-not-found (MUST).
      return this.fail('item-not-found', `rid ${rid} repeated, its answer no longer kept`, to);
    }
    const pause = p.attrs.pause !== undefined;
    const terminate = p.attrs.type === 'terminate';
    // §11: a pause or a termination may be one request beyond 'requests'.
    const extra = pause || terminate ? 1 : 0;
    // §14.2: beyond the window of expected rids: item-not-found (MUST).
    if (rid > this.expected - 1 + this.requests + extra) return this.fail('item-not-found', `rid ${rid} beyond the window (expected ${this.expected})`, to);
    const again = this.early.get(rid);
    if (again) return waitOn(again, to);
    // §11: more requests unanswered than 'requests' allows.
    const outstanding = this.early.size + this.queue.length + this.held.length + 1;
    if (outstanding > this.requests + extra) return this.fail('policy-violation', `${outstanding} requests unanswered at once (requests='${this.requests}')`, to);
    const restart = xbosh(p.attrs, 'restart') === 'true';
    const empty = p.els.length === 0 && !p.error && !pause && !terminate && !restart && this.started;
    // §11, §12: empty requests more often than 'polling' allows. For a
    // polling session (hold 0), two in a row when the answer to the first
    // carried nothing. Otherwise the client sends an empty request while
    // it has as many unanswered as it may and the one before was empty too
    // (a client that sent data may well follow it with an empty request).
    if (empty && this.lastNew?.empty && now - this.lastNew.at < POLLING_S * 1000) {
      const polling = this.p.hold === 0 || this.p.wait === 0;
      if (polling ? this.lastAnswerEmpty : outstanding >= this.requests) return this.fail('policy-violation', 'empty requests more often than polling allows', to);
    }
    this.lastNew = { at: now, empty };
    // §10: the inactivity a pause asked for lasts until the next request.
    this.pauseS = undefined;
    const req: Req = { rid, p, to: [to], at: now, empty, pause, terminate };
    if (rid === this.expected) {
      this.queue.push(req);
      this.expected++;
      for (let next = this.early.get(this.expected); next; next = this.early.get(this.expected)) {
        this.early.delete(this.expected);
        this.queue.push(next);
        this.expected++;
      }
    } else this.early.set(rid, req);
    this.process();
  }

  /** §14.2: requests read in rid order (MUST), while reading is not paused. */
  private process(): void {
    while (this.queue.length > 0 && !this.finished && (!this.readPaused || this.ending)) {
      const req = this.queue.shift()!;
      const a = req.p.attrs;
      if (this.ending) {
        // The stream is ending: what comes now is not read, only answered (with the termination).
        this.held.push(req);
        continue;
      }
      // §15: each key hashes to the one before (MUST NOT process otherwise).
      if (this.key !== undefined && this.started) {
        if (a.key === undefined || createHash('sha1').update(a.key).digest('hex') !== this.key) return this.fail('item-not-found', 'key sequence broken', req);
      }
      this.key = a.newkey ?? a.key ?? this.key;
      this.sink!.read(req.p.bytes);
      if (a.ack !== undefined && this.p.acks) this.clientAcked(req, ridOf(a.ack));
      if (!this.started || xbosh(a, 'restart') === 'true') {
        // XEP-0206 §3, §5: the session's creation, and a restart after SASL, open a stream.
        const attrs: Record<string, string> = { version: xbosh(a, 'version') ?? '1.0' };
        for (const k of ['to', 'from', 'xml:lang']) if (a[k] !== undefined) attrs[k] = a[k];
        this.started = true;
        this.sink!.open(attrs);
      }
      for (const { el, cost } of req.p.els) this.sink!.element(el, cost);
      // Payloads not well-formed, or over the limits, end the stream as on TCP (this request, held, gets the termination).
      if (req.p.error) this.sink!.error(req.p.error.condition, req.p.error.text);
      // §13: the payloads first (MUST), then the stream ends.
      else if (req.terminate) this.sink!.close();
      this.held.push(req);
      if (req.pause) {
        // §10: a pause answers every request held, the pause itself without payloads (MUST NOT), and stretches the inactivity.
        const asked = seconds(a.pause) ?? this.p.inactivity;
        this.pauseS = Math.min(asked, this.p.maxpause);
        while (this.held.length > 0) this.answer(this.held[0] === req);
      } else if (!req.terminate && !req.report) {
        // §8: held no longer than 'wait'.
        req.timer = setTimeout(() => this.expire(req), this.p.wait * 1000);
      }
    }
    this.settle();
  }

  /** §8: no more held than 'hold'; queued output answers the oldest; §9.2: a report is sent at once. */
  private settle(): void {
    if (this.finished) return;
    while (this.held.length > this.p.hold || (this.held.length > 0 && this.held.some((r) => r.report))) {
      // §13: a termination waits for the end of the stream, even in a polling session.
      if (this.held[0].terminate && !this.ending) break;
      this.answer();
    }
    if (this.held.length > 0 && (this.out.length > 0 || this.ending)) this.soon();
    this.idleCheck();
  }

  private expire(req: Req): void {
    req.timer = undefined;
    // §14.2: answers in rid order (MUST): those held before it first.
    while (!this.finished && this.held.includes(req)) this.answer();
    this.idleCheck();
  }

  /** §9.2: the client acknowledged the answers up to `ack`: those need not be kept; one that seems lost is reported. */
  private clientAcked(req: Req, ack: number | undefined): void {
    if (ack === undefined) return;
    for (const rid of this.answered.keys()) if (rid <= ack) this.answered.delete(rid);
    const missing = this.answered.get(ack + 1);
    if (missing && Date.now() - missing.at > REPORT_AFTER_MS) req.report = { rid: ack + 1, time: Date.now() - missing.at };
  }

  /** Output waits for a request to carry it: answered once this turn's output is all in. */
  private soon(): void {
    if (this.soonSet) return;
    this.soonSet = true;
    setImmediate(() => {
      this.soonSet = false;
      while (!this.finished && this.held.length > 0 && (this.out.length > 0 || this.ending)) {
        // §13: a termination is answered with the end of the stream, once it came.
        if (this.held[0].terminate && !this.ending) break;
        this.answer();
      }
      this.idleCheck();
    });
  }

  /** Answers the oldest held request with what output there is (none for a pause). */
  private answer(noPayload = false): void {
    const req = this.held.shift()!;
    clearTimeout(req.timer);
    const taken: Chunk[] = [];
    let content = '';
    if (!noPayload) {
      // The answer to a termination carries all that is left (nothing can follow it).
      const all = req.terminate && this.ending !== undefined;
      while (this.out.length > 0 && (content === '' || all || content.length + this.out[0].xml.length <= ANSWER_BYTES)) {
        const c = this.out.shift()!;
        this.outBytes -= c.xml.length;
        content += c.xml;
        taken.push(c);
      }
    }
    const end = this.ending && this.out.length === 0 && !noPayload ? this.ending : undefined;
    let attrs = '';
    if (req.rid === this.p.rid) attrs += this.creationAttrs();
    // §9.1: the highest rid received with every lower one, unless it is this request's.
    else if (this.p.acks && this.expected - 1 !== req.rid) attrs += ` ack='${this.expected - 1}'`;
    if (req.report) attrs += ` report='${req.report.rid}' time='${req.report.time}'`;
    if (end) attrs += ` type='terminate'${end.condition ? ` condition='${end.condition}'` : ''}`;
    const body = wrap(attrs, content + (end?.content ?? ''));
    // §14.3: kept for a request sent again, but not a pause's answer: as
    // many as 'requests', or with acknowledgements those not acknowledged
    // (§9.2), up to a bound.
    if (!req.pause) {
      this.answered.set(req.rid, { body, at: Date.now() });
      const keep = this.p.acks ? Math.max(this.requests, UNACKED_KEPT) : this.requests;
      for (const rid of this.answered.keys()) if (this.answered.size > keep) this.answered.delete(rid);
    }
    this.lastAnswerEmpty = content === '';
    for (const to of req.to) to.send(body, 200, this.p.contentType);
    for (const c of taken) c.cb?.();
    if (taken.length > 0) for (const d of this.drainers.splice(0)) d();
    if (end) this.finish(end);
  }

  /** §7.2 (with XEP-0206 §4): the creation's answer says what the session is. */
  private creationAttrs(): string {
    const p = this.p;
    let a = ` sid='${p.sid}' wait='${p.wait}' hold='${p.hold}' requests='${this.requests}' inactivity='${p.inactivity}' polling='${POLLING_S}' maxpause='${p.maxpause}'`;
    if (p.ver !== undefined) a += ` ver='${p.ver}'`;
    // §9.1: answers that carry 'ack' start with the creation's (MUST).
    if (p.acks) a += ` ack='${p.rid}'`;
    if (this.secure) a += ` secure='true'`;
    a += ` xmlns:xmpp='${NS_XBOSH}' xmpp:version='1.0'`;
    if (this.streamId) a += ` authid='${escapeXML(this.streamId)}'`;
    return a;
  }

  /** A terminal binding condition (§17.2) for the session, caused by `cause` (a request, or the responder of one not taken in). */
  private fail(condition: BindingCondition, text: string, cause: Req | Responder): void {
    log.info('BOSH session terminated', { sid: this.tag, ip: this.remoteAddress, condition, text });
    const status = this.p.ver === undefined ? LEGACY_STATUS[condition] : undefined;
    const body = terminateBody(condition);
    const all = [...this.held, ...this.queue, ...this.early.values()];
    if ('rid' in cause && !all.includes(cause)) all.push(cause);
    this.held.length = 0;
    this.queue.length = 0;
    this.early.clear();
    for (const r of all) {
      clearTimeout(r.timer);
      for (const to of r.to) this.reply(to, body, status);
    }
    if (!('rid' in cause)) this.reply(cause, body, status);
    this.finish(undefined);
  }

  private refuse(to: Responder, condition: BindingCondition): void {
    this.reply(to, terminateBody(condition), this.p.ver === undefined ? LEGACY_STATUS[condition] : undefined);
  }

  /** §17.1: a legacy client gets the HTTP error instead. */
  private reply(to: Responder, body: string, status: number | undefined): void {
    if (status !== undefined) to.send('', status, 'text/plain');
    else to.send(body, 200, this.p.contentType);
  }

  /** Over: what is held gets the termination, what was not sent fails back to the engine, and the engine learns the connection is gone. */
  private finish(end: Ending | undefined): void {
    if (this.finished) return;
    this.finished = true;
    this.clearIdle();
    const body = terminateBody(end?.condition, end?.content);
    for (const r of [...this.held.splice(0), ...this.queue.splice(0), ...this.early.values()]) {
      clearTimeout(r.timer);
      for (const to of r.to) to.send(body, 200, this.p.contentType);
    }
    this.early.clear();
    const left = this.out.splice(0);
    this.outBytes = 0;
    this.gone(this);
    // As a socket's: failed writes, then the close, after this turn.
    setImmediate(() => {
      for (const c of left) c.cb?.(new Error('the BOSH session is over'));
      for (const fn of this.closers.splice(0)) fn();
      for (const d of this.drainers.splice(0)) d();
    });
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  /**
   * §10: with nothing pending, the client has 'inactivity' seconds (or its
   * pause) to send a request, or it is gone. Requests that arrived ahead of
   * a lower rid (§14.2) do not count as pending: until that one comes none
   * is read, and a client that never sends it would keep the session for ever.
   */
  private idleCheck(): void {
    if (this.finished || this.idleTimer || this.held.length + this.queue.length > 0) return;
    const s = this.pauseS ?? this.p.inactivity;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      // §10: the client is taken as gone, without a word (it has no request to be told on).
      log.debug('BOSH session inactive: its client is gone', { sid: this.tag, ip: this.remoteAddress, seconds: s });
      this.finish(undefined);
    }, s * 1000);
    this.idleTimer.unref();
  }

  // ---- the engine's side (stream/transport.ts) ----

  attach(sink: FrameSink): void {
    this.sink = sink;
  }

  onClose(fn: () => void): void {
    this.closers.push(fn);
  }

  header(attrs: string): string {
    this.streamId = /\sid='([^']*)'/.exec(attrs)?.[1] ?? this.streamId;
    return `${HEADER}${attrs}/>`;
  }

  get destroyed(): boolean {
    return this.finished;
  }

  get writableLength(): number {
    return this.outBytes;
  }

  write(data: string, cb: (err?: Error | null) => void): void {
    if (this.finished || this.ending) {
      queueMicrotask(() => cb(new Error('the BOSH session is over')));
      return;
    }
    let last: Chunk | undefined;
    for (const f of frames(data, NS_CLIENT)) {
      // Our stream's header is the session's creation (or the restart's answer): not sent.
      if (f.startsWith(HEADER)) continue;
      if (f === FOOTER) {
        this.ending ??= {};
        continue;
      }
      if (f.startsWith('<stream:error')) {
        // XEP-0206 §6: a stream error ends the session as remote-stream-error, carrying the error's children.
        const err = parseXml(f) as Element;
        this.ending = { condition: 'remote-stream-error', content: err.children.map((c) => (typeof c === 'string' ? '' : c.toString())).join('') };
        continue;
      }
      last = { xml: f };
      this.out.push(last);
      this.outBytes += f.length;
    }
    if (last) last.cb = cb;
    else queueMicrotask(() => cb());
    if (this.held.length > 0) this.soon();
  }

  once(_event: 'drain', listener: () => void): void {
    this.drainers.push(listener);
  }

  end(data?: string): void {
    if (data) this.write(data, () => {});
    this.ending ??= {};
    if (this.held.length > 0) this.soon();
  }

  destroy(): void {
    if (this.finished) return;
    // Ended by the engine (its grace after the end passed, a slow reader, a lost session): what is held is told.
    this.finish(this.ending ?? { condition: 'remote-connection-failed' });
  }

  pause(): void {
    this.readPaused = true;
  }

  resume(): void {
    if (!this.readPaused) return;
    this.readPaused = false;
    this.process();
  }
}

/** What the BOSH service of one worker needs of it. */
export interface BoshEnv {
  config: Pick<Config, 'domain' | 'maxStanzaBytes' | 'maxStanzaElements' | 'boshMaxWait' | 'boshInactivity' | 'boshMaxPause' | 'maxConnectionsPerIp'>;
  node: string;
  /**
   * Sessions this worker may hold at once: its share of the node's
   * connection cap (XMPP_MAX_CONNECTIONS, or the one derived from the
   * open-file limit). A BOSH session holds no connection of its own, so the
   * acceptor's cap never counts it.
   */
  maxSessions: number;
  worker(): number;
  /** A new session, ready to carry a stream: the worker makes it a client session. */
  session(transport: BoshSession): void;
  /**
   * Cluster: whether another node is a member whose lease holds (as last
   * read, read again at most once a second). A session id is the client's
   * to write: one naming a node that is not would otherwise cost a Redis
   * publish, and an entry in the transport's numbering kept for ever.
   */
  alive?(node: string): boolean | Promise<boolean>;
  /** To a worker of this node or another: whether it was taken (false: that worker or node is gone). */
  send(node: string, worker: number, env: BoshEnvelope): boolean | Promise<boolean>;
}

const refusedPerAddress = new Throttled('warn', 'BOSH session refused: too many from one address');
const refusedFull = new Throttled('warn', "BOSH session refused: this worker holds its share of the node's connection cap");

/** One worker's BOSH: its sessions, and requests on their way to and from other workers. */
export class BoshService {
  private readonly env: BoshEnv;
  private readonly sessions = new Map<string, BoshSession>();
  private readonly perAddress = new Map<string, number>();
  private readonly addressOf = new Map<BoshSession, string>();
  /** Requests read here and forwarded to their session's worker, by number. */
  private readonly forwarded = new Map<number, { to: Responder; timer: NodeJS.Timeout }>();
  private q = 0;

  constructor(env: BoshEnv) {
    this.env = env;
  }

  /** A request read by this worker's HTTP server. */
  request(body: Buffer, info: RequestInfo, to: Responder): void {
    const p = parseBody(body, this.env.config);
    // §17.2: not a <body/>: bad-request, nothing else touched.
    if (!p) return void to.send(terminateBody('bad-request'), 200, DEFAULT_CONTENT_TYPE);
    const sid = p.attrs.sid;
    if (sid === undefined) return this.create(p, info, to);
    const owner = ownerOf(sid);
    // §17.2: a sid that is not one: item-not-found.
    if (!owner) return void to.send(terminateBody('item-not-found'), 200, DEFAULT_CONTENT_TYPE);
    if (owner.node === this.env.node && owner.worker === this.env.worker()) return this.local(sid, p, info, to);
    if (owner.node === this.env.node || !this.env.alive) return this.forward(owner, body, info, to);
    const notFound = () => to.send(terminateBody('item-not-found'), 200, DEFAULT_CONTENT_TYPE);
    const alive = this.env.alive(owner.node);
    if (alive === true) return this.forward(owner, body, info, to);
    if (alive === false) return notFound();
    void alive.then((yes) => (yes ? this.forward(owner, body, info, to) : notFound()), notFound);
  }

  private local(sid: string, p: Parsed, info: RequestInfo, to: Responder): void {
    const s = this.sessions.get(sid);
    if (!s) return void to.send(terminateBody('item-not-found'), 200, DEFAULT_CONTENT_TYPE);
    s.receive(p, info, to);
  }

  private forward(owner: { node: string; worker: number }, body: Buffer, info: RequestInfo, to: Responder): void {
    const q = ++this.q;
    const gone = () => {
      const f = this.forwarded.get(q);
      if (!f) return;
      clearTimeout(f.timer);
      this.forwarded.delete(q);
      f.to.send(terminateBody('item-not-found'), 200, DEFAULT_CONTENT_TYPE);
    };
    // Held there no longer than 'wait'; past that (an answer lost between
    // nodes) the client is told to send its unanswered requests again
    // (§17.3 recoverable binding condition), which a session answers from
    // what it kept (§14.3).
    const timer = setTimeout(() => {
      this.forwarded.delete(q);
      to.send(wrap(` type='error'`, ''), 200, DEFAULT_CONTENT_TYPE);
    }, (this.env.config.boshMaxWait + 30) * 1000);
    timer.unref();
    this.forwarded.set(q, { to, timer });
    const sent = this.env.send(owner.node, owner.worker, { t: 'bosh', q, node: this.env.node, worker: this.env.worker(), body: new Uint8Array(body.buffer, body.byteOffset, body.byteLength), secure: info.secure, ...(info.client !== undefined ? { client: info.client } : {}), ...(info.port !== undefined ? { port: info.port } : {}) });
    if (sent === false) gone();
    else if (sent !== true) void sent.then((ok) => ok || gone(), gone);
  }

  /** A request forwarded here, or the answer to one forwarded from here. */
  onEnvelope(env: BoshEnvelope): void {
    if (env.t === 'bosh-res') {
      const f = this.forwarded.get(env.q);
      if (!f) return;
      clearTimeout(f.timer);
      this.forwarded.delete(env.q);
      if (env.close) return f.to.close();
      return f.to.send(env.body ?? '', env.status ?? 200, env.type ?? DEFAULT_CONTENT_TYPE);
    }
    const back = (res: BoshEnvelope): void => {
      const sent = this.env.send(env.node, env.worker, res);
      if (sent !== true && sent !== false) void sent.catch(() => {});
    };
    const to: Responder = {
      send: (body, status, type) => back({ t: 'bosh-res', q: env.q, body, status, type }),
      close: () => back({ t: 'bosh-res', q: env.q, close: true }),
    };
    const body = Buffer.from(env.body.buffer, env.body.byteOffset, env.body.byteLength);
    const p = parseBody(body, this.env.config);
    const sid = p?.attrs.sid;
    if (!p || sid === undefined) return void to.send(terminateBody('bad-request'), 200, DEFAULT_CONTENT_TYPE);
    this.local(sid, p, { secure: env.secure, client: env.client, port: env.port }, to);
  }

  /** §7.1, §7.2: a request with no sid creates a session here. */
  private create(p: Parsed, info: RequestInfo, to: Responder): void {
    const a = p.attrs;
    const c = this.env.config;
    const rid = ridOf(a.rid);
    const legacy = a.ver === undefined;
    const refuse = (condition: BindingCondition, text: string): void => {
      log.info('BOSH session refused', { ip: info.client, condition, text });
      const status = legacy ? LEGACY_STATUS[condition] : undefined;
      if (status !== undefined) to.send('', status, 'text/plain');
      else to.send(terminateBody(condition), 200, DEFAULT_CONTENT_TYPE);
    };
    if (rid === undefined) return refuse('bad-request', 'no valid rid');
    const asked = { wait: seconds(a.wait), hold: seconds(a.hold) };
    if ((a.wait !== undefined && asked.wait === undefined) || (a.hold !== undefined && asked.hold === undefined)) return refuse('bad-request', "'wait' and 'hold' are whole numbers of seconds and requests");
    if (this.sessions.size >= this.env.maxSessions) {
      refusedFull.hit({ sessions: this.sessions.size });
      // §17.2: remote-connection-failed, the connection manager could not reach the server: here, the server has no room for the stream.
      return refuse('remote-connection-failed', 'the server has no room for another session');
    }
    const key = addressKey(info.client ?? 'unknown');
    const cap = c.maxConnectionsPerIp > 0 ? c.maxConnectionsPerIp : DEFAULT_SESSIONS_PER_ADDRESS;
    const n = this.perAddress.get(key) ?? 0;
    if (n >= cap) {
      refusedPerAddress.hit({ address: key, sessions: n });
      return refuse('policy-violation', 'too many sessions from this address');
    }
    const ver = versionOf(a.ver);
    const params: SessionParams = {
      // §7.2, §19.3: opaque, unpredictable and unique (MUST): 128 random bits, and where the session lives.
      sid: `${randomBytes(16).toString('base64url')}.${this.env.worker()}.${this.env.node}`,
      rid,
      // §7.2: no longer than the client asked (MUST), nor than we allow.
      wait: Math.min(asked.wait ?? c.boshMaxWait, c.boshMaxWait),
      // §7.2: no more than the client asked (MUST NOT).
      hold: Math.min(asked.hold ?? 1, MAX_HOLD),
      inactivity: c.boshInactivity,
      maxpause: c.boshMaxPause,
      ver,
      acks: a.ack === '1',
      // §7.1: the 'content' the client asked for is every answer's Content-Type (MUST); only XML and text ones are taken.
      contentType: a.content !== undefined && CONTENT_TYPE.test(a.content) ? a.content : DEFAULT_CONTENT_TYPE,
      secure: info.secure,
      client: info.client,
      port: info.port,
      newkey: a.newkey,
    };
    const s = new BoshSession(params, (done) => this.ended(done));
    this.sessions.set(s.sid, s);
    this.perAddress.set(key, n + 1);
    this.addressOf.set(s, key);
    log.debug('BOSH session created', { sid: s.tag, ip: info.client, wait: params.wait, hold: params.hold });
    this.env.session(s);
    s.receive(p, info, to);
  }

  /**
   * Shutdown, once every session was closed: what is held got its
   * termination; the sessions that have no request to carry it end now
   * (their clients cannot come back for it: the listeners are closing).
   */
  close(): void {
    for (const s of [...this.sessions.values()]) s.destroy();
  }

  private ended(s: BoshSession): void {
    if (this.sessions.get(s.sid) === s) this.sessions.delete(s.sid);
    const key = this.addressOf.get(s);
    this.addressOf.delete(s);
    if (key === undefined) return;
    const n = (this.perAddress.get(key) ?? 1) - 1;
    if (n <= 0) this.perAddress.delete(key);
    else this.perAddress.set(key, n);
  }
}

/** §7.2 'ver': the lower of the client's and ours; undefined for a legacy client (none asked). */
function versionOf(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d{1,4})\.(\d{1,4})$/.exec(v);
  if (!m) return `${VERSION[0]}.${VERSION[1]}`;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  // §7.1: the minor number is an integer of its own (1.10 is above 1.9).
  const lower = major < VERSION[0] || (major === VERSION[0] && minor < VERSION[1]);
  return lower ? `${major}.${minor}` : `${VERSION[0]}.${VERSION[1]}`;
}
