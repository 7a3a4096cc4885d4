// Federation on one worker: the outgoing streams to peer servers and the
// incoming ones from them. On each node, one worker owns the outgoing
// stream of a (local domain, remote domain) pair, chosen by a hash of the
// remote domain; the other workers hand it their stanzas for that peer over
// the node's worker links, so that a node opens one stream per pair and a
// sender's stanzas (all from its session's worker) keep their order. Each
// node of a cluster opens its own streams (see README, Federation, "In a
// cluster"): no lease to take, no hop to another node.
//
// A stream is set up on demand: the peer is looked up (resolve.ts), each
// address tried in turn, and stanzas wait in a bounded queue meanwhile. A
// peer that could not be reached or authenticated, or that dropped the
// stream before it was authenticated, is not tried again at once: for a
// while (doubling up to a bound after each failure) its stanzas are
// answered remote-server-not-found at once, as ejabberd does, rather than
// held.
import net from 'node:net';
import type { X509Certificate } from 'node:crypto';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { StanzaError, errorReply } from '../xmpp/errors.ts';
import type { StanzaCondition } from '../xmpp/errors.ts';
import { parseJid } from '../xmpp/jid.ts';
import type { PeerAddress } from '../config/index.ts';
import { dnsServersOf, s2sHostsOf } from '../config/index.ts';
import type { WorkerContext } from '../worker/context.ts';
import type { S2sEnvelope } from '../worker/wire.ts';
import { resolvePeer } from './resolve.ts';
import { ServerOut } from './outgoing.ts';
import type { VerifyResult } from './outgoing.ts';
import type { ServerIn } from './incoming.ts';
import { systemAnchors } from '../tls/trust.ts';
import { secretFromKey } from './dialback.ts';
import { log } from '../log.ts';
import * as metrics from '../metrics/metrics.ts';

const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 5 * 60_000;
/**
 * Bounds on what users (stanzas to many domains) and peers (dialback
 * requests) can make a worker hold: peers being looked up and connected to
 * at once, and peers remembered as unreachable (the oldest forgotten first).
 */
const MAX_CONNECTING = 256;
const MAX_BACKOFF = 10_000;

/** A stream being connected (DNS, TCP): what waits for it, and how to give up on it. */
interface Connecting {
  queue: Element[];
  verifies: { from: string; id: string; key: string; done: (r: VerifyResult) => void }[];
  give?: (condition: StanzaCondition, text: string) => void;
}

export interface FederationDeps {
  ctx: WorkerContext;
  /** This worker's index, and how to reach another worker of the node (false: it is gone). */
  worker: () => number;
  toWorker: (worker: number, env: S2sEnvelope) => boolean;
  /** The TLS private key (PEM): the dialback secret's source when XMPP_S2S_SECRET is not set. */
  tlsKey: string;
  /** XMPP_TLS_CA's certificates. */
  extraAnchors: X509Certificate[];
}

export class Federation {
  // The settings below are the configuration's, read again by reconfigure() (a reload): streams opened from then on use the new ones.
  secret!: string;
  secureAuth!: boolean;
  maxQueue!: number;
  idleMs!: number;
  /** How long a db:verify waits for the peer's answer. */
  verifyTimeoutMs!: number;
  /** What a peer's certificate must chain up to: the system's trust store and XMPP_TLS_CA. */
  anchors!: X509Certificate[];
  readonly incoming = new Set<ServerIn>();
  private readonly d: FederationDeps;
  private hosts!: Map<string, PeerAddress>;
  private dnsServers!: string[];
  private readonly out = new Map<string, ServerOut>();
  private readonly connecting = new Map<string, Connecting>();
  private readonly backoff = new Map<string, { until: number; delay: number }>();
  /** Verifications asked of the owning worker, by number. */
  private readonly asked = new Map<number, (r: VerifyResult) => void>();
  private q = 0;
  private closed = false;

