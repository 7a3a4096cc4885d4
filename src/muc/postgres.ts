// Multi-user chat rooms in PostgreSQL, for a cluster: the SQLite store's
// rules on the schema of migration 11 (storage/postgres-schema.ts). A change
// that checks before it writes holds the room's advisory lock for its
// transaction (the room's existence, its affiliation count, a nickname's
// holder are those written to, whichever node writes); a new room also holds
// the service's, so that two nodes making rooms at once do not both pass
// the bound on their number.
import type pg from 'pg';
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import { type Affiliation, type RoomBounds, type RoomConfig, type RoomStore, type StoredRoom, ROOM_BOUNDS, RoomListFullError, checkNick, configJson, parseRoomConfig } from './store.ts';

/** The advisory lock keys: one per room, and the service's for the room count ('muc:rooms' is no room's key). */
const roomLock = (room: string) => `muc:room:${room}`;
const COUNT_LOCK = 'muc:rooms';

const count = async (c: pg.PoolClient, sql: string, args: unknown[]): Promise<number> => Number((await c.query<{ n: string }>(sql, args)).rows[0].n);
const exists = async (c: pg.PoolClient, room: string): Promise<boolean> => ((await c.query('SELECT 1 FROM muc_rooms WHERE room = $1', [room])).rowCount ?? 0) > 0;

interface RoomRow {
  room: string;
  config: string;
  subject: string | null;
  subject_by: string | null;
  subject_stamp: string | null;
  created: string;
}

export class PostgresRoomStore extends PooledStore implements RoomStore {
  private readonly bounds: RoomBounds;

