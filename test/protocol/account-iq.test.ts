// An iq without 'to' is handled on behalf of the sender's account (RFC 6120
// §10.3.3), and so is its answer: a result or an error carries no 'from'
// (§8.1.2.1; a client such as aioxmpp matches answers on from and id). In-band
// registration's password change (XEP-0077 §3.3) and cancellation (§3.2)
// work that way too; cancellation answers first, then ends the stream with
// <not-authorized/>, in that order on the wire. Bad input to registration
// (§3.1) and to the password change gets the error XEP-0077 names, and
// changes no account.
import test, { type ExecutionContext } from 'ava';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import type { Element } from 'ltx';
import { RawClient } from '../helpers/raw.ts';
import { NS_STREAMS_ERR, online, plainOutcome, secured, stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, fresh } from '../helpers/im.ts';

const NS_REGISTER = 'jabber:iq:register';
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_REGISTRATION: 'true' });
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

/** In-band registration (XEP-0077 §3.1) on a fresh secured stream, with this <query/> content; returns the reply. */
async function register(t: ExecutionContext, fields: string): Promise<Element> {
  const { c } = await within(secured(server.c2sPort), WAIT, 'a secured stream');
  t.teardown(() => c.destroy());
  const id = uid('reg');
  return within(c.request(`<iq type='set' id='${id}'><query xmlns='${NS_REGISTER}'>${fields}</query></iq>`, id), WAIT, `the answer to registering ${fields}`);
}

/** A password change (XEP-0077 §3.3) on `c`, with this <query/> content; returns the reply. */
function change(c: RawClient, fields: string): Promise<Element> {
  const id = uid('change');
  return within(c.request(`<iq type='set' id='${id}'><query xmlns='${NS_REGISTER}'>${fields}</query></iq>`, id), WAIT, `the answer to the change ${fields}`);
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

test("registering another account's username (XEP-0077 §3.1): <conflict/>, and that account keeps its password", async (t) => {
  const name = fresh('taken');
  await server.addUser(name, `${name}-pw`);
  const r = await register(t, `<username>${name}</username><password>imposter-pw</password>`);
  t.is(r.attrs.type, 'error', r.toString());
  t.like(stanzaError(r), { type: 'cancel', condition: 'conflict' });
  t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'success');
  t.is(await plainOutcome(server.c2sPort, name, 'imposter-pw'), 'not-authorized');
});

test('registering with an unusable password (XEP-0077 §3.1, SASLprep): <not-acceptable/>, and no account is made', async (t) => {
  const name = fresh('badpw');
  const r = await register(t, `<username>${name}</username><password>x\u0378</password>`);
  t.is(r.attrs.type, 'error', r.toString());
  t.like(stanzaError(r), { type: 'modify', condition: 'not-acceptable' });
  // The name is still free.
  const ok = await register(t, `<username>${name}</username><password>${name}-pw</password>`);
  t.is(ok.attrs.type, 'result', ok.toString());
  t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'success');
});

for (const [label, fields] of [
  ['no password', (name: string) => `<username>${name}</username>`],
  ['an empty password', (name: string) => `<username>${name}</username><password/>`],
  ['no username', () => `<password>some-pw</password>`],
] as const) {
  test(`registering with ${label}: <not-acceptable/>, "some required information not provided" (XEP-0077 §3.1), and no account is made`, async (t) => {
    const name = fresh('incomplete');
    const r = await register(t, fields(name));
    t.is(r.attrs.type, 'error', r.toString());
    t.like(stanzaError(r), { type: 'modify', condition: 'not-acceptable' });
    const ok = await register(t, `<username>${name}</username><password>${name}-pw</password>`);
    t.is(ok.attrs.type, 'result', `the name is still free: ${ok.toString()}`);
  });
}

test('a password change without a password or without a username (XEP-0077 §3.3): <bad-request/>, and the password stays', async (t) => {
  const { c, name } = await account(t, 'nopw');
  for (const fields of [`<username>${name}</username>`, `<username>${name}</username><password/>`, '<password>new-pw</password>', '<username/><password>new-pw</password>']) {
    const r = await change(c, fields);
    t.is(r.attrs.type, 'error', r.toString());
    t.like(stanzaError(r), { type: 'modify', condition: 'bad-request' }, fields);
  }
  t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'success');
});

test('a password change to an unusable password (SASLprep): <not-acceptable/>, and the password stays', async (t) => {
  const { c, name } = await account(t, 'unusable');
  const r = await change(c, `<username>${name}</username><password>x\u0378</password>`);
  t.is(r.attrs.type, 'error', r.toString());
  t.like(stanzaError(r), { type: 'modify', condition: 'not-acceptable' });
  t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'success');
  t.is(await plainOutcome(server.c2sPort, name, 'x\u0378'), 'not-authorized');
});

test("a password change naming another account's username: <not-allowed/>, and neither password changes", async (t) => {
  const { c, name } = await account(t, 'mallory');
  const other = await account(t, 'victim');
  const r = await change(c, `<username>${other.name}</username><password>stolen-pw</password>`);
  t.is(r.attrs.type, 'error', r.toString());
  t.like(stanzaError(r), { type: 'cancel', condition: 'not-allowed' });
  t.is(await plainOutcome(server.c2sPort, other.name, `${other.name}-pw`), 'success');
  t.is(await plainOutcome(server.c2sPort, other.name, 'stolen-pw'), 'not-authorized');
  t.is(await plainOutcome(server.c2sPort, name, `${name}-pw`), 'success');
});
