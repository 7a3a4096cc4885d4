// BOSH (XEP-0124, XEP-0206) at /http-bind over real TLS, with a raw client
// that says exactly which rids it sends, against a real server whose TCP
// users it talks to.
import test, { type ExecutionContext } from 'ava';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { once } from 'node:events';
import { parse as parseXml } from 'ltx';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { online, authenticated, within, until, uid, NS_SASL, NS_TLS, NS_STREAMS_ERR } from '../helpers/protocol.ts';
import { NS_SM, isBody } from '../helpers/im.ts';
import { serverCa } from '../helpers/ws.ts';
import { environment, spawnServer, START_MS } from '../helpers/process.ts';
import { BoshClient, NS_HTTPBIND, NS_XBOSH, boshBind, boshOnline, boshScram, payloads, post } from '../helpers/bosh.ts';
import { reply } from '../helpers/http.ts';

const MAX_STANZA = 4096;
let server: TestServer;
test.before(async () => {
  server = await startTestServer({ XMPP_HTTP_PORT: '0', XMPP_HTTPS_PORT: '0', XMPP_MAX_STANZA_BYTES: String(MAX_STANZA) });
  for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank', 'ivy', 'sam', 'tom']) await server.addUser(u, `${u}-pw`);
});
test.after.always(() => server?.stop());

const httpsUrl = () => `https://localhost:${server.httpsPort}/http-bind`;
const httpUrl = () => `http://127.0.0.1:${server.httpPort}/http-bind`;
const mechanisms = (features: Element) => features.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.getText()) ?? [];
const ping = (id: string) => `<iq xmlns='jabber:client' type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`;

/**
 * Requests pipelined on one TLS connection (HTTP/1.1), in the order given:
 * the server reads them in that order. Their answers, in the same order.
 */
async function pipelined(url: string, bodies: string[]): Promise<{ status: number; text: string }[]> {
  const u = new URL(url);
  const sock = tls.connect({ host: '127.0.0.1', port: Number(u.port), servername: 'localhost', ca: serverCa(server) });
  await once(sock, 'secureConnect');
  sock.write(bodies.map((b) => `POST ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`).join(''));
  let buf = Buffer.alloc(0);
  const out: { status: number; text: string }[] = [];
  const done = new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        out.push({ status: Number(head.split(' ')[1]), text: buf.subarray(end + 4, end + 4 + length).toString() });
        buf = buf.subarray(end + 4 + length);
        if (out.length === bodies.length) return resolve();
      }
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error(`closed after ${out.length} answers`)));
  });
  try {
    await within(done, 30_000, 'the pipelined answers');
  } finally {
    sock.destroy();
  }
  return out;
}

/** A client of this file's server over https://. */
function client(agents?: number): BoshClient {
  return new BoshClient(httpsUrl(), { ca: serverCa(server), agents });
}

test('https://: session creation, SCRAM-SHA-256 login, restart, bind, and messages both ways with a TCP user', async (t) => {
  const c = client();
  t.teardown(() => c.close());
  const created = await c.create();
  t.is(created.attrs.xmlns, NS_HTTPBIND);
  t.truthy(created.attrs.sid);
  // XEP-0124 §7.2: what the session is.
  t.is(created.attrs.wait, '10');
  t.is(created.attrs.hold, '1');
  t.is(created.attrs.requests, '2');
  t.is(created.attrs.ver, '1.11');
  t.is(created.attrs.inactivity, '60');
  t.is(created.attrs.maxpause, '120');
  t.is(created.attrs.polling, '5');
  t.is(created.attrs.secure, 'true');
  t.is(created.attrs.ack as string | undefined, undefined, 'no acknowledgements unless asked for');
  // XEP-0206 §4: the version and the features.
  t.is(created.attrs['xmpp:version'], '1.0');
  t.is(created.attrs['xmlns:xmpp'], NS_XBOSH);
  t.truthy(created.attrs.authid);
  const features = payloads(created).find((el) => el.name === 'stream:features');
  t.truthy(features, created.toString());
  t.falsy(features!.getChild('starttls', NS_TLS), 'no STARTTLS: TLS is HTTP\'s');
  t.true(mechanisms(features!).includes('SCRAM-SHA-256'), features!.toString());
  const after = await boshScram(c, 'alice', 'alice-pw');
  t.truthy(after.getChild('bind', 'urn:ietf:params:xml:ns:xmpp-bind'));
  t.truthy(after.getChild('sm', 'urn:xmpp:sm:3'), 'stream management is offered as on TCP');
  t.truthy(after.getChild('csi', 'urn:xmpp:csi:0'), 'client state indication too');
  const jid = await boshBind(c, 'web');
  t.is(jid, 'alice@localhost/web');

  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('tcp'));
  t.teardown(() => bob.c.destroy());
  // Sent while no request is held: answered when the next one comes, or after 'wait'.
  const sending = c.send(`<message xmlns='jabber:client' to='${bob.jid}' type='chat'><body>hello from BOSH</body></message>`);
  const got = await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'hello from BOSH'), 10_000, 'bob receiving');
  t.is(got.attrs.from, jid);
  // A payload with no namespace of its own is a jabber:client one (XEP-0206 §2).
  bob.c.send(`<message to='${jid}' type='chat'><body>hello from TCP</body></message>`);
  const back = await c.find((el) => el.name === 'message');
  await sending;
  t.is(back.attrs.from, bob.jid);
  t.is(back.getChildText('body'), 'hello from TCP');
  t.is(back.attrs.xmlns, 'jabber:client');
  const noNs = c.send(`<message to='${bob.jid}' type='chat'><body>no xmlns</body></message>`);
  await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'no xmlns'), 10_000, 'bob receiving the second');
  bob.c.send(`<message to='${jid}' type='chat'><body>done</body></message>`);
  await c.find((el) => el.name === 'message');
  await noNs;
});

