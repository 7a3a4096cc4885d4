// XEP-0363 HTTP File Upload against a real server: slot requests over XMPP
// (raw protocol, then @xmpp/client), PUT and GET over HTTPS with the
// server's certificate verified (fetch, with the test server's certificate
// trusted), and what each refuses.
import test from 'ava';
import https from 'node:https';
import tls from 'node:tls';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DatabaseSync } from 'node:sqlite';
import type { Element } from 'ltx';
import { xml } from '@xmpp/client';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { authenticatedAnonymously, bind, online, stanzaError, uid, within, NS_DISCO_INFO, NS_DISCO_ITEMS } from '../helpers/protocol.ts';
import type { RawClient } from '../helpers/raw.ts';
import { trustServer, xmppClient, Inbox } from '../helpers/xmpp-client.ts';
import { serverCa } from '../helpers/ws.ts';
import { reply, type Reply } from '../helpers/http.ts';

const NS_UPLOAD = 'urn:xmpp:http:upload:0';
const MAX = 100_000;
const QUOTA = 250_000;
const UPLOAD = 'upload.localhost';
/** XMPP_HTTP_REQUEST_TIMEOUT_MS here: short, so that a request trickled past it is seen cut without a long wait. */
const REQUEST_MS = 1500;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

let server: TestServer;
test.before(async () => {
  server = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_UPLOAD_MAX_BYTES: String(MAX), XMPP_UPLOAD_QUOTA_BYTES: String(QUOTA), XMPP_UPLOAD_TYPES: 'image/*,text/*,video/mp4,application/octet-stream', XMPP_HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_MS) });
  for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hugo']) await server.addUser(u, `${u}-pw`);
  // fetch (undici) verifies the server's certificate against the default CAs, the test server's among them.
  trustServer(server);
});
test.after.always(() => server?.stop());

