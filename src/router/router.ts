// Routes stanzas from a session to their addressee: a session on this
// worker, on another worker of this node (over a direct MessagePort), or on
// another node (through the cluster transport); the server itself; or an
// error bounce. Delivery rules follow RFC 6120 §10 and RFC 6121 §8.5.
//
// Whether a session is available is known for sure only where it lives: a
// session counts as available from the moment its initial presence is read
// there, while the registry learns it a little later. So a message to a
// bare JID that finds no available resource in the registry, but bound
// ones, is offered to those, one after the other, and each one's worker
// judges; only when none takes it is it stored offline.
import { randomBytes } from 'node:crypto';
import { Element, clone, parse as parseXml } from 'ltx';
import { StanzaError, StreamError, errorReply } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import type { Jid } from '../xmpp/jid.ts';
import type { SessionRecord, SessionRegistry } from '../registry/registry.ts';
import type { HostedService, Kept, ServerModule, IqHandler, RemoteIqHandler, Verdict } from '../modules/module.ts';
import type { Session, CloseReason, Reroute } from '../session/session.ts';
import type { Envelope, Only } from '../worker/wire.ts';
import { contentless } from '../xmpp/content.ts';
import { NS_CLIENT } from '../xmpp/ns.ts';
import type { DeliverOptions, PresenceRouting, PresenceService } from '../presence/presence.ts';
import { hooksOf } from '../modules/module.ts';
import type { Hooks } from '../modules/module.ts';
import type { ComponentStream } from '../component/stream.ts';
import type { Federation } from '../s2s/federation.ts';
import { componentJid } from '../component/stream.ts';
import type { StreamCondition } from '../xmpp/errors.ts';
import type { RemovalNotice } from '../accounts/removal.ts';
import { pushQuery } from '../modules/roster.ts';
import { isSubscriptionType } from '../presence/subscription.ts';
import { log } from '../log.ts';
import * as metrics from '../metrics/metrics.ts';

/** How stanzas leave this worker: to another worker of the node, or another node. */
export interface Transport {
  /** False when that worker is gone (it died; its records are on their way out). */
  toWorker(worker: number, env: Envelope): boolean;
  /** Resolves false when nobody on that node took the envelope. */
  toNode(node: string, worker: number, env: Envelope): Promise<boolean>;
}

export interface RouterDeps {
  domain: string;
  node: string;
  worker: number;
  registry: SessionRegistry;
  sessions: Map<string, Session>;
  /** Sessions that closed with writes under way (WorkerContext.closing). */
  closing: Map<string, Session>;
  /** This worker's bound sessions by full JID. */
  local: Map<string, Session>;
  accountExists: (local: string) => Promise<boolean>;
  transport: Transport;
  /** The server's modules: the iq payloads they answer, and their hooks into the stanza flow. */
  modules: ServerModule[];
  /** External components (XEP-0114) connected to this worker, by stream id, and the domains configured for them. */
  components: Map<string, ComponentStream>;
  componentDomains: ReadonlySet<string>;
}

const isElement = (c: Element | string): c is Element => typeof c !== 'string';

/** Where sessions handed to another worker or node went (XEP-0198 §5): what still comes here for them is passed on, for as long as a stale view of the registry may send it. */
const MOVED_KEEP_MS = 60_000;

/** A worker somewhere in the cluster. */
export interface Place {
  node: string;
  worker: number;
}

/** The prefix of the ids of requests the server sends peer servers' entities (Router.requestId). */
const REQUEST = 'srv~';

/** How long, and how many, kicks for sessions still binding are kept. */
const EARLY_KICK_MS = 30_000;
const EARLY_KICK_MAX = 10_000;

function table(modules: ServerModule[], pick: (m: ServerModule) => Record<string, IqHandler> | undefined) {
  const t = new Map<string, IqHandler>();
  for (const m of modules) for (const [k, h] of Object.entries(pick(m) ?? {})) t.set(k, h);
  return t;
}

function remoteTable(modules: ServerModule[], pick: (m: ServerModule) => Record<string, RemoteIqHandler> | undefined) {
  const t = new Map<string, RemoteIqHandler>();
  for (const m of modules) for (const [k, h] of Object.entries(pick(m) ?? {})) t.set(k, h);
  return t;
}

/** What becomes of a stanza whose session drops before writing it (see Reroute). */
function rerouteOf(el: Element, only?: Only): Reroute | undefined {
  const type = el.attrs.type;
  // A request only some sessions take (a roster push) is the server's own: nobody to answer.
  if (el.name === 'iq') return (type === 'get' || type === 'set') && only === undefined ? 'iq' : undefined;
  if (el.name !== 'message' || type === 'error' || type === 'groupchat' || type === 'headline') return undefined;
  if (only === 'copy') return 'copy';
  if (only === undefined || only === 'available') return 'message';
  return undefined;
}

/** A message that lost its session (Router.rerouted), waiting its turn among those to the same account. */
interface Rerouting {
  el: Element;
  kind: Exclude<Reroute, 'iq'>;
  /** The session that could not write it: not to get it again. */
  sid: string;
  /** Delivered, stored or bounced: what a failed batch need not do again (drainReroutes). */
  done?: boolean;
  /** Offered to a resource left: whether it took it (what a failed batch waits for before storing it). */
  taken?: Promise<boolean>;
}

export class Router implements PresenceRouting {
  private readonly d: RouterDeps;
  private readonly serverIq: Map<string, IqHandler>;
  private readonly accountIq: Map<string, IqHandler>;
  /** Presence and subscriptions (RFC 6121 §3, §4): given by whoever builds the router, which routes for it (PresenceRouting). */
  presence!: PresenceService;
  /** The modules' hooks into the stanza flow. */
  private readonly hooks: Hooks;
  /** Work started for stanzas that lost their session (rerouting, offline storage): shutdown waits for it. */
  private readonly pending = new Set<Promise<void>>();
  /**
   * Messages that lost their session, waiting their turn, by addressee's
   * bare JID (see rerouteElement): an entry lives while its drain runs.
   * What a queue holds was accepted already (each came from a session's
   * output queue or the cluster transport's unconfirmed envelopes, both
   * bounded) and is drained continuously; nothing new is taken in here.
   */
  private readonly rerouting = new Map<string, Rerouting[]>();
  /** Sessions that moved away from this worker, by id (see MOVED_KEEP_MS). */
  private readonly moved = new Map<string, Place & { at: number }>();
  /** Federation (s2s/federation.ts), when XMPP_S2S is on: where stanzas to other servers go. */
  federation: Federation | undefined;
  /** The iq a peer server's entities may ask of the server and of accounts (no session behind them). */
  private readonly remoteServerIq: Map<string, RemoteIqHandler>;
  private readonly remoteAccountIq: Map<string, RemoteIqHandler>;
  /** The hosted services (XEP-0060 pubsub.<domain>...), by domain. */
  private readonly services: Map<string, HostedService>;
  /** Who answers resumption requests on this worker (session/resumption.ts). */
  resumption: { onTake(env: Extract<Envelope, { t: 'take' }>): void; onTaken(env: Extract<Envelope, { t: 'taken' }>): void } | undefined;