test('plain http:// from loopback counts as secure: PLAIN offered and a login works; a local proxy saying the client came in plain HTTP gets no SASL', async (t) => {
  const c = new BoshClient(httpUrl());
  t.teardown(() => c.close());
  const created = await c.create();
  t.is(created.attrs.secure, 'true');
  const features = payloads(created).find((el) => el.name === 'stream:features')!;
  t.true(mechanisms(features).includes('PLAIN'), features.toString());
  await c.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${Buffer.from('\0frank\0frank-pw').toString('base64')}</auth>`);
  t.is((await c.find((el) => el.attrs.xmlns === NS_SASL)).name, 'success');
  await c.send('', { to: 'localhost', 'xmlns:xmpp': NS_XBOSH, 'xmpp:restart': 'true' });
  await c.find((el) => el.name === 'stream:features');
  t.is(await boshBind(c, 'plain'), 'frank@localhost/plain');

  const proxied = await post(httpUrl(), `<body xmlns='${NS_HTTPBIND}' rid='1000' to='localhost' wait='5' hold='1' ver='1.11' xmlns:xmpp='${NS_XBOSH}' xmpp:version='1.0'/>`, { headers: { 'X-Forwarded-Proto': 'http', 'X-Forwarded-For': '198.51.100.7' } });
  t.is(proxied.body?.attrs.secure as string | undefined, undefined);
  const none = payloads(proxied.body).find((el) => el.name === 'stream:features')!;
  t.deepEqual(mechanisms(none), [], none.toString());
  t.falsy(none.getChild('starttls', NS_TLS));
});

test('the requests of one session on connections that different workers serve all reach it (forwarded to the worker it lives on)', async (t) => {
  // A server of its own, so that no other test's connections bend where the acceptor puts these.
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_WORKERS: '2' });
  t.teardown(() => own.stop());
  await own.addUser('walt', 'walt-pw');
  // Four kept-alive connections: the least busy worker gets each, so both workers serve some.
  const { c, jid } = await boshOnline(own, 'walt', 'walt-pw', 'w', { agents: 4 });
  t.teardown(() => c.close());
  t.regex(c.sid, /^[A-Za-z0-9_-]{22}\.[01]\.node-/);
  for (let i = 0; i < 12; i++) {
    await c.send(ping(`p${i}`));
    const r = await c.find((el) => el.attrs.id === `p${i}`);
    t.is(r.attrs.type, 'result', r.toString());
    t.is(r.attrs.to, jid);
  }
});

test('rids out of order are read in order (§14.2): a request pipelined ahead of the one before it waits for it', async (t) => {
  const { c, jid } = await boshOnline(server, 'carol', 'carol-pw', 'ooo');
  t.teardown(() => c.close());
  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('ooo'));
  t.teardown(() => bob.c.destroy());
  const first = c.rid++;
  const second = c.rid++;
  const msg = (body: string) => `<message xmlns='jabber:client' to='${bob.jid}' type='chat'><body>${body}</body></message>`;
  // One connection, the later rid first: it arrives first, for certain.
  const answers = await pipelined(httpsUrl(), [c.wrap({ rid: second }, msg('second') + ping('second')), c.wrap({ rid: first }, msg('first') + ping('first'))]);
  t.deepEqual(answers.map((a) => a.status), [200, 200]);
  await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'first'), 10_000, 'first');
  await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'second'), 10_000, 'second, after the first');
  const results = answers.flatMap((a) => payloads(parseXml(a.text) as Element)).filter((el) => el.name === 'iq').map((el) => el.attrs.id);
  c.inbox.push(...answers.flatMap((a) => payloads(parseXml(a.text) as Element)));
  for (const id of ['first', 'second']) if (!results.includes(id)) await c.find((el) => el.attrs.id === id);
  t.pass(jid);
});

test('a repeated rid gets the answer it got (§14.3), one not answered yet gets it when it comes; one no longer kept, or beyond the window, is item-not-found', async (t) => {
  // Three connections: two carry one request twice while the third sends the next.
  const { c } = await boshOnline(server, 'dave', 'dave-pw', 'rid', { agents: 3 });
  t.teardown(() => c.close());
  const rid = c.rid;
  const a = await c.raw(c.wrap({ rid }, ping('once')));
  c.rid++;
  t.truthy(payloads(a.body).find((el) => el.attrs.id === 'once'), a.text);
  const again = await c.raw(c.wrap({ rid }, ping('once')));
  t.is(again.text, a.text, 'the same answer, not handled again');

  // Held, not yet answered: the copy waits with it, and both get the answer.
  const held = c.rid++;
  const one = c.raw(c.wrap({ rid: held }));
  const two = c.raw(c.wrap({ rid: held }));
  const next = c.send(ping('wake'));
  const [r1, r2] = await Promise.all([one, two]);
  t.is(r1.text, r2.text);
  await next;
  await c.find((el) => el.attrs.id === 'wake');

  // Two answers later the first is no longer kept ('requests' = 2).
  await c.send(ping('x1'));
  await c.send(ping('x2'));
  const lost = await c.raw(c.wrap({ rid }));
  t.is(lost.body?.attrs.type, 'terminate');
  t.is(lost.body?.attrs.condition, 'item-not-found');
  // The session is over.
  const after = await c.raw(c.wrap({ rid: c.rid++ }));
  t.is(after.body?.attrs.condition, 'item-not-found');

  const { c: d } = await boshOnline(server, 'dave', 'dave-pw', 'window');
  t.teardown(() => d.close());
  const beyond = await d.raw(d.wrap({ rid: d.rid + 2 }));
  t.is(beyond.body?.attrs.type, 'terminate');
  t.is(beyond.body?.attrs.condition, 'item-not-found', beyond.text);
  t.is((await d.raw(d.wrap({ rid: d.rid }))).body?.attrs.condition, 'item-not-found', 'terminated');
});

test('one unanswered request sent again and again (§14.3) holds two connections at most: the sendings between the first and the latest are closed', async (t) => {
  const { c } = await boshOnline(server, 'dave', 'dave-pw', 'resent');
  t.teardown(() => c.close());
  // Held (nothing to answer it with), then sent again on three more connections of their own.
  const rid = c.rid++;
  let closed = 0;
  let twoClosed!: () => void;
  const closing = new Promise<void>((resolve) => (twoClosed = resolve));
  const sendings = Array.from({ length: 4 }, () =>
    post(c.url, c.wrap({ rid }), { ca: c.ca }).then(
      (a) => ({ text: a.text }),
      (err: Error) => {
        if (++closed === 2) twoClosed();
        return { err: err.message };
      },
    ),
  );
  // Without a bound all four wait for the answer, which comes after 'wait' (10 s).
  await Promise.race([closing, Promise.all(sendings)]);
  await c.send(ping('wake'));
  const all = await Promise.all(sendings);
  const answered = all.filter((r): r is { text: string } => 'text' in r);
  t.is(closed, 2, JSON.stringify(all));
  t.is(answered.length, 2);
  t.is(answered[0].text, answered[1].text);
  // The session lives on.
  await c.send(ping('after'));
  await c.find((el) => el.attrs.id === 'after');
});

test('bad requests: no rid, not a <body/>, an unknown sid', async (t) => {
  const noRid = await post(httpsUrl(), `<body xmlns='${NS_HTTPBIND}' to='localhost' ver='1.11'/>`, { ca: serverCa(server) });
  t.is(noRid.status, 200);
  t.is(noRid.body?.attrs.condition, 'bad-request');
  // §17.1: a legacy client (no 'ver') gets the HTTP status instead.
  t.is((await post(httpsUrl(), `<body xmlns='${NS_HTTPBIND}' to='localhost'/>`, { ca: serverCa(server) })).status, 400);
  const notBody = await post(httpsUrl(), `<message xmlns='jabber:client'/>`, { ca: serverCa(server) });
  t.is(notBody.body?.attrs.condition, 'bad-request');
  const garbage = await post(httpsUrl(), `not xml`, { ca: serverCa(server) });
  t.is(garbage.body?.attrs.condition, 'bad-request');
  // The stream's own errors at creation: remote-stream-error with the stream error (XEP-0206 §6).
  const elsewhere = await post(httpsUrl(), `<body xmlns='${NS_HTTPBIND}' rid='77' to='elsewhere.example' ver='1.11' wait='5' hold='1'/>`, { ca: serverCa(server) });
  t.is(elsewhere.body?.attrs.type, 'terminate');
  t.is(elsewhere.body?.attrs.condition, 'remote-stream-error');
  t.truthy(elsewhere.body?.getChild('host-unknown', NS_STREAMS_ERR), elsewhere.text);
  for (const sid of ['nope', `${'A'.repeat(22)}.0.node-x`, `${'A'.repeat(22)}.1.${server.config.nodeId}`, `${'A'.repeat(22)}.7.${server.config.nodeId}`]) {
    const r = await post(httpsUrl(), `<body xmlns='${NS_HTTPBIND}' sid='${sid}' rid='5'/>`, { ca: serverCa(server) });
    t.is(r.body?.attrs.type, 'terminate', sid);
    t.is(r.body?.attrs.condition, 'item-not-found', sid);
  }
});

test("'wait' expires: a held request is answered empty (§8); the session lives on", async (t) => {
  const { c } = await boshOnline(server, 'gina', 'gina-pw', 'wait', { attrs: { wait: 1 } });
  t.teardown(() => c.close());
  const empty = await c.send();
  t.deepEqual(payloads(empty), []);
  t.is(empty.attrs.type as string | undefined, undefined);
  await c.send(ping('alive'));
  t.is((await c.find((el) => el.attrs.id === 'alive')).attrs.type, 'result');
  // Longer than XMPP_BOSH_MAX_WAIT is cut down to it.
  const long = client();
  t.teardown(() => long.close());
  t.is((await long.create({ wait: 3600 })).attrs.wait, '60');
});

test('terminate (§13): the payloads are sent, the answer is type terminate, the session ends; another resource sees it go', async (t) => {
  const tcp = await online(server.c2sPort, 'erin', 'erin-pw', 'tcp');
  t.teardown(() => tcp.c.destroy());
  tcp.c.send(`<presence/>`);
  const { c, jid } = await boshOnline(server, 'erin', 'erin-pw', 'bosh');
  t.teardown(() => c.close());
  await c.send(`<presence xmlns='jabber:client'/>`);
  await within(tcp.c.find((el) => el.name === 'presence' && el.attrs.from === jid && el.attrs.type === undefined), 10_000, 'available');
  const end = await c.send(`<presence xmlns='jabber:client' type='unavailable'><status>bye</status></presence>`, { type: 'terminate' });
  t.is(end.attrs.type, 'terminate');
  t.is(end.attrs.condition as string | undefined, undefined);
  const gone = await within(tcp.c.find((el) => el.name === 'presence' && el.attrs.from === jid && el.attrs.type === 'unavailable'), 10_000, 'unavailable');
  t.is(gone.getChildText('status'), 'bye', 'the payload of the termination was sent');
  const after = await c.raw(c.wrap({ rid: c.rid++ }));
  t.is(after.body?.attrs.condition, 'item-not-found');

  // A polling session (hold 0) is answered at once, but its termination only once the stream ended.
  const p = client();
  t.teardown(() => p.close());
  await p.create({ hold: 0, wait: 0 });
  const ended = await p.send('', { type: 'terminate' });
  t.is(ended.attrs.type, 'terminate', ended.toString());
});

test('output larger than one answer is spread over several (64 KiB each), in order, none lost', async (t) => {
  const { c, jid } = await boshOnline(server, 'frank', 'frank-pw', 'bulk');
  t.teardown(() => c.close());
  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('bulk'));
  t.teardown(() => bob.c.destroy());
  const n = 40;
  for (let i = 0; i < n; i++) bob.c.send(`<message to='${jid}' type='chat'><body>${i} ${'z'.repeat(3000)}</body></message>`);
  const got: number[] = [];
  let answers = 0;
  while (got.length < n) {
    const body = await c.send();
    answers++;
    t.true(Buffer.byteLength(body.toString()) < 64 * 1024 + 4096, `an answer of ${Buffer.byteLength(body.toString())} bytes`);
    for (const el of payloads(body)) if (el.name === 'message') got.push(Number(el.getChildText('body')!.split(' ')[0]));
    c.inbox.length = 0;
  }
  t.deepEqual(got, [...Array(n).keys()]);
  t.true(answers >= 2, `${answers} answers`);
});

test('a pause (§10) answers what is held at once, without payloads', async (t) => {
  const { c } = await boshOnline(server, 'gina', 'gina-pw', 'pause');
  t.teardown(() => c.close());
  const held = c.send();
  const paused = await c.send('', { pause: 30 });
  t.deepEqual(payloads(paused), []);
  t.is(paused.attrs.type as string | undefined, undefined);
  await held;
  await c.send(ping('back'));
  t.is((await c.find((el) => el.attrs.id === 'back')).attrs.type, 'result');
});

test("acknowledgements (§9.1): with ack='1' the creation says the rid, and an answer to a request overtaken by a later one acknowledges the later one", async (t) => {
  const c = client();
  t.teardown(() => c.close());
  const rid = c.rid;
  const created = await c.create({ ack: 1 });
  t.is(created.attrs.ack, String(rid));
  await boshScram(c, 'alice', 'alice-pw');
  await boshBind(c, 'acks');
  const first = c.rid;
  const held = c.send('', { ack: first - 1 });
  const second = await c.send(ping('acked'), { ack: first - 1 });
  const answerToFirst = await held;
  t.is(answerToFirst.attrs.ack, String(first + 1));
  // §9.1: not on the answer to the highest rid itself.
  if (payloads(second).some((el) => el.attrs.id === 'acked')) t.is(second.attrs.ack as string | undefined, undefined);
  else await c.find((el) => el.attrs.id === 'acked');
});

test('over-polling (§11, §12): an empty request while an empty one is held, or two empty polls in a row, is policy-violation', async (t) => {
  const { c } = await boshOnline(server, 'bob', 'bob-pw', uid('poll'));
  t.teardown(() => c.close());
  await c.send(ping('busy'));
  await c.find((el) => el.attrs.id === 'busy');
  const one = c.send();
  const two = await c.send();
  t.is(two.attrs.type, 'terminate');
  t.is(two.attrs.condition, 'policy-violation');
  t.is((await one).attrs.type, 'terminate');

  const p = client();
  t.teardown(() => p.close());
  const created = await p.create({ hold: 0, wait: 0 });
  t.is(created.attrs.hold, '0');
  t.is(created.attrs.requests, '1');
  t.deepEqual(payloads(await p.send()), []);
  const second = await p.send();
  t.is(second.attrs.condition, 'policy-violation');
});

test('a body over twice XMPP_MAX_STANZA_BYTES is refused (413) with the session untouched; a stanza over XMPP_MAX_STANZA_BYTES ends the stream with policy-violation', async (t) => {
  const { c } = await boshOnline(server, 'hank', 'hank-pw', 'big');
  t.teardown(() => c.close());
  const huge = await post(httpsUrl(), c.wrap({ rid: c.rid }, `<message xmlns='jabber:client' to='bob@localhost'><body>${'x'.repeat(3 * MAX_STANZA)}</body></message>`), { ca: serverCa(server) });
  t.is(huge.status, 413);
  t.is(huge.body?.attrs.condition, 'policy-violation');
  await c.send(ping('still'));
  t.is((await c.find((el) => el.attrs.id === 'still')).attrs.type, 'result');

  const big = await c.send(`<message xmlns='jabber:client' to='bob@localhost'><body>${'y'.repeat(MAX_STANZA + 100)}</body></message>`);
  const end = big.attrs.type === 'terminate' ? big : await c.send();
  t.is(end.attrs.type, 'terminate');
  // XEP-0206 §6: the stream error's content, under remote-stream-error.
  t.is(end.attrs.condition, 'remote-stream-error');
  t.truthy(end.getChild('policy-violation', NS_STREAMS_ERR), end.toString());
});

test('a secure session is not continued over a plain connection (§19.1): that connection is closed, the session kept', async (t) => {
  const { c } = await boshOnline(server, 'ivy', 'ivy-pw', 'sec');
  t.teardown(() => c.close());
  await t.throwsAsync(post(httpUrl(), c.wrap({ rid: c.rid }), { headers: { 'X-Forwarded-Proto': 'http' } }), { code: 'ECONNRESET' });
  await c.send(ping('kept'));
  t.is((await c.find((el) => el.attrs.id === 'kept')).attrs.type, 'result');
});

test('CORS (a browser preflight), and what is not a POST', async (t) => {
  const pre = await new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
    const req = http.request(httpUrl(), { method: 'OPTIONS' }, (res) => {
      res.resume();
      resolve({ status: res.statusCode!, headers: res.headers });
    });
    req.on('error', reject);
    req.end();
  });
  t.is(pre.status, 204);
  t.is(pre.headers['access-control-allow-origin'], '*');
  t.regex(String(pre.headers['access-control-allow-methods']), /POST/);
  t.regex(String(pre.headers['access-control-allow-headers']), /Content-Type/);
  const answer = await post(httpsUrl(), `<body xmlns='${NS_HTTPBIND}' rid='1000' to='localhost' ver='1.11' wait='5' content='text/plain; charset=utf-8'/>`, { ca: serverCa(server) });
  t.is(answer.headers['access-control-allow-origin'], '*');
  // §7.1: the content type the client asked for.
  t.is(answer.headers['content-type'], 'text/plain; charset=utf-8');
});

test('inactivity (§10): a session with no request for XMPP_BOSH_INACTIVITY ends as a lost connection; its id is then unknown', async (t) => {
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_BOSH_INACTIVITY: '1' });
  t.teardown(() => own.stop());
  await own.addUser('quiet', 'quiet-pw');
  const tcp = await online(own.c2sPort, 'quiet', 'quiet-pw', 'tcp');
  t.teardown(() => tcp.c.destroy());
  tcp.c.send(`<presence/>`);
  const { c, jid } = await boshOnline(own, 'quiet', 'quiet-pw', 'bosh');
  t.teardown(() => c.close());
  const created = await post(c.url, `<body xmlns='${NS_HTTPBIND}' rid='1000' to='localhost' ver='1.11' wait='5'/>`, { ca: c.ca });
  t.is(created.body?.attrs.inactivity, '1');
  // Available, then silent: nothing held, no request sent.
  await c.send(`<presence xmlns='jabber:client'/>`);
  await within(tcp.c.find((el) => el.name === 'presence' && el.attrs.from === jid && el.attrs.type === undefined), 10_000, 'available');
  const gone = await within(tcp.c.find((el) => el.name === 'presence' && el.attrs.from === jid && el.attrs.type === 'unavailable'), 20_000, 'unavailable once inactive');
  t.is(gone.attrs.type, 'unavailable');
  const after = await c.raw(c.wrap({ rid: c.rid++ }));
  t.is(after.body?.attrs.condition, 'item-not-found');
});

test('inactivity (§10) also ends a session whose client sent a request ahead of one it never sends (§14.2): that request gets the termination', async (t) => {
  // The stream's own bound (binding) far away: only BOSH's inactivity can end it.
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_BOSH_INACTIVITY: '1', XMPP_BIND_TIMEOUT_MS: '600000' });
  t.teardown(() => own.stop());
  const c = new BoshClient(`https://localhost:${own.httpsPort}/http-bind`, { ca: serverCa(own) });
  t.teardown(() => c.close());
  await c.create();
  // rid + 1 within the window, rid itself never sent: nothing is read, nothing held.
  const ahead = await c.raw(c.wrap({ rid: c.rid + 1 }), 15_000);
  t.is(ahead.body?.attrs.type, 'terminate', ahead.text);
  const after = await c.raw(c.wrap({ rid: c.rid }));
  t.is(after.body?.attrs.condition, 'item-not-found', 'the session is gone');
});

