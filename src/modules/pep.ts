// XEP-0163 Personal Eventing Protocol: a pubsub service (XEP-0060) on every
// account's bare JID, with the subset PEP needs: publish (creating the node
// on first publish, §4.1 "auto-create"), publish-options (XEP-0060 §7.1.5),
// retract, items, and the owner's create, configure, purge and delete.
// Subscriptions are implicit (§4.3): a contact is subscribed to the owner's
// nodes by its presence subscription, and gets notifications on a node when
// its client says 'NODE+notify' in its entity capabilities (XEP-0115),
// which the server reads from presence and asks of the client once per ver
// (pep/caps.ts).
//
// Notifications are decided in two places: here, who may see a node (the
// access model, read from the owner's roster); and where each contact's
// session lives, whether that session asked for the node (its caps are
// known only there): the router delivers with `only: 'notify …'` (notifyOnly),
// and the session's worker asks this module's notify hook, which also keeps
// a session from getting one publish twice (see Seen.handed).
//
// Contacts of other servers (federation): their server sends the account
// their resources' presence, caps included (XEP-0163 §4.3.4 example); the
// caps are asked of the remote client over the server-to-server stream once
// per ver (and verified, XEP-0115 §5.4, as for local clients), each resource
// and its caps kept where every worker and node finds them (pep/remote.ts),
// and a publish sends the notification to each of the contact's resources
// whose caps ask for the node; a resource gets the last items at its first
// presence with caps, and is forgotten at its unavailable presence.
import { Element, escapeXML, parse as parseXml } from 'ltx';
import { randomBytes } from 'node:crypto';
import type { ServerModule, IqHandler, RemoteIqHandler, InboundHook } from './module.ts';
import type { Session } from '../session/session.ts';
import type { SessionRecord } from '../registry/registry.ts';
import type { RosterStore, RosterItem } from '../roster/store.ts';
import type { Only } from '../worker/wire.ts';
import { StanzaError, type StanzaCondition } from '../xmpp/errors.ts';
import { parseJid, JidError, bare as bareJid, full as fullJid, type Jid } from '../xmpp/jid.ts';
import { NS_DELAY, NS_DISCO_INFO } from '../xmpp/ns.ts';
import { type AccessModel, type NodeConfig, type PublishModel, type PepItem, type PepStore, type Published, type SendLast, DEFAULT_CONFIG, MAX_ACCOUNT_BYTES, MAX_ITEMS, MAX_ITEM_BYTES, MAX_NODES } from '../pep/store.ts';
import { type Caps, type SharedCaps, CapsCache, MAX_NOTIFY_BYTES, MAX_NOTIFY_NODES, capsKey, capsOf, notifyNodes, verifies } from '../pep/caps.ts';
import { type RemoteResources, MemoryRemoteResources, capsOfKey } from '../pep/remote.ts';
import { log } from '../log.ts';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_PUBSUB_OWNER = `${NS_PUBSUB}#owner`;
export const NS_PUBSUB_EVENT = `${NS_PUBSUB}#event`;
export const NS_PUBSUB_ERRORS = `${NS_PUBSUB}#errors`;
export const NS_DATA = 'jabber:x:data';
export const NODE_CONFIG = `${NS_PUBSUB}#node_config`;
export const PUBLISH_OPTIONS = `${NS_PUBSUB}#publish-options`;
/** The longest node name and item id taken. */
export const MAX_NAME = 1024;
/** How many times, at most, a last item is read again because a notification of its node went out meanwhile (see sendLast). */
const MAX_LAST_READS = 4;
/** How long a client has to answer the server's disco#info for its caps. */
const CAPS_TIMEOUT_MS = 10_000;
/**
 * Caps lookups in flight (the shared cache read, then the question to the
 * entity) for one JID, and on one worker: past either, none is started,
 * and the session (or remote resource) gets no notifications until a later
 * presence of its looks its caps up again. A client that sends presence
 * after presence with new vers cannot make the worker hold questions.
 */
export const MAX_CAPS_LOOKUPS_PER_JID = 4;
export const MAX_CAPS_LOOKUPS = 1000;

/** XEP-0060 features this service has (§10, and the access models of §4.5; create-and-configure MUST be said when a create takes a form, §8.1.3; auto-subscribe and filtered-notifications are XEP-0163 §4.1, §4.2 MUSTs). */
const FEATURES = ['publish', 'publish-options', 'retract-items', 'delete-items', 'retrieve-items', 'purge-nodes', 'delete-nodes', 'config-node', 'config-node-max', 'create-nodes', 'create-and-configure', 'auto-create', 'auto-subscribe', 'filtered-notifications', 'access-presence', 'access-open', 'access-whitelist', 'modify-affiliations', 'member-affiliation', 'access-roster', 'last-published', 'persistent-items', 'retrieve-default'].map((f) => `${NS_PUBSUB}#${f}`);

/** A XEP-0060 error: a stanza condition with its pubsub#errors child (§7.1.3, §6.5.9...). */
export class PubsubError extends StanzaError {
  readonly pubsub: string | undefined;
  readonly unsupported: string | undefined;
  constructor(condition: StanzaCondition, pubsub?: string, text?: string, unsupported?: string) {
    super(condition, text);
    this.pubsub = pubsub;
    this.unsupported = unsupported;
  }
  override toElement(by?: string): Element {
    const el = super.toElement(by);
    if (this.pubsub) el.c(this.pubsub, { xmlns: NS_PUBSUB_ERRORS, ...(this.unsupported ? { feature: this.unsupported } : {}) });
    return el;
  }
}

/** What the module needs of the router. */
export interface PepRouting {
  available(bare: string): Promise<SessionRecord[]>;
  deliver(rec: SessionRecord, el: Element, only?: Only): void;
  /** A stanza the server made, to wherever its 'to' is (another server's entity). */
  routeInternal(el: Element): Promise<void>;
  /** An id for a request to another server's entity whose answer must come back to this worker. */
  requestId(): string;
}

export interface PepOptions {
  domain: string;
  store: PepStore;
  roster: RosterStore;
  routing: () => PepRouting;
  maxNodes?: number;
  maxItemBytes?: number;
  /** The most bytes of items one account keeps (MAX_ACCOUNT_BYTES). */
  maxAccountBytes?: number;
  /** Verified vers shared by the node's workers (its hub), or by every worker of every node (Redis), asked before the client. */
  sharedCaps?: SharedCaps;
  /** Contacts of other servers: their resources and caps, as every worker (and node) sees them; in this worker's memory when not given. */
  remote?: RemoteResources;
  /** XEP-0191: whether stanzas between two JIDs are blocked, either way (the blocking module): no notification, no last item. */
  blocked?: (from: string, to: string) => boolean | Promise<boolean>;
}

export const isEl = (c: Element | string): c is Element => typeof c !== 'string';
/** An affiliation that lets a JID see a whitelist node (§4.5). */
const isMember = (a: string): boolean => a === 'member' || a === 'publisher';
export const bool = (v: string): boolean | undefined => (v === '1' || v === 'true' ? true : v === '0' || v === 'false' ? false : undefined);
const ACCESS: readonly AccessModel[] = ['presence', 'open', 'whitelist', 'roster'];
const SEND_LAST: readonly SendLast[] = ['never', 'on_sub', 'on_sub_and_presence'];
const PUBLISH_MODELS: readonly PublishModel[] = ['publishers', 'subscribers', 'open'];

/** The values of a submitted data form (XEP-0004), by var; undefined when there is no form of that FORM_TYPE. */
export function formValues(x: Element | undefined, formType: string): Map<string, string[]> | undefined {
  if (!x) return undefined;
  const out = new Map<string, string[]>();
  for (const f of x.getChildren('field')) {
    if (!f.attrs.var) continue;
    out.set(f.attrs.var, f.getChildren('value').map((v) => v.getText()));
  }
  const ft = out.get('FORM_TYPE');
  if (!ft || ft[0] !== formType) throw new StanzaError('bad-request', `the form's FORM_TYPE must be ${formType}`);
  out.delete('FORM_TYPE');
  return out;
}

