import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { ScramMechanism, scramSha1, scramSha256 } from '../../src/sasl/scram.ts';
import type { MechanismContext, SaslResult } from '../../src/sasl/mechanism.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import { deriveScram, type AccountStore, type ScramCredentials, type ScramHash } from '../../src/accounts/store.ts';
import { SaslFailure, type SaslCondition } from '../../src/xmpp/errors.ts';

const b = (s: string) => Buffer.from(s, 'utf8');

/** A store holding exactly one account's verifiers, for the RFC vectors. */
function fixedStore(username: string, hash: ScramHash, creds: ScramCredentials): AccountStore {
  const no = () => Promise.reject(new Error('not in this stub'));
  return {
    create: no, importAccount: no, remove: no, setPassword: no, list: no, close() {},
    exists: async (u) => u === username,
    scram: async (u, h) => (u === username && h === hash ? creds : undefined),
  };
}

function sqliteStore(t: ExecutionContext): SqliteAccountStore {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-scram-'));
  const store = SqliteAccountStore.open(join(dir, 'accounts.db'), 4096);
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
}

function ctx(store: AccountStore, secure = true): MechanismContext {
  return { store, domain: 'example.com', secure };
}

async function fails(t: ExecutionContext, p: Promise<unknown>, condition: SaslCondition, msg?: string) {
  const err = await t.throwsAsync(p, { instanceOf: SaslFailure }, msg);
  t.is(err?.condition, condition, msg);
}

function challenge(r: SaslResult): string {
  if (r.kind !== 'challenge') throw new Error(`expected a challenge, got ${r.kind}`);
  return r.data.toString('utf8');
}

/** A minimal RFC 5802 client, to drive whole exchanges. */
function client(hash: ScramHash, user: string, password: string, cnonce = 'clientnonce123', gs2 = 'n,,', ext = '') {
  const algo = hash === 'SHA-1' ? 'sha1' : 'sha256';
  const len = hash === 'SHA-1' ? 20 : 32;
  const escaped = user.replace(/=/g, '=3D').replace(/,/g, '=2C');
  const first = `${gs2}n=${escaped},r=${cnonce}${ext}`;
  const bare = first.slice(gs2.length);
  let serverSignature = '';
  return {
    first,
    final(serverFirst: string, mutate: { c?: string; r?: string } = {}): string {
      const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
      const salted = pbkdf2Sync(password, Buffer.from(attrs.s, 'base64'), Number(attrs.i), len, algo);
      const clientKey = createHmac(algo, salted).update('Client Key').digest();
      const storedKey = createHash(algo).update(clientKey).digest();
      const withoutProof = `c=${mutate.c ?? Buffer.from(gs2).toString('base64')},r=${mutate.r ?? attrs.r}`;
      const authMessage = `${bare},${serverFirst},${withoutProof}`;
      const sig = createHmac(algo, storedKey).update(authMessage).digest();
      const proof = Buffer.from(clientKey.map((x, i) => x ^ sig[i]));
      serverSignature = createHmac(algo, createHmac(algo, salted).update('Server Key').digest()).update(authMessage).digest('base64');
      return `${withoutProof},p=${proof.toString('base64')}`;
    },
    get expectedServerFinal() { return `v=${serverSignature}`; },
  };
}

test('RFC 5802 §5 SCRAM-SHA-1 example, byte for byte', async (t) => {
  const creds = await deriveScram('pencil', 'SHA-1', 4096, Buffer.from('QSXCR+Q6sek8bf92', 'base64'));
  const m = new ScramMechanism('SHA-1', ctx(fixedStore('user', 'SHA-1', creds)), { serverNonce: () => '3rfcNHYJY1ZVvWVs7j' });
  const r1 = await m.start(b('n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL'));
  t.is(challenge(r1), 'r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096');
  const r2 = await m.step(b('c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts='));
  t.deepEqual(r2, { kind: 'success', data: b('v=rmF9pqV8S7suAoZWja4dJRkFsKQ='), username: 'user' });
});

