// Server features are modules, one per XEP: each advertises its disco
// features and answers the iq payloads it owns, keyed "type namespace", and
// may hook into a client stream: the stream features it offers once the
// client is authenticated, the top-level elements that are not stanzas it
// handles (XEP-0352's <active/>, XEP-0198's <r/>), and the routed stanzas on
// their way to a client, which it may hold back and send later. It may also
// hook into the stanza flow through the router: a stanza from a client
// before it is routed (presence takes its own, carbons copy what is sent),
// a message after routing decided who gets it (carbons copy what is
// received), a message about to reach an account (the archive stamps it),
// a stanza from a peer server or component, and a message no session can
// take (offline storage).
import type { Element } from 'ltx';
import type { SessionRecord } from '../registry/registry.ts';
import type { StanzaError } from '../xmpp/errors.ts';
import type { Jid } from '../xmpp/jid.ts';
import type { Out, Session } from '../session/session.ts';
import type { RosterItem } from '../roster/store.ts';
import type { ServiceControlEnvelope } from '../worker/wire.ts';
import type { DeliverOptions } from '../presence/presence.ts';

/**
 * Returns the result payload (or null for an empty result), or throws a
 * StanzaError. `after` runs once the result is on its way, for what must
 * follow it on the wire (XEP-0077 §3.2: the result, then the stream closes).
 */
export type IqResult = Element | null | { payload: Element | null; after: () => void };
export type IqHandler = (iq: Element, session: Session) => Promise<IqResult> | IqResult;
/** An iq from a peer server's entity (no session of ours behind it): the result payload (or null), or a thrown StanzaError. */
export type RemoteIqHandler = (iq: Element) => Promise<Element | null> | Element | null;

/** A top-level element of a bound client's stream that is not a stanza; handled in order with the stanzas (it may throw a StreamError). */
export type NonzaHandler = (el: Element, session: Session) => void | Promise<void>;
/**
 * A stanza routed to a client, before it is queued for writing: true when
 * the hook took it (to send it later with Session.sendHeld, or never).
 */
export type OutboundHook = (session: Session, out: Out) => boolean;

/**
 * A stanza from a client, its 'from' stamped and checked, before it is
 * routed: the module may change it or act on it; true when it took the
 * stanza (routing stops there). In module order.
 */
export type InboundHook = (el: Element, session: Session) => boolean | void | Promise<boolean | void>;
/** A message to an account of this server, once routing decided which of its sessions get it (their records). */
export type RoutedHook = (el: Element, bare: string, to: readonly Pick<SessionRecord, 'sid'>[]) => void;
/**
 * What became of a message no session of the account could take (RFC 6121
 * §8.5.2.2.1): kept for later, refused because the account's store is full,
 * dropped without a word (nothing in it to keep), or not kept (the sender
 * gets an error).
 */
export type Kept = 'stored' | 'full' | 'dropped' | 'refused';
export type OfflineHook = (local: string, el: Element) => Promise<Kept>;
/** OfflineHook for several messages to one account at once, kept in the order given (one write): what became of each, at its place. */
export type OfflineBatchHook = (local: string, els: Element[]) => Promise<Kept[]>;
/**
 * A message on its way to an account of this server (its normalised
 * localpart), known to exist, before any of its sessions or offline storage
 * gets it: the module may change it (the archive stamps its id); a
 * StanzaError refuses it (the sender gets it). In module order.
 */
export type DeliveringHook = (el: Element, local: string) => StanzaError | undefined | Promise<StanzaError | undefined>;
/** A stanza from a peer server or a component, before it is routed: the module may change it (as inbound does for a client's). */
export type ForeignHook = (el: Element) => void;
/**
 * What a module decides of a stanza about to be routed to `to` (from a
 * client, a peer server, a component, or the server on an account's
 * behalf): nothing, 'drop' (silently), or a StanzaError for its sender.
 * Synchronous when nothing needs reading (the hot path).
 */
export type Verdict = undefined | 'drop' | StanzaError;
export type GuardHook = (el: Element, to: Jid) => Verdict | Promise<Verdict>;

/**
 * An iq to a hosted service: the result payload (or null), possibly with
 * what must follow it on the wire, or a thrown StanzaError. `from`: the
 * sender's address as stamped (a local session's full JID, or a peer
 * server's entity).
 */
export type ServiceIqHandler = (iq: Element, from: Jid) => Promise<IqResult> | IqResult;

