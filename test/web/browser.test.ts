// A real browser client against a real server: Converse.js (npm, its dist/
// files served by the test on loopback) in Debian's headless Chromium,
// driven by playwright-core, talking to @xmpp/client users on TCP.
//
// Chromium trusts the server's own certificate and no other: it is started
// with --ignore-certificate-errors-spki-list holding the hash of that
// certificate's public key (a certificate with another key would still be
// refused), rather than ignoring every certificate error. Nothing leaves
// loopback: Chromium resolves no host name but localhost
// (--host-resolver-rules), and every request a page makes elsewhere is
// recorded (the test fails if Converse made one). Requests are watched, not
// intercepted: Playwright answers the CORS preflight of a request it
// intercepts itself, allowing everything, and the server's own answer
// (what the upload test checks) would never be asked for.
//
// openConverse() starts one Converse page with the connection options a test
// gives (websocket_url, or bosh_service_url for the BOSH login), each in a
// browser context of its own (its own storage), with accounts of its own.
// The upload test sends a file through Converse's own file input, from the
// page's origin to the server's HTTPS one (CORS).
import test from 'ava';
import type { ExecutionContext } from 'ava';
import http from 'node:http';
import { createHash, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { Inbox, xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { within, uid } from '../helpers/protocol.ts';

const CHROMIUM = '/usr/bin/chromium';
const WAIT = 15_000;
const NS_MUC = 'http://jabber.org/protocol/muc';
const NS_MUC_USER = `${NS_MUC}#user`;
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_BOOKMARKS = 'urn:xmpp:bookmarks:1';
/** Converse's dist/ directory in node_modules: the bundle, its chunks, emoji, sounds. */
const DIST = dirname(fileURLToPath(import.meta.resolve('converse.js/dist/converse.min.js')));

/** The page: Converse's stylesheet and bundle, nothing else; openConverse calls converse.initialize. */
const PAGE = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Converse</title>
<link rel="stylesheet" href="/dist/converse.min.css"><script type="module" src="/dist/converse.min.js"></script></head><body></body></html>`;
const TYPES: Record<string, string> = { '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png', '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.mp3': 'audio/mpeg', '.ogg': 'audio/ogg' };

let server: TestServer;
let pages: http.Server;
let browser: Browser;
let pageUrl: string;
const clients: XmppClient[] = [];

/** The page and Converse's dist/ over plain HTTP on loopback (a secure context for the browser all the same). */
async function servePages(): Promise<http.Server> {
  const s = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
      return;
    }
    const file = normalize(join(DIST, decodeURIComponent(path.slice('/dist'.length))));
    if (!path.startsWith('/dist/') || !file.startsWith(DIST + sep)) {
      res.writeHead(404).end();
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body),
      () => res.writeHead(404).end(),
    );
  });
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's --ignore-certificate-errors-spki-list takes it. */
function spkiHash(pemFile: string): string {
  const spki = new X509Certificate(readFileSync(pemFile)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

test.before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (see .ci/run)`);
  server = await startTestServer({ XMPP_HTTPS_PORT: '0' });
  pages = await servePages();
  pageUrl = `http://127.0.0.1:${(pages.address() as AddressInfo).port}/`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      `--ignore-certificate-errors-spki-list=${spkiHash(join(server.config.dataDir, 'tls', `${server.config.domain}.crt`))}`,
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
});
test.after.always(async () => {
  await browser?.close();
  await Promise.allSettled(clients.map((c) => c.stop()));
  pages?.closeAllConnections();
  pages?.close();
  await server?.stop();
});

const wssUrl = () => `wss://localhost:${server.httpsPort}/xmpp-websocket`;

interface ConversePage {
  page: Page;
  context: BrowserContext;
  /** The page's console (Converse's log, with the XML it sends and receives) and its failed loads. */
  log: string[];
  /** Requests the page made beyond loopback (which found no address). */
  outside: string[];
  /** Every request the page made (WebSocket handshakes included), by URL. */
  requests: string[];
}

