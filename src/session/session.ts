// A client's session (RFC 6120 §7, RFC 6121) on the stream engine
// (stream/engine.ts): the c2s policy. It serves the domain's clients:
// in-band registration before authentication, resource binding, then the
// stanzas, routed through the worker's router; it holds what the server
// knows of the client's session (bound JID, presence, roster interest,
// carbons, directed presence), and hands stanzas routed to it to the
// engine's output. A session can outlive its connection (XEP-0198 §5):
// detached, it queues what comes for it, and another connection, here or
// on another worker or node, adopts it (session/resumption.ts).
import type net from 'node:net';
import type { SessionInfo } from '../admin/tasks.ts';
import type { FramedTransport } from '../stream/transport.ts';
import { randomBytes } from 'node:crypto';
import { Element, escapeXML, parse as parseXml } from 'ltx';
import { StreamError, StanzaError, errorReply } from '../xmpp/errors.ts';
import type { StreamCondition } from '../xmpp/errors.ts';
import { NS_SM, NS_CLIENT, NS_TLS, NS_SASL, NS_BIND, NS_SESSION, NS_REGISTER, NS_REGISTER_FEATURE } from '../xmpp/ns.ts';
import { normalizeResource, JidError } from '../xmpp/jid.ts';
import { MECHANISMS } from '../sasl/mechanism.ts';
import type { MechanismContext, SaslResult } from '../sasl/mechanism.ts';
import { randomResource } from '../registry/registry.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { registerUnauthenticated } from '../modules/register.ts';
import { NS_ROSTERVER } from '../modules/roster.ts';
import { priorityOf } from '../presence/presence.ts';
import type { WorkerContext } from '../worker/context.ts';
import { StreamEngine, countSince } from '../stream/engine.ts';
import type { CloseReason, Event, Out, Reroute, State } from '../stream/engine.ts';
import type { DurableSession, Entry } from './durable.ts';
import { flat } from '../xml/retain.ts';
import type { StreamKind } from '../metrics/metrics.ts';

export { countSince };
export type { CloseReason, Out, Paced, Reroute, State } from '../stream/engine.ts';

/** What a client's session is besides its connection, its counts and its queue: what a handoff and the durable state carry. */
export interface SessionState {
  jid: string;
  bare: string;
  available: boolean;
  priority: number;
  lastPresence?: string;
  directed?: string[];
  carbons: boolean;
  rosterRequested: boolean;
  /** XEP-0191 §5.2: this resource requested the blocklist: it gets blocklist pushes. */
  blocklistRequested?: boolean;
  createdAt: number;
  resumeMs: number;
}

/**
 * A session on its way from one connection to another (XEP-0198 §5), on
 * this worker or across the cluster: everything the client's session is,
 * apart from its connection. What waits in `queue` is what the client has
 * not acknowledged, then what was never sent, in order.
 */
export interface Handoff extends SessionState {
  sid: string;
  token: string;
  /** Our h: stanzas from the client handled. */
  handled: number;
  /** The client's h, which the queue follows. */
  acked: number;
  queue: { xml: string; reroute?: Reroute }[];
}

/** Why a handoff was refused: the session is gone (or going), or the client claims more than was sent. */
export type HandoffRefusal = { gone: true } | { gone: false; sent: number; handled: number };

