// An external component (XEP-0114, jabber:component:accept) on the stream
// engine: a trusted program (a gateway, a bot, a service) that serves a
// domain of its own, such as bots.example.org, and connects with a shared
// secret. The engine reads its stream; this policy answers the handshake,
// registers the component's domain in the cluster's registry (one
// connection per component, wherever it lands), hands the stanzas it sends
// to the router, and takes those routed to its domain.
import type net from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { StreamEngine } from '../stream/engine.ts';
import type { Out, Reroute, State } from '../stream/engine.ts';
import type { MechanismContext, SaslResult } from '../sasl/mechanism.ts';
import { StanzaError, StreamError, errorReply } from '../xmpp/errors.ts';
import { JidError, parseJid } from '../xmpp/jid.ts';
import type { WorkerContext } from '../worker/context.ts';
import type { StreamKind } from '../metrics/metrics.ts';

export const NS_COMPONENT = 'jabber:component:accept';

/** The registry record of a component's connection: its domain, with a resource no account's JID has. */
export const componentJid = (domain: string) => `${domain}/component`;

export class ComponentStream extends StreamEngine {
  readonly ctx: WorkerContext;
  /** The component's domain, from its stream header. */
  domain: string | undefined;
  /** Its registry record's address (componentJid), once connected. */
  jid: string | undefined;
  private secret: string | undefined;
  private bound = false;

  constructor(ctx: WorkerContext, socket: net.Socket) {
    super(ctx, socket, false);
    this.ctx = ctx;
    // A connection that never completes its handshake is not kept (as a client's that never binds).
    setTimeout(() => {
      if (!this.bound) this.close({ condition: 'connection-timeout', text: 'no handshake in time' });
    }, ctx.config.bindTimeoutMs).unref();
    // A component is long-lived and often silent: the kernel tells when its peer is gone.
    socket.setKeepAlive(true, 60_000);
  }

  // ---- the engine's hooks ----

  get kind(): StreamKind {
    return 'component';
  }

  protected get contentNamespace(): string {
    return NS_COMPONENT;
  }

  protected override get prexmpp(): boolean {
    return true;
  }

  protected get localDomain(): string {
    return this.domain ?? this.ctx.config.domain;
  }

  /** XEP-0114 §3: the header names the component's domain, which must be a configured one. */
  protected serves(domain: string): boolean {
    const secret = this.ctx.componentSecrets.get(domain);
    if (secret === undefined) return false;
    this.domain = domain;
    this.secret = secret;
    return true;
  }

  protected override onStreamStart(name: string, attrs: Record<string, string>): void {
    if (attrs.to === undefined) throw new StreamError('improper-addressing', "a component's stream names its domain in 'to'");
    super.onStreamStart(name, attrs);
  }

  protected get afterAuthentication(): State {
    return 'established';
  }

  protected saslMechanisms() {
    return { known: [], offered: [] };
  }

  protected saslContext(): MechanismContext {
    throw new StreamError('policy-violation', 'components authenticate with a handshake');
  }

  protected authenticatedAs(_r: Extract<SaslResult, { kind: 'success' }>): void {}

  protected addFeatures(_f: Element): void {}

  protected async onElement(el: Element): Promise<void> {
    if (this.state === 'negotiating') {
      if (el.name !== 'handshake') throw new StreamError('not-authorized', 'the handshake comes first (XEP-0114 §3)');
      return this.handshake(el.getText().trim());
    }
    if (this.state !== 'established') throw new StreamError('not-well-formed', 'element outside a stream');
    // A stanza is in the stream's content namespace (said or inherited), and leaves it for the client streams it goes to.
    const ns = el.attrs.xmlns;
    if ((el.name !== 'message' && el.name !== 'presence' && el.name !== 'iq') || (ns !== undefined && ns !== NS_COMPONENT)) throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a stanza of ${NS_COMPONENT}`);
    if (ns !== undefined) delete el.attrs.xmlns;
    // XEP-0114 §3: the component stamps 'from' itself, within its own domain.
    const from = el.attrs.from;
    let fromDomain: string | undefined;
    try {
      fromDomain = from === undefined ? undefined : parseJid(from).domain;
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
    }
    if (fromDomain !== this.domain) throw new StreamError('invalid-from', `'from' must be an address of ${this.domain}`);
    if (el.attrs.to === undefined) throw new StreamError('improper-addressing', "a component's stanza needs a 'to'");
    await this.ctx.router.fromComponent(el, this);
  }

  /** XEP-0114 §3: the hex SHA-1 of the stream id and the secret. */
  private async handshake(digest: string): Promise<void> {
    const want = createHash('sha1').update(this.streamId + this.secret).digest('hex');
    const got = Buffer.from(digest.toLowerCase());
    if (got.length !== want.length || !timingSafeEqual(got, Buffer.from(want))) {
      this.log.info('component handshake failed', { domain: this.domain, ip: this.raw.remoteAddress });
      throw new StreamError('not-authorized', 'wrong handshake');
    }
    const domain = this.domain!;
    const rec = { jid: componentJid(domain), bare: domain, sid: this.id, node: this.ctx.node, worker: this.ctx.index, priority: 0, available: true };
    const out = await this.ctx.registry.bind({ rec, policy: 'old-wins', maxResources: 1, exclusiveBare: false });
    if (this.state === 'closed') {
      if (out.ok) void this.ctx.registry.unbind(rec.jid, this.id);
      return;
    }
    // An outage is worth trying again after; another connection of the component is not.
    if (!out.ok) throw out.condition === 'unavailable' ? new StreamError('internal-server-error', 'the registry is unavailable; try again shortly') : new StreamError('conflict', `${domain} is connected already`);
    this.bound = true;
    this.jid = rec.jid;
    this.authenticated = true;
    this.state = 'established';
    this.ctx.components.set(this.id, this);
    this.write('<handshake/>');
    this.log.info('component connected', { domain, ip: this.raw.remoteAddress });
  }

  /** A stanza routed to the component's domain; false when it can no longer take one. */
  deliver(xml: string, opts: { live?: boolean; reroute?: Reroute } = {}): boolean {
    if (this.state !== 'established' || !this.bound) return false;
    this.put({ xml, live: opts.live ?? true, reroute: opts.reroute });
    return true;
  }

  /** What the component will never get: a request or a message is answered with an error. */
  protected undeliverable(item: Out): void {
    let el: Element;
    try {
      el = parseXml(item.xml);
    } catch {
      return;
    }
    const reply = errorReply(el, new StanzaError('service-unavailable', 'the component went away'));
    if (reply) void this.ctx.router.routeInternal(reply);
  }

  protected get routable(): boolean {
    return false;
  }

  protected lateHeld(_held: boolean): void {}

  protected get address(): string | undefined {
    return this.domain;
  }

  protected ended(_forgotten: boolean): void {
    this.ctx.components.delete(this.id);
    if (this.bound) void this.ctx.registry.unbind(componentJid(this.domain!), this.id);
  }

  protected logEnd(): void {
    (this.bound ? this.log.info : this.log.debug)('component disconnected', { domain: this.domain, reason: this.endReason });
  }
}
