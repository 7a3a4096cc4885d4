// Federation between two servers of our own (RFC 6120 server-to-server
// streams), each with a certificate for its domain from a test CA that both
// trust: the streams are secured with STARTTLS and authenticated with SASL
// EXTERNAL (XEP-0178). Messages both ways, to full and bare JIDs; iq across
// (ping, disco, version); a subscription between users of the two servers
// with presence, probes at login and unavailable at logout; and a peer that
// goes away.
import test from 'ava';
import type { Element } from 'ltx';
import { testCa, issue } from '../helpers/pki.ts';
import { federation } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uid, within, stanzaError } from '../helpers/protocol.ts';
import { WAIT, barrier, connect, expect, isBody, isPresence, newUser, push, ready } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { runLoad } from '../load/run.ts';

const pki = mkdtempSync(join(tmpdir(), 'xmpp-s2s-pki-'));
const ca = testCa(pki, 'federation-ca');
let a: Federated;
let b: Federated;
let stop: () => Promise<void>;

test.before(async () => {
  const f = await federation(
    [
      { domain: 'a.example', cert: issue(pki, ca, 'a.example', { dns: ['a.example'] }) },
      { domain: 'b.example', cert: issue(pki, ca, 'b.example', { dns: ['b.example'] }) },
    ],
    { env: { XMPP_TLS_CA: ca.cert } },
  );
  [a, b] = f.servers;
  stop = f.stop;
});
test.after.always(async () => {
  await stop?.();
  rmSync(pki, { recursive: true, force: true });
});

const user = (t: import('ava').ExecutionContext, s: Federated, base: string, resource = 'r') => newUser(t, s.server, base, resource);

async function iq(p: Peer, to: string, payload: string, type = 'get'): Promise<Element> {
  const id = uid('iq');
  return within(p.c.request(`<iq type='${type}' id='${id}' to='${to}'>${payload}</iq>`, id), WAIT, `${p.jid}: iq to ${to}`);
}

test('messages go both ways, to full and bare JIDs, with the sender stamped', async (t) => {
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  alice.c.send(`<message to='${bob.jid}' type='chat' id='m1'><body>hello bob</body></message>`);
  const got = await expect(bob, 'the message from a.example', isBody('hello bob'));
  t.is(got.attrs.from, alice.jid);
  t.is(got.attrs.to, bob.jid);
  t.is(got.attrs.id, 'm1');
  bob.c.send(`<message to='${alice.bare}' type='chat'><body>hello alice</body></message>`);
  const back = await expect(alice, 'the answer from b.example', isBody('hello alice'));
  t.is(back.attrs.from, bob.jid);
});

test('iq across: ping, disco and version of the peer server and of a remote account', async (t) => {
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  t.is((await iq(alice, 'b.example', "<ping xmlns='urn:xmpp:ping'/>")).attrs.type, 'result');
  t.is((await iq(alice, bob.bare, "<ping xmlns='urn:xmpp:ping'/>")).attrs.type, 'result');
  const info = await iq(alice, 'b.example', "<query xmlns='http://jabber.org/protocol/disco#info'/>");
  t.is(info.attrs.type, 'result');
  t.is(info.attrs.from, 'b.example');
  t.true(info.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === 'urn:xmpp:ping'));
  const version = await iq(bob, 'a.example', "<query xmlns='jabber:iq:version'/>");
  t.is(version.getChild('query')?.getChildText('name'), 'xmpp-server');
  // A payload nobody answers between servers: service-unavailable, back over the other stream.
  const refused = await iq(alice, 'b.example', "<query xmlns='jabber:iq:roster'/>");
  t.is(stanzaError(refused).condition, 'service-unavailable');
  // An iq to a full JID goes to that session, and its answer comes back.
  const id = uid('direct');
  alice.c.send(`<iq type='get' id='${id}' to='${bob.jid}'><query xmlns='jabber:iq:version'/></iq>`);
  const asked = await expect(bob, 'the iq from alice', (el) => el.name === 'iq' && el.attrs.id === id);
  t.is(asked.attrs.from, alice.jid);
  bob.c.send(`<iq type='result' id='${id}' to='${alice.jid}'/>`);
  t.is((await expect(alice, "bob's answer", (el) => el.name === 'iq' && el.attrs.id === id)).attrs.from, bob.jid);
});

test('an unknown account on the peer server: the error comes back', async (t) => {
  const alice = await user(t, a, 'alice');
  const id = uid('nobody');
  alice.c.send(`<iq type='get' id='${id}' to='nobody-here@b.example/x'><ping xmlns='urn:xmpp:ping'/></iq>`);
  const err = await expect(alice, 'the error from b.example', (el) => el.name === 'iq' && el.attrs.id === id);
  t.is(err.attrs.type, 'error');
  t.is(err.attrs.from, 'nobody-here@b.example/x');
  t.is(stanzaError(err).condition, 'service-unavailable');
});

