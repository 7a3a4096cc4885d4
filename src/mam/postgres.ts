// The message archive in PostgreSQL, for a cluster: the SQLite store's rules
// on the schema of migration 5 (storage/postgres-schema.ts). A batch is one
// statement (arrays unnested into rows), so a node writes many messages per
// round trip; every value is a parameter. The full-text index (XEP-0431,
// a GIN index of the bodies' tsvector in the 'simple' configuration: no
// stemming, the words as written, in any language) exists while
// XMPP_MAM_FULLTEXT is on: a node that starts with it on makes it, one
// with it off drops it, one at a time (every node should say the same).
import type pg from 'pg';
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import type { ArchiveOpenOptions } from './sqlite.ts';
import { log } from '../log.ts';
import { type ArchiveBounds, type ArchivedMessage, type ArchivePage, type ArchivePrefs, type ArchiveQuery, type ArchiveStore, sqlFilters } from './store.ts';

interface Row {
  id: string;
  owner: string;
  stamp: string;
  with_bare: string;
  with_resource: string;
  outgoing: boolean;
  body: string;
  stanza: string;
}

const toMessage = (r: Row): ArchivedMessage => ({ id: r.id, owner: r.owner, stamp: Number(r.stamp), withBare: r.with_bare, withResource: r.with_resource, outgoing: r.outgoing, body: r.body, xml: r.stanza });

/** Makes or drops the full-text index, under a lock every node takes (one builds it, the others find it). */
async function setFulltext(pool: pg.Pool, on: boolean): Promise<void> {
  await transaction(pool, 'archive:fulltext', async (c) => {
    const exists = (await c.query("SELECT 1 FROM pg_indexes WHERE tablename = 'archive' AND indexname = 'archive_text'")).rowCount! > 0;
    if (on === exists) return;
    const started = Date.now();
    await c.query(on ? "CREATE INDEX archive_text ON archive USING gin (to_tsvector('simple', body))" : 'DROP INDEX archive_text');
    log.info(on ? 'message archive: full-text index made' : 'message archive: full-text index dropped', { ms: Date.now() - started });
  });
}

export class PostgresArchiveStore extends PooledStore implements ArchiveStore {


  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string, opts: ArchiveOpenOptions = {}): Promise<PostgresArchiveStore> {
    const { pool, release } = await acquirePool(url);
    try {
      if (opts.fulltext !== undefined) await setFulltext(pool, opts.fulltext);
    } catch (err) {
      await release();
      throw err;
    }
    return new PostgresArchiveStore(pool, release);
  }

  async append(items: ArchivedMessage[]): Promise<void> {
    if (items.length === 0) return;
    const col = <K extends keyof ArchivedMessage>(k: K) => items.map((m) => m[k]);
    await this.pool.query(
      `INSERT INTO archive (owner, id, stamp, with_bare, with_resource, outgoing, body, stanza)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::text[], $8::text[])
       ON CONFLICT (owner, id) DO NOTHING`,
      [col('owner'), col('id'), col('stamp'), col('withBare'), col('withResource'), col('outgoing'), col('body'), col('xml')],
    );
  }

  private select(owner: string, q: Omit<ArchiveQuery, 'max' | 'last'>): { where: string; values: unknown[] } {
    const values: unknown[] = [];
    const where = sqlFilters(owner, q, (v) => `$${values.push(v)}`, (p) => `to_tsvector('simple', body) @@ plainto_tsquery('simple', ${p})`);
    return { where, values };
  }

  async query(owner: string, q: ArchiveQuery): Promise<ArchivePage> {
    const { where, values } = this.select(owner, q);
    values.push(q.max + 1);
    const rows = (await this.pool.query<Row>(`SELECT id, owner, stamp, with_bare, with_resource, outgoing, body, stanza FROM archive WHERE ${where} ORDER BY id ${q.last ? 'DESC' : 'ASC'} LIMIT $${values.length}`, values)).rows;
    const complete = rows.length <= q.max;
    const page = rows.slice(0, q.max).map(toMessage);
    if (q.last) page.reverse();
    return { items: page, complete };
  }

  async count(owner: string, q: Omit<ArchiveQuery, 'max' | 'last'>): Promise<number> {
    const { where, values } = this.select(owner, q);
    return Number((await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM archive WHERE ${where}`, values)).rows[0].n);
  }

  async has(owner: string, id: string): Promise<boolean> {
    return (await this.pool.query('SELECT 1 FROM archive WHERE owner = $1 AND id = $2', [owner, id])).rowCount! > 0;
  }

  async bounds(owner: string): Promise<ArchiveBounds> {
    const end = async (dir: 'ASC' | 'DESC') => (await this.pool.query<{ id: string; stamp: string }>(`SELECT id, stamp FROM archive WHERE owner = $1 ORDER BY id ${dir} LIMIT 1`, [owner])).rows[0];
    const [first, last] = await Promise.all([end('ASC'), end('DESC')]);
    return {
      ...(first ? { first: { id: first.id, stamp: Number(first.stamp) } } : {}),
      ...(last ? { last: { id: last.id, stamp: Number(last.stamp) } } : {}),
    };
  }

  async prefs(owner: string): Promise<ArchivePrefs | undefined> {
    const row = (await this.pool.query<{ mode: string; always: string[]; never: string[] }>('SELECT mode, always, never FROM archive_prefs WHERE owner = $1', [owner])).rows[0];
    return row ? { default: row.mode as ArchivePrefs['default'], always: row.always, never: row.never } : undefined;
  }

  async setPrefs(owner: string, prefs: ArchivePrefs): Promise<void> {
    await this.pool.query('INSERT INTO archive_prefs (owner, mode, always, never) VALUES ($1, $2, $3, $4) ON CONFLICT (owner) DO UPDATE SET mode = excluded.mode, always = excluded.always, never = excluded.never', [owner, prefs.default, prefs.always, prefs.never]);
  }

  async removeAll(owner: string): Promise<void> {
    await transaction(this.pool, `archive:${owner}`, async (c) => {
      await c.query('DELETE FROM archive WHERE owner = $1', [owner]);
      await c.query('DELETE FROM archive_prefs WHERE owner = $1', [owner]);
    });
  }

  async prune(before: number, limit: number): Promise<number> {
    const r = await this.pool.query('DELETE FROM archive WHERE ctid IN (SELECT ctid FROM archive WHERE stamp < $1 ORDER BY stamp LIMIT $2)', [before, limit]);
    return r.rowCount ?? 0;
  }

}
