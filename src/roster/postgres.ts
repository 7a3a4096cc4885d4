// Rosters in PostgreSQL, for a cluster: the SQLite store's tables and rules.
// Every change is one transaction that first takes a lock of the user's
// roster (pg_advisory_xact_lock on the username), so the item, the
// version and the limits move together whoever else writes the same roster
// at the same time, as SQLite's one writer does; rosters of different
// users are written in parallel.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import {
  type RosterStore, type RosterItem, type RosterItemInput, type RosterChange, type Subscription, type SubscriptionChange,
  type SubState, type TransitionTable, type TransitionResult, type PendingRequest, type TransitionOptions,
  RosterFullError, RosterTooLargeError, EMPTY_VERSION, checkMax, checkTable, planTransition, checkSubscription, compareJids, composeState, decodeDetails, encodeDetails, itemBytes, makeItem, transitionLimits,
} from './store.ts';

interface ItemRow {
  jid: string;
  details: string;
  subscription: string;
  ask: string | null;
}

const rowToItem = (row: ItemRow): RosterItem => makeItem(row.jid, decodeDetails(row.details), row.subscription as Subscription, row.ask === 'subscribe' ? 'subscribe' : undefined);

function checkUser(user: string): void {
  if (typeof user !== 'string' || user.length === 0) throw new TypeError('a roster needs a username');
}


/** One roster's statements inside its transaction. */
class Tx {
  private readonly c: pg.PoolClient;
  private readonly user: string;

  constructor(c: pg.PoolClient, user: string) {
    this.c = c;
    this.user = user;
  }

  async item(jid: string): Promise<ItemRow | undefined> {
    return (await this.c.query<ItemRow>('SELECT jid, details, subscription, ask FROM roster_items WHERE username = $1 AND jid = $2', [this.user, jid])).rows[0];
  }

  async count(sql: string): Promise<number> {
    return Number((await this.c.query<{ n: string }>(sql, [this.user])).rows[0].n);
  }

  full(max: number): Promise<boolean> {
    return this.count('SELECT count(*) AS n FROM roster_items WHERE username = $1').then((n) => n >= max);
  }

  async version(): Promise<string> {
    const row = (await this.c.query<{ epoch: string; counter: string }>('SELECT epoch, counter FROM roster_versions WHERE username = $1', [this.user])).rows[0];
    return row ? `${row.epoch}.${row.counter}` : EMPTY_VERSION;
  }

  async bump(): Promise<string> {
    const row = (
      await this.c.query<{ epoch: string; counter: string }>(
        `INSERT INTO roster_versions (username, epoch, counter) VALUES ($1, $2, 1)
         ON CONFLICT (username) DO UPDATE SET counter = roster_versions.counter + 1 RETURNING epoch, counter`,
        [this.user, randomBytes(6).toString('base64url')],
      )
    ).rows[0];
    return `${row.epoch}.${row.counter}`;
  }

  async items(): Promise<ItemRow[]> {
    return (await this.c.query<ItemRow>('SELECT jid, details, subscription, ask FROM roster_items WHERE username = $1', [this.user])).rows;
  }

  async pending(jid: string): Promise<boolean> {
    return ((await this.c.query('SELECT 1 FROM roster_pending WHERE username = $1 AND jid = $2', [this.user, jid])).rowCount ?? 0) > 0;
  }

  query(sql: string, params: unknown[]): Promise<unknown> {
    return this.c.query(sql, params);
  }
}

