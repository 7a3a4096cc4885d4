// Blocklists (XEP-0191) in PostgreSQL, for a cluster: the SQLite store's
// rules on the schema of migration 7 (storage/postgres-schema.ts). A change
// to one account's list holds that account's advisory lock, so the bound
// is checked against what concurrent blocks on other nodes wrote.
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import { type BlockStore, BlocklistFullError } from './store.ts';

export class PostgresBlockStore extends PooledStore implements BlockStore {


  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string): Promise<PostgresBlockStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresBlockStore(pool, release);
  }

  async list(owner: string): Promise<string[]> {
    return (await this.pool.query<{ jid: string }>('SELECT jid FROM blocklist WHERE owner = $1 ORDER BY seq', [owner])).rows.map((r) => r.jid);
  }

  async block(owner: string, jids: string[], max: number): Promise<string[]> {
    return transaction(this.pool, `blocklist:${owner}`, async (c) => {
      const have = new Set((await c.query<{ jid: string }>('SELECT jid FROM blocklist WHERE owner = $1', [owner])).rows.map((r) => r.jid));
      const added = [...new Set(jids)].filter((j) => !have.has(j));
      if (have.size + added.length > max) throw new BlocklistFullError(max);
      if (added.length > 0) await c.query('INSERT INTO blocklist (owner, jid) SELECT $1, j FROM unnest($2::text[]) WITH ORDINALITY AS t(j, n) ORDER BY n ON CONFLICT (owner, jid) DO NOTHING', [owner, added]);
      return added;
    });
  }

  async unblock(owner: string, jids: string[]): Promise<string[]> {
    const r = await this.pool.query<{ jid: string }>('DELETE FROM blocklist WHERE owner = $1 AND jid = ANY($2::text[]) RETURNING jid', [owner, [...new Set(jids)]]);
    return r.rows.map((x) => x.jid);
  }

  async unblockAll(owner: string): Promise<string[]> {
    const r = await this.pool.query<{ jid: string; seq: string }>('DELETE FROM blocklist WHERE owner = $1 RETURNING jid, seq', [owner]);
    return r.rows.sort((a, b) => Number(a.seq) - Number(b.seq)).map((x) => x.jid);
  }

  async blockers(): Promise<string[]> {
    return (await this.pool.query<{ owner: string }>('SELECT DISTINCT owner FROM blocklist')).rows.map((r) => r.owner);
  }

}
