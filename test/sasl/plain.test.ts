import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { plain } from '../../src/sasl/plain.ts';
import type { MechanismContext } from '../../src/sasl/mechanism.ts';
import { SqliteAccountStore } from '../../src/accounts/sqlite.ts';
import type { AccountStore } from '../../src/accounts/store.ts';
import { SaslFailure, type SaslCondition } from '../../src/xmpp/errors.ts';

const b = (s: string) => Buffer.from(s, 'utf8');

async function setup(t: ExecutionContext): Promise<SqliteAccountStore> {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-plain-'));
  const store = SqliteAccountStore.open(join(dir, 'accounts.db'), 4096);
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await store.create('alice', 'wonder land');
  return store;
}

function ctx(store: AccountStore, secure = true): MechanismContext {
  return { store, domain: 'example.com', secure };
}

async function fails(t: ExecutionContext, p: Promise<unknown>, condition: SaslCondition, msg?: string) {
  const err = await t.throwsAsync(p, { instanceOf: SaslFailure }, msg);
  t.is(err?.condition, condition, msg);
}

test('offered only over TLS', (t) => {
  t.is(plain.name, 'PLAIN');
  t.true(plain.available({ secure: true, tlsRequired: true, anonymous: false }));
  t.true(plain.available({ secure: true, tlsRequired: false, anonymous: false }));
  t.false(plain.available({ secure: false, tlsRequired: false, anonymous: false }));
  t.false(plain.available({ secure: false, tlsRequired: true, anonymous: false }));
});

test('correct credentials succeed with the normalised username', async (t) => {
  const store = await setup(t);
  t.deepEqual(await plain.create(ctx(store)).start(b('\0alice\0wonder land')), { kind: 'success', username: 'alice' });
  t.like(await plain.create(ctx(store)).start(b('\0ALICE\0wonder land')), { kind: 'success', username: 'alice' });
  t.like(await plain.create(ctx(store)).start(b('\0ａｌｉｃｅ\0wonder\u00a0land')), { kind: 'success', username: 'alice' }, 'SASLprep maps NBSP to space');
  t.like(await plain.create(ctx(store)).start(b('alice@example.com\0alice\0wonder land')), { kind: 'success', username: 'alice' });
  t.like(await plain.create(ctx(store)).start(b('Alice@EXAMPLE.com\0alice\0wonder land')), { kind: 'success', username: 'alice' });
});

test('no initial response: empty challenge, then the response', async (t) => {
  const store = await setup(t);
  const m = plain.create(ctx(store));
  t.deepEqual(await m.start(null), { kind: 'challenge', data: Buffer.alloc(0) });
  t.like(await m.step(b('\0alice\0wonder land')), { kind: 'success', username: 'alice' });
  await fails(t, m.step(b('\0alice\0wonder land')), 'malformed-request', 'no step after the end');
});

test('insecure stream: mechanism-too-weak', async (t) => {
  const store = await setup(t);
  await fails(t, plain.create(ctx(store, false)).start(b('\0alice\0wonder land')), 'mechanism-too-weak');
  await fails(t, plain.create(ctx(store, false)).start(null), 'mechanism-too-weak');
});

test('malformed-request', async (t) => {
  const store = await setup(t);
  for (const msg of ['', 'alice', 'alice\0wonder land', '\0\0wonder land', '\0alice\0', '\0alice\0wonder\0land', 'a\0b\0c\0d']) {
    await fails(t, plain.create(ctx(store)).start(b(msg)), 'malformed-request', JSON.stringify(msg));
  }
  await fails(t, plain.create(ctx(store)).start(Buffer.from([0, 0x61, 0, 0xc3, 0x28])), 'malformed-request', 'bad UTF-8');
  await fails(t, plain.create(ctx(store)).start(Buffer.from([0, 0xed, 0xa0, 0x80, 0, 0x61])), 'malformed-request', 'UTF-8 surrogate');
});

test('invalid-authzid', async (t) => {
  const store = await setup(t);
  for (const authzid of ['bob@example.com', 'alice@other.example', 'alice', 'alice@example.com/phone', 'alice@example.com/', '@example.com', 'example.com']) {
    await fails(t, plain.create(ctx(store)).start(b(`${authzid}\0alice\0wonder land`)), 'invalid-authzid', authzid);
  }
});

test('not-authorized: wrong password, unknown or impossible user', async (t) => {
  const store = await setup(t);
  for (const msg of ['\0alice\0Wonder land', '\0alice\0wonder  land', '\0bob\0wonder land', '\0a b\0wonder land', '\0alice@example.com\0wonder land', '\0alice\0bad\u0007']) {
    await fails(t, plain.create(ctx(store)).start(b(msg)), 'not-authorized', JSON.stringify(msg));
  }
});

test('store failure: temporary-auth-failure', async (t) => {
  const store = await setup(t);
  const broken: AccountStore = Object.assign(Object.create(store), { scram: async () => { throw new Error('disk I/O error'); } });
  await fails(t, plain.create(ctx(broken)).start(b('\0alice\0wonder land')), 'temporary-auth-failure');
});
