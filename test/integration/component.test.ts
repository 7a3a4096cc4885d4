// An external component written with a real third-party library (slixmpp,
// from Debian's python3-slixmpp) against the server's XEP-0114 listener, and
// @xmpp/client as the user: the component's handshake, a message to it and
// its answer back.
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { xmppClient, kill } from '../helpers/xmpp-client.ts';
import { within } from '../helpers/protocol.ts';
import { WAIT, fresh } from '../helpers/im.ts';

const DOMAIN = 'echo.localhost';
const SECRET = 'slix-secret';
const SCRIPT = fileURLToPath(new URL('./peers/echo_component.py', import.meta.url));
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_COMPONENT_PORT: '0', XMPP_COMPONENTS: `${DOMAIN}=${SECRET}` });
});
test.after.always(async () => {
  await server?.stop();
});

test('a slixmpp component connects with its secret and answers a message from an @xmpp/client user', async (t) => {
  const proc = spawn('/usr/bin/python3', [SCRIPT, '127.0.0.1', String(server.componentPort), DOMAIN, SECRET], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  t.teardown(() => proc.kill('SIGKILL'));
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    void once(proc, 'exit').then(([code]) => reject(new Error(`the component exited (${String(code)}): ${err}`)));
  });
  await within(ready, WAIT * 2, 'the slixmpp component connected');

  const name = fresh('slixuser');
  await server.addUser(name, `${name}-pw`);
  const user = xmppClient(server, { username: name, password: `${name}-pw`, resource: 'r' });
  user.reconnect.stop();
  t.teardown(() => kill(user));
  const answer = new Promise<Element>((resolve) => user.on('stanza', (el: Element) => el.name === 'message' && el.attrs.id === 'hi' && resolve(el)));
  await within(user.start(), WAIT, 'the user logging in');
  await user.send(xml('message', { to: `bot@${DOMAIN}`, type: 'chat', id: 'hi' }, xml('body', {}, 'hello')));
  const el = await within(answer, WAIT, 'the echo');
  t.is(el.attrs.from, `bot@${DOMAIN}`);
  t.is(el.getChildText('body'), 'echo: hello');
  t.not(el.attrs.type, 'error', el.toString());
});
