// The one-shot move of a cluster's durable data from Redis, where nodes
// before PostgreSQL kept it, into PostgreSQL: accounts with their SCRAM
// verifiers, rosters with their versions, pending subscription requests in
// arrival order, and offline messages in order. Idempotent: what is already
// in the database (an account, a roster item, a request, a message by its
// Redis id) is left as it is, so the move can run again after an
// interruption. With `dryRun`, nothing is written and the counts say what
// would be.
//
// The layout read (namespace "xmpp:"; <user> a normalised localpart, which
// holds no ':'):
//   xmpp:accounts              set     every username
//   xmpp:acct:<user>           hash    created (ms), sha1:salt, sha1:iterations, sha1:storedKey,
//                                      sha1:serverKey, sha256:... (binary values)
//   xmpp:scram-fake-salt-key   string  the key of SCRAM's fake salts
//   xmpp:roster:<user>         hash    '#e' epoch, '#v' change counter (the version is "<e>.<v>"),
//                                      'j:<jid>' "<subscription>[ subscribe]\n<details: roster/store.ts encodeDetails>"
//   xmpp:pending:<user>        hash    '#n' arrival counter, 'r:<jid>' "<arrival number>\n<request stanza>"
//   xmpp:offq:<user>           stream  one entry per stanza (field 'x'), oldest first
//   xmpp:offline:<user>        list    the stanzas of the layout before the stream
// (and xmpp:offb:/offc: byte counts and claims, which have nothing to move).
import type { Redis } from 'ioredis';
import type pg from 'pg';

export interface ImportCounts {
  accounts: number;
  rosterItems: number;
  pending: number;
  offline: number;
  /** Already in the database, left as they were. */
  skipped: number;
  /** The key of SCRAM's fake salts in the database differs from Redis's (the database's was kept). */
  fakeSaltKeyDiffers?: boolean;
}

/** Written in meta when an import completed: a later one would bring back what the nodes have deleted since. */
export const IMPORTED = 'imported-from-redis';

export class AlreadyImportedError extends Error {
  override name = 'AlreadyImportedError';
}

const SCRAM = ['sha1', 'sha256'] as const;
const PARTS = ['salt', 'iterations', 'storedKey', 'serverKey'] as const;

/** Every key matching a pattern (SCAN, not KEYS: Redis keeps serving meanwhile). */
async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

/**
 * `empty`: the database has no schema yet (a dry run does not make one):
 * nothing in it, everything would move. `force`: run even after a completed
 * import (see IMPORTED).
 */
