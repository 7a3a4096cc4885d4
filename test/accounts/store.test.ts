import test from 'ava';
import { pbkdf2Sync, createHmac, createHash } from 'node:crypto';
import {
  normalizeUsername, deriveScram, verifyPassword, preparePassword,
  InvalidUsernameError, InvalidPasswordError,
} from '../../src/accounts/store.ts';

test('normalizeUsername maps case and width (UsernameCaseMapped, RFC 8265 §3.3) and refuses compatibility characters', (t) => {
  t.is(normalizeUsername('Alice'), 'alice');
  t.is(normalizeUsername('ＵＳＥＲ'), 'user');
  t.is(normalizeUsername('x,y=z'), 'x,y=z');
  t.is(normalizeUsername('Ωmega'), 'ωmega');
  // NFKC used to fold these into "fi" and "bob"; PRECIS refuses them (HasCompat, RFC 8264 §9.17).
  for (const compat of ['ﬁ', 'ᵇob']) t.throws(() => normalizeUsername(compat), { instanceOf: InvalidUsernameError, message: /is not allowed in an identifier/ }, compat);
});

test('normalizeUsername rejects forbidden characters, whitespace, controls, invisible characters and empty names', (t) => {
  for (const bad of ['', 'a"b', 'a&b', "a'b", 'a/b', 'a:b', 'a<b', 'a>b', 'a@b', 'a b', 'a\tb', 'a\nb', 'a\u0001b', 'a\u007fb', 'a\u0085b', 'a\u00a0b', 'a\u3000b', '\ud800', 'bob\u200b', 'b\u00adob', '\u202ebob']) {
    t.throws(() => normalizeUsername(bad), { instanceOf: InvalidUsernameError }, JSON.stringify(bad));
  }
});

test('normalizeUsername allows up to 1023 bytes of UTF-8', (t) => {
  t.is(normalizeUsername('a'.repeat(1023)).length, 1023);
  t.throws(() => normalizeUsername('a'.repeat(1024)), { instanceOf: InvalidUsernameError });
  t.is(Buffer.byteLength(normalizeUsername('é'.repeat(511) + 'a'), 'utf8'), 1023);
  t.throws(() => normalizeUsername('é'.repeat(512)), { instanceOf: InvalidUsernameError });
});

test('deriveScram computes RFC 5802 StoredKey and ServerKey', async (t) => {
  const salt = Buffer.from('QSXCR+Q6sek8bf92', 'base64');
  for (const [hash, algo, len] of [['SHA-1', 'sha1', 20], ['SHA-256', 'sha256', 32]] as const) {
    const c = await deriveScram('pencil', hash, 4096, salt);
    const salted = pbkdf2Sync('pencil', salt, 4096, len, algo);
    const clientKey = createHmac(algo, salted).update('Client Key').digest();
    t.deepEqual(c.storedKey, createHash(algo).update(clientKey).digest());
    t.deepEqual(c.serverKey, createHmac(algo, salted).update('Server Key').digest());
    t.deepEqual(c.salt, salt);
    t.is(c.iterations, 4096);
    t.is(c.storedKey.length, len);
  }
});

test('deriveScram picks a fresh 16-byte salt when none is given', async (t) => {
  const a = await deriveScram('pw', 'SHA-256', 4096);
  const b = await deriveScram('pw', 'SHA-256', 4096);
  t.is(a.salt.length, 16);
  t.notDeepEqual(a.salt, b.salt);
  t.notDeepEqual(a.storedKey, b.storedKey);
});

test('passwords are SASLprepped (RFC 4013 §3 examples)', async (t) => {
  t.is(preparePassword('I\u00adX'), 'IX');
  t.is(preparePassword('\u2168'), 'IX');
  t.is(preparePassword('a\u00a0b'), 'a b');
  const salt = Buffer.alloc(16, 1);
  const ix = await deriveScram('IX', 'SHA-256', 4096, salt);
  t.deepEqual((await deriveScram('I\u00adX', 'SHA-256', 4096, salt)).storedKey, ix.storedKey);
  t.deepEqual((await deriveScram('\u2168', 'SHA-256', 4096, salt)).storedKey, ix.storedKey);
  await t.throwsAsync(deriveScram('a\u0007b', 'SHA-256', 4096), { instanceOf: InvalidPasswordError });
  await t.throwsAsync(deriveScram('\u00ad', 'SHA-256', 4096), { instanceOf: InvalidPasswordError });
  await t.throwsAsync(deriveScram('', 'SHA-1', 4096), { instanceOf: InvalidPasswordError });
  // Unassigned code points: allowed in queries, refused for stored passwords.
  t.is(preparePassword('a\u0378'), 'a\u0378');
  t.throws(() => preparePassword('a\u0378', true), { instanceOf: InvalidPasswordError });
});

test('verifyPassword accepts the password and nothing else', async (t) => {
  for (const hash of ['SHA-1', 'SHA-256'] as const) {
    const c = await deriveScram('correct horse', hash, 4096);
    t.true(await verifyPassword(c, hash, 'correct horse'));
    t.false(await verifyPassword(c, hash, 'correct horsE'));
    t.false(await verifyPassword(c, hash, 'a\u0007b')); // unpreparable: false, not an exception
    t.false(await verifyPassword({ ...c, storedKey: c.storedKey.subarray(1) }, hash, 'correct horse'));
  }
});

test('PBKDF2 runs off the event loop', async (t) => {
  let ticks = 0;
  let running = true;
  const spin = () => {
    ticks++;
    if (running) setImmediate(spin);
  };
  setImmediate(spin);
  let timerFired = false;
  setTimeout(() => { timerFired = true; }, 1);
  const start = Date.now();
  // Enough work to take a noticeable time on any machine.
  await deriveScram('password', 'SHA-256', 400_000);
  running = false;
  const elapsed = Date.now() - start;
  t.true(timerFired, 'a timer fired while deriving');
  t.true(ticks > 10, `event loop kept turning (${ticks} turns in ${elapsed} ms)`);
});
