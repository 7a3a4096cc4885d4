// The personal data store in PostgreSQL, for a cluster: the SQLite store's
// tables and rules on the schema of migration 8 (storage/postgres-schema.ts).
// setPrivateXml holds a lock of the account's private XML
// (pg_advisory_xact_lock) for its transaction, so that the count of
// namespaces checked against the limit is the one written to; the private
// XML swap compares under that lock too, and the vCard's swap is one
// conditional statement (store.ts, Compare-and-set).
import type pg from 'pg';
import { acquirePool, transaction, PooledStore } from '../storage/postgres.ts';
import { type PersonalStore, type PrivateEntry, type StoredVcard, PrivateStorageFullError } from './store.ts';

export class PostgresPersonalStore extends PooledStore implements PersonalStore {


  /** Opens the thread's shared pool (storage/postgres.ts), the schema brought up to date. */
  static async open(url: string): Promise<PostgresPersonalStore> {
    const { pool, release } = await acquirePool(url);
    return new PostgresPersonalStore(pool, release);
  }

  async vcard(user: string): Promise<StoredVcard | undefined> {
    const row = (await this.pool.query<{ vcard: string; photo_hash: string }>('SELECT vcard, photo_hash FROM vcards WHERE username = $1', [user])).rows[0];
    return row ? { xml: row.vcard, photoHash: row.photo_hash } : undefined;
  }

  async photoHash(user: string): Promise<string | undefined> {
    return (await this.pool.query<{ photo_hash: string }>('SELECT photo_hash FROM vcards WHERE username = $1', [user])).rows[0]?.photo_hash;
  }

  async setVcard(user: string, vcard: StoredVcard): Promise<void> {
    await this.pool.query('INSERT INTO vcards (username, vcard, photo_hash) VALUES ($1, $2, $3) ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard, photo_hash = excluded.photo_hash', [user, vcard.xml, vcard.photoHash]);
  }

  async swapVcard(user: string, expected: string | undefined, vcard: StoredVcard): Promise<boolean> {
    // Under READ COMMITTED, an UPDATE that waited for another writer's row checks its WHERE again on the new row.
    const r =
      expected === undefined
        ? await this.pool.query('INSERT INTO vcards (username, vcard, photo_hash) VALUES ($1, $2, $3) ON CONFLICT (username) DO NOTHING', [user, vcard.xml, vcard.photoHash])
        : await this.pool.query('UPDATE vcards SET vcard = $3, photo_hash = $4 WHERE username = $1 AND vcard = $2', [user, expected, vcard.xml, vcard.photoHash]);
    return r.rowCount === 1;
  }

  async privateXml(user: string, ns: string): Promise<string | undefined> {
    return (await this.pool.query<{ xml: string }>('SELECT xml FROM private_xml WHERE username = $1 AND ns = $2', [user, ns])).rows[0]?.xml;
  }

  async setPrivateXml(user: string, entries: PrivateEntry[], maxNamespaces: number): Promise<void> {
    await transaction(this.pool, `private:${user}`, (c) => writePrivate(c, user, entries, maxNamespaces));
  }

  async swapPrivateXml(user: string, ns: string, expected: string | undefined, xml: string, maxNamespaces: number): Promise<boolean> {
    // Every write of the account's private XML takes this lock: nothing comes between the compare and the write.
    return transaction(this.pool, `private:${user}`, async (c) => {
      if ((await c.query<{ xml: string }>('SELECT xml FROM private_xml WHERE username = $1 AND ns = $2', [user, ns])).rows[0]?.xml !== expected) return false;
      await writePrivate(c, user, [{ ns, xml }], maxNamespaces);
      return true;
    });
  }

  async privateAll(user: string): Promise<PrivateEntry[]> {
    // COLLATE "C": the order SQLite gives (bytewise), whatever the database's collation.
    return (await this.pool.query<PrivateEntry>('SELECT ns, xml FROM private_xml WHERE username = $1 ORDER BY ns COLLATE "C"', [user])).rows.map((r) => ({ ns: r.ns, xml: r.xml }));
  }

  async removeAll(user: string): Promise<void> {
    await transaction(this.pool, `private:${user}`, async (c) => {
      await c.query('DELETE FROM vcards WHERE username = $1', [user]);
      await c.query('DELETE FROM private_xml WHERE username = $1', [user]);
    });
  }

}

/** Within a transaction holding the account's private XML lock. */
async function writePrivate(c: pg.PoolClient, user: string, entries: PrivateEntry[], maxNamespaces: number): Promise<void> {
  let added = false;
  for (const e of entries) {
    if (e.xml === '') {
      await c.query('DELETE FROM private_xml WHERE username = $1 AND ns = $2', [user, e.ns]);
      continue;
    }
    const r = await c.query<{ inserted: boolean }>('INSERT INTO private_xml (username, ns, xml) VALUES ($1, $2, $3) ON CONFLICT (username, ns) DO UPDATE SET xml = excluded.xml RETURNING (xmax = 0) AS inserted', [user, e.ns, e.xml]);
    if (r.rows[0].inserted) added = true;
  }
  // After the writes, which the throw rolls back.
  if (added && Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM private_xml WHERE username = $1', [user])).rows[0].n) > maxNamespaces) throw new PrivateStorageFullError(maxNamespaces);
}