  constructor(deps: RouterDeps) {
    this.d = deps;
    this.serverIq = table(deps.modules, (m) => m.server);
    this.accountIq = table(deps.modules, (m) => m.account);
    this.remoteServerIq = remoteTable(deps.modules, (m) => m.remoteServer);
    this.remoteAccountIq = remoteTable(deps.modules, (m) => m.remoteAccount);
    this.hooks = hooksOf(deps.modules);
    this.services = new Map(deps.modules.flatMap((m) => (m.service ? [[m.service.domain, m.service] as const] : [])));
  }

  /**
   * A stanza from an established session. When a store or the registry
   * fails (Redis unreachable, in a cluster), the stanza gets an error the
   * client may retry on (RFC 6120 §8.3.2: type wait) and the session lives on.
   */
  async fromClient(el: Element, s: Session): Promise<void> {
    const timed = metrics.routingTimer('c2s');
    try {
      await this.accept(el, s);
    } catch (err) {
      if (err instanceof StreamError) throw err;
      // A module's refusal (the archive cannot be reached): its own condition.
      if (err instanceof StanzaError) return this.bounce(s, el, err);
      log.warn('stanza not routed: a store or the registry failed', { jid: s.jid, stanza: el.name, err: String(err) });
      // A broadcast presence too: the client learns it was not sent.
      this.bounce(s, el, new StanzaError('internal-server-error', 'the server cannot route this now; try again shortly', 'wait'));
    } finally {
      timed();
    }
  }

  /** Validates, stamps 'from' and routes. */
  private async accept(el: Element, s: Session): Promise<void> {
    if (el.name === 'iq') {
      const type = el.attrs.type;
      // RFC 6120 §8.2.3: an iq MUST have an id and a known type; get/set exactly one payload.
      if (!el.attrs.id || !['get', 'set', 'result', 'error'].includes(type)) return this.bounce(s, el, new StanzaError('bad-request', 'iq needs an id and a type of get, set, result or error'));
      if ((type === 'get' || type === 'set') && el.children.filter(isElement).length !== 1) return this.bounce(s, el, new StanzaError('bad-request', 'iq get/set carries exactly one payload'));
    }
    // RFC 6120 §8.1.2.1: the server stamps the full JID, and a 'from' that is
    // not the session's own is an invalid-from stream error (§4.9.3.9).
    const from = el.attrs.from;
    if (from !== undefined && from !== s.jid && from !== s.bare && !sameJid(from, s.jid!)) throw new StreamError('invalid-from', `${from} is not this stream's address`);
    el.attrs.from = s.jid!;
    // Presence is the presence module's whole (it reads its own 'to').
    let to: Jid | undefined;
    if (el.name !== 'presence') {
      if (el.attrs.to === undefined) {
        // §10.3: no 'to' means the sender's own bare JID.
        to = { local: s.username ?? s.anonLocal!, domain: this.d.domain, resource: '' };
      } else {
        try {
          to = parseJid(el.attrs.to);
        } catch (err) {
          if (err instanceof JidError) return this.bounce(s, el, new StanzaError('jid-malformed', err.message));
          throw err;
        }
      }
    }
    // The modules, in order: presence takes its own, offline storage strips a forged stamp, carbons copy what is sent.
    for (const hook of this.hooks.inbound) if (await hook(el, s)) return;
    if (!to) return; // presence with no module to take it
    return this.route(el, to, s);
  }

  /**
   * A stanza from an external component (XEP-0114), its 'from' checked to be
   * of the component's domain: routed as any other, errors going back to it.
   */
  async fromComponent(el: Element, _c: ComponentStream): Promise<void> {
    return metrics.timedRouting('component', () => this.componentStanza(el));
  }

  private async componentStanza(el: Element): Promise<void> {
    let to: Jid;
    try {
      to = parseJid(el.attrs.to);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      const reply = errorReply(el, new StanzaError('jid-malformed', err.message));
      if (reply) await this.routeInternal(reply);
      return;
    }
    try {
      for (const hook of this.hooks.foreign) hook(el);
      await this.route(el, to, undefined);
    } catch (err) {
      log.warn('stanza from a component not routed', { from: el.attrs.from, err: String(err) });
      const reply = errorReply(el, err instanceof StanzaError ? err : new StanzaError('internal-server-error', 'the server cannot route this now; try again shortly', 'wait'));
      if (reply) await this.routeInternal(reply);
    }
  }

  /**
   * A stanza from a peer server (s2s/incoming.ts), its 'from' checked to be
   * of a domain the peer authenticated and its 'to' of a domain served
   * here: routed as a local sender's would be (RFC 6121 §8), presence
   * through the presence service, errors going back to the peer.
   */
  async fromRemote(el: Element): Promise<void> {
    return metrics.timedRouting('s2s', () => this.remoteStanza(el));
  }