test('stream management (XEP-0198) over BOSH: enabled with resumption, and the session resumed on TCP with what it had not acknowledged', async (t) => {
  const { c, jid } = await boshOnline(server, 'sam', 'sam-pw', 'sm');
  t.teardown(() => c.close());
  await c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await c.find((el) => el.name === 'enabled');
  t.is(enabled.attrs.resume, 'true');
  const tom = await online(server.c2sPort, 'tom', 'tom-pw', 'tcp');
  t.teardown(() => tom.c.destroy());
  tom.c.send(`<message to='${jid}' type='chat'><body>kept</body></message>`);
  await c.find((el) => el.name === 'message' && el.getChildText('body') === 'kept');
  // Never acknowledged: a TCP connection takes the session over.
  const { c: tcp } = await authenticated(server.c2sPort, 'sam', 'sam-pw');
  t.teardown(() => tcp.destroy());
  tcp.send(`<resume xmlns='${NS_SM}' previd='${enabled.attrs.id}' h='0'/>`);
  const resumed = await within(tcp.find((el) => el.name === 'resumed' || el.name === 'failed'), 10_000, 'the answer to <resume/>');
  t.is(resumed.name, 'resumed', resumed.toString());
  const again = await within(tcp.find((el) => el.name === 'message'), 10_000, 'the message again');
  t.is(again.getChildText('body'), 'kept');
  t.is(again.attrs.to, jid);
});

