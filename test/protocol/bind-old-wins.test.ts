// Resource conflict with XMPP_CONFLICT_POLICY=old-wins (RFC 6120 §7.7.2.2):
// the new bind is refused with <conflict/>, the old session carries on.
import test from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { NS_BIND, authenticated, bind, online, ping, stanzaError } from '../helpers/protocol.ts';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_CONFLICT_POLICY: 'old-wins' });
  await server.addUser('alice', 'alice-pw');
});
test.after.always(async () => {
  await server?.stop();
});

test('old wins: binding a resource in use gets a conflict iq error; the old session is untouched', async (t) => {
  const old = await online(server.c2sPort, 'alice', 'alice-pw', 'dup');
  const start = old.c.items.length;
  const { c } = await authenticated(server.c2sPort, 'alice', 'alice-pw');
  const r = await bind(c, 'dup');
  t.is(r.attrs.type, 'error');
  t.deepEqual(stanzaError(r), { type: 'cancel', condition: 'conflict', by: undefined });
  t.false(old.c.isClosed);
  const pong = await ping(old.c);
  t.is(pong.attrs.type, 'result');
  t.is(pong.attrs.to, 'alice@localhost/dup');
  t.is(old.c.items.slice(start).filter((i) => i.kind !== 'el' || i.el.name !== 'iq').length, 0, 'nothing but iq replies for the old session');
  // The refused stream may bind something else.
  const ok = await bind(c, 'other');
  t.is(ok.getChild('bind', NS_BIND)?.getChildText('jid'), 'alice@localhost/other');
  old.c.destroy();
  c.destroy();
});
