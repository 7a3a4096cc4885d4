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
  /** Bare JID → affiliation (none: absent), with the reason given when it was set. */
  affiliations: { jid: string; affiliation: Affiliation; reason?: string }[];
  created: number;
}

/** The most affiliations one room keeps (outcasts included). */
export const MAX_AFFILIATIONS = 10_000;
/** The most rooms the service keeps. */
export const MAX_ROOMS = 100_000;

export interface RoomStore {
  get(room: string): Promise<StoredRoom | undefined>;
  /** Creates or replaces the room's configuration and subject (not its affiliations); false past MAX_ROOMS for a new room. */
  save(room: StoredRoom): Promise<boolean>;
  /** Sets (none removes) one affiliation of an existing room; false when there is no such room. */
  setAffiliation(room: string, jid: string, affiliation: Affiliation | 'none', reason?: string): Promise<boolean>;
  /** Removes the room, its affiliations and registered nicknames. */
  remove(room: string): Promise<void>;
  /** The public rooms' names and configurations, by name, at most `max`. */
  listPublic(max: number): Promise<{ room: string; config: RoomConfig }[]>;
  /** XEP-0045 §7.10: the nickname a bare JID registered in the room, if any. */
  nickOf(room: string, jid: string): Promise<string | undefined>;
  /** Who registered the nickname in the room, if anyone. */
  nickOwner(room: string, nick: string): Promise<string | undefined>;
  /** Registers (undefined: cancels) a bare JID's nickname; false when another JID holds it. */
  registerNick(room: string, jid: string, nick: string | undefined): Promise<boolean>;
  close(): void | Promise<void>;
}

/** A configuration as stored (JSON), read back with defaults for anything missing. */
export function parseRoomConfig(json: string): RoomConfig {
  return { ...DEFAULT_ROOM_CONFIG, ...(JSON.parse(json) as Partial<RoomConfig>) };
}