export class Session extends StreamEngine implements DurableSession {
  readonly ctx: WorkerContext;
  /** Normalised localpart of the account; null for ANONYMOUS. */
  username: string | null = null;
  anonLocal: string | undefined;
  jid: string | undefined;
  bare: string | undefined;
  available = false;
  /** RFC 6121 §2.1.6: this resource requested the roster (an "interested resource"): it gets roster pushes. */
  rosterRequested = false;
  /** XEP-0191 §5.2: this resource requested the blocklist: it gets blocklist pushes. */
  blocklistRequested = false;
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
  /** XEP-0198 §5: the secret half of this session's resumption id, once the client asked for resumption. */
  private resumeToken: string | undefined;
  /** How long this session waits, detached, for its client to resume it. */
  private resumeMs = 0;
  /** The connection is gone and the session waits to be resumed (hibernation): output queues up. */
  detached = false;
  private hibernation: NodeJS.Timeout | undefined;
  /** Handed to another connection: this object is an empty shell. */
  private moved = false;
  /** When this session got its current connection (bound or resumed): only a connection opened after that may take it over. */
  private attachedAt = 0;
  /** The connection closed while the session was being handed over. */
  private lostWhileMoving = false;
  /** Ended by fencing: its durable state stays (see close). */
  private keepDurable = false;
  /** An account was registered in-band on this stream (one per stream). */
  registeredHere = false;

  constructor(ctx: WorkerContext, conn: net.Socket | FramedTransport, directTls: boolean) {
    super(ctx, conn, directTls);
    this.ctx = ctx;
    ctx.all.add(this);
  }

  /** What an operator's session list shows of it (admin/tasks.ts adds where it lives). */
  describe(): Omit<SessionInfo, 'node' | 'worker'> {
    return {
      jid: this.jid ?? '',
      ...(this.detached ? {} : { ip: this.raw.remoteAddress, port: this.raw.remotePort }),
      since: new Date(this.createdAt).toISOString(),
      transport: this.transportName,
      secure: this.secure,
      resumable: this.resumeToken !== undefined,
      detached: this.detached,
    };
  }

  // ---- the engine's hooks: the c2s policy ----

  get kind(): StreamKind {
    return 'c2s';
  }

  protected get contentNamespace(): string {
    return NS_CLIENT;
  }

  protected get localDomain(): string {
    return this.ctx.config.domain;
  }

  protected serves(domain: string): boolean {
    return domain === this.ctx.config.domain;
  }

  protected get afterAuthentication(): State {
    return 'wait-bind';
  }

  protected saslMechanisms() {
    const c = this.ctx.config;
    return { known: MECHANISMS, offered: MECHANISMS.filter((m) => m.available({ secure: this.secure, tlsRequired: c.tlsRequired, anonymous: c.anonymous, certificateJids: this.certificateJids })) };
  }

  protected saslContext(): MechanismContext {
    const { guard, hashing } = this.ctx;
    const address = this.peerAddress;
    return {
      store: this.ctx.accounts,
      domain: this.ctx.config.domain,
      secure: this.secure,
      certificateJids: this.certificateJids,
      admit: (user) => guard.admit(address, user),
      hashing: (fn, resuming) => hashing.run(resuming ? 'resume' : 'login', fn),
    };
  }

  protected override get authGuard() {
    return this.ctx.guard;
  }

  protected override readsExceeded(): void {
    this.ctx.guard.count('readsExceeded');
  }

  /** The client's address (behind a trusted proxy, the one it names), as the per-address limits count it. */
  get clientAddress(): string {
    return this.peerAddress;
  }

  protected authenticatedAs(r: Extract<SaslResult, { kind: 'success' }>): void {
    this.username = r.username;
    this.log.info('authenticated', { user: r.username ?? '(anonymous)', mechanism: this.saslName, ip: this.raw.remoteAddress, port: this.raw.remotePort });
    // XEP-0175: an anonymous user gets a bare JID unique on the domain.
    if (r.username === null) this.anonLocal = `${ANON_PREFIX}${randomBytes(12).toString('hex')}`;
  }

  protected addFeatures(f: Element): void {
    if (!this.authenticated) {
      if (this.mayAuthenticate && this.ctx.config.registration) f.c('register', { xmlns: NS_REGISTER_FEATURE });
      return;
    }
    f.c('bind', { xmlns: NS_BIND });
    f.c('ver', { xmlns: NS_ROSTERVER }); // RFC 6121 §2.6.1: roster versioning
    // RFC 3921's session establishment, optional for old clients (RFC 6121 Appendix E).
    f.c('session', { xmlns: NS_SESSION }).c('optional');
    for (const offer of this.ctx.hooks.streamFeatures) for (const el of offer(this)) f.cnode(el);
  }

