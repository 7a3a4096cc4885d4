// Multi-user chat (XEP-0045): what a room keeps across restarts and node
// deaths. A room's configuration, subject, affiliations and registered
// nicknames are durable (SQLite on one node, PostgreSQL in a cluster, one
// contract suite); its occupants are not (they live with the room's actor,
// and in a cluster in Redis, muc/occupants.ts); its messages are in the
// message archive under the room's own key (mam/store.ts, archiveKey).
// Rooms are keyed by their localpart, normalised; one service per server.

/** XEP-0045 §5.2 affiliations kept (none is the absence of one). */
export type Affiliation = 'owner' | 'admin' | 'member' | 'outcast';
export const AFFILIATIONS: readonly Affiliation[] = ['owner', 'admin', 'member', 'outcast'];

/** XEP-0045 §10.2 (muc#roomconfig) as the server keeps it. */
export interface RoomConfig {
  /** muc#roomconfig_roomname */
  name: string;
  /** muc#roomconfig_roomdesc */
  description: string;
  /** muc#roomconfig_persistentroom: kept when the last occupant leaves. */
  persistent: boolean;
  /** muc#roomconfig_publicroom: listed in the service's disco#items. */
  public: boolean;
  /** muc#roomconfig_membersonly */
  membersOnly: boolean;
  /** muc#roomconfig_moderatedroom: visitors may not speak. */
  moderated: boolean;
  /** muc#roomconfig_roomsecret ('' for none). */
  password: string;
  /** muc#roomconfig_whois: who sees occupants' real JIDs. */
  whois: 'moderators' | 'anyone';
  /** muc#roomconfig_maxusers (0: the service's bound). */
  maxUsers: number;
  /** muc#maxhistoryfetch: messages sent to a joining occupant. */
  historyLength: number;
  /** muc#roomconfig_changesubject: participants may change the subject. */
  changeSubject: boolean;
  /** muc#roomconfig_allowinvites: participants may invite (members-only rooms: they become members). */
  allowInvites: boolean;
  /** muc#roomconfig_allowpm: who may send private messages. */
  allowPm: 'anyone' | 'participants' | 'moderators' | 'none';
  /** muc#roomconfig_enablelogging: the room's messages are archived (XEP-0313 on the room's JID). */
  archive: boolean;
  /** XEP-0421: occupants get stable occupant ids. */
  occupantIds: boolean;
}

export const DEFAULT_ROOM_CONFIG: RoomConfig = {
  name: '',
  description: '',
  persistent: false,
  public: true,
  membersOnly: false,
  moderated: false,
  password: '',
  whois: 'moderators',
  maxUsers: 0,
  historyLength: 20,
  changeSubject: false,
  allowInvites: false,
  allowPm: 'anyone',
  archive: true,
  occupantIds: true,
};

export interface Subject {
  text: string;
  /** The nickname that set it ('' : the room). */
  by: string;
  stamp: number;
}

/** What is stored of one room. */
export interface StoredRoom {
  room: string;
  config: RoomConfig;
  subject?: Subject;
  /** Bare JID → affiliation (none: absent), with the reason given when it was set; sorted by JID (bytewise) when read. */
  affiliations: { jid: string; affiliation: Affiliation; reason?: string }[];
  /** When the room was made (ms); kept from the first save. */
  created: number;
}

/** The most affiliations one room keeps (outcasts included). */
export const MAX_AFFILIATIONS = 10_000;
/** The most nicknames registered in one room (§7.10; registering usually makes a member, so as many as affiliations). */
export const MAX_NICKS = MAX_AFFILIATIONS;
/** The most rooms the service keeps. */
export const MAX_ROOMS = 100_000;
/** The longest nickname kept, in UTF-8 bytes (a resourcepart's bound, RFC 7622 §3.4). */
export const MAX_NICK_BYTES = 1023;

/** The bounds a store enforces; the constants above unless a test gives smaller ones. */
export interface RoomBounds {
  maxRooms: number;
  maxAffiliations: number;
  maxNicks: number;
}
export const ROOM_BOUNDS: RoomBounds = { maxRooms: MAX_ROOMS, maxAffiliations: MAX_AFFILIATIONS, maxNicks: MAX_NICKS };

