// The load tool (`node src/main.ts load`) against a real server, over real
// sockets: each workload run small, each TLS mode and SASL mechanism, and
// its refusals. Every run is bounded by its count (the --duration given is
// only a safety limit), except idle, which lasts its duration by design.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { clean, runLoad } from './run.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_REGISTRATION: 'true', XMPP_ANONYMOUS: 'true' });
});

test.after.always(async () => {
  await server?.stop();
});

const starttls = () => ['--port', String(server.c2sPort)];
const direct = () => ['--tls', 'direct', '--port', String(server.tlsPort)];

test('login: provisions the accounts, then exactly --count logins, all bound', async (t) => {
  const r = await runLoad(['login', ...starttls(), '--provision', '--user-prefix', 'lg', '--users', '20', '--count', '20', '--rate', '200', '--duration', '30', '--json']);
  clean(t, r, 'login');
  t.is(r.json.completed, 20);
  t.is(r.json.target, `127.0.0.1:${server.c2sPort}`);
  t.regex(r.stderr, /provisioned 20 accounts: 20 created, 0 already there, 0 failed/);
});

test('--provision keeps accounts that exist (conflict), and the run uses them', async (t) => {
  await server.addUser('pv1', 'password');
  await server.addUser('pv2', 'password');
  const r = await runLoad(['login', ...starttls(), '--provision', '--user-prefix', 'pv', '--users', '5', '--count', '10', '--workers', '2', '--duration', '30', '--json']);
  clean(t, r, 'login');
  t.is(r.json.completed, 10);
  t.regex(r.stderr, /provisioned 5 accounts: 3 created, 2 already there, 0 failed/);
});

test('chat: every message sent is delivered, with its latency; an HTML report', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'load-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const report = join(dir, 'chat.html');
  const r = await runLoad(['chat', ...starttls(), '--provision', '--user-prefix', 'ch', '--users', '20', '--rate', '5', '--count', '300', '--workers', '2', '--duration', '30', '--json', '--report', report]);
  clean(t, r, 'chat');
  t.is(r.json.sent, 300);
  t.is(r.json.delivered, 300);
  t.is(r.json.completed, 300);
  const html = readFileSync(report, 'utf8');
  t.is(html.match(/<svg /g)?.length, 2);
  t.regex(html, /delivered\/s/);
});

test('chat with --sm: stream management enabled on every connection, the server\'s ack requests answered, every message delivered', async (t) => {
  const r = await runLoad(['chat', ...starttls(), '--sm', '--provision', '--user-prefix', 'sm', '--users', '10', '--rate', '5', '--count', '200', '--duration', '30', '--json']);
  clean(t, r, 'chat');
  // A connection whose <enable/> failed, or whose acks the server refused (a count too high), would have failed.
  t.is(r.json.delivered, 200);
});

test('flap: with resumption, every connection cut at once resumes its session; every message delivered once', async (t) => {
  const r = await runLoad(['flap', ...direct(), '--provision', '--user-prefix', 'fl', '--users', '12', '--rate', '10', '--workers', '2', '--duration', '3', '--json']);
  clean(t, r, 'flap');
  t.is(r.json.resumed, 12);
  t.is(r.json.resumeFailed, 0);
  t.is(r.json.duplicates, 0);
  t.true(typeof r.json.resumeMs === 'number' && r.json.resumeMs > 0, `resumed after ${r.json.resumeMs} ms`);
  // Messages flowed before and after the cut, and every one arrived (lost would be an error).
  t.true((r.json.sent as number) > 100, `sent ${r.json.sent}`);
  t.is(r.json.delivered, r.json.sent);
});

test('muc: rooms created and entered, every groupchat message fanned out to every occupant once', async (t) => {
  // 3 rooms of 4 over 5 accounts: an account is in several rooms (one connection each), never twice in one.
  const r = await runLoad(['muc', ...starttls(), '--provision', '--user-prefix', 'mu', '--users', '5', '--rooms', '3', '--occupants', '4', '--room-prefix', 'lr', '--rate', '10', '--count', '60', '--workers', '2', '--duration', '30', '--json']);
  clean(t, r, 'muc');
  t.like(r.json, { rooms: 3, occupants: 4, joined: 12, sent: 60, expected: 240, delivered: 240, completed: 240, lost: 0, duplicates: 0 });
  t.true(typeof r.json.joinMs === 'number' && r.json.joinMs > 0, `joined after ${r.json.joinMs} ms`);
  t.true((r.json.messagesPerSecond as number) > 0);
  t.is(r.json.perSecond, Math.round((240 / r.json.durationS) * 10) / 10);
});

test('muc: a room that cannot be created is counted, nothing sent to it', async (t) => {
  // No such service: every join is refused, and the run fails.
  const r = await runLoad(['muc', ...starttls(), '--provision', '--user-prefix', 'mx', '--users', '2', '--rooms', '1', '--occupants', '2', '--muc-domain', 'nowhere.localhost', '--count', '5', '--duration', '10', '--json']);
  t.is(r.code, 1);
  t.like(r.json, { joined: 0, sent: 0, delivered: 0, lost: 0 });
  t.is(r.json.failed, 2);
  t.is(Object.keys(r.json.errors).length, 2, JSON.stringify(r.json.errors));
  t.is(r.json.errors['muc-join:room-not-created'], 1);
});

