// PostgreSQL for durable data in a cluster (node-postgres, a pool per
// store): the schema is versioned, each version a migration applied in its
// own transaction, recorded in xmpp_schema_migrations. Nodes starting together
// apply them one at a time under an advisory lock; a node that finds a
// schema newer than it knows refuses to run on it (an older node after an
// upgrade began would write what the new schema no longer means).
import pg from 'pg';
import { performance } from 'node:perf_hooks';
import { databaseCall } from '../metrics/metrics.ts';
import { MIGRATIONS } from './postgres-schema.ts';
import type { Migration } from './postgres-schema.ts';

/** Any key of our own for pg_advisory_lock: every node agrees on it. */
const MIGRATION_LOCK = 0x786d7070; // "xmpp"

export class SchemaTooNewError extends Error {
  override name = 'SchemaTooNewError';
}

/** A pool for `url`; `max` connections (statements are parameterised by the stores). */
export function openPool(url: string, max = 10): pg.Pool {
  // A pool with no connection free for this long fails the query rather than hang (the store answers with an error).
  const pool = new pg.Pool({ connectionString: url, max, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 10_000 });
  // An idle client that loses its connection must not take the process down; the next query gets a new one.
  pool.on('error', () => {});
  pool.on('connect', timeQueries);
  return pool;
}

/** SQLSTATE class 23, integrity constraint violation: an answer the stores act on (an account that exists), not a failure of the database. */
const refusal = (err: unknown): boolean => typeof (err as { code?: unknown }).code === 'string' && (err as { code: string }).code.startsWith('23');

/**
 * Every statement a pooled connection runs, timed for /metrics: the pool's
 * own queries (pool.query) and those of transactions, with a callback or a
 * promise. A streamed query (a Submittable) is not timed.
 */
function timeQueries(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const first = args[0] as { submit?: unknown; callback?: unknown } | undefined;
    if (typeof first?.submit === 'function' || typeof first?.callback === 'function') return query(...args);
    const start = performance.now();
    const done = (err: unknown) => databaseCall('postgres', (performance.now() - start) / 1000, err !== undefined && err !== null && !refusal(err));
    const last = args.length - 1;
    if (typeof args[last] === 'function') {
      const cb = args[last] as (err: unknown, res: unknown) => void;
      args[last] = (err: unknown, res: unknown) => {
        done(err);
        cb(err, res);
      };
      return query(...args);
    }
    const p = query(...args) as Promise<unknown>;
    p.then(() => done(undefined), done);
    return p;
  };
}

/** Connections one thread keeps to the database, shared by its stores. */
export const POOL_SIZE = 8;

const shared = new Map<string, { pool: pg.Pool; refs: number; ready: Promise<unknown> }>();

/**
 * The thread's pool for `url`, shared by every store that opens it (a
 * worker's accounts, rosters and offline messages), the schema brought up
 * to date once; release() when done, and the last one closes the pool.
 */
export async function acquirePool(url: string): Promise<{ pool: pg.Pool; release: () => Promise<void> }> {
  let entry = shared.get(url);
  if (!entry) {
    const pool = openPool(url, POOL_SIZE);
    entry = { pool, refs: 0, ready: migrate(pool) };
    shared.set(url, entry);
  }
  const e = entry;
  e.refs++;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    if (--e.refs > 0) return;
    if (shared.get(url) === e) shared.delete(url);
    await e.pool.end();
  };
  try {
    await e.ready;
  } catch (err) {
    // A failed start is not kept: the next open tries again.
    if (shared.get(url) === e) shared.delete(url);
    await release();
    throw err;
  }
  return { pool: e.pool, release };
}

/** The schema version the database is at (0: none yet). */
export async function schemaVersion(db: pg.Pool | pg.PoolClient): Promise<number> {
  const exists = await db.query<{ t: string | null }>("SELECT to_regclass('xmpp_schema_migrations') AS t");
  if (exists.rows[0].t === null) return 0;
  const r = await db.query<{ v: number | null }>('SELECT max(version) AS v FROM xmpp_schema_migrations');
  return r.rows[0].v ?? 0;
}

/**
 * Brings the database to the newest version this code knows, one node at a
 * time; returns the versions applied. Throws SchemaTooNewError when the
 * database is newer than this code.
 */
export async function migrate(pool: pg.Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  const newest = migrations.at(-1)?.version ?? 0;
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      // A name of our own: other tools' schema_migrations may share the database.
      await client.query('CREATE TABLE IF NOT EXISTS xmpp_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      const at = await schemaVersion(client);
      if (at > newest) throw new SchemaTooNewError(`the database schema is at version ${at}, newer than this server knows (${newest}): run the newer server, or restore a backup`);
      const applied: number[] = [];
      // Every migration not recorded yet, in order: one numbered below the newest applied (added on a branch that met another) is applied too.
      const done = new Set((await client.query<{ version: number }>('SELECT version FROM xmpp_schema_migrations')).rows.map((r) => r.version));
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO xmpp_schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
          await client.query('COMMIT');
        } catch (err) {
          // The migration's error is the one to report, whatever the rollback does.
          await client.query('ROLLBACK').catch((e: unknown) => (broken = e as Error));
          throw new Error(`migration ${m.version} (${m.name}) failed: ${(err as Error).message}`, { cause: err });
        }
        applied.push(m.version);
      }
      return applied;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch((e: unknown) => (broken = e as Error));
    }
  } finally {
    // A connection that could not unlock (or roll back) is discarded, not reused with the lock held.
    client.release(broken);
  }
}

/**
 * `fn` in one transaction on one connection of the pool: with `lock`, a
 * writer holding that advisory lock until the end (one writer per key: a
 * user's roster, a user's queue); without, a read-only consistent snapshot.
 */
export async function transaction<T>(pool: pg.Pool, lock: string | undefined, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query(lock === undefined ? 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY' : 'BEGIN');
    if (lock !== undefined) await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lock]);
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

/** What every PostgreSQL store holds: the thread's shared pool (acquirePool), released once when the store closes. */
export abstract class PooledStore {
  protected readonly pool: pg.Pool;
  private readonly releasePool: () => Promise<void>;
  private closing: Promise<void> | undefined;

  protected constructor(pool: pg.Pool, release: () => Promise<void>) {
    this.pool = pool;
    this.releasePool = release;
  }

  /** Releases the store's hold on the pool; idempotent. */
  close(): Promise<void> {
    this.closing ??= this.releasePool();
    return this.closing;
  }
}
