// PEP nodes and items in SQLite (node:sqlite), pep.sqlite beside the other
// stores; on a running node the storage thread alone writes it. A publish
// runs in one BEGIN IMMEDIATE transaction: the node count checked against
// the bound, the insert and the trim of the oldest items see one state.
import { openDatabase, transaction } from '../storage/sqlite.ts';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { type NodeConfig, type PepItem, type PepStore, PepNodesFullError, configJson, kept, parseConfig } from './store.ts';

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
  UNIQUE (owner, node, id)
);
CREATE INDEX IF NOT EXISTS pep_items_order ON pep_items (owner, node, seq);
`;

type Stmt = 'nodes' | 'config' | 'count' | 'insertNode' | 'setConfig' | 'delItem' | 'insertItem' | 'trim' | 'all' | 'newest' | 'byId' | 'purge' | 'delNode' | 'delAllItems' | 'delAllNodes';

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
      insertItem: db.prepare('INSERT INTO pep_items (owner, node, id, xml) VALUES (?, ?, ?, ?)'),
      trim: db.prepare('DELETE FROM pep_items WHERE owner = ? AND node = ? AND seq NOT IN (SELECT seq FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?)'),
      all: db.prepare('SELECT id, xml FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq'),
      newest: db.prepare('SELECT id, xml FROM (SELECT seq, id, xml FROM pep_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq'),
      byId: db.prepare('SELECT id, xml FROM pep_items WHERE owner = ? AND node = ? AND id = ?'),
      purge: db.prepare('DELETE FROM pep_items WHERE owner = ? AND node = ?'),
      delNode: db.prepare('DELETE FROM pep_nodes WHERE owner = ? AND node = ?'),
      delAllItems: db.prepare('DELETE FROM pep_items WHERE owner = ?'),
      delAllNodes: db.prepare('DELETE FROM pep_nodes WHERE owner = ?'),
    };
  }

  static open(file: string): SqlitePepStore {
    return new SqlitePepStore(openDatabase(file, SCHEMA));
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

  async create(owner: string, node: string, config: NodeConfig, maxNodes: number): Promise<boolean> {
    return transaction(this.db, true, () => this.createIn(owner, node, config, maxNodes));
  }

  async configure(owner: string, node: string, config: NodeConfig): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (Number(this.s.setConfig.run(configJson(config), owner, node).changes) === 0) return false;
      this.s.trim.run(owner, node, owner, node, kept(config));
      return true;
    });
  }

  async publish(owner: string, node: string, item: PepItem, create: NodeConfig, maxNodes: number): Promise<{ created: boolean; config: NodeConfig }> {
    return transaction(this.db, true, () => {
      const created = this.createIn(owner, node, create, maxNodes);
      const config = created ? create : parseConfig((this.s.config.get(owner, node) as { config: string }).config);
      this.s.delItem.run(owner, node, item.id);
      this.s.insertItem.run(owner, node, item.id, item.xml);
      this.s.trim.run(owner, node, owner, node, kept(config));
      return { created, config };
    });
  }

  async items(owner: string, node: string, opts: { ids?: string[]; max?: number } = {}): Promise<PepItem[]> {
    let rows: PepItem[];
    if (opts.ids) rows = opts.ids.map((id) => this.s.byId.get(owner, node, id) as PepItem | undefined).filter((r): r is PepItem => r !== undefined);
    else if (opts.max !== undefined) rows = this.s.newest.all(owner, node, opts.max) as unknown as PepItem[];
    else rows = this.s.all.all(owner, node) as unknown as PepItem[];
    return rows.map((r) => ({ id: r.id, xml: r.xml }));
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
      return Number(this.s.delNode.run(owner, node).changes) > 0;
    });
  }

  async removeAll(owner: string): Promise<void> {
    transaction(this.db, true, () => {
      this.s.delAllItems.run(owner);
      this.s.delAllNodes.run(owner);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
