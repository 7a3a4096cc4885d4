import test from 'ava';
import { MECHANISMS } from '../../src/sasl/mechanism.ts';

const offered = (secure: boolean, tlsRequired: boolean, anonymous: boolean) =>
  MECHANISMS.filter((m) => m.available({ secure, tlsRequired, anonymous })).map((m) => m.name);

test('preference order', (t) => {
  t.deepEqual(MECHANISMS.map((m) => m.name), ['EXTERNAL', 'SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS']);
});

test('EXTERNAL only over TLS with a certificate that names someone', (t) => {
  const ext = MECHANISMS.find((m) => m.name === 'EXTERNAL')!;
  t.true(ext.available({ secure: true, tlsRequired: true, anonymous: false, certificateJids: ['a@localhost'] }));
  t.false(ext.available({ secure: true, tlsRequired: true, anonymous: false, certificateJids: [] }));
  t.false(ext.available({ secure: true, tlsRequired: true, anonymous: false }));
  t.false(ext.available({ secure: false, tlsRequired: false, anonymous: false, certificateJids: ['a@localhost'] }));
});

test('what is offered where', (t) => {
  t.deepEqual(offered(true, true, false), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN']);
  t.deepEqual(offered(true, true, true), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS']);
  t.deepEqual(offered(false, false, false), ['SCRAM-SHA-256', 'SCRAM-SHA-1']);
  t.deepEqual(offered(false, false, true), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'ANONYMOUS']);
  t.deepEqual(offered(false, true, true), []);
});