test('a subscription across servers: roster states, presence both ways, probes at login, unavailable at logout', async (t) => {
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  // Alice asks (RFC 6121 §3.1): her roster shows the pending request, bob gets it.
  let af = alice.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  af = await push(t, alice, bob.bare, 'none', 'subscribe', af);
  const req = await expect(bob, 'the request', isPresence(alice.bare, 'subscribe'));
  t.is(req.attrs.to, bob.bare);
  // Bob approves: alice gets the approval, her roster says 'to', and bob's presence follows (§3.1.5).
  let bf = bob.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  bf = await push(t, bob, alice.bare, 'from', undefined, bf);
  await expect(alice, 'the approval', isPresence(bob.bare, 'subscribed'), af);
  af = await push(t, alice, bob.bare, 'to', undefined, af);
  await expect(alice, "bob's presence after approving", isPresence(bob.jid), af);
  // And the other way, so that both see each other.
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, "bob's request", isPresence(bob.bare, 'subscribe'), af);
  alice.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  await push(t, bob, alice.bare, 'both', undefined, bf);
  await expect(bob, "alice's presence after approving", isPresence(alice.jid), bf);
  // A presence change reaches the subscriber on the other server.
  const bf2 = bob.c.items.length;
  alice.c.send(`<presence><show>away</show></presence>`);
  const away = await expect(bob, "alice's new presence", (el) => isPresence(alice.jid)(el) && el.getChildText('show') === 'away', bf2);
  t.is(away.attrs.to, bob.bare);
  // A second resource of bob's logs in: its probe brings alice's presence (§4.3).
  const bob2 = await newUserAs(t, b, bob.name, 'second');
  await expect(bob2, "alice's presence, probed at login", (el) => isPresence(alice.jid)(el) && el.getChildText('show') === 'away');
  // Alice logs out: both of bob's resources see her go (§4.5).
  const f1 = bob.c.items.length;
  const f2 = bob2.c.items.length;
  alice.c.send('</stream:stream>');
  await expect(bob, 'alice unavailable', isPresence(alice.jid, 'unavailable'), f1);
  await expect(bob2, 'alice unavailable', isPresence(alice.jid, 'unavailable'), f2);
  await barrier(bob, f1);
});

/** Another session of an existing account, ready (roster and initial presence). */
async function newUserAs(t: import('ava').ExecutionContext, s: Federated, name: string, resource: string): Promise<Peer> {
  const p = await connect(t, s.server.c2sPort, name, resource, `${name}/${resource} logging in`, s.domain);
  await ready(p);
  return p;
}

test('directed presence to a remote JID, and its unavailable when the session ends', async (t) => {
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  const from = bob.c.items.length;
  alice.c.send(`<presence to='${bob.jid}'><status>just to you</status></presence>`);
  const p = await expect(bob, 'the directed presence', (el) => isPresence(alice.jid)(el) && el.getChildText('status') === 'just to you', from);
  t.is(p.attrs.to, bob.jid);
  alice.c.destroy();
  await expect(bob, 'unavailable after the session ended', isPresence(alice.jid, 'unavailable'), from);
});

