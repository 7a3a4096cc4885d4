// XEP-0060 Publish-Subscribe: a generic pubsub service on a domain of the
// server's own (pubsub.<domain> unless XMPP_PUBSUB_DOMAIN says otherwise),
// on the same store and the same protocol pieces as PEP (modules/pep.ts):
// local users create nodes and own them; anyone the node's access model lets
// in subscribes, reads items, and gets notifications; owners and publishers
// (and, as the node says, subscribers or anyone) publish; owners configure,
// purge, delete, and manage affiliations and subscriptions.
//
// Its nodes are kept under the owner key '@' + its domain (an account's
// localpart never holds an '@', RFC 7622 §3.3.1), and it holds nothing
// between stanzas: any worker of any node answers it.
//
// It may be a roster contact (XEP-0060 §12.4: a service learns its
// subscribers' presence through a presence subscription): it approves a
// request and asks for one back, answers probes, and when an entity's
// available presence reaches it (broadcast, directed, or brought by an
// approval) sends it the last item of each node with send_last_published_item
// on_sub_and_presence it is subscribed to ("whenever a subscriber comes
// online", §16.4.3). Stateless still: the server says whether a local
// session's presence is new to the service (DeliverOptions.arriving).
import { Element } from 'ltx';
import { randomBytes } from 'node:crypto';
import type { ServerModule, ServiceIqHandler } from './module.ts';
import type { DeliverOptions } from '../presence/presence.ts';
import { isSubscriptionType } from '../presence/subscription.ts';
import type { RosterStore } from '../roster/store.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { type Jid, parseJid, JidError } from '../xmpp/jid.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import { flat } from '../xml/retain.ts';
import { Turns } from '../turns.ts';
import { type Affiliation, type NodeConfig, type PepItem, type PepStore, AFFILIATIONS, DEFAULT_CONFIG, MAX_ITEMS, MAX_ITEM_BYTES } from '../pep/store.ts';
import { NS_DATA, NS_PUBSUB, NS_PUBSUB_EVENT, NS_PUBSUB_OWNER, NS_RSM, MAX_RESULT_BYTES, NODE_CONFIG, PUBLISH_OPTIONS, PubsubError, applyForm, bool, configForm, delayed, event, formValues, isEl, itemsEl, nodeOf, notDone, publishedItem, requiredBy } from './pep.ts';
import { log } from '../log.ts';

/** Nodes the service holds, in all. */
export const MAX_SERVICE_NODES = 10_000;
/** Nodes one user may own. */
export const MAX_OWNED_NODES = 64;
/** Bytes of items one node keeps (with MAX_OWNED_NODES, 64 MiB per user; with MAX_SERVICE_NODES, 10 GiB for the service at worst). */
export const MAX_NODE_BYTES = 1024 * 1024;
/** Affiliations one node keeps. */
export const MAX_NODE_AFFILIATIONS = 1000;
/** Subscriptions one node may have (each publish is one notification per subscription). */
export const MAX_SUBSCRIPTIONS = 10_000;
/** Subscriptions of one bare JID (its full JIDs counted with it) to one node, and to the whole service: a JID's resources cost nothing. */
export const MAX_SUBSCRIPTIONS_PER_JID_NODE = 4;
export const MAX_SUBSCRIPTIONS_PER_JID = 1000;
/** The most nodes, or subscriptions, one listing holds (with RSM's <count/> of all when it holds fewer). */
const MAX_LISTED = 500;
/** Last items one available presence brings (on_sub_and_presence), at most, and their bytes: a presence costs little, and may come often. */
export const MAX_LAST_ON_PRESENCE = 100;
export const MAX_LAST_BYTES_ON_PRESENCE = 1024 * 1024;
/** Subscriptions one presence looks at, at most (each may cost reads of the node's configuration, affiliations and owners' rosters). */
export const MAX_SCANNED_ON_PRESENCE = 4 * MAX_LAST_ON_PRESENCE;
/**
 * Full JIDs of other servers' users that had their last items in their
 * current availability, per worker (their server's presence says nothing of
 * being new; a status change must not bring them again): forgotten at their
 * unavailable presence, the least recently seen first past this bound. A
 * user whose presence reaches another worker gets them there once more.
 */
const MAX_REMOTE_ONLINE = 10_000;
/** Presence stanzas to the service handled at once on one worker, past which the next is awaited where it came from. */
const MAX_PRESENCE_IN_FLIGHT = 256;

/** XEP-0060 §16.4 defaults of a node of the service: open, ten items kept, the last sent on subscription. */
export const SERVICE_DEFAULT: NodeConfig = { ...DEFAULT_CONFIG, accessModel: 'open', publishModel: 'publishers', maxItems: 10, sendLastPublishedItem: 'on_sub' };