  /** Immediate nonzas (ServerModule.immediate) are handled as read; a broadcast presence is noted as read (see announced). */
  protected override parsed(el: Element, cost: number): void {
    // Only a nonza carries a namespace of its own: a stanza costs no lookup here.
    const ns = el.attrs.xmlns;
    const now = this.state === 'established' && ns !== undefined && ns !== NS_CLIENT ? this.ctx.hooks.immediate.get(`${el.name} ${ns}`) : undefined;
    if (now) return this.immediately(() => now(el, this));
    this.post({ k: 'el', el, cost, mark: this.announce(el) });
  }

  /** Processed: the session's own state says it now. */
  protected override afterElement(ev: Event): void {
    if (ev.k === 'el' && ev.mark === this.presenceSeq) this.announced = undefined;
  }

  protected undeliverable(item: Out): void {
    this.ctx.router.rerouted(item.xml, item.reroute!, this.id);
  }

  protected get routable(): boolean {
    return this.jid !== undefined;
  }

  protected lateHeld(held: boolean): void {
    if (held) this.ctx.closing.set(this.id, this);
    else this.ctx.closing.delete(this.id);
  }

  protected get address(): string | undefined {
    return this.jid;
  }

  protected override halfClosed(): void {
    // Half-closed without a closing tag: lost, as far as resumption goes (XEP-0198 §5).
    if (this.resumable) return void this.raw.destroy();
    super.halfClosed();
  }

  protected override connectionClosed(): void {
    if (this.moved) {
      this.logEnd();
      return this.resolveDone();
    }
    // Lost while being handed over: the handoff goes on.
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
    super.connectionClosed();
  }

  // ---- XMPP_SM_DURABLE: the state kept in Redis as it changes (session/durable.ts) ----

  /** Where this session's state is kept, when it is resumable and the cluster keeps it. */
  private get durable() {
    return this.resumeToken !== undefined && !this.moved && !this.cleaned ? this.ctx.durable : undefined;
  }

  protected override tracked(item: Out): void {
    this.durable?.push(this, this.resumeToken!, entryOf(item));
  }

  protected override acknowledged(n: number, h: number): void {
    this.durable?.ack(this, this.resumeToken!, n, h);
  }

  /** The session's state, as it moves or is kept (SessionState). */
  snapshot(): SessionState {
    return {
      jid: this.jid!,
      bare: this.bare!,
      available: this.available,
      priority: this.priority,
      lastPresence: this.lastPresence?.toString(),
      directed: this.directed ? [...this.directed] : undefined,
      carbons: this.carbons,
      rosterRequested: this.rosterRequested,
      blocklistRequested: this.blocklistRequested,
      createdAt: this.createdAt,
      resumeMs: this.resumeMs,
    };
  }

  durableCounts(): { handled: number; acked: number } {
    return { handled: this.acks?.handled ?? 0, acked: this.acks?.acked ?? 0 };
  }

  durableQueue(): Entry[] {
    return [...(this.acks?.unacked ?? []), ...this.outq].filter((it) => it.tracked).map(entryOf);
  }

  /** Fenced with its state kept in Redis: what the client did not acknowledge waits there for it, not rerouted as well. */
  protected override reroute(item: Out): void {
    if (item.tracked && this.keepDurable && this.ctx.durable && this.resumeToken !== undefined) return;
    super.reroute(item);
  }

  /** The connection is gone and the session waits for its client (or is about to: its close event is on its way). */
  protected override divert(item: Out): boolean {
    if (!this.detached && !(this.socket.destroyed && (this.resumable || this.moving))) return false;
    this.queueDetached(item);
    return true;
  }


  // ---- elements, by state ----

