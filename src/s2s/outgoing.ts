// A stream we open to a peer server, on the stream engine as the
// initiating entity: the initiating side of the seed's §5.4 flow. Our
// header, the peer's features, STARTTLS (required: a peer that does not
// offer it is not used, and no answer we did not ask for is taken, so that
// nothing but a secured, authenticated stream carries stanzas), the
// restart, then authentication: SASL EXTERNAL
// when the peer offers it (it found our certificate valid), else dialback
// (XEP-0220) with a key made from the cluster's secret. Stanzas wait in a
// bounded queue until the stream is authenticated, then go in order. The
// stream also carries our requests to verify keys peers gave us
// (db:verify), which need only TLS. A stream that fails, times out, or
// stays idle ends; what it could not send goes back to its senders as an
// error.
import type net from 'node:net';
import { domainToASCII } from 'node:url';
import { Element } from 'ltx';
import { StreamEngine } from '../stream/engine.ts';
import type { Out, State } from '../stream/engine.ts';
import type { MechanismContext, SaslResult } from '../sasl/mechanism.ts';
import { StreamError } from '../xmpp/errors.ts';
import type { StanzaCondition } from '../xmpp/errors.ts';
import { NS_SASL, NS_TLS } from '../xmpp/ns.ts';
import type { WorkerContext } from '../worker/context.ts';
import { NS_DIALBACK, NS_DIALBACK_FEATURE, dialbackKey } from './dialback.ts';
import { chainValid, validFor } from '../tls/trust.ts';
import { NS_SERVER, dialbackOf, localName, safeDomain } from './names.ts';
import type { Federation } from './federation.ts';
import type { StreamKind } from '../metrics/metrics.ts';
import * as metrics from '../metrics/metrics.ts';

export type VerifyResult = 'valid' | 'invalid' | 'error';

/** A stanza waiting for the stream, and what becomes of it if it is never sent. */
interface Waiting {
  el: Element;
  xml: string;
}

export class ServerOut extends StreamEngine {
  readonly local: string;
  readonly remote: string;

  /** The peer server, once it is authenticated, may send many small stanzas a second: reads are bounded only until then. */
  protected override get readsBounded(): boolean {
    return !this.authenticated;
  }
  private readonly fed: Federation;
  /** Stanzas waiting for authentication, in order. */
  private readonly queue: Waiting[] = [];
  /** Our db:verify requests (XEP-0220 §2.1.3) waiting to be sent (before TLS) or answered, by the id of the stream they are for. */
  private readonly verifies = new Map<string, { from: string; id: string; key: string; sent: boolean; done: (r: VerifyResult) => void }>();
  /** Authenticated: stanzas go as they come. */
  ready = false;
  private method = '';
  private features: Element | undefined;
  private certTrusted = false;
  private dbPrefix = false;
  private failedWith: StanzaCondition | undefined;
  private readonly setupTimer: NodeJS.Timeout;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastSent = Date.now();
  private readonly directTls: boolean;
  /** What we asked of the peer: an answer to anything else is not taken (a <success/> we did not ask for must not authenticate anyone). */
  private asked: 'starttls' | 'auth' | 'dialback' | undefined;

  constructor(ctx: WorkerContext, fed: Federation, local: string, remote: string, socket: net.Socket, directTls: boolean) {
    // Direct TLS starts below, once the fields the handshake needs (the server name) are set.
    super(ctx, socket, false, true);
    this.fed = fed;
    this.local = local;
    this.remote = remote;
    this.peer = remote;
    this.directTls = directTls;
    // Connecting, securing and authenticating are bounded together.
    this.setupTimer = setTimeout(() => {
      if (!this.ready) this.fail('remote-server-timeout', `no authenticated stream to ${remote} in time`);
    }, ctx.config.s2sConnectTimeoutMs);
    this.setupTimer.unref();
    socket.setKeepAlive(true, 60_000);
    if (directTls) this.upgradeToTls();
    else this.openStream();
  }

  // ---- what the federation asks of the stream ----

  /** A stanza for the peer: sent now if the stream is authenticated, else queued; false when the queue is full. */
  enqueue(el: Element): boolean {
    if (this.ready) {
      this.lastSent = Date.now();
      this.put({ xml: el.toString(), live: true, reroute: 'message' });
      return true;
    }
    if (this.queue.length >= this.fed.maxQueue) return false;
    this.queue.push({ el, xml: el.toString() });
    return true;
  }

  /** Asks the peer whether it made `key` for a stream `id` we received from it (XEP-0220 §2.1.3). */
  verify(from: string, id: string, key: string): Promise<VerifyResult> {
    return new Promise((done) => {
      const prev = this.verifies.get(id);
      if (prev) {
        const was = prev.done;
        prev.done = (r) => {
          was(r);
          done(r);
        };
        return;
      }
      // A peer that never answers is taken as one that cannot say.
      const timer = setTimeout(() => {
        const v = this.verifies.get(id);
        if (!v) return;
        this.verifies.delete(id);
        v.done('error');
      }, this.fed.verifyTimeoutMs);
      timer.unref();
      this.verifies.set(id, { from, id, key, sent: false, done: (r) => (clearTimeout(timer), done(r)) });
      this.sendVerifies();
    });
  }