export async function importRedis(redis: Redis, db: pg.Pool, opts: { dryRun: boolean; namespace?: string; empty?: boolean; force?: boolean }): Promise<ImportCounts> {
  const ns = opts.namespace ?? 'xmpp:';
  const counts: ImportCounts = { accounts: 0, rosterItems: 0, pending: 0, offline: 0, skipped: 0 };
  const exists = async (sql: string, params: unknown[]) => !opts.empty && ((await db.query(sql, params)).rowCount ?? 0) > 0;
  if (!opts.empty && !opts.force) {
    const done = (await db.query<{ value: Buffer }>('SELECT value FROM meta WHERE key = $1', [IMPORTED])).rows[0];
    // Nodes that ran on the database since have removed accounts, items and delivered messages that Redis still has.
    if (done) throw new AlreadyImportedError(`the data was imported from Redis already (${done.value.toString()}); importing again would bring back what was removed or delivered since: --force to do it all the same`);
  }
  /** Inserts (or, dry, checks) one row; counts it as moved or skipped. */
  const put = async (kind: keyof Omit<ImportCounts, 'skipped'>, check: [string, unknown[]], insert: [string, unknown[]]) => {
    if (opts.dryRun) {
      if (await exists(...check)) counts.skipped++;
      else counts[kind]++;
      return;
    }
    const r = await db.query(insert[0], insert[1]);
    if ((r.rowCount ?? 0) > 0) counts[kind]++;
    else counts.skipped++;
  };

  // Accounts, and the key of SCRAM's fake salts (kept, so that unknown users look the same as before).
  const secret = await redis.getBuffer(`${ns}scram-fake-salt-key`);
  if (secret && !opts.empty) {
    if (!opts.dryRun) await db.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', ['scram-fake-salt-key', secret]);
    const kept = (await db.query<{ value: Buffer }>('SELECT value FROM meta WHERE key = $1', ['scram-fake-salt-key'])).rows[0];
    if (kept && !kept.value.equals(secret)) counts.fakeSaltKeyDiffers = true;
  }
  for (const user of await redis.smembers(`${ns}accounts`)) {
    const h = await redis.hgetallBuffer(`${ns}acct:${user}`);
    if (!h.created) continue; // removed meanwhile
    const v = (scram: string, part: string) => h[`${scram}:${part}`];
    const values = SCRAM.flatMap((s) => PARTS.map((p) => (p === 'iterations' ? (v(s, p) ? Number(v(s, p)!.toString()) : null) : (v(s, p) ?? null))));
    if (values.slice(0, 4).some((x) => x === null)) throw new Error(`account ${user} in Redis has no SHA-1 verifiers`);
    await put(
      'accounts',
      ['SELECT 1 FROM accounts WHERE username = $1', [user]],
      [`INSERT INTO accounts (username, created, sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key, sha256_salt, sha256_iterations, sha256_stored_key, sha256_server_key)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (username) DO NOTHING`, [user, Number(h.created.toString()), ...values]],
    );
  }

  // Rosters: items ('j:<jid>' → "<subscription>[ subscribe]\n<details>") and the version.
  for (const key of await scanKeys(redis, `${ns}roster:*`)) {
    const user = key.slice(`${ns}roster:`.length);
    const all = await redis.hgetall(key);
    for (const [field, value] of Object.entries(all)) {
      if (!field.startsWith('j:')) continue;
      const nl = value.indexOf('\n');
      const [subscription, ask] = value.slice(0, nl).split(' ');
      const jid = field.slice(2);
      await put(
        'rosterItems',
        ['SELECT 1 FROM roster_items WHERE username = $1 AND jid = $2', [user, jid]],
        ['INSERT INTO roster_items (username, jid, details, subscription, ask) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username, jid) DO NOTHING', [user, jid, value.slice(nl + 1), subscription, ask === 'subscribe' ? 'subscribe' : null]],
      );
    }
    if (all['#e'] !== undefined && all['#v'] !== undefined && !opts.dryRun) {
      await db.query('INSERT INTO roster_versions (username, epoch, counter) VALUES ($1, $2, $3) ON CONFLICT (username) DO NOTHING', [user, all['#e'], Number(all['#v'])]);
    }
  }

  // Pending requests ('r:<jid>' → "<arrival number>\n<stanza>"), in arrival order.
  for (const key of await scanKeys(redis, `${ns}pending:*`)) {
    const user = key.slice(`${ns}pending:`.length);
    for (const [field, value] of Object.entries(await redis.hgetall(key))) {
      if (!field.startsWith('r:')) continue;
      const nl = value.indexOf('\n');
      const jid = field.slice(2);
      await put(
        'pending',
        ['SELECT 1 FROM roster_pending WHERE username = $1 AND jid = $2', [user, jid]],
        ['INSERT INTO roster_pending (username, jid, stanza, seq) VALUES ($1, $2, $3, $4) ON CONFLICT (username, jid) DO NOTHING', [user, jid, value.slice(nl + 1), Number(value.slice(0, nl))]],
      );
    }
  }

  // Offline messages: the stream (and the list of the layout before it), oldest first, each by its Redis id.
  for (const key of await scanKeys(redis, `${ns}offq:*`)) {
    const user = key.slice(`${ns}offq:`.length);
    for (const [id, fields] of await redis.xrange(key, '-', '+')) {
      const x = fields[fields.indexOf('x') + 1];
      const source = `redis:${user}:${id}`;
      await put('offline', ['SELECT 1 FROM offline WHERE source = $1', [source]], ['INSERT INTO offline (username, stanza, stored, source) VALUES ($1, $2, $3, $4) ON CONFLICT (source) DO NOTHING', [user, x, Number(id.split('-')[0]), source]]);
    }
  }
  for (const key of await scanKeys(redis, `${ns}offline:*`)) {
    const user = key.slice(`${ns}offline:`.length);
    const list = await redis.lrange(key, 0, -1);
    for (const [i, x] of list.entries()) {
      const source = `redis-list:${user}:${i}`;
      await put('offline', ['SELECT 1 FROM offline WHERE source = $1', [source]], ['INSERT INTO offline (username, stanza, stored, source) VALUES ($1, $2, $3, $4) ON CONFLICT (source) DO NOTHING', [user, x, Date.now(), source]]);
    }
  }
  if (!opts.dryRun) await db.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [IMPORTED, Buffer.from(new Date().toISOString())]);
  return counts;
}
