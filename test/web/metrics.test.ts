// /metrics, /healthz and /readyz on the HTTP listeners of a real server:
// @xmpp/client users log in and chat, a raw client fails to, a WebSocket
// client logs in too, and the counters they move are read back from the
// node's Prometheus text, which Prometheus's own checker (promtool) accepts.
// Also who may read it (XMPP_METRICS), and that a worker's death does not
// make the node's counters go back.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { xml } from '@xmpp/client';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { xmppClient, Inbox } from '../helpers/xmpp-client.ts';
import type { XmppClient } from '../helpers/xmpp-client.ts';
import { plainOutcome, secured, within, online as rawOnline, NS_SASL } from '../helpers/protocol.ts';
import { wsOnline } from '../helpers/ws.ts';
import { get, scrape, total, promtool } from '../helpers/metrics.ts';
import type { WorkerLink } from '../../src/acceptor/hub.ts';

// A worker thrown out of its thread on the hub's word (see src/worker/worker.ts), for the death test.
process.env.XMPP_TEST_FAULTS = '1';

const WAIT = 15_000;
let server: TestServer;
const clients: XmppClient[] = [];

test.before(async () => {
  server = await startTestServer({ XMPP_HTTP_PORT: '0', XMPP_HTTPS_PORT: '0', XMPP_METRICS: '127.0.0.1,::1' });
  for (const u of ['alice', 'bob', 'carol', 'dave']) await server.addUser(u, `${u}-pw`);
});
test.after.always(async () => {
  await Promise.allSettled(clients.map((c) => c.stop()));
  await server?.stop();
});

async function online(t: ExecutionContext, s: TestServer, user: string, resource: string): Promise<XmppClient> {
  const c = xmppClient(s, { username: user, password: `${user}-pw`, resource });
  c.reconnect.stop();
  clients.push(c);
  await within(c.start(), WAIT, `${user} logging in with @xmpp/client`);
  t.teardown(() => c.stop().catch(() => {}));
  return c;
}

const mam = (c: XmppClient) => within(c.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: 'urn:xmpp:mam:2' }))), WAIT, 'a MAM query');

// The tests that count run one at a time: each reads what it alone moved.
test.serial('logins good and bad, chat, offline storage and the archive move their counters; promtool accepts the text; no JID in it', async (t) => {
  const before = (await scrape(server.httpPort!)).samples;
  const alice = await online(t, server, 'alice', 'a');
  const bob = await online(t, server, 'bob', 'b');
  const bobJid = bob.jid!.toString();
  const inbox = new Inbox(bob);
  // A wrong password, and a mechanism nobody has heard of.
  t.is(await plainOutcome(server.c2sPort, 'alice', 'wrong'), 'not-authorized');
  const { c: raw } = await secured(server.c2sPort);
  t.teardown(() => raw.destroy());
  raw.send(`<auth xmlns='${NS_SASL}' mechanism='X-NONSENSE-${process.pid}'/>`);
  t.is((await within(raw.nextEl('failure'), WAIT, 'the SASL failure')).getChildElements()[0]?.name, 'invalid-mechanism');
  // Three messages to Bob, one to Carol, who is offline (stored, XEP-0160).
  for (let i = 0; i < 3; i++) await alice.send(xml('message', { to: bobJid, type: 'chat', id: `m${i}` }, xml('body', {}, `hello ${i}`)));
  await alice.send(xml('message', { to: 'carol@localhost', type: 'chat', id: 'off' }, xml('body', {}, 'for later')));
  for (let i = 0; i < 3; i++) await within(inbox.find((el) => el.name === 'message' && el.attrs.id === `m${i}`), WAIT, `Bob's message ${i}`);
  // A MAM query waits for its worker's archive writes: after both, the rows are written.
  await mam(alice);
  await mam(bob);
  // Carol's message went to storage once the router was done with it, before Alice's next stanza (her query) was handled.
  const { text, samples: after } = await scrape(server.httpPort!);
  const moved = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);

  t.is(moved('xmpp_logins_total', { stream: 'c2s' }), 2, 'two logins');
  t.is(moved('xmpp_login_failures_total', { mechanism: 'PLAIN', condition: 'not-authorized', stream: 'c2s' }), 1);
  // The unknown name is not a label value: the series stay bounded whatever clients send.
  t.is(moved('xmpp_login_failures_total', { mechanism: 'other', condition: 'invalid-mechanism', stream: 'c2s' }), 1);
  t.false(text.includes('X-NONSENSE'));
  t.is(moved('xmpp_stanzas_received_total', { kind: 'message', stream: 'c2s' }), 4);
  // Bob's three (Carol's is stored), and the archive's answers: Alice's four, Bob's three (XEP-0313 §4.2).
  t.is(moved('xmpp_stanzas_sent_total', { kind: 'message', stream: 'c2s' }), 3 + 4 + 3);
  t.true(moved('xmpp_stanzas_received_total', { kind: 'iq', stream: 'c2s' }) >= 4, 'binds and queries');
  t.true(moved('xmpp_stanzas_sent_total', { kind: 'iq', stream: 'c2s' }) >= 4, 'their answers');
  t.true(moved('xmpp_routing_duration_seconds_count', { stream: 'c2s' }) >= 6, 'every stanza routed is timed');
  t.true(moved('xmpp_routing_duration_seconds_bucket', { stream: 'c2s', le: '+Inf' }) >= 6);
  t.is(moved('xmpp_offline_messages_total', { result: 'stored' }), 1);
  t.true(moved('xmpp_archive_rows_written_total') >= 6, "each of Bob's messages in both archives");
  t.true(moved('xmpp_database_query_duration_seconds_count', { backend: 'sqlite' }) > 0, 'the storage thread, timed');
  // Both are online now, with an established stream each.
  t.is(total(after, 'xmpp_connections', { kind: 'c2s', transport: 'tcp', state: 'established' }), 2);
  t.is(total(after, 'xmpp_sessions', { state: 'online' }), 2);
  t.is(total(after, 'xmpp_workers'), 2);
  t.true(total(after, 'xmpp_accepted_connections') >= 3, 'Alice, Bob, the raw client and this scrape');
  // One series per worker for what is the thread's own.
  t.is(after.filter((s) => s.name === 'xmpp_worker_heap_used_bytes').length, 2);
  t.true(total(after, 'process_cpu_seconds_total') > 0, "the process's own metrics");
  // A single node has no node label.
  t.false(after.some((s) => 'node' in s.labels));
  // No JID, no user name in any series.
  t.false(/alice|bob|carol|@localhost/.test(text));
  const check = await promtool(text);
  t.is(check.code, 0, check.output);
});

