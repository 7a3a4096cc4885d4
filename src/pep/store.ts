// PEP (XEP-0163): the nodes each account keeps on its bare JID, with their
// configuration (XEP-0060 §16.4 pubsub#node_config, the subset PEP uses),
// and their items, by id, in publish order. Two implementations of one
// interface: SQLite in the data directory (one node, through the storage
// thread) and PostgreSQL (a cluster, migrations 9 and 13). Everything is bounded:
// nodes per account (MAX_NODES), items per node (the node's
// pubsub#max_items, at most MAX_ITEMS), bytes per item (MAX_ITEM_BYTES,
// checked by modules/pep.ts on the way in), bytes of items per account
// (MAX_ACCOUNT_BYTES, checked by the store in the publish's transaction). Items are kept as the client
// sent them, serialised, with the time of their publish (XEP-0060 §6.1.7,
// XEP-0163 §4.3.4: a last item sent later carries it as a XEP-0203 delay).

/** XEP-0060 §4.5 access models PEP offers (authorize is not). */
export type AccessModel = 'presence' | 'open' | 'whitelist' | 'roster';
export type SendLast = 'never' | 'on_sub' | 'on_sub_and_presence';

/** XEP-0060 §4.1 affiliations kept (none is the absence of one). */
export type Affiliation = 'owner' | 'publisher' | 'member' | 'outcast';
export const AFFILIATIONS: readonly Affiliation[] = ['owner', 'publisher', 'member', 'outcast'];
/** XEP-0060 §16.4.3 pubsub#publish_model: who may publish besides owners and publishers. */
export type PublishModel = 'publishers' | 'subscribers' | 'open';

/** A subscription to a node (XEP-0060 §6.1): one per JID and node (no multi-subscribe). */
export interface Subscription {
  node: string;
  jid: string;
  subid: string;
}

export interface NodeConfig {
  accessModel: AccessModel;
  /** Who may publish (a pubsub service's nodes; on PEP only the owner publishes). */
  publishModel: PublishModel;
  persistItems: boolean;
  /** Items kept (pubsub#max_items; 'max' is MAX_ITEMS). */
  maxItems: number;
  sendLastPublishedItem: SendLast;
  notifyRetract: boolean;
  /** pubsub#roster_groups_allowed: the access model 'roster' lets in contacts in these groups. */
  rosterGroups: string[];
}

export interface PepItem {
  id: string;
  xml: string;
}

/** An item as the store keeps it: `published`, when its last publish was (ms since the epoch; an item carried in by an import, the import's time). */
export interface StoredItem extends PepItem {
  published: number;
}

/** An item as a publish left it: `seq` names that publish (another publish, of the same id too, gets another), unique in the store. */
export interface Published extends StoredItem {
  seq: string;
}

/** Nodes one account may have. OMEMO keeps one per device (its bundles). */
export const MAX_NODES = 256;
/** Items one node may keep: pubsub#max_items 'max'. */
export const MAX_ITEMS = 256;
/** The largest item kept, serialised (an avatar of XEP-0084 data fits). */
export const MAX_ITEM_BYTES = 192 * 1024;

/** The most bytes of items one account keeps on all its nodes, serialised (without a bound, 256 nodes of 256 items of 192 KiB). */
export const MAX_ACCOUNT_BYTES = 4 * 1024 * 1024;

/** XEP-0163 §4.1 and XEP-0060 defaults for a node created by a publish: presence access, one item kept, sent on presence. */
export const DEFAULT_CONFIG: NodeConfig = {
  accessModel: 'presence',
  publishModel: 'publishers',
  persistItems: true,
  maxItems: 1,
  sendLastPublishedItem: 'on_sub_and_presence',
  notifyRetract: true,
  rosterGroups: [],
};

/** A publish's options (XEP-0060 §7.1.5) do not hold for the node as it is. */
export class PepPreconditionError extends Error {
  override name = 'PepPreconditionError';
  constructor() {
    super("the node's configuration is not what the publish requires");
  }
}

