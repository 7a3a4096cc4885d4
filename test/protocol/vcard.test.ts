// XEP-0054 vcard-temp end to end, over real sockets with real TLS: one's
// own vCard set and read (no 'to', and to one's bare JID), an empty vCard
// before any (§3.1), another account's read on its behalf (§3.3) and never
// set (§3.2), the error for an account with none and for no account, the
// size limit, the server's disco feature (§4), the vCard kept across
// logins and gone with the account.
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { createHash, randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { stanzaError, uid, within } from '../helpers/protocol.ts';
import { WAIT, connect, fresh, newUser, type Peer } from '../helpers/im.ts';
import { MAX_VCARD_BYTES } from '../../src/personal/store.ts';

const NS_VCARD = 'vcard-temp';
let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
});
test.after.always(async () => {
  await server?.stop();
});

async function iq(p: Peer, type: 'get' | 'set', inner: string, to?: string): Promise<Element> {
  const id = uid('vc');
  return within(p.c.request(`<iq type='${type}' id='${id}'${to ? ` to='${to}'` : ''}>${inner}</iq>`, id), WAIT, `${p.jid}: vCard ${type}`);
}

const getVcard = (p: Peer, to?: string) => iq(p, 'get', `<vCard xmlns='${NS_VCARD}'/>`, to);
const fn = (res: Element) => res.getChild('vCard', NS_VCARD)?.getChildText('FN');

function ok(t: ExecutionContext, res: Element, what: string): void {
  t.is(res.attrs.type, 'result', `${what}: ${res.toString()}`);
}

test("one's own vCard: empty before any is set (§3.1), then as set, with or without 'to'; replaced whole", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const before = await getVcard(alice);
  ok(t, before, 'get before any');
  const empty = before.getChild('vCard', NS_VCARD);
  t.truthy(empty, 'an empty <vCard/>');
  t.is(empty!.children.length, 0);
  t.false('from' in before.attrs, 'answered on behalf of the account (no from, RFC 6120 §8.1.2.1)');

  const set = await iq(alice, 'set', `<vCard xmlns='${NS_VCARD}'><FN>Alice &amp; Co</FN><NICKNAME>al</NICKNAME><DESC>é &lt;x&gt;</DESC></vCard>`);
  ok(t, set, 'set');
  t.is(set.children.length, 0, 'an empty result');
  const got = await getVcard(alice);
  t.is(fn(got), 'Alice & Co');
  t.is(got.getChild('vCard', NS_VCARD)!.getChildText('DESC'), 'é <x>');
  const toSelf = await getVcard(alice, alice.bare);
  t.is(fn(toSelf), 'Alice & Co', 'to the bare JID');
  t.is(toSelf.attrs.from, alice.bare);

  ok(t, await iq(alice, 'set', `<vCard xmlns='${NS_VCARD}'><FN>Alice</FN></vCard>`, alice.bare), 'set to the bare JID');
  const again = (await getVcard(alice)).getChild('vCard', NS_VCARD)!;
  t.is(again.getChildText('FN'), 'Alice');
  t.is(again.getChild('NICKNAME'), undefined, 'no partial update: the whole vCard is replaced (§3.2)');
});