  private async remoteStanza(el: Element): Promise<void> {
    let to: Jid;
    try {
      to = parseJid(el.attrs.to);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      return this.reject(undefined, el, new StanzaError('jid-malformed', err.message));
    }
    try {
      for (const hook of this.hooks.foreign) hook(el);
      // The modules' guards (XEP-0191) first: presence and iq to an account are answered without route().
      const verdict = await this.guarded(el, to);
      if (verdict === 'drop') return;
      if (verdict) return this.reject(undefined, el, verdict);
      if (el.name === 'presence' && to.domain === this.d.domain) {
        for (const hook of this.hooks.remotePresence) hook(el, to);
        if (await this.presence.fromRemote(el, to)) return;
      }
      // The answer to a request the server sent for a module: to the worker that sent it.
      if (el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error') && to.domain === this.d.domain && !to.local && !to.resource && this.answered(el)) return;
      if (el.name === 'iq' && to.domain === this.d.domain && !to.resource && (el.attrs.type === 'get' || el.attrs.type === 'set')) return await this.remoteIq(el, to);
      await this.route(el, to, undefined);
    } catch (err) {
      if (err instanceof StanzaError) return this.reject(undefined, el, err);
      log.warn('stanza from a peer server not routed', { from: el.attrs.from, to: el.attrs.to, err: String(err) });
      this.reject(undefined, el, new StanzaError('internal-server-error', 'the server cannot route this now; try again shortly', 'wait'));
    }
  }

  /**
   * An id for an iq the server sends a peer server's entity for a module
   * (from the server's domain): it names this worker, so that the answer,
   * read wherever the peer's stream to us comes in, finds its way back here.
   */
  requestId(): string {
    return `${REQUEST}${this.d.node}~${this.d.worker}~${randomBytes(9).toString('base64url')}`;
  }

  /** An answer to the server's domain: passed to the worker that asked (requestId), or to the modules if this is it; false when its id is not one of ours. */
  private answered(el: Element): boolean {
    const id = el.attrs.id;
    if (typeof id !== 'string' || !id.startsWith(REQUEST)) return false;
    const [node, worker] = id.slice(REQUEST.length).split('~');
    const place = { node, worker: Number(worker) };
    if (!Number.isInteger(place.worker)) return false;
    if (place.node === this.d.node && place.worker === this.d.worker) {
      for (const hook of this.hooks.answer) if (hook(el)) break;
      return true;
    }
    // Gone (its worker died, its node left): nobody waits for it.
    const sent = this.send(place, { t: 'answer', xml: el.toString() });
    if (sent !== true && sent !== false) void sent.catch(() => false);
    return true;
  }

  /** An iq from a peer server's entity to our domain or an account's bare JID: what may be asked without a session (ping, disco, version). */
  private async remoteIq(el: Element, to: Jid): Promise<void> {
    const payloads = el.children.filter(isElement);
    // RFC 6120 §8.2.3: exactly one payload.
    if (payloads.length !== 1) return this.reject(undefined, el, new StanzaError('bad-request', 'iq get/set carries exactly one payload'));
    if (to.local) {
      const recs = await this.d.registry.resources(`${to.local}@${to.domain}`);
      if (recs.length === 0 && !(await this.d.accountExists(to.local))) return this.reject(undefined, el, new StanzaError('service-unavailable'));
    }
    const handler = (to.local ? this.remoteAccountIq : this.remoteServerIq).get(`${el.attrs.type} ${payloads[0].attrs.xmlns}`);
    if (!handler) return this.reject(undefined, el, new StanzaError('service-unavailable'));
    try {
      const payload = await handler(el);
      const reply = new Element('iq', { type: 'result', id: el.attrs.id, to: el.attrs.from, from: el.attrs.to });
      if (payload) reply.cnode(payload);
      await this.routeInternal(reply);
    } catch (err) {
      if (err instanceof StanzaError) return this.reject(undefined, el, err);
      log.error('iq handler failed', { ns: payloads[0].attrs.xmlns, err: String(err) });
      return this.reject(undefined, el, new StanzaError('internal-server-error'));
    }
  }

  /** To a hosted service's domain: answered here, whoever sent it (a session of any worker, a peer server). */
  private async toService(service: HostedService, el: Element, to: Jid, sender: Session | undefined, opts: DeliverOptions = {}): Promise<void> {
    let from: Jid;
    try {
      from = parseJid(el.attrs.from);
    } catch {
      return; // nobody to answer
    }
    if (service.handle) return service.handle(el, to, from);
    const type = el.attrs.type;
    if (el.name !== 'iq' || (type !== 'get' && type !== 'set')) {
      if ((await service.stanza?.(el, from, opts)) === true) return;
      // A message the service does not take is answered, not dropped (RFC 6120 §8.3: service-unavailable); presence is not.
      if (el.name === 'message' && type !== 'error') this.reject(sender, el, new StanzaError('service-unavailable', `${service.domain} takes no messages`));
      return;
    }
    // The service is its domain; no address of it has a local part or a resource.
    if (to.local !== '' || to.resource !== '') return this.reject(sender, el, new StanzaError('service-unavailable'));
    const payloads = el.children.filter(isElement);
    // RFC 6120 §8.2.3: exactly one payload.
    if (payloads.length !== 1) return this.reject(sender, el, new StanzaError('bad-request', 'iq get/set carries exactly one payload'));
    const ns = payloads[0].attrs.xmlns;
    const handler = service.iq[`${type} ${ns}`];
    // RFC 6120 §8.4: a namespace not understood gets service-unavailable.
    if (!handler) return this.reject(sender, el, new StanzaError(service.iq[`${type === 'get' ? 'set' : 'get'} ${ns}`] ? 'feature-not-implemented' : 'service-unavailable'));
    try {
      const result = await handler(el, from);
      const after = result !== null && 'after' in result ? result.after : undefined;
      const payloadOut = result !== null && 'after' in result ? result.payload : result;
      const reply = new Element('iq', { type: 'result', id: el.attrs.id, to: el.attrs.from, from: el.attrs.to });
      if (payloadOut) reply.cnode(payloadOut);
      if (sender && sender.jid === el.attrs.from) sender.send(reply);
      else await this.routeInternal(reply);
      after?.();
    } catch (err) {
      if (err instanceof StanzaError) return this.reject(sender, el, err);
      log.error('service iq handler failed', { service: service.domain, ns, err: String(err) });
      return this.reject(sender, el, new StanzaError('internal-server-error'));
    }
  }

  /** To a component's domain: to the one connection that serves it, wherever it is. */
  private async toComponent(el: Element, domain: string, sender: Session | undefined): Promise<void> {
    const rec = await this.d.registry.lookup(componentJid(domain));
    if (!rec) return this.reject(sender, el, new StanzaError('service-unavailable', `${domain} is not connected`));
    // Into the component's content namespace (jabber:component:accept, inherited from its stream).
    if (el.attrs.xmlns === NS_CLIENT) delete el.attrs.xmlns;
    this.deliver(rec, el);
  }

  private async route(el: Element, to: Jid, sender: Session | undefined, opts: DeliverOptions = {}): Promise<void> {
    if (this.hooks.guard.length > 0) {
      // The modules' guards (XEP-0191 blocking); synchronous when they need read nothing.
      let verdict = this.guarded(el, to);
      if (verdict instanceof Promise) verdict = await verdict;
      if (verdict === 'drop') return;
      if (verdict) return this.reject(sender, el, verdict);
    }
    if (to.domain !== this.d.domain) {
      const service = this.services.size > 0 ? this.services.get(to.domain) : undefined;
      if (service) return this.toService(service, el, to, sender, opts);
      if (this.d.componentDomains.has(to.domain)) return this.toComponent(el, to.domain, sender);
      if (!this.federation) return this.reject(sender, el, new StanzaError('remote-server-not-found', `${to.domain} is not served here and federation is off`));
      // To a peer server, from our domain or one of our components'.
      const local = domainOfJid(el.attrs.from) ?? this.d.domain;
      if (el.attrs.xmlns === NS_CLIENT) delete el.attrs.xmlns;
      this.federation.send(el, local, to.domain);
      return;
    }
    if (!to.local) {
      if (to.resource) return this.reject(sender, el, new StanzaError('service-unavailable'));
      return this.toServer(el, sender);
    }
    // A subscription stanza of a service of ours that may be a contact (only it sends from its domain): applied
    // to the account's roster as a peer's would be (RFC 6121 §3, A.3), not merely delivered.
    if (el.name === 'presence' && isSubscriptionType(el.attrs.type) && this.services.size > 0 && this.contactService(domainOfJid(el.attrs.from) ?? '')) return this.presence.fromService(el, to);
    const bareJid = `${to.local}@${to.domain}`;
    if (to.resource) {
      const full = `${bareJid}/${to.resource}`;
      // A session of this worker: no registry lookup (nor Redis) on the way.
      const here = this.d.local.get(full);
      const rec = here ? undefined : await this.d.registry.lookup(full);
      if (here || rec) {
        if (el.name === 'message') {
          const refused = await this.delivering(el, to.local);
          if (refused) return this.reject(sender, el, refused);
        }
        if (!here) this.deliver(rec!, el, undefined, opts);
        else if (!here.deliver(el.toString(), { live: !opts.solicited, reroute: rerouteOf(el) })) this.undeliverable(el, here.id);
        if (el.name === 'message') this.routed(el, bareJid, [{ sid: here?.id ?? rec!.sid }]);
        return;
      }
      // RFC 6121 §8.5.3.2: no such resource.
      if (el.name === 'message') {
        if (el.attrs.type === 'groupchat') return this.reject(sender, el, new StanzaError('service-unavailable'));
        if (el.attrs.type === 'error') return;
      } else if (el.name === 'iq') {
        return this.reject(sender, el, new StanzaError('service-unavailable'));
      } else {
        return; // presence to an unavailable resource is dropped (§8.5.3.2.3 for non-subscription types)
      }
    }
    return this.toBare(el, to.local, bareJid, sender);
  }

  /**
   * RFC 6121 §8.5.2: addressed to an account's bare JID. `exclude`: a
   * session that could not write it (see rerouted), which must not get it
   * again.
   */
  private async toBare(el: Element, local: string, bareJid: string, sender: Session | undefined, exclude?: string): Promise<void> {
    const recs = (await this.d.registry.resources(bareJid)).filter((r) => r.sid !== exclude);
    if (recs.length === 0 && !(await this.d.accountExists(local))) {
      // §8.5.1: no such account.
      if (el.name === 'presence' || (el.name === 'message' && contentless(el))) return;
      return this.reject(sender, el, new StanzaError('service-unavailable'));
    }
    if (el.name === 'iq') return this.toAccount(el, sender);
    if (el.name === 'presence') {
      // To the available resources; each one's worker knows whether it is.
      for (const r of recs) this.deliver(r, el, 'available');
      return;
    }
    const type = el.attrs.type ?? 'normal';
    if (type === 'error') return;
    if (type === 'groupchat') return this.reject(sender, el, new StanzaError('service-unavailable'));
    const refused = await this.delivering(el, local);
    if (refused) return this.reject(sender, el, refused);
    const available = recs.filter((r) => r.available && r.priority >= 0);
    if (available.length === 0) {
      // §8.5.2.2.1: headline is dropped; normal and chat are stored (XEP-0160) or refused.
      if (type === 'headline') return;
      // Bound resources may have sent their initial presence already: they judge.
      if (recs.length > 0 && exclude === undefined) return this.offerInTurn(recs, el);
      return this.storeOrBounce(local, el, sender, exclude);
    }
    if (type === 'headline') {
      for (const r of available) this.deliver(r, el);
      return;
    }
    // §8.5.2.1.1: normal and chat go to the most available resource(s).
    const top = Math.max(...available.map((r) => r.priority));
    const to = available.filter((r) => r.priority === top);
    if (exclude !== undefined) {
      // Rerouted once already: if these cannot write it either, it is stored.
      const xml = el.toString();
      const oks = await Promise.all(to.map((r) => this.offer(r, xml, 'copy', { reroute: 'last' })));
      if (!oks.includes(true)) await this.storeOrBounce(local, el, sender, exclude);
      return;
    }
    if (to.length === 1) this.deliver(to[0], el);
    else this.deliverCopies(to, el);
    this.routed(el, bareJid, to);
  }

  /** A message on its way to an existing account of this server: the modules' hooks (the archive stamps it), the first refusal stops it. */
  private async delivering(el: Element, local: string): Promise<StanzaError | undefined> {
    for (const hook of this.hooks.delivering) {
      const refused = await hook(el, local);
      if (refused) return refused;
    }
    return undefined;
  }

  /** The modules' guards on a stanza about to be routed to `to` (ServerModule.guard): the first verdict. */
  private guarded(el: Element, to: Jid): Verdict | Promise<Verdict> {
    for (let i = 0; i < this.hooks.guard.length; i++) {
      const v = this.hooks.guard[i](el, to);
      if (v instanceof Promise) return this.guardedAsync(el, to, v, i);
      if (v) return v;
    }
    return undefined;
  }

  private async guardedAsync(el: Element, to: Jid, first: Promise<Verdict>, at: number): Promise<Verdict> {
    const v = await first;
    if (v) return v;
    for (let i = at + 1; i < this.hooks.guard.length; i++) {
      const w = await this.hooks.guard[i](el, to);
      if (w) return w;
    }
    return undefined;
  }

  /** What a module keeps for an account changed elsewhere (an envelope from another worker, a Redis notice): every module's copy goes. */
  changed(kind: string, user: string): void {
    for (const h of this.hooks.changed) h(kind, user);
  }

  /** A message to an account of this server was handed to these sessions: the modules' after-routing hooks (carbons copy it). */
  private routed(el: Element, bare: string, to: readonly Pick<SessionRecord, 'sid'>[]): void {
    for (const hook of this.hooks.routed) hook(el, bare, to);
  }

  /**
   * A message no session of the account takes: kept by the offline hook
   * (XEP-0160), or dropped when it has nothing to keep (chat states,
   * receipts, markers: XEP-0085 §5.4, XEP-0334; an error would show as one
   * in the sender's client for a "typing..." nobody missed), or else an
   * error to the sender. `failed`: the session that could not take it, not
   * to be told to fetch it.
   */
  private async storeOrBounce(local: string, el: Element, sender: Session | undefined, failed?: string): Promise<void> {
    const kept = this.hooks.offline ? await this.hooks.offline(local, el) : contentless(el) ? 'dropped' : 'refused';
    if (kept === 'stored') {
      // The account may have become available while this was stored, after
      // its session took what was waiting: have it take again.
      // Stored: a failed check must not make the sender send it again.
      await this.offlineWaiting(`${local}@${this.d.domain}`, failed);
      return;
    }
    if (kept === 'dropped') return;
    return this.reject(sender, el, new StanzaError('service-unavailable', kept === 'full' ? 'the recipient is offline and cannot take more messages' : 'the recipient is offline'));
  }

  private async toServer(el: Element, sender: Session | undefined): Promise<void> {
    if (el.name !== 'iq') return; // messages and presence to the server are not processed
    return this.answerIq(el, sender, this.serverIq);
  }

  private async toAccount(el: Element, sender: Session | undefined): Promise<void> {
    return this.answerIq(el, sender, this.accountIq);
  }

  private async answerIq(el: Element, sender: Session | undefined, handlers: Map<string, IqHandler>): Promise<void> {
    const type = el.attrs.type;
    if (type !== 'get' && type !== 'set') return;
    const payload = el.children.find(isElement)!;
    const ns = payload.attrs.xmlns;
    const handler = handlers.get(`${type} ${ns}`);
    if (!handler || !sender) {
      // RFC 6120 §8.4: a namespace not understood gets service-unavailable.
      const other = handlers.has(`${type === 'get' ? 'set' : 'get'} ${ns}`);
      return this.reject(sender, el, new StanzaError(other ? 'feature-not-implemented' : 'service-unavailable'));
    }
    try {
      const result = await handler(el, sender);
      const after = result !== null && 'after' in result ? result.after : undefined;
      const payloadOut = result !== null && 'after' in result ? result.payload : result;
      // RFC 6120 §8.1.2.1: an answer on behalf of the account (an iq without
      // 'to') has no 'from': implicitly the account's bare JID.
      const reply = new Element('iq', { type: 'result', id: el.attrs.id, to: el.attrs.from, ...(el.attrs.to ? { from: el.attrs.to } : {}) });
      if (payloadOut) reply.cnode(payloadOut);
      sender.send(reply);
      after?.();
    } catch (err) {
      if (err instanceof StanzaError) return this.reject(sender, el, err);
      log.error('iq handler failed', { ns, err: String(err) });
      return this.reject(sender, el, new StanzaError('internal-server-error'));
    }
  }

  private bounce(s: Session, el: Element, err: StanzaError): void {
    el.attrs.from = s.jid!;
    const reply = errorReply(el, err);
    if (reply) s.send(reply);
  }

  /** An error back to the sender, wherever it is now (RFC 6120 §8.3.1). */
  private reject(sender: Session | undefined, el: Element, err: StanzaError): void {
    const reply = errorReply(el, err);
    if (!reply) return;
    if (sender && sender.jid === reply.attrs.to) return sender.send(reply);
    void this.routeInternal(reply);
  }

  /** Routes a stanza the server made or forwarded; never bounces errors further. */
  async routeInternal(el: Element, opts: DeliverOptions = {}): Promise<void> {
    try {
      await this.route(el, parseJid(el.attrs.to), undefined, opts);
    } catch (err) {
      log.debug('internal route failed', { err: String(err) });
    }
  }

  /** Routes a stanza the server sends on its own (an announcement, XEP-0133); a failure (the registry away) is thrown, for the caller to count. */
  async routeFromServer(el: Element): Promise<void> {
    await this.route(el, parseJid(el.attrs.to), undefined);
  }

  /** Bound resources of an account (PresenceRouting); `fresh`: not from a cache or replica. */
  resources(bare: string, fresh = false): Promise<SessionRecord[]> {
    return this.d.registry.resources(bare, fresh);
  }

  /** Available resources of an account, as the registry has them (PresenceRouting). */
  async available(bare: string): Promise<SessionRecord[]> {
    return (await this.d.registry.resources(bare)).filter((r) => r.available);
  }

  /** Asks a session, wherever it lives, for its presence (PresenceRouting). */
  probe(rec: SessionRecord, answerTo: string, arriving = false): void {
    this.send(rec, arriving ? { t: 'probe', jid: rec.jid, sid: rec.sid, answerTo, arriving } : { t: 'probe', jid: rec.jid, sid: rec.sid, answerTo });
  }

  /** Tells a session, wherever it lives, that offline messages wait for it (PresenceRouting). */
  flushOffline(rec: SessionRecord): void {
    this.send(rec, { t: 'offline', jid: rec.jid, sid: rec.sid });
  }

  /**
   * Offline messages wait for `bare` (XEP-0160): each of its bound resources
   * but `except` is told, since its worker knows whether it is available now
   * and the registry may not say it yet; the first to claim the queue
   * delivers it. Read fresh: one that just bound may not be in a cached view
   * yet. With the registry away, the next login takes them (PresenceRouting).
   */
  async offlineWaiting(bare: string, except?: string | ReadonlySet<string>): Promise<void> {
    const recs = await this.d.registry.resources(bare, true).catch(() => []);
    const skip = (sid: string) => (typeof except === 'string' ? sid === except : (except?.has(sid) ?? false));
    for (const r of recs) if (!skip(r.sid)) this.flushOffline(r);
  }

  /** A session of this worker now lives at `to`: what comes here for it is passed on. */
  movedTo(sid: string, to: Place): void {
    const now = Date.now();
    for (const [k, v] of this.moved) {
      if (now - v.at <= MOVED_KEEP_MS) break;
      this.moved.delete(k);
    }
    this.moved.set(sid, { node: to.node, worker: to.worker, at: now });
  }

  /** A session (back) on this worker: whatever this worker passed on for it before is over. */
  arrived(sid: string): void {
    this.moved.delete(sid);
  }

  /** Where a session that left this worker went, if it did. */
  private movedAway(sid: string): Place | undefined {
    // Every stanza for a session of this worker asks: nothing to look up while nothing moved.
    if (this.moved.size === 0 || this.d.sessions.has(sid)) return undefined;
    const m = this.moved.get(sid);
    return m && Date.now() - m.at <= MOVED_KEEP_MS ? m : undefined;
  }

  /** To the worker of a session, wherever it is; whether it got there (a node answers later). */
  send(rec: Place, env: Envelope): boolean | Promise<boolean> {
    if (rec.node !== this.d.node) return this.d.transport.toNode(rec.node, rec.worker, env);
    if (rec.worker === this.d.worker) {
      this.onEnvelope(env);
      return true;
    }
    return this.d.transport.toWorker(rec.worker, env);
  }

  /** A message offered in turn (see offerInTurn) to `rec`; if its worker or node is gone, to the next, or stored. */
  private sendTry(rec: SessionRecord, xml: string, rest: SessionRecord[]): void {
    const sent = this.send(rec, { t: 'try', jid: rec.jid, sid: rec.sid, xml, rest });
    const lost = () => this.tryNext(xml, rest);
    if (sent === false) lost();
    else if (sent !== true) void sent.then((ok) => ok || lost(), lost);
  }

  /** None took it so far: the next in turn, or, as for an account with no available resource, storage. */
  private tryNext(xml: string, rest: SessionRecord[]): void {
    if (rest.length > 0) return this.sendTry(rest[0], xml, rest.slice(1));
    const el = parseStanza(xml);
    const local = el ? localOf(el.attrs.to) : undefined;
    if (el && local) this.track(() => this.storeOrBounce(local, el, undefined));
  }

  /**
   * RFC 6121 §2.1.6: a roster push to every interested resource of the
   * account, wherever it lives. Whether a session is interested is known
   * only where it lives: the envelope is marked and the receiving side drops
   * it for a session that has not requested the roster.
   */
  async pushRoster(bareJid: string, query: Element): Promise<void> {
    // Here at once, whatever becomes of the push.
    const at = bareJid.lastIndexOf('@');
    if (at > 0) this.presence.rosterChanged(bareJid.slice(0, at));
    let recs: SessionRecord[];
    try {
      recs = await this.d.registry.resources(bareJid);
    } catch (err) {
      log.warn('roster push: registry unavailable', { bare: bareJid, err: String(err) });
      return;
    }
    for (const rec of recs) this.pushTo(rec, query);
  }

  /** A roster push for one resource (PresenceRouting); its worker also forgets the account's roster view. */
  pushTo(rec: SessionRecord, query: Element): void {
    // No 'from': implicitly the account's bare JID (§2.1.6).
    const iq = new Element('iq', { type: 'set', id: `push-${randomBytes(6).toString('base64url')}`, to: rec.jid });
    iq.cnode(clone(query));
    this.deliver(rec, iq, 'roster');
  }

  /** To one session wherever it lives; `only` for a session that asked for that kind of stanza. */
  deliver(rec: SessionRecord, el: Element, only?: Only, opts: DeliverOptions = {}): void {
    const taken = this.offer(rec, el.toString(), only, { solicited: opts.solicited, reroute: rerouteOf(el, only) });
    if (taken === true || only) return; // nobody to answer for a stanza only some sessions take
    if (taken === false) return this.undeliverable(el, rec.sid);
    void taken.then((ok) => ok || this.undeliverable(el, rec.sid), () => this.undeliverable(el, rec.sid));
  }

  /**
   * One message to several resources: it is undeliverable (kept offline or
   * bounced) only when no copy was taken, never once per lost copy, or the
   * user would get it again at next login.
   */
  private deliverCopies(recs: SessionRecord[], el: Element): void {
    const xml = el.toString();
    const lost = () => this.undeliverable(el, recs[0].sid, 'last');
    void Promise.all(recs.map((rec) => this.offer(rec, xml, 'copy', { reroute: 'copy' }))).then((oks) => oks.includes(true) || lost(), lost);
  }

  /** A message to a bare JID offered to bound resources one after the other (see the file's head); the last one's worker stores it if none takes it. */
  private offerInTurn(recs: SessionRecord[], el: Element): void {
    this.sendTry(recs[0], el.toString(), recs.slice(1));
  }

  /**
   * Hands a stanza to one session wherever it lives; whether it was taken.
   * One for another worker of this node counts as taken: that worker
   * answers for it if its session is gone (this very moment).
   */
  private offer(rec: SessionRecord, xml: string, only: Only | undefined, opts: { solicited?: boolean; reroute?: Reroute }): boolean | Promise<boolean> {
    let to: Place = rec;
    if (rec.node === this.d.node && rec.worker === this.d.worker) {
      const away = this.movedAway(rec.sid);
      if (!away) return this.take(rec.jid, rec.sid, xml, only, opts);
      to = away;
    }
    const env: Envelope = { t: 'deliver', jid: rec.jid, sid: rec.sid, xml };
    if (only) env.only = only;
    if (opts.solicited) env.solicited = true;
    if (opts.reroute) env.reroute = opts.reroute;
    if (to.node !== this.d.node) return this.d.transport.toNode(to.node, to.worker, env);
    return this.d.transport.toWorker(to.worker, env);
  }

  /** To a session of this worker: whether it took the stanza (false too when `only` leaves it out). */
  private take(jid: string, sid: string, xml: string, only: Only | undefined, opts: { solicited?: boolean; reroute?: Reroute }): boolean {
    const component = this.d.components.size > 0 ? this.d.components.get(sid) : undefined;
    if (component) return component.jid === jid && component.deliver(xml, { live: !opts.solicited, reroute: opts.reroute });
    // A session closing with writes under way holds what it is sent behind them (Session.late).
    const s = this.d.sessions.get(sid) ?? this.d.closing.get(sid);
    if (!s || s.jid !== jid) return false;
    if (only === 'roster') {
      // Every roster change comes by here: the account's view is read again.
      if (s.username !== null) this.presence.rosterChanged(s.username);
      if (!s.rosterRequested) return false; // not an interested resource (RFC 6121 §2.1.6)
    }
    if (only === 'carbons' && !s.carbons) return false; // XEP-0280: carbons not enabled
    if (only === 'blocklist' && !s.blocklistRequested) return false; // XEP-0191 §5.3: only resources that requested the blocklist
    if (only === 'available' && !s.availableNow) return false;
    // XEP-0163 §4.2: a PEP notification only for a session whose caps asked for its node.
    if (only !== undefined && only.startsWith('notify ') && !(s.availableNow && this.hooks.notify.some((h) => h(s, only.slice(7))))) return false;
    if (only === 'subscription' && !s.availableNow && !s.rosterRequested) return false;
    return s.deliver(xml, { live: !opts.solicited, reroute: opts.reroute });
  }

  /** The session `sid` left between lookup and delivery: answer as for an unavailable resource. */
  private undeliverable(el: Element | undefined, sid: string, kind?: Reroute): void {
    if (!el) return;
    const k = kind ?? rerouteOf(el);
    if (k) this.rerouteElement(el, k, sid);
  }

  /**
   * A routed stanza a session took but never wrote (its connection dropped):
   * RFC 6121 §8.5.3.2, as for a resource that is gone. A message goes to the
   * account's other resources or offline storage, else back to its sender
   * as an error; an iq request is answered with an error.
   */
  rerouted(xml: string, kind: Reroute, sid: string): void {
    const el = parseStanza(xml);
    if (el) this.rerouteElement(el, kind, sid);
  }

  private rerouteElement(el: Element, kind: Reroute, sid: string): void {
    const immediate = (reply: Element | undefined) => this.track(async () => {
      if (reply) await this.routeInternal(reply);
    });
    if (kind === 'iq') return immediate(errorReply(el, new StanzaError('service-unavailable')));
    let to: Jid;
    try {
      to = parseJid(el.attrs.to);
    } catch {
      return;
    }
    // A component that went (XEP-0114): its sender learns it.
    if (to.domain !== this.d.domain) return immediate(errorReply(el, new StanzaError('service-unavailable', `${to.domain} is not connected`)));
    if (!to.local) return;
    // In turn for each account: several that lost their session together
    // (its node died before confirming them, its connection closed) must
    // not race through the lookups and be stored in another order than they
    // were sent (RFC 6120 §10.1). The transport and sessions report them in
    // that order; each turn takes all that wait as one batch.
    const bare = `${to.local}@${to.domain}`;
    const queue = this.rerouting.get(bare);
    if (queue) return void queue.push({ el, kind, sid });
    this.rerouting.set(bare, [{ el, kind, sid }]);
    this.track(() => this.drainReroutes(to.local, bare));
  }

  /** Reroutes what waits for `bare`, a batch at a time, until none is left (then the queue goes). */
  private async drainReroutes(local: string, bare: string): Promise<void> {
    // A turn of the event loop first: what is reported together (a closing
    // session's queue, a node's unconfirmed envelopes) makes one batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (;;) {
      const queue = this.rerouting.get(bare)!;
      if (queue.length === 0) {
        this.rerouting.delete(bare);
        return;
      }
      const batch = queue.splice(0);
      try {
        await this.rerouteBatch(local, bare, batch);
      } catch (err) {
        // Not lost with its batch: what it had not done yet goes one by one, as before batches, else back to its sender.
        const left = batch.filter((r) => !r.done);
        log.warn('undelivered stanzas could not be rerouted as a batch; one by one', { bare, stanzas: batch.length, left: left.length, err: String(err) });
        for (const r of left) {
          // One offered to a resource left may be delivered: stored only if it was not taken.
          if (r.taken && (await r.taken.catch(() => false))) continue;
          await this.storeOrBounce(local, r.el, undefined, r.sid).catch(() => this.reject(undefined, r.el, new StanzaError('service-unavailable', 'the recipient is offline')));
        }
      }
    }
  }