/** Asks for a slot; returns the answer (result or error). */
async function requestSlot(c: RawClient, attrs: Record<string, string>, to = UPLOAD): Promise<Element> {
  const id = uid('slot');
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}="${v.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;')}"`).join('');
  return c.request(`<iq type='get' id='${id}' to='${to}'><request xmlns='${NS_UPLOAD}'${a}/></iq>`, id);
}

/** A slot's PUT and GET URLs, or the test fails. */
function urls(reply: Element): { put: string; get: string } {
  const slot = reply.getChild('slot', NS_UPLOAD);
  if (reply.attrs.type !== 'result' || !slot) throw new Error(`no slot: ${reply.toString()}`);
  return { put: slot.getChild('put')!.attrs.url, get: slot.getChild('get')!.attrs.url };
}

/** A PUT with exactly these headers and body (https.request, so that a wrong Content-Length can be sent): status and body. */
function rawPut(url: string, body: Buffer, headers: Record<string, string | number>): Promise<Reply> {
  // A refusal may come, and the connection close, before the body is all sent.
  return reply(https.request(url, { method: 'PUT', headers, ca: serverCa(server) }), `PUT ${url}`, { body, afterClose: true });
}

test('the server lists the upload service; it says it is one (XEP-0363 §3), with the largest file in a XEP-0128 form', async (t) => {
  const { c } = await online(server.c2sPort, 'alice', 'alice-pw', 'disco');
  t.teardown(() => c.destroy());
  const items = await c.request(`<iq type='get' id='i1' to='localhost'><query xmlns='${NS_DISCO_ITEMS}'/></iq>`, 'i1');
  t.true(items.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === UPLOAD), items.toString());
  const info = await c.request(`<iq type='get' id='i2' to='${UPLOAD}'><query xmlns='${NS_DISCO_INFO}'/></iq>`, 'i2');
  const q = info.getChild('query', NS_DISCO_INFO)!;
  t.deepEqual(q.getChild('identity')?.attrs, { category: 'store', type: 'file', name: 'HTTP File Upload' });
  t.true(q.getChildren('feature').some((f) => f.attrs.var === NS_UPLOAD));
  const form = q.getChild('x', 'jabber:x:data')!;
  t.is(form.attrs.type, 'result');
  const field = (v: string) => form.getChildren('field').find((f) => f.attrs.var === v);
  t.is(field('FORM_TYPE')?.attrs.type, 'hidden');
  t.is(field('FORM_TYPE')?.getChildText('value'), NS_UPLOAD);
  t.is(field('max-file-size')?.getChildText('value'), String(MAX));
});

test('slot requests the service refuses: too large (not-acceptable with file-too-large and the largest size, §5), no or a bad name or size, a type not accepted or not a type', async (t) => {
  const { c } = await online(server.c2sPort, 'bob', 'bob-pw', 'errors');
  t.teardown(() => c.destroy());
  const large = await requestSlot(c, { filename: 'big.jpg', size: String(MAX + 1), 'content-type': 'image/jpeg' });
  t.deepEqual(stanzaError(large), { type: 'modify', condition: 'not-acceptable', by: undefined });
  t.is(large.getChild('error')!.getChild('file-too-large', NS_UPLOAD)?.getChildText('max-file-size'), String(MAX));
  t.is(large.getChild('request', NS_UPLOAD)?.attrs.filename, 'big.jpg', 'the request is given back');
  const refused = async (attrs: Record<string, string>, condition: string) => t.is(stanzaError(await requestSlot(c, attrs)).condition, condition, JSON.stringify(attrs));
  await refused({ size: '10' }, 'bad-request');
  await refused({ filename: 'a.txt' }, 'bad-request');
  await refused({ filename: 'a.txt', size: '-1' }, 'bad-request');
  await refused({ filename: 'a.txt', size: 'ten' }, 'bad-request');
  await refused({ filename: '../../etc/passwd', size: '10' }, 'bad-request');
  await refused({ filename: '..', size: '10' }, 'bad-request');
  await refused({ filename: 'a\\b.txt', size: '10' }, 'bad-request');
  await refused({ filename: 'x'.repeat(256), size: '10' }, 'bad-request');
  await refused({ filename: 'a.exe', size: '10', 'content-type': 'application/x-msdownload' }, 'not-acceptable');
  await refused({ filename: 'a.txt', size: '10', 'content-type': 'not a type' }, 'bad-request');
  // A slot is asked for with a get; something else in the namespace is not a request.
  const id = uid('odd');
  t.is(stanzaError(await c.request(`<iq type='get' id='${id}' to='${UPLOAD}'><slot xmlns='${NS_UPLOAD}'/></iq>`, id)).condition, 'bad-request');
  const id2 = uid('set');
  t.is(stanzaError(await c.request(`<iq type='set' id='${id2}' to='${UPLOAD}'><request xmlns='${NS_UPLOAD}' filename='a.txt' size='1'/></iq>`, id2)).condition, 'feature-not-implemented');
  // Within the bounds: a slot, its URLs HTTPS ones on the server's listener.
  const ok = urls(await requestSlot(c, { filename: 'ok.txt', size: String(MAX), 'content-type': 'text/plain' }));
  t.regex(ok.put, new RegExp(`^https://localhost:${server.httpsPort}/upload/[A-Za-z0-9_-]{43}/ok\\.txt$`));
  t.is(ok.get, ok.put);
});