test('a BOSH client that vanished (its session ended by inactivity, §10) resumes the XMPP session over a new BOSH session (XEP-0198): what it did not acknowledge, then what came while it was away, in order, once', async (t) => {
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_BOSH_INACTIVITY: '1' });
  t.teardown(() => own.stop());
  for (const u of ['gone', 'talker']) await own.addUser(u, `${u}-pw`);
  const talker = await online(own.c2sPort, 'talker', 'talker-pw', 'tcp');
  t.teardown(() => talker.c.destroy());
  const { c, jid } = await boshOnline(own, 'gone', 'gone-pw', 'web');
  t.teardown(() => c.close());
  await c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await c.find((el) => el.name === 'enabled');
  t.is(enabled.attrs.resume, 'true');
  const say = (body: string) => talker.c.send(`<message to='${jid}' type='chat'><body>${body}</body></message>`);
  say('k1');
  await c.find(isBody('k1'));
  say('k2');
  await c.find(isBody('k2'));
  // Then no request at all: the BOSH session ends after XMPP_BOSH_INACTIVITY, and the XMPP session waits, detached.
  c.close();
  await until(() => own.hub.guard!.admit('127.0.0.1', 'gone').resuming, 20_000, 'the session detached once its BOSH session was inactive');
  const old = await post(c.url, c.wrap({ rid: c.rid }), { ca: c.ca });
  t.is(old.body?.attrs.condition, 'item-not-found', 'the old BOSH session is over');
  say('k3');

  // A new BOSH session: logged in, and <resume/> in place of a bind, having handled k1 only.
  const again = new BoshClient(`https://localhost:${own.httpsPort}/http-bind`, { ca: serverCa(own) });
  t.teardown(() => again.close());
  await again.create();
  await boshScram(again, 'gone', 'gone-pw');
  await again.send(`<resume xmlns='${NS_SM}' previd='${enabled.attrs.id}' h='1'/>`);
  const answer = await again.find((el) => el.name === 'resumed' || el.name === 'failed');
  t.is(answer.name, 'resumed', answer.toString());
  t.is(answer.attrs.previd, enabled.attrs.id);
  const bodies: string[] = [];
  const next = async () => {
    const m = await again.find((el) => el.name === 'message');
    t.is(m.attrs.to, jid, 'to the same full JID');
    bodies.push(m.getChildText('body') ?? '');
  };
  while (bodies.length < 2) await next();
  t.deepEqual(bodies, ['k2', 'k3']);
  // Live again, and nothing came twice.
  say('k4');
  await next();
  t.deepEqual(bodies, ['k2', 'k3', 'k4']);
});

