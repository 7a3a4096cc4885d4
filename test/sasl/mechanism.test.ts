import test from 'ava';
import { MECHANISMS } from '../../src/sasl/mechanism.ts';

const offered = (secure: boolean, tlsRequired: boolean, anonymous: boolean) =>
  MECHANISMS.filter((m) => m.available({ secure, tlsRequired, anonymous })).map((m) => m.name);

test('preference order', (t) => {
  t.deepEqual(MECHANISMS.map((m) => m.name), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS']);
});

test('what is offered where', (t) => {
  t.deepEqual(offered(true, true, false), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN']);
  t.deepEqual(offered(true, true, true), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS']);
  t.deepEqual(offered(false, false, false), ['SCRAM-SHA-256', 'SCRAM-SHA-1']);
  t.deepEqual(offered(false, false, true), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'ANONYMOUS']);
  t.deepEqual(offered(false, true, true), []);
});