/**
 * A Converse page in a browser context of its own, initialized with the
 * test's connection options (`websocket_url` or `bosh_service_url`, `jid`,
 * `password`) over these defaults: log in at once, no discovery (the
 * test names the endpoint), no OMEMO (its key generation is CPU the
 * test does not need), the overlayed view (every open chat a box on the
 * page; the fullscreen view shows one at a time, and its footer loads
 * sponsors' logos from conversejs.org). Its log goes to the test's log if
 * the test fails.
 */
async function openConverse(t: ExecutionContext, options: Record<string, unknown>): Promise<ConversePage> {
  const context = await browser.newContext();
  const log: string[] = [];
  const outside: string[] = [];
  const requests: string[] = [];
  t.teardown(async () => {
    if (!t.passed) t.log(`Converse's console:\n${log.join('\n')}`);
    await context.close();
  });
  context.on('request', (r) => {
    requests.push(r.url());
    const url = new URL(r.url());
    if (/^(https?|wss?):$/.test(url.protocol) && url.hostname !== '127.0.0.1' && url.hostname !== 'localhost') outside.push(r.url());
  });
  const page = await context.newPage();
  // WebSocket handshakes are not among the context's requests.
  page.on('websocket', (ws) => requests.push(ws.url()));
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => log.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(pageUrl);
  await page.evaluate((opts) => (globalThis as unknown as { converse: { initialize(o: unknown): Promise<void> } }).converse.initialize(opts), {
    assets_path: '/dist/',
    auto_login: true,
    discover_connection_methods: false,
    blacklisted_plugins: ['converse-omemo', 'converse-omemo-views'],
    view_mode: 'overlayed',
    show_controlbox_by_default: true,
    play_sounds: false,
    show_desktop_notifications: false,
    loglevel: 'debug',
    ...options,
  });
  return { page, context, log, outside, requests };
}

/** Waits until Converse shows its user online: logged in, bound, initial presence sent. */
async function loggedIn(c: ConversePage, jid: string): Promise<void> {
  await c.page.locator('converse-user-profile .username', { hasText: jid }).waitFor({ timeout: WAIT });
  await c.page.locator('converse-user-profile .xmpp-status [data-value="online"]').waitFor({ timeout: WAIT });
}

/** Types `text` into the chat's message box (`box`: converse-chat or converse-muc) and sends it with Enter, as a user would. */
async function say(box: Locator, text: string): Promise<void> {
  const area = box.locator('textarea.chat-textarea');
  await area.fill(text, { timeout: WAIT });
  await area.press('Enter', { timeout: WAIT });
}

/** A fresh account (password `<name>-pw`) for one test. */
async function account(base: string): Promise<string> {
  const name = uid(base).replace(/-/g, '');
  await server.addUser(name, `${name}-pw`);
  return name;
}

/** An @xmpp/client user on TCP (STARTTLS), online with initial presence. */
async function tcpUser(name: string, resource = 'tcp'): Promise<{ c: XmppClient; inbox: Inbox; jid: string }> {
  const c = xmppClient(server, { username: name, password: `${name}-pw`, resource });
  c.reconnect.stop();
  clients.push(c);
  const inbox = new Inbox(c);
  const jid = String(await within(c.start(), WAIT, `${name} logging in over TCP`));
  await c.send(xml('presence'));
  return { c, inbox, jid };
}

const boshUrl = () => `https://localhost:${server.httpsPort}/http-bind`;

const transports: [string, () => Record<string, unknown>][] = [
  ['WebSocket', () => ({ websocket_url: wssUrl() })],
  // XEP-0206 from a page of another origin: every request a CORS one.
  ['BOSH', () => ({ bosh_service_url: boshUrl() })],
];