  protected async onElement(el: Element): Promise<void> {
    const ns = el.attrs.xmlns;
    switch (this.state) {
      case 'negotiating': {
        if (await this.negotiate(el)) return;
        const early = this.ctx.hooks.negotiating.get(`${el.name} ${ns}`);
        if (early) return early(el, this);
        if (el.name === 'iq' && this.mayAuthenticate && el.getChild('query', NS_REGISTER)) {
          if (this.ctx.config.registration) return this.preAuthIq(el);
          // XEP-0077 §3.1: a host without in-band registration MUST answer service-unavailable.
          // Without the payload: it may carry a password.
          return this.replyError(new Element('iq', el.attrs), new StanzaError('service-unavailable', 'in-band registration is not offered here'));
        }
        break;
      }
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
          if (this.acks) {
            this.acks.handled = (this.acks.handled + 1) >>> 0;
            this.durable?.handled(this, this.resumeToken!, this.acks.handled);
          }
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
      this.log.debug('bound', { jid: this.jid });
      return;
    }
  }

  /** A stanza error in answer to `iq`, on this stream. */
  private replyError(iq: Element, err: StanzaError): void {
    const reply = errorReply(iq, err);
    if (reply) this.send(reply);
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

  /**
   * XEP-0198 §5: this session may outlive its connection for `ms`, to be
   * resumed by another; the secret of its resumption id.
   */
  enableResumption(ms: number): string {
    this.resumeToken ??= randomBytes(18).toString('base64url');
    this.resumeMs = ms;
    this.durable?.open(this, this.resumeToken);
    return this.resumeToken;
  }

  /** Whether this session outlives a lost connection (XEP-0198 §5). */
  get resumable(): boolean {
    return this.resumeToken !== undefined && this.state === 'established' && !this.cleaned && !this.moving && !this.detached && !this.peerClosed;
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
    // The node's guard lets its client's next login hash first (a login storm after a network outage is mostly such clients).
    if (this.username) this.ctx.guard.detached(this.username, true);
    // XEP-0352 §5.2: the client state ends with the stream; what it held is queued.
    for (const hook of this.ctx.hooks.detached) hook(this);
    this.hibernation = setTimeout(() => {
      this.endReason = 'not resumed in time';
      this.close();
    }, this.resumeMs);
    this.hibernation.unref();
    this.log.info('session detached', { jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, waitMs: this.resumeMs, unacked: a.unacked.length });
  }

  /** A detached session ends (not resumed in time, replaced, shut down): what it kept goes where undeliverable stanzas go. */
  private endDetached(reason: CloseReason): void {
    this.detached = false;
    clearTimeout(this.hibernation);
    if (this.ctx.detached.delete(this.id) && this.username) this.ctx.guard.detached(this.username, false);
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
    if (countSince(h, a.acked) > a.unacked.length) return { gone: false, sent: (a.acked + a.unacked.length) >>> 0, handled: a.handled };
    this.moving = true;
    this.ack(h);
    // What this worker wrote of the session reaches Redis before the new owner writes it whole.
    if (this.resumeToken !== undefined) await this.ctx.durable?.written();
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
      // Its connection went meanwhile too: what it kept goes where undeliverable stanzas go, now.
      if (this.lostWhileMoving) {
        this.lostWhileMoving = false;
        super.connectionClosed();
      }
      return { gone: true };
    }
    const items = [...a.unacked.splice(0), ...this.outq.splice(0)];
    this.outqLen = 0;
    a.unackedBytes = 0;
    if (a.timer) clearTimeout(a.timer);
    clearTimeout(this.hibernation);
    // Offline messages handed out and not acknowledged are still stored: they come again from there.
    const queue = items.filter((it) => !it.nonza && it.stored === undefined).map((it) => (it.reroute ? { xml: it.xml, reroute: it.reroute } : { xml: it.xml }));
    const handoff: Handoff = {
      ...this.snapshot(),
      sid: this.id,
      token: this.resumeToken,
      handled: a.handled,
      acked: a.acked,
      queue,
    };
    for (const src of this.sources.splice(0)) src.stop?.();
    this.moved = true;
    this.cleaned = true;
    this.outClosed = true;
    this.ctx.all.delete(this);
    if (this.ctx.detached.delete(this.id) && this.username) this.ctx.guard.detached(this.username, false);
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
      this.abandon(`${err}${this.footer}`);
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
    this.blocklistRequested = h.blocklistRequested === true;
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
    // Kept here from now on: written whole, then as it changes.
    this.durable?.open(this, h.token);
    for (const hook of this.ctx.hooks.resumed) hook(this);
    for (const it of h.queue) this.put({ xml: it.xml, reroute: it.reroute });
    // Offline messages handed out on the old stream and not acknowledged are still stored: they come again.
    if (this.available) this.ctx.router.presence.flushOffline(this);
    this.log.info('session resumed', { jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, resent: h.queue.length });
  }