  /** It failed (and the federation noted it). */
  get failedAlready(): boolean {
    return this.failedWith !== undefined;
  }

  /** Whether the stream can still carry stanzas (authenticated or on its way). */
  get usable(): boolean {
    return this.open && this.failedWith === undefined;
  }

  // ---- the engine's hooks ----

  get kind(): StreamKind {
    return 's2s_out';
  }

  protected get contentNamespace(): string {
    return NS_SERVER;
  }

  protected override get headerDeclarations(): string {
    return ` xmlns:db='${NS_DIALBACK}'`;
  }

  protected get localDomain(): string {
    return this.local;
  }

  protected override get serverName(): string {
    // SNI carries the A-label form (RFC 6066 §3).
    return domainToASCII(this.remote) || this.remote;
  }

  /** XEP-0368 §4: direct TLS between servers says which protocol it carries. */
  protected override get alpn(): string[] | undefined {
    return this.directTls ? ['xmpp-server'] : undefined;
  }

  protected serves(domain: string): boolean {
    return domain === this.local;
  }

  protected override tlsEstablished(): void {
    const chain = this.peerCertificate;
    this.certTrusted = chain !== undefined && chainValid(chain, this.fed.anchors) && validFor(chain, this.remote);
  }

  protected override onStreamStart(name: string, attrs: Record<string, string>): void {
    this.dbPrefix = attrs['xmlns:db'] === NS_DIALBACK;
    super.onStreamStart(name, attrs);
  }

  protected get afterAuthentication(): State {
    return 'established';
  }

  protected saslMechanisms() {
    return { known: [], offered: [] };
  }

  protected saslContext(): MechanismContext {
    throw new StreamError('policy-violation', 'this end does not offer SASL');
  }

  protected authenticatedAs(_r: Extract<SaslResult, { kind: 'success' }>): void {}

  protected addFeatures(_f: Element): void {}

  protected async onElement(el: Element): Promise<void> {
    const name = localName(el);
    const ns = el.attrs.xmlns;
    if (name === 'features' && el.name !== 'features') return this.onFeatures(el);
    if (name === 'error' && el.name.includes(':')) {
      // The peer ended the stream with an error: §4.9.
      const cond = el.children.find((c): c is Element => typeof c !== 'string' && c.name !== 'text');
      this.endReason = `stream error from the peer: ${cond?.name ?? 'unknown'}`;
      return this.fail('remote-server-not-found', `${this.remote} closed the stream: ${cond?.name ?? 'error'}`);
    }
    if (ns === NS_TLS) {
      if (this.asked !== 'starttls' || this.secure) throw new StreamError('policy-violation', `<${name}/> was not asked for`);
      this.asked = undefined;
      if (name === 'proceed') return this.upgradeToTls();
      return this.fail('remote-server-not-found', `${this.remote} refused TLS`);
    }
    if (ns === NS_SASL) {
      if (this.asked !== 'auth') throw new StreamError('policy-violation', `<${name}/> was not asked for`);
      if (name === 'challenge') {
        // RFC 6120 §6.4.2: an empty challenge (XEP-0178 without an authorization identity) gets an empty response.
        this.write(`<response xmlns='${NS_SASL}'/>`);
        return;
      }
      this.asked = undefined;
      if (name === 'success') {
        this.authenticated = true;
        this.method = 'EXTERNAL';
        this.restart(); // §6.4.6: a new stream, whose features end negotiation
        return;
      }
      if (name === 'failure') {
        this.log.info('SASL EXTERNAL refused by peer; trying dialback', { remote: this.remote, condition: el.children.find((c): c is Element => typeof c !== 'string')?.name });
        if (this.features?.getChild('dialback', NS_DIALBACK_FEATURE)) return this.dialback();
        return this.fail('remote-server-not-found', `${this.remote} refused our authentication`);
      }
      return;
    }
    const db = dialbackOf(el, this.dbPrefix);
    if (db === 'result') {
      // XEP-0220 §2.1.4: the answer to our key, for this pair of domains.
      if (this.asked !== 'dialback' || safeDomain(el.attrs.from) !== this.remote || safeDomain(el.attrs.to) !== this.local) throw new StreamError('policy-violation', 'a dialback result that was not asked for');
      this.asked = undefined;
      const type = el.attrs.type;
      if (type === 'valid') return this.established('dialback');
      const cond = el.getChild('error')?.children.find((c): c is Element => typeof c !== 'string')?.name;
      return this.fail('remote-server-not-found', `${this.remote} refused our dialback key${cond ? ` (${cond})` : ''}`);
    }
    if (db === 'verify') {
      const v = this.verifies.get(el.attrs.id ?? '');
      if (!v) return;
      this.verifies.delete(v.id);
      v.done(el.attrs.type === 'valid' ? 'valid' : el.attrs.type === 'invalid' ? 'invalid' : 'error');
      return;
    }
    // Stanzas come to us on the peer's own stream (RFC 6120 §4.1: a stream is one-way).
    this.log.debug('unexpected element on an outgoing server stream', { remote: this.remote, name: el.name });
  }

