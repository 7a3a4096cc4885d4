// XEP-0398 and XEP-0402 §5.3 with @xmpp/client on both sides: a client
// that knows only vcard-temp sets its photo, and a contact's client that
// knows only XEP-0084 gets the metadata notification and reads the image
// from PEP, then sees the hash in the first one's presence (XEP-0153); a
// client that knows only private XML bookmarks stores a room, and the same
// account's XEP-0402 client reads it as a PEP item, adds one, and the
// legacy client reads both.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { xmppClient, type XmppClient, type Untyped } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';

let server: TestServer;
const open: XmppClient[] = [];
const WAIT = 10_000;
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_EVENT = `${NS_PUBSUB}#event`;
const NS_METADATA = 'urn:xmpp:avatar:metadata';
const NS_DATA = 'urn:xmpp:avatar:data';
const CONTROL = 'urn:test:legacy-control';

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
  for (const u of ['vicky', 'paul', 'lena']) await server.addUser(u, `${u}-secret`);
});
test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server?.stop();
});

async function online(username: string, resource: string): Promise<XmppClient> {
  const c = xmppClient(server, { username, password: `${username}-secret`, resource });
  c.reconnect.stop();
  open.push(c);
  await within(c.start(), WAIT, `${username} logging in`);
  return c;
}

const waitFor = (c: XmppClient, what: string, pred: (el: Element) => boolean) =>
  within(
    new Promise<Element>((resolve) => {
      const on = (el: Element) => {
        if (!pred(el)) return;
        c.removeListener('stanza', on);
        resolve(el);
      };
      c.on('stanza', on);
    }),
    WAIT,
    what,
  );

type Caller = { set(el: Element, to?: string): Promise<Element>; get(el: Element, to?: string): Promise<Element> };
const caller = (c: XmppClient) => c.iqCaller as unknown as Caller;
const eventOf = (from: string, node: string) => (el: Element) => el.name === 'message' && el.attrs.from === from && el.getChild('event', NS_EVENT)?.getChild('items')?.attrs.node === node;

test('@xmpp/client: a vCard photo set by one client reaches a contact as an XEP-0084 avatar, and its hash as XEP-0153 presence', async (t) => {
  const vicky = await online('vicky', 'legacy');
  const paul = await online('paul', 'modern');
  // Paul's client asks for avatar metadata notifications (XEP-0115 caps, answered by its own handler).
  const features = ['http://jabber.org/protocol/disco#info', `${NS_METADATA}+notify`, `${CONTROL}+notify`];
  const ver = createHash('sha1').update(`client/pc//paul<${[...features].sort().map((f) => `${f}<`).join('')}`).digest('base64');
  (paul as Untyped & { iqCallee: { get(ns: string, name: string, h: (ctx: { stanza: Element }) => Element): void } }).iqCallee.get('http://jabber.org/protocol/disco#info', 'query', (ctx) =>
    xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: ctx.stanza.getChild('query')!.attrs.node }, xml('identity', { category: 'client', type: 'pc', name: 'paul' }), ...features.map((f) => xml('feature', { var: f }))),
  );
  await vicky.send(xml('presence'));
  const request = waitFor(vicky, 'the subscription request', (el) => el.name === 'presence' && el.attrs.type === 'subscribe');
  await paul.send(xml('presence', { to: 'vicky@localhost', type: 'subscribe' }));
  await request;
  const seen = waitFor(paul, "vicky's presence", (el) => el.name === 'presence' && el.attrs.from?.startsWith('vicky@localhost/') && el.attrs.type === undefined);
  await vicky.send(xml('presence', { to: 'paul@localhost', type: 'subscribed' }));
  await paul.send(xml('presence', {}, xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node: 'urn:paul', ver })));
  await seen;
  // Until Paul's caps are taken into account: Vicky's probes on a control node reach him.
  let known = false;
  for (let i = 0; i < 40 && !known; i++) {
    const probe = waitFor(paul, 'a control notification', eventOf('vicky@localhost', CONTROL)).then(() => true, () => false);
    await caller(vicky).set(xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node: CONTROL }, xml('item', { id: `p${i}` }, xml('probe', { xmlns: 'urn:test' })))));
    known = await Promise.race([probe, new Promise<boolean>((r) => setTimeout(() => r(false), 250))]);
  }
  t.true(known, "Paul's caps were taken into account");

  const image = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), randomBytes(400)]);
  const hash = createHash('sha1').update(image).digest('hex');
  const notified = waitFor(paul, 'the avatar metadata notification', eventOf('vicky@localhost', NS_METADATA));
  await within(caller(vicky).set(xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Vicky'), xml('PHOTO', {}, xml('TYPE', {}, 'image/jpeg'), xml('BINVAL', {}, image.toString('base64'))))), WAIT, 'vCard set');
  const event = await notified;
  const info = event.getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.getChild('metadata', NS_METADATA)!.getChild('info')!;
  t.is(info.attrs.id, hash);
  t.is(info.attrs.type, 'image/jpeg');
  t.is(info.attrs.bytes, String(image.length));
  // Paul reads the image by the id the metadata gave (XEP-0084 §4.2).
  const got = await within(caller(paul).get(xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: NS_DATA }, xml('item', { id: hash }))), 'vicky@localhost'), WAIT, 'the avatar data');
  t.is(Buffer.from(got.getChild('items')!.getChild('item')!.getChild('data', NS_DATA)!.getText(), 'base64').compare(image), 0);
  // XEP-0153 for those who read presence: the hash, stamped by the server.
  const presence = waitFor(paul, "vicky's presence with the hash", (el) => el.name === 'presence' && el.attrs.from === vicky.jid?.toString() && el.attrs.type === undefined);
  await vicky.send(xml('presence', {}, xml('status', {}, 'new avatar')));
  t.is((await presence).getChild('x', 'vcard-temp:x:update')?.getChildText('photo'), hash);
});

test('@xmpp/client: a room stored in private XML by one client is an XEP-0402 item for another client of the account, and back', async (t) => {
  const legacy = await online('lena', 'legacy');
  const modern = await online('lena', 'modern');
  await within(caller(legacy).set(xml('query', { xmlns: 'jabber:iq:private' }, xml('storage', { xmlns: 'storage:bookmarks' }, xml('conference', { jid: 'tea@rooms.example', name: 'Tea', autojoin: 'true' }, xml('nick', {}, 'lena'))))), WAIT, 'private set');
  const items = await within(caller(modern).get(xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: 'urn:xmpp:bookmarks:1' }))), WAIT, 'XEP-0402 items');
  const item = items.getChild('items')!.getChild('item')!;
  t.is(item.attrs.id, 'tea@rooms.example');
  t.is(item.getChild('conference', 'urn:xmpp:bookmarks:1')!.attrs.name, 'Tea');
  t.is(item.getChild('conference', 'urn:xmpp:bookmarks:1')!.getChildText('nick'), 'lena');
  await within(caller(modern).set(xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node: 'urn:xmpp:bookmarks:1' }, xml('item', { id: 'cake@rooms.example' }, xml('conference', { xmlns: 'urn:xmpp:bookmarks:1', name: 'Cake' }))))), WAIT, 'XEP-0402 publish');
  const back = await within(caller(legacy).get(xml('query', { xmlns: 'jabber:iq:private' }, xml('storage', { xmlns: 'storage:bookmarks' }))), WAIT, 'private get');
  t.deepEqual(back.getChild('storage', 'storage:bookmarks')!.getChildren('conference').map((c) => [c.attrs.jid, c.attrs.name]), [['tea@rooms.example', 'Tea'], ['cake@rooms.example', 'Cake']]);
});