for (const [name, connection] of transports) test(`Converse.js over ${name}: logs in and exchanges chat messages both ways with an @xmpp/client user on TCP`, async (t) => {
  const alice = await account('alice');
  const bob = await tcpUser(await account('bob'));
  const aliceJid = `${alice}@localhost`;
  const c = await openConverse(t, { ...connection(), jid: aliceJid, password: `${alice}-pw` });
  await loggedIn(c, aliceJid);

  // TCP → browser: Converse opens a chat with Bob (not in her roster) and shows it.
  await bob.c.send(xml('message', { to: aliceJid, type: 'chat', id: uid('m') }, xml('body', {}, 'Hello from TCP')));
  const chat = c.page.locator(`converse-chat[jid="${bob.jid.split('/')[0]}"]`);
  await chat.locator('.chat-msg__text', { hasText: 'Hello from TCP' }).waitFor({ timeout: WAIT });

  // Browser → TCP: typed into that chat, sent with Enter.
  const from = bob.inbox.length;
  await say(chat, 'Hello from the browser');
  const got = await within(bob.inbox.find((el) => el.name === 'message' && el.getChildText('body') === 'Hello from the browser', from), WAIT, 'Bob receiving');
  t.is(got.attrs.type, 'chat');
  t.regex(got.attrs.from, new RegExp(`^${aliceJid}/.+`), 'from her browser session');
  // Her own message is shown in the chat, once.
  await chat.locator('.chat-msg__text', { hasText: 'Hello from the browser' }).waitFor({ timeout: WAIT });
  t.is(await chat.locator('.chat-msg__text', { hasText: 'Hello from TCP' }).count(), 1);
  t.deepEqual(c.outside, [], 'nothing asked of the network beyond loopback');
  // The transport named, and only it.
  const used = (path: string) => c.requests.some((u) => new URL(u).pathname === path);
  t.deepEqual([used('/xmpp-websocket'), used('/http-bind')], name === 'BOSH' ? [false, true] : [true, false]);
});

const codes = (el: Element): string[] => (el.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []).map((s) => s.attrs.code);

