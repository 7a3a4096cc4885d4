// PEP (XEP-0163) with @xmpp/client on both sides: bob subscribes to alice's
// presence, his client advertises caps (XEP-0115) and answers the server's
// disco#info with its own iq handler, alice publishes through the library's
// iq caller, and bob's client reads the notification as a headline event.
import test from 'ava';
import { createHash } from 'node:crypto';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { xmppClient, type XmppClient, type Untyped } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';

let server: TestServer;
const open: XmppClient[] = [];
const WAIT = 10_000;
const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NODE = 'http://jabber.org/protocol/tune';
/** XEP-0172 user nickname and XEP-0107 user mood: plain nodes too. */
const NICK = 'http://jabber.org/protocol/nick';
const MOOD = 'http://jabber.org/protocol/mood';

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
  await server.addUser('tina', 'tina-secret');
  await server.addUser('ray', 'ray-secret');
});
test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server?.stop();
});

async function online(username: string, password: string): Promise<XmppClient> {
  const c = xmppClient(server, { username, password, resource: 'pep' });
  c.reconnect.stop();
  open.push(c);
  await within(c.start(), WAIT, `${username} logging in`);
  return c;
}

const waitFor = (c: XmppClient, what: string, pred: (el: Element) => boolean) =>
  within(new Promise<Element>((resolve) => {
    const on = (el: Element) => {
      if (!pred(el)) return;
      c.removeListener('stanza', on);
      resolve(el);
    };
    c.on('stanza', on);
  }), WAIT, what);

test('@xmpp/client: a publish by one account notifies the other, whose caps ask for the node: a tune, a nickname (XEP-0172), a mood (XEP-0107)', async (t) => {
  const tina = await online('tina', 'tina-secret');
  const ray = await online('ray', 'ray-secret');
  // Ray answers disco#info for his caps node (XEP-0115 §6.3) with his own handler.
  const features = ['http://jabber.org/protocol/disco#info', `${NODE}+notify`, `${NICK}+notify`, `${MOOD}+notify`];
  const ver = createHash('sha1').update(`client/pc//ray<${[...features].sort().map((f) => `${f}<`).join('')}`).digest('base64');
  let asked = 0;
  (ray as Untyped & { iqCallee: { get(ns: string, name: string, h: (ctx: { stanza: Element }) => Element): void } }).iqCallee.get('http://jabber.org/protocol/disco#info', 'query', (ctx) => {
    asked++;
    return xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: ctx.stanza.getChild('query')!.attrs.node }, xml('identity', { category: 'client', type: 'pc', name: 'ray' }), ...features.map((f) => xml('feature', { var: f })));
  });
  await tina.send(xml('presence'));
  // Ray subscribes to Tina's presence; she approves.
  const request = waitFor(tina, 'the subscription request', (el) => el.name === 'presence' && el.attrs.type === 'subscribe');
  await ray.send(xml('presence', { to: 'tina@localhost', type: 'subscribe' }));
  await request;
  const seen = waitFor(ray, "tina's presence", (el) => el.name === 'presence' && el.attrs.from?.startsWith('tina@localhost/') && el.attrs.type === undefined);
  await tina.send(xml('presence', { to: 'ray@localhost', type: 'subscribed' }));
  await ray.send(xml('presence', {}, xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node: 'urn:ray', ver })));
  await seen;
  await within((async () => { while (asked === 0) await new Promise((r) => setTimeout(r, 20)); })(), WAIT, 'the caps query');
  const event = waitFor(ray, 'the notification', (el) => el.name === 'message' && Boolean(el.getChild('event', `${NS_PUBSUB}#event`)));
  const caller = tina.iqCaller as unknown as { set(el: Element, to?: string): Promise<Element> };
  const res = await within(caller.set(xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node: NODE }, xml('item', { id: 'now' }, xml('tune', { xmlns: NODE }, xml('artist', {}, 'Yes'), xml('title', {}, 'Heart of the Sunrise')))))), WAIT, 'publish');
  t.is(res.getChild('publish')?.getChild('item')?.attrs.id, 'now');
  const el = await event;
  t.is(el.attrs.from, 'tina@localhost');
  t.is(el.attrs.type, 'headline');
  const items = el.getChild('event', `${NS_PUBSUB}#event`)!.getChild('items')!;
  t.is(items.attrs.node, NODE);
  t.is(items.getChild('item')!.getChild('tune', NODE)!.getChildText('title'), 'Heart of the Sunrise');
  // And read back on demand.
  const rc = ray.iqCaller as unknown as { get(el: Element, to?: string): Promise<Element> };
  const got = await within(rc.get(xml('pubsub', { xmlns: NS_PUBSUB }, xml('items', { node: NODE })), 'tina@localhost'), WAIT, 'items');
  t.is(got.getChild('items')!.getChild('item')!.attrs.id, 'now');
  // A nickname (XEP-0172) and a mood (XEP-0107), each notified with its payload.
  const of = (node: string) => (el: Element) => el.name === 'message' && el.getChild('event', `${NS_PUBSUB}#event`)?.getChild('items')?.attrs.node === node;
  const nickEvent = waitFor(ray, 'the nickname', of(NICK));
  await within(caller.set(xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node: NICK }, xml('item', {}, xml('nick', { xmlns: NICK }, 'Tina T.'))))), WAIT, 'publish the nickname');
  t.is((await nickEvent).getChild('event', `${NS_PUBSUB}#event`)!.getChild('items')!.getChild('item')!.getChildText('nick', NICK), 'Tina T.');
  const moodEvent = waitFor(ray, 'the mood', of(MOOD));
  await within(caller.set(xml('pubsub', { xmlns: NS_PUBSUB }, xml('publish', { node: MOOD }, xml('item', {}, xml('mood', { xmlns: MOOD }, xml('happy'), xml('text', {}, 'sunny')))))), WAIT, 'publish the mood');
  const mood = (await moodEvent).getChild('event', `${NS_PUBSUB}#event`)!.getChild('items')!.getChild('item')!.getChild('mood', MOOD)!;
  t.truthy(mood.getChild('happy'));
  t.is(mood.getChildText('text'), 'sunny');
});