  /**
   * RFC 6121 §8.5.3.2 for messages to one account whose session is gone, in
   * the order given: one registry lookup for all; a message goes as to the
   * bare JID, to the resources left ('copy' too: another copy may have
   * reached another resource, then it comes twice rather than not at all),
   * else to storage; 'last' straight to storage. What is stored is stored
   * with one write.
   */
  private async rerouteBatch(local: string, bare: string, batch: Rerouting[]): Promise<void> {
    let recs: SessionRecord[] | undefined;
    if (batch.some((r) => r.kind !== 'last')) {
      try {
        recs = await this.d.registry.resources(bare);
      } catch (err) {
        // The registry is away: storage, or an error to the sender.
        log.debug('reroute: the registry failed; storing', { err: String(err) });
      }
    }
    let exists: Promise<boolean> | undefined;
    const store: Rerouting[] = [];
    const offered: { r: Rerouting; taken: Promise<boolean> }[] = [];
    for (const r of batch) {
      if (r.kind === 'last' || recs === undefined) {
        store.push(r);
        continue;
      }
      try {
        const to = await this.rerouteTo(r, local, recs, () => (exists ??= this.d.accountExists(local)));
        if (to === 'store') store.push(r);
        else if (to) {
          r.taken = to.taken;
          offered.push({ r, taken: to.taken });
        }
        else r.done = true;
      } catch (err) {
        // A store failed (the account lookup, the archive): storage, or an error to the sender.
        log.debug('reroute: a lookup failed; storing', { err: String(err) });
        store.push(r);
      }
    }
    await this.storeOrBounceMany(local, bare, store);
    for (const r of store) r.done = true;
    // Rerouted once already: what the resources left could not write either is stored, in order.
    const taken = await Promise.all(offered.map((o) => o.taken));
    for (const [i, o] of offered.entries()) if (taken[i]) o.r.done = true;
    await this.storeOrBounceMany(local, bare, offered.filter((_, i) => !taken[i]).map((o) => o.r));
  }