/**
 * Strophe.js (what Converse.js speaks BOSH with) in Node: its Node entry
 * installs a DOM (@xmldom/xmldom); XMLHttpRequest is xhr2's, given a
 * responseXML (xhr2 has none, and Strophe 5 drops a response it had to
 * parse itself) and an agent that trusts the server's certificate.
 */
async function strophe(ca: Buffer): Promise<typeof import('strophe.js')> {
  const { default: Xhr } = (await import('xhr2' as string)) as { default: { new (): { responseText: string }; nodejsSet(o: { httpsAgent: https.Agent }): void } };
  const { DOMParser } = await import('@xmldom/xmldom');
  class WithXml extends Xhr {
    get responseXML(): unknown {
      return this.responseText ? new DOMParser().parseFromString(this.responseText, 'text/xml') : null;
    }
  }
  Xhr.nodejsSet({ httpsAgent: new https.Agent({ ca, keepAlive: true }) });
  (globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest = WithXml;
  return import('strophe.js');
}

test('Strophe.js over https:// BOSH: logs in (SCRAM), binds, exchanges messages with a TCP user, and disconnects', async (t) => {
  const { Strophe, $msg } = await strophe(serverCa(server));
  const conn = new Strophe.Connection(httpsUrl());
  const seen: number[] = [];
  const statusIs = (wanted: number[]) =>
    new Promise<number>((resolve) => {
      const check = () => {
        const s = seen.find((x) => wanted.includes(x));
        if (s !== undefined) resolve(s);
        else setImmediate(check);
      };
      check();
    });
  conn.connect('ivy@localhost/strophe', 'ivy-pw', (status: number) => void seen.push(status));
  const s = await within(statusIs([Strophe.Status.CONNECTED, Strophe.Status.CONNFAIL, Strophe.Status.AUTHFAIL]), 30_000, 'Strophe connecting');
  t.is(s, Strophe.Status.CONNECTED, `statuses: ${seen.join(',')}`);
  t.is(conn.jid, 'ivy@localhost/strophe');
  t.is(conn.authenticated, true);

  const bob = await online(server.c2sPort, 'bob', 'bob-pw', uid('st'));
  t.teardown(() => bob.c.destroy());
  conn.send($msg({ to: bob.jid, type: 'chat' }).c('body').t('from Strophe'));
  const got = await within(bob.c.find((el) => el.name === 'message' && el.getChildText('body') === 'from Strophe'), 10_000, 'bob receiving');
  t.is(got.attrs.from, 'ivy@localhost/strophe');
  const received = new Promise<string>((resolve) =>
    conn.addHandler(
      (m: { getElementsByTagName(name: string): ArrayLike<{ textContent: string | null }> }) => {
        resolve(m.getElementsByTagName('body')[0]?.textContent ?? '');
        return false;
      },
      null,
      'message',
    ),
  );
  bob.c.send(`<message to='ivy@localhost/strophe' type='chat'><body>to Strophe</body></message>`);
  t.is(await within(received, 10_000, 'Strophe receiving'), 'to Strophe');
  conn.disconnect('done');
  await within(statusIs([Strophe.Status.DISCONNECTED]), 15_000, 'Strophe disconnecting');
  // Its termination ended the session (§13): its full JID is gone.
  bob.c.send(`<iq type='get' id='gone' to='ivy@localhost/strophe'><ping xmlns='urn:xmpp:ping'/></iq>`);
  t.is((await within(bob.c.find((el) => el.attrs.id === 'gone'), 10_000, 'the answer')).attrs.type, 'error');
});

/**
 * A one-worker server with this bound, and three BOSH sessions made over one
 * kept-alive connection (a session costs no connection of its own, and the
 * acceptor's cap, which counts connections, lets that one in): `create`
 * makes one more.
 */
async function threeSessions(t: ExecutionContext, bound: Record<string, string>) {
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_WORKERS: '1', ...bound });
  t.teardown(() => own.stop());
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: serverCa(own) });
  t.teardown(() => agent.destroy());
  const url = `https://localhost:${own.httpsPort}/http-bind`;
  const create = (rid: number) => post(url, `<body xmlns='${NS_HTTPBIND}' rid='${rid}' to='localhost' ver='1.11' wait='1' hold='1'/>`, { agent });
  const sids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const a = await create(100 + i);
    t.truthy(a.body?.attrs.sid, a.text);
    sids.push(a.body!.attrs.sid);
  }
  return { url, agent, create, sids };
}