  private constructor(pool: pg.Pool, release: () => Promise<void>, bounds: RoomBounds) {
    super(pool, release);
    this.bounds = bounds;
  }

  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date; `bounds` smaller than the service's only in tests. */
  static async open(url: string, bounds: Partial<RoomBounds> = {}): Promise<PostgresRoomStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresRoomStore(pool, release, { ...ROOM_BOUNDS, ...bounds });
  }

  async get(room: string): Promise<StoredRoom | undefined> {
    return transaction(this.pool, undefined, async (c) => {
      const r = (await c.query<RoomRow>('SELECT room, config, subject, subject_by, subject_stamp, created FROM muc_rooms WHERE room = $1', [room])).rows[0];
      if (!r) return undefined;
      const out: StoredRoom = { room: r.room, config: parseRoomConfig(r.config), affiliations: [], created: Number(r.created) };
      if (r.subject !== null) out.subject = { text: r.subject, by: r.subject_by ?? '', stamp: Number(r.subject_stamp ?? 0) };
      // COLLATE "C": the order SQLite gives (bytewise), whatever the database's collation.
      const affs = await c.query<{ jid: string; affiliation: Affiliation; reason: string | null }>('SELECT jid, affiliation, reason FROM muc_affiliations WHERE room = $1 ORDER BY jid COLLATE "C"', [room]);
      for (const a of affs.rows) out.affiliations.push(a.reason === null ? { jid: a.jid, affiliation: a.affiliation } : { jid: a.jid, affiliation: a.affiliation, reason: a.reason });
      return out;
    });
  }

  async save(room: StoredRoom): Promise<boolean> {
    const cfg = configJson(room.config);
    const sub = room.subject;
    const subject = [sub?.text ?? null, sub?.by ?? null, sub?.stamp ?? null];
    return transaction(this.pool, roomLock(room.room), async (c) => {
      if (await exists(c, room.room)) {
        await c.query('UPDATE muc_rooms SET config = $2, public = $3, subject = $4, subject_by = $5, subject_stamp = $6 WHERE room = $1', [room.room, cfg, room.config.public, ...subject]);
        return true;
      }
      await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [COUNT_LOCK]);
      if ((await count(c, 'SELECT count(*) AS n FROM muc_rooms', [])) >= this.bounds.maxRooms) return false;
      const affs = new Map(room.affiliations.map((a) => [a.jid, a]));
      if (affs.size > this.bounds.maxAffiliations) throw new RoomListFullError('affiliations', this.bounds.maxAffiliations);
      await c.query('INSERT INTO muc_rooms (room, config, public, subject, subject_by, subject_stamp, created) VALUES ($1, $2, $3, $4, $5, $6, $7)', [room.room, cfg, room.config.public, ...subject, room.created]);
      // Rows of an earlier room of this name that outlived it (removed by hand, not by remove()) are not the new room's.
      await c.query('DELETE FROM muc_affiliations WHERE room = $1', [room.room]);
      await c.query('DELETE FROM muc_nicks WHERE room = $1', [room.room]);
      const list = [...affs.values()];
      if (list.length > 0) {
        await c.query(
          'INSERT INTO muc_affiliations (room, jid, affiliation, reason) SELECT $1::text, * FROM unnest($2::text[], $3::text[], $4::text[])',
          [room.room, list.map((a) => a.jid), list.map((a) => a.affiliation), list.map((a) => a.reason ?? null)],
        );
      }
      return true;
    });
  }

  async setAffiliation(room: string, jid: string, affiliation: Affiliation | 'none', reason?: string): Promise<boolean> {
    return transaction(this.pool, roomLock(room), async (c) => {
      if (!(await exists(c, room))) return false;
      if (affiliation === 'none') {
        await c.query('DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2', [room, jid]);
        return true;
      }
      const had = ((await c.query('SELECT 1 FROM muc_affiliations WHERE room = $1 AND jid = $2', [room, jid])).rowCount ?? 0) > 0;
      if (!had && (await count(c, 'SELECT count(*) AS n FROM muc_affiliations WHERE room = $1', [room])) >= this.bounds.maxAffiliations) {
        throw new RoomListFullError('affiliations', this.bounds.maxAffiliations);
      }
      await c.query('INSERT INTO muc_affiliations (room, jid, affiliation, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, reason = excluded.reason', [room, jid, affiliation, reason ?? null]);
      return true;
    });
  }

  async remove(room: string): Promise<void> {
    await transaction(this.pool, roomLock(room), async (c) => {
      await c.query('DELETE FROM muc_affiliations WHERE room = $1', [room]);
      await c.query('DELETE FROM muc_nicks WHERE room = $1', [room]);
      await c.query('DELETE FROM muc_rooms WHERE room = $1', [room]);
    });
  }

  async listPublic(max: number, after?: string): Promise<{ room: string; config: RoomConfig }[]> {
    const q = after === undefined
      ? this.pool.query<{ room: string; config: string }>('SELECT room, config FROM muc_rooms WHERE public ORDER BY room COLLATE "C" LIMIT $1', [max])
      : this.pool.query<{ room: string; config: string }>('SELECT room, config FROM muc_rooms WHERE public AND room COLLATE "C" > $2 ORDER BY room COLLATE "C" LIMIT $1', [max, after]);
    return (await q).rows.map((r) => ({ room: r.room, config: parseRoomConfig(r.config) }));
  }

  async nickOf(room: string, jid: string): Promise<string | undefined> {
    return (await this.pool.query<{ nick: string }>('SELECT nick FROM muc_nicks WHERE room = $1 AND jid = $2', [room, jid])).rows[0]?.nick;
  }

  async nickOwner(room: string, nick: string): Promise<string | undefined> {
    return (await this.pool.query<{ jid: string }>('SELECT jid FROM muc_nicks WHERE room = $1 AND nick = $2', [room, nick])).rows[0]?.jid;
  }

  async registerNick(room: string, jid: string, nick: string | undefined): Promise<boolean> {
    if (nick === undefined) {
      await this.pool.query('DELETE FROM muc_nicks WHERE room = $1 AND jid = $2', [room, jid]);
      return true;
    }
    checkNick(nick);
    return transaction(this.pool, roomLock(room), async (c) => {
      if (!(await exists(c, room))) return false;
      const holder = (await c.query<{ jid: string }>('SELECT jid FROM muc_nicks WHERE room = $1 AND nick = $2', [room, nick])).rows[0]?.jid;
      if (holder !== undefined) return holder === jid;
      const had = ((await c.query('SELECT 1 FROM muc_nicks WHERE room = $1 AND jid = $2', [room, jid])).rowCount ?? 0) > 0;
      if (!had && (await count(c, 'SELECT count(*) AS n FROM muc_nicks WHERE room = $1', [room])) >= this.bounds.maxNicks) {
        throw new RoomListFullError('nicknames', this.bounds.maxNicks);
      }
      await c.query('INSERT INTO muc_nicks (room, jid, nick) VALUES ($1, $2, $3) ON CONFLICT (room, jid) DO UPDATE SET nick = excluded.nick', [room, jid, nick]);
      return true;
    });
  }

  async forget(jid: string): Promise<void> {
    // Both deletions or neither (a writer's transaction takes a lock: the JID's, which nothing else holds).
    await transaction(this.pool, `muc:jid:${jid}`, async (c) => {
      await c.query('DELETE FROM muc_affiliations WHERE jid = $1', [jid]);
      await c.query('DELETE FROM muc_nicks WHERE jid = $1', [jid]);
    });
  }
}
