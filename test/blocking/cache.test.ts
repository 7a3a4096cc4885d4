// The blocklists a worker keeps (modules/blocking.ts) are bounded by what
// they hold in all, JIDs and bytes, not by how many accounts they are for:
// long lists of long JIDs stay within the bound, the least recently used
// going first, and a list dropped is read again when needed, so enforcement
// is the same. Over an in-memory store that counts its reads.
import test from 'ava';
import { Element } from 'ltx';
import { blocking, listBytes, CACHE_MAX_BYTES, CACHE_MAX_ENTRIES } from '../../src/modules/blocking.ts';
import type { BlockStore } from '../../src/blocking/store.ts';
import type { RosterStore } from '../../src/roster/store.ts';
import { StanzaError } from '../../src/xmpp/errors.ts';
import { MAX_BLOCKED } from '../../src/blocking/store.ts';

const DOMAIN = 'example.com';

function memoryStore(lists: Map<string, string[]>): BlockStore & { reads: number } {
  return {
    reads: 0,
    async list(owner) {
      this.reads++;
      return [...(lists.get(owner) ?? [])];
    },
    async block() {
      throw new Error('not used');
    },
    async unblock() {
      throw new Error('not used');
    },
    async unblockAll() {
      throw new Error('not used');
    },
    async blockers() {
      return [...lists.keys()];
    },
    close() {},
  };
}

/** The guard's verdict on a message from `from` to the account `user`. */
async function verdict(m: ReturnType<typeof blocking>, from: string, user: string) {
  const el = new Element('message', { from, to: `${user}@${DOMAIN}`, type: 'chat' });
  return m.guard!(el, { local: user, domain: DOMAIN, resource: '' });
}

test('long lists of long JIDs stay within the bytes and entries bound; the least recently used go, and are read again when needed', async (t) => {
  // 40 accounts each blocking 50 JIDs of some 200 characters: ~1 MB of lists if all were kept.
  const lists = new Map<string, string[]>();
  for (let u = 0; u < 40; u++) lists.set(`user${u}`, Array.from({ length: 50 }, (_, i) => `${'x'.repeat(180)}${u}-${i}@spam.example`));
  const store = memoryStore(lists);
  const maxBytes = 128 * 1024;
  const maxEntries = 400;
  const m = blocking({ domain: DOMAIN, store, roster: {} as RosterStore, max: MAX_BLOCKED, routing: () => { throw new Error('not used'); }, announce: async () => {}, cache: { maxEntries, maxBytes } });
  for (const [user, jids] of lists) {
    t.true((await verdict(m, `${jids[7]}/r`, user)) instanceof StanzaError, `${user} blocks its JIDs`);
    t.is(await verdict(m, `friend@${DOMAIN}/r`, user), undefined, `${user} blocks nobody else`);
    const c = m.cached();
    t.true(c.bytes <= maxBytes, `bytes: ${c.bytes}`);
    t.true(c.entries <= maxEntries, `entries: ${c.entries}`);
  }
  const c = m.cached();
  t.true(c.lists >= 2 && c.lists < lists.size, `some lists kept, not all: ${c.lists}`);
  t.is(c.bytes, [...lists.keys()].slice(-c.lists).reduce((n, u) => n + listBytes(u, new Set(lists.get(u))), 0), 'the sizes add up');
  // The most recent is answered from memory; the first, dropped long ago, is read again, and still blocks.
  const before = store.reads;
  t.true((await verdict(m, `${lists.get('user39')![0]}`, 'user39')) instanceof StanzaError);
  t.is(store.reads, before, 'a list kept is not read again');
  t.true((await verdict(m, `${lists.get('user0')![0]}`, 'user0')) instanceof StanzaError);
  t.is(store.reads, before + 1, 'a list dropped is read again');
});

test('the default bound holds a full list of the longest JIDs (it is never read at every stanza)', (t) => {
  const longest = new Set(Array.from({ length: MAX_BLOCKED }, (_, i) => `${'l'.repeat(1023)}@${'d'.repeat(1010)}${i}/${'r'.repeat(1023)}`));
  t.true(listBytes('someone', longest) <= CACHE_MAX_BYTES);
  t.true(MAX_BLOCKED <= CACHE_MAX_ENTRIES);
});
