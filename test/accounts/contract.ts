// The behaviour every AccountStore must have, run against each implementation
// (the embedded SQLite store of a single node, and PostgreSQL, which a
// cluster requires).
import test, { type ExecutionContext } from 'ava';
import {
  type AccountStore,
  verifyPassword, AccountExistsError, AccountNotFoundError, InvalidUsernameError, InvalidPasswordError,
} from '../../src/accounts/store.ts';

export interface Backend {
  /** A fresh, empty store with 4096 iterations; closed when the test ends. */
  store: AccountStore;
  /** Another store over the same data (another thread, process or node); closed when the test ends. */
  another(): Promise<AccountStore>;
  /** Every byte the backing storage holds, to search for passwords. */
  dump(): Promise<Buffer[]>;
}

export type OpenBackend = (t: ExecutionContext) => Promise<Backend>;

/** Fails the test if any password, in any plausible encoding, is in the bytes. */
export function assertNoPasswords(t: ExecutionContext, chunks: Buffer[], passwords: string[], where: string): void {
  const all = Buffer.concat(chunks);
  t.true(all.length > 0, `${where} holds something`);
  for (const p of passwords) {
    const needles: [string, Buffer][] = [
      ['utf8', Buffer.from(p, 'utf8')],
      ['utf16le', Buffer.from(p, 'utf16le')],
      ['latin1', Buffer.from(p, 'latin1')],
      ['base64', Buffer.from(Buffer.from(p).toString('base64'))],
      ['hex', Buffer.from(Buffer.from(p).toString('hex'))],
    ];
    for (const [enc, needle] of needles) t.is(all.indexOf(needle), -1, `${p} (${enc}) found in ${where}`);
  }
}

