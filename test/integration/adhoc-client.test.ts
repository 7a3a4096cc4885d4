// XEP-0050/XEP-0133 with @xmpp/client: an administrator's client discovers
// the commands, runs change-user-password through its form, and the user
// logs in with the new password. Not only our own idea of XMPP.
import test from 'ava';
import { xml } from '@xmpp/client';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { xmppClient } from '../helpers/xmpp-client.ts';
import type { XmppClient } from '../helpers/xmpp-client.ts';

const NS_COMMANDS = 'http://jabber.org/protocol/commands';
const NS_ADMIN = 'http://jabber.org/protocol/admin';

let server: TestServer;
const open: XmppClient[] = [];

test.before(async () => {
  server = await startTestServer({ XMPP_ADMINS: 'root@localhost' });
  await server.addUser('root', 'root-secret');
  await server.addUser('dave', 'dave-old');
});
test.after.always(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  await server?.stop();
});

async function online(username: string, password: string): Promise<XmppClient> {
  const c = xmppClient(server, { username, password, resource: 'adhoc' });
  c.reconnect.stop();
  open.push(c);
  await c.start();
  return c;
}

test('@xmpp/client: discover the admin commands and change a password through the form', async (t) => {
  const root = await online('root', 'root-secret');
  const items = await root.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items', node: NS_COMMANDS })));
  const nodes = items.getChild('query')!.getChildren('item').map((i) => i.attrs.node);
  t.true(nodes.includes(`${NS_ADMIN}#change-user-password`));

  const first = await root.iqCaller.request(xml('iq', { type: 'set', to: 'localhost' }, xml('command', { xmlns: NS_COMMANDS, node: `${NS_ADMIN}#change-user-password`, action: 'execute' })));
  const cmd = first.getChild('command', NS_COMMANDS)!;
  t.is(cmd.attrs.status, 'executing');
  const fields = cmd.getChild('x', 'jabber:x:data')!.getChildren('field').map((f) => f.attrs.var);
  t.deepEqual(fields, ['FORM_TYPE', 'accountjid', 'password']);
  const field = (name: string, value: string) => xml('field', { var: name }, xml('value', {}, value));
  const done = await root.iqCaller.request(
    xml('iq', { type: 'set', to: 'localhost' },
      xml('command', { xmlns: NS_COMMANDS, node: `${NS_ADMIN}#change-user-password`, sessionid: cmd.attrs.sessionid },
        xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, field('FORM_TYPE', NS_ADMIN), field('accountjid', 'dave@localhost'), field('password', 'dave-new')))),
  );
  t.is(done.getChild('command', NS_COMMANDS)!.attrs.status, 'completed');
  const dave = await online('dave', 'dave-new');
  t.is(dave.jid?.toString(), 'dave@localhost/adhoc');
});