  constructor(deps: FederationDeps) {
    this.d = deps;
    this.reconfigure(deps.tlsKey, deps.extraAnchors);
  }

  /** Reads the s2s settings from the configuration (at start, and after a reload), with the TLS key and XMPP_TLS_CA's certificates of now. */
  reconfigure(tlsKey: string, extraAnchors: X509Certificate[]): void {
    const c = this.d.ctx.config;
    this.secret = c.s2sSecret || secretFromKey(tlsKey);
    this.secureAuth = c.s2sSecureAuth;
    this.maxQueue = c.s2sMaxQueue;
    this.idleMs = c.s2sIdleTimeoutMs;
    this.verifyTimeoutMs = c.s2sConnectTimeoutMs;
    this.hosts = s2sHostsOf(c);
    this.dnsServers = dnsServersOf(c);
    this.anchors = [...systemAnchors(), ...extraAnchors];
  }

  /** The worker of this node that owns the streams to `remote`. */
  private owner(remote: string): number {
    let h = 2166136261;
    for (let i = 0; i < remote.length; i++) h = Math.imul(h ^ remote.charCodeAt(i), 16777619);
    return (h >>> 0) % this.d.ctx.config.workers;
  }

  /** Whether this worker owns the streams to `remote` on this node. */
  owns(remote: string): boolean {
    return this.owner(remote) === this.d.worker();
  }

  /** A stanza from one of our domains to a remote one (its 'from' stamped, its 'to' parsed). */
  send(el: Element, local: string, remote: string): void {
    const owner = this.owner(remote);
    if (owner !== this.d.worker() && this.d.toWorker(owner, { t: 's2s', local, remote, xml: el.toString() })) return;
    this.here(el, local, remote);
  }

  /** Asks `remote`'s authoritative server whether it made `key` for our stream `id` (XEP-0220 §2.1.3). */
  verify(local: string, remote: string, id: string, key: string): Promise<VerifyResult> {
    const owner = this.owner(remote);
    if (owner !== this.d.worker()) {
      const q = ++this.q;
      const answered = new Promise<VerifyResult>((done) => this.asked.set(q, done));
      if (this.d.toWorker(owner, { t: 's2s-verify', q, worker: this.d.worker(), local, remote, id, key })) {
        // The owner answers within its connect timeouts; this bounds a worker that died meanwhile.
        const t = setTimeout(() => this.answered(q, 'error'), 2 * this.d.ctx.config.s2sConnectTimeoutMs + 1000);
        t.unref();
        return answered.finally(() => clearTimeout(t));
      }
      this.asked.delete(q);
    }
    return this.verifyHere(local, remote, id, key);
  }

  /** An envelope from another worker of this node. */
  onEnvelope(env: S2sEnvelope): void {
    if (env.t === 's2s') {
      const el = parse(env.xml);
      if (el) this.here(el, env.local, env.remote);
    } else if (env.t === 's2s-verify') {
      void this.verifyHere(env.local, env.remote, env.id, env.key).then((result) => {
        if (!this.d.toWorker(env.worker, { t: 's2s-verified', q: env.q, result })) log.debug('dialback verification answer lost: the asking worker is gone', { remote: env.remote });
      });
    } else this.answered(env.q, env.result);
  }

  private answered(q: number, r: VerifyResult): void {
    const done = this.asked.get(q);
    this.asked.delete(q);
    done?.(r);
  }

  private here(el: Element, local: string, remote: string): void {
    if (this.closed) return this.bounce(el, 'remote-server-not-found', 'this server is shutting down');
    const key = `${local} ${remote}`;
    const s = this.out.get(key);
    if (s && s.usable) {
      if (!s.enqueue(el)) this.bounce(el, 'resource-constraint', `too many stanzas wait for ${remote}`);
      return;
    }
    const pending = this.connecting.get(key);
    if (pending) {
      if (pending.queue.length >= this.maxQueue) return this.bounce(el, 'resource-constraint', `too many stanzas wait for ${remote}`);
      pending.queue.push(el);
      return;
    }
    const b = this.backoff.get(key);
    if (b && Date.now() < b.until) return this.bounce(el, 'remote-server-not-found', `${remote} could not be reached lately; not trying again before ${new Date(b.until).toISOString()}`);
    if (this.connecting.size >= MAX_CONNECTING) return this.bounce(el, 'remote-server-timeout', 'too many servers are being connected to; try again shortly');
    this.open(local, remote, { queue: [el], verifies: [] });
  }

