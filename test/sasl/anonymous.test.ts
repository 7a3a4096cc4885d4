import test, { type ExecutionContext } from 'ava';
import { anonymous } from '../../src/sasl/anonymous.ts';
import type { AccountStore } from '../../src/accounts/store.ts';
import { SaslFailure, type SaslCondition } from '../../src/xmpp/errors.ts';

const ctx = { store: {} as AccountStore, domain: 'example.com', secure: true };

async function fails(t: ExecutionContext, p: Promise<unknown>, condition: SaslCondition, msg?: string) {
  const err = await t.throwsAsync(p, { instanceOf: SaslFailure }, msg);
  t.is(err?.condition, condition, msg);
}

test('offered only when enabled, and like SCRAM only where TLS is in place or not required', (t) => {
  t.is(anonymous.name, 'ANONYMOUS');
  t.false(anonymous.available({ secure: true, tlsRequired: true, anonymous: false }));
  t.true(anonymous.available({ secure: true, tlsRequired: true, anonymous: true }));
  t.true(anonymous.available({ secure: false, tlsRequired: false, anonymous: true }));
  t.false(anonymous.available({ secure: false, tlsRequired: true, anonymous: true }));
});

test('immediate success without a challenge, username null', async (t) => {
  t.deepEqual(await anonymous.create(ctx).start(null), { kind: 'success', username: null });
  t.deepEqual(await anonymous.create(ctx).start(Buffer.alloc(0)), { kind: 'success', username: null });
  t.deepEqual(await anonymous.create(ctx).start(Buffer.from('sirhc@example.com')), { kind: 'success', username: null });
});

test('trace of up to 255 characters, counted as characters not bytes', async (t) => {
  t.like(await anonymous.create(ctx).start(Buffer.from('a'.repeat(255))), { kind: 'success' });
  t.like(await anonymous.create(ctx).start(Buffer.from('€'.repeat(255))), { kind: 'success' });
  t.like(await anonymous.create(ctx).start(Buffer.from('😀'.repeat(255))), { kind: 'success' });
  await fails(t, anonymous.create(ctx).start(Buffer.from('a'.repeat(256))), 'malformed-request');
  await fails(t, anonymous.create(ctx).start(Buffer.from('😀'.repeat(256))), 'malformed-request');
});

test('malformed UTF-8 trace and extra steps are malformed-request', async (t) => {
  await fails(t, anonymous.create(ctx).start(Buffer.from([0x61, 0xff])), 'malformed-request');
  const m = anonymous.create(ctx);
  await m.start(null);
  await fails(t, m.step(Buffer.alloc(0)), 'malformed-request');
  await fails(t, m.start(null), 'malformed-request');
});