test('sessions from one address are bounded (XMPP_MAX_CONNECTIONS_PER_IP, per worker): one more is refused with policy-violation, the others live on', async (t) => {
  const { url, agent, create, sids } = await threeSessions(t, { XMPP_MAX_CONNECTIONS_PER_IP: '3' });
  const refused = await create(200);
  t.is(refused.body?.attrs.type, 'terminate');
  t.is(refused.body?.attrs.condition, 'policy-violation');
  // The first still answers (empty, once its 'wait' is over).
  const alive = await post(url, `<body xmlns='${NS_HTTPBIND}' sid='${sids[0]}' rid='101'/>`, { agent });
  t.is(alive.status, 200);
  t.is(alive.body?.attrs.type as string | undefined, undefined, alive.text);
});

test("BOSH sessions count against the node's connection cap (XMPP_MAX_CONNECTIONS, a share per worker): one more is refused with remote-connection-failed, and one ending makes room", async (t) => {
  const { url, agent, create, sids } = await threeSessions(t, { XMPP_MAX_CONNECTIONS: '3' });
  const refused = await create(200);
  t.is(refused.body?.attrs.type, 'terminate', refused.text);
  t.is(refused.body?.attrs.condition, 'remote-connection-failed');
  const ended = await post(url, `<body xmlns='${NS_HTTPBIND}' sid='${sids[0]}' rid='101' type='terminate'/>`, { agent });
  t.is(ended.body?.attrs.type, 'terminate', ended.text);
  const again = await create(300);
  t.truthy(again.body?.attrs.sid, again.text);
});