test('Converse.js joins the room of an XEP-0402 bookmark with autojoin at login, and talks in it with an @xmpp/client occupant', async (t) => {
  const carol = await account('carol');
  const carolJid = `${carol}@localhost`;
  const room = `${uid('tearoom').replace(/-/g, '')}@${server.config.mucDomain}`;

  // Dave, on TCP, makes the room (an instant one, XEP-0045 §10.1.2) and stays in it.
  const dave = await tcpUser(await account('dave'));
  let fd = dave.inbox.length;
  await dave.c.send(xml('presence', { to: `${room}/Dave` }, xml('x', { xmlns: NS_MUC })));
  const created = await within(dave.inbox.find((el) => el.name === 'presence' && el.attrs.from === `${room}/Dave` && codes(el).includes('110'), fd), WAIT, 'the room created');
  t.true(codes(created).includes('201'), created.toString());
  await dave.c.iqCaller.set(xml('query', { xmlns: `${NS_MUC}#owner` }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' })), room);

  // Before Converse runs, Carol's bookmark to it (XEP-0402 §3.1: one item, its id the room's JID, published to her own PEP), from @xmpp/client.
  const setup = await tcpUser(carol, 'setup');
  await setup.c.iqCaller.set(
    xml(
      'pubsub',
      { xmlns: NS_PUBSUB },
      xml('publish', { node: NS_BOOKMARKS }, xml('item', { id: room }, xml('conference', { xmlns: NS_BOOKMARKS, name: 'Tea room', autojoin: 'true' }, xml('nick', {}, 'Carol')))),
      xml(
        'publish-options',
        {},
        xml(
          'x',
          { xmlns: 'jabber:x:data', type: 'submit' },
          xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${NS_PUBSUB}#publish-options`)),
          xml('field', { var: 'pubsub#persist_items' }, xml('value', {}, 'true')),
          xml('field', { var: 'pubsub#max_items' }, xml('value', {}, 'max')),
          xml('field', { var: 'pubsub#send_last_published_item' }, xml('value', {}, 'never')),
          xml('field', { var: 'pubsub#access_model' }, xml('value', {}, 'whitelist')),
        ),
      ),
    ),
  );
  await setup.c.stop();

  // Converse logs in and, by itself, enters the room as the bookmark's nick: Dave sees Carol come in, from her browser session.
  fd = dave.inbox.length;
  const c = await openConverse(t, { websocket_url: wssUrl(), jid: carolJid, password: `${carol}-pw` });
  const entered = await within(dave.inbox.find((el) => el.name === 'presence' && el.attrs.from === `${room}/Carol` && el.attrs.type === undefined, fd), WAIT, 'Carol entering the room');
  t.regex(entered.getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.jid ?? '', new RegExp(`^${carolJid}/.+`), 'the owner sees her real JID: her Converse session');
  const muc = c.page.locator(`converse-muc[jid="${room}"]`);

  // Groupchat both ways: Dave's message shown in Converse's room, Carol's typed there reaching Dave.
  await dave.c.send(xml('message', { to: room, type: 'groupchat', id: uid('g') }, xml('body', {}, 'Welcome, Carol')));
  await muc.locator('.chat-msg__text', { hasText: 'Welcome, Carol' }).waitFor({ timeout: WAIT });
  fd = dave.inbox.length;
  await say(muc, 'Thank you, Dave');
  const heard = await within(dave.inbox.find((el) => el.name === 'message' && el.attrs.type === 'groupchat' && el.getChildText('body') === 'Thank you, Dave', fd), WAIT, 'Dave hearing Carol');
  t.is(heard.attrs.from, `${room}/Carol`);
  t.deepEqual(c.outside, [], 'nothing asked of the network beyond loopback');
});

const NS_OOB = 'jabber:x:oob';
/** A 1×1 PNG: a file Converse shows as a picture. */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==', 'base64');

test('Converse.js sends a file through HTTP upload (XEP-0363): picked in its file input, put from the page\'s origin (CORS), and the @xmpp/client user gets its URL and the same bytes over HTTPS', async (t) => {
  const erin = await account('erin');
  const erinJid = `${erin}@localhost`;
  const frank = await tcpUser(await account('frank'));
  const c = await openConverse(t, { websocket_url: wssUrl(), jid: erinJid, password: `${erin}-pw` });
  await loggedIn(c, erinJid);
  // Frank writes first: Converse opens their chat.
  await frank.c.send(xml('message', { to: erinJid, type: 'chat', id: uid('m') }, xml('body', {}, 'Send me the picture?')));
  const chat = c.page.locator(`converse-chat[jid="${frank.jid.split('/')[0]}"]`);
  await chat.locator('.chat-msg__text', { hasText: 'Send me the picture?' }).waitFor({ timeout: WAIT });

  // Its toolbar has a file input once Converse found the upload service (disco#items, then disco#info of upload.localhost).
  const input = chat.locator('converse-chat-toolbar input.fileupload');
  await input.waitFor({ state: 'attached', timeout: WAIT });
  const from = frank.inbox.length;
  const put = c.page.waitForResponse((r) => r.request().method() === 'PUT' && new URL(r.url()).pathname.startsWith('/upload/'), { timeout: WAIT });
  await input.setInputFiles({ name: 'picture.png', mimeType: 'image/png', buffer: PNG });
  // The page (http://127.0.0.1:<port>) puts to https://localhost:<https port>: cross-origin, preflighted, and allowed.
  const response = await put;
  t.is(response.status(), 201, await response.text());
  t.is(await response.headerValue('access-control-allow-origin'), '*');

  // Converse sends the GET URL as the body, and (XEP-0066) in an OOB element.
  const msg = await within(frank.inbox.find((el) => el.name === 'message' && (el.getChildText('body') ?? '').includes('/upload/'), from), WAIT, 'Frank receiving the URL');
  const url = msg.getChildText('body')!;
  t.regex(url, new RegExp(`^https://localhost:${server.httpsPort}/upload/[A-Za-z0-9_-]{43}/picture\\.png$`));
  t.is(response.url(), url, 'the URL it put to is the one it sent');
  t.is(msg.getChild('x', NS_OOB)?.getChildText('url'), url, msg.toString());
  t.regex(msg.attrs.from, new RegExp(`^${erinJid}/.+`), 'from her browser session');

  // Frank gets the same bytes, of the type Converse asked for.
  const got = await fetch(url);
  t.is(got.status, 200);
  t.is(got.headers.get('content-type'), 'image/png');
  t.deepEqual(Buffer.from(await got.arrayBuffer()), PNG);
  // Her chat shows the picture she sent.
  await chat.locator(`img[src="${url}"]`).waitFor({ state: 'attached', timeout: WAIT });
  t.deepEqual(c.outside, [], 'nothing asked of the network beyond loopback');
});
