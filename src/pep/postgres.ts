// PEP nodes and items in PostgreSQL, for a cluster: the SQLite store's rules
// on the schema of migrations 9 and 13 (storage/postgres-schema.ts). A change to an
// account's nodes holds that account's advisory lock for its transaction,
// so that the node count checked against the bound, and the items trimmed
// to a node's, are those written to, whichever node of the cluster writes.
import type pg from 'pg';
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import { type Affiliation, type Creator, type NodeConfig, type PepItem, type PepStore, type Published, type StoredItem, type PublishOptions, type Subscription, type SubscriptionBounds, PepAffiliationsFullError, PepOwnerlessError, PepNodesFullError, PepOwnedFullError, PepPreconditionError, PepQuotaError, configJson, kept, parseConfig, satisfies } from './store.ts';

/** A bare JID's subscriptions and its full JIDs' ('/' sorts just before '0', bytewise). */
const OF_BARE = `(jid = $2 OR (jid COLLATE "C" >= $2 || '/' AND jid COLLATE "C" < $2 || '0'))`;

const TRIM = 'DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND seq NOT IN (SELECT seq FROM pep_items WHERE owner = $1 AND node = $2 ORDER BY seq DESC LIMIT $3)';

/** An item's row (int8 columns come as strings). */
type Row = { id: string; xml: string; published: string };

const sub = (r: Subscription): Subscription => ({ node: r.node, jid: r.jid, subid: r.subid });