test("another account's vCard is read on its behalf (§3.3), its absence is service-unavailable as for no account, and it cannot be set (§3.2)", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  const none = await getVcard(alice, bob.bare);
  t.is(none.attrs.type, 'error');
  t.deepEqual(stanzaError(none), { type: 'cancel', condition: 'service-unavailable', by: undefined });
  const nobody = await getVcard(alice, `${fresh('nobody')}@${server.config.domain}`);
  t.deepEqual(stanzaError(nobody), { type: 'cancel', condition: 'service-unavailable', by: undefined }, 'the same as for an account that exists without one');

  ok(t, await iq(bob, 'set', `<vCard xmlns='${NS_VCARD}'><FN>Bob</FN></vCard>`), "bob's set");
  const from = bob.c.items.length;
  const got = await getVcard(alice, bob.bare);
  ok(t, got, "alice reads bob's");
  t.is(fn(got), 'Bob');
  t.is(got.attrs.from, bob.bare);
  t.is(bob.c.items.slice(from).filter((it) => it.kind === 'el' && it.el.name === 'iq').length, 0, "the server answered; bob's client saw nothing");

  const forged = await iq(alice, 'set', `<vCard xmlns='${NS_VCARD}'><FN>Not Bob</FN></vCard>`, bob.bare);
  t.is(forged.attrs.type, 'error');
  t.deepEqual(stanzaError(forged), { type: 'auth', condition: 'forbidden', by: undefined });
  t.is(fn(await getVcard(alice, bob.bare)), 'Bob', 'unchanged');
});

test('a vCard with a photo is kept with its binary as sent; one larger than the limit is refused with not-acceptable', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const photo = randomBytes(2000);
  const b64 = photo.toString('base64').replace(/.{76}/g, '$&\n');
  ok(t, await iq(alice, 'set', `<vCard xmlns='${NS_VCARD}'><FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>${b64}</BINVAL></PHOTO></vCard>`), 'set with a photo');
  const binval = (await getVcard(alice)).getChild('vCard', NS_VCARD)!.getChild('PHOTO')!.getChildText('BINVAL')!;
  t.is(createHash('sha1').update(Buffer.from(binval.replace(/\s+/g, ''), 'base64')).digest('hex'), createHash('sha1').update(photo).digest('hex'), 'the same image');

  const big = randomBytes(Math.ceil((MAX_VCARD_BYTES * 3) / 4) + 100).toString('base64');
  const refused = await iq(alice, 'set', `<vCard xmlns='${NS_VCARD}'><PHOTO><TYPE>image/png</TYPE><BINVAL>${big}</BINVAL></PHOTO></vCard>`);
  t.is(refused.attrs.type, 'error');
  t.deepEqual(stanzaError(refused), { type: 'modify', condition: 'not-acceptable', by: undefined });
  t.is(fn(await getVcard(alice)), 'A', 'the one before is kept');
});

test("disco#info: the server lists vcard-temp (§4); a payload other than <vCard/> is a bad request", async (t) => {
  const alice = await newUser(t, server, 'alice');
  const id = uid('disco');
  const res = await within(alice.c.request(`<iq type='get' id='${id}' to='${server.config.domain}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, id), WAIT, 'disco');
  t.true(res.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === NS_VCARD));
  const bad = await iq(alice, 'get', `<card xmlns='${NS_VCARD}'/>`);
  t.is(stanzaError(bad).condition, 'bad-request');
});

test('the vCard is kept across logins (on either worker) and goes with the account', async (t) => {
  const name = fresh('carol');
  await server.addUser(name, `${name}-pw`);
  const first = await connect(t, server.c2sPort, name, 'one');
  ok(t, await iq(first, 'set', `<vCard xmlns='${NS_VCARD}'><FN>Carol</FN></vCard>`), 'set');
  first.c.destroy();
  // Two workers: logins go to either; each reads the stored vCard.
  for (const r of ['two', 'three']) {
    const p = await connect(t, server.c2sPort, name, r);
    t.is(fn(await getVcard(p)), 'Carol', `login ${r}`);
  }
  const last = await connect(t, server.c2sPort, name, 'four');
  const id = uid('unreg');
  const removed = await within(last.c.request(`<iq type='set' id='${id}'><query xmlns='jabber:iq:register'><remove/></query></iq>`, id), WAIT, 'in-band removal');
  t.is(removed.attrs.type, 'result', removed.toString());
  await server.addUser(name, `${name}-pw`);
  const again = await connect(t, server.c2sPort, name, 'five');
  const v = (await getVcard(again)).getChild('vCard', NS_VCARD)!;
  t.is(v.children.length, 0, 'a new account of the same name starts with none');
});