  private onFeatures(f: Element): void {
    this.features = f;
    if (this.authenticated) return this.established(this.method);
    if (!this.secure) {
      // §5.3.1: TLS is mandatory-to-negotiate; a peer that does not offer it is not used.
      if (!f.getChild('starttls', NS_TLS)) return this.fail('remote-server-not-found', `${this.remote} does not offer TLS`);
      this.asked = 'starttls';
      this.write(`<starttls xmlns='${NS_TLS}'/>`);
      return;
    }
    this.sendVerifies();
    if (!this.certTrusted && this.fed.secureAuth) {
      this.log.info('peer server not used: its certificate is not valid for its domain', { remote: this.remote });
      return this.fail('remote-server-not-found', `the certificate of ${this.remote} is not valid for it`);
    }
    const mechs = f.getChild('mechanisms', NS_SASL);
    if (mechs?.getChildren('mechanism').some((m) => m.getText().trim() === 'EXTERNAL')) {
      // XEP-0178 §3: offered because our certificate is valid for our domain.
      this.asked = 'auth';
      this.write(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>${Buffer.from(this.local).toString('base64')}</auth>`);
      return;
    }
    this.dialback();
  }

  /** XEP-0220 §2.1.1: our key for this stream, made from the cluster's secret. */
  private dialback(): void {
    const key = dialbackKey(this.fed.secret, this.remote, this.local, this.peerStreamId);
    this.asked = 'dialback';
    this.write(new Element('db:result', { from: this.local, to: this.remote }).t(key).toString());
  }

  private established(method: string): void {
    if (this.ready) return;
    // Never without TLS, nor (with secure auth) with a certificate that does not prove the peer's domain.
    if (!this.secure || (this.fed.secureAuth && !this.certTrusted)) throw new StreamError('policy-violation', 'not secured as required');
    this.ready = true;
    this.state = 'established';
    clearTimeout(this.setupTimer);
    metrics.s2sAuthenticatedDomain('out');
    this.log.info('outgoing server stream authenticated', { local: this.local, remote: this.remote, method, queued: this.queue.length });
    this.lastSent = Date.now();
    // live: a peer that does not read what we send is a slow reader (XMPP_MAX_OUTBOUND_BYTES), disconnected, and what waited for it bounced.
    for (const w of this.queue.splice(0)) this.put({ xml: w.xml, live: true, reroute: 'message' });
    this.sendVerifies();
    this.idleTimer = setInterval(() => {
      if (Date.now() - this.lastSent >= this.fed.idleMs && this.verifies.size === 0) {
        this.endReason = 'idle';
        this.close();
      }
    }, Math.min(this.fed.idleMs, 30_000));
    this.idleTimer.unref();
  }

  /** db:verify goes once the stream is secure (the key is not for any eavesdropper). */
  private sendVerifies(): void {
    // Not while a SASL exchange may restart the stream under it.
    if (!this.secure || this.state === 'wait-stream' || !this.open || this.asked === 'auth') return;
    for (const v of this.verifies.values()) {
      if (v.sent) continue;
      v.sent = true;
      // Built, not pasted: the key came from a peer.
      this.write(new Element('db:verify', { from: v.from, to: this.remote, id: v.id }).t(v.key).toString());
    }
  }

  /**
   * The stream cannot be used: what waits for it goes back to its senders
   * with `condition` (RFC 6120 §8.3.3.16 and §8.3.3.17), verifications
   * are answered 'error', and the stream closes.
   */
  fail(condition: StanzaCondition, text: string): void {
    if (this.failedWith) return;
    this.failedWith = condition;
    metrics.s2sFailure('out', condition);
    this.log.info('outgoing server stream failed', { local: this.local, remote: this.remote, condition, text });
    this.fed.failed(this, condition, text);
    this.release(condition, text);
    if (this.open) this.close();
    else this.raw.destroy();
  }

  private release(condition: StanzaCondition, text: string): void {
    for (const w of this.queue.splice(0)) this.fed.bounce(w.el, condition, text);
    for (const v of [...this.verifies.values()]) v.done('error');
    this.verifies.clear();
  }

  /** A stanza that will never be written (the connection dropped first): back to its sender. */
  protected undeliverable(item: Out): void {
    this.fed.bounceXml(item.xml, 'remote-server-not-found', `the stream to ${this.remote} closed before this was sent`);
  }

  protected get routable(): boolean {
    return false;
  }

  protected lateHeld(_held: boolean): void {}

  protected get address(): string | undefined {
    return this.remote;
  }

  protected ended(_forgotten: boolean): void {
    clearTimeout(this.setupTimer);
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.fed.ended(this);
    this.release('remote-server-not-found', `the stream to ${this.remote} closed`);
  }

  protected logEnd(): void {
    (this.ready ? this.log.info : this.log.debug)('outgoing server stream closed', { local: this.local, remote: this.remote, reason: this.endReason });
  }
}
