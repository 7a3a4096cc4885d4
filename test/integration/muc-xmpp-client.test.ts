// Multi-user chat (XEP-0045) with @xmpp/client, a client library not ours,
// on both sides: one user creates an instant room through the library's
// iq caller, the other enters it, they exchange groupchat messages, the
// owner changes the subject, then kicks the other.
import test from 'ava';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { Inbox, xmppClient, type XmppClient } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';

const WAIT = 10_000;
const NS_MUC = 'http://jabber.org/protocol/muc';
const NS_MUC_USER = `${NS_MUC}#user`;

let server: TestServer;
let room: string;
const open: XmppClient[] = [];

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
  room = `lounge${process.pid}@conference.${server.config.domain}`;
  await server.addUser('ariel', 'ariel-secret');
  await server.addUser('caliban', 'caliban-secret');
});
test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server?.stop();
});

async function online(username: string): Promise<{ c: XmppClient; inbox: Inbox }> {
  const c = xmppClient(server, { username, password: `${username}-secret`, resource: 'muc' });
  c.reconnect.stop();
  const inbox = new Inbox(c);
  open.push(c);
  await within(c.start(), WAIT, `${username} logging in`);
  await c.send(xml('presence'));
  return { c, inbox };
}

const codes = (el: Element): string[] => (el.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []).map((s) => s.attrs.code);
const fromRoom = (nick: string, type?: string) => (el: Element) => el.name === 'presence' && el.attrs.from === `${room}/${nick}` && el.attrs.type === type;
const body = (text: string) => (el: Element) => el.name === 'message' && el.attrs.type === 'groupchat' && el.getChildText('body') === text;

test('@xmpp/client: a room created, entered, talked in, its subject changed, and one of its occupants kicked', async (t) => {
  const ariel = await online('ariel');
  const caliban = await online('caliban');

  // Ariel creates the room (201) and asks for an instant one (§10.1.2).
  let fa = ariel.inbox.length;
  await ariel.c.send(xml('presence', { to: `${room}/Ariel` }, xml('x', { xmlns: NS_MUC })));
  const created = await within(ariel.inbox.find(fromRoom('Ariel'), fa), WAIT, 'the room created');
  t.true(codes(created).includes('201') && codes(created).includes('110'), created.toString());
  t.is(created.getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.affiliation, 'owner');
  await ariel.c.iqCaller.set(xml('query', { xmlns: `${NS_MUC}#owner` }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' })), room);

  // Caliban enters: Ariel's presence, then his own (110), then the subject.
  let fc = caliban.inbox.length;
  fa = ariel.inbox.length;
  await caliban.c.send(xml('presence', { to: `${room}/Caliban` }, xml('x', { xmlns: NS_MUC })));
  const own = await within(caliban.inbox.find((el) => fromRoom('Caliban')(el) && codes(el).includes('110'), fc), WAIT, 'Caliban in');
  t.is(own.getChild('x', NS_MUC_USER)?.getChild('item')?.attrs.role, 'participant');
  await within(caliban.inbox.find((el) => el.name === 'message' && el.getChild('subject') !== undefined, fc), WAIT, 'the subject');
  t.true(caliban.inbox.els.slice(fc).some(fromRoom('Ariel')), 'the owner’s presence came first');
  await within(ariel.inbox.find(fromRoom('Caliban'), fa), WAIT, 'Ariel sees Caliban');

  // Groupchat both ways, each reflected to its sender too.
  fc = caliban.inbox.length;
  fa = ariel.inbox.length;
  await ariel.c.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'Full fathom five')));
  const heard = await within(caliban.inbox.find(body('Full fathom five'), fc), WAIT, 'Ariel’s message');
  t.is(heard.attrs.from, `${room}/Ariel`);
  await within(ariel.inbox.find(body('Full fathom five'), fa), WAIT, 'its reflection');
  await caliban.c.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'This island’s mine')));
  const answered = await within(ariel.inbox.find(body('This island’s mine'), fa), WAIT, 'Caliban’s message');
  t.is(answered.attrs.from, `${room}/Caliban`);

  // The owner changes the subject (§8.1): everyone gets it from her occupant JID.
  fc = caliban.inbox.length;
  await ariel.c.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'The tempest')));
  const subject = await within(caliban.inbox.find((el) => el.name === 'message' && el.getChildText('subject') === 'The tempest', fc), WAIT, 'the new subject');
  t.is(subject.attrs.from, `${room}/Ariel`);

  // She kicks him (§8.2): the library's iq caller gets the result, he gets 307 and 110, she sees him go with 307.
  fc = caliban.inbox.length;
  fa = ariel.inbox.length;
  await ariel.c.iqCaller.set(xml('query', { xmlns: `${NS_MUC}#admin` }, xml('item', { nick: 'Caliban', role: 'none' }, xml('reason', {}, 'Hag-seed, hence!'))), room);
  const kicked = await within(caliban.inbox.find(fromRoom('Caliban', 'unavailable'), fc), WAIT, 'Caliban kicked');
  t.deepEqual(codes(kicked).sort(), ['110', '307']);
  t.is(kicked.getChild('x', NS_MUC_USER)?.getChild('item')?.getChildText('reason'), 'Hag-seed, hence!');
  const seen = await within(ariel.inbox.find(fromRoom('Caliban', 'unavailable'), fa), WAIT, 'Ariel sees him go');
  t.deepEqual(codes(seen), ['307']);
  // Out: his self-ping says so.
  const refused = await caliban.c.iqCaller.request(xml('iq', { type: 'get', to: `${room}/Caliban` }, xml('ping', { xmlns: 'urn:xmpp:ping' }))).then(
    () => 'joined',
    (err: { condition?: string }) => err.condition,
  );
  t.is(refused, 'not-acceptable', 'XEP-0410: not in the room');
});