  private verifyHere(local: string, remote: string, id: string, key: string): Promise<VerifyResult> {
    return new Promise((done) => {
      const k = `${local} ${remote}`;
      const s = this.out.get(k);
      if (s && s.usable) {
        void s.verify(local, id, key).then(done);
        return;
      }
      const pending = this.connecting.get(k);
      if (pending) {
        pending.verifies.push({ from: local, id, key, done });
        return;
      }
      // A peer just found unreachable will not answer now either.
      const b = this.backoff.get(k);
      if ((b && Date.now() < b.until) || this.connecting.size >= MAX_CONNECTING) return done('error');
      this.open(local, remote, { queue: [], verifies: [{ from: local, id, key, done }] });
    });
  }

  /**
   * Looks the peer up and connects, trying each address in turn, all within
   * one XMPP_S2S_CONNECT_TIMEOUT_MS; then the stream takes what waited
   * (and has that long again to be secured and authenticated).
   */
  private open(local: string, remote: string, pending: Connecting): void {
    const key = `${local} ${remote}`;
    this.connecting.set(key, pending);
    const c = this.d.ctx.config;
    const deadline = Date.now() + c.s2sConnectTimeoutMs;
    let given = false;
    const give = (condition: StanzaCondition, text: string) => {
      if (given) return;
      given = true;
      clearTimeout(timer);
      this.connecting.delete(key);
      this.noteFailure(key);
      metrics.s2sFailure('out', condition);
      log.info('peer server unreachable', { local, remote, condition, text });
      for (const el of pending.queue) this.bounce(el, condition, text);
      for (const v of pending.verifies) v.done('error');
    };
    pending.give = give;
    // give() reads it only later (from the timer or the lookup below).
    const timer = setTimeout(() => give('remote-server-timeout', `${remote} could not be reached in time`), c.s2sConnectTimeoutMs);
    timer.unref();
    void (async () => {
      let addrs: PeerAddress[];
      try {
        addrs = await resolvePeer(remote, this.hosts, { servers: this.dnsServers, timeoutMs: c.s2sDnsTimeoutMs, deadline });
      } catch (err) {
        return give('remote-server-not-found', `${remote} could not be looked up: ${(err as Error).message}`);
      }
      if (addrs.length === 0) return give('remote-server-not-found', `${remote} has no address, or offers no XMPP service`);
      for (const a of addrs) {
        if (given) return;
        if (this.closed) return give('remote-server-not-found', 'this server is shutting down');
        const r = await connect(a, deadline - Date.now());
        if (typeof r === 'string') continue;
        if (given || this.closed) {
          r.destroy(); // too late: what waited was answered already (or is, now)
          return give('remote-server-not-found', 'this server is shutting down');
        }
        const s = new ServerOut(this.d.ctx, this, local, remote, r, a.directTls === true);
        given = true;
        clearTimeout(timer);
        this.connecting.delete(key);
        this.out.set(key, s);
        log.debug('connected to peer server', { local, remote, host: a.host, port: a.port, directTls: a.directTls === true });
        for (const el of pending.queue) if (!s.enqueue(el)) this.bounce(el, 'resource-constraint', `too many stanzas wait for ${remote}`);
        for (const v of pending.verifies) void s.verify(v.from, v.id, v.key).then(v.done);
        return;
      }
      give('remote-server-not-found', `${remote} could not be reached`);
    })().catch((err: unknown) => {
      log.error('connecting to a peer server failed', { remote, err: String(err) });
      give('remote-server-not-found', `${remote} could not be reached`);
    });
  }

