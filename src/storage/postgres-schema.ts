// The PostgreSQL schema, as the migrations that build it, oldest first.
// A migration is never edited once released: a change is a new one.
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'accounts',
    // SHA-256 verifiers may be missing: accounts imported from servers that
    // kept SHA-1 only (Prosody) get them the next time the password is known.
    sql: `
      CREATE TABLE accounts (
        username text PRIMARY KEY,
        created bigint NOT NULL,
        sha1_salt bytea NOT NULL,
        sha1_iterations integer NOT NULL,
        sha1_stored_key bytea NOT NULL,
        sha1_server_key bytea NOT NULL,
        sha256_salt bytea,
        sha256_iterations integer,
        sha256_stored_key bytea,
        sha256_server_key bytea
      );
      CREATE TABLE meta (
        key text PRIMARY KEY,
        value bytea NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'rosters',
    // As in SQLite: items by (user, contact), the version per user, and the
    // requests the user has not answered, in arrival order (seq).
    sql: `
      CREATE TABLE roster_versions (
        username text PRIMARY KEY,
        epoch text NOT NULL,
        counter bigint NOT NULL
      );
      CREATE TABLE roster_items (
        username text NOT NULL,
        jid text NOT NULL,
        details text NOT NULL,
        subscription text NOT NULL,
        ask text,
        PRIMARY KEY (username, jid)
      );
      CREATE TABLE roster_pending (
        username text NOT NULL,
        jid text NOT NULL,
        stanza text NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (username, jid)
      );
      CREATE INDEX roster_pending_order ON roster_pending (username, seq);
    `,
  },
  {
    version: 3,
    name: 'offline messages',
    // seq from a sequence: increasing in arrival order and never repeated,
    // so a message stored while a session delivers the queue comes after
    // the last one it read. A claim names the session delivering a queue
    // and until when (ms since the epoch).
    sql: `
      CREATE TABLE offline (
        seq bigserial PRIMARY KEY,
        username text NOT NULL,
        stanza text NOT NULL,
        stored bigint NOT NULL
      );
      CREATE INDEX offline_by_user ON offline (username, seq);
      CREATE TABLE offline_claims (
        username text PRIMARY KEY,
        owner text NOT NULL,
        until bigint NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'offline messages: where an imported one came from',
    // A message moved from Redis (db import-redis) keeps its Redis id here,
    // so that the import can run again without storing it twice.
    sql: `
      ALTER TABLE offline ADD COLUMN source text;
      CREATE UNIQUE INDEX offline_source ON offline (source);
    `,
  },
  {
    version: 5,
    name: 'message archive',
    // XEP-0313: ids sort in the order the server received the messages
    // (mam/store.ts), so (owner, id) orders every query. The full-text
    // index (XEP-0431) is made or dropped by the store as XMPP_MAM_FULLTEXT
    // says (mam/postgres.ts).
    sql: `
      CREATE TABLE archive (
        owner text NOT NULL,
        id text NOT NULL,
        stamp bigint NOT NULL,
        with_bare text NOT NULL,
        with_resource text NOT NULL,
        outgoing boolean NOT NULL,
        body text NOT NULL,
        stanza text NOT NULL,
        PRIMARY KEY (owner, id)
      );
      CREATE INDEX archive_with ON archive (owner, with_bare, id);
      CREATE INDEX archive_stamp ON archive (stamp);
      CREATE TABLE archive_prefs (
        owner text PRIMARY KEY,
        mode text NOT NULL,
        always text[] NOT NULL,
        never text[] NOT NULL
      );
    `,
  },
  {
    version: 6,
    name: 'accounts: SHA-1 verifiers may be missing too',
    // Accounts imported from servers that kept SCRAM-SHA-256 only (XEP-0227
    // exports): either set of verifiers may be missing, never both.
    sql: `
      ALTER TABLE accounts ALTER COLUMN sha1_salt DROP NOT NULL,
        ALTER COLUMN sha1_iterations DROP NOT NULL,
        ALTER COLUMN sha1_stored_key DROP NOT NULL,
        ALTER COLUMN sha1_server_key DROP NOT NULL,
        ADD CONSTRAINT accounts_some_verifiers CHECK (sha1_stored_key IS NOT NULL OR sha256_stored_key IS NOT NULL);
    `,
  },
  {
    version: 7,
    name: 'blocklists',
    // XEP-0191: each account's blocked JIDs (normalised), in the order they
    // were blocked (seq); the unique index serves the list and the count
    // checked against the bound (blocking/postgres.ts).
    sql: `
      CREATE TABLE blocklist (
        seq bigserial PRIMARY KEY,
        owner text NOT NULL,
        jid text NOT NULL,
        UNIQUE (owner, jid)
      );
    `,
  },
  {
    version: 8,
    name: 'vCards and private XML',
    // XEP-0054 and XEP-0049 (personal/store.ts): one vCard per account, with
    // the SHA-1 of its photo (XEP-0153), and one value per namespace of
    // private XML.
    sql: `
      CREATE TABLE vcards (
        username text PRIMARY KEY,
        vcard text NOT NULL,
        photo_hash text NOT NULL
      );
      CREATE TABLE private_xml (
        username text NOT NULL,
        ns text NOT NULL,
        xml text NOT NULL,
        PRIMARY KEY (username, ns)
      );
    `,
  },
  {
    version: 9,
    name: 'PEP nodes and items',
    // XEP-0163 (pep/store.ts): each account's nodes with their configuration
    // (JSON), and their items by id in publish order (seq).
    sql: `
      CREATE TABLE pep_nodes (
        owner text NOT NULL,
        node text NOT NULL,
        config text NOT NULL,
        PRIMARY KEY (owner, node)
      );
      CREATE TABLE pep_items (
        seq bigserial PRIMARY KEY,
        owner text NOT NULL,
        node text NOT NULL,
        id text NOT NULL,
        xml text NOT NULL,
        UNIQUE (owner, node, id)
      );
      CREATE INDEX pep_items_order ON pep_items (owner, node, seq);
    `,
  },
  {
    version: 10,
    name: 'pubsub affiliations and subscriptions',
    // XEP-0060 §4.1, §6.1 (pep/store.ts): the pubsub service's nodes, and the
    // whitelist of an account's own nodes; they go with their node.
    sql: `
      CREATE TABLE pep_affiliations (
        owner text NOT NULL,
        node text NOT NULL,
        jid text NOT NULL,
        affiliation text NOT NULL,
        PRIMARY KEY (owner, node, jid)
      );
      CREATE INDEX pep_affiliations_jid ON pep_affiliations (jid);
      CREATE TABLE pep_subscriptions (
        seq bigserial PRIMARY KEY,
        owner text NOT NULL,
        node text NOT NULL,
        jid text NOT NULL,
        subid text NOT NULL,
        UNIQUE (owner, node, jid)
      );
      CREATE INDEX pep_subscriptions_jid ON pep_subscriptions (jid COLLATE "C");
    `,
  },
  {
    version: 11,
    name: 'multi-user chat rooms',
    // XEP-0045 (muc/store.ts): each room's configuration (JSON, its public
    // flag beside it for the listing) and subject, its affiliations with
    // their reasons, and the nicknames registered in it (§7.10: one per JID,
    // one JID per nickname). Affiliations and nicknames go with their room.
    sql: `
      CREATE TABLE muc_rooms (
        room text PRIMARY KEY,
        config text NOT NULL,
        public boolean NOT NULL,
        subject text,
        subject_by text,
        subject_stamp bigint,
        created bigint NOT NULL
      );
      CREATE INDEX muc_rooms_public ON muc_rooms (room COLLATE "C") WHERE public;
      CREATE TABLE muc_affiliations (
        room text NOT NULL,
        jid text NOT NULL,
        affiliation text NOT NULL,
        reason text,
        PRIMARY KEY (room, jid)
      );
      CREATE INDEX muc_affiliations_jid ON muc_affiliations (jid);
      CREATE TABLE muc_nicks (
        room text NOT NULL,
        jid text NOT NULL,
        nick text NOT NULL,
        PRIMARY KEY (room, jid),
        UNIQUE (room, nick)
      );
      CREATE INDEX muc_nicks_jid ON muc_nicks (jid);
    `,
  },
  {
    version: 12,
    name: 'HTTP upload slots',
    // XEP-0363 (upload/store.ts): each slot by its token, its owner's
    // (for the quota), and what the cleanup looks for: files by upload
    // time, slots never put by the end of their window. Times in ms.
    sql: `
      CREATE TABLE upload_slots (
        token text PRIMARY KEY,
        owner text NOT NULL,
        filename text NOT NULL,
        size bigint NOT NULL,
        type text NOT NULL,
        created bigint NOT NULL,
        put_until bigint NOT NULL,
        state text NOT NULL,
        uploaded bigint NOT NULL
      );
      CREATE INDEX upload_slots_owner ON upload_slots (owner);
      CREATE INDEX upload_slots_done ON upload_slots (uploaded) WHERE state = 'done';
      CREATE INDEX upload_slots_open ON upload_slots (put_until) WHERE state <> 'done';
    `,
  },
  {
    version: 13,
    name: 'PEP items: when each was published',
    // XEP-0060 §6.1.7, XEP-0163 §4.3.4 (pep/store.ts): a last item sent
    // later carries the time of its publish (XEP-0203), ms since the epoch.
    // Items already there take the time of the migration (theirs is not
    // known: now() is the migration's, and a default that is not volatile
    // fills them without rewriting the table); the default stays for a node
    // still on older code in a rolling upgrade, whose inserts name no time.
    sql: `
      ALTER TABLE pep_items ADD COLUMN published bigint NOT NULL DEFAULT (floor(extract(epoch FROM now()) * 1000))::bigint;
    `,
  },
];
