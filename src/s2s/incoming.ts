// A stream a peer server opened to us (RFC 6120, jabber:server), on the
// stream engine: the receiving side of the seed's §5.4 flow. TLS comes
// first (required); then the peer authenticates its domain with SASL
// EXTERNAL (XEP-0178, offered when its certificate is valid for the domain
// its header claims) or with dialback (XEP-0220): accepted at once when the
// certificate is valid for the domain, otherwise, with
// XMPP_S2S_SECURE_AUTH=false, verified by asking the peer's authoritative
// server over our own stream to it. Several domains may be authenticated
// on one stream (piggybacking). A stream also answers the verification
// requests of servers checking keys we made (db:verify), whatever node made
// them. Stanzas then go to the router, from a verified domain to one we
// serve.
import { hostedDomains } from '../config/index.ts';
import type net from 'node:net';
import { Element } from 'ltx';
import { StreamEngine } from '../stream/engine.ts';
import type { Out, State } from '../stream/engine.ts';
import type { Mechanism, MechanismContext, MechanismFactory, SaslResult } from '../sasl/mechanism.ts';
import { SaslFailure, StreamError } from '../xmpp/errors.ts';
import { JidError, normalizeDomain, parseJid } from '../xmpp/jid.ts';
import { NS_DELAY, NS_SASL, NS_STANZAS_ERR } from '../xmpp/ns.ts';
import type { WorkerContext } from '../worker/context.ts';
import { NS_DIALBACK, NS_DIALBACK_FEATURE, keyValid } from './dialback.ts';
import { chainValid, validFor } from '../tls/trust.ts';
import { NS_SERVER, dialbackOf, safeDomain } from './names.ts';
import type { Federation } from './federation.ts';
import type { StreamKind } from '../metrics/metrics.ts';
import * as metrics from '../metrics/metrics.ts';

/**
 * What one peer stream may make us hold: domains authenticated on it
 * (XEP-0220 piggybacking), and dialback keys being verified at once (each
 * one a stream we use or open to the claimed domain).
 */