export function accountStoreContract(label: string, open: OpenBackend): void {
  const title = (s: string) => `${label}: ${s}`;

  test(title('create, exists, list, remove'), async (t) => {
    const { store: s } = await open(t);
    t.deepEqual(await s.list(), []);
    await s.create('Bob', 'secret');
    await s.create('alice', 'secret');
    t.true(await s.exists('bob'));
    t.true(await s.exists('BOB'));
    t.false(await s.exists('carol'));
    t.deepEqual(await s.list(), ['alice', 'bob']);
    t.true(await s.remove('BoB'));
    t.false(await s.remove('bob'));
    t.false(await s.exists('bob'));
    t.is(await s.scram('bob', 'SHA-256'), undefined);
    t.deepEqual(await s.list(), ['alice']);
    await s.create('bob', 'again'); // a removed name can be taken again
    t.deepEqual(await s.list(), ['alice', 'bob']);
  });

  test(title('list() is sorted by code point'), async (t) => {
    const { store: s } = await open(t);
    // U+FA0E sorts before U+20000 by code point (and UTF-8 bytes), after it by UTF-16 units.
    for (const u of ['\u{20000}', 'z', '\uFA0E', 'b', 'é', 'a', 'ab']) await s.create(u, 'pw');
    t.deepEqual(await s.list(), ['a', 'ab', 'b', 'z', 'é', '\uFA0E', '\u{20000}']);
  });

  test(title('usernames are normalised and validated everywhere'), async (t) => {
    const { store: s } = await open(t);
    await s.create('ＡＬＩＣＥ', 'pw');
    t.deepEqual(await s.list(), ['alice']);
    await t.throwsAsync(s.create('Alice', 'other'), { instanceOf: AccountExistsError });
    await t.throwsAsync(s.create('a@b', 'pw'), { instanceOf: InvalidUsernameError });
    await t.throwsAsync(s.create('', 'pw'), { instanceOf: InvalidUsernameError });
    await t.throwsAsync(s.create('a:b', 'pw'), { instanceOf: InvalidUsernameError });
    await t.throwsAsync(s.setPassword('a b', 'pw'), { instanceOf: InvalidUsernameError });
    t.false(await s.exists('a@b'));
    t.false(await s.remove('a/b'));
    t.is(await s.scram('a:b', 'SHA-1'), undefined);
    t.deepEqual(await s.list(), ['alice']);
  });

  test(title('no account may take the prefix of anonymous JIDs, in any spelling'), async (t) => {
    const { store: s } = await open(t);
    for (const u of ['anon-1', 'ANON-x', 'ａｎｏｎ-y', 'anon-'])
      await t.throwsAsync(s.create(u, 'pw'), { instanceOf: InvalidUsernameError, message: /reserved for anonymous sessions/ }, u);
    await s.create('anon', 'pw');
    await s.create('xanon-1', 'pw');
    t.deepEqual(await s.list(), ['anon', 'xanon-1']);
  });

  test(title('passwords must be usable SASLprep stored strings'), async (t) => {
    const { store: s } = await open(t);
    await t.throwsAsync(s.create('u', ''), { instanceOf: InvalidPasswordError });
    await t.throwsAsync(s.create('u', 'bad\u0007'), { instanceOf: InvalidPasswordError });
    await t.throwsAsync(s.create('u', 'unassigned\u0378'), { instanceOf: InvalidPasswordError });
    t.false(await s.exists('u'));
    t.deepEqual(await s.list(), []);
  });

  test(title('scram() gives verifiers for both hashes, each with its own salt'), async (t) => {
    const { store: s } = await open(t);
    t.is(s.iterations, 4096);
    await s.create('alice', 'wonderland');
    const sha1 = (await s.scram('Alice', 'SHA-1'))!;
    const sha256 = (await s.scram('alice', 'SHA-256'))!;
    t.is(sha1.storedKey.length, 20);
    t.is(sha1.serverKey.length, 20);
    t.is(sha256.storedKey.length, 32);
    t.is(sha256.serverKey.length, 32);
    t.is(sha1.iterations, 4096);
    t.is(sha256.iterations, 4096);
    t.is(sha1.salt.length, 16);
    t.notDeepEqual(sha1.salt, sha256.salt);
    t.true(Buffer.isBuffer(sha1.salt) && Buffer.isBuffer(sha1.storedKey) && Buffer.isBuffer(sha1.serverKey));
    t.true(await verifyPassword(sha1, 'SHA-1', 'wonderland'));
    t.true(await verifyPassword(sha256, 'SHA-256', 'wonderland'));
    t.false(await verifyPassword(sha256, 'SHA-256', 'Wonderland'));
    t.false(await verifyPassword(sha1, 'SHA-1', 'wonderlan'));
    t.is(await s.scram('nobody', 'SHA-256'), undefined);
  });

  test(title('setPassword replaces the verifiers'), async (t) => {
    const { store: s } = await open(t);
    await s.create('alice', 'old');
    const before = (await s.scram('alice', 'SHA-256'))!;
    await s.setPassword('ALICE', 'new');
    const after = (await s.scram('alice', 'SHA-256'))!;
    t.notDeepEqual(before.salt, after.salt);
    t.false(await verifyPassword(after, 'SHA-256', 'old'));
    t.true(await verifyPassword(after, 'SHA-256', 'new'));
    t.true(await verifyPassword((await s.scram('alice', 'SHA-1'))!, 'SHA-1', 'new'));
    await t.throwsAsync(s.setPassword('nobody', 'x'), { instanceOf: AccountNotFoundError });
    t.false(await s.exists('nobody'));
    await t.throwsAsync(s.setPassword('alice', ''), { instanceOf: InvalidPasswordError });
    t.true(await verifyPassword((await s.scram('alice', 'SHA-256'))!, 'SHA-256', 'new'));
    t.deepEqual(await s.list(), ['alice']);
  });

  test(title('another instance over the same data sees every change; the fake-salt key is shared'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    await a.create('alice', 'pw-a');
    t.true(await b.exists('Alice'));
    t.true(await verifyPassword((await b.scram('alice', 'SHA-256'))!, 'SHA-256', 'pw-a'));
    await b.setPassword('alice', 'pw-b');
    t.true(await verifyPassword((await a.scram('alice', 'SHA-1'))!, 'SHA-1', 'pw-b'));
    await t.throwsAsync(b.create('ALICE', 'x'), { instanceOf: AccountExistsError });
    t.true(await b.remove('alice'));
    t.false(await a.exists('alice'));
    t.false(await a.remove('alice'));
    await t.throwsAsync(a.setPassword('alice', 'x'), { instanceOf: AccountNotFoundError });
    t.deepEqual(await a.list(), []);
    t.is(a.fakeSaltKey!().length, 32);
    t.deepEqual(a.fakeSaltKey!(), b.fakeSaltKey!());
  });

  test(title('two instances creating the same user at the same instant: exactly one succeeds'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const names = Array.from({ length: 8 }, (_, i) => `race${i}`);
    const results = await Promise.all(names.map((n) => Promise.allSettled([a.create(n, `${n}-a`), b.create(n, `${n}-b`)])));
    for (const [i, [ra, rb]] of results.entries()) {
      const won = [ra, rb].filter((r) => r.status === 'fulfilled');
      t.is(won.length, 1, `${names[i]}: exactly one create succeeds`);
      const lost = [ra, rb].find((r) => r.status === 'rejected') as PromiseRejectedResult;
      t.true(lost.reason instanceof AccountExistsError, `${names[i]}: ${String(lost.reason)}`);
      const winner = ra.status === 'fulfilled' ? 'a' : 'b';
      const loser = winner === 'a' ? 'b' : 'a';
      for (const s of [a, b]) {
        for (const hash of ['SHA-1', 'SHA-256'] as const) {
          const creds = (await s.scram(names[i], hash))!;
          t.true(await verifyPassword(creds, hash, `${names[i]}-${winner}`));
          t.false(await verifyPassword(creds, hash, `${names[i]}-${loser}`));
        }
      }
    }
    t.deepEqual(await a.list(), names);
    t.deepEqual(await b.list(), names);
  });

  test(title('concurrent creates of different users from two instances all land'), async (t) => {
    const { store: a, another } = await open(t);
    const b = await another();
    const names = Array.from({ length: 20 }, (_, i) => `user${String(i).padStart(2, '0')}`);
    await Promise.all(names.map((n, i) => (i % 2 ? a : b).create(n, `pw-${n}`)));
    t.deepEqual(await a.list(), names);
    t.true(await verifyPassword((await b.scram('user07', 'SHA-256'))!, 'SHA-256', 'pw-user07'));
  });

  test(title('the storage never holds a password'), async (t) => {
    const { store: s, dump } = await open(t);
    const passwords = ['hunter2-PLAINTEXT-marker', 'second-PLAINTEXT-password', 'pässwörd-ünïcode-marker'];
    await s.create('alice', passwords[0]);
    await s.create('bob', passwords[2]);
    await s.setPassword('alice', passwords[1]);
    t.true(await verifyPassword((await s.scram('alice', 'SHA-256'))!, 'SHA-256', passwords[1]));
    t.true(await verifyPassword((await s.scram('bob', 'SHA-1'))!, 'SHA-1', passwords[2]));
    assertNoPasswords(t, await dump(), passwords, `${label} storage`);
  });
}