test('the log never shows a session id whole (it is the session\'s credential, §19.3): its creation, its termination and its end name it by a hash', async (t) => {
  const { env } = await environment(t);
  const proc = spawnServer(t, process.execPath, ['src/main.ts', 'start'], { ...env, XMPP_HTTP_PORT: '0', XMPP_WORKERS: '1', XMPP_LOG_LEVEL: 'debug' });
  const listening = await within(proc.waitForLog('listening'), START_MS, 'the "listening" log line');
  const url = `http://127.0.0.1:${listening.httpPort as number}/http-bind`;
  const created = await post(url, `<body xmlns='${NS_HTTPBIND}' rid='10' to='localhost' ver='1.11' wait='1' hold='1'/>`);
  const sid = created.body!.attrs.sid;
  t.truthy(sid, created.text);
  // No valid rid: the session ends with bad-request, and says so at info.
  const ended = await post(url, `<body xmlns='${NS_HTTPBIND}' sid='${sid}' rid='x'/>`);
  t.is(ended.body?.attrs.condition, 'bad-request');
  const [c] = await within(proc.waitForLogs('BOSH session created', 1), 10_000, 'the creation logged');
  const [e] = await within(proc.waitForLogs('BOSH session terminated', 1), 10_000, 'the termination logged');
  t.is(c.sid, e.sid, 'one session, one name in the log');
  t.regex(String(c.sid), /^[A-Za-z0-9_-]{8}\.0\./);
  const secret = sid.split('.')[0];
  t.false(proc.transcript().includes(secret), 'the random part of the sid is nowhere in the log');
  proc.child.kill('SIGTERM');
  await within(proc.closed, START_MS, 'the server to exit');
});