test.serial('a WebSocket session counts as a client stream over WebSocket, its SCRAM-SHA-256 login by mechanism', async (t) => {
  const before = (await scrape(server.httpPort!)).samples;
  const { c } = await wsOnline(server, 'dave', 'dave-pw', 'web');
  t.teardown(() => c.close());
  const after = (await scrape(server.httpPort!)).samples;
  t.is(total(after, 'xmpp_logins_total', { mechanism: 'SCRAM-SHA-256', stream: 'c2s' }) - total(before, 'xmpp_logins_total', { mechanism: 'SCRAM-SHA-256', stream: 'c2s' }), 1);
  t.is(total(after, 'xmpp_connections', { kind: 'c2s', transport: 'websocket', state: 'established' }), 1);
});

test('/healthz and /readyz answer 200 on both listeners, with GET and HEAD; other methods are refused', async (t) => {
  for (const path of ['/healthz', '/readyz']) {
    const r = await get(server.httpPort!, path);
    t.is(r.status, 200, path);
    t.is(r.headers['cache-control'], 'no-store');
    t.is(r.body, path === '/healthz' ? 'ok\n' : 'ready\n');
    const head = await get(server.httpPort!, path, { method: 'HEAD' });
    t.is(head.status, 200);
    t.is(head.body, '');
    t.is((await get(server.httpPort!, path, { method: 'POST' })).status, 405);
  }
  // Over TLS (what a load balancer's check does on the HTTPS port).
  const https = await import('node:https');
  const status = await within(
    new Promise<number>((resolve, reject) => https.get({ host: '127.0.0.1', port: server.httpsPort, path: '/readyz', rejectUnauthorized: false, agent: false }, (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject)),
    WAIT,
    'GET /readyz over TLS',
  );
  t.is(status, 200);
});

test('who may read /metrics: the listed addresses, and no request a proxy not trusted relays', async (t) => {
  t.is((await get(server.httpPort!, '/metrics')).status, 200);
  t.is((await get(server.httpPort!, '/metrics', { method: 'HEAD' })).body, '');
  t.is((await get(server.httpPort!, '/metrics', { method: 'POST' })).status, 405);
  // A reverse proxy on this machine relays everyone from loopback: what it relays is refused.
  const relayed: Record<string, string>[] = [{ 'X-Forwarded-For': '127.0.0.1' }, { Forwarded: 'for=127.0.0.1' }, { 'X-Real-IP': '127.0.0.1' }];
  for (const headers of relayed) {
    const r = await get(server.httpPort!, '/metrics', { headers });
    t.is(r.status, 403, JSON.stringify(headers));
    t.regex(r.body, /XMPP_METRICS/);
  }
});

test('without XMPP_METRICS there is no /metrics; health is served all the same', async (t) => {
  const other = await startTestServer({ XMPP_HTTP_PORT: '0', XMPP_WORKERS: '1' });
  t.teardown(() => other.stop());
  t.is((await get(other.httpPort!, '/metrics')).status, 404);
  t.is((await get(other.httpPort!, '/healthz')).status, 200);
  t.is((await get(other.httpPort!, '/readyz')).status, 200);
});

function externalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}
const external = externalIPv4();
(external ? test : test.skip)('from another address: refused unless listed; through a trusted proxy, the client it names counts', async (t) => {
  const other = await startTestServer({ XMPP_BIND_HOST: '0.0.0.0', XMPP_HTTP_PORT: '0', XMPP_WORKERS: '1', XMPP_METRICS: '127.0.0.1,203.0.113.7', XMPP_HTTP_TRUSTED_PROXIES: external! });
  t.teardown(() => other.stop());
  t.not(external, '203.0.113.7');
  const from = { host: external, localAddress: external };
  // The proxy itself is not listed.
  t.is((await get(other.httpPort!, '/metrics', from)).status, 403);
  // Relaying a listed client; and one that is not.
  t.is((await get(other.httpPort!, '/metrics', { ...from, headers: { 'X-Forwarded-For': '203.0.113.7' } })).status, 200);
  t.is((await get(other.httpPort!, '/metrics', { ...from, headers: { 'X-Forwarded-For': '203.0.113.8' } })).status, 403);
  // Health is for anyone (a load balancer).
  t.is((await get(other.httpPort!, '/readyz', from)).status, 200);
});

