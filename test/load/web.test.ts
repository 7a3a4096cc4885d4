// The load tool over the web transports: WebSocket (RFC 7395) and BOSH
// (XEP-0124, XEP-0206) against a real server's HTTPS and HTTP listeners,
// each run small and bounded by its count.
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { clean, runLoad } from './run.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_REGISTRATION: 'true', XMPP_HTTPS_PORT: '0', XMPP_HTTP_PORT: '0' });
});

test.after.always(async () => {
  await server?.stop();
});

for (const transport of ['websocket', 'bosh'] as const) {
  const path = transport === 'websocket' ? 'xmpp-websocket' : 'http-bind';
  const scheme = transport === 'websocket' ? 'wss' : 'https';

  test(`${transport}: provisioning, then logins over TLS (SCRAM-SHA-1), all bound`, async (t) => {
    const prefix = `${transport[0]}l`;
    const r = await runLoad(['login', '--transport', transport, '--port', String(server.httpsPort), '--provision', '--user-prefix', prefix, '--users', '10', '--count', '20', '--rate', '100', '--workers', '2', '--duration', '30', '--json']);
    clean(t, r, 'login');
    t.is(r.json.completed, 20);
    t.is(r.json.target, `${scheme}://127.0.0.1:${server.httpsPort}/${path}`);
    t.regex(r.stderr, /provisioned 10 accounts: 10 created, 0 already there, 0 failed/);
  });

  test(`${transport}: chat, every message delivered with its latency`, async (t) => {
    const prefix = `${transport[0]}c`;
    for (let i = 1; i <= 10; i++) await server.addUser(`${prefix}${i}`, 'password');
    const r = await runLoad(['chat', '--transport', transport, '--url', `${scheme}://localhost:${server.httpsPort}/${path}`, '--user-prefix', prefix, '--users', '10', '--rate', '10', '--count', '300', '--workers', '2', '--duration', '30', '--json']);
    clean(t, r, 'chat');
    t.like(r.json, { sent: 300, delivered: 300, completed: 300 });
  });

  test(`${transport}: login and chat over plain HTTP from loopback (secure enough for SASL there)`, async (t) => {
    const prefix = `${transport[0]}p`;
    for (let i = 1; i <= 4; i++) await server.addUser(`${prefix}${i}`, 'password');
    const url = `${transport === 'websocket' ? 'ws' : 'http'}://127.0.0.1:${server.httpPort}/${path}`;
    const login = await runLoad(['login', '--transport', transport, '--url', url, '--user-prefix', prefix, '--users', '4', '--count', '8', '--rate', '100', '--duration', '30', '--json']);
    clean(t, login, 'login');
    t.is(login.json.completed, 8);
    const chat = await runLoad(['chat', '--transport', transport, '--url', url, '--user-prefix', prefix, '--users', '4', '--rate', '10', '--count', '60', '--duration', '30', '--json']);
    clean(t, chat, 'chat');
    t.like(chat.json, { sent: 60, delivered: 60 });
  });

  test(`${transport}: idle sessions held, server memory per session`, async (t) => {
    // idle lasts its --duration by design: long enough for ten sessions on a loaded machine (--timeout bounds each).
    const prefix = `${transport[0]}i`;
    for (let i = 1; i <= 10; i++) await server.addUser(`${prefix}${i}`, 'password');
    const r = await runLoad(['idle', '--transport', transport, '--port', String(server.httpsPort), '--user-prefix', prefix, '--connections', '10', '--duration', '20', '--timeout', '15', '--pid', String(process.pid), '--json']);
    clean(t, r, 'idle');
    t.is(r.json.connections, 10);
    t.true(r.json.durationS >= 20, `held ${r.json.durationS} s`);
    t.is(typeof r.json.bytesPerConnection, 'number');
  });
}

test('a wrong password over WebSocket and over BOSH: auth-failure:not-authorized', async (t) => {
  await server.addUser('ww1', 'right');
  for (const transport of ['websocket', 'bosh']) {
    const r = await runLoad(['login', '--transport', transport, '--port', String(server.httpsPort), '--user-prefix', 'ww', '--users', '1', '--password', 'wrong', '--count', '3', '--rate', '100', '--duration', '30', '--json']);
    t.is(r.code, 1, transport);
    t.deepEqual(r.json.errors, { 'auth-failure:not-authorized': 3 }, transport);
  }
});

test('usage errors for the web transports: exit code 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['login', '--transport', 'bosh'], /which HTTP port\?/],
    [['login', '--transport', 'carrier-pigeon'], /--transport: tcp, websocket or bosh/],
    [['login', '--url', 'wss://localhost/xmpp-websocket'], /--url goes with --transport websocket or bosh/],
    [['login', '--transport', 'websocket', '--url', 'https://localhost/http-bind'], /--url: ws:\/\/ or wss:\/\/ for --transport websocket/],
    [['storm', '--transport', 'websocket', '--port', '5280'], /the login, chat and idle workloads only/],
    [['login', '--transport', 'bosh', '--tls', 'starttls', '--port', '5280'], /no STARTTLS over HTTP/],
  ];
  for (const [args, re] of cases) {
    const r = await runLoad(args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, re);
  }
});