test('the load tool across servers (chat --remote-domain): every message crosses the s2s connection and is delivered once', async (t) => {
  // The same accounts on both servers, as the load tool expects.
  for (let i = 1; i <= 6; i++) {
    await a.server.addUser(`fed${i}`, 'password');
    await b.server.addUser(`fed${i}`, 'password');
  }
  const r = await runLoad(['chat', '--port', String(a.server.c2sPort), '--domain', 'a.example', '--remote-domain', 'b.example', '--remote-port', String(b.server.c2sPort), '--user-prefix', 'fed', '--users', '6', '--rate', '10', '--count', '200', '--duration', '30', '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(r.json.sent, 200);
  t.is(r.json.delivered, 200);
  t.deepEqual(r.json.errors, {});
});

test('removing a contact of the other server, and then an account: the other server applies the cancellations (RFC 6121 §2.5.2)', async (t) => {
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  const carol = await user(t, b, 'carol');
  // alice ⇄ bob and alice ⇄ carol, both ways.
  for (const other of [bob, carol]) {
    const af = alice.c.items.length;
    alice.c.send(`<presence to='${other.bare}' type='subscribe'/>`);
    await expect(other, 'the request', isPresence(alice.bare, 'subscribe'));
    other.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
    await push(t, alice, other.bare, 'to', undefined, af);
    other.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
    await expect(alice, 'the request back', isPresence(other.bare, 'subscribe'), af);
    const of = other.c.items.length;
    alice.c.send(`<presence to='${other.bare}' type='subscribed'/>`);
    await push(t, other, alice.bare, 'both', undefined, of);
  }
  // alice removes bob's item: bob's server hears unsubscribe and unsubscribed, and bob's roster says none.
  let bf = bob.c.items.length;
  const id = uid('remove');
  alice.c.send(`<iq type='set' id='${id}'><query xmlns='jabber:iq:roster'><item jid='${bob.bare}' subscription='remove'/></query></iq>`);
  await expect(bob, 'unsubscribe from alice', isPresence(alice.bare, 'unsubscribe'), bf);
  await expect(bob, 'unsubscribed from alice', isPresence(alice.bare, 'unsubscribed'), bf);
  bf = await push(t, bob, alice.bare, 'none', undefined, bf);
  // alice deletes her account (XEP-0077 §3.2): carol's server hears the same, and carol sees alice go.
  const cf = carol.c.items.length;
  alice.c.send(`<iq type='set' id='${uid('unregister')}'><query xmlns='jabber:iq:register'><remove/></query></iq>`);
  await expect(carol, 'unavailable from alice', isPresence(alice.jid, 'unavailable'), cf);
  await expect(carol, 'unsubscribe from the removed account', isPresence(alice.bare, 'unsubscribe'), cf);
  await expect(carol, 'unsubscribed from the removed account', isPresence(alice.bare, 'unsubscribed'), cf);
  await push(t, carol, alice.bare, 'none', undefined, cf);
  await barrier(bob, bf);
});

test('messages to and from another server are archived (XEP-0313) on our side; stanza ids forged in either server’s name are removed', async (t) => {
  const NS_SID = 'urn:xmpp:sid:0';
  const NS_MAM = 'urn:xmpp:mam:2';
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  const from = bob.c.items.length;
  alice.c.send(
    `<message to='${bob.bare}' type='chat'><body>archived across</body><stanza-id xmlns='${NS_SID}' id='f1' by='${bob.bare}'/><stanza-id xmlns='${NS_SID}' id='f2' by='${alice.bare}'/></message>`,
  );
  const got = await expect(bob, 'the message', isBody('archived across'), from);
  const sids = got.getChildren('stanza-id', NS_SID);
  t.is(sids.length, 1, 'a.example removed the id claiming its own user, b.example the one claiming its own');
  t.is(sids[0].attrs.by, bob.bare);
  t.not(sids[0].attrs.id, 'f1');
  const bodies = async (p: Peer) => {
    const id = uid('mam');
    const start = p.c.items.length;
    const res = await within(p.c.request(`<iq type='set' id='${id}'><query xmlns='${NS_MAM}'/></iq>`, id), WAIT, `${p.jid}: archive`);
    t.is(res.attrs.type, 'result');
    return p.c.items.slice(start).flatMap((it) => (it.kind === 'el' && it.el.getChild('result', NS_MAM) ? [it.el.getChild('result', NS_MAM)!] : []));
  };
  // The sender's copy, written by the sender's worker (its query waits for that worker's writes).
  const mine = await bodies(alice);
  t.is(mine.length, 1);
  const out = mine[0].getChild('forwarded', 'urn:xmpp:forward:0')!.getChild('message')!;
  t.is(out.attrs.to, bob.bare);
  t.is(out.getChildText('body'), 'archived across');
  // The recipient's copy was written by the worker that took the peer's stream: it lands within a
  // database round trip; asked again until it shows, within a bound.
  let theirs: Element[] = [];
  for (let i = 0; i < 50 && theirs.length === 0; i++) theirs = await bodies(bob);
  t.is(theirs.length, 1);
  t.is(theirs[0].attrs.id, sids[0].attrs.id, 'the archive id the message carried');
  t.is(theirs[0].getChild('forwarded', 'urn:xmpp:forward:0')!.getChild('message')!.attrs.from, alice.jid);
});

test('blocking (XEP-0191 §5.3) across servers: from a blocked remote JID messages and iq come back service-unavailable, presence is dropped; to it, not-acceptable with <blocked/>', async (t) => {
  const NS_BLOCKING = 'urn:xmpp:blocking';
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  const blocked = await iq(alice, alice.bare, `<block xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></block>`, 'set');
  t.is(blocked.attrs.type, 'result');
  // Inbound, over the s2s stream: the error comes back over the other stream, without <blocked/>.
  const start = bob.c.items.length;
  bob.c.send(`<message to='${alice.bare}' type='chat' id='blk1'><body>let me in</body></message>`);
  const back = await expect(bob, 'the error', (el) => el.name === 'message' && el.attrs.id === 'blk1' && el.attrs.type === 'error', start);
  t.is(stanzaError(back).condition, 'service-unavailable');
  t.is(back.getChild('error')?.getChild('blocked', 'urn:xmpp:blocking:errors'), undefined, 'the block is not revealed');
  const ping = await iq(bob, alice.bare, "<ping xmlns='urn:xmpp:ping'/>");
  t.is(stanzaError(ping).condition, 'service-unavailable');
  // Presence from the blocked JID, and the message, never reach alice.
  bob.c.send(`<presence to='${alice.jid}'/>`);
  const seen = await barrier(alice, 0);
  t.false(seen.some((el) => el.attrs.from?.startsWith(bob.bare)), 'nothing from bob reached alice');
  // Outbound: refused at home with <blocked/>.
  const out = alice.c.items.length;
  alice.c.send(`<message to='${bob.jid}' type='chat' id='blk2'><body>nor you out</body></message>`);
  const refused = await expect(alice, 'the refusal', (el) => el.attrs.id === 'blk2' && el.attrs.type === 'error', out);
  t.is(stanzaError(refused).condition, 'not-acceptable');
  t.truthy(refused.getChild('error')?.getChild('blocked', 'urn:xmpp:blocking:errors'));
});

test('blocking one resource (a full JID) of a subscriber on the other server sends unavailable to that resource only; unblocking it, the current presence (XEP-0191 §5.3, §5.4)', async (t) => {
  const NS_BLOCKING = 'urn:xmpp:blocking';
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob', 'phone');
  // bob subscribes to alice's presence and she approves.
  const bf = bob.c.items.length;
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, "bob's request", isPresence(bob.bare, 'subscribe'));
  alice.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  await expect(bob, "alice's presence after approving", isPresence(alice.jid), bf);
  const bob2 = await newUserAs(t, b, bob.name, 'desk');
  await expect(bob2, "alice's presence, probed at login", isPresence(alice.jid));
  const [f1, f2] = [bob.c.items.length, bob2.c.items.length];
  t.is((await iq(alice, alice.bare, `<block xmlns='${NS_BLOCKING}'><item jid='${bob.jid}'/></block>`, 'set')).attrs.type, 'result');
  const gone = await expect(bob, "alice's unavailable presence at the blocked resource", isPresence(alice.jid, 'unavailable'), f1);
  t.is(gone.attrs.to, bob.jid, 'addressed to the blocked resource itself');
  t.false((await barrier(bob2, f2)).some(isPresence(alice.jid, 'unavailable')), 'the other resource still sees alice');
  const g1 = bob.c.items.length;
  t.is((await iq(alice, alice.bare, `<unblock xmlns='${NS_BLOCKING}'><item jid='${bob.jid}'/></unblock>`, 'set')).attrs.type, 'result');
  const back = await expect(bob, "alice's current presence at the unblocked resource", isPresence(alice.jid), g1);
  t.is(back.attrs.to, bob.jid);
});

test('the user removes a contact of the other server it blocked: the cancellations go all the same, and that server applies them (XEP-0191 §5.3 and RFC 6121 §2.5.2, as for a contact here)', async (t) => {
  const NS_BLOCKING = 'urn:xmpp:blocking';
  const alice = await user(t, a, 'alice');
  const bob = await user(t, b, 'bob');
  let af = alice.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='subscribe'/>`);
  await expect(bob, 'the request', isPresence(alice.bare, 'subscribe'));
  bob.c.send(`<presence to='${alice.bare}' type='subscribed'/>`);
  await push(t, alice, bob.bare, 'to', undefined, af);
  bob.c.send(`<presence to='${alice.bare}' type='subscribe'/>`);
  await expect(alice, 'the request back', isPresence(bob.bare, 'subscribe'), af);
  let bf = bob.c.items.length;
  alice.c.send(`<presence to='${bob.bare}' type='subscribed'/>`);
  bf = await push(t, bob, alice.bare, 'both', undefined, bf);
  t.is((await iq(alice, alice.bare, `<block xmlns='${NS_BLOCKING}'><item jid='${bob.bare}'/></block>`, 'set')).attrs.type, 'result');
  af = alice.c.items.length;
  const id = uid('remove');
  alice.c.send(`<iq type='set' id='${id}'><query xmlns='jabber:iq:roster'><item jid='${bob.bare}' subscription='remove'/></query></iq>`);
  await expect(alice, 'the removal answered', (el) => el.name === 'iq' && el.attrs.id === id && el.attrs.type === 'result', af);
  await expect(bob, 'unsubscribe from alice', isPresence(alice.bare, 'unsubscribe'), bf);
  await expect(bob, 'unsubscribed from alice', isPresence(alice.bare, 'unsubscribed'), bf);
  await push(t, bob, alice.bare, 'none', undefined, bf);
});
