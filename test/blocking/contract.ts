// The blocklist store's contract (blocking/store.ts), run against every
// backend: SQLite (sqlite.test.ts) and PostgreSQL (postgres.test.ts).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { BlockStore } from '../../src/blocking/store.ts';
import { BlocklistFullError } from '../../src/blocking/store.ts';

export type OpenBlocks = (t: ExecutionContext) => Promise<BlockStore>;

export function blockStoreContract(label: string, open: OpenBlocks): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('a list keeps the order of blocking; blocking again adds nothing; lists are per account'), async (t) => {
    const s = await open(t);
    t.deepEqual(await s.list('alice'), []);
    t.deepEqual(await s.block('alice', ['b@example.com', 'example.net', 'c@example.com/phone'], 10), ['b@example.com', 'example.net', 'c@example.com/phone']);
    t.deepEqual(await s.block('alice', ['example.net', 'd@example.com', 'd@example.com'], 10), ['d@example.com']);
    t.deepEqual(await s.list('alice'), ['b@example.com', 'example.net', 'c@example.com/phone', 'd@example.com']);
    t.deepEqual(await s.list('bob'), []);
    t.deepEqual(await s.blockers(), ['alice']);
  });

  test(title('unblock removes what was there and says what; unblock all empties the list'), async (t) => {
    const s = await open(t);
    await s.block('alice', ['a@x.example', 'b@x.example', 'c@x.example'], 10);
    await s.block('bob', ['a@x.example'], 10);
    t.deepEqual((await s.unblock('alice', ['b@x.example', 'nobody@x.example'])).sort(), ['b@x.example']);
    t.deepEqual(await s.list('alice'), ['a@x.example', 'c@x.example']);
    t.deepEqual(await s.unblockAll('alice'), ['a@x.example', 'c@x.example']);
    t.deepEqual(await s.list('alice'), []);
    t.deepEqual(await s.list('bob'), ['a@x.example'], "another account's list is untouched");
    t.deepEqual(await s.blockers(), ['bob']);
    t.deepEqual(await s.unblockAll('alice'), []);
  });

  test(title('the bound: a block that would pass it adds nothing and fails with BlocklistFullError'), async (t) => {
    const s = await open(t);
    await s.block('alice', ['1@x.example', '2@x.example'], 3);
    const err = await t.throwsAsync(s.block('alice', ['3@x.example', '4@x.example'], 3));
    t.true(err instanceof BlocklistFullError || err?.name === 'BlocklistFullError');
    t.deepEqual(await s.list('alice'), ['1@x.example', '2@x.example']);
    // What is blocked already does not count twice.
    t.deepEqual(await s.block('alice', ['2@x.example', '3@x.example'], 3), ['3@x.example']);
    // Two blocks at once cannot pass it together.
    await s.unblockAll('alice');
    const results = await Promise.allSettled([s.block('alice', ['a@x.example', 'b@x.example'], 3), s.block('alice', ['c@x.example', 'd@x.example'], 3)]);
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
    t.is((await s.list('alice')).length, 2);
  });
}
