// XEP-0191 with @xmpp/client, a client library not ours: its iqCaller reads
// and changes the blocklist, its iqCallee answers the server's pushes, and
// a message from a blocked account comes back to its sender as
// service-unavailable, while the blocker's own message to it is refused
// with <blocked/>.
import test from 'ava';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { xmppClient } from '../helpers/xmpp-client.ts';
import type { Untyped, XmppClient } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';

const NS_BLOCKING = 'urn:xmpp:blocking';
const WAIT = 10_000;

let server: TestServer;
const open: XmppClient[] = [];

test.before(async () => {
  server = await startTestServer();
  await server.addUser('juliet', 'juliet-secret');
  await server.addUser('romeo', 'romeo-secret');
});
test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server?.stop();
});

async function online(username: string, resource: string): Promise<XmppClient> {
  const c = xmppClient(server, { username, password: `${username}-secret`, resource });
  c.reconnect.stop();
  open.push(c);
  await c.start();
  return c;
}

function next(c: XmppClient, what: string, pred: (el: Element) => boolean): Promise<Element> {
  return within(
    new Promise((resolve) => {
      const on = (el: Element) => {
        if (!pred(el)) return;
        c.off('stanza', on);
        resolve(el);
      };
      c.on('stanza', on);
    }),
    WAIT,
    what,
  );
}

test('block, pushes to another resource, refusals both ways, unblock', async (t) => {
  const juliet = await online('juliet', 'chamber');
  const balcony = await online('juliet', 'balcony');
  const romeo = await online('romeo', 'garden');
  // Available, so that a message to her bare JID is delivered rather than stored.
  await juliet.send(xml('presence'));
  // The library's callee answers the pushes (XEP-0191 §5.3, §5.4); each one resolves the next waiter.
  const pushes: Element[] = [];
  let onPush: (() => void) | undefined;
  const pushed = () => within(new Promise<void>((r) => (onPush = r)), WAIT, 'a blocklist push');
  const take = (ctx: { stanza: Element }) => {
    pushes.push(ctx.stanza);
    onPush?.();
    return true;
  };
  (balcony as Untyped).iqCallee.set(NS_BLOCKING, 'block', take as () => unknown);
  (balcony as Untyped).iqCallee.set(NS_BLOCKING, 'unblock', take as () => unknown);
  const list = await balcony.iqCaller.get(xml('blocklist', { xmlns: NS_BLOCKING }));
  t.is(list.getChildren('item').length, 0);

  const blockPush = pushed();
  await juliet.iqCaller.request(xml('iq', { type: 'set' }, xml('block', { xmlns: NS_BLOCKING }, xml('item', { jid: 'romeo@localhost' }))));
  await blockPush;
  t.is(pushes.length, 1, "the library's callee took the push");
  const again = await juliet.iqCaller.get(xml('blocklist', { xmlns: NS_BLOCKING }));
  t.deepEqual(again.getChildren('item').map((i: Element) => i.attrs.jid), ['romeo@localhost']);

  const bounced = next(romeo, 'the bounce', (el) => el.is('message') && el.attrs.type === 'error');
  await romeo.send(xml('message', { to: 'juliet@localhost', type: 'chat' }, xml('body', {}, 'wherefore art thou')));
  const err = await bounced;
  t.truthy(err.getChild('error')?.getChild('service-unavailable', 'urn:ietf:params:xml:ns:xmpp-stanzas'));

  const refused = next(juliet, 'the refusal', (el) => el.is('message') && el.attrs.type === 'error');
  await juliet.send(xml('message', { to: 'romeo@localhost', type: 'chat' }, xml('body', {}, 'go away')));
  const out = await refused;
  t.truthy(out.getChild('error')?.getChild('not-acceptable', 'urn:ietf:params:xml:ns:xmpp-stanzas'));
  t.truthy(out.getChild('error')?.getChild('blocked', 'urn:xmpp:blocking:errors'));

  const unblockPush = pushed();
  await juliet.iqCaller.request(xml('iq', { type: 'set' }, xml('unblock', { xmlns: NS_BLOCKING })));
  await unblockPush;
  t.is(pushes.length, 2);
  t.truthy(pushes[0].getChild('block', NS_BLOCKING)?.getChild('item'));
  t.is(pushes[1].getChild('unblock', NS_BLOCKING)?.getChildren('item').length, 0);
  const delivered = next(juliet, 'the message after unblocking', (el) => el.is('message') && el.getChildText('body') === 'it is my lady');
  await romeo.send(xml('message', { to: 'juliet@localhost', type: 'chat' }, xml('body', {}, 'it is my lady')));
  await delivered;
  t.pass();
});