/** XEP-0060 §10 features of the service. */
const FEATURES = [
  'create-nodes', 'instant-nodes', 'auto-create', 'create-and-configure', 'config-node', 'retrieve-default', 'delete-nodes', 'purge-nodes',
  'publish', 'publish-options', 'retract-items', 'delete-items', 'retrieve-items', 'persistent-items', 'last-published', 'item-ids',
  'subscribe', 'retrieve-subscriptions', 'retrieve-affiliations', 'manage-subscriptions', 'modify-affiliations', 'publisher-affiliation', 'member-affiliation', 'outcast-affiliation',
  'access-open', 'access-presence', 'access-roster', 'access-whitelist',
].map((f) => `${NS_PUBSUB}#${f}`);

export interface PubsubServiceOptions {
  /** The service's domain (XMPP_PUBSUB_DOMAIN). */
  domain: string;
  /** The server's domain: its users create nodes. */
  serverDomain: string;
  store: PepStore;
  /** The access models presence and roster read the node owners' rosters. */
  roster: RosterStore;
  /** Sends a stanza the service made (a notification, presence) wherever its 'to' is; settled once routed (never rejects). */
  send: (el: Element) => void | Promise<void>;
  maxNodes?: number;
  maxOwned?: number;
  maxSubscriptions?: number;
  maxItemBytes?: number;
  maxNodeBytes?: number;
}

const bareOf = (j: Jid): string => (j.local ? `${j.local}@${j.domain}` : j.domain);
const fullOf = (j: Jid): string => (j.resource ? `${bareOf(j)}/${j.resource}` : bareOf(j));