test('RFC 7677 §3 SCRAM-SHA-256 example, byte for byte', async (t) => {
  const creds = await deriveScram('pencil', 'SHA-256', 4096, Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'));
  const m = new ScramMechanism('SHA-256', ctx(fixedStore('user', 'SHA-256', creds)), { serverNonce: () => '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0' });
  const r1 = await m.start(b('n,,n=user,r=rOprNGfwEbeRWgbNEkqO'));
  t.is(challenge(r1), 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
  const r2 = await m.step(b('c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ='));
  t.deepEqual(r2, { kind: 'success', data: b('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='), username: 'user' });
});

test('factories: names and offering rules', (t) => {
  t.is(scramSha256.name, 'SCRAM-SHA-256');
  t.is(scramSha1.name, 'SCRAM-SHA-1');
  for (const f of [scramSha1, scramSha256]) {
    t.true(f.available({ secure: true, tlsRequired: true, anonymous: false }));
    t.true(f.available({ secure: false, tlsRequired: false, anonymous: false }));
    t.false(f.available({ secure: false, tlsRequired: true, anonymous: false }));
  }
});

for (const hash of ['SHA-1', 'SHA-256'] as const) {
  const factory = hash === 'SHA-1' ? scramSha1 : scramSha256;

  test(`${hash}: whole exchange against the SQLite store, username normalised`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'wonder land');
    const c = client(hash, 'Alice', 'wonder land');
    const m = factory.create(ctx(store));
    t.deepEqual(await m.start(null), { kind: 'challenge', data: Buffer.alloc(0) }, 'no initial response: empty challenge');
    const sf = challenge(await m.step(b(c.first)));
    t.regex(sf, /^r=clientnonce123[A-Za-z0-9+/=]{16,},s=[A-Za-z0-9+/=]+,i=4096$/);
    const r = await m.step(b(c.final(sf)));
    t.deepEqual(r, { kind: 'success', data: b(c.expectedServerFinal), username: 'alice' });
    await fails(t, m.step(b('')), 'malformed-request', 'no step after success');
  });

  test(`${hash}: escaped usernames, y flag, authzid and extensions`, async (t) => {
    const store = sqliteStore(t);
    await store.create('x,y=z', 'pw');
    await store.create('alice', 'pw');
    let c = client(hash, 'x,y=z', 'pw');
    let m = factory.create(ctx(store));
    t.is((await m.step(b(c.final(challenge(await m.start(b(c.first))))))).kind, 'success');

    c = client(hash, 'alice', 'pw', 'n0nce', 'y,,');
    m = factory.create(ctx(store));
    t.like(await m.step(b(c.final(challenge(await m.start(b(c.first)))))), { kind: 'success', username: 'alice' });

    for (const authzid of ['alice@example.com', 'ALICE@Example.COM', 'alice@example.com.']) {
      c = client(hash, 'alice', 'pw', 'n0nce', `n,a=${authzid},`);
      m = factory.create(ctx(store));
      t.like(await m.step(b(c.final(challenge(await m.start(b(c.first)))))), { kind: 'success', username: 'alice' }, authzid);
    }

    // Unknown extensions are ignored (RFC 5802 §5.1) but covered by the AuthMessage.
    c = client(hash, 'alice', 'pw', 'n0nce', 'n,,', ',x=ext=1');
    m = factory.create(ctx(store));
    t.like(await m.step(b(c.final(challenge(await m.start(b(c.first)))))), { kind: 'success', username: 'alice' });
  });

  test(`${hash}: invalid-authzid`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'pw');
    for (const authzid of ['bob@example.com', 'alice@other.example', 'alice', 'example.com', 'alice@example.com/res', '@example.com']) {
      const m = factory.create(ctx(store));
      await fails(t, m.start(b(`n,a=${authzid},n=alice,r=abc`)), 'invalid-authzid', authzid);
    }
    const m = factory.create(ctx(store));
    await fails(t, m.start(b('n,a=x=2Cy@example.com,n=alice,r=abc')), 'invalid-authzid');
  });

  test(`${hash}: malformed client-first messages`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'pw');
    const bad = [
      '', 'n,,', 'n,,n=alice', 'n,,r=abc', 'n,,r=abc,n=alice',
      'p=tls-unique,,n=alice,r=abc', 'p=tls-server-end-point,,n=alice,r=abc',
      'x,,n=alice,r=abc', 'N,,n=alice,r=abc', 'n,b=alice,n=alice,r=abc', 'n,a=,n=alice,r=abc',
      'n,,n=,r=abc', 'n,,n=al=2Dice,r=abc', 'n,,n=al=ice,r=abc', 'n,,n=alice,r=', 'n,,n=alice,r=a\u00e9',
      'n,,m=ext,n=alice,r=abc', 'n,,n=alice,r=abc,bad', 'n,,n=alice,r=abc,xy=1', 'n,,n=alice,r=abc,x=',
      'n,,n=al\0ice,r=abc',
    ];
    for (const msg of bad) {
      await fails(t, factory.create(ctx(store)).start(b(msg)), 'malformed-request', JSON.stringify(msg));
    }
    await fails(t, factory.create(ctx(store)).start(Buffer.from([0x6e, 0x2c, 0x2c, 0x6e, 0x3d, 0xff, 0xfe, 0x2c, 0x72, 0x3d, 0x61])), 'malformed-request', 'bad UTF-8');
    // Empty challenge first, then a malformed client-first
    const m = factory.create(ctx(store));
    t.is(challenge(await m.start(null)), '');
    await fails(t, m.step(b('bogus')), 'malformed-request');
    await fails(t, m.step(b('n,,n=alice,r=abc')), 'malformed-request', 'no retry after a failure');
  });

  test(`${hash}: malformed client-final messages`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'pw');
    const cases: [string, (sf: string, good: string, c: ReturnType<typeof client>) => Buffer][] = [
      ['wrong nonce', (sf, _g, c) => b(c.final(sf, { r: 'clientnonce123bogus' }))],
      ['client nonce only', (sf, _g, c) => b(c.final(sf, { r: 'clientnonce123' }))],
      ['c= is y,,', (sf, _g, c) => b(c.final(sf, { c: 'eSws' }))],
      ['c= with channel binding data', (sf, _g, c) => b(c.final(sf, { c: Buffer.from('p=tls-unique,,xyz').toString('base64') }))],
      ['c= not base64', (sf, _g, c) => b(c.final(sf, { c: 'biws!' }))],
      ['c= badly padded', (sf, _g, c) => b(c.final(sf, { c: 'biw' }))],
      ['no proof', (_sf, g) => b(g.slice(0, g.lastIndexOf(',p=')))],
      ['proof not last', (_sf, g) => b(`${g},x=1`)],
      ['proof not base64', (_sf, g) => b(`${g.slice(0, g.lastIndexOf(',p='))},p=***`)],
      ['proof too short', (_sf, g) => b(`${g.slice(0, g.lastIndexOf(',p='))},p=AAAA`)],
      ['attributes out of order', (_sf, g) => { const [c, r, p] = g.split(','); return b([r, c, p].join(',')); }],
      ['bad UTF-8', () => Buffer.from([0x63, 0x3d, 0xc3, 0x28])],
      ['empty', () => Buffer.alloc(0)],
    ];
    for (const [name, make] of cases) {
      const c = client(hash, 'alice', 'pw');
      const m = factory.create(ctx(store));
      const sf = challenge(await m.start(b(c.first)));
      const good = c.final(sf);
      await fails(t, m.step(make(sf, good, c)), 'malformed-request', name);
    }
  });

  test(`${hash}: wrong password is not-authorized`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'pw');
    const c = client(hash, 'alice', 'PW');
    const m = factory.create(ctx(store));
    await fails(t, m.step(b(c.final(challenge(await m.start(b(c.first)))))), 'not-authorized');
  });

  test(`${hash}: unknown users get a consistent fake exchange and fail only at the proof`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'pw');
    const serverFirst = async (user: string) => {
      const c = client(hash, user, 'pw');
      const m = factory.create(ctx(store));
      const sf = challenge(await m.start(b(c.first)));
      await fails(t, m.step(b(c.final(sf))), 'not-authorized', user);
      return Object.fromEntries(sf.split(',').map((kv) => [kv[0], kv.slice(2)]));
    };
    const real = await store.scram('alice', hash);
    const ghost1 = await serverFirst('ghost');
    const ghost2 = await serverFirst('Ghost');
    const other = await serverFirst('phantom');
    const invalid = await serverFirst('in valid'); // can never be an account
    t.is(ghost1.s, ghost2.s, 'same fake salt every time');
    t.not(ghost1.s, other.s, 'different users, different fake salts');
    t.is(Buffer.from(ghost1.s, 'base64').length, real!.salt.length, 'fake salt looks like a real one');
    t.is(ghost1.i, '4096');
    t.is(invalid.i, '4096');
    t.not(ghost1.r, ghost2.r, 'fresh server nonce each time');
  });

  test(`${hash}: store failure is temporary-auth-failure`, async (t) => {
    const broken: AccountStore = {
      ...fixedStore('x', hash, await deriveScram('x', hash, 4096)),
      scram: async () => { throw new Error('database is locked'); },
    };
    await fails(t, factory.create(ctx(broken)).start(b('n,,n=alice,r=abc')), 'temporary-auth-failure');
  });

  test(`${hash}: works without TLS when offered`, async (t) => {
    const store = sqliteStore(t);
    await store.create('alice', 'pw');
    const c = client(hash, 'alice', 'pw');
    const m = factory.create(ctx(store, false));
    t.like(await m.step(b(c.final(challenge(await m.start(b(c.first)))))), { kind: 'success', username: 'alice' });
  });
}

test('the fake exchange is the same through every store on one file (every worker thread)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-scram-'));
  const file = join(dir, 'accounts.db');
  const s1 = SqliteAccountStore.open(file, 5000);
  const s2 = SqliteAccountStore.open(file, 5000);
  t.teardown(() => {
    s1.close();
    s2.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const salts = [];
  for (const s of [s1, s2]) {
    const sf = challenge(await scramSha256.create(ctx(s)).start(b('n,,n=ghost,r=abc')));
    salts.push(sf.split(',')[1]);
    t.is(sf.split(',')[2], 'i=5000', 'announces the configured iteration count');
  }
  t.is(salts[0], salts[1]);
});
