// vCards (XEP-0054) and private XML (XEP-0049, XEP-0048 bookmarks) with
// @xmpp/client's own iq caller: what a real client library sends and how it
// reads results and errors.
import test from 'ava';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';

let server: TestServer;
const open: XmppClient[] = [];
const WAIT = 10_000;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '1' });
  await server.addUser('vic', 'vic-secret');
  await server.addUser('pat', 'pat-secret');
});
test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server?.stop();
});

async function online(username: string, password: string, resource: string): Promise<XmppClient> {
  const c = xmppClient(server, { username, password, resource });
  c.reconnect.stop();
  open.push(c);
  await within(c.start(), WAIT, `${username} logging in`);
  return c;
}

interface IqCaller {
  get(el: Element, to?: string): Promise<Element>;
  set(el: Element, to?: string): Promise<Element>;
}

test('@xmpp/client: a vCard set and read back, read by another account, and a set on another account refused', async (t) => {
  const vic = await online('vic', 'vic-secret', 'vcard');
  const pat = await online('pat', 'pat-secret', 'vcard');
  const vi = vic.iqCaller as unknown as IqCaller;
  const empty = await within(vi.get(xml('vCard', { xmlns: 'vcard-temp' })), WAIT, 'own vCard before');
  t.is(empty.name, 'vCard');
  t.is(empty.children.length, 0);
  await within(vi.set(xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Vic'), xml('NICKNAME', {}, 'v'))), WAIT, 'set');
  t.is((await within(vi.get(xml('vCard', { xmlns: 'vcard-temp' })), WAIT, 'own vCard')).getChildText('FN'), 'Vic');
  const pi = pat.iqCaller as unknown as IqCaller;
  const seen = await within(pi.get(xml('vCard', { xmlns: 'vcard-temp' }), 'vic@localhost'), WAIT, "pat reads vic's");
  t.is(seen.getChildText('NICKNAME'), 'v');
  const err = await t.throwsAsync(pi.set(xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Not Vic')), 'vic@localhost'));
  t.is((err as Error & { condition?: string }).condition, 'forbidden');
});

test('@xmpp/client: XEP-0048 bookmarks kept in private storage; an unset namespace comes back empty', async (t) => {
  const vic = await online('vic', 'vic-secret', 'bookmarks');
  const vi = vic.iqCaller as unknown as IqCaller;
  const none = await within(vi.get(xml('query', { xmlns: 'jabber:iq:private' }, xml('storage', { xmlns: 'storage:rosternotes' }))), WAIT, 'unset');
  t.is(none.getChild('storage', 'storage:rosternotes')?.children.length, 0);
  await within(vi.set(xml('query', { xmlns: 'jabber:iq:private' }, xml('storage', { xmlns: 'storage:bookmarks' }, xml('conference', { jid: 'xsf@muc.xmpp.org', autojoin: 'true', name: 'XSF' }, xml('nick', {}, 'vic'))))), WAIT, 'bookmarks set');
  const got = await within(vi.get(xml('query', { xmlns: 'jabber:iq:private' }, xml('storage', { xmlns: 'storage:bookmarks' }))), WAIT, 'bookmarks get');
  const conf = got.getChild('storage', 'storage:bookmarks')?.getChild('conference');
  t.is(conf?.attrs.jid, 'xsf@muc.xmpp.org');
  t.is(conf?.getChildText('nick'), 'vic');
});