export class PostgresPepStore extends PooledStore implements PepStore {


  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string): Promise<PostgresPepStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresPepStore(pool, release);
  }

  async nodes(owner: string): Promise<{ node: string; config: NodeConfig }[]> {
    // COLLATE "C": the order SQLite gives (bytewise), whatever the database's collation.
    return (await this.pool.query<{ node: string; config: string }>('SELECT node, config FROM pep_nodes WHERE owner = $1 ORDER BY node COLLATE "C"', [owner])).rows.map((r) => ({ node: r.node, config: parseConfig(r.config) }));
  }

  async config(owner: string, node: string): Promise<NodeConfig | undefined> {
    const row = (await this.pool.query<{ config: string }>('SELECT config FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rows[0];
    return row ? parseConfig(row.config) : undefined;
  }

  private async createIn(c: pg.PoolClient, owner: string, node: string, config: NodeConfig, maxNodes: number): Promise<NodeConfig | undefined> {
    const row = (await c.query<{ config: string }>('SELECT config FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rows[0];
    if (row) return parseConfig(row.config);
    if (Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM pep_nodes WHERE owner = $1', [owner])).rows[0].n) >= maxNodes) throw new PepNodesFullError(maxNodes);
    await c.query('INSERT INTO pep_nodes (owner, node, config) VALUES ($1, $2, $3)', [owner, node, configJson(config)]);
    return undefined;
  }

  async create(owner: string, node: string, config: NodeConfig, maxNodes: number, creator?: Creator): Promise<boolean> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      if (creator && (await c.query('SELECT 1 FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rowCount === 0) {
        const n = Number((await c.query<{ n: string }>("SELECT count(*) AS n FROM pep_affiliations WHERE owner = $1 AND jid = $2 AND affiliation = 'owner'", [owner, creator.jid])).rows[0].n);
        if (n >= creator.maxOwned) throw new PepOwnedFullError();
      }
      const made = (await this.createIn(c, owner, node, config, maxNodes)) === undefined;
      // The creator owns it from the same write: never a node without an owner.
      if (made && creator) await c.query("INSERT INTO pep_affiliations (owner, node, jid, affiliation) VALUES ($1, $2, $3, 'owner') ON CONFLICT (owner, node, jid) DO UPDATE SET affiliation = 'owner'", [owner, node, creator.jid]);
      return made;
    });
  }

  async configure(owner: string, node: string, config: NodeConfig): Promise<boolean> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      if ((await c.query('UPDATE pep_nodes SET config = $3 WHERE owner = $1 AND node = $2', [owner, node, configJson(config)])).rowCount === 0) return false;
      await c.query(TRIM, [owner, node, kept(config)]);
      return true;
    });
  }

  async publish(owner: string, node: string, item: PepItem, create: NodeConfig, maxNodes: number, opts: PublishOptions = {}): Promise<{ created: boolean; config: NodeConfig; seq: string }> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      const existing = await this.createIn(c, owner, node, create, maxNodes);
      const config = existing ?? create;
      // Under the account's lock, which configure takes too: the node as this publish writes to it.
      if (existing && opts.require && !satisfies(existing, opts.require)) throw new PepPreconditionError();
      await c.query('DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND id = $3', [owner, node, item.id]);
      // bigserial: a seq is never handed out again (read as a string, as int8 is).
      // The time of the publish as this node's clock has it (as the other stores' times; the database's default is for older code).
      const { seq } = (await c.query<{ seq: string }>('INSERT INTO pep_items (owner, node, id, xml, published) VALUES ($1, $2, $3, $4, $5) RETURNING seq', [owner, node, item.id, item.xml, opts.at ?? Date.now()])).rows[0];
      await c.query(TRIM, [owner, node, kept(config)]);
      // What the account keeps once this is in (octet_length reads a long item's size without its text).
      if (opts.maxBytes !== undefined && Number((await c.query<{ n: string }>('SELECT coalesce(sum(octet_length(xml)), 0) AS n FROM pep_items WHERE owner = $1', [owner])).rows[0].n) > opts.maxBytes) throw new PepQuotaError(opts.maxBytes);
      if (opts.maxNodeBytes !== undefined && Number((await c.query<{ n: string }>('SELECT coalesce(sum(octet_length(xml)), 0) AS n FROM pep_items WHERE owner = $1 AND node = $2', [owner, node])).rows[0].n) > opts.maxNodeBytes) throw new PepQuotaError(opts.maxNodeBytes);
      return { created: existing === undefined, config, seq: String(seq) };
    });
  }

  async items(owner: string, node: string, opts: { ids?: string[]; max?: number } = {}): Promise<StoredItem[]> {
    // published is int8, read as a string.
    const stored = (r: Row): StoredItem => ({ id: r.id, xml: r.xml, published: Number(r.published) });
    if (opts.ids) {
      const rows = (await this.pool.query<Row>('SELECT id, xml, published FROM pep_items WHERE owner = $1 AND node = $2 AND id = ANY($3::text[])', [owner, node, opts.ids])).rows;
      const byId = new Map(rows.map((r) => [r.id, r]));
      return opts.ids.flatMap((id) => (byId.has(id) ? [stored(byId.get(id)!)] : []));
    }
    const q = opts.max !== undefined
      ? this.pool.query<Row>('SELECT id, xml, published FROM (SELECT seq, id, xml, published FROM pep_items WHERE owner = $1 AND node = $2 ORDER BY seq DESC LIMIT $3) t ORDER BY seq', [owner, node, opts.max])
      : this.pool.query<Row>('SELECT id, xml, published FROM pep_items WHERE owner = $1 AND node = $2 ORDER BY seq', [owner, node]);
    return (await q).rows.map(stored);
  }

  async last(owner: string, node: string): Promise<Published | undefined> {
    const row = (await this.pool.query<Row & { seq: string }>('SELECT seq, id, xml, published FROM pep_items WHERE owner = $1 AND node = $2 ORDER BY seq DESC LIMIT 1', [owner, node])).rows[0];
    return row ? { id: row.id, xml: row.xml, published: Number(row.published), seq: String(row.seq) } : undefined;
  }

  async retract(owner: string, node: string, ids: string[]): Promise<string[]> {
    const gone = new Set((await this.pool.query<{ id: string }>('DELETE FROM pep_items WHERE owner = $1 AND node = $2 AND id = ANY($3::text[]) RETURNING id', [owner, node, ids])).rows.map((r) => r.id));
    return ids.filter((id) => gone.has(id));
  }

  async purge(owner: string, node: string): Promise<boolean> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      if ((await c.query('SELECT 1 FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rowCount === 0) return false;
      await c.query('DELETE FROM pep_items WHERE owner = $1 AND node = $2', [owner, node]);
      return true;
    });
  }

  async remove(owner: string, node: string): Promise<boolean> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      await c.query('DELETE FROM pep_items WHERE owner = $1 AND node = $2', [owner, node]);
      await c.query('DELETE FROM pep_affiliations WHERE owner = $1 AND node = $2', [owner, node]);
      await c.query('DELETE FROM pep_subscriptions WHERE owner = $1 AND node = $2', [owner, node]);
      return ((await c.query('DELETE FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rowCount ?? 0) > 0;
    });
  }

  async removeAll(owner: string): Promise<void> {
    await transaction(this.pool, `pep:${owner}`, async (c) => {
      await c.query('DELETE FROM pep_items WHERE owner = $1', [owner]);
      await c.query('DELETE FROM pep_affiliations WHERE owner = $1', [owner]);
      await c.query('DELETE FROM pep_subscriptions WHERE owner = $1', [owner]);
      await c.query('DELETE FROM pep_nodes WHERE owner = $1', [owner]);
    });
  }

  async affiliations(owner: string, node: string): Promise<{ jid: string; affiliation: Affiliation }[]> {
    return (await this.pool.query<{ jid: string; affiliation: Affiliation }>('SELECT jid, affiliation FROM pep_affiliations WHERE owner = $1 AND node = $2 ORDER BY jid COLLATE "C"', [owner, node])).rows.map((r) => ({ jid: r.jid, affiliation: r.affiliation }));
  }

  async setAffiliation(owner: string, node: string, jid: string, affiliation: Affiliation | 'none'): Promise<boolean> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      if ((await c.query('SELECT 1 FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rowCount === 0) return false;
      if (affiliation === 'none') await c.query('DELETE FROM pep_affiliations WHERE owner = $1 AND node = $2 AND jid = $3', [owner, node, jid]);
      else await c.query('INSERT INTO pep_affiliations (owner, node, jid, affiliation) VALUES ($1, $2, $3, $4) ON CONFLICT (owner, node, jid) DO UPDATE SET affiliation = excluded.affiliation', [owner, node, jid, affiliation]);
      return true;
    });
  }

  async setAffiliations(owner: string, node: string, changes: { jid: string; affiliation: Affiliation | 'none' }[], opts: { max: number; keepOwner: boolean }): Promise<boolean> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      if ((await c.query('SELECT 1 FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rowCount === 0) return false;
      const now = new Map((await c.query<{ jid: string; affiliation: Affiliation }>('SELECT jid, affiliation FROM pep_affiliations WHERE owner = $1 AND node = $2', [owner, node])).rows.map((r) => [r.jid, r.affiliation] as const));
      for (const ch of changes) {
        if (ch.affiliation === 'none') now.delete(ch.jid);
        else now.set(ch.jid, ch.affiliation);
      }
      if (now.size > opts.max) throw new PepAffiliationsFullError();
      if (opts.keepOwner && ![...now.values()].includes('owner')) throw new PepOwnerlessError();
      for (const ch of changes) {
        if (ch.affiliation === 'none') await c.query('DELETE FROM pep_affiliations WHERE owner = $1 AND node = $2 AND jid = $3', [owner, node, ch.jid]);
        else await c.query('INSERT INTO pep_affiliations (owner, node, jid, affiliation) VALUES ($1, $2, $3, $4) ON CONFLICT (owner, node, jid) DO UPDATE SET affiliation = excluded.affiliation', [owner, node, ch.jid, ch.affiliation]);
      }
      return true;
    });
  }

  async affiliationsOf(owner: string, jid: string): Promise<{ node: string; affiliation: Affiliation }[]> {
    return (await this.pool.query<{ node: string; affiliation: Affiliation }>('SELECT node, affiliation FROM pep_affiliations WHERE owner = $1 AND jid = $2 ORDER BY node COLLATE "C"', [owner, jid])).rows.map((r) => ({ node: r.node, affiliation: r.affiliation }));
  }

  async subscriptions(owner: string, node: string): Promise<Subscription[]> {
    return (await this.pool.query<Subscription>('SELECT node, jid, subid FROM pep_subscriptions WHERE owner = $1 AND node = $2 ORDER BY seq', [owner, node])).rows.map(sub);
  }

  async subscriptionsOf(owner: string, bare: string): Promise<Subscription[]> {
    return (await this.pool.query<Subscription>(`SELECT node, jid, subid FROM pep_subscriptions WHERE owner = $1 AND ${OF_BARE} ORDER BY seq`, [owner, bare])).rows.map(sub);
  }

  async subscribe(owner: string, node: string, jid: string, subid: string, bounds: SubscriptionBounds): Promise<Subscription | 'no-node' | 'full'> {
    return transaction(this.pool, `pep:${owner}`, async (c) => {
      if ((await c.query('SELECT 1 FROM pep_nodes WHERE owner = $1 AND node = $2', [owner, node])).rowCount === 0) return 'no-node';
      const had = (await c.query<Subscription>('SELECT node, jid, subid FROM pep_subscriptions WHERE owner = $1 AND node = $2 AND jid = $3', [owner, node, jid])).rows[0];
      if (had) return sub(had);
      if (Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM pep_subscriptions WHERE owner = $1 AND node = $2', [owner, node])).rows[0].n) >= bounds.perNode) return 'full';
      const slash = jid.indexOf('/');
      const bare = slash < 0 ? jid : jid.slice(0, slash);
      const mine = (await c.query<Subscription>(`SELECT node, jid, subid FROM pep_subscriptions WHERE owner = $1 AND ${OF_BARE}`, [owner, bare])).rows;
      if (mine.length >= bounds.perBare || mine.filter((m) => m.node === node).length >= bounds.perBareOnNode) return 'full';
      await c.query('INSERT INTO pep_subscriptions (owner, node, jid, subid) VALUES ($1, $2, $3, $4)', [owner, node, jid, subid]);
      return { node, jid, subid };
    });
  }

  async unsubscribe(owner: string, node: string, jid: string): Promise<boolean> {
    return ((await this.pool.query('DELETE FROM pep_subscriptions WHERE owner = $1 AND node = $2 AND jid = $3', [owner, node, jid])).rowCount ?? 0) > 0;
  }

  async forget(bare: string): Promise<void> {
    // A node this JID alone owned goes (a pubsub service's: nobody could manage it any more).
    const sole = (await this.pool.query<{ owner: string; node: string }>("SELECT a.owner, a.node FROM pep_affiliations a WHERE a.jid = $1 AND a.affiliation = 'owner' AND NOT EXISTS (SELECT 1 FROM pep_affiliations b WHERE b.owner = a.owner AND b.node = a.node AND b.affiliation = 'owner' AND b.jid <> a.jid)", [bare])).rows;
    for (const r of sole) await this.remove(r.owner, r.node);
    await this.pool.query('DELETE FROM pep_affiliations WHERE jid = $1', [bare]);
    await this.pool.query(`DELETE FROM pep_subscriptions WHERE ${OF_BARE.replaceAll('$2', '$1')}`, [bare]);
  }


}