export class PostgresRosterStore extends PooledStore implements RosterStore {


  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string): Promise<PostgresRosterStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresRosterStore(pool, release);
  }

  /** `fn` in one transaction holding the user's roster lock (writes), or a consistent snapshot (reads). */
  private tx<T>(user: string, write: boolean, fn: (t: Tx) => Promise<T>): Promise<T> {
    return transaction(this.pool, write ? `roster:${user}` : undefined, (c) => fn(new Tx(c, user)));
  }

  async get(user: string): Promise<{ version: string; items: RosterItem[] }> {
    checkUser(user);
    return this.tx(user, false, async (t) => {
      // Version and items from one snapshot, on the transaction's own connection.
      const version = await t.version();
      return { version, items: (await t.items()).map(rowToItem).sort((a, b) => compareJids(a.jid, b.jid)) };
    });
  }

  async item(user: string, jid: string): Promise<RosterItem | undefined> {
    checkUser(user);
    const row = (await this.pool.query<ItemRow>('SELECT jid, details, subscription, ask FROM roster_items WHERE username = $1 AND jid = $2', [user, jid])).rows[0];
    return row ? rowToItem(row) : undefined;
  }

  async set(user: string, input: RosterItemInput, max: number, maxBytes = Number.MAX_SAFE_INTEGER): Promise<RosterChange> {
    checkUser(user);
    checkMax(max);
    checkMax(maxBytes);
    const details = encodeDetails(input);
    return this.tx(user, true, async (t) => {
      const row = await t.item(input.jid);
      if (!row && (await t.full(max))) throw new RosterFullError(max);
      const all = await t.count('SELECT coalesce(sum(octet_length(jid) + octet_length(details)), 0) AS n FROM roster_items WHERE username = $1');
      const others = all - (row ? itemBytes(input.jid, row.details) : 0);
      if (others + itemBytes(input.jid, details) > maxBytes) throw new RosterTooLargeError(maxBytes);
      if (row) await t.query('UPDATE roster_items SET details = $1 WHERE username = $2 AND jid = $3', [details, user, input.jid]);
      else await t.query("INSERT INTO roster_items (username, jid, details, subscription, ask) VALUES ($1, $2, $3, 'none', NULL)", [user, input.jid, details]);
      const version = await t.bump();
      return { version, item: rowToItem((await t.item(input.jid))!) };
    });
  }

  async remove(user: string, jid: string): Promise<RosterChange | undefined> {
    checkUser(user);
    return this.tx(user, true, async (t) => {
      await t.query('DELETE FROM roster_pending WHERE username = $1 AND jid = $2', [user, jid]);
      const row = await t.item(jid);
      if (!row) return undefined;
      await t.query('DELETE FROM roster_items WHERE username = $1 AND jid = $2', [user, jid]);
      return { version: await t.bump(), item: rowToItem(row) };
    });
  }

  async setSubscription(user: string, jid: string, subscription: Subscription, ask: 'subscribe' | undefined, create?: { max: number }): Promise<SubscriptionChange | undefined> {
    checkUser(user);
    checkSubscription(subscription, ask);
    if (create) checkMax(create.max);
    return this.tx(user, true, async (t) => {
      const row = await t.item(jid);
      if (!row) {
        if (!create) return undefined;
        if (await t.full(create.max)) throw new RosterFullError(create.max);
        await t.query('INSERT INTO roster_items (username, jid, details, subscription, ask) VALUES ($1, $2, $3, $4, $5)', [user, jid, encodeDetails({ groups: [] }), subscription, ask ?? null]);
      } else {
        const before = rowToItem(row);
        if (before.subscription === subscription && before.ask === ask) return { version: await t.version(), item: before, changed: false };
        await t.query('UPDATE roster_items SET subscription = $1, ask = $2 WHERE username = $3 AND jid = $4', [subscription, ask ?? null, user, jid]);
      }
      const version = await t.bump();
      return { version, item: rowToItem((await t.item(jid))!), changed: true };
    });
  }

  async removeAll(user: string): Promise<void> {
    checkUser(user);
    await this.tx(user, true, async (t) => {
      await t.query('DELETE FROM roster_items WHERE username = $1', [user]);
      await t.query('DELETE FROM roster_versions WHERE username = $1', [user]);
      await t.query('DELETE FROM roster_pending WHERE username = $1', [user]);
    });
  }

  async transition(user: string, jid: string, table: TransitionTable, opts: TransitionOptions): Promise<TransitionResult> {
    checkUser(user);
    const { max, maxPending, maxOutgoing } = transitionLimits(opts);
    checkTable(table);
    return this.tx(user, true, async (t): Promise<TransitionResult> => {
      const row = await t.item(jid);
      const current = row ? rowToItem(row) : undefined;
      const pending = await t.pending(jid);
      const { before, after, next, createItem, changeItem, addPending, dropPending, addAsk } = planTransition(current, pending, table);
      if (after === before) return { before, after };
      if (createItem && (await t.full(max))) return { before, after: before, full: 'items' };
      // A contact already in the roster is no stranger: its request is let in beyond the limit.
      if (addPending && !pending && !current && (await t.count('SELECT count(*) AS n FROM roster_pending WHERE username = $1')) >= maxPending) return { before, after: before, full: 'pending' };
      if (addAsk && (await t.count("SELECT count(*) AS n FROM roster_items WHERE username = $1 AND ask = 'subscribe' AND subscription IN ('none', 'from')")) >= maxOutgoing) return { before, after: before, full: 'outgoing' };
      if (addPending) {
        // Replaces a stale request (one the state did not count) as a new arrival.
        await t.query(
          `INSERT INTO roster_pending (username, jid, stanza, seq)
           VALUES ($1, $2, $3, (SELECT coalesce(max(seq), 0) + 1 FROM roster_pending WHERE username = $1))
           ON CONFLICT (username, jid) DO UPDATE SET stanza = excluded.stanza, seq = excluded.seq`,
          [user, jid, opts.request ?? ''],
        );
      }
      if (dropPending) await t.query('DELETE FROM roster_pending WHERE username = $1 AND jid = $2', [user, jid]);
      if (!changeItem) return { before, after };
      if (createItem) await t.query('INSERT INTO roster_items (username, jid, details, subscription, ask) VALUES ($1, $2, $3, $4, $5)', [user, jid, encodeDetails({ groups: [] }), next.subscription, next.ask ?? null]);
      else await t.query('UPDATE roster_items SET subscription = $1, ask = $2 WHERE username = $3 AND jid = $4', [next.subscription, next.ask ?? null, user, jid]);
      const version = await t.bump();
      return { before, after, change: { version, item: rowToItem((await t.item(jid))!) } };
    });
  }

  async state(user: string, jid: string): Promise<SubState> {
    checkUser(user);
    return this.tx(user, false, async (t) => {
      const row = await t.item(jid);
      return composeState(row ? rowToItem(row) : undefined, await t.pending(jid));
    });
  }

  async pendingRequests(user: string): Promise<PendingRequest[]> {
    checkUser(user);
    return (await this.pool.query<PendingRequest>('SELECT jid, stanza FROM roster_pending WHERE username = $1 ORDER BY seq', [user])).rows.map((r) => ({ jid: r.jid, stanza: r.stanza }));
  }

}