test('the per-account quota: slots not put yet count; one more is refused with resource-constraint and a retry stamp (§5); other accounts are not affected', async (t) => {
  const { c } = await online(server.c2sPort, 'carol', 'carol-pw', 'quota');
  t.teardown(() => c.destroy());
  const asked = Date.now();
  urls(await requestSlot(c, { filename: 'a.bin', size: String(MAX) }));
  urls(await requestSlot(c, { filename: 'b.bin', size: String(MAX) }));
  const over = await requestSlot(c, { filename: 'c.bin', size: String(QUOTA - 2 * MAX + 1) });
  t.deepEqual(stanzaError(over), { type: 'wait', condition: 'resource-constraint', by: undefined });
  const stamp = over.getChild('error')!.getChild('retry', NS_UPLOAD)?.attrs.stamp;
  t.regex(String(stamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'XEP-0082, in UTC');
  // The first slot stops counting when no PUT of it can still run: its window (5 min) and a PUT's time (10 min) after it was asked.
  t.true(Date.parse(stamp!) >= asked + 15 * 60_000 - 1000 && Date.parse(stamp!) <= Date.now() + 15 * 60_000 + 1000, stamp);
  urls(await requestSlot(c, { filename: 'c.bin', size: String(QUOTA - 2 * MAX) }));
  const { c: d } = await online(server.c2sPort, 'dave', 'dave-pw', 'quota');
  t.teardown(() => d.destroy());
  urls(await requestSlot(d, { filename: 'a.bin', size: String(MAX) }));
});

test('PUT then GET over HTTPS: 201, then the same bytes with the type asked for, shown inline, not sniffed, readable from any origin; a second PUT is refused', async (t) => {
  const { c } = await online(server.c2sPort, 'erin', 'erin-pw', 'put');
  t.teardown(() => c.destroy());
  const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));
  const name = 'photo of me é.png';
  const slot = urls(await requestSlot(c, { filename: name, size: String(bytes.length), 'content-type': 'image/png' }));
  // §4: the name kept, percent-encoded.
  t.true(slot.put.endsWith(`/${encodeURIComponent(name)}`), slot.put);
  t.is((await fetch(slot.get)).status, 404, 'nothing to get before the PUT');
  const put = await fetch(slot.put, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'image/png' } });
  t.is(put.status, 201);
  t.is(put.headers.get('access-control-allow-origin'), '*');
  const got = await fetch(slot.get);
  t.is(got.status, 200);
  t.deepEqual(Buffer.from(await got.arrayBuffer()), bytes);
  t.is(got.headers.get('content-type'), 'image/png');
  t.is(got.headers.get('content-length'), String(bytes.length));
  t.regex(String(got.headers.get('content-disposition')), /^inline; filename="photo of me _\.png"; filename\*=UTF-8''photo%20of%20me%20%C3%A9\.png$/);
  t.is(got.headers.get('x-content-type-options'), 'nosniff');
  t.is(got.headers.get('access-control-allow-origin'), '*');
  const head = await fetch(slot.get, { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.headers.get('content-length'), String(bytes.length));
  // A browser's preflight for its PUT.
  const pre = await fetch(slot.put, { method: 'OPTIONS', headers: { Origin: 'https://web.example', 'Access-Control-Request-Method': 'PUT', 'Access-Control-Request-Headers': 'content-type' } });
  t.is(pre.status, 204);
  t.regex(String(pre.headers.get('access-control-allow-methods')), /PUT/);
  t.regex(String(pre.headers.get('access-control-allow-headers')), /Content-Type/i);
  // Once only.
  t.is((await fetch(slot.put, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'image/png' } })).status, 409);
  t.deepEqual(Buffer.from(await (await fetch(slot.get)).arrayBuffer()), bytes, 'unchanged');
  // The URL without its name, with another name, or another token: nothing.
  const token = new URL(slot.get).pathname.split('/')[2];
  t.is((await fetch(`https://localhost:${server.httpsPort}/upload/${token}/other.png`)).status, 404);
  t.is((await fetch(`https://localhost:${server.httpsPort}/upload/${'A'.repeat(43)}/${encodeURIComponent(name)}`)).status, 404);
  t.is((await fetch(`https://localhost:${server.httpsPort}/upload/${token}`)).status, 404);
});