/**
 * A service of the server's own on a domain of its own (XEP-0060's
 * pubsub.<domain>; group chat and HTTP upload later): every stanza to that
 * domain, from a local session or a peer server's entity, is handed to it
 * on the worker that routes it. Its state lives in the stores, so any
 * worker of any node serves it.
 */
export interface HostedService {
  domain: string;
  /** iq get/set to the domain or any address of it, keyed "type namespace" (disco included: the service says what it is). */
  iq: Record<string, ServiceIqHandler>;
  /**
   * Other stanzas to it (messages, presence, iq results and errors): true when it took the stanza; a message it did
   * not take is answered service-unavailable. `opts`: how it was routed (DeliverOptions.arriving for presence).
   */
  stanza?: (el: Element, from: Jid, opts: DeliverOptions) => boolean | void | Promise<boolean | void>;
  /**
   * It may be a roster contact (RFC 6121 §3): the server applies the subscription stanzas it sends to its users'
   * rosters, and routes its users' subscription stanzas, probes and broadcast presence to it, federation or not.
   */
  contact?: boolean;
  /** Every stanza to it, instead of `iq` and `stanza`: for a service whose addresses are actors of their own (XEP-0045 rooms); errors are its own to send. */
  handle?: (el: Element, to: Jid, from: Jid) => Promise<void>;
  /** A stanza another worker passed on to this one (a 'svc' envelope, Router.toService's peers). */
  envelope?: (el: Element) => void;
  /** What another worker's copy of the service asked of an actor of this one (a 'svc-ctl' envelope). */
  control?: (env: ServiceControlEnvelope) => void;
  /**
   * A session that ended without a word (its node or worker died) had sent
   * directed presence to `to`, an address of this service: the service says
   * it for it (XEP-0045: the occupant leaves with status 333) instead of the
   * plain unavailable presence. False when the address is not one it tracks.
   */
  gone?: (full: string, to: Jid) => boolean;
}

export interface ServerModule {
  /** A service on a domain of the server's own (listed in the server's disco#items). */
  service?: HostedService;
  features: string[];
  /**
   * XEP-0030 nodes of the server's JID the module owns (XEP-0050 §2.2: the
   * commands node and each command's): the <query/> answering disco#info or
   * disco#items on `node`, or undefined when the node is not the module's.
   * `session`: undefined for a peer server's entity.
   */
  discoNode?: (kind: 'info' | 'items', node: string, session: Session | undefined) => Element | undefined | Promise<Element | undefined>;
  /** Features of every account's bare JID (disco#info to an account). */
  accountFeatures?: string[];
  /** Identities of every account's bare JID besides account/registered (XEP-0163 §6.1: pubsub/pep). */
  accountIdentities?: { category: string; type: string }[];
  /** iq addressed to the server's domain, keyed "get urn:xmpp:ping". */
  server?: Record<string, IqHandler>;
  /** iq addressed to an account's bare JID, answered by the server on its behalf. */
  account?: Record<string, IqHandler>;
  /** iq from other servers' entities (federation) to the server's domain, and to an account's bare JID: what needs no session of ours. */
  remoteServer?: Record<string, RemoteIqHandler>;
  remoteAccount?: Record<string, RemoteIqHandler>;
  /** Stream features offered to a client once it is authenticated. */
  streamFeatures?: (session: Session) => Element[];
  /** Nonzas of a bound client's stream, keyed "name namespace". */
  nonzas?: Record<string, NonzaHandler>;
  /** Nonzas a module answers before authentication (with a refusal its protocol defines), keyed "name namespace". */
  negotiating?: Record<string, NonzaHandler>;
  /**
   * Nonzas handled as soon as they are read, ahead of the stanzas waiting to
   * be handled: for what only settles output already sent (XEP-0198's <a/>,
   * and <r/>, whose answer counts what was handled so far).
   */
  immediate?: Record<string, NonzaHandler>;
  outbound?: OutboundHook;
  inbound?: InboundHook;
  routed?: RoutedHook;
  delivering?: DeliveringHook;
  foreign?: ForeignHook;
  /** Every stanza routed to an address (XEP-0191: blocked ones refused or dropped). In module order; the first verdict stops it. */
  guard?: GuardHook;
  /**
   * An account approved a contact's subscription (RFC 6121 §3.1.5): its
   * roster item, as the presence service just wrote it, went from not
   * sending the account's presence to the contact to sending it (a
   * repeated approval, which changes nothing, is not one).
   */
  approved?: (user: string, item: RosterItem) => void;
  /** Presence from a peer server's entity to an address of this domain, past the guards, before the presence service takes it (XEP-0163 §4.3: a remote contact's resources and caps). */
  remotePresence?: (el: Element, to: Jid) => void;
  /**
   * An iq result or error from a peer server's entity answering a request
   * the server sent for a module (its id from Router.requestId), on the
   * worker that sent it: true when the module took it.
   */
  answer?: (el: Element) => boolean;
  /** What the module keeps for an account changed on another worker or node (Router.changed), or ('*') anything may have: its copy goes. Run on every worker. */
  changed?: (kind: string, user: string) => void;
  /** An account was removed (on any node): what the module holds for it goes. Run on every worker. */
  removed?: (user: string) => void;
  /** Whether a session of this worker takes a PEP event the router delivers with `only: 'notify …'` (given what follows 'notify '): its caps ask for the node (XEP-0163 §4.2, NODE+notify), and it did not have that publish already. */
  notify?: (session: Session, what: string) => boolean;
  /** The one place undeliverable messages are kept (offline storage); the first module that has it. */
  offline?: OfflineHook;
  /** The same for several messages to one account at once (undelivered messages rerouted together): used with the module's `offline`. */
  offlineMany?: OfflineBatchHook;
  /** The session loses its stream but lives on (XEP-0198 hibernation, or a move to another connection): what the module holds for the stream is released to the session's queue. */
  detached?: (session: Session) => void;
  /** A connection took the session over (XEP-0198 resumption, from this worker or another, or another node): what the module derives from the session's state is ready for it. */
  resumed?: (session: Session) => void;
}