/**
 * A room's affiliation list or its registered nicknames are at their bound:
 * what would have added one more (a new JID) changed nothing. `max` comes
 * back through the storage thread with the name.
 */
export class RoomListFullError extends Error {
  override name = 'RoomListFullError';
  readonly max: number;
  constructor(what: 'affiliations' | 'nicknames', max: number) {
    super(`at most ${max} ${what} per room`);
    this.max = max;
  }
}

/**
 * Rooms by their normalised localpart. Nicknames are compared as given:
 * the MUC module prepares them (PRECIS OpaqueString after the nickname
 * rules of RFC 7700, as XEP-0045 asks) before any call here.
 * JIDs are bare and prepared.
 */
export interface RoomStore {
  get(room: string): Promise<StoredRoom | undefined>;
  /**
   * Creates the room, or replaces an existing room's configuration and
   * subject. A new room is made with the affiliations given (its owner with
   * it, in one step; RoomListFullError past the bound); an existing room's
   * affiliations are not touched (setAffiliation changes them), nor its
   * `created`. False, and nothing made, for a new room past MAX_ROOMS.
   */
  save(room: StoredRoom): Promise<boolean>;
  /**
   * Sets (none removes) one affiliation of an existing room, with its reason
   * (undefined: none kept); false when there is no such room. A JID not
   * affiliated yet past MAX_AFFILIATIONS throws RoomListFullError (false
   * means only "no room", so that the module tells the two apart).
   */
  setAffiliation(room: string, jid: string, affiliation: Affiliation | 'none', reason?: string): Promise<boolean>;
  /** Removes the room, its affiliations and registered nicknames (§10.9 destroy, or a temporary room emptied). */
  remove(room: string): Promise<void>;
  /** The public rooms' names and configurations, by room (bytewise), at most `max`, those after `after` (XEP-0059 paging of disco#items). */
  listPublic(max: number, after?: string): Promise<{ room: string; config: RoomConfig }[]>;
  /** XEP-0045 §7.10: the nickname a bare JID registered in the room, if any. */
  nickOf(room: string, jid: string): Promise<string | undefined>;
  /** Who registered the nickname in the room, if anyone. */
  nickOwner(room: string, nick: string): Promise<string | undefined>;
  /**
   * Registers (undefined: cancels) a bare JID's nickname in an existing
   * room: one per JID (a new one replaces the JID's old one) and one JID per
   * nickname. False when another JID holds it (§7.10: a conflict) or there
   * is no such room. A JID with none yet past MAX_NICKS throws
   * RoomListFullError; a nickname empty or longer than MAX_NICK_BYTES, a
   * RangeError. Cancelling is always true.
   */
  registerNick(room: string, jid: string, nick: string | undefined): Promise<boolean>;
  /**
   * Everything a bare JID holds in every room: its affiliations and its
   * registered nicknames (its account is removed: a new account of the same
   * name must not inherit them: it is someone else; so an outcast one goes
   * too, and a local user banned from a room could come back that way,
   * under a new account the server's admins let be made). A room whose only
   * owner it was keeps no owner; the service's admins can still configure it
   * and name another.
   */
  forget(jid: string): Promise<void>;
  close(): void | Promise<void>;
}

/** A configuration as stored (JSON), read back with defaults for anything missing. */
export function parseRoomConfig(json: string): RoomConfig {
  return { ...DEFAULT_ROOM_CONFIG, ...(JSON.parse(json) as Partial<RoomConfig>) };
}

/** A configuration as stored: the known fields only, whatever else the object carries. */
export function configJson(c: RoomConfig): string {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(DEFAULT_ROOM_CONFIG) as (keyof RoomConfig)[]) out[k] = c[k];
  return JSON.stringify(out);
}

/** Throws RangeError for a nickname the stores do not keep. */
export function checkNick(nick: string): void {
  if (nick === '' || (nick.length * 3 > MAX_NICK_BYTES && Buffer.byteLength(nick, 'utf8') > MAX_NICK_BYTES)) throw new RangeError(`a nickname is 1 to ${MAX_NICK_BYTES} bytes`);
}