/** What a publish asks of the store besides the item. */
export interface PublishOptions {
  /**
   * XEP-0060 §7.1.5 publish-options: the configuration an existing node must
   * have, field by field, checked in the publish's own transaction (a
   * configure cannot come between the check and the write);
   * PepPreconditionError otherwise, and nothing is written. A node the
   * publish creates takes `create`, which should satisfy it.
   */
  require?: Partial<NodeConfig>;
  /** The most bytes of items (serialised, UTF-8) the node may keep once this one is in: PepQuotaError beyond (a pubsub service's nodes). */
  maxNodeBytes?: number;
  /** The most bytes of items (serialised, UTF-8) the owner may keep once this one is in: PepQuotaError beyond, and nothing is written. */
  maxBytes?: number;
  /** When the item is published (ms since the epoch): now when not given. */
  at?: number;
}

/** A publish would take the owner's items past its bound in bytes. */
/** An affiliation list would pass its bound (PepStore.setAffiliations). */
export class PepAffiliationsFullError extends Error {
  override name = 'PepAffiliationsFullError';
  constructor() {
    super('the affiliation list is full');
  }
}

/** A node would be left without an owner (PepStore.setAffiliations). */
export class PepOwnerlessError extends Error {
  override name = 'PepOwnerlessError';
  constructor() {
    super('the node would have no owner');
  }
}

/** A user of a pubsub service owns as many nodes as it may (PepStore.create's `creator`). */
export class PepOwnedFullError extends Error {
  override name = 'PepOwnedFullError';
  constructor() {
    super('the user owns as many nodes as it may');
  }
}

/** Who creates a node of a pubsub service: made its owner in the same transaction, within the bound of nodes one user owns. */
export interface Creator {
  jid: string;
  maxOwned: number;
}

/** Bounds on subscriptions, checked where they are written (PepStore.subscribe). */
export interface SubscriptionBounds {
  /** Subscriptions of the node in all. */
  perNode: number;
  /** Subscriptions of one bare JID (and its full JIDs) to the node. */
  perBareOnNode: number;
  /** Subscriptions of one bare JID (and its full JIDs) on all the owner's nodes. */
  perBare: number;
}

export class PepQuotaError extends Error {
  override name = 'PepQuotaError';
  readonly maxBytes: number;
  constructor(maxBytes: number) {
    super(`at most ${maxBytes} bytes of PEP items per account`);
    this.maxBytes = maxBytes;
  }
}

/** Whether a configuration has every field `want` names, with that value. */
export function satisfies(config: NodeConfig, want: Partial<NodeConfig>): boolean {
  for (const [k, v] of Object.entries(want)) {
    const have: unknown = config[k as keyof NodeConfig];
    if (Array.isArray(v) ? !Array.isArray(have) || have.join('\n') !== v.join('\n') : have !== v) return false;
  }
  return true;
}

/** A publish would create a node beyond MAX_NODES. */
export class PepNodesFullError extends Error {
  override name = 'PepNodesFullError';
  readonly max: number;
  constructor(max: number) {
    super(`at most ${max} PEP nodes per account`);
    this.max = max;
  }
}