test("a response the client says it lacks (§9.2) is reported at once: 'report' names its rid and 'time' its age", async (t) => {
  const c = client();
  t.teardown(() => c.close());
  await c.create({ ack: 1, wait: 3 });
  const n = c.rid;
  // Two empty requests, each answered once its 'wait' is over; the client
  // says it has nothing after n - 1 (the answer to n lost): just sent, that
  // answer is not reported yet.
  await c.send('', { ack: n - 1 });
  const early = await c.send('', { ack: n - 1 });
  t.is(early.attrs.report as string | undefined, undefined);
  // 3 s later it is.
  const reported = await c.send('', { ack: n - 1 });
  t.is(reported.attrs.report, String(n));
  t.true(Number(reported.attrs.time) >= 2000, reported.toString());
  // Sent again, n gets its answer again (§14.3).
  const again = await c.raw(c.wrap({ rid: n }));
  t.is(again.status, 200);
  t.is(again.body?.attrs.type as string | undefined, undefined, again.text);
});

test('a BOSH session is counted in the metrics as a connection of its own transport', async (t) => {
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_HTTP_PORT: '0', XMPP_METRICS: '127.0.0.1' });
  t.teardown(() => own.stop());
  await own.addUser('meg', 'meg-pw');
  const { c } = await boshOnline(own, 'meg', 'meg-pw', 'm');
  t.teardown(() => c.close());
  const text = (await reply(http.request(`http://127.0.0.1:${own.httpPort}/metrics`), 'the metrics')).body;
  const line = text.split('\n').find((l) => l.startsWith('xmpp_connections{') && l.includes('transport="bosh"') && l.includes('state="established"'));
  t.truthy(line, text.split('\n').filter((l) => l.startsWith('xmpp_connections{')).join('\n'));
  t.is(Number(line!.split(' ').pop()), 1);
});

test('shutdown: a held request is answered with the end of the stream (system-shutdown) before the connections close', async (t) => {
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0' });
  let stopped = false;
  t.teardown(() => (stopped ? undefined : own.stop()));
  await own.addUser('pat', 'pat-pw');
  const { c } = await boshOnline(own, 'pat', 'pat-pw', 'down', { attrs: { hold: 2 }, agents: 3 });
  t.teardown(() => c.close());
  // Two held at once (hold 2): the ping's result is the answer to the first, in rid order; the second (the ping) stays held.
  const first = c.send();
  const second = c.send(ping('before'));
  t.truthy(payloads(await first).find((el) => el.attrs.id === 'before'));
  await own.stop();
  stopped = true;
  const end = await second;
  t.is(end.attrs.type, 'terminate', end.toString());
  t.is(end.attrs.condition, 'remote-stream-error');
  t.truthy(end.getChild('system-shutdown', NS_STREAMS_ERR), end.toString());
});
