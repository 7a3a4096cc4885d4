// The upload slot store in PostgreSQL, for a cluster: the SQLite store's
// rules on the schema of migration 12 (storage/postgres-schema.ts).
// reserve() holds a lock of the owner's uploads (pg_advisory_xact_lock) for
// its transaction, so that what it counts is what it adds to; claim() and
// complete() are single conditional statements (one PUT wins a slot).
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import { type NewSlot, type UploadBounds, type UploadRules, type UploadSlot, type UploadStore, checkQuota } from './store.ts';
import { slotOf } from './sqlite.ts';

// $1 owner, $2 now, $3 write time, $4 file life (0: for ever).
const HOLDING = `
SELECT coalesce(sum(size), 0) AS bytes, count(*) AS files,
  min(CASE WHEN state = 'done' THEN (CASE WHEN $4::bigint > 0 THEN uploaded + $4::bigint END) ELSE put_until + $3::bigint END) AS first
FROM upload_slots
WHERE owner = $1 AND (CASE WHEN state = 'done' THEN ($4::bigint = 0 OR uploaded + $4::bigint > $2::bigint) ELSE put_until + $3::bigint > $2::bigint END)`;
// $1 now, $2 write time, $3 file life, $4 limit.
const EXPIRED = `
(SELECT * FROM upload_slots WHERE state = 'done' AND $3::bigint > 0 AND uploaded + $3::bigint <= $1::bigint)
UNION ALL
(SELECT * FROM upload_slots WHERE state <> 'done' AND put_until + $2::bigint <= $1::bigint)
LIMIT $4`;

export class PostgresUploadStore extends PooledStore implements UploadStore {
  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string): Promise<PostgresUploadStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresUploadStore(pool, release);
  }

  async reserve(slot: NewSlot, bounds: UploadBounds, rules: UploadRules): Promise<void> {
    await transaction(this.pool, `upload:${slot.owner}`, async (c) => {
      const h = (await c.query<{ bytes: string; files: string; first: string | null }>(HOLDING, [slot.owner, rules.now, rules.writeMs, rules.expireMs])).rows[0];
      checkQuota({ bytes: Number(h.bytes), files: Number(h.files), firstRelease: h.first === null ? undefined : Number(h.first) }, slot.size, bounds);
      await c.query("INSERT INTO upload_slots (token, owner, filename, size, type, created, put_until, state, uploaded) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0)", [slot.token, slot.owner, slot.filename, slot.size, slot.type, slot.created, slot.putUntil]);
    });
  }

  async openBytes(rules: UploadRules): Promise<number> {
    const q = "SELECT coalesce(sum(size), 0) AS bytes FROM upload_slots WHERE state <> 'done' AND put_until > $1::bigint - $2::bigint";
    return Number((await this.pool.query<{ bytes: string }>(q, [rules.now, rules.writeMs])).rows[0].bytes);
  }

  async slot(token: string): Promise<UploadSlot | undefined> {
    const row = (await this.pool.query('SELECT * FROM upload_slots WHERE token = $1', [token])).rows[0];
    return row ? slotOf(row) : undefined;
  }

  async claim(token: string, now: number): Promise<boolean> {
    return (await this.pool.query("UPDATE upload_slots SET state = 'writing' WHERE token = $1 AND state = 'pending' AND put_until > $2", [token, now])).rowCount === 1;
  }

  async release(token: string): Promise<void> {
    await this.pool.query("UPDATE upload_slots SET state = 'pending' WHERE token = $1 AND state = 'writing'", [token]);
  }

  async complete(token: string, type: string, now: number): Promise<boolean> {
    return (await this.pool.query("UPDATE upload_slots SET state = 'done', type = $2, uploaded = $3 WHERE token = $1 AND state = 'writing'", [token, type, now])).rowCount === 1;
  }

  async expired(rules: UploadRules, limit: number): Promise<UploadSlot[]> {
    return (await this.pool.query(EXPIRED, [rules.now, rules.writeMs, rules.expireMs, limit])).rows.map(slotOf);
  }

  async remove(tokens: string[]): Promise<void> {
    if (tokens.length === 0) return;
    await this.pool.query('DELETE FROM upload_slots WHERE token = ANY($1)', [tokens]);
  }

  async removeOwner(owner: string): Promise<string[]> {
    return (await this.pool.query<{ token: string }>('DELETE FROM upload_slots WHERE owner = $1 RETURNING token', [owner])).rows.map((r) => r.token);
  }
}
