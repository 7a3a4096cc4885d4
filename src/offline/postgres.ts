// Offline messages in PostgreSQL, for a cluster: the SQLite store's tables
// and rules. push(), pushMany() and fetch() run in a transaction holding a lock of the
// user's queue (pg_advisory_xact_lock on the username), so the size checked
// against the limits, and the claim checked before reading the queue,
// cannot change before the write that depends on them; different users'
// queues are written in parallel. The pushes of one user go to the database
// one after the other, in the order they were made: each on its own
// connection, they would take the lock in whatever order their queries
// arrive, and the queue would not keep the order the messages came in
// (pushMany() takes its turn among them, its stanzas inserted by one
// statement in the order given).
import type pg from 'pg';
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import { Turns } from '../turns.ts';
import { type OfflineLimits, type OfflineStore, type StoredMessage, checkFetch, checkLimits, fitting, utf8Bytes } from './store.ts';

export class PostgresOfflineStore extends PooledStore implements OfflineStore {
  /** Each user's pushes, one after the other (see the file's head). */
  private readonly turns = new Turns();

  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string): Promise<PostgresOfflineStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresOfflineStore(pool, release);
  }

  /** `fn` in one transaction holding the user's queue lock. */
  private locked<T>(user: string, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return transaction(this.pool, `offline:${user}`, fn);
  }

  async push(user: string, xml: string, limits: OfflineLimits): Promise<boolean> {
    return (await this.pushMany(user, [xml], limits))[0];
  }

  async pushMany(user: string, xmls: string[], limits: OfflineLimits): Promise<boolean[]> {
    checkLimits(limits);
    if (limits.max < 1 || xmls.length === 0) return xmls.map(() => false);
    const sizes = xmls.map(utf8Bytes);
    if (sizes.every((b) => b > limits.maxBytes)) return xmls.map(() => false);
    return this.turns.run(user, () =>
      this.locked(user, async (c) => {
        const row = (await c.query<{ n: string; bytes: string }>('SELECT count(*) AS n, coalesce(sum(octet_length(stanza)), 0) AS bytes FROM offline WHERE username = $1', [user])).rows[0];
        const fits = fitting(sizes, Number(row.n), Number(row.bytes), limits);
        const kept = xmls.filter((_, i) => fits[i]);
        // One statement; rows are numbered (seq) in the order the sorted SELECT gives them, the order given.
        if (kept.length > 0) await c.query('INSERT INTO offline (username, stanza, stored) SELECT $1, u.stanza, $3 FROM unnest($2::text[]) WITH ORDINALITY AS u(stanza, i) ORDER BY u.i', [user, kept, Date.now()]);
        return fits;
      }),
    );
  }

  async fetch(user: string, owner: string, after: string, limit: number, leaseMs: number): Promise<StoredMessage[] | null> {
    checkFetch(limit, leaseMs);
    // Only what fetch() hands out: decimal digits ('-1', ' ', '0x10', '1e3' are no ids).
    const from = after === '' ? 0 : /^[0-9]{1,15}$/.test(after) ? Number(after) : NaN;
    if (!Number.isSafeInteger(from)) throw new RangeError(`invalid message id ${JSON.stringify(after)}`);
    return this.locked(user, async (c) => {
      const now = Date.now();
      const claim = (await c.query<{ owner: string; until: string }>('SELECT owner, until FROM offline_claims WHERE username = $1', [user])).rows[0];
      const live = claim !== undefined && Number(claim.until) > now;
      if (live && claim.owner !== owner) return null;
      const rows = (await c.query<{ seq: string; stanza: string }>('SELECT seq, stanza FROM offline WHERE username = $1 AND seq > $2 ORDER BY seq LIMIT $3', [user, from, limit])).rows.map((r) => ({ id: String(r.seq), xml: r.stanza }));
      // Nothing to deliver and no claim of its own: none is taken (see the SQLite store).
      if (rows.length > 0 || live) {
        await c.query('INSERT INTO offline_claims (username, owner, until) VALUES ($1, $2, $3) ON CONFLICT (username) DO UPDATE SET owner = excluded.owner, until = excluded.until', [user, owner, now + leaseMs]);
      }
      return rows;
    });
  }

  async remove(user: string, ids: string[]): Promise<void> {
    const seqs = ids.filter((id) => /^[0-9]{1,15}$/.test(id)).map(Number);
    if (seqs.length === 0) return;
    await this.pool.query('DELETE FROM offline WHERE username = $1 AND seq = ANY($2::bigint[])', [user, seqs]);
  }

  /**
   * Drops every claim: for a single node (no other node delivers from this
   * database), at its start, since the sessions that held them are gone with
   * the process before.
   */
  async clearClaims(): Promise<void> {
    await this.pool.query('DELETE FROM offline_claims');
  }

  async release(user: string, owner: string): Promise<void> {
    await this.pool.query('DELETE FROM offline_claims WHERE username = $1 AND owner = $2', [user, owner]);
  }

  async peek(user: string, after: string, limit: number): Promise<StoredMessage[]> {
    checkFetch(limit, 1);
    const from = after === '' ? 0 : /^[0-9]{1,15}$/.test(after) ? Number(after) : NaN;
    if (!Number.isSafeInteger(from)) throw new RangeError(`invalid message id ${JSON.stringify(after)}`);
    const r = await this.pool.query<{ seq: string; stanza: string }>('SELECT seq, stanza FROM offline WHERE username = $1 AND seq > $2 ORDER BY seq LIMIT $3', [user, from, limit]);
    return r.rows.map((row) => ({ id: String(row.seq), xml: row.stanza }));
  }

  async count(user: string): Promise<number> {
    return Number((await this.pool.query<{ n: string }>('SELECT count(*) AS n FROM offline WHERE username = $1', [user])).rows[0].n);
  }

  async removeAll(user: string): Promise<void> {
    await this.locked(user, async (c) => {
      await c.query('DELETE FROM offline WHERE username = $1', [user]);
      await c.query('DELETE FROM offline_claims WHERE username = $1', [user]);
    });
  }

}
