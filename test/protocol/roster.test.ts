import test from 'ava';
import type { Element } from 'ltx';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { online, authenticated, uid, within, stanzaError } from '../helpers/protocol.ts';
import type { RawClient } from '../helpers/raw.ts';

const NS = 'jabber:iq:roster';
let server: TestServer;
test.before(async () => {
  server = await startTestServer({});
  for (const u of ['alice', 'bob']) await server.addUser(u, `${u}-pw`);
});
test.after.always(async () => { await server?.stop(); });

const req = (c: RawClient, xml: (id: string) => string) => { const id = uid('r'); return within(c.request(xml(id), id), 5000, id); };

test('stream feature ver', async (t) => {
  const { c, features } = await authenticated(server.c2sPort, 'bob', 'bob-pw');
  t.truthy(features.getChild('ver', 'urn:xmpp:features:rosterver'));
  c.destroy();
});

test('get, set, push to interested resources only, versioning, forbidden', async (t) => {
  const a1 = await online(server.c2sPort, 'alice', 'alice-pw', 'one');
  const a2 = await online(server.c2sPort, 'alice', 'alice-pw', 'two');
  const b = await online(server.c2sPort, 'bob', 'bob-pw', 'b');
  t.teardown(() => { a1.c.destroy(); a2.c.destroy(); b.c.destroy(); });
  const r0 = await req(a1.c, (id) => `<iq type='get' id='${id}'><query xmlns='${NS}'/></iq>`);
  t.is(r0.attrs.type, 'result');
  const ver0 = r0.getChild('query')!.attrs.ver;
  t.is(ver0, '0');
  const start1 = a1.c.items.length;
  const pushed = a1.c.find((el: Element) => el.name === 'iq' && el.attrs.type === 'set' && !!el.getChild('query', NS), start1);
  const r1 = await req(a1.c, (id) => `<iq type='set' id='${id}'><query xmlns='${NS}'><item jid='carol@example.com' name='Carol'><group>G</group></item></query></iq>`);
  t.is(r1.attrs.type, 'result');
  const p = await within(pushed, 5000, 'push');
  t.is(p.attrs.to, a1.jid);
  t.false('from' in p.attrs, 'a roster push carries no from (RFC 6121 §2.1.6)');
  const ver1 = p.getChild('query')!.attrs.ver;
  t.not(ver1, ver0);
  t.is(p.getChild('query')!.getChild('item')!.attrs.jid, 'carol@example.com');
  a1.c.send(`<iq type='result' id='${p.attrs.id}'/>`);
  // a2 is not interested: a ping round trip, then nothing roster-ish received
  await req(a2.c, (id) => `<iq type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
  t.false(a2.c.items.some((i) => i.kind === 'el' && i.el.attrs.type === 'set' && !!i.el.getChild('query', NS)));
  // versioning
  t.is((await req(a2.c, (id) => `<iq type='get' id='${id}'><query xmlns='${NS}' ver='${ver1}'/></iq>`)).children.length, 0);
  const full = await req(a2.c, (id) => `<iq type='get' id='${id}'><query xmlns='${NS}' ver='${ver0}'/></iq>`);
  t.is(full.getChild('query')!.getChildren('item').length, 1);
  // now both interested
  const s1 = a1.c.items.length, s2 = a2.c.items.length;
  const isPush = (el: Element) => el.name === 'iq' && el.attrs.type === 'set' && el.getChild('query', NS)?.getChild('item')?.attrs.subscription === 'remove';
  const p1 = a1.c.find(isPush, s1), p2 = a2.c.find(isPush, s2);
  await req(a2.c, (id) => `<iq type='set' id='${id}'><query xmlns='${NS}'><item jid='carol@example.com' subscription='remove'/></query></iq>`);
  await within(Promise.all([p1, p2]), 5000, 'both pushes');
  // forbidden
  const f = await req(b.c, (id) => `<iq type='get' id='${id}' to='alice@localhost'><query xmlns='${NS}'/></iq>`);
  t.is(stanzaError(f).condition, 'forbidden');
  const nf = await req(a1.c, (id) => `<iq type='set' id='${id}'><query xmlns='${NS}'><item jid='carol@example.com' subscription='remove'/></query></iq>`);
  t.is(stanzaError(nf).condition, 'item-not-found');
});
