// Multi-user chat rooms in SQLite (node:sqlite), muc.sqlite beside the other
// stores; on a running node the storage thread alone writes it. Every change
// that checks before it writes (a bound, a room's existence, a nickname's
// holder) runs in one BEGIN IMMEDIATE transaction.
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { openDatabase, transaction } from '../storage/sqlite.ts';
import { type Affiliation, type RoomBounds, type RoomConfig, type RoomStore, type StoredRoom, ROOM_BOUNDS, RoomListFullError, checkNick, configJson, parseRoomConfig } from './store.ts';

// `public` is the configuration's, kept apart for listPublic's index.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS muc_rooms (
  room TEXT PRIMARY KEY,
  config TEXT NOT NULL,
  public INTEGER NOT NULL,
  subject TEXT,
  subject_by TEXT,
  subject_stamp INTEGER,
  created INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS muc_rooms_public ON muc_rooms (public, room);
CREATE TABLE IF NOT EXISTS muc_affiliations (
  room TEXT NOT NULL,
  jid TEXT NOT NULL,
  affiliation TEXT NOT NULL,
  reason TEXT,
  PRIMARY KEY (room, jid)
) STRICT;
CREATE INDEX IF NOT EXISTS muc_affiliations_jid ON muc_affiliations (jid);
CREATE TABLE IF NOT EXISTS muc_nicks (
  room TEXT NOT NULL,
  jid TEXT NOT NULL,
  nick TEXT NOT NULL,
  PRIMARY KEY (room, jid),
  UNIQUE (room, nick)
) STRICT;
CREATE INDEX IF NOT EXISTS muc_nicks_jid ON muc_nicks (jid);
`;

type Stmt = 'room' | 'exists' | 'count' | 'insert' | 'update' | 'affs' | 'affOf' | 'affCount' | 'setAff' | 'delAff' | 'delRoom' | 'delAffs' | 'delNicks' | 'listPublic' | 'listPublicAfter' | 'nickOf' | 'nickOwner' | 'nickCount' | 'setNick' | 'delNick' | 'forgetAffs' | 'forgetNicks';

interface RoomRow {
  room: string;
  config: string;
  subject: string | null;
  subject_by: string | null;
  subject_stamp: number | null;
  created: number;
}

export class SqliteRoomStore implements RoomStore {
  private readonly db: DatabaseSync;
  private readonly bounds: RoomBounds;
  private readonly s: Record<Stmt, StatementSync>;
  private closed = false;

  private constructor(db: DatabaseSync, bounds: RoomBounds) {
    this.db = db;
    this.bounds = bounds;
    this.s = {
      room: db.prepare('SELECT room, config, subject, subject_by, subject_stamp, created FROM muc_rooms WHERE room = ?'),
      exists: db.prepare('SELECT 1 AS x FROM muc_rooms WHERE room = ?'),
      count: db.prepare('SELECT count(*) AS n FROM muc_rooms'),
      insert: db.prepare('INSERT INTO muc_rooms (room, config, public, subject, subject_by, subject_stamp, created) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      update: db.prepare('UPDATE muc_rooms SET config = ?, public = ?, subject = ?, subject_by = ?, subject_stamp = ? WHERE room = ?'),
      affs: db.prepare('SELECT jid, affiliation, reason FROM muc_affiliations WHERE room = ? ORDER BY jid'),
      affOf: db.prepare('SELECT 1 AS x FROM muc_affiliations WHERE room = ? AND jid = ?'),
      affCount: db.prepare('SELECT count(*) AS n FROM muc_affiliations WHERE room = ?'),
      setAff: db.prepare('INSERT INTO muc_affiliations (room, jid, affiliation, reason) VALUES (?, ?, ?, ?) ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation, reason = excluded.reason'),
      delAff: db.prepare('DELETE FROM muc_affiliations WHERE room = ? AND jid = ?'),
      delRoom: db.prepare('DELETE FROM muc_rooms WHERE room = ?'),
      delAffs: db.prepare('DELETE FROM muc_affiliations WHERE room = ?'),
      delNicks: db.prepare('DELETE FROM muc_nicks WHERE room = ?'),
      listPublic: db.prepare('SELECT room, config FROM muc_rooms WHERE public = 1 ORDER BY room LIMIT ?'),
      listPublicAfter: db.prepare('SELECT room, config FROM muc_rooms WHERE public = 1 AND room > ? ORDER BY room LIMIT ?'),
      nickOf: db.prepare('SELECT nick FROM muc_nicks WHERE room = ? AND jid = ?'),
      nickOwner: db.prepare('SELECT jid FROM muc_nicks WHERE room = ? AND nick = ?'),
      nickCount: db.prepare('SELECT count(*) AS n FROM muc_nicks WHERE room = ?'),
      setNick: db.prepare('INSERT INTO muc_nicks (room, jid, nick) VALUES (?, ?, ?) ON CONFLICT (room, jid) DO UPDATE SET nick = excluded.nick'),
      delNick: db.prepare('DELETE FROM muc_nicks WHERE room = ? AND jid = ?'),
      forgetAffs: db.prepare('DELETE FROM muc_affiliations WHERE jid = ?'),
      forgetNicks: db.prepare('DELETE FROM muc_nicks WHERE jid = ?'),
    };
  }

  /** Opens (or makes) the file; `bounds` smaller than the service's only in tests. */
  static open(file: string, bounds: Partial<RoomBounds> = {}): SqliteRoomStore {
    return new SqliteRoomStore(openDatabase(file, SCHEMA), { ...ROOM_BOUNDS, ...bounds });
  }

  async get(room: string): Promise<StoredRoom | undefined> {
    return transaction(this.db, false, () => {
      const r = this.s.room.get(room) as RoomRow | undefined;
      if (!r) return undefined;
      const out: StoredRoom = { room: r.room, config: parseRoomConfig(r.config), affiliations: [], created: Number(r.created) };
      if (r.subject !== null) out.subject = { text: r.subject, by: r.subject_by ?? '', stamp: Number(r.subject_stamp ?? 0) };
      for (const a of this.s.affs.all(room) as { jid: string; affiliation: Affiliation; reason: string | null }[]) {
        out.affiliations.push(a.reason === null ? { jid: a.jid, affiliation: a.affiliation } : { jid: a.jid, affiliation: a.affiliation, reason: a.reason });
      }
      return out;
    });
  }

  async save(room: StoredRoom): Promise<boolean> {
    const cfg = configJson(room.config);
    const pub = room.config.public ? 1 : 0;
    const sub = room.subject;
    return transaction(this.db, true, () => {
      if (this.s.exists.get(room.room) !== undefined) {
        this.s.update.run(cfg, pub, sub?.text ?? null, sub?.by ?? null, sub?.stamp ?? null, room.room);
        return true;
      }
      if (Number((this.s.count.get() as { n: number }).n) >= this.bounds.maxRooms) return false;
      const affs = new Map(room.affiliations.map((a) => [a.jid, a]));
      if (affs.size > this.bounds.maxAffiliations) throw new RoomListFullError('affiliations', this.bounds.maxAffiliations);
      this.s.insert.run(room.room, cfg, pub, sub?.text ?? null, sub?.by ?? null, sub?.stamp ?? null, room.created);
      // Rows of an earlier room of this name that outlived it (removed by hand, not by remove()) are not the new room's.
      this.s.delAffs.run(room.room);
      this.s.delNicks.run(room.room);
      for (const a of affs.values()) this.s.setAff.run(room.room, a.jid, a.affiliation, a.reason ?? null);
      return true;
    });
  }

  async setAffiliation(room: string, jid: string, affiliation: Affiliation | 'none', reason?: string): Promise<boolean> {
    return transaction(this.db, true, () => {
      if (this.s.exists.get(room) === undefined) return false;
      if (affiliation === 'none') {
        this.s.delAff.run(room, jid);
        return true;
      }
      if (this.s.affOf.get(room, jid) === undefined && Number((this.s.affCount.get(room) as { n: number }).n) >= this.bounds.maxAffiliations) {
        throw new RoomListFullError('affiliations', this.bounds.maxAffiliations);
      }
      this.s.setAff.run(room, jid, affiliation, reason ?? null);
      return true;
    });
  }

  async remove(room: string): Promise<void> {
    transaction(this.db, true, () => {
      this.s.delAffs.run(room);
      this.s.delNicks.run(room);
      this.s.delRoom.run(room);
    });
  }

  async listPublic(max: number, after?: string): Promise<{ room: string; config: RoomConfig }[]> {
    const rows = (after === undefined ? this.s.listPublic.all(max) : this.s.listPublicAfter.all(after, max)) as { room: string; config: string }[];
    return rows.map((r) => ({ room: r.room, config: parseRoomConfig(r.config) }));
  }

  async nickOf(room: string, jid: string): Promise<string | undefined> {
    return (this.s.nickOf.get(room, jid) as { nick: string } | undefined)?.nick;
  }

  async nickOwner(room: string, nick: string): Promise<string | undefined> {
    return (this.s.nickOwner.get(room, nick) as { jid: string } | undefined)?.jid;
  }

  async registerNick(room: string, jid: string, nick: string | undefined): Promise<boolean> {
    if (nick === undefined) {
      this.s.delNick.run(room, jid);
      return true;
    }
    checkNick(nick);
    return transaction(this.db, true, () => {
      if (this.s.exists.get(room) === undefined) return false;
      const holder = (this.s.nickOwner.get(room, nick) as { jid: string } | undefined)?.jid;
      if (holder !== undefined) return holder === jid;
      if (this.s.nickOf.get(room, jid) === undefined && Number((this.s.nickCount.get(room) as { n: number }).n) >= this.bounds.maxNicks) {
        throw new RoomListFullError('nicknames', this.bounds.maxNicks);
      }
      this.s.setNick.run(room, jid, nick);
      return true;
    });
  }

  async forget(jid: string): Promise<void> {
    transaction(this.db, true, () => {
      this.s.forgetAffs.run(jid);
      this.s.forgetNicks.run(jid);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