/** The modules' hooks, gathered once per worker. */
export interface Hooks {
  streamFeatures: ((session: Session) => Element[])[];
  nonzas: Map<string, NonzaHandler>;
  negotiating: Map<string, NonzaHandler>;
  immediate: Map<string, NonzaHandler>;
  outbound: OutboundHook[];
  detached: ((session: Session) => void)[];
  resumed: ((session: Session) => void)[];
  inbound: InboundHook[];
  routed: RoutedHook[];
  delivering: DeliveringHook[];
  foreign: ForeignHook[];
  guard: GuardHook[];
  remotePresence: ((el: Element, to: Jid) => void)[];
  answer: ((el: Element) => boolean)[];
  changed: ((kind: string, user: string) => void)[];
  removed: ((user: string) => void)[];
  notify: ((session: Session, what: string) => boolean)[];
  offline: OfflineHook | undefined;
  /** The batch form of `offline`, from the same module (none when it has only the single form). */
  offlineMany: OfflineBatchHook | undefined;
}

export function hooksOf(modules: ServerModule[]): Hooks {
  const hooks: Hooks = { streamFeatures: [], nonzas: new Map(), negotiating: new Map(), immediate: new Map(), outbound: [], detached: [], resumed: [], inbound: [], routed: [], delivering: [], foreign: [], removed: [], guard: [], remotePresence: [], answer: [], changed: [], notify: [], offline: undefined, offlineMany: undefined };
  for (const m of modules) {
    if (m.streamFeatures) hooks.streamFeatures.push(m.streamFeatures);
    for (const [k, h] of Object.entries(m.nonzas ?? {})) hooks.nonzas.set(k, h);
    for (const [k, h] of Object.entries(m.negotiating ?? {})) hooks.negotiating.set(k, h);
    for (const [k, h] of Object.entries(m.immediate ?? {})) hooks.immediate.set(k, h);
    if (m.outbound) hooks.outbound.push(m.outbound);
    if (m.detached) hooks.detached.push(m.detached);
    if (m.resumed) hooks.resumed.push(m.resumed);
    if (m.inbound) hooks.inbound.push(m.inbound);
    if (m.routed) hooks.routed.push(m.routed);
    if (m.delivering) hooks.delivering.push(m.delivering);
    if (m.foreign) hooks.foreign.push(m.foreign);
    if (m.guard) hooks.guard.push(m.guard);
    if (m.remotePresence) hooks.remotePresence.push(m.remotePresence);
    if (m.answer) hooks.answer.push(m.answer);
    if (m.changed) hooks.changed.push(m.changed);
    if (m.removed) hooks.removed.push(m.removed);
    if (m.notify) hooks.notify.push(m.notify);
    if (!hooks.offline && m.offline) {
      hooks.offline = m.offline;
      hooks.offlineMany = m.offlineMany;
    }
  }
  return hooks;
}

export type { StanzaError };