  private noteFailure(key: string): void {
    const prev = this.backoff.get(key);
    const delay = prev ? Math.min(BACKOFF_MAX_MS, prev.delay * 2) : BACKOFF_MIN_MS;
    // Re-inserted: the map stays in the order of the last failure.
    this.backoff.delete(key);
    this.backoff.set(key, { until: Date.now() + delay, delay });
    if (this.backoff.size > MAX_BACKOFF) {
      const now = Date.now();
      for (const [k, v] of this.backoff) if (v.until + BACKOFF_MAX_MS < now) this.backoff.delete(k);
      for (const k of this.backoff.keys()) {
        if (this.backoff.size <= MAX_BACKOFF) break;
        this.backoff.delete(k);
      }
    }
  }

  /** A stream could not be set up (refused, not authenticated, timed out). */
  failed(s: ServerOut, _condition: StanzaCondition, _text: string): void {
    const key = `${s.local} ${s.remote}`;
    if (this.out.get(key) === s) this.out.delete(key);
    if (!s.ready) this.noteFailure(key);
  }

  /** A stream ended (idle, closed by the peer, failed, dropped during set-up). */
  ended(s: ServerOut): void {
    const key = `${s.local} ${s.remote}`;
    if (this.out.get(key) === s) this.out.delete(key);
    if (s.ready) this.backoff.delete(key);
    else if (!s.failedAlready) {
      // A reset or a TLS failure before authentication is a failure too.
      this.noteFailure(key);
      metrics.s2sFailure('out', 'remote-connection-failed');
    }
  }

  /** An error back to the sender of a stanza that could not go to its peer server (RFC 6120 §8.3.1). */
  bounce(el: Element, condition: StanzaCondition, text: string): void {
    const reply = errorReply(el, new StanzaError(condition, text));
    if (reply) void this.d.ctx.router.routeInternal(reply);
  }

  bounceXml(xml: string, condition: StanzaCondition, text: string): void {
    const el = parse(xml);
    if (el) this.bounce(el, condition, text);
  }

  /** Shutdown, first step: peers' streams end (system-shutdown), so that nothing new comes in; resolves when they are gone. */
  async closeIncoming(): Promise<void> {
    const incoming = [...this.incoming];
    for (const s of incoming) s.close({ condition: 'system-shutdown' });
    await Promise.all(incoming.map((s) => s.done));
  }

  /**
   * Shutdown, last step, once every worker's sessions have ended and their
   * last presence is on its way: our streams close after what they have to
   * write; what still waits goes back to its senders. Resolves when the
   * streams are gone.
   */
  /** Streams to peer servers open now (stats). */
  get outgoingCount(): number {
    return this.out.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of [...this.connecting.values()]) p.give?.('remote-server-not-found', 'this server is shutting down');
    const out = [...this.out.values()];
    for (const s of out) s.close();
    await Promise.all(out.map((s) => s.done));
  }

  /** Streams open now, for the log and tests. */
  get counts(): { outgoing: number; incoming: number } {
    return { outgoing: this.out.size, incoming: this.incoming.size };
  }
}

/** A TCP connection to one address, or why not. */
function connect(a: PeerAddress, timeoutMs: number): Promise<net.Socket | 'timeout' | 'failed'> {
  if (timeoutMs <= 0) return Promise.resolve('timeout');
  return new Promise((resolve) => {
    const sock = net.connect({ host: a.host, port: a.port, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('timeout');
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      log.debug('peer server connection failed', { host: a.host, port: a.port, err: err.message });
      resolve('failed');
    });
  });
}

function parse(xml: string): Element | undefined {
  try {
    return parseXml(xml);
  } catch {
    return undefined;
  }
}

/** The domain of a JID, or undefined. */
export function domainOf(jid: string | undefined): string | undefined {
  try {
    return jid ? parseJid(jid).domain : undefined;
  } catch {
    return undefined;
  }
}