  /**
   * toBare for one rerouted message, given the account's resources: 'store'
   * when no resource of the account may take it, whether one took it once
   * offered (`taken`: the offers are made, their outcome not awaited), or
   * undefined when it is done with (dropped, bounced).
   */
  private async rerouteTo(r: Rerouting, local: string, all: SessionRecord[], exists: () => Promise<boolean>): Promise<'store' | { taken: Promise<boolean> } | undefined> {
    const { el, sid } = r;
    const recs = all.filter((rec) => rec.sid !== sid);
    if (el.name !== 'message') {
      // Not made by rerouteOf; toBare as ever.
      await this.toBare(el, local, `${local}@${this.d.domain}`, undefined, sid);
      return undefined;
    }
    if (recs.length === 0 && !(await exists())) {
      // §8.5.1: no such account.
      if (!contentless(el)) this.reject(undefined, el, new StanzaError('service-unavailable'));
      return undefined;
    }
    const type = el.attrs.type ?? 'normal';
    if (type === 'error') return undefined;
    if (type === 'groupchat') return void this.reject(undefined, el, new StanzaError('service-unavailable'));
    const refused = await this.delivering(el, local);
    if (refused) return void this.reject(undefined, el, refused);
    const available = recs.filter((rec) => rec.available && rec.priority >= 0);
    if (available.length === 0) return type === 'headline' ? undefined : 'store';
    if (type === 'headline') {
      for (const rec of available) this.deliver(rec, el);
      return undefined;
    }
    // §8.5.2.1.1: to the most available resource(s); if these cannot write it either, it is stored.
    const top = Math.max(...available.map((rec) => rec.priority));
    const xml = el.toString();
    const offers = available.filter((rec) => rec.priority === top).map((rec) => this.offer(rec, xml, 'copy', { reroute: 'last' }));
    return { taken: Promise.all(offers).then((oks) => oks.includes(true), () => false) };
  }