test.serial("a worker's death: its counts stay in the node's totals, which never go back", async (t) => {
  const s = await startTestServer({ XMPP_HTTP_PORT: '0', XMPP_METRICS: '127.0.0.1', XMPP_LOG_LEVEL: 'error' });
  t.teardown(() => s.stop());
  for (const u of ['erin', 'frank']) await s.addUser(u, `${u}-pw`);
  // Two raw clients, one on each worker (connections go to the least busy one).
  const erin = await rawOnline(s.c2sPort, 'erin', 'erin-pw', 'e');
  const frank = await rawOnline(s.c2sPort, 'frank', 'frank-pw', 'f');
  t.teardown(() => {
    erin.c.destroy();
    frank.c.destroy();
  });
  const doomed = s.hub.registry.lookup(erin.jid)!.worker;
  t.not(doomed, s.hub.registry.lookup(frank.jid)!.worker, 'one session on each worker');
  for (let i = 0; i < 5; i++) erin.c.send(`<message to='${frank.jid}' id='d${i}' type='chat'><body>${i}</body></message>`);
  await within(frank.c.find((el) => el.attrs.id === 'd4'), WAIT, "Frank's last message");
  const before = (await scrape(s.httpPort!)).samples;
  const received = (samples: typeof before) => total(samples, 'xmpp_stanzas_received_total', { kind: 'message' });
  t.is(received(before), 5);

  const lost = once(s.hub, 'lost') as Promise<[WorkerLink]>;
  const joined = once(s.hub, 'joined') as Promise<[WorkerLink]>;
  t.true(s.hub.sendTo(doomed, { t: 'fault' }));
  await within(lost, WAIT, 'the worker to be taken out');
  await within(erin.c.closed, WAIT, "Erin's connection to go with it");
  await within(joined, WAIT, 'a replacement');
  await within(s.hub.ready(2), WAIT, 'the replacement to serve');

  const after = (await scrape(s.httpPort!)).samples;
  t.is(received(after), 5, "Erin's worker's count stays");
  t.true(total(after, 'xmpp_logins_total') >= total(before, 'xmpp_logins_total'));
  t.is(total(after, 'xmpp_worker_deaths_total'), 1);
  t.is(total(after, 'xmpp_sessions', { state: 'online' }), 1, "only Frank's session is left");
  // Counted on: a message from Frank, read by the worker that lived.
  frank.c.send(`<message to='${frank.jid}' id='self' type='chat'><body>me</body></message>`);
  await within(frank.c.find((el) => el.attrs.id === 'self'), WAIT, "Frank's message to himself");
  t.is(received((await scrape(s.httpPort!)).samples), 6);
});