test('idle: holds the connections until the duration ends; server memory per connection', async (t) => {
  // The test server runs in this process: its memory is ours. The duration
  // includes the logins: 20 of them took over 2 s on a loaded machine (CI),
  // and none was done when it ended.
  const r = await runLoad(['idle', ...starttls(), '--provision', '--user-prefix', 'id', '--connections', '20', '--duration', '8', '--pid', String(process.pid), '--json']);
  clean(t, r, 'idle');
  t.is(r.json.connections, 20);
  t.is(r.json.completed, 20);
  t.true(r.json.durationS >= 8, `held ${r.json.durationS} s`);
  t.is(typeof r.json.serverRssBytesBefore, 'number');
  t.is(typeof r.json.serverRssBytesAfter, 'number');
  t.is(typeof r.json.bytesPerConnection, 'number');
  t.is(typeof r.json.serverRssBytesSettled, 'number');
  t.is(r.json.bytesPerConnectionSettled, Math.round(((r.json.serverRssBytesSettled as number) - (r.json.serverRssBytesBefore as number)) / 20));
});

test('storm: all connections dropped and bound again', async (t) => {
  const r = await runLoad(['storm', ...starttls(), '--provision', '--user-prefix', 'st', '--connections', '20', '--workers', '2', '--duration', '30', '--json']);
  clean(t, r, 'storm');
  t.is(r.json.connections, 20);
  t.is(r.json.completed, 20);
  const rebind = r.json.rebindMs as number;
  t.is(typeof rebind, 'number');
  t.true(rebind > 0 && rebind >= r.json.latencyMs.max - 1, `rebind ${rebind} ms, slowest ${r.json.latencyMs.max} ms`);
});

test('ANONYMOUS over direct TLS', async (t) => {
  const r = await runLoad(['login', ...direct(), '--mechanism', 'ANONYMOUS', '--count', '15', '--rate', '200', '--duration', '30', '--json']);
  clean(t, r, 'login');
  t.is(r.json.completed, 15);
  t.is(r.json.target, `127.0.0.1:${server.tlsPort}`);
});

test('PLAIN over STARTTLS, and SCRAM-SHA-1 over direct TLS', async (t) => {
  const plain = await runLoad(['login', ...starttls(), '--mechanism', 'PLAIN', '--provision', '--user-prefix', 'pl', '--users', '5', '--count', '10', '--rate', '200', '--duration', '30', '--json']);
  clean(t, plain, 'login');
  t.is(plain.json.completed, 10);
  const scram = await runLoad(['login', ...direct(), '--user-prefix', 'pl', '--users', '5', '--count', '10', '--rate', '200', '--duration', '30', '--json']);
  clean(t, scram, 'login');
  t.is(scram.json.completed, 10);
});

test('--duration bounds a run whose --count is out of reach', async (t) => {
  const r = await runLoad(['login', ...starttls(), '--mechanism', 'ANONYMOUS', '--rate', '10', '--count', '100000', '--duration', '1', '--json']);
  clean(t, r, 'login');
  t.true(r.json.completed >= 5 && r.json.completed <= 12, `completed ${r.json.completed}`);
  t.true(r.json.durationS >= 1 && r.json.durationS < 2, `durationS ${r.json.durationS}`);
});

test('plain TCP against a server that requires TLS: no mechanism offered, counted', async (t) => {
  const r = await runLoad(['login', '--tls', 'none', ...starttls(), '--mechanism', 'ANONYMOUS', '--count', '3', '--duration', '30', '--json']);
  t.is(r.code, 1);
  t.deepEqual(r.json.errors, { 'auth-failure:ANONYMOUS-not-offered': 3 });
});

test('a wrong password: every login fails as auth-failure:not-authorized, exit code 1', async (t) => {
  await server.addUser('wp1', 'right');
  const r = await runLoad(['login', ...starttls(), '--user-prefix', 'wp', '--users', '1', '--password', 'wrong', '--count', '6', '--rate', '200', '--duration', '30', '--json']);
  t.is(r.code, 1);
  t.is(r.json.completed, 0);
  t.is(r.json.failed, 6);
  t.deepEqual(r.json.errors, { 'auth-failure:not-authorized': 6 });
});

test('a target that is not loopback is refused before any connection (exit 2)', async (t) => {
  const r = await runLoad(['login', '--host', '192.0.2.1', '--count', '1', '--json']);
  t.is(r.code, 2);
  t.regex(r.stderr, /refusing 192\.0\.2\.1 .*not a loopback address.*--allow-remote/);
  t.is(r.stdout, '');
});

test('an unreachable target: exit code 1, counted as a connect error', async (t) => {
  // A port that was free a moment ago.
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  const r = await runLoad(['login', '--port', String(port), '--count', '1', '--json']);
  t.is(r.code, 1);
  t.regex(r.stderr, /cannot reach 127\.0\.0\.1:\d+: ECONNREFUSED/);
  t.like(r.json, { completed: 0, errors: { connect: 1 } });
});

test('usage errors: exit code 2 with the usage', async (t) => {
  const r = await runLoad(['login', '--rate', 'fast']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--rate: "fast" is not a number/);
  t.regex(r.stderr, /usage: xmpp-server load/);
});