export function pubsubService(o: PubsubServiceOptions): ServerModule {
  const key = `@${o.domain}`;
  const maxNodes = o.maxNodes ?? MAX_SERVICE_NODES;
  const maxOwned = o.maxOwned ?? MAX_OWNED_NODES;
  const maxSubs = o.maxSubscriptions ?? MAX_SUBSCRIPTIONS;
  const bounds = { perNode: maxSubs, perBareOnNode: MAX_SUBSCRIPTIONS_PER_JID_NODE, perBare: MAX_SUBSCRIPTIONS_PER_JID };
  const maxNodeBytes = o.maxNodeBytes ?? MAX_NODE_BYTES;
  const maxItemBytes = o.maxItemBytes ?? MAX_ITEM_BYTES;

  const node = async (name: string): Promise<NodeConfig> => {
    const config = await o.store.config(key, name);
    // XEP-0060 §6.1.3.12, §6.5.9.11, §7.1.3.3...: no such node.
    if (!config) throw new StanzaError('item-not-found', `no node ${name}`);
    return config;
  };
  const affiliationOf = async (name: string, bare: string): Promise<Affiliation | 'none'> => (await o.store.affiliationsOf(key, bare)).find((a) => a.node === name)?.affiliation ?? 'none';
  const requireOwner = async (name: string, from: Jid): Promise<void> => {
    // §8: only an owner manages a node (§8.2.3.2, §8.4.3.1, §8.5.3.1, §8.8.1.2, §8.9.1.2: forbidden).
    if ((await affiliationOf(name, bareOf(from))) !== 'owner') throw new StanzaError('forbidden', `only an owner of ${name} may do this`);
  };

  /** Whether `bare` may subscribe to and read the node (§4.5, §6.1.3, §6.5.9); `affs`: the node's, when already read. */
  const allowed = async (name: string, config: NodeConfig, bare: string, aff: Affiliation | 'none', affs?: { jid: string; affiliation: Affiliation }[]): Promise<boolean> => {
    if (aff === 'outcast') return false;
    if (aff !== 'none' || config.accessModel === 'open') return true;
    if (config.accessModel === 'whitelist') return false;
    // presence and roster: as an owner's roster says (the owners that are this server's users).
    for (const a of affs ?? (await o.store.affiliations(key, name))) {
      if (a.affiliation !== 'owner' || !a.jid.endsWith(`@${o.serverDomain}`)) continue;
      const it = await o.roster.item(a.jid.slice(0, a.jid.lastIndexOf('@')), bare);
      if (!it) continue;
      if (config.accessModel === 'presence' ? it.subscription === 'from' || it.subscription === 'both' : it.groups.some((g) => config.rosterGroups.includes(g))) return true;
    }
    return false;
  };
  const refusal = (config: NodeConfig, aff: Affiliation | 'none'): StanzaError => {
    // §6.1.3.8: an outcast is blocked.
    if (aff === 'outcast') return new StanzaError('forbidden', 'you are banned from this node');
    if (config.accessModel === 'presence') return new PubsubError('not-authorized', 'presence-subscription-required');
    if (config.accessModel === 'roster') return new PubsubError('not-authorized', 'not-in-roster-group');
    return new PubsubError('not-allowed', 'closed-node');
  };

  /**
   * An event to every subscriber of the node (§7.1.2.1), each subscription's
   * JID its 'to', that the node's access model lets in now (§4.5: a node
   * made whitelist, or an owner's contact gone, stops what an earlier
   * subscription would get).
   */
  const notify = async (name: string, inner: Element): Promise<void> => {
    const config = await o.store.config(key, name);
    if (!config) return;
    const affs = await o.store.affiliations(key, name);
    const affOf = new Map(affs.map((a) => [a.jid, a.affiliation] as const));
    const el = event(o.domain, inner);
    for (const s of await o.store.subscriptions(key, name)) {
      const slash = s.jid.indexOf('/');
      const bare = slash < 0 ? s.jid : s.jid.slice(0, slash);
      if (!(await allowed(name, config, bare, affOf.get(bare) ?? 'none', affs))) continue;
      const m = new Element('message', { ...el.attrs, to: s.jid });
      for (const c of el.children) m.cnode(c as Element);
      void o.send(m);
    }
  };
  const notifyLater = (name: string, inner: Element): void => {
    notify(name, inner).catch((err: unknown) => log.warn('pubsub notification not sent', { node: name, err: String(err) }));
  };
  const itemsEvent = (name: string, items: PepItem[]): Element => itemsEl(NS_PUBSUB_EVENT, name, items);

  /** Creates a node owned by `from`'s bare JID (§8.1), within the bounds. */
  const create = async (name: string, from: Jid, config: NodeConfig): Promise<boolean> => {
    // §8.1.3.1: only this server's users create nodes.
    if (!from.local || from.domain !== o.serverDomain) throw new StanzaError('forbidden', `only users of ${o.serverDomain} create nodes here`);
    try {
      // The creator owns it from the same write, within the bound of nodes one user owns.
      return await o.store.create(key, name, config, maxNodes, { jid: bareOf(from), maxOwned });
    } catch (err) {
      if ((err as Error).name === 'PepNodesFullError') throw new StanzaError('resource-constraint', `this service holds at most ${maxNodes} nodes`, 'wait');
      if ((err as Error).name === 'PepOwnedFullError') throw new StanzaError('policy-violation', `a user may own at most ${maxOwned} nodes`);
      throw err;
    }
  };

  const publish = async (pubsub: Element, p: Element, from: Jid): Promise<Element> => {
    const name = nodeOf(p);
    const { id, xml } = publishedItem(p, maxItemBytes);
    const options = formValues(pubsub.getChild('publish-options')?.getChild('x', NS_DATA), PUBLISH_OPTIONS);
    const precondition = (why: string) => new PubsubError('conflict', 'precondition-not-met', why);
    let config = await o.store.config(key, name);
    if (!config) {
      // §7.1.4 auto-create, with the publish-options as its configuration (§7.1.5).
      const wanted = options ? applyForm(SERVICE_DEFAULT, options, precondition, true) : SERVICE_DEFAULT;
      await create(name, from, wanted);
      config = await node(name);
    }
    // §7.1.5: checked by the store in the publish's own transaction (no configure comes between).
    const require = options ? requiredBy(options, applyForm(config, options, precondition, true)) : undefined;
    const aff = await affiliationOf(name, bareOf(from));
    // §7.1.3.1: who may publish is the node's publish model.
    let may = aff === 'owner' || aff === 'publisher' || (aff !== 'outcast' && config.publishModel === 'open');
    if (!may && aff !== 'outcast' && config.publishModel === 'subscribers') may = (await o.store.subscriptionsOf(key, bareOf(from))).some((s) => s.node === name);
    if (!may) throw new StanzaError('forbidden', `you may not publish to ${name}`);
    try {
      await o.store.publish(key, name, { id, xml }, config, maxNodes, { require, maxNodeBytes });
    } catch (err) {
      if ((err as Error).name === 'PepPreconditionError') throw precondition('the node is configured otherwise');
      // XEP-0060 has no condition for a node's storage bound: a service policy (RFC 6120 §8.3.3.12).
      if ((err as Error).name === 'PepQuotaError') throw new StanzaError('policy-violation', `a node keeps at most ${maxNodeBytes} bytes of items; retract or purge some first`);
      throw err;
    }
    notifyLater(name, itemsEvent(name, [{ id, xml }]));
    const out = new Element('pubsub', { xmlns: NS_PUBSUB });
    out.c('publish', { node: name }).c('item', { id });
    return out;
  };

  const retract = async (r: Element, from: Jid): Promise<null> => {
    const name = nodeOf(r);
    const ids = r.getChildren('item').map((i) => i.attrs.id).filter((i): i is string => typeof i === 'string' && i !== '');
    // §7.2.3.4
    if (ids.length === 0) throw new PubsubError('bad-request', 'item-required');
    const config = await node(name);
    const aff = await affiliationOf(name, bareOf(from));
    // §7.2.3.1: owners and publishers retract.
    if (aff !== 'owner' && aff !== 'publisher') throw new StanzaError('forbidden', `you may not retract from ${name}`);
    const gone = await o.store.retract(key, name, ids);
    if (gone.length === 0) throw new StanzaError('item-not-found');
    // §7.2.2.1
    if (r.attrs.notify === undefined ? config.notifyRetract : bool(r.attrs.notify) === true) {
      const inner = new Element('items', { node: name });
      for (const id of gone) inner.c('retract', { id });
      notifyLater(name, inner);
    }
    return null;
  };

  const subscribe = async (s: Element, from: Jid): Promise<{ payload: Element; after: () => void }> => {
    const name = nodeOf(s);
    const jid = jidAttr(s, from, 'subscribe');
    const config = await node(name);
    const aff = await affiliationOf(name, bareOf(from));
    if (!(await allowed(name, config, bareOf(from), aff))) throw refusal(config, aff);
    const sub = await o.store.subscribe(key, name, jid, randomBytes(9).toString('base64url'), bounds);
    if (sub === 'no-node') throw new StanzaError('item-not-found');
    if (sub === 'full') throw new StanzaError('policy-violation', `a node has at most ${maxSubs} subscriptions, ${MAX_SUBSCRIPTIONS_PER_JID_NODE} of one address and its resources, which may have ${MAX_SUBSCRIPTIONS_PER_JID} here in all`);
    const out = new Element('pubsub', { xmlns: NS_PUBSUB });
    out.c('subscription', { node: name, jid: sub.jid, subid: sub.subid, subscription: 'subscribed' });
    return {
      payload: out,
      // §6.1.7: the last published item, once the subscription is confirmed, with when it was published (XEP-0203).
      after: () => {
        if (config.sendLastPublishedItem === 'never') return;
        void o.store.last(key, name).then((last) => {
          if (!last) return;
          const m = delayed(event(o.domain, itemsEvent(name, [last])), o.domain, last.published);
          m.attrs.to = sub.jid;
          void o.send(m);
        }).catch((err: unknown) => log.warn('pubsub: last item not sent', { node: name, err: String(err) }));
      },
    };
  };

  const unsubscribe = async (u: Element, from: Jid): Promise<null> => {
    const name = nodeOf(u);
    const jid = jidAttr(u, from, 'unsubscribe');
    await node(name);
    // §6.2.3.2: no such subscription.
    if (!(await o.store.unsubscribe(key, name, jid))) throw new PubsubError('unexpected-request', 'not-subscribed');
    return null;
  };

  const items = async (i: Element, from: Jid): Promise<Element> => {
    const name = nodeOf(i);
    const config = await node(name);
    const aff = await affiliationOf(name, bareOf(from));
    if (!(await allowed(name, config, bareOf(from), aff))) throw refusal(config, aff);
    const ids = i.getChildren('item').map((x) => x.attrs.id).filter((x): x is string => typeof x === 'string');
    let max: number | undefined;
    if (i.attrs.max_items !== undefined) {
      if (!/^\d+$/.test(i.attrs.max_items) || Number(i.attrs.max_items) < 1) throw new StanzaError('bad-request', 'max_items is a positive integer');
      max = Math.min(Number(i.attrs.max_items), MAX_ITEMS);
    }
    const got = await o.store.items(key, name, ids.length > 0 ? { ids } : { max });
    if (ids.length > 0 && got.length === 0) throw new StanzaError('item-not-found');
    // At most MAX_RESULT_BYTES of the newest items; §6.5.4: RSM <count/> when it holds fewer.
    let bytes = 0;
    let start = got.length;
    while (start > 0 && bytes + Buffer.byteLength(got[start - 1].xml, 'utf8') <= MAX_RESULT_BYTES) bytes += Buffer.byteLength(got[--start].xml, 'utf8');
    if (start === got.length && got.length > 0) start--;
    const out = new Element('pubsub', { xmlns: NS_PUBSUB });
    out.cnode(itemsEl(NS_PUBSUB, name, got.slice(start)));
    if (start > 0) out.c('set', { xmlns: NS_RSM }).c('count').t(String(got.length));
    return out;
  };

  const pubsubSet: ServiceIqHandler = async (iq, from) => {
    const pubsub = iq.getChild('pubsub', NS_PUBSUB)!;
    const children = pubsub.children.filter(isEl);
    // publish-options, configure and options go with a request; alone, options is one (§6.3) this service does not do.
    const action = children.find((c) => c.name !== 'publish-options' && c.name !== 'configure' && c.name !== 'options') ?? children.find((c) => c.name === 'options');
    if (!action) throw new StanzaError('bad-request', 'no request in <pubsub/>');
    switch (action.name) {
      case 'publish':
        return publish(pubsub, action, from);
      case 'retract':
        return retract(action, from);
      case 'subscribe':
        return subscribe(action, from);
      case 'unsubscribe':
        return unsubscribe(action, from);
      case 'create': {
        // §8.1.2: an instant node (no name) gets one of the service's making, returned.
        const instant = action.attrs.node === undefined;
        const name = instant ? randomBytes(12).toString('hex') : nodeOf(action);
        const form = formValues(pubsub.getChild('configure')?.getChild('x', NS_DATA), NODE_CONFIG);
        const config = form ? applyForm(SERVICE_DEFAULT, form, (why) => new StanzaError('not-acceptable', why), true) : SERVICE_DEFAULT;
        // §8.1.1: the node exists (MUST be conflict).
        if (!(await create(name, from, config))) throw new StanzaError('conflict', `${name} exists`);
        if (!instant) return null;
        const out = new Element('pubsub', { xmlns: NS_PUBSUB });
        out.c('create', { node: name });
        return out;
      }
      default:
        throw notDone(NS_PUBSUB, action.name);
    }
  };

  const pubsubGet: ServiceIqHandler = async (iq, from) => {
    const action = iq.getChild('pubsub', NS_PUBSUB)!.children.filter(isEl)[0];
    const bare = bareOf(from);
    switch (action?.name) {
      case 'items':
        return items(action, from);
      case 'subscriptions': {
        // §5.6: the requester's subscriptions, on one node or all.
        const only = action.attrs.node;
        const out = new Element('pubsub', { xmlns: NS_PUBSUB });
        const subs = out.c('subscriptions', only !== undefined ? { node: only } : {});
        for (const s of await o.store.subscriptionsOf(key, bare)) if (only === undefined || s.node === only) subs.c('subscription', { node: s.node, jid: s.jid, subid: s.subid, subscription: 'subscribed' });
        return out;
      }
      case 'affiliations': {
        // §5.7: the requester's affiliations.
        const only = action.attrs.node;
        const out = new Element('pubsub', { xmlns: NS_PUBSUB });
        const affs = out.c('affiliations', only !== undefined ? { node: only } : {});
        for (const a of await o.store.affiliationsOf(key, bare)) if (only === undefined || a.node === only) affs.c('affiliation', { node: a.node, affiliation: a.affiliation });
        return out;
      }
      default:
        throw notDone(NS_PUBSUB, action?.name);
    }
  };

  const ownerSet: ServiceIqHandler = async (iq, from) => {
    const action = iq.getChild('pubsub', NS_PUBSUB_OWNER)!.children.filter(isEl)[0];
    if (!action) throw new StanzaError('bad-request');
    const name = nodeOf(action);
    const config = await node(name);
    await requireOwner(name, from);
    switch (action.name) {
      case 'configure': {
        const x = action.getChild('x', NS_DATA);
        // §8.2.6
        if (x?.attrs.type === 'cancel') return null;
        const values = formValues(x, NODE_CONFIG);
        if (!values) throw new StanzaError('bad-request', 'a configuration form is required');
        if (!(await o.store.configure(key, name, applyForm(config, values, (why) => new StanzaError('not-acceptable', why), true)))) throw new StanzaError('item-not-found');
        return null;
      }
      case 'purge':
        if (!(await o.store.purge(key, name))) throw new StanzaError('item-not-found');
        // §8.5.2
        notifyLater(name, new Element('purge', { node: name }));
        return null;
      case 'delete': {
        // §8.4.2: subscribers are told (read before the node and its subscriptions go).
        const subs = await o.store.subscriptions(key, name);
        if (!(await o.store.remove(key, name))) throw new StanzaError('item-not-found');
        const el = event(o.domain, new Element('delete', { node: name }));
        for (const s of subs) {
          const m = new Element('message', { ...el.attrs, to: s.jid });
          for (const c of el.children) m.cnode(c as Element);
          void o.send(m);
        }
        return null;
      }
      case 'affiliations': {
        // §8.9.2: each <affiliation jid affiliation/> sets one, all or none; a node keeps an owner, and at most MAX_NODE_AFFILIATIONS.
        const changes = action.getChildren('affiliation').map((a) => {
          const aff = a.attrs.affiliation;
          // §8.9.2.4: an affiliation this service does not do.
          if (aff === 'publish-only') throw new PubsubError('feature-not-implemented', 'unsupported', 'publish-only is not an affiliation here', 'publish-only-affiliation');
          if (aff !== 'none' && !AFFILIATIONS.includes(aff as Affiliation)) throw new StanzaError('bad-request', `no affiliation ${String(aff)}`);
          return { jid: bareJid(a.attrs.jid), affiliation: aff as Affiliation | 'none' };
        });
        if (changes.length > MAX_NODE_AFFILIATIONS) throw new StanzaError('policy-violation', `at most ${MAX_NODE_AFFILIATIONS} affiliations at once`);
        try {
          if (!(await o.store.setAffiliations(key, name, changes, { max: MAX_NODE_AFFILIATIONS, keepOwner: true }))) throw new StanzaError('item-not-found');
        } catch (err) {
          if ((err as Error).name === 'PepOwnerlessError') throw new StanzaError('not-acceptable', 'a node keeps at least one owner');
          if ((err as Error).name === 'PepAffiliationsFullError') throw new StanzaError('policy-violation', `a node keeps at most ${MAX_NODE_AFFILIATIONS} affiliations`);
          throw err;
        }
        // An outcast's subscriptions end (§4.1: outcasts cannot subscribe).
        for (const c of changes) if (c.affiliation === 'outcast') for (const s of await o.store.subscriptionsOf(key, c.jid)) if (s.node === name) await o.store.unsubscribe(key, name, s.jid);
        return null;
      }
      case 'subscriptions': {
        // §8.8.2: the owner ends subscriptions (none); it does not subscribe others (an owner could otherwise aim
        // every publish at anyone, here or on another server): 'subscribed' holds only for one that exists.
        for (const s of action.getChildren('subscription')) {
          const jid = fullJid(s.attrs.jid);
          if (s.attrs.subscription === 'none') await o.store.unsubscribe(key, name, jid);
          else if (s.attrs.subscription === 'subscribed') {
            if (!(await o.store.subscriptions(key, name)).some((x) => x.jid === jid)) throw new StanzaError('not-allowed', 'only the subscriber subscribes itself');
          } else throw new StanzaError('bad-request', 'subscription is subscribed or none');
        }
        return null;
      }
      default:
        throw notDone(NS_PUBSUB_OWNER, action.name);
    }
  };

  const ownerGet: ServiceIqHandler = async (iq, from) => {
    const action = iq.getChild('pubsub', NS_PUBSUB_OWNER)!.children.filter(isEl)[0];
    const out = new Element('pubsub', { xmlns: NS_PUBSUB_OWNER });
    if (action?.name === 'default') {
      // §8.3
      out.c('default').cnode(configForm(SERVICE_DEFAULT, true));
      return out;
    }
    if (!action) throw new StanzaError('bad-request');
    const name = nodeOf(action);
    const config = await node(name);
    await requireOwner(name, from);
    switch (action.name) {
      case 'configure':
        out.c('configure', { node: name }).cnode(configForm(config, true));
        return out;
      case 'affiliations': {
        // §8.9.1
        const affs = out.c('affiliations', { node: name });
        for (const a of await o.store.affiliations(key, name)) affs.c('affiliation', { jid: a.jid, affiliation: a.affiliation });
        return out;
      }
      case 'subscriptions': {
        // §8.8.1: at most MAX_LISTED, with RSM's <count/> of all when there are more.
        const subs = out.c('subscriptions', { node: name });
        const all = await o.store.subscriptions(key, name);
        for (const s of all.slice(0, MAX_LISTED)) subs.c('subscription', { jid: s.jid, subid: s.subid, subscription: 'subscribed' });
        if (all.length > MAX_LISTED) out.c('set', { xmlns: NS_RSM }).c('count').t(String(all.length));
        return out;
      }
      default:
        throw notDone(NS_PUBSUB_OWNER, action.name);
    }
  };

  // XEP-0030 (XEP-0060 §5.1-§5.5): the service, its nodes, a node's items.
  const discoInfo: ServiceIqHandler = async (iq) => {
    const name = iq.getChild('query', NS_DISCO_INFO)!.attrs.node;
    const q = new Element('query', { xmlns: NS_DISCO_INFO, ...(name !== undefined ? { node: name } : {}) });
    if (name === undefined) {
      q.c('identity', { category: 'pubsub', type: 'service', name: 'Publish-Subscribe' });
      for (const f of [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PUBSUB, ...FEATURES].sort()) q.c('feature', { var: f });
      return q;
    }
    await node(name);
    // §5.3: a leaf node.
    q.c('identity', { category: 'pubsub', type: 'leaf' });
    q.c('feature', { var: NS_PUBSUB });
    return q;
  };
  const discoItems: ServiceIqHandler = async (iq, from) => {
    const name = iq.getChild('query', NS_DISCO_ITEMS)!.attrs.node;
    const q = new Element('query', { xmlns: NS_DISCO_ITEMS, ...(name !== undefined ? { node: name } : {}) });
    const bare = bareOf(from);
    if (name === undefined) {
      // §5.2: the nodes the requester may see (an owner's, and those its access model lets it read).
      // At most MAX_LISTED, with RSM's <count/> of all when there are more.
      const affs = new Map((await o.store.affiliationsOf(key, bare)).map((a) => [a.node, a.affiliation] as const));
      let seen = 0;
      for (const n of await o.store.nodes(key)) {
        const aff = affs.get(n.node) ?? 'none';
        if (aff === 'outcast' || (aff === 'none' && n.config.accessModel !== 'open')) continue;
        if (++seen <= MAX_LISTED) q.c('item', { jid: o.domain, node: n.node });
      }
      if (seen > MAX_LISTED) q.c('set', { xmlns: NS_RSM }).c('count').t(String(seen));
      return q;
    }
    // §5.5: a node's items, by id, for those who may read them.
    const config = await node(name);
    const aff = await affiliationOf(name, bare);
    if (!(await allowed(name, config, bare, aff))) throw refusal(config, aff);
    for (const it of await o.store.items(key, name)) q.c('item', { jid: o.domain, name: it.id });
    return q;
  };

  /**
   * XEP-0060 §16.4.3 send_last_published_item on_sub_and_presence: `from`
   * (the full JID whose presence came, or a bare JID) gets the last item of
   * each node it is subscribed to, by that JID or by its bare JID, that says
   * so and whose access model lets it in now (§4.5); in the order of the
   * subscriptions, within MAX_LAST_ON_PRESENCE and MAX_LAST_BYTES_ON_PRESENCE.
   */
  const lastOnPresence = async (from: Jid): Promise<void> => {
    const bare = bareOf(from);
    const full = fullOf(from);
    const subs = (await o.store.subscriptionsOf(key, bare)).filter((s) => s.jid === bare || s.jid === full).slice(0, MAX_SCANNED_ON_PRESENCE);
    if (subs.length === 0) return;
    const affs = new Map((await o.store.affiliationsOf(key, bare)).map((a) => [a.node, a.affiliation] as const));
    let sent = 0;
    let bytes = 0;
    const done = new Set<string>();
    for (const s of subs) {
      // A bare JID's and a full JID's subscription to one node: one item.
      if (done.has(s.node)) continue;
      done.add(s.node);
      const config = await o.store.config(key, s.node);
      if (config?.sendLastPublishedItem !== 'on_sub_and_presence') continue;
      if (!(await allowed(s.node, config, bare, affs.get(s.node) ?? 'none'))) continue;
      const last = await o.store.last(key, s.node);
      if (!last) continue;
      bytes += Buffer.byteLength(last.xml, 'utf8');
      if (bytes > MAX_LAST_BYTES_ON_PRESENCE) break;
      // With when it was published (XEP-0203), as on subscription (§6.1.7).
      const m = delayed(event(o.domain, itemsEvent(s.node, [last])), o.domain, last.published);
      m.attrs.to = full;
      await o.send(m);
      if (++sent >= MAX_LAST_ON_PRESENCE) break;
    }
  };

  /**
   * Presence to the service (RFC 6121 §3, §4 as a contact; XEP-0060 §12.4).
   * It keeps no roster: a subscription request is approved, with the
   * service's presence (§3.1.5), and one is asked back of an account (the
   * service wants its presence; not of another service, which might answer
   * in kind forever); a probe gets its presence (§4.3.2: always available);
   * an unsubscribe, its unavailable presence (§3.3.3). Approvals,
   * cancellations, unavailable presence and errors are taken in silence
   * (an error is never answered: no loops).
   */
  const presence = async (el: Element, from: Jid, opts: DeliverOptions): Promise<void> => {
    let to: Jid;
    try {
      to = parseJid(el.attrs.to ?? '');
    } catch {
      return;
    }
    // Its only address is its domain.
    if (to.local || to.resource) return;
    const type = el.attrs.type;
    const bare = bareOf(from);
    const answer = (type?: string, addressee = bare) => o.send(new Element('presence', { from: o.domain, to: addressee, ...(type ? { type } : {}) }));
    if (isSubscriptionType(type)) {
      if (type === 'subscribe') {
        await answer('subscribed');
        await answer();
        if (from.local) await answer('subscribe');
      } else if (type === 'unsubscribe') await answer('unavailable');
      return;
    }
    if (type === 'probe') return void (await answer(undefined, fullOf(from)));
    const local = from.domain === o.serverDomain;
    if (type === 'unavailable' && !local) remoteOnline.delete(fullOf(from));
    if (type !== undefined) return;
    // A local session's presence says whether it is new to the service; another server's says nothing of it: the
    // first available one of a full JID since its unavailable one counts (remoteOnline).
    if (local ? opts.arriving !== true : !rememberOnline(fullOf(from))) return;
    await lastOnPresence(from);
  };
  const remoteOnline = new Map<string, true>();
  /** Presence being handled, in turn per bare JID of its sender, and how many in all. */
  const inTurn = new Turns();
  let inFlight = 0;
  /** True when `full` was not known to be online here yet (and now is). */
  const rememberOnline = (full: string): boolean => {
    // Kept beyond the stanza: a copy, not a slice of the read it came in (xml/retain.ts).
    const key = flat(full);
    if (remoteOnline.delete(key)) {
      remoteOnline.set(key, true);
      return false;
    }
    remoteOnline.set(key, true);
    if (remoteOnline.size > MAX_REMOTE_ONLINE) remoteOnline.delete(remoteOnline.keys().next().value!);
    return true;
  };

  return {
    features: [],
    service: {
      domain: o.domain,
      contact: true,
      iq: {
        [`get ${NS_DISCO_INFO}`]: discoInfo,
        [`get ${NS_DISCO_ITEMS}`]: discoItems,
        [`set ${NS_PUBSUB}`]: pubsubSet,
        [`get ${NS_PUBSUB}`]: pubsubGet,
        [`set ${NS_PUBSUB_OWNER}`]: ownerSet,
        [`get ${NS_PUBSUB_OWNER}`]: ownerGet,
      },
      stanza: async (el, from, opts) => {
        if (el.name === 'presence') {
          // Apart from the stanza flow: the last items a presence brings are many reads and writes, and the
          // broadcast (or the peer's incoming stream) that handed it over should not wait for them. In turn per
          // bare JID (a subscription's answers in the order asked); past MAX_PRESENCE_IN_FLIGHT on this worker,
          // awaited, so that a flood of presence is slowed where it comes from.
          const p = inTurn
            .run(bareOf(from), () => presence(el, from, opts))
            .catch((err: unknown) => log.warn('pubsub: presence not handled', { from: fullOf(from), type: el.attrs.type, err: String(err) }))
            .finally(() => inFlight--);
          if (++inFlight > MAX_PRESENCE_IN_FLIGHT) await p;
          return true;
        }
        // A notification that bounced (§7.1.2.1: the subscriber is gone or refuses them): its subscription ends.
        if (el.name !== 'message' || el.attrs.type !== 'error') return false;
        const cond = el.getChild('error')?.children.find(isEl)?.name;
        if (cond !== 'item-not-found' && cond !== 'service-unavailable' && cond !== 'recipient-unavailable' && cond !== 'remote-server-not-found') return true;
        const full = fullOf(from);
        void o.store.subscriptionsOf(key, bareOf(from)).then(async (subs) => {
          for (const s of subs) if (s.jid === full) await o.store.unsubscribe(key, s.node, s.jid);
        }).catch((err: unknown) => log.debug('pubsub: bounced subscriber kept', { err: String(err) }));
        return true;
      },
    },
  };
}

/** The 'jid' of a subscribe or unsubscribe: the requester's own bare or full JID, normalised (§6.1.3.1: invalid-jid; §6.2.3.3: forbidden). */
function jidAttr(el: Element, from: Jid, what: 'subscribe' | 'unsubscribe'): string {
  const raw = el.attrs.jid;
  let j: Jid;
  try {
    j = parseJid(raw ?? '');
  } catch (err) {
    if (!(err instanceof JidError)) throw err;
    throw new PubsubError('bad-request', 'invalid-jid');
  }
  if (bareOf(j) !== bareOf(from)) throw what === 'subscribe' ? new PubsubError('bad-request', 'invalid-jid', 'the subscription is for your own address') : new StanzaError('forbidden', "you may not end another's subscription");
  return fullOf(j);
}

const bareJid = (raw: string | undefined): string => bareOf(strict(raw));
const fullJid = (raw: string | undefined): string => fullOf(strict(raw));
function strict(raw: string | undefined): Jid {
  try {
    return parseJid(raw ?? '');
  } catch (err) {
    if (!(err instanceof JidError)) throw err;
    throw new StanzaError('jid-malformed', `${raw ?? ''} is not a JID`);
  }
}