  /** Output for a detached session: kept for the connection that resumes it, within the slow-reader bound. */
  private queueDetached(item: Out): void {
    if (item.nonza) return; // stream-level: for a stream that is gone
    item.tracked = true;
    item.live = false;
    this.outq.push(item);
    this.outqLen += item.xml.length;
    this.tracked(item);
    if (this.outqLen + this.acks!.unackedBytes > this.ctx.config.maxOutboundBytes) {
      this.endReason = 'too much queued while detached';
      this.close();
    }
  }

  /**
   * A connection found dead (idle past the bound): a resumable session
   * loses only its connection and waits for its client (XEP-0198 §5); any
   * other ends with a stream error.
   */
  disconnect(condition: StreamCondition, text: string): void {
    if (!this.resumable) return this.close({ condition, text });
    this.log.info('connection dropped', { jid: this.jid, condition, text });
    // Told, as far as it still reads; what it did not acknowledge waits for its next connection.
    this.abandon(`${this.header()}${new StreamError(condition, text).toElement().toString()}${this.footer}`);
  }

  /** A detached session ends without a stream to close (see endDetached). */
  override close(reason: CloseReason = {}): void {
    // This node lost its membership: the survivors keep the durable state for the client to resume elsewhere.
    if (reason.fenced) this.keepDurable = true;
    if (this.detached) return this.endDetached(reason);
    super.close(reason);
  }
  /** The session ends: out of the worker's tables and the registry, its contacts told (unless forgotten). */
  protected ended(forgotten: boolean): void {
    if (this.jid && this.resumeToken !== undefined && !this.keepDurable) this.ctx.durable?.close(this, this.jid);
    this.ctx.all.delete(this);
    if (this.jid && this.ctx.local.get(this.jid) === this) this.ctx.local.delete(this.jid);
    if (this.jid && this.ctx.sessions.delete(this.id) && !forgotten) {
      void this.ctx.registry.unbind(this.jid, this.id);
      // RFC 6121 §4.5.2: gone without a word is unavailable all the same.
      this.ctx.router.presence.sessionEnded(this);
    }
    if (this.jid) this.ctx.router.presence.detach(this);
  }

  /** One line per session that bound a resource (an operator's record); others at debug level. */
  protected logEnd(): void {
    const fields = { jid: this.jid, ip: this.raw.remoteAddress, port: this.raw.remotePort, durationMs: Date.now() - this.createdAt, reason: this.endReason };
    if (this.jid) this.log.info('session ended', fields);
    else this.log.debug('connection ended', { ...fields, user: this.username ?? undefined });
  }
}

function isStanza(el: Element): boolean {
  return (el.name === 'message' || el.name === 'presence' || el.name === 'iq') && (el.attrs.xmlns === undefined || el.attrs.xmlns === NS_CLIENT);
}

/** A queued stanza as the durable state keeps it (session/durable.ts). */
function entryOf(item: Out): Entry {
  const e: Entry = { x: item.xml };
  if (item.reroute) e.r = item.reroute;
  // From offline storage, where it stays until acknowledged: it comes again from there.
  else if (item.stored !== undefined) e.o = item.stored;
  return e;
}
