// An iq without 'to' is handled on behalf of the sender's account (RFC 6120
// §10.3.3), and so is its answer: a result or an error carries no 'from'
// (§8.1.2.1; a client such as aioxmpp matches answers on from and id). In-band
// registration's password change (XEP-0077 §3.3) and cancellation (§3.2)
// work that way too; cancellation answers first, then ends the stream with
// <not-authorized/>, in that order on the wire.
import test, { type ExecutionContext } from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import { RawClient } from '../helpers/raw.ts';
import { NS_STREAMS_ERR, online, plainOutcome, stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, fresh } from '../helpers/im.ts';

const NS_REGISTER = 'jabber:iq:register';
let server: TestServer;

test.before(async () => {
  server = await startTestServer({});
});
test.after.always(async () => {
  await server?.stop();
});

async function account(t: ExecutionContext, base: string): Promise<{ c: RawClient; jid: string; name: string }> {
  const name = fresh(base);
  await server.addUser(name, `${name}-pw`);
  const { c, jid } = await within(online(server.c2sPort, name, `${name}-pw`, 'r'), WAIT, `${name} logging in`);
  t.teardown(() => c.destroy());
  return { c, jid, name };
}

test('an error to an iq without "to" has no "from" (it comes on behalf of the account), like a result', async (t) => {
  const { c, jid } = await account(t, 'noto');
  const id = uid('unknown');
  const err = await within(c.request(`<iq type='get' id='${id}'><query xmlns='urn:example:nothing'/></iq>`, id), WAIT, 'the error');
  t.is(err.attrs.type, 'error');
  t.false('from' in err.attrs, err.toString());
  t.is(err.attrs.to, jid);
  t.is(stanzaError(err).condition, 'service-unavailable');
  const id2 = uid('two');
  const bad = await within(c.request(`<iq type='get' id='${id2}'><a xmlns='urn:example:a'/><b xmlns='urn:example:b'/></iq>`, id2), WAIT, 'bad-request');
  t.is(stanzaError(bad).condition, 'bad-request');
  t.false('from' in bad.attrs, bad.toString());
  const id3 = uid('ok');
  const ok = await within(c.request(`<iq type='get' id='${id3}'><query xmlns='${NS_REGISTER}'/></iq>`, id3), WAIT, 'the result');
  t.is(ok.attrs.type, 'result');
  t.false('from' in ok.attrs, ok.toString());
  t.truthy(ok.getChild('query', NS_REGISTER)?.getChild('registered'), 'XEP-0077 §3.2: the account is registered');
});

for (const [label, to] of [['without "to"', ''], ['to the domain', " to='localhost'"], ['to the own bare JID', 'BARE']] as const) {
  test(`password change ${label} (XEP-0077 §3.3): the new password logs in, the old one no longer`, async (t) => {
    const { c, jid, name } = await account(t, 'pw');
    const addr = to === 'BARE' ? ` to='${jid.split('/')[0]}'` : to;
    const id = uid('passwd');
    const res = await within(c.request(`<iq type='set' id='${id}'${addr}><query xmlns='${NS_REGISTER}'><username>${name}</username><password>new-${name}</password></query></iq>`, id), WAIT, 'the answer');
    t.is(res.attrs.type, 'result', res.toString());
    t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'not-authorized', 'the old password is refused');
    const { c: again } = await online(server.c2sPort, name, `new-${name}`, 'new');
    again.destroy();
  });

  test(`cancellation ${label} (XEP-0077 §3.2): the result, then <not-authorized/>, in that order; the account is gone`, async (t) => {
    const { c, jid, name } = await account(t, 'cancel');
    const addr = to === 'BARE' ? ` to='${jid.split('/')[0]}'` : to;
    const id = uid('remove');
    c.send(`<iq type='set' id='${id}'${addr}><query xmlns='${NS_REGISTER}'><remove/></query></iq>`);
    const first = await c.next();
    t.is(first.kind, 'el');
    if (first.kind === 'el') {
      t.is(first.el.name, 'iq', first.raw);
      t.is(first.el.attrs.type, 'result', first.raw);
      t.is(first.el.attrs.id, id);
    }
    const second = await c.next();
    t.is(second.kind, 'el');
    if (second.kind === 'el') {
      t.is(second.el.name, 'stream:error', second.raw);
      t.truthy(second.el.getChild('not-authorized', NS_STREAMS_ERR), second.raw);
    }
    t.is((await c.next()).kind, 'close');
    t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'not-authorized', 'the account no longer exists');
  });
}

test('registration concerns the own account: addressed to another account it is refused', async (t) => {
  const { c } = await account(t, 'mallory');
  const other = await account(t, 'victim');
  const id = uid('steal');
  const res = await within(c.request(`<iq type='set' id='${id}' to='${other.jid.split('/')[0]}'><query xmlns='${NS_REGISTER}'><remove/></query></iq>`, id), WAIT, 'the answer');
  t.is(res.attrs.type, 'error');
  t.is(stanzaError(res).condition, 'forbidden');
  const { c: still } = await online(server.c2sPort, other.name, `${other.name}-pw`, 'still');
  still.destroy();
});