test('a PUT whose Content-Length is not the slot size is refused (§6: MUST), as is one of another type (§6: SHOULD); the slot stays usable', async (t) => {
  const { c } = await online(server.c2sPort, 'frank', 'frank-pw', 'length');
  t.teardown(() => c.destroy());
  const body = Buffer.from('0123456789');
  const slot = urls(await requestSlot(c, { filename: 'n.txt', size: '10', 'content-type': 'text/plain' }));
  t.is((await rawPut(slot.put, Buffer.from('0123456789X'), { 'Content-Type': 'text/plain', 'Content-Length': 11 })).status, 413);
  t.is((await rawPut(slot.put, Buffer.from('012345678'), { 'Content-Type': 'text/plain', 'Content-Length': 9 })).status, 400);
  t.is((await rawPut(slot.put, body, { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked' })).status, 411);
  t.is((await rawPut(slot.put, body, { 'Content-Type': 'image/png', 'Content-Length': 10 })).status, 415);
  t.is((await fetch(slot.get)).status, 404, 'nothing was stored');
  const ok = await rawPut(slot.put, body, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': 10, Expect: '100-continue' });
  t.is(ok.status, 201, ok.body);
  const got = await fetch(slot.get);
  t.is(await got.text(), '0123456789');
  t.is(got.headers.get('content-type'), 'text/plain', 'the type of the slot');
});

test('a slot whose window is over is refused (410) and nothing is stored', async (t) => {
  const { c } = await online(server.c2sPort, 'gina', 'gina-pw', 'expired');
  t.teardown(() => c.destroy());
  const slot = urls(await requestSlot(c, { filename: 'late.txt', size: '4', 'content-type': 'text/plain' }));
  const token = new URL(slot.put).pathname.split('/')[2];
  // The slot's window closed (as five minutes would): the store says so.
  const db = new DatabaseSync(join(server.config.dataDir, 'upload.sqlite'), { timeout: 10_000 });
  try {
    t.is(Number(db.prepare('UPDATE upload_slots SET put_until = 0 WHERE token = ?').run(token).changes), 1);
  } finally {
    db.close();
  }
  const put = await fetch(slot.put, { method: 'PUT', body: 'late', headers: { 'Content-Type': 'text/plain' } });
  t.is(put.status, 410);
  t.is((await fetch(slot.get)).status, 404);
});

test('what could run in the browser (HTML, SVG) is served as an attachment, under a sandboxing CSP; a slot named no type takes the PUT\'s', async (t) => {
  const { c } = await online(server.c2sPort, 'hugo', 'hugo-pw', 'active');
  t.teardown(() => c.destroy());
  for (const [name, type, body] of [['x.html', 'text/html', '<script>alert(1)</script>'], ['x.svg', 'image/svg+xml', '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>']]) {
    const slot = urls(await requestSlot(c, { filename: name, size: String(Buffer.byteLength(body)), 'content-type': type }));
    t.is((await fetch(slot.put, { method: 'PUT', body, headers: { 'Content-Type': type } })).status, 201);
    const got = await fetch(slot.get);
    t.is(got.headers.get('content-type'), type);
    t.regex(String(got.headers.get('content-disposition')), new RegExp(`^attachment; filename="${name.replace('.', '\\.')}"`));
    t.is(got.headers.get('x-content-type-options'), 'nosniff');
    t.regex(String(got.headers.get('content-security-policy')), /default-src 'none'.*sandbox/);
  }
  const untyped = urls(await requestSlot(c, { filename: 'movie.mp4', size: '3' }));
  t.is((await fetch(untyped.put, { method: 'PUT', body: 'abc', headers: { 'Content-Type': 'video/mp4' } })).status, 201);
  t.is((await fetch(untyped.get)).headers.get('content-type'), 'video/mp4');
  // Without a type on either side: application/octet-stream, an attachment.
  const bare = urls(await requestSlot(c, { filename: 'blob', size: '3' }));
  t.is((await rawPut(bare.put, Buffer.from('abc'), { 'Content-Length': 3 })).status, 201);
  const blob = await fetch(bare.get);
  t.is(blob.headers.get('content-type'), 'application/octet-stream');
  t.regex(String(blob.headers.get('content-disposition')), /^attachment/);
  // A type outside XMPP_UPLOAD_TYPES, named only in the PUT: refused there.
  const sneaky = urls(await requestSlot(c, { filename: 'a.exe', size: '3' }));
  t.is((await fetch(sneaky.put, { method: 'PUT', body: 'abc', headers: { 'Content-Type': 'application/x-msdownload' } })).status, 415);
});

test('@xmpp/client: one user asks for a slot and uploads, sends the URL; the other downloads the same bytes', async (t) => {
  const alice = xmppClient(server, { username: 'alice', password: 'alice-pw', resource: 'phone' });
  const bob = xmppClient(server, { username: 'bob', password: 'bob-pw', resource: 'laptop' });
  t.teardown(async () => {
    await alice.stop().catch(() => {});
    await bob.stop().catch(() => {});
  });
  const inbox = new Inbox(bob);
  await Promise.all([alice.start(), bob.start()]);
  await bob.send(xml('presence'));
  const bytes = Buffer.from('a picture, more or less\n'.repeat(100));
  const reply = await alice.iqCaller.request(xml('iq', { type: 'get', to: UPLOAD }, xml('request', { xmlns: NS_UPLOAD, filename: 'cat.jpg', size: String(bytes.length), 'content-type': 'image/jpeg' })));
  const slot = reply.getChild('slot', NS_UPLOAD)!;
  const put = await fetch(slot.getChild('put')!.attrs.url, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'image/jpeg' } });
  t.is(put.status, 201);
  const url = slot.getChild('get')!.attrs.url;
  await alice.send(xml('message', { to: 'bob@localhost/laptop', type: 'chat' }, xml('body', {}, url), xml('x', { xmlns: 'jabber:x:oob' }, xml('url', {}, url))));
  const msg = await within(inbox.find((el) => el.name === 'message' && el.getChildText('body') === url), 10_000, 'bob getting the URL');
  const got = await fetch(msg.getChild('x', 'jabber:x:oob')!.getChildText('url')!);
  t.is(got.status, 200);
  t.deepEqual(Buffer.from(await got.arrayBuffer()), bytes);
  t.is(got.headers.get('content-type'), 'image/jpeg');
});

/** Puts `body` through a fresh slot of the client's: the GET URL and where the file is on disk. */
async function putFile(c: RawClient, filename: string, body: string): Promise<{ url: string; file: string }> {
  const slot = urls(await requestSlot(c, { filename, size: String(Buffer.byteLength(body)), 'content-type': 'text/plain' }));
  const put = await fetch(slot.put, { method: 'PUT', body, headers: { 'Content-Type': 'text/plain' } });
  if (put.status !== 201) throw new Error(`PUT: ${put.status}`);
  return { url: slot.get, file: join(server.config.uploadDir, new URL(slot.get).pathname.split('/')[2]) };
}

/** The CLI against the running server's data directory (its admin socket tells the server). */
function cli(args: string[]): Promise<{ code: number | null; out: string }> {
  return within(
    new Promise((resolve) => {
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, XMPP_DATA_DIR: server.config.dataDir, XMPP_DOMAIN: 'localhost', XMPP_LOG_LEVEL: 'warn' };
      const child = spawn(process.execPath, ['src/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => resolve({ code, out }));
    }),
    30_000,
    `the CLI: ${args.join(' ')}`,
  );
}

for (const how of ['in band (XEP-0077 §3.2)', 'by `user remove` while the server runs'] as const)
test(`an account removed ${how} takes its uploads along: the URLs get 404 and the files are gone from disk; another's stay`, async (t) => {
  const name = uid('leaving').replace(/-/g, '');
  await server.addUser(name, `${name}-pw`);
  const { c } = await online(server.c2sPort, name, `${name}-pw`, 'files');
  t.teardown(() => c.destroy());
  const mine = [await putFile(c, 'one.txt', 'first file'), await putFile(c, 'two.txt', 'second file')];
  // A slot asked for and not put yet goes too.
  const open = urls(await requestSlot(c, { filename: 'later.txt', size: '5', 'content-type': 'text/plain' }));
  const stays = uid('staying').replace(/-/g, '');
  await server.addUser(stays, `${stays}-pw`);
  const { c: other } = await online(server.c2sPort, stays, `${stays}-pw`, 'stays');
  t.teardown(() => other.destroy());
  const theirs = await putFile(other, 'keep.txt', 'not removed');
  for (const f of mine) t.true(existsSync(f.file), f.file);

  if (how === 'in band (XEP-0077 §3.2)') {
    const id = uid('remove');
    const reply = await c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, id);
    t.is(reply.attrs.type, 'result', reply.toString());
  } else {
    const r = await cli(['user', 'remove', name]);
    t.is(r.code, 0, r.out);
  }
  for (const f of mine) {
    t.is((await fetch(f.url)).status, 404, f.url);
    t.false(existsSync(f.file), `${f.file} removed`);
  }
  t.is((await fetch(open.put, { method: 'PUT', body: 'later', headers: { 'Content-Type': 'text/plain' } })).status, 404, 'the open slot went too');
  t.false(existsSync(join(server.config.uploadDir, new URL(open.put).pathname.split('/')[2])));
  t.is(await (await fetch(theirs.url)).text(), 'not removed');
  t.true(existsSync(theirs.file));
});

test('with uploads on, only an upload PUT may take longer than XMPP_HTTP_REQUEST_TIMEOUT_MS to arrive: a BOSH body trickled past it gets 408 and its connection closed, while a PUT sent as slowly completes (201)', async (t) => {
  const { c } = await online(server.c2sPort, 'gina', 'gina-pw', 'slow');
  t.teardown(() => c.destroy());
  const bytes = Buffer.from('a file sent in two halves, the second well after the request bound');
  const slot = urls(await requestSlot(c, { filename: 'slow.txt', size: String(bytes.length), 'content-type': 'text/plain' }));
  const open = async () => {
    const s = tls.connect({ host: 'localhost', port: server.httpsPort, ca: serverCa(server), servername: 'localhost' });
    await once(s, 'secureConnect');
    t.teardown(() => s.destroy());
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('error', () => {});
    const closed = new Promise<string>((resolve) => s.once('close', () => resolve(text)));
    return { s, closed, text: () => text };
  };
  const u = new URL(slot.put);
  const upload = await open();
  upload.s.write(`PUT ${u.pathname} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: ${bytes.length}\r\n\r\n`);
  upload.s.write(bytes.subarray(0, 10));
  // Its headers in, the bound runs for both from about now.
  const bosh = await open();
  const body = `<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='localhost' wait='10' hold='1' ver='1.6'/>`;
  bosh.s.write(`POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`);
  const cut = await within(bosh.closed, 20_000, 'the trickled BOSH request cut');
  t.regex(cut, /^HTTP\/1\.1 408 /, 'answered 408');
  // The upload, begun before the BOSH request, is older than the bound by now: it goes on.
  t.false(upload.s.destroyed, 'the upload is still open');
  upload.s.write(bytes.subarray(10));
  await within(new Promise<void>((resolve) => upload.s.on('data', () => /\r\n\r\n/.test(upload.text()) && resolve())), 10_000, 'the PUT answered');
  t.regex(upload.text(), /^HTTP\/1\.1 201 /);
  t.deepEqual(Buffer.from(await (await fetch(slot.get)).arrayBuffer()), bytes);
});

test('the room kept free on disk counts the slots handed out and not yet put; anonymous sessions (XEP-0175), a new identity at each login, get no slots (not-allowed)', async (t) => {
  const own = await startTestServer({ XMPP_HTTPS_PORT: '0', XMPP_UPLOAD_MAX_BYTES: String(2 ** 50), XMPP_UPLOAD_QUOTA_BYTES: '0', XMPP_ANONYMOUS: 'true' });
  t.teardown(() => own.stop());
  await own.addUser('alice', 'alice-pw');
  const anon = await authenticatedAnonymously(own.c2sPort);
  t.teardown(() => anon.c.destroy());
  t.is((await bind(anon.c)).attrs.type, 'result');
  t.deepEqual(stanzaError(await requestSlot(anon.c, { filename: 'a.txt', size: '10' })), { type: 'cancel', condition: 'not-allowed', by: undefined });
  const { c } = await online(own.c2sPort, 'alice', 'alice-pw', 'big');
  t.teardown(() => c.destroy());
  // The server keeps 256 MiB free; the disk's other users may change what is free by less than that meanwhile.
  const MiB = 1024 * 1024;
  const s = await statfs(own.config.uploadDir);
  const free = s.bavail * s.bsize;
  t.is((await requestSlot(c, { filename: 'most.bin', size: String(free - 512 * MiB) })).attrs.type, 'result', 'a slot for all but 512 MiB');
  const more = await requestSlot(c, { filename: 'more.bin', size: String(512 * MiB) });
  t.deepEqual(stanzaError(more), { type: 'wait', condition: 'resource-constraint', by: undefined }, 'the first slot, not yet put, takes its room');
});