export interface PepStore {
  /** The account's nodes and their configuration, sorted by name. */
  nodes(owner: string): Promise<{ node: string; config: NodeConfig }[]>;
  config(owner: string, node: string): Promise<NodeConfig | undefined>;
  /** Creates the node; false (nothing changed) when it exists. Throws PepNodesFullError past `maxNodes`. */
  create(owner: string, node: string, config: NodeConfig, maxNodes: number, creator?: Creator): Promise<boolean>;
  /** Replaces the node's configuration, trimming its items to the new bound; false when there is no such node. */
  configure(owner: string, node: string, config: NodeConfig): Promise<boolean>;
  /**
   * Publishes an item (one with the same id is replaced and becomes the
   * newest, its time this publish's: `opts.at`, or now), creating the node with `create` if it does not exist (PepNodesFullError
   * past `maxNodes`); the oldest items beyond the node's bound go (one is
   * kept, the last published, when items do not persist). Returns the
   * node's configuration and whether it was created. `opts`: see
   * PublishOptions. `seq` names this publish, as last() does.
   */
  publish(owner: string, node: string, item: PepItem, create: NodeConfig, maxNodes: number, opts?: PublishOptions): Promise<{ created: boolean; config: NodeConfig; seq: string }>;
  /** Items, oldest first: those with the given ids, or else the newest `max` (all when undefined). */
  items(owner: string, node: string, opts?: { ids?: string[]; max?: number }): Promise<StoredItem[]>;
  /** The newest item and the publish that left it (what publish() said of it), or undefined when the node has none (or is not there). */
  last(owner: string, node: string): Promise<Published | undefined>;
  /** Removes the items; returns the ids that were there. */
  retract(owner: string, node: string, ids: string[]): Promise<string[]>;
  /** Removes every item of the node; false when there is no such node. */
  purge(owner: string, node: string): Promise<boolean>;
  /** Removes the node and its items; false when there was none. */
  remove(owner: string, node: string): Promise<boolean>;
  /** Every node and item of the account (the account is removed). */
  removeAll(owner: string): Promise<void>;

  // Affiliations and subscriptions (XEP-0060 §4.1, §6.1): the pubsub service's
  // nodes, and the whitelist of an account's own nodes. They go with their node.
  /** The node's affiliations other than none, by bare JID. */
  affiliations(owner: string, node: string): Promise<{ jid: string; affiliation: Affiliation }[]>;
  /** Sets a JID's affiliation (none removes it); false when there is no such node. */
  setAffiliation(owner: string, node: string, jid: string, affiliation: Affiliation | 'none'): Promise<boolean>;
  /**
   * Several changes at once, all or none: PepAffiliationsFullError when the
   * node would hold more than `max` affiliations, PepOwnerlessError when
   * `keepOwner` and no owner would be left; false when there is no such node.
   */
  setAffiliations(owner: string, node: string, changes: { jid: string; affiliation: Affiliation | 'none' }[], opts: { max: number; keepOwner: boolean }): Promise<boolean>;
  /** One bare JID's affiliations on every node of the owner. */
  affiliationsOf(owner: string, jid: string): Promise<{ node: string; affiliation: Affiliation }[]>;
  /** The node's subscriptions, oldest first. */
  subscriptions(owner: string, node: string): Promise<Subscription[]>;
  /** The subscriptions of a bare JID and of its full JIDs on every node of the owner. */
  subscriptionsOf(owner: string, bare: string): Promise<Subscription[]>;
  /**
   * Subscribes `jid` to the node: its subscription (the existing one when it
   * had one), 'no-node', or 'full' when the node has `max` subscriptions.
   */
  subscribe(owner: string, node: string, jid: string, subid: string, bounds: SubscriptionBounds): Promise<Subscription | 'no-node' | 'full'>;
  /** Ends the subscription of `jid`; false when it had none. */
  unsubscribe(owner: string, node: string, jid: string): Promise<boolean>;
  /** Every subscription and affiliation of a bare JID and its full JIDs, whoever's nodes (the account is removed); a node it was the only owner of goes, with its items (nobody could manage it any more). */
  forget(bare: string): Promise<void>;
  close(): void | Promise<void>;
}

/** How many items a node keeps: all up to its bound, or only the last published when they do not persist. */
export const kept = (c: NodeConfig): number => (c.persistItems ? Math.min(Math.max(c.maxItems, 1), MAX_ITEMS) : 1);

/** A configuration as stored (JSON), read back with defaults for anything missing. */
export function parseConfig(json: string): NodeConfig {
  const o = JSON.parse(json) as Partial<NodeConfig>;
  return { ...DEFAULT_CONFIG, ...o, rosterGroups: [...(o.rosterGroups ?? [])] };
}

export const configJson = (c: NodeConfig): string => JSON.stringify({ accessModel: c.accessModel, publishModel: c.publishModel, persistItems: c.persistItems, maxItems: c.maxItems, sendLastPublishedItem: c.sendLastPublishedItem, notifyRetract: c.notifyRetract, rosterGroups: c.rosterGroups });