/**
 * A configuration changed by a form's fields; `bad` makes the error for a
 * field not understood or a value not taken (XEP-0060 §8.2.5.3:
 * not-acceptable; §7.1.5: precondition-not-met for publish-options).
 */
export function applyForm(base: NodeConfig, values: Map<string, string[]>, bad: (why: string) => StanzaError, service = false): NodeConfig {
  const c: NodeConfig = { ...base, rosterGroups: [...base.rosterGroups] };
  for (const [k, vs] of values) {
    const v = vs[0] ?? '';
    switch (k) {
      case 'pubsub#publish_model':
        // PEP: only the account publishes (XEP-0163 §4.1); a service's node chooses.
        if (!(service ? PUBLISH_MODELS : ['publishers']).includes(v as PublishModel)) throw bad(`publish model ${v} is not supported`);
        c.publishModel = v as PublishModel;
        break;
      case 'pubsub#access_model':
        if (!ACCESS.includes(v as AccessModel)) throw bad(`access model ${v} is not supported`);
        c.accessModel = v as AccessModel;
        break;
      case 'pubsub#persist_items': {
        const b = bool(v);
        if (b === undefined) throw bad('pubsub#persist_items is a boolean');
        c.persistItems = b;
        break;
      }
      case 'pubsub#max_items': {
        // XEP-0060 §16.4.3: 'max' is the service's own bound.
        const n = v === 'max' ? MAX_ITEMS : /^\d+$/.test(v) ? Number(v) : NaN;
        if (!(n >= 1 && n <= MAX_ITEMS)) throw bad(`pubsub#max_items is 1 to ${MAX_ITEMS}, or max`);
        c.maxItems = n;
        break;
      }
      case 'pubsub#send_last_published_item':
        if (!SEND_LAST.includes(v as SendLast)) throw bad(`pubsub#send_last_published_item ${v} is not supported`);
        c.sendLastPublishedItem = v as SendLast;
        break;
      case 'pubsub#notify_retract': {
        const b = bool(v);
        if (b === undefined) throw bad('pubsub#notify_retract is a boolean');
        c.notifyRetract = b;
        break;
      }
      case 'pubsub#roster_groups_allowed':
        c.rosterGroups = [...new Set(vs)].slice(0, 100);
        break;
      default:
        throw bad(`${k} is not supported`);
    }
  }
  return c;
}