const MAX_DOMAINS = 100;
const MAX_VERIFYING = 8;
/** A dialback key as it may be: printable ASCII without markup characters, bounded (XEP-0185's are 64 hex digits). */
const KEY = /^(?![^<>&'"]*[<>&'"])[\x21-\x7e]{1,256}$/;

export class ServerIn extends StreamEngine {
  private readonly ctx: WorkerContext;
  private readonly fed: Federation;
  /** Domains the peer authenticated on this stream (SASL EXTERNAL, dialback). */
  readonly verified = new Set<string>();

  /** A peer server that authenticated may send many small stanzas a second: reads are bounded only until then. */
  protected override get readsBounded(): boolean {
    return this.verified.size === 0;
  }
  /** Dialback requests being verified, by originating domain (one at a time each). */
  private readonly verifying = new Set<string>();
  /** Whether the peer's certificate chains up to a trust anchor (then judged per domain). */
  private certTrusted = false;
  /** The header declared the dialback prefix. */
  private dbPrefix = false;
  /** The domain of ours the peer's header addressed. */
  private addressed: string | undefined;
  private readonly external: MechanismFactory;

  constructor(ctx: WorkerContext, fed: Federation, socket: net.Socket, directTls: boolean) {
    super(ctx, socket, directTls);
    this.ctx = ctx;
    this.fed = fed;
    fed.incoming.add(this);
    this.external = { name: 'EXTERNAL', available: () => true, create: () => this.externalMechanism() };
    // A peer that never authenticates is not kept (as a client that never binds).
    setTimeout(() => {
      if (this.verified.size === 0) this.close({ condition: 'connection-timeout', text: 'not authenticated in time' });
    }, ctx.config.bindTimeoutMs).unref();
    socket.setKeepAlive(true, 60_000);
  }

  // ---- the engine's hooks ----

  get kind(): StreamKind {
    return 's2s_in';
  }

  protected get contentNamespace(): string {
    return NS_SERVER;
  }

  protected override get headerDeclarations(): string {
    return ` xmlns:db='${NS_DIALBACK}'`;
  }

  protected get localDomain(): string {
    return this.addressed ?? this.ctx.config.domain;
  }

  protected serves(domain: string): boolean {
    return domain === this.ctx.config.domain || this.ctx.componentSecrets.has(domain) || hostedDomains(this.ctx.config).includes(domain);
  }

  /** RFC 6120 §13.7.2: a peer server's certificate is asked for, and judged for the domain it claims. */
  protected override get asksCertificate(): boolean {
    return true;
  }

  protected override tlsEstablished(): void {
    const chain = this.peerCertificate;
    this.certTrusted = chain !== undefined && chainValid(chain, this.fed.anchors);
  }

  /** The peer's certificate is valid for `domain` (RFC 6120 §13.7.2.1). */
  private certValidFor(domain: string): boolean {
    return this.certTrusted && validFor(this.peerCertificate!, domain);
  }

  /** §5.3.1: TLS is mandatory-to-negotiate between servers, whatever XMPP_TLS_REQUIRED says of clients. */
  protected override get mayAuthenticate(): boolean {
    return this.secure;
  }

  protected override get tlsMandatory(): boolean {
    return true;
  }

  protected override onStreamStart(name: string, attrs: Record<string, string>): void {
    this.dbPrefix = attrs['xmlns:db'] === NS_DIALBACK;
    // §4.7.1: our header's 'from' is the domain the peer addressed (ours, or a component's).
    const to = safeDomain(attrs.to);
    if (to !== undefined && this.serves(to)) this.addressed = to;
    // The peer's domain in the form SASL and dialback name it, before the features are decided on it.
    super.onStreamStart(name, attrs.from === undefined ? attrs : { ...attrs, from: safeDomain(attrs.from) ?? attrs.from });
  }

  protected get afterAuthentication(): State {
    return 'established';
  }

  protected saslMechanisms() {
    // XEP-0178 §3: EXTERNAL when the certificate is valid for the domain the header claims.
    const offer = this.secure && !this.authenticated && this.peer !== undefined && this.certValidFor(this.peer);
    return { known: [this.external], offered: offer ? [this.external] : [] };
  }

  protected saslContext(): MechanismContext {
    return { store: this.ctx.accounts, domain: this.ctx.config.domain, secure: this.secure };
  }

  /** SASL EXTERNAL between servers: the authorization identity is the peer's domain, or none (then the header's 'from'). */
  private externalMechanism(): Mechanism {
    return {
      start: async (initial) => {
        const authzid = initial && initial.length > 0 ? initial.toString('utf8') : undefined;
        let domain: string;
        try {
          domain = normalizeDomain(authzid ?? this.peer ?? '');
        } catch {
          throw new SaslFailure('invalid-authzid', 'the authorization identity is not a domain');
        }
        if (this.peer !== undefined && domain !== this.peer) throw new SaslFailure('invalid-authzid', "the authorization identity is not the stream's 'from'");
        if (this.serves(domain)) throw new SaslFailure('not-authorized', `${domain} is served here`);
        if (!this.certValidFor(domain)) throw new SaslFailure('not-authorized', `the certificate is not valid for ${domain}`);
        this.peer = domain;
        return { kind: 'success', username: null };
      },
      step: async () => {
        throw new SaslFailure('malformed-request', 'EXTERNAL has no further steps');
      },
    };
  }

  protected authenticatedAs(_r: Extract<SaslResult, { kind: 'success' }>): void {
    this.verified.add(this.peer!);
    metrics.s2sAuthenticatedDomain('in');
    this.log.info('peer server authenticated', { domain: this.peer, method: 'EXTERNAL', ip: this.raw.remoteAddress });
  }

  protected addFeatures(f: Element): void {
    // XEP-0220 §2.1: dialback is offered once TLS is in place (our policy:
    // TLS first); after SASL, nothing more is to be negotiated.
    if (this.secure && !this.authenticated) f.c('dialback', { xmlns: NS_DIALBACK_FEATURE }).c('errors');
  }

  protected async onElement(el: Element): Promise<void> {
    const db = dialbackOf(el, this.dbPrefix);
    if (db) {
      if (!this.secure) throw new StreamError('policy-violation', 'STARTTLS first: this server requires TLS between servers');
      if (db === 'result') return this.onResult(el);
      return this.onVerify(el);
    }
    // A SASL exchange restarts the stream: not while dialback answers are still to be written on this one.
    if (this.verifying.size > 0 && el.name === 'auth' && el.attrs.xmlns === NS_SASL) throw new StreamError('policy-violation', 'SASL while dialback verifications are under way');
    if (this.state === 'negotiating' && (await this.negotiate(el))) return;
    const stanza = el.name === 'message' || el.name === 'presence' || el.name === 'iq';
    if (!stanza) throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a stanza of ${NS_SERVER}`);
    // §4.9.3.12: stanzas before authentication.
    if (this.verified.size === 0) throw new StreamError('not-authorized', 'authenticate first');
    const ns = el.attrs.xmlns;
    if (ns !== undefined && ns !== NS_SERVER) throw new StreamError('invalid-namespace', `a stanza of this stream is in ${NS_SERVER}`);
    if (ns !== undefined) delete el.attrs.xmlns;
    // RFC 6120 §4.9.3.9 and §4.9.3.6: 'from' of a domain the peer
    // authenticated, 'to' of one we serve.
    let fromDomain: string | undefined;
    let toDomain: string | undefined;
    try {
      fromDomain = parseJid(el.attrs.from ?? '').domain;
      toDomain = parseJid(el.attrs.to ?? '').domain;
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
    }
    // §4.9.3.14: a stanza between servers carries both addresses.
    if (el.attrs.from === undefined || el.attrs.to === undefined) throw new StreamError('improper-addressing', "a stanza between servers needs 'from' and 'to'");
    if (fromDomain === undefined || !this.verified.has(fromDomain)) throw new StreamError('invalid-from', `'from' must be an address of a domain authenticated on this stream`);
    if (toDomain === undefined) throw new StreamError('improper-addressing', "a stanza between servers needs a valid 'to'");
    if (!this.serves(toDomain)) throw new StreamError('host-unknown', `${toDomain} is not served here`);
    this.lastActivity = Date.now();
    // A delay stamp in our name (XEP-0203: offline storage's) is ours to make, not a peer's.
    el.children = el.children.filter((c) => typeof c === 'string' || c.name !== 'delay' || c.attrs.xmlns !== NS_DELAY || !this.serves(safeDomain(c.attrs.from) ?? ''));
    await this.ctx.router.fromRemote(el);
  }

  /**
   * XEP-0220 §2.1.2: the peer claims a domain with a key; the answer is
   * db:result valid, invalid, or an error. A key to verify with the peer's
   * authoritative server is verified outside the stream's mailbox: the
   * stream goes on meanwhile (stanzas of domains verified already, the
   * peer's own db:verify requests, which two servers verifying each other
   * at once would otherwise wait on for ever), and the answer follows when
   * it comes.
   */
  private onResult(el: Element): void {
    const key = el.getText().trim();
    const to = safeDomain(el.attrs.to);
    const from = safeDomain(el.attrs.from);
    const answer = (type: string, error?: string, text?: string) => {
      if (this.state === 'closed') return;
      const r = new Element('db:result', { from: el.attrs.to ?? '', to: el.attrs.from ?? '', type });
      if (error) {
        const e = r.c('error', { type: 'cancel' }).c(error, { xmlns: NS_STANZAS_ERR }).up();
        if (text) e.c('text', { xmlns: NS_STANZAS_ERR }).t(text);
      }
      this.write(r.toString());
    };
    // XEP-0220 §2.4: errors for a domain we do not serve, or a request that makes no sense.
    if (!to || !this.serves(to)) return answer('error', 'item-not-found', `${el.attrs.to ?? ''} is not served here`);
    if (!from || !KEY.test(key)) return answer('error', 'bad-request', "db:result needs 'from', 'to' and a key of printable characters");
    if (this.verified.has(from)) return answer('valid');
    // Our own domains come from us, never from a peer.
    if (this.serves(from)) return answer('error', 'not-authorized', `${from} is served here`);
    if (this.verifying.has(from)) return answer('error', 'not-acceptable', `${from} is being verified already`);
    if (this.verified.size + this.verifying.size >= MAX_DOMAINS || this.verifying.size >= MAX_VERIFYING) return answer('error', 'resource-constraint', 'too many domains on this stream');
    const settle = (result: 'valid' | 'invalid' | 'error', why: string) => {
      if (this.state === 'closed') return;
      if (result === 'error') return answer('error', 'remote-connection-failed', `${from} could not be asked to verify the key`);
      answer(result);
      if (result === 'valid') {
        this.verified.add(from);
        metrics.s2sAuthenticatedDomain('in');
        this.log.info('peer server authenticated', { domain: from, method: why, ip: this.raw.remoteAddress });
      } else {
        metrics.s2sFailure('in', 'not-authorized');
        this.log.info('peer server refused: dialback key not valid', { domain: from, ip: this.raw.remoteAddress });
      }
    };
    if (this.certValidFor(from)) {
      // Dialback over a connection whose certificate already proves the
      // domain (XEP-0344 §4): nothing to ask the peer's server.
      return settle('valid', 'certificate');
    }
    if (this.fed.secureAuth) {
      metrics.s2sFailure('in', 'not-authorized');
      this.log.info('peer server refused: its certificate is not valid for its domain', { domain: from, ip: this.raw.remoteAddress, trusted: this.certTrusted });
      return answer('error', 'not-authorized', `the certificate is not valid for ${from}, and this server accepts only authenticated peers`);
    }
    // §2.1.3: ask the authoritative server of `from` whether it made this key.
    this.verifying.add(from);
    void this.fed
      .verify(to, from, this.streamId, key)
      .catch(() => 'error' as const)
      .then((result) => {
        this.verifying.delete(from);
        settle(result, 'dialback');
      })
      .catch((err: unknown) => this.failed(err));
  }

  /** XEP-0220 §2.1.4: a receiving server asks whether we (any node of ours) made this key. */
  private onVerify(el: Element): void {
    const { from, to, id } = el.attrs;
    const originating = safeDomain(to);
    const reply = new Element('db:verify', { from: to ?? '', to: from ?? '', id: id ?? '' });
    if (!originating || !this.serves(originating)) {
      reply.attrs.type = 'error';
      reply.c('error', { type: 'cancel' }).c('item-not-found', { xmlns: NS_STANZAS_ERR });
    } else {
      const receiving = safeDomain(from);
      reply.attrs.type = receiving && id && keyValid(this.fed.secret, receiving, originating, id, el.getText()) ? 'valid' : 'invalid';
    }
    this.write(reply.toString());
  }

  protected undeliverable(_item: Out): void {}

  protected get routable(): boolean {
    return false;
  }

  protected lateHeld(_held: boolean): void {}

  protected get address(): string | undefined {
    return this.peer;
  }

  protected ended(_forgotten: boolean): void {
    this.fed.incoming.delete(this);
  }

  protected logEnd(): void {
    (this.verified.size > 0 ? this.log.info : this.log.debug)('incoming server stream closed', { domains: [...this.verified], ip: this.raw.remoteAddress, reason: this.endReason });
  }
}