  /** storeOrBounce for messages to one account, in order: one offline write for those to keep. */
  private async storeOrBounceMany(local: string, bare: string, items: Rerouting[]): Promise<void> {
    if (items.length === 0) return;
    const els = items.map((r) => r.el);
    let kept: Kept[];
    if (this.hooks.offlineMany) kept = await this.hooks.offlineMany(local, els);
    else if (this.hooks.offline) {
      kept = [];
      for (const el of els) kept.push(await this.hooks.offline(local, el));
    } else kept = els.map((el) => (contentless(el) ? 'dropped' : 'refused'));
    for (const [i, k] of kept.entries()) {
      if (k === 'refused' || k === 'full') this.reject(undefined, els[i], new StanzaError('service-unavailable', k === 'full' ? 'the recipient is offline and cannot take more messages' : 'the recipient is offline'));
    }
    // As storeOrBounce: the account may have become available meanwhile, and the sessions that could not take them are not told.
    if (kept.includes('stored')) await this.offlineWaiting(bare, new Set(items.filter((_, i) => kept[i] === 'stored').map((r) => r.sid)));
  }

  /** Work started for a stanza or a session that is gone (PresenceRouting): logged if it fails, awaited by idle(). */
  track(fn: () => Promise<void>): void {
    const p = fn().catch((err: unknown) => log.warn('an undelivered stanza could not be rerouted', { err: String(err) }));
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Resolves once the rerouting under way is done (shutdown: before the stores close). */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** An envelope from another worker or node for a session of this worker. */
  onEnvelope(env: Envelope): void {
    // BOSH's are web/bosh.ts's (worker.ts hands them there): never here.
    if (env.t === 'bosh' || env.t === 'bosh-res') return;
    if (env.t === 's2s' || env.t === 's2s-verify' || env.t === 's2s-verified') {
      if (this.federation) this.federation.onEnvelope(env);
      else if (env.t === 's2s') this.undeliverableRemote(env.xml);
      return;
    }
    if (env.t === 'changed') return this.changed(env.kind, env.user);
    if (env.t === 'changed-ok') return; // the worker's own (worker.ts): nothing for the router
    if (env.t === 'svc') {
      const el = parseStanza(env.xml);
      if (el) this.services.get(env.domain)?.envelope?.(el);
      return;
    }
    if (env.t === 'answer') {
      const el = parseStanza(env.xml);
      if (el) for (const hook of this.hooks.answer) if (hook(el)) break;
      return;
    }
    if (env.t === 'svc-ctl') return this.services.get(env.domain)?.control?.(env);
    if (env.t === 'svc-fan') return this.fanIn(env.xml, env.to);
    if (env.t === 'take') return this.resumption?.onTake(env);
    if (env.t === 'taken') return this.resumption?.onTaken(env);
    // Sent by a view of the registry from before the session moved: passed
    // on, once (a session that moves on again is found by the registry).
    const away = env.fwd ? undefined : this.movedAway(env.sid);
    if (away) {
      const sent = this.send(away, { ...env, fwd: true });
      const lost = () => this.onMovedLost(env);
      if (sent === false) lost();
      else if (sent !== true) void sent.then((ok) => ok || lost(), lost);
      return;
    }
    if (env.t === 'deliver') {
      const opts = { solicited: env.solicited, reroute: env.reroute };
      // Not taken: answered here, unless only some sessions take it (a push,
      // a carbon); a copy is answered when it must not be lost (its reroute).
      if (!this.take(env.jid, env.sid, env.xml, env.only, opts) && (!env.only || (env.only === 'copy' && env.reroute))) this.undeliverable(parseStanza(env.xml), env.sid, env.reroute);
      return;
    }
    if (env.t === 'try') {
      const s = this.d.sessions.get(env.sid);
      if (s && s.jid === env.jid && s.takesBareMessages && s.deliver(env.xml, { reroute: 'message' })) return;
      if (s && s.jid === env.jid && !env.late) {
        // Bytes of this session's that were ready when this envelope was are
        // read in this turn of the event loop (its presence, say): judge after it.
        setImmediate(() => this.onEnvelope({ ...env, late: true }));
        return;
      }
      this.tryNext(env.xml, env.rest);
      return;
    }
    const s = this.d.sessions.get(env.sid);
    if (!s || s.jid !== env.jid) {
      // A session replaced before it finished binding here: the registry's
      // answer to its bind and the kick from its successor travel different
      // ways (another connection, another port) and the kick can come first.
      if (env.t === 'kick') this.earlyKick(env.sid, { condition: env.condition, text: env.text });
      return;
    }
    if (env.t === 'probe') this.presence.answerProbe(s, env.answerTo, env.arriving === true);
    else if (env.t === 'offline') this.presence.flushOffline(s);
    else s.close({ condition: env.condition, text: env.text });
  }

  /**
   * One stanza of a service's actor (a room) for sessions of this node
   * ('svc-fan'): a copy routed to each, the envelopes of one actor one
   * after the other, so that each session gets the actor's stanzas in the
   * order it sent them.
   */
  private fanIn(xml: string, to: string[]): void {
    const el = parseStanza(xml);
    if (!el) return;
    const from = el.attrs.from ?? '';
    const actor = from.includes('/') ? from.slice(0, from.indexOf('/')) : from;
    const next = (this.fans.get(actor) ?? Promise.resolve()).then(() => Promise.all(to.map((full) => {
      const copy = clone(el);
      copy.attrs.to = full;
      return this.routeInternal(copy);
    }))).then(() => {});
    this.fans.set(actor, next);
    void next.finally(() => {
      if (this.fans.get(actor) === next) this.fans.delete(actor);
    });
  }

  private readonly fans = new Map<string, Promise<void>>();

  /**
   * A session that ended without a word had sent directed presence to `to`
   * (PresenceRouting): a hosted service that tracks its visitors says it
   * for it (XEP-0045 rooms); false when none does.
   */
  sessionGone(from: string, to: string): boolean {
    if (this.services.size === 0) return false;
    let jid: Jid;
    try {
      jid = parseJid(to);
    } catch {
      return false;
    }
    return this.services.get(jid.domain)?.gone?.(from, jid) ?? false;
  }

  /** Whether a domain is a hosted service's that may be a roster contact (PresenceRouting). */
  contactService(domain: string): boolean {
    return this.services.get(domain)?.contact === true;
  }

  /** A stanza for a peer server that reached a worker without federation (it is being turned off): its sender learns it. */
  private undeliverableRemote(xml: string): void {
    const el = parseStanza(xml);
    const reply = el ? errorReply(el, new StanzaError('remote-server-not-found', 'federation is off')) : undefined;
    if (reply) void this.routeInternal(reply);
  }

  /** An envelope passed on after its session, whose new place is gone: answered as for a session that is gone. */
  private onMovedLost(env: Envelope): void {
    if (env.t === 'deliver' && (!env.only || (env.only === 'copy' && env.reroute))) this.undeliverable(parseStanza(env.xml), env.sid, env.reroute);
    else if (env.t === 'try') this.tryNext(env.xml, env.rest);
  }

  private readonly early = new Map<string, { reason: CloseReason; at: number }>();

  private earlyKick(sid: string, reason: CloseReason): void {
    const now = Date.now();
    // Kept for as long as a bind can take; bounded whatever happens. The map
    // is in arrival order: drop from the oldest until one may stay.
    for (const [k, v] of this.early) {
      if (now - v.at <= EARLY_KICK_MS && this.early.size < EARLY_KICK_MAX) break;
      this.early.delete(k);
    }
    this.early.set(sid, { reason, at: now });
  }

  /** A kick that reached this worker before the session it was for finished binding; the session takes it once bound. */
  takeEarlyKick(sid: string): CloseReason | undefined {
    const k = this.early.get(sid);
    if (!k) return undefined;
    this.early.delete(sid);
    return k.reason;
  }

  /**
   * An account was removed (accounts/removal.ts): on this worker, its
   * sessions' last broadcast goes to the contacts that were subscribed (its
   * roster is gone), and its contacts' sessions get, in order, the
   * cancellations (RFC 6121 §3.2.3, §3.3.3) and the roster push. The
   * caller then ends the account's sessions here.
   */
  accountRemoved(n: RemovalNotice): void {
    this.presence.primeView(n.user, n.contacts.filter((c) => c.sawPresence).map((c) => c.jid));
    this.track(async () => {
      for (const c of n.contacts) {
        if (c.remote) {
          // To the contact's server, from one worker per node (the one that owns
          // the stream there); a copy from another node changes nothing more
          // there (RFC 6121 Appendix A.3: no state change, nothing delivered).
          const domain = c.jid.slice(c.jid.indexOf('@') + 1);
          if (this.federation?.owns(domain)) for (const type of c.stanzas) await this.routeInternal(new Element('presence', { from: n.bare, to: c.jid, type }));
          continue;
        }
        if (c.stanzas.length === 0 && !c.push) continue;
        const here = (await this.d.registry.resources(c.jid)).filter((r) => r.node === this.d.node && r.worker === this.d.worker);
        const query = c.push ? pushQuery(c.push.item, c.push.version) : undefined;
        for (const rec of here) {
          for (const type of c.stanzas) this.deliver(rec, new Element('presence', { from: n.bare, to: c.jid, type }), 'subscription');
          if (query) this.pushTo(rec, query);
        }
      }
    });
  }

  /** Ends a session wherever it lives (conflict policy "new wins"). */
  kick(rec: SessionRecord, condition: StreamCondition, text: string): void {
    this.send(rec, { t: 'kick', jid: rec.jid, sid: rec.sid, condition, text });
  }
}

function sameJid(a: string, b: string): boolean {
  try {
    const x = parseJid(a);
    const y = parseJid(b);
    return x.local === y.local && x.domain === y.domain && (x.resource === '' || x.resource === y.resource);
  } catch {
    return false;
  }
}

/** The domain of a JID, if it is one. */
function domainOfJid(jid: string | undefined): string | undefined {
  try {
    return jid ? parseJid(jid).domain : undefined;
  } catch {
    return undefined;
  }
}

/** The localpart of an address of this server's accounts, if it is one. */
function localOf(to: string | undefined): string | undefined {
  try {
    return to ? parseJid(to).local || undefined : undefined;
  } catch {
    return undefined;
  }
}

function parseStanza(xml: string): Element | undefined {
  try {
    return parseXml(xml);
  } catch {
    return undefined;
  }
}
