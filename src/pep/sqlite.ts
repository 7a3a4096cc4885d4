// PEP nodes and items in SQLite (node:sqlite), pep.sqlite beside the other
// stores; on a running node the storage thread alone writes it. A publish
// runs in one BEGIN IMMEDIATE transaction: the node count checked against
// the bound, the insert and the trim of the oldest items see one state.
// An item's `published` is the time of its publish, ms since the epoch.
import { openDatabase, transaction } from '../storage/sqlite.ts';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { type Affiliation, type Creator, type NodeConfig, type PepItem, type PepStore, type Published, type StoredItem, type PublishOptions, type Subscription, type SubscriptionBounds, PepAffiliationsFullError, PepOwnerlessError, PepNodesFullError, PepOwnedFullError, PepPreconditionError, PepQuotaError, configJson, kept, parseConfig, satisfies } from './store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS pep_nodes (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  config TEXT NOT NULL,
  PRIMARY KEY (owner, node)
) STRICT;
CREATE TABLE IF NOT EXISTS pep_items (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  id TEXT NOT NULL,
  xml TEXT NOT NULL,
  published INTEGER NOT NULL,
  UNIQUE (owner, node, id)
);
CREATE INDEX IF NOT EXISTS pep_items_order ON pep_items (owner, node, seq);
CREATE TABLE IF NOT EXISTS pep_affiliations (
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  jid TEXT NOT NULL,
  affiliation TEXT NOT NULL,
  PRIMARY KEY (owner, node, jid)
) STRICT;
CREATE INDEX IF NOT EXISTS pep_affiliations_jid ON pep_affiliations (jid);
CREATE TABLE IF NOT EXISTS pep_subscriptions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  owner TEXT NOT NULL,
  node TEXT NOT NULL,
  jid TEXT NOT NULL,
  subid TEXT NOT NULL,
  UNIQUE (owner, node, jid)
);
CREATE INDEX IF NOT EXISTS pep_subscriptions_jid ON pep_subscriptions (jid);
`;

/**
 * A file made before items had a publish time: the column is added, the
 * items already there taking the time of the upgrade (their own is not
 * known). Checked again under the write lock: another process opening the
 * file at once may have added it first.
 */
function upgrade(db: DatabaseSync): void {
  const hasPublished = () => /\bpublished\b/.test(String(db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'pep_items'").get()?.sql ?? ''));
  if (hasPublished()) return;
  transaction(db, true, () => {
    // ADD COLUMN ... NOT NULL takes a constant default only: the time of the upgrade, written out.
    if (!hasPublished()) db.exec(`ALTER TABLE pep_items ADD COLUMN published INTEGER NOT NULL DEFAULT ${Date.now()}`);
  });
}

type Stmt = 'bytes' | 'nodes' | 'config' | 'count' | 'insertNode' | 'setConfig' | 'delItem' | 'insertItem' | 'trim' | 'all' | 'newest' | 'last' | 'byId' | 'purge' | 'delNode' | 'delAllItems' | 'delAllNodes' | 'affs' | 'setAff' | 'delAff' | 'affsOf' | 'subs' | 'subsOf' | 'sub' | 'subCount' | 'insSub' | 'unsub' | 'delNodeAffs' | 'delNodeSubs' | 'delAllAffs' | 'delAllSubs' | 'forgetAffs' | 'forgetSubs' | 'nodeBytes' | 'owned' | 'soleOwned';

const sub = (r: Subscription): Subscription => ({ node: r.node, jid: r.jid, subid: r.subid });

export class SqlitePepStore implements PepStore {
  private readonly db: DatabaseSync;
  private readonly s: Record<Stmt, StatementSync>;
  private closed = false;

  private constructor(db: DatabaseSync) {
    this.db = db;
    this.s = {
      nodes: db.prepare('SELECT node, config FROM pep_nodes WHERE owner = ? ORDER BY node'),
      config: db.prepare('SELECT config FROM pep_nodes WHERE owner = ? AND node = ?'),
      count: db.prepare('SELECT count(*) AS n FROM pep_nodes WHERE owner = ?'),
      insertNode: db.prepare('INSERT INTO pep_nodes (owner, node, config) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      setConfig: db.prepare('UPDATE pep_nodes SET config = ? WHERE owner = ? AND node = ?'),
      delItem: db.prepare('DELETE FROM pep_items WHERE owner = ? AND node = ? AND id = ?'),
      insertItem: db.prepare('INSERT INTO pep_items (owner, node, id, xml, published) VALUES (?, ?, ?, ?, ?)'),
      trim: db.prepare('DELETE FROM pep_items WHERE owner = ? AND node = ? AND seq NOT IN (SELECT seq FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?)'),
      all: db.prepare('SELECT id, xml, published FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq'),
      newest: db.prepare('SELECT id, xml, published FROM (SELECT seq, id, xml, published FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq'),
      last: db.prepare('SELECT seq, id, xml, published FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT 1'),
      byId: db.prepare('SELECT id, xml, published FROM pep_items WHERE owner = ? AND node = ? AND id = ?'),
      purge: db.prepare('DELETE FROM pep_items WHERE owner = ? AND node = ?'),
      delNode: db.prepare('DELETE FROM pep_nodes WHERE owner = ? AND node = ?'),
      delAllItems: db.prepare('DELETE FROM pep_items WHERE owner = ?'),
      delAllNodes: db.prepare('DELETE FROM pep_nodes WHERE owner = ?'),
      // octet_length: the UTF-8 bytes of each item, which SQLite knows without reading the text.
      bytes: db.prepare('SELECT coalesce(sum(octet_length(xml)), 0) AS n FROM pep_items WHERE owner = ?'),
      nodeBytes: db.prepare('SELECT coalesce(sum(octet_length(xml)), 0) AS n FROM pep_items WHERE owner = ? AND node = ?'),
      owned: db.prepare("SELECT count(*) AS n FROM pep_affiliations WHERE owner = ? AND jid = ? AND affiliation = 'owner'"),
      soleOwned: db.prepare("SELECT a.owner, a.node FROM pep_affiliations a WHERE a.jid = ? AND a.affiliation = 'owner' AND NOT EXISTS (SELECT 1 FROM pep_affiliations b WHERE b.owner = a.owner AND b.node = a.node AND b.affiliation = 'owner' AND b.jid <> a.jid)"),
      affs: db.prepare('SELECT jid, affiliation FROM pep_affiliations WHERE owner = ? AND node = ? ORDER BY jid'),
      setAff: db.prepare('INSERT INTO pep_affiliations (owner, node, jid, affiliation) VALUES (?, ?, ?, ?) ON CONFLICT (owner, node, jid) DO UPDATE SET affiliation = excluded.affiliation'),
      delAff: db.prepare('DELETE FROM pep_affiliations WHERE owner = ? AND node = ? AND jid = ?'),
      affsOf: db.prepare('SELECT node, affiliation FROM pep_affiliations WHERE owner = ? AND jid = ? ORDER BY node'),
      subs: db.prepare('SELECT node, jid, subid FROM pep_subscriptions WHERE owner = ? AND node = ? ORDER BY seq'),
      // A bare JID's and its full JIDs' ('/' sorts just before '0').
      subsOf: db.prepare("SELECT node, jid, subid FROM pep_subscriptions WHERE owner = ? AND (jid = ? OR (jid >= ? || '/' AND jid < ? || '0')) ORDER BY seq"),
      sub: db.prepare('SELECT node, jid, subid FROM pep_subscriptions WHERE owner = ? AND node = ? AND jid = ?'),
      subCount: db.prepare('SELECT count(*) AS n FROM pep_subscriptions WHERE owner = ? AND node = ?'),
      insSub: db.prepare('INSERT INTO pep_subscriptions (owner, node, jid, subid) VALUES (?, ?, ?, ?)'),
      unsub: db.prepare('DELETE FROM pep_subscriptions WHERE owner = ? AND node = ? AND jid = ?'),
      delNodeAffs: db.prepare('DELETE FROM pep_affiliations WHERE owner = ? AND node = ?'),
      delNodeSubs: db.prepare('DELETE FROM pep_subscriptions WHERE owner = ? AND node = ?'),
      delAllAffs: db.prepare('DELETE FROM pep_affiliations WHERE owner = ?'),
      delAllSubs: db.prepare('DELETE FROM pep_subscriptions WHERE owner = ?'),
      forgetAffs: db.prepare('DELETE FROM pep_affiliations WHERE jid = ?'),
      forgetSubs: db.prepare("DELETE FROM pep_subscriptions WHERE jid = ? OR (jid >= ? || '/' AND jid < ? || '0')"),
    };
  }

  static open(file: string): SqlitePepStore {
    return new SqlitePepStore(openDatabase(file, SCHEMA, upgrade));
  }

  async nodes(owner: string): Promise<{ node: string; config: NodeConfig }[]> {
    return (this.s.nodes.all(owner) as { node: string; config: string }[]).map((r) => ({ node: r.node, config: parseConfig(r.config) }));
  }

  async config(owner: string, node: string): Promise<NodeConfig | undefined> {
    const row = this.s.config.get(owner, node) as { config: string } | undefined;
    return row ? parseConfig(row.config) : undefined;
  }

  /** Inside a transaction: creates the node unless it exists, within the bound. */
  private createIn(owner: string, node: string, config: NodeConfig, maxNodes: number): boolean {
    if (this.s.config.get(owner, node) !== undefined) return false;
    if (Number((this.s.count.get(owner) as { n: number }).n) >= maxNodes) throw new PepNodesFullError(maxNodes);
    this.s.insertNode.run(owner, node, configJson(config));
    return true;
  }

  async create(owner: string, node: string, config: NodeConfig, maxNodes: number, creator?: Creator): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (creator && this.s.config.get(owner, node) === undefined && Number((this.s.owned.get(owner, creator.jid) as { n: number }).n) >= creator.maxOwned) throw new PepOwnedFullError();
      const made = this.createIn(owner, node, config, maxNodes);
      // The creator owns it from the same write: never a node without an owner.
      if (made && creator) this.s.setAff.run(owner, node, creator.jid, 'owner');
      return made;
    });
  }

  async configure(owner: string, node: string, config: NodeConfig): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (Number(this.s.setConfig.run(configJson(config), owner, node).changes) === 0) return false;
      this.s.trim.run(owner, node, owner, node, kept(config));
      return true;
    });
  }

  async publish(owner: string, node: string, item: PepItem, create: NodeConfig, maxNodes: number, opts: PublishOptions = {}): Promise<{ created: boolean; config: NodeConfig; seq: string }> {
    return transaction(this.db, true, () => {
      const created = this.createIn(owner, node, create, maxNodes);
      const config = created ? create : parseConfig((this.s.config.get(owner, node) as { config: string }).config);
      if (!created && opts.require && !satisfies(config, opts.require)) throw new PepPreconditionError();
      this.s.delItem.run(owner, node, item.id);
      // AUTOINCREMENT: a seq is never used again, even after the item goes.
      const seq = String(this.s.insertItem.run(owner, node, item.id, item.xml, opts.at ?? Date.now()).lastInsertRowid);
      this.s.trim.run(owner, node, owner, node, kept(config));
      // What the account keeps once this is in (a replaced item, and those trimmed, no longer count).
      if (opts.maxBytes !== undefined && Number((this.s.bytes.get(owner) as { n: number }).n) > opts.maxBytes) throw new PepQuotaError(opts.maxBytes);
      if (opts.maxNodeBytes !== undefined && Number((this.s.nodeBytes.get(owner, node) as { n: number }).n) > opts.maxNodeBytes) throw new PepQuotaError(opts.maxNodeBytes);
      return { created, config, seq };
    });
  }

  async items(owner: string, node: string, opts: { ids?: string[]; max?: number } = {}): Promise<StoredItem[]> {
    let rows: StoredItem[];
    if (opts.ids) rows = opts.ids.map((id) => this.s.byId.get(owner, node, id) as StoredItem | undefined).filter((r): r is StoredItem => r !== undefined);
    else if (opts.max !== undefined) rows = this.s.newest.all(owner, node, opts.max) as unknown as StoredItem[];
    else rows = this.s.all.all(owner, node) as unknown as StoredItem[];
    return rows.map((r) => ({ id: r.id, xml: r.xml, published: Number(r.published) }));
  }

  async last(owner: string, node: string): Promise<Published | undefined> {
    const row = this.s.last.get(owner, node) as { seq: number | bigint; id: string; xml: string; published: number | bigint } | undefined;
    return row ? { id: row.id, xml: row.xml, published: Number(row.published), seq: String(row.seq) } : undefined;
  }

  async retract(owner: string, node: string, ids: string[]): Promise<string[]> {
    return transaction(this.db, true, () => ids.filter((id) => Number(this.s.delItem.run(owner, node, id).changes) > 0));
  }

  async purge(owner: string, node: string): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (this.s.config.get(owner, node) === undefined) return false;
      this.s.purge.run(owner, node);
      return true;
    });
  }

  async remove(owner: string, node: string): Promise<boolean> {
    return transaction(this.db, true, () => {
      this.s.purge.run(owner, node);
      this.s.delNodeAffs.run(owner, node);
      this.s.delNodeSubs.run(owner, node);
      return Number(this.s.delNode.run(owner, node).changes) > 0;
    });
  }

  async removeAll(owner: string): Promise<void> {
    transaction(this.db, true, () => {
      this.s.delAllItems.run(owner);
      this.s.delAllAffs.run(owner);
      this.s.delAllSubs.run(owner);
      this.s.delAllNodes.run(owner);
    });
  }

  async affiliations(owner: string, node: string): Promise<{ jid: string; affiliation: Affiliation }[]> {
    return (this.s.affs.all(owner, node) as { jid: string; affiliation: Affiliation }[]).map((r) => ({ jid: r.jid, affiliation: r.affiliation }));
  }

  async setAffiliation(owner: string, node: string, jid: string, affiliation: Affiliation | 'none'): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (this.s.config.get(owner, node) === undefined) return false;
      if (affiliation === 'none') this.s.delAff.run(owner, node, jid);
      else this.s.setAff.run(owner, node, jid, affiliation);
      return true;
    });
  }

  async setAffiliations(owner: string, node: string, changes: { jid: string; affiliation: Affiliation | 'none' }[], opts: { max: number; keepOwner: boolean }): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (this.s.config.get(owner, node) === undefined) return false;
      const now = new Map((this.s.affs.all(owner, node) as { jid: string; affiliation: Affiliation }[]).map((r) => [r.jid, r.affiliation] as const));
      for (const c of changes) {
        if (c.affiliation === 'none') now.delete(c.jid);
        else now.set(c.jid, c.affiliation);
      }
      if (now.size > opts.max) throw new PepAffiliationsFullError();
      if (opts.keepOwner && ![...now.values()].includes('owner')) throw new PepOwnerlessError();
      for (const c of changes) {
        if (c.affiliation === 'none') this.s.delAff.run(owner, node, c.jid);
        else this.s.setAff.run(owner, node, c.jid, c.affiliation);
      }
      return true;
    });
  }

  async affiliationsOf(owner: string, jid: string): Promise<{ node: string; affiliation: Affiliation }[]> {
    return (this.s.affsOf.all(owner, jid) as { node: string; affiliation: Affiliation }[]).map((r) => ({ node: r.node, affiliation: r.affiliation }));
  }

  async subscriptions(owner: string, node: string): Promise<Subscription[]> {
    return (this.s.subs.all(owner, node) as unknown as Subscription[]).map(sub);
  }

  async subscriptionsOf(owner: string, bare: string): Promise<Subscription[]> {
    return (this.s.subsOf.all(owner, bare, bare, bare) as unknown as Subscription[]).map(sub);
  }

  async subscribe(owner: string, node: string, jid: string, subid: string, bounds: SubscriptionBounds): Promise<Subscription | 'no-node' | 'full'> {
    return transaction(this.db, true, () => {
      if (this.s.config.get(owner, node) === undefined) return 'no-node';
      const had = this.s.sub.get(owner, node, jid) as Subscription | undefined;
      if (had) return sub(had);
      if (Number((this.s.subCount.get(owner, node) as { n: number }).n) >= bounds.perNode) return 'full';
      const slash = jid.indexOf('/');
      const bare = slash < 0 ? jid : jid.slice(0, slash);
      const mine = this.s.subsOf.all(owner, bare, bare, bare) as unknown as Subscription[];
      if (mine.length >= bounds.perBare || mine.filter((m) => m.node === node).length >= bounds.perBareOnNode) return 'full';
      this.s.insSub.run(owner, node, jid, subid);
      return { node, jid, subid };
    });
  }

  async unsubscribe(owner: string, node: string, jid: string): Promise<boolean> {
    return Number(this.s.unsub.run(owner, node, jid).changes) > 0;
  }

  async forget(bare: string): Promise<void> {
    transaction(this.db, true, () => {
      // A node this JID alone owned goes (a pubsub service's: nobody could manage it any more).
      for (const r of this.s.soleOwned.all(bare) as { owner: string; node: string }[]) {
        this.s.purge.run(r.owner, r.node);
        this.s.delNodeAffs.run(r.owner, r.node);
        this.s.delNodeSubs.run(r.owner, r.node);
        this.s.delNode.run(r.owner, r.node);
      }
      this.s.forgetAffs.run(bare);
      this.s.forgetSubs.run(bare, bare, bare);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