/** The same configuration, as a form of the given type (§8.2.1: a form; §8.2.4 submits one). */
export function configForm(c: NodeConfig, service = false): Element {
  const x = new Element('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NODE_CONFIG);
  const field = (v: string, type: string, label: string, values: string[], options?: string[]) => {
    const f = x.c('field', { var: v, type, label });
    for (const o of options ?? []) f.c('option').c('value').t(o);
    for (const val of values) f.c('value').t(val);
  };
  field('pubsub#access_model', 'list-single', 'Who may subscribe and retrieve items', [c.accessModel], [...ACCESS]);
  field('pubsub#persist_items', 'boolean', 'Persist items', [c.persistItems ? '1' : '0']);
  field('pubsub#max_items', 'text-single', `Items kept (1 to ${MAX_ITEMS}, or max)`, [String(c.maxItems)]);
  field('pubsub#send_last_published_item', 'list-single', 'When to send the last published item', [c.sendLastPublishedItem], [...SEND_LAST]);
  field('pubsub#notify_retract', 'boolean', 'Notify subscribers when items are retracted', [c.notifyRetract ? '1' : '0']);
  field('pubsub#roster_groups_allowed', 'list-multi', 'Roster groups allowed (access model roster)', c.rosterGroups);
  if (service) field('pubsub#publish_model', 'list-single', 'Who may publish', [c.publishModel], [...PUBLISH_MODELS]);
  return x;
}

/** Whether the publish-options asked for hold for the node's configuration (§7.1.5). */
/** The fields of a configuration form, by the NodeConfig key each sets (applyForm). */
const FORM_KEYS: Record<string, keyof NodeConfig> = {
  'pubsub#publish_model': 'publishModel',
  'pubsub#access_model': 'accessModel',
  'pubsub#persist_items': 'persistItems',
  'pubsub#max_items': 'maxItems',
  'pubsub#send_last_published_item': 'sendLastPublishedItem',
  'pubsub#notify_retract': 'notifyRetract',
  'pubsub#roster_groups_allowed': 'rosterGroups',
};

/**
 * What publish-options require of an existing node (XEP-0060 §7.1.5, for
 * PublishOptions.require): the fields the form named, with the values
 * `applied` (applyForm of the same form) took from it.
 */
export function requiredBy(values: Map<string, string[]>, applied: NodeConfig): Partial<NodeConfig> {
  const out: Record<string, unknown> = {};
  for (const k of values.keys()) {
    const key = FORM_KEYS[k];
    if (key) out[key] = applied[key];
  }
  return out as Partial<NodeConfig>;
}

export function sameOptions(node: NodeConfig, wanted: NodeConfig): boolean {
  return node.accessModel === wanted.accessModel && node.publishModel === wanted.publishModel && node.persistItems === wanted.persistItems && node.maxItems === wanted.maxItems && node.sendLastPublishedItem === wanted.sendLastPublishedItem && node.notifyRetract === wanted.notifyRetract && node.rosterGroups.join('\n') === wanted.rosterGroups.join('\n');
}

/** The account a request is about: the 'to' of the iq (its bare JID), or the sender's own. */
function ownerOf(iq: Element, session: Session): string {
  if (iq.attrs.to !== undefined) {
    try {
      const j = parseJid(iq.attrs.to);
      if (j.local && !j.resource) return j.local;
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
    }
    throw new StanzaError('bad-request');
  }
  if (!session.username) throw new StanzaError('forbidden', 'anonymous sessions have no PEP service');
  return session.username;
}

export const nodeOf = (el: Element): string => {
  const node = el.attrs.node;
  // A request about a node must name it: XEP-0060 says nodeid-required for a retract (§7.2.3.3) or a configure
  // (§8.2.3.3) without one; so for the others (a publish, an items request, a purge, a delete).
  if (typeof node !== 'string' || node === '') throw new PubsubError('bad-request', 'nodeid-required');
  if (node.length > MAX_NAME) throw new StanzaError('not-acceptable', `node names are at most ${MAX_NAME} characters`);
  return node;
};

/**
 * The XEP-0060 feature of each request this service does not do, by
 * namespace and element: what <unsupported/> names (its 'feature' is one of
 * the features XEP-0060's schema lists).
 */
const UNSUPPORTED: Record<string, Record<string, string>> = {
  [NS_PUBSUB]: { subscribe: 'subscribe', unsubscribe: 'subscribe', options: 'subscription-options', default: 'subscription-options', subscriptions: 'retrieve-subscriptions', affiliations: 'retrieve-affiliations' },
  [NS_PUBSUB_OWNER]: { subscriptions: 'manage-subscriptions', affiliations: 'modify-affiliations' },
};

/** A request this service does not do: feature-not-implemented with <unsupported/> naming its feature, or bad-request for one that is no pubsub request. */
export function notDone(ns: string, name: string | undefined): StanzaError {
  const feature = name === undefined ? undefined : UNSUPPORTED[ns]?.[name];
  if (!feature) return new StanzaError('bad-request', name === undefined ? 'no request in <pubsub/>' : `<${name}/> is not a request this service knows`);
  return new PubsubError('feature-not-implemented', 'unsupported', `<${name}/> is not supported by this service`, feature);
}

const bareOf = (jid: string): string => {
  const slash = jid.indexOf('/');
  return slash < 0 ? jid : jid.slice(0, slash);
};

/** A JID as the server compares it (RFC 7622 §3: each part prepared), or undefined when it is not one. */
function normalJid(jid: string | undefined): string | undefined {
  if (jid === undefined) return undefined;
  try {
    return fullJid(parseJid(jid));
  } catch (err) {
    if (err instanceof JidError) return undefined;
    throw err;
  }
}

/** The most bytes of items one items answer holds (the default largest stanza a server takes, XMPP_MAX_STANZA_BYTES). */
/** The most JIDs on one PEP node's whitelist. */
export const MAX_WHITELIST = 1000;

export const MAX_RESULT_BYTES = 256 * 1024;
export const NS_RSM = 'http://jabber.org/protocol/rsm';

/** One notification (XEP-0060 §7.1.2.1): a headline from the owner's bare JID. */
export function event(from: string, inner: Element): Element {
  const m = new Element('message', { type: 'headline', from, id: randomBytes(9).toString('base64url') });
  m.c('event', { xmlns: NS_PUBSUB_EVENT }).cnode(inner);
  return m;
}

/**
 * A last published item sent after its publish (to a new subscriber, or a
 * newly available resource) says when it was published: XEP-0060 §6.1.7
 * and XEP-0163 §4.3.4 (SHOULD), as XEP-0203 delayed delivery from the
 * service that kept it (`from`: the owner's bare JID for PEP, the service's
 * domain), the stamp in UTC (XEP-0082). A live notification has none.
 */
export function delayed(m: Element, from: string, published: number): Element {
  m.c('delay', { xmlns: NS_DELAY, from, stamp: new Date(published).toISOString() });
  return m;
}

/** An <items/> of the given namespace's parent (pubsub or pubsub#event) holding stored items. */
export function itemsEl(ns: string, node: string, items: PepItem[]): Element {
  const el = parseXml(`<items xmlns='${ns}' node='${escapeXML(node)}'>${items.map((it) => `<item id='${escapeXML(it.id)}'>${it.xml}</item>`).join('')}</items>`) as Element;
  delete el.attrs.xmlns;
  return el;
}
const itemsEvent = (node: string, items: PepItem[]): Element => itemsEl(NS_PUBSUB_EVENT, node, items);


/**
 * How a PEP event is marked for the router (Only `notify …`): `notify KSEQ NODE`,
 * K its kind, SEQ the publish its item comes from (PepStore seq; empty for
 * a retraction, a purge, a deletion), NODE the node. Kinds: 'c' a
 * notification to a contact's resource, which its caps must ask for
 * (XEP-0163 §4.3); 'o' a notification to a resource of the owner, which
 * its caps must ask for once they are known; 'l' a last published item on a subscription's approval.
 */
type NotifyKind = 'c' | 'o' | 'l';
const notifyOnly = (kind: NotifyKind, node: string, seq = ''): Only => `notify ${kind}${seq} ${node}`;
const parseNotify = (what: string): { kind: NotifyKind; seq: string; node: string } => {
  const m = /^([col])(\d*) ([\s\S]*)$/.exec(what);
  // Not of this form (none is made): a contact's notification of that node, as the mark once was.
  return m ? { kind: m[1] as NotifyKind, seq: m[2], node: m[3] } : { kind: 'c', seq: '', node: what };
};

/** What a session was handed of one node since it became available: how many events (sendLast reads again when that changes), and the publishes its last items came from, the newest last. */
interface Handed {
  n: number;
  seqs: string[];
}
/** Publishes remembered per node: a few owners may publish to one node name (each contact's avatar) around one session's arrival. */
const HANDED_SEQS = 4;

/** What the module knows of a session of this worker: its caps, and whether it sent available presence. */
interface Seen {
  caps?: Caps;
  /** The nodes it asked notifications of, once known (from the cache, or its own unverified answer). */
  nodes?: ReadonlySet<string>;
  available: boolean;
  /** It became available and has not had the last published items yet: they wait for its caps (XEP-0163 §4.3.3). */
  lastDue?: boolean;
  /** How many times it became available (sendLast stops when it went away and came back meanwhile). */
  arrivals?: number;
  /**
   * What it was handed, by node, since it became available: for the nodes
   * its caps ask for, and while its caps are not yet known, the owner's
   * notifications of any node (those go to it whatever its caps); at most
   * MAX_NOTIFY_NODES nodes and MAX_NOTIFY_BYTES of their names, as a ver's
   * nodes. A publish is sent to it once: a last item it was already
   * notified of is not sent (sendLast, approvals), nor a notification of
   * the last item it was sent.
   */
  handed?: Map<string, Handed>;
  /** The bytes of the names in `handed`. */
  handedBytes?: number;
}

/** The session was handed an event of `node` from publish `seq` (or a retraction, a purge, a deletion: ''); false when past the bounds, and nothing is kept. */
function hand(s: Seen, node: string, seq: string): boolean {
  const m = (s.handed ??= new Map());
  let h = m.get(node);
  if (!h) {
    const bytes = (s.handedBytes ?? 0) + Buffer.byteLength(node, 'utf8');
    if (m.size >= MAX_NOTIFY_NODES || bytes > MAX_NOTIFY_BYTES) return false;
    s.handedBytes = bytes;
    m.set(node, (h = { n: 0, seqs: [] }));
  }
  h.n++;
  if (seq !== '') {
    h.seqs.push(seq);
    if (h.seqs.length > HANDED_SEQS) h.seqs.shift();
  }
  return true;
}

/** Whether the session was handed publish `seq` of `node` already. */
const hadPublish = (s: Seen, node: string, seq: string): boolean => seq !== '' && (s.handed?.get(node)?.seqs.includes(seq) ?? false);

/** The session's caps name these nodes (now known): what was kept of others while they were asked goes. */
function learn(s: Seen, nodes: ReadonlySet<string>): void {
  s.nodes = nodes;
  if (!s.handed) return;
  for (const node of s.handed.keys()) {
    if (nodes.has(node)) continue;
    s.handed.delete(node);
    s.handedBytes = (s.handedBytes ?? 0) - Buffer.byteLength(node, 'utf8');
  }
}

/** It became available again, or went unavailable: what it was handed before counts no more (XEP-0163 §4.3.3: a newly available resource gets the last items). */
function forget(s: Seen): void {
  s.handed = undefined;
  s.handedBytes = undefined;
}

/** Whether an element states its own namespace and declares every prefix it and its descendants use (xml: aside). */
export function selfContained(el: Element, declared: ReadonlySet<string> = new Set(), top = true): boolean {
  if (top && typeof el.attrs.xmlns !== 'string') return false;
  const scope = new Set(declared);
  for (const a of Object.keys(el.attrs)) if (a.startsWith('xmlns:')) scope.add(a.slice(6));
  const used = (name: string) => {
    const colon = name.indexOf(':');
    if (colon < 0) return true;
    const prefix = name.slice(0, colon);
    return prefix === 'xml' || prefix === 'xmlns' || scope.has(prefix);
  };
  if (!used(el.name)) return false;
  for (const a of Object.keys(el.attrs)) if (!used(a)) return false;
  return el.children.every((c) => typeof c === 'string' || selfContained(c, scope, false));
}

/**
 * What changed on an account's node, for modules that keep something in step
 * with it (XEP-0398 avatars, XEP-0402 §5 bookmarks); `by`: the module that
 * made the change through the api (undefined for a client's), so that it
 * does not take its own change back.
 */
export type PepChange = { owner: string; node: string; by?: string } & ({ kind: 'publish'; item: PepItem } | { kind: 'retract'; ids: string[] } | { kind: 'purge' } | { kind: 'delete' });

/** The PEP service as other modules use it: changes made on the account's behalf (notified like a client's), and the changes clients make. */
export interface PepApi {
  /** Publishes as the account would (its node created with `create` if missing) and notifies; the listeners are told. */
  publish(owner: string, node: string, item: PepItem, opts?: { create?: NodeConfig; by?: string }): Promise<void>;
  /** Retracts as the account would, with notifications as the node says; the listeners are told of what was there. */
  retract(owner: string, node: string, ids: string[], by?: string): Promise<void>;
  /** The node's items, oldest first (those with the given ids, or all); none when there is no such node. */
  items(owner: string, node: string, ids?: string[]): Promise<PepItem[]>;
  /**
   * Called after each change to an account's nodes, whoever made it; what it
   * returns is awaited before the client that made the change is answered
   * (what it keeps in step is in step by then). Its failure is logged, and
   * changes nothing for the client.
   */
  listen(fn: (change: PepChange) => void | Promise<void>): void;
}

/**
 * The item of a <publish/> as it is kept: its id (one made when it has
 * none) and its one payload, serialised; a StanzaError for what XEP-0060
 * refuses. Both PEP and the pubsub service keep items and their payloads.
 */
export function publishedItem(p: Element, maxItemBytes: number): PepItem {
  const items = p.getChildren('item');
  // §7.1.3.6: the nodes here persist items and carry payloads: an item is required, and a payload in it.
  if (items.length === 0) throw new PubsubError('bad-request', 'item-required');
  if (items.length > 1) throw new StanzaError('bad-request', 'publish one item at a time');
  const payloads = items[0].children.filter(isEl);
  if (payloads.length === 0) throw new PubsubError('bad-request', 'payload-required');
  // §7.1.3.5: more than one payload.
  if (payloads.length > 1) throw new PubsubError('bad-request', 'invalid-payload', 'an item carries exactly one payload');
  const id = items[0].attrs.id || randomBytes(12).toString('base64url');
  if (id.length > MAX_NAME) throw new StanzaError('not-acceptable', `item ids are at most ${MAX_NAME} characters`);
  // The payload is stored and sent on alone: it must say its own namespace and declare every prefix it uses
  // (what an ancestor declared is not kept with it, and readers would get XML they cannot parse).
  if (!selfContained(payloads[0])) throw new PubsubError('bad-request', 'invalid-payload', 'the payload must carry its own xmlns and declare every prefix it uses');
  const xml = payloads[0].toString();
  // §7.1.3.4 payload-too-big.
  if (Buffer.byteLength(xml, 'utf8') > maxItemBytes) throw new PubsubError('not-acceptable', 'payload-too-big', `an item may hold at most ${maxItemBytes} bytes`);
  return { id, xml };
}

export function pep(o: PepOptions): ServerModule & { cache: CapsCache; api: PepApi } {
  const maxNodes = o.maxNodes ?? MAX_NODES;
  const maxItemBytes = o.maxItemBytes ?? MAX_ITEM_BYTES;
  const maxAccountBytes = o.maxAccountBytes ?? MAX_ACCOUNT_BYTES;
  const cache = new CapsCache();
  const remote = o.remote ?? new MemoryRemoteResources();
  const seen = new WeakMap<Session, Seen>();
  /** Caps queries in flight, by ver: one per ver on this worker, whatever the number of sessions advertising it. */
  const asking = new Map<string, Promise<ReadonlySet<string> | undefined>>();
  /** Caps lookups in flight by the JID they are for (normalised), and their number: bounded (MAX_CAPS_LOOKUPS_PER_JID, MAX_CAPS_LOOKUPS). */
  const lookups = new Map<string, number>();
  let lookupsInFlight = 0;
  /** A slot for a lookup for `jid`, its release; undefined past a bound. */
  const admit = (jid: string): (() => void) | undefined => {
    const k = normalJid(jid) ?? jid;
    const n = lookups.get(k) ?? 0;
    if (n >= MAX_CAPS_LOOKUPS_PER_JID || lookupsInFlight >= MAX_CAPS_LOOKUPS) {
      log.debug('PEP: caps lookups past their bound; none for this presence', { jid, forJid: n, inFlight: lookupsInFlight });
      return undefined;
    }
    lookups.set(k, n + 1);
    lookupsInFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      lookupsInFlight--;
      const left = (lookups.get(k) ?? 1) - 1;
      if (left > 0) lookups.set(k, left);
      else lookups.delete(k);
    };
  };
  /** The server's disco#info requests to clients, by id: whom each was asked of (a normalised full JID), and what takes the answer. */
  const waiting = new Map<string, { jid: string; done: (answer: Element) => void }>();
  /** An answer to one of them: taken only from the entity it was asked of (its 'from' as the server stamped or checked it). */
  const answered = (el: Element): boolean => {
    const w = waiting.get(el.attrs.id);
    if (!w || normalJid(el.attrs.from) !== w.jid) return false;
    w.done(el);
    return true;
  };
  const listeners: ((change: PepChange) => void | Promise<void>)[] = [];
  const changed = async (change: PepChange): Promise<void> => {
    await Promise.all(
      listeners.map(async (fn) => {
        try {
          await fn(change);
        } catch (err) {
          log.warn('PEP change listener failed', { owner: change.owner, node: change.node, err: String(err) });
        }
      }),
    );
  };

  /**
   * Whether `requester` (a bare JID) may see the owner's node (§4.5; XEP-0163
   * §4.3); `members`: a whitelist's members as read before (the node is
   * being deleted, its affiliations with it), else read from the store.
   */
  const allowed = async (owner: string, node: string, config: NodeConfig, requester: string, item?: RosterItem, members?: ReadonlySet<string>): Promise<boolean> => {
    if (requester === `${owner}@${o.domain}`) return true;
    if (config.accessModel === 'open') return true;
    // §4.5: the owner and those it made members (§8.9).
    if (config.accessModel === 'whitelist') return members ? members.has(requester) : (await o.store.affiliationsOf(owner, requester)).some((a) => a.node === node && isMember(a.affiliation));
    const it = item ?? (await o.roster.item(owner, requester));
    if (!it) return false;
    if (config.accessModel === 'presence') return it.subscription === 'from' || it.subscription === 'both';
    return it.groups.some((g) => config.rosterGroups.includes(g));
  };

  /** XEP-0060 §6.5.9 (and §4.5): why a requester may not see a node. */
  const refusal = (config: NodeConfig): StanzaError => {
    if (config.accessModel === 'presence') return new PubsubError('not-authorized', 'presence-subscription-required');
    if (config.accessModel === 'roster') return new PubsubError('not-authorized', 'not-in-roster-group');
    return new PubsubError('not-allowed', 'closed-node');
  };

  /**
   * An event to whoever should have it (XEP-0163 §4.3): every available
   * resource of the owner, and the available resources of contacts with a
   * presence subscription the access model lets in, those whose client
   * asked for the node (filtered where each session lives).
   */
  const notify = async (owner: string, node: string, config: NodeConfig, inner: Element, members?: ReadonlySet<string>, seq?: string): Promise<void> => {
    const r = o.routing();
    const ownerBare = `${owner}@${o.domain}`;
    const el = event(ownerBare, inner);
    for (const rec of await r.available(ownerBare)) r.deliver(rec, withTo(el, rec.jid), notifyOnly('o', node, seq));
    const { items } = await o.roster.get(owner);
    const others = new Set<string>();
    for (const it of items) {
      if (it.subscription !== 'from' && it.subscription !== 'both') continue;
      if (!(await allowed(owner, node, config, it.jid, it, members))) continue;
      // Contacts of other servers: below, by the resources their server told us of.
      if (!it.jid.endsWith(`@${o.domain}`)) {
        others.add(it.jid);
        continue;
      }
      for (const rec of await r.available(it.jid)) {
        if (await o.blocked?.(ownerBare, rec.jid)) continue;
        r.deliver(rec, withTo(el, rec.jid), notifyOnly('c', node, seq));
      }
    }
    if (others.size > 0) await notifyRemote(owner, node, el, (jid) => others.has(jid));
  };

  /**
   * XEP-0163 §4.3.2 for contacts of other servers: one notification to each
   * full JID of theirs (`contact` says which bare JIDs may have it) whose
   * caps ask for the node, through the router to its server; in JID order.
   */
  const notifyRemote = async (owner: string, node: string, el: Element, contact: (bare: string) => boolean): Promise<void> => {
    const r = o.routing();
    const ownerBare = `${owner}@${o.domain}`;
    const resources = (await remote.list(owner)).filter((x) => x.caps !== '' && contact(bareOf(x.jid))).sort((a, b) => (a.jid < b.jid ? -1 : a.jid > b.jid ? 1 : 0));
    for (const x of resources) {
      if (!(await knownNodes(x.caps))?.has(node) || (await o.blocked?.(ownerBare, x.jid))) continue;
      await r.routeInternal(withTo(el, x.jid));
    }
  };
  const withTo = (el: Element, to: string): Element => {
    const m = new Element('message', { ...el.attrs, to });
    for (const c of el.children) m.cnode(c as Element);
    return m;
  };
  /** notify, not awaited; `seq`: the publish an item event comes from (PepStore.publish). */
  const notifyLater = (owner: string, node: string, config: NodeConfig, inner: Element, members?: ReadonlySet<string>, seq?: string): void => {
    notify(owner, node, config, inner, members, seq).catch((err: unknown) => log.warn('PEP notification not sent', { owner, node, err: String(err) }));
  };

  // --- requests -----------------------------------------------------------

  const requireOwner = (owner: string, session: Session): void => {
    // XEP-0163 §4.1: only the account publishes to (and manages) its own service.
    if (owner !== session.username) throw new StanzaError('forbidden', "only the account's own PEP nodes can be changed");
  };

  const publish = async (owner: string, pubsub: Element, p: Element): Promise<Element> => {
    const node = nodeOf(p);
    const { id, xml } = publishedItem(p, maxItemBytes);
    const optionsEl = pubsub.getChild('publish-options')?.getChild('x', NS_DATA);
    const options = formValues(optionsEl, PUBLISH_OPTIONS);
    const precondition = (why: string) => new PubsubError('conflict', 'precondition-not-met', why);
    // §7.1.5: options that do not hold for an existing node refuse the publish (checked by the store in the
    // publish's own transaction, so that no configure comes between); a new node takes them.
    const create = options ? applyForm(DEFAULT_CONFIG, options, precondition) : DEFAULT_CONFIG;
    const require = options ? requiredBy(options, create) : undefined;
    let config: NodeConfig;
    let seq: string;
    try {
      ({ config, seq } = await o.store.publish(owner, node, { id, xml }, create, maxNodes, { require, maxBytes: maxAccountBytes }));
    } catch (err) {
      if ((err as Error).name === 'PepNodesFullError') throw new StanzaError('policy-violation', `an account may have at most ${maxNodes} PEP nodes`);
      // XEP-0060 has no condition for a service's storage bound (§7.1.3.4's payload-too-big is about the one item):
      // a local service policy, RFC 6120 §8.3.3.12, as for the number of nodes.
      if ((err as Error).name === 'PepQuotaError') throw new StanzaError('policy-violation', `an account may keep at most ${maxAccountBytes} bytes of PEP items; retract or purge some first`);
      if ((err as Error).name === 'PepPreconditionError') throw precondition('the node is configured otherwise');
      throw err;
    }
    notifyLater(owner, node, config, itemsEvent(node, [{ id, xml }]), undefined, seq);
    await changed({ owner, node, kind: 'publish', item: { id, xml } });
    const out = new Element('pubsub', { xmlns: NS_PUBSUB });
    out.c('publish', { node }).c('item', { id });
    return out;
  };

  const retract = async (owner: string, r: Element): Promise<null> => {
    const node = nodeOf(r);
    const asked = r.getChildren('item').map((i): unknown => i.attrs.id);
    // §7.2.3.4: an item is required, and each says its id.
    if (asked.length === 0 || asked.some((i) => typeof i !== 'string' || i === '')) throw new PubsubError('bad-request', 'item-required');
    const ids = asked as string[];
    const config = await o.store.config(owner, node);
    // §7.2.3.2: no such node, or no such item.
    if (!config) throw new StanzaError('item-not-found');
    const gone = await o.store.retract(owner, node, ids);
    if (gone.length === 0) throw new StanzaError('item-not-found');
    await changed({ owner, node, kind: 'retract', ids: gone });
    // §7.2.2.1: notify='true' asks for notifications; else the node's pubsub#notify_retract.
    const tell = r.attrs.notify === undefined ? config.notifyRetract : bool(r.attrs.notify) === true;
    if (tell) {
      const inner = new Element('items', { node });
      for (const id of gone) inner.c('retract', { id });
      notifyLater(owner, node, config, inner);
    }
    return null;
  };

  const items = async (owner: string, session: Session | undefined, requester: string, i: Element): Promise<Element> => {
    const node = nodeOf(i);
    const config = await o.store.config(owner, node);
    // §6.5.9.11: no such node.
    if (!config) throw new StanzaError('item-not-found');
    if (session?.username !== owner && !(await allowed(owner, node, config, requester))) throw refusal(config);
    const ids = i.getChildren('item').map((x) => x.attrs.id).filter((x): x is string => typeof x === 'string');
    let max: number | undefined;
    if (i.attrs.max_items !== undefined) {
      if (!/^\d+$/.test(i.attrs.max_items) || Number(i.attrs.max_items) < 1) throw new StanzaError('bad-request', 'max_items is a positive integer');
      max = Math.min(Number(i.attrs.max_items), MAX_ITEMS);
    }
    const got = await o.store.items(owner, node, ids.length > 0 ? { ids } : { max });
    // §6.5.8: asked by id, and not there.
    if (ids.length > 0 && got.length === 0) throw new StanzaError('item-not-found');
    // One answer holds at most MAX_RESULT_BYTES of items, the newest that fit (a node may hold far more than a
    // reader takes in one stanza); XEP-0060 §6.5.4: a partial answer says, with RSM's <count/>, how many there are.
    let bytes = 0;
    let from = got.length;
    while (from > 0 && bytes + Buffer.byteLength(got[from - 1].xml, 'utf8') <= MAX_RESULT_BYTES) bytes += Buffer.byteLength(got[--from].xml, 'utf8');
    if (from === got.length && got.length > 0) from--; // the newest alone, however big (it was accepted at publish)
    const out = new Element('pubsub', { xmlns: NS_PUBSUB });
    out.cnode(itemsEl(NS_PUBSUB, node, got.slice(from)));
    if (from > 0) out.c('set', { xmlns: NS_RSM }).c('count').t(String(got.length));
    return out;
  };

  const pubsubSet: IqHandler = async (iq, session) => {
    const owner = ownerOf(iq, session);
    const pubsub = iq.getChild('pubsub', NS_PUBSUB);
    const action = pubsub?.children.filter(isEl).find((c) => c.name !== 'publish-options' && c.name !== 'configure');
    if (!pubsub || !action) throw new StanzaError('bad-request');
    switch (action.name) {
      case 'publish':
        requireOwner(owner, session);
        return publish(owner, pubsub, action);
      case 'retract':
        requireOwner(owner, session);
        return retract(owner, action);
      case 'create': {
        requireOwner(owner, session);
        const node = nodeOf(action);
        const configure = pubsub.getChild('configure');
        // XEP-0060 §8.1.3: the form's <configure/> MUST NOT name a node (the <create/> does), else bad-request.
        if (configure?.attrs.node !== undefined) throw new StanzaError('bad-request', 'the <configure/> of a create names no node');
        const form = formValues(configure?.getChild('x', NS_DATA), NODE_CONFIG);
        // §8.1.2: an access model the service does not support MUST be not-acceptable with <unsupported-access-model/>.
        const access = form?.get('pubsub#access_model')?.[0];
        if (access !== undefined && !ACCESS.includes(access as AccessModel)) throw new PubsubError('not-acceptable', 'unsupported-access-model', `access model ${access} is not supported`);
        const config = form ? applyForm(DEFAULT_CONFIG, form, (why) => new StanzaError('not-acceptable', why)) : DEFAULT_CONFIG;
        let made: boolean;
        try {
          made = await o.store.create(owner, node, config, maxNodes);
        } catch (err) {
          if ((err as Error).name === 'PepNodesFullError') throw new StanzaError('policy-violation', `an account may have at most ${maxNodes} PEP nodes`);
          throw err;
        }
        // §8.1.1: the node exists (MUST be conflict).
        if (!made) throw new StanzaError('conflict', `${node} exists`);
        return null;
      }
      default:
        // Subscriptions are implicit in PEP (XEP-0163 §4.3); the rest is not implemented.
        throw notDone(NS_PUBSUB, action.name);
    }
  };

  const pubsubGet: IqHandler = async (iq, session) => {
    const owner = ownerOf(iq, session);
    const action = iq.getChild('pubsub', NS_PUBSUB)?.children.filter(isEl)[0];
    if (action?.name !== 'items') throw notDone(NS_PUBSUB, action?.name);
    const requester = session.username ? `${session.username}@${o.domain}` : bareOf(session.jid!);
    return items(owner, session, requester, action);
  };

  const ownerSet: IqHandler = async (iq, session) => {
    const owner = ownerOf(iq, session);
    requireOwner(owner, session);
    const action = iq.getChild('pubsub', NS_PUBSUB_OWNER)?.children.filter(isEl)[0];
    if (!action) throw new StanzaError('bad-request');
    if (action.name !== 'configure' && action.name !== 'purge' && action.name !== 'delete' && action.name !== 'affiliations') throw notDone(NS_PUBSUB_OWNER, action.name);
    const node = nodeOf(action);
    switch (action.name) {
      case 'affiliations': {
        // §8.9.2: the whitelist of a node (access model whitelist): members, or none. Only the account publishes to
        // its PEP nodes (XEP-0163 §4.1), so publisher, owner and outcast are not taken.
        if (!(await o.store.config(owner, node))) throw new StanzaError('item-not-found');
        const changes = action.getChildren('affiliation').map((a) => {
          let jid: string;
          try {
            const j = parseJid(a.attrs.jid ?? '');
            jid = j.local ? `${j.local}@${j.domain}` : j.domain;
          } catch {
            throw new StanzaError('jid-malformed', `${a.attrs.jid ?? ''} is not a JID`);
          }
          const aff = a.attrs.affiliation;
          // §8.9.2.4: an affiliation the service does not support is unsupported, with its feature.
          if (aff === 'publisher' || aff === 'outcast' || aff === 'publish-only') throw new PubsubError('feature-not-implemented', 'unsupported', 'a PEP node takes member and none', `${aff}-affiliation`);
          if (aff !== 'member' && aff !== 'none') throw new StanzaError('not-acceptable', 'a PEP node takes member and none');
          if (jid === `${owner}@${o.domain}`) throw new StanzaError('not-acceptable', "the account's own affiliation is owner");
          return { jid, affiliation: a.attrs.affiliation as 'member' | 'none' };
        });
        if (changes.length > MAX_WHITELIST) throw new StanzaError('policy-violation', `at most ${MAX_WHITELIST} affiliations at once`);
        if (changes.some((c) => c.affiliation === 'member') && (await o.store.affiliations(owner, node)).length + changes.length > MAX_WHITELIST) throw new StanzaError('policy-violation', `a node's whitelist holds at most ${MAX_WHITELIST} JIDs`);
        for (const c of changes) await o.store.setAffiliation(owner, node, c.jid, c.affiliation);
        return null;
      }
      case 'configure': {
        const x = action.getChild('x', NS_DATA);
        // §8.2.6: a cancelled form changes nothing.
        if (x?.attrs.type === 'cancel') return null;
        const config = await o.store.config(owner, node);
        if (!config) throw new StanzaError('item-not-found');
        const values = formValues(x, NODE_CONFIG);
        if (!values) throw new StanzaError('bad-request', 'a configuration form is required');
        const next = applyForm(config, values, (why) => new StanzaError('not-acceptable', why));
        if (!(await o.store.configure(owner, node, next))) throw new StanzaError('item-not-found');
        return null;
      }
      case 'purge': {
        const config = await o.store.config(owner, node);
        if (!config || !(await o.store.purge(owner, node))) throw new StanzaError('item-not-found');
        // §8.5.2: subscribers are told.
        notifyLater(owner, node, config, new Element('purge', { node }));
        await changed({ owner, node, kind: 'purge' });
        return null;
      }
      case 'delete': {
        const config = await o.store.config(owner, node);
        if (!config) throw new StanzaError('item-not-found');
        // §8.4.2: subscribers are told; those of a whitelist node are its members, whose affiliations go with the
        // node: read before it is removed, for the notification that follows.
        const members = config.accessModel === 'whitelist' ? new Set((await o.store.affiliations(owner, node)).filter((a) => isMember(a.affiliation)).map((a) => a.jid)) : undefined;
        if (!(await o.store.remove(owner, node))) throw new StanzaError('item-not-found');
        notifyLater(owner, node, config, new Element('delete', { node }), members);
        await changed({ owner, node, kind: 'delete' });
        return null;
      }
      default:
        throw notDone(NS_PUBSUB_OWNER, action.name);
    }
  };

  const ownerGet: IqHandler = async (iq, session) => {
    const owner = ownerOf(iq, session);
    requireOwner(owner, session);
    const action = iq.getChild('pubsub', NS_PUBSUB_OWNER)?.children.filter(isEl)[0];
    const out = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
    if (action?.name === 'default') {
      // §8.3: the default configuration.
      out.c('default').cnode(configForm(DEFAULT_CONFIG));
      return out;
    }
    if (action?.name !== 'configure' && action?.name !== 'affiliations') throw notDone(NS_PUBSUB_OWNER, action?.name);
    const node = nodeOf(action);
    const config = await o.store.config(owner, node);
    if (!config) throw new StanzaError('item-not-found');
    if (action.name === 'affiliations') {
      // §8.9.1: the owner, and the members of the whitelist.
      const affs = out.c('affiliations', { node });
      affs.c('affiliation', { jid: `${owner}@${o.domain}`, affiliation: 'owner' });
      for (const a of await o.store.affiliations(owner, node)) affs.c('affiliation', { jid: a.jid, affiliation: a.affiliation });
      return out;
    }
    out.c('configure', { node }).cnode(configForm(config));
    return out;
  };

  // Another server's user: items of an open node, or one the owner's roster lets it see.
  const remoteGet: RemoteIqHandler = async (iq) => {
    const j = parseJid(iq.attrs.to);
    const action = iq.getChild('pubsub', NS_PUBSUB)?.children.filter(isEl)[0];
    if (action?.name !== 'items') throw notDone(NS_PUBSUB, action?.name);
    // The roster keeps JIDs prepared (RFC 7622 §3): the sender's, as its server spelt it, is compared once prepared too.
    let requester: string;
    try {
      requester = bareJid(parseJid(iq.attrs.from));
    } catch (err) {
      if (err instanceof JidError) throw new StanzaError('jid-malformed');
      throw err;
    }
    return items(j.local, undefined, requester, action);
  };
  const remoteForbidden: RemoteIqHandler = () => {
    throw new StanzaError('forbidden', "only the account's own PEP nodes can be changed");
  };

  // --- caps and last published items ---------------------------------------

  /**
   * Whom caps are asked of: a session of this worker, or a resource of
   * another server's (reached through the router); `own` takes an answer
   * that does not verify, trusted for that entity alone (none for a remote one).
   */
  interface Asked {
    jid: string;
    /** Another server's: its answer may come in on any worker (Router.requestId names this one). */
    remote?: boolean;
    send(iq: Element): void;
    own?(nodes: ReadonlySet<string>): void;
  }
  const askedOf = (session: Session, caps: Caps): Asked => ({
    jid: session.jid!,
    send: (iq) => session.send(iq),
    own: (nodes) => {
      const s = seen.get(session);
      if (s && s.caps === caps) learn(s, nodes);
    },
  });

  /** The nodes an entity asked notifications of: from this worker's cache, the shared one, or asked of the entity (once per ver on this worker). */
  const nodesFor = (target: Asked, caps: Caps): Promise<ReadonlySet<string> | undefined> => {
    const known = cache.get(caps);
    if (known) return Promise.resolve(known);
    const key = capsKey(caps);
    const shared = asking.get(key);
    // Another entity's question: its answer, if verified; if not, this one is asked for its own (within its bounds).
    if (shared) {
      return shared.then((nodes) => {
        if (nodes) return nodes;
        const release = admit(target.jid);
        return release ? askCaps(target, caps).finally(release) : undefined;
      });
    }
    const release = admit(target.jid);
    if (!release) return Promise.resolve(undefined);
    const p = fromCluster(caps)
      .then((nodes) => nodes ?? askCaps(target, caps))
      .finally(() => {
        asking.delete(key);
        release();
      });
    asking.set(key, p);
    return p;
  };

  /** The nodes of a verified ver, as a remote resource's caps are kept (capsKey): this worker's cache, or the shared one; undefined when neither knows it. */
  const knownNodes = async (key: string): Promise<ReadonlySet<string> | undefined> => {
    const caps = capsOfKey(key);
    if (!caps) return undefined;
    return cache.get(caps) ?? (await fromCluster(caps));
  };

  /** A ver another worker (or node) verified, kept here too; undefined when there is none or it cannot be read. */
  const fromCluster = async (caps: Pick<Caps, 'hash' | 'ver'>): Promise<ReadonlySet<string> | undefined> => {
    if (!o.sharedCaps) return undefined;
    const nodes = await o.sharedCaps.get(caps).catch((err: unknown) => {
      log.debug('PEP: shared caps not read', { err: String(err) });
      return undefined;
    });
    if (nodes) cache.set(caps, nodes);
    return nodes;
  };

  /** XEP-0115 §6.3: disco#info of node#ver asked of the client; verified (§5.4) before it is cached for others. */
  const askCaps = async (target: Asked, caps: Caps): Promise<ReadonlySet<string> | undefined> => {
    // A remote client's answer comes in wherever its server's stream to us does: the id names this worker.
    const id = target.remote ? o.routing().requestId() : `caps-${randomBytes(9).toString('base64url')}`;
    const answer = new Promise<Element | undefined>((resolve) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        resolve(undefined);
      }, CAPS_TIMEOUT_MS);
      timer.unref();
      waiting.set(id, {
        jid: normalJid(target.jid) ?? '',
        done: (el) => {
          clearTimeout(timer);
          waiting.delete(id);
          resolve(el);
        },
      });
    });
    const iq = new Element('iq', { type: 'get', id, from: o.domain, to: target.jid });
    iq.c('query', { xmlns: NS_DISCO_INFO, node: `${caps.node}#${caps.ver}` });
    target.send(iq);
    const el = await answer;
    const query = el?.attrs.type === 'result' ? el.getChild('query', NS_DISCO_INFO) : undefined;
    if (!query) return undefined;
    const nodes = notifyNodes(query);
    // Past the bounds: no notifications for this session, nothing kept.
    if (!nodes) return undefined;
    if (verifies(caps, query)) {
      cache.set(caps, nodes);
      o.sharedCaps?.set(caps, nodes).catch((err: unknown) => log.debug('PEP: shared caps not written', { err: String(err) }));
    } else {
      // Not what the ver says: this entity's own answer, trusted for it alone.
      target.own?.(nodes);
      return undefined;
    }
    return nodes;
  };

  /**
   * The last published item of each node `session` may see and asked for
   * (XEP-0163 §4.3.4 on presence; XEP-0060 pubsub#send_last_published_item).
   * Live notifications flow while these are read: an item read while an
   * event of its node reached the session is read again, so that what
   * follows a notification is never older than it; and a publish the
   * session was handed already (its notification came first) is not sent
   * again, nor its notification after it (the notify hook): one publish,
   * one copy.
   */
  const sendLast = async (session: Session, s: Seen, nodes: ReadonlySet<string>): Promise<void> => {
    if (nodes.size === 0 || !session.username) return;
    const events = (node: string) => s.handed?.get(node)?.n ?? 0;
    const arrival = s.arrivals;
    const me = `${session.username}@${o.domain}`;
    const { items: roster } = await o.roster.get(session.username);
    // Its own nodes, and those of every local contact whose presence it receives.
    const owners = [session.username, ...roster.filter((i) => (i.subscription === 'to' || i.subscription === 'both') && i.jid.endsWith(`@${o.domain}`)).map((i) => i.jid.slice(0, i.jid.indexOf('@')))];
    for (const owner of owners) {
      for (const { node, config } of await o.store.nodes(owner)) {
        if (!nodes.has(node) || config.sendLastPublishedItem !== 'on_sub_and_presence') continue;
        if (!(await allowed(owner, node, config, me)) || (owner !== session.username && (await o.blocked?.(`${owner}@${o.domain}`, session.jid!)))) continue;
        let before: number;
        let last: Published | undefined;
        let reads = 0;
        do {
          before = events(node);
          last = await o.store.last(owner, node);
        } while (events(node) !== before && ++reads < MAX_LAST_READS);
        // Gone unavailable meanwhile (and maybe back, with last items of its own due): nothing more is due to it.
        if (!last || !s.available || s.arrivals !== arrival) continue;
        if (hadPublish(s, node, last.seq)) continue;
        hand(s, node, last.seq);
        const el = delayed(event(`${owner}@${o.domain}`, itemsEvent(node, [last])), `${owner}@${o.domain}`, last.published);
        el.attrs.to = session.jid!;
        session.send(el);
      }
    }
  };

  // --- contacts of other servers ---------------------------------------------

  /** A resource of another server's, asked for its caps through the router (the answer comes back to this worker: requestId). */
  const remoteAsked = (jid: string): Asked => ({ jid, remote: true, send: (iq) => void o.routing().routeInternal(iq) });

  /**
   * Presence from another server's entity to an account of ours (XEP-0163
   * §4.3.4): an available resource of a contact is kept with its caps, and
   * forgotten when it says it is unavailable (a bare JID's unavailable, all
   * of that contact's).
   */
  const remotePresence = (el: Element, to: Jid): void => {
    const type = el.attrs.type;
    if (!to.local || (type !== undefined && type !== 'unavailable')) return;
    let from: Jid;
    try {
      from = parseJid(el.attrs.from);
    } catch {
      return;
    }
    if (!from.local || from.domain === o.domain) return;
    const owner = to.local;
    if (type === 'unavailable') {
      remote.unavailable(owner, fullJid(from)).catch((err: unknown) => log.warn('PEP: a remote resource not forgotten', { owner, err: String(err) }));
      return;
    }
    if (!from.resource) return;
    remoteAvailable(owner, fullJid(from), bareJid(from), capsOf(el)).catch((err: unknown) => log.warn('PEP: remote caps or last items failed', { owner, err: String(err) }));
  };

  const remoteAvailable = async (owner: string, jid: string, contact: string, caps: Caps | undefined): Promise<void> => {
    // Only contacts are kept (those whose presence the account gets, or that get its own, which an approval may
    // make notified: XEP-0163 §4), nothing of others.
    const item = await o.roster.item(owner, contact);
    if (!item || item.subscription === 'none') return;
    const key = caps ? capsKey(caps) : '';
    const before = await remote.available(owner, jid, key);
    // The same caps again (a status change), known: nothing to ask, nothing due.
    if (!caps || (before === key && (await knownNodes(key)))) return;
    const nodes = await nodesFor(remoteAsked(jid), caps);
    // XEP-0163 §4.3.3: the last items at its first presence with caps (this one, or a later one when the first had none).
    if (nodes && !before) await lastItemsTo(owner, contact, item, jid, nodes, 'presence');
  };

  /**
   * The last item of each of the owner's nodes `contact` may see and `jid`
   * (a resource of the contact's, on another server) asked for, when the
   * node says to send it then (pubsub#send_last_published_item: at
   * presence, on_sub_and_presence; at subscription, either).
   */
  const lastItemsTo = async (owner: string, contact: string, item: RosterItem, jid: string, nodes: ReadonlySet<string>, when: 'presence' | 'subscription'): Promise<void> => {
    const ownerBare = `${owner}@${o.domain}`;
    // XEP-0163 §4: only a contact with a subscription to the owner's presence is subscribed to its nodes.
    if ((item.subscription !== 'from' && item.subscription !== 'both') || (await o.blocked?.(ownerBare, jid))) return;
    const r = o.routing();
    for (const { node, config } of await o.store.nodes(owner)) {
      if (!nodes.has(node) || config.sendLastPublishedItem === 'never' || (when === 'presence' && config.sendLastPublishedItem !== 'on_sub_and_presence')) continue;
      if (!(await allowed(owner, node, config, contact, item))) continue;
      const last = await o.store.last(owner, node);
      if (!last) continue;
      await r.routeInternal(withTo(delayed(event(ownerBare, itemsEvent(node, [last])), ownerBare, last.published), jid));
    }
  };

  /**
   * The owner approved a subscription (RFC 6121 §3.1.5), its roster item
   * now saying so (`item`, as the presence service wrote it; a repeated
   * approval changes nothing and comes not here): the contact's available
   * resources get the last item of each node they may see and asked for
   * (XEP-0060 pubsub#send_last_published_item on_sub): a local contact's
   * filtered by their caps where they live; another server's, those its
   * server told us of.
   */
  const approved = async (owner: string, item: RosterItem): Promise<void> => {
    const contact = item.jid;
    const ownerBare = `${owner}@${o.domain}`;
    const r = o.routing();
    if (!contact.endsWith(`@${o.domain}`)) {
      for (const x of await remote.list(owner)) {
        if (x.caps === '' || bareOf(x.jid) !== contact) continue;
        const nodes = await knownNodes(x.caps);
        if (nodes) await lastItemsTo(owner, contact, item, x.jid, nodes, 'subscription');
      }
      return;
    }
    const recs = await r.available(contact);
    if (recs.length === 0) return;
    for (const { node, config } of await o.store.nodes(owner)) {
      // pubsub#send_last_published_item never (XEP-0060 §16.4.3): not on subscription either.
      if (config.sendLastPublishedItem === 'never' || !(await allowed(owner, node, config, contact, item))) continue;
      const last = await o.store.last(owner, node);
      if (!last) continue;
      const el = delayed(event(ownerBare, itemsEvent(node, [last])), ownerBare, last.published);
      for (const rec of recs) {
        if (await o.blocked?.(ownerBare, rec.jid)) continue;
        r.deliver(rec, withTo(el, rec.jid), notifyOnly('l', node, last.seq));
      }
    }
  };

  /**
   * A session this worker has not seen broadcast presence: one that came
   * from another connection (XEP-0198 resumption, on any worker or node).
   * Its caps are in the presence it carried: known at once when this worker
   * has the ver, else looked up (the cluster's cache, or the client) for the
   * notifications after this one.
   */
  const adopted = (session: Session): Seen => {
    const caps = session.lastPresence ? capsOf(session.lastPresence) : undefined;
    // It had its last items where it was.
    const s: Seen = { available: session.available, caps, lastDue: false };
    seen.set(session, s);
    if (!caps) return s;
    const known = cache.get(caps);
    if (known) learn(s, known);
    else {
      void nodesFor(askedOf(session, caps), caps)
        .then((nodes) => {
          if (nodes && s.caps === caps) learn(s, nodes);
        })
        .catch((err: unknown) => log.debug('PEP: caps of a resumed session not known', { jid: session.jid, err: String(err) }));
    }
    return s;
  };

  const inbound: InboundHook = (el, session) => {
    if (el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error') && el.attrs.to === o.domain) return answered(el);
    // Broadcast presence (no 'to'): its caps, and on becoming available the last published items.
    if (el.name !== 'presence' || el.attrs.to !== undefined || !session.username) return false;
    // A resumed session is not arriving: it was available already (its presence came with it).
    const s = seen.get(session) ?? adopted(session);
    if (el.attrs.type === 'unavailable') {
      s.available = false;
      s.lastDue = false;
      forget(s);
      return false;
    }
    if (el.attrs.type !== undefined) return false;
    const caps = capsOf(el);
    const changed = caps !== undefined && (s.caps?.ver !== caps.ver || s.caps.hash !== caps.hash);
    if (changed) {
      s.caps = caps;
      s.nodes = undefined;
    }
    // XEP-0163 §4.3.3: a newly available resource gets the last items, once its caps say which nodes it wants;
    // they are due from the presence that makes it available until the first one whose caps are known.
    if (!s.available) {
      s.lastDue = true;
      s.arrivals = (s.arrivals ?? 0) + 1;
      forget(s);
    }
    s.available = true;
    if (!caps && !s.caps) return false;
    // The same caps again (a status change), known, and nothing due.
    if (!changed && s.nodes && !s.lastDue) return false;
    const current = s.caps!;
    void nodesFor(askedOf(session, current), current)
      .then(async (nodes) => {
        // Newer caps came meanwhile: their own lookup takes over.
        if (s.caps !== current) return;
        if (nodes) learn(s, nodes);
        // Once per availability: the first lookup to know the caps takes what is due.
        if (!s.lastDue || !s.available || !s.nodes) return;
        s.lastDue = false;
        await sendLast(session, s, s.nodes);
      })
      .catch((err: unknown) => log.warn('PEP: caps or last items failed', { jid: session.jid, err: String(err) }));
    return false;
  };

  const api: PepApi = {
    async publish(owner, node, item, { create = DEFAULT_CONFIG, by } = {}) {
      const { config, seq } = await o.store.publish(owner, node, item, create, maxNodes, { maxBytes: maxAccountBytes });
      notifyLater(owner, node, config, itemsEvent(node, [item]), undefined, seq);
      await changed({ owner, node, by, kind: 'publish', item });
    },
    async retract(owner, node, ids, by) {
      const config = await o.store.config(owner, node);
      if (!config) return;
      const gone = await o.store.retract(owner, node, ids);
      if (gone.length === 0) return;
      if (config.notifyRetract) {
        const inner = new Element('items', { node });
        for (const id of gone) inner.c('retract', { id });
        notifyLater(owner, node, config, inner);
      }
      await changed({ owner, node, by, kind: 'retract', ids: gone });
    },
    items: (owner, node, ids) => o.store.items(owner, node, ids ? { ids } : {}),
    listen: (fn) => void listeners.push(fn),
  };

  return {
    cache,
    api,
    features: [],
    // XEP-0163 §6.1: the account's bare JID is a pubsub/pep service.
    accountFeatures: [NS_PUBSUB, ...FEATURES],
    accountIdentities: [{ category: 'pubsub', type: 'pep' }],
    account: {
      [`set ${NS_PUBSUB}`]: pubsubSet,
      [`get ${NS_PUBSUB}`]: pubsubGet,
      [`set ${NS_PUBSUB_OWNER}`]: ownerSet,
      [`get ${NS_PUBSUB_OWNER}`]: ownerGet,
    },
    remoteAccount: { [`get ${NS_PUBSUB}`]: remoteGet, [`set ${NS_PUBSUB}`]: remoteForbidden, [`get ${NS_PUBSUB_OWNER}`]: remoteForbidden, [`set ${NS_PUBSUB_OWNER}`]: remoteForbidden },
    inbound,
    remotePresence,
    answer: answered,
    approved: (owner, item) => void approved(owner, item).catch((err: unknown) => log.warn('PEP: last items on approval failed', { owner, err: String(err) })),
    // Its caps looked up at once, so that they are known by the next notification.
    resumed: (session) => void adopted(session),
    notify: (session, what) => {
      const { kind, seq, node } = parseNotify(what);
      const s = seen.get(session) ?? adopted(session);
      const asked = s.nodes?.has(node) ?? false;
      // XEP-0163 §4.3 (filtered notifications): a contact's resource gets only the nodes its caps ask for; the owner's
      // resources too, "subject to notification filtering" (§4, item 3), once their caps are known: one that sent none,
      // or whose caps are being asked, has chosen nothing yet and gets every node.
      if (kind === 'o' ? s.nodes !== undefined && !asked : !asked) return false;
      // The very publish it was handed already, as the last item or a notification: once. A last item on a subscription's
      // approval goes all the same (the subscription is new: it may have dropped what it had of the contact).
      if (kind !== 'l' && hadPublish(s, node, seq)) return false;
      // Remembered for sendLast and the notifications after it (bounded: the nodes its caps name, or, while they are asked,
      // as many of the owner's).
      if (asked || (s.nodes === undefined && s.lastDue)) hand(s, node, seq);
      return true;
    },
    removed: () => {},
  };
}
