// The load tool over plain TCP (--tls none), against a server that does not
// require TLS.
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { runLoad } from './run.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_REGISTRATION: 'true', XMPP_TLS_REQUIRED: 'false' });
});

test.after.always(async () => {
  await server?.stop();
});

test('login and chat over plain TCP with SCRAM-SHA-1', async (t) => {
  const port = String(server.c2sPort);
  const login = await runLoad(['login', '--tls', 'none', '--port', port, '--provision', '--users', '10', '--count', '10', '--rate', '200', '--duration', '30', '--json']);
  t.is(login.code, 0, login.stderr);
  t.like(login.json, { workload: 'login', completed: 10, failed: 0, errors: {} });
  const chat = await runLoad(['chat', '--tls', 'none', '--port', port, '--users', '10', '--rate', '10', '--count', '100', '--duration', '30', '--json']);
  t.is(chat.code, 0, chat.stderr);
  t.like(chat.json, { workload: 'chat', sent: 100, delivered: 100, completed: 100, failed: 0, errors: {} });
  t.true(chat.json.latencyMs.p50 > 0 && chat.json.latencyMs.p50 <= chat.json.latencyMs.max);
});
