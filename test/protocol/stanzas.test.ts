// Stanza handling (RFC 6120 §8, §10; RFC 6121 §8.5): the server stamps
// 'from', routes or bounces with the right stanza error, answers its own
// iq namespaces, and answers every iq get/set exactly once.
import test from 'ava';
import type { Element } from 'ltx';
import { startTestServer } from '../helpers/server.ts';
import type { TestServer } from '../helpers/server.ts';
import type { RawClient } from '../helpers/raw.ts';
import {
  NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, childEls, online, ping, pingIq, stanzaError, uid, within,
} from '../helpers/protocol.ts';

let server: TestServer;
let alice: { c: RawClient; jid: string };
let bob: { c: RawClient; jid: string };

test.before(async () => {
  server = await startTestServer({});
  for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi']) await server.addUser(u, `${u}-pw`);
  alice = await online(server.c2sPort, 'alice', 'alice-pw', 'a');
  bob = await online(server.c2sPort, 'bob', 'bob-pw', 'b');
});
test.after.always(async () => {
  alice?.c.destroy();
  bob?.c.destroy();
  await server?.stop();
});

/** Sends `xml` (carrying id `id`) from `c` and returns the reply with that id. */
function request(c: RawClient, xml: string, id: string): Promise<Element> {
  return within(c.request(xml, id), 5000, `reply to ${id}`);
}

/**
 * Makes `who` available (initial presence, RFC 6121 §4.2), then waits until
 * `sender`'s side of the server routes by it: probe messages to the bare JID
 * bounce while `who` is unavailable and are delivered once it is available.
 */
async function available(who: { c: RawClient; jid: string }, sender: { c: RawClient; jid: string }): Promise<void> {
  who.c.send('<presence/>');
  const bare = who.jid.split('/')[0];
  for (let n = 0; n < 100; n++) {
    const id = uid('probe');
    const from = sender.c.items.length;
    // Not to be stored offline (XEP-0334): until `who` is available it bounces.
    sender.c.send(`<message to='${bare}' id='${id}' type='normal'><body>probe</body><no-store xmlns='urn:xmpp:hints'/></message>`);
    const delivered = await within(
      Promise.race([
        who.c.find((el) => el.attrs.id === id).then(() => true, () => false),
        sender.c.find((el) => el.attrs.id === id, from).then(() => false, () => false),
      ]),
      5000,
      'probe',
    );
    if (delivered) return;
  }
  throw new Error(`${who.jid} never became available`);
}

function checkError(t: import('ava').ExecutionContext, r: Element, name: string, id: string, type: string, condition: string, from?: string): void {
  t.is(r.name, name);
  t.is(r.attrs.type, 'error', r.toString());
  t.is(r.attrs.id, id);
  t.is(r.attrs.to, alice.jid, 'the error goes back to the sender');
  if (from !== undefined) t.is(r.attrs.from, from, 'the error comes from the addressee');
  t.deepEqual(stanzaError(r), { type, condition, by: stanzaError(r).by });
}

test("the server stamps 'from' with the sender's full JID (none, bare or full given)", async (t) => {
  const ids = [uid('none'), uid('bare'), uid('full')];
  alice.c.send(`<message to='${bob.jid}' id='${ids[0]}' type='chat'><body>0</body></message>`);
  alice.c.send(`<message from='alice@localhost' to='${bob.jid}' id='${ids[1]}' type='chat'><body>1</body></message>`);
  alice.c.send(`<message from='${alice.jid}' to='${bob.jid}' id='${ids[2]}' type='chat'><body>2</body></message>`);
  for (const id of ids) {
    const m = await within(bob.c.find((el) => el.attrs.id === id), 5000, id);
    t.is(m.attrs.from, 'alice@localhost/a', id);
    t.is(m.attrs.to, bob.jid);
  }
});

test('UTF-8 split inside 2-, 3- and 4-byte sequences across TCP segments arrives intact', async (t) => {
  // Streams of their own: the pieces of one stanza must not interleave with other tests' stanzas.
  const grace = await online(server.c2sPort, 'grace', 'grace-pw', 'g');
  const heidi = await online(server.c2sPort, 'heidi', 'heidi-pw', 'h');
  t.teardown(() => {
    grace.c.destroy();
    heidi.c.destroy();
  });
  const text = 'two é, three €, four 😀: done';
  const id = uid('utf8');
  const bytes = Buffer.from(`<message to='${heidi.jid}' id='${id}' type='chat'><body>${text}</body></message>`);
  // Cut inside each character: after its first byte, and after every further byte but the last.
  const cuts: number[] = [];
  for (const ch of ['é', '€', '😀']) {
    const at = bytes.indexOf(Buffer.from(ch));
    for (let k = 1; k < Buffer.byteLength(ch); k++) cuts.push(at + k);
  }
  t.is(cuts.length, 1 + 2 + 3);
  const pieces = [0, ...cuts].map((from, i) => bytes.subarray(from, cuts[i] ?? bytes.length));
  t.not(pieces.map((p) => p.toString()).join(''), bytes.toString(), 'decoded piece by piece, the text would be damaged');
  // One write at a time, each handed to the kernel (Nagle off) before the next: separate segments.
  for (const p of pieces) await within(grace.c.write(p), 5000, 'a write');
  const m = await within(heidi.c.find((el) => el.name === 'message' && el.attrs.id === id), 5000, 'the message at heidi');
  t.is(m.attrs.from, grace.jid);
  t.is(m.getChildText('body'), text);
  t.is((await within(ping(grace.c), 5000, 'ping after the split message')).attrs.type, 'result', 'the sender is still served');
});

test('an iq to an online full JID is delivered, and its reply routed back, both stamped', async (t) => {
  const id = uid('iq');
  alice.c.send(`<iq type='get' id='${id}' to='${bob.jid}'><query xmlns='urn:example:custom'/></iq>`);
  const got = await within(bob.c.find((el) => el.name === 'iq' && el.attrs.id === id), 5000, 'iq at bob');
  t.is(got.attrs.from, alice.jid);
  bob.c.send(`<iq type='result' id='${id}' to='${alice.jid}'/>`);
  const r = await within(alice.c.find((el) => el.attrs.id === id), 5000, 'the reply at alice');
  t.is(r.attrs.type, 'result');
  t.is(r.attrs.from, bob.jid);
});

test('a message to an unknown local user → service-unavailable', async (t) => {
  const id = uid('m');
  const r = await request(alice.c, `<message to='nobody@localhost' id='${id}' type='chat'><body>hello?</body></message>`, id);
  checkError(t, r, 'message', id, 'cancel', 'service-unavailable', 'nobody@localhost');
});

test('a message to another domain → remote-server-not-found', async (t) => {
  const id = uid('m');
  const r = await request(alice.c, `<message to='someone@example.org' id='${id}' type='chat'><body>far away</body></message>`, id);
  checkError(t, r, 'message', id, 'cancel', 'remote-server-not-found', 'someone@example.org');
});

test('an iq get to the server with an unknown namespace → service-unavailable', async (t) => {
  const id = uid('iq');
  const r = await request(alice.c, `<iq type='get' id='${id}' to='localhost'><query xmlns='urn:example:unknown'/></iq>`, id);
  checkError(t, r, 'iq', id, 'cancel', 'service-unavailable', 'localhost');
});

test('an iq set on ping → feature-not-implemented', async (t) => {
  const id = uid('iq');
  const r = await request(alice.c, `<iq type='set' id='${id}' to='localhost'><ping xmlns='${NS_PING}'/></iq>`, id);
  checkError(t, r, 'iq', id, 'cancel', 'feature-not-implemented', 'localhost');
});

test('ping to the server, and to an account on its behalf (XEP-0199 §4.2, §4.3)', async (t) => {
  const r1 = await ping(alice.c);
  t.is(r1.attrs.type, 'result');
  t.is(r1.attrs.from, 'localhost');
  t.is(r1.attrs.to, alice.jid);
  t.deepEqual(childEls(r1), []);
  const r2 = await ping(alice.c, 'bob@localhost');
  t.is(r2.attrs.type, 'result');
  t.is(r2.attrs.from, 'bob@localhost');
});

test('disco#info on the server: identity and features', async (t) => {
  const id = uid('disco');
  const r = await request(alice.c, `<iq type='get' id='${id}' to='localhost'><query xmlns='${NS_DISCO_INFO}'/></iq>`, id);
  t.is(r.attrs.type, 'result');
  t.is(r.attrs.from, 'localhost');
  const q = r.getChild('query', NS_DISCO_INFO);
  t.truthy(q);
  const ident = q?.getChild('identity');
  t.is(ident?.attrs.category, 'server');
  t.is(ident?.attrs.type, 'im');
  const features = q?.getChildren('feature').map((f) => f.attrs.var) ?? [];
  for (const f of [NS_PING, NS_VERSION, NS_DISCO_INFO, NS_DISCO_ITEMS]) t.true(features.includes(f), `${f} in ${features.join(' ')}`);
  t.is(new Set(features).size, features.length, 'no feature listed twice');
});

test('disco#info with an unknown node → item-not-found', async (t) => {
  const id = uid('disco');
  const r = await request(alice.c, `<iq type='get' id='${id}' to='localhost'><query xmlns='${NS_DISCO_INFO}' node='no-such-node'/></iq>`, id);
  checkError(t, r, 'iq', id, 'cancel', 'item-not-found', 'localhost');
});

test('the software version query is answered (XEP-0092)', async (t) => {
  const id = uid('ver');
  const r = await request(alice.c, `<iq type='get' id='${id}' to='localhost'><query xmlns='${NS_VERSION}'/></iq>`, id);
  t.is(r.attrs.type, 'result');
  const q = r.getChild('query', NS_VERSION);
  t.truthy(q?.getChildText('name'));
  t.truthy(q?.getChildText('version'));
});

test('an iq without an id → bad-request', async (t) => {
  const { c } = await online(server.c2sPort, 'erin', 'erin-pw', 'noid');
  c.send(`<iq type='get' to='localhost'><ping xmlns='${NS_PING}'/></iq>`);
  const r = await within(c.nextEl('iq'), 5000, 'reply');
  t.is(r.attrs.type, 'error', r.toString());
  t.deepEqual(stanzaError(r), { type: 'modify', condition: 'bad-request', by: stanzaError(r).by });
  c.destroy();
});

for (const [what, payload] of [
  ['two payloads', `<ping xmlns='${NS_PING}'/><query xmlns='${NS_VERSION}'/>`],
  ['no payload', ''],
] as const) {
  test(`an iq get with ${what} → bad-request`, async (t) => {
    const id = uid('iq');
    const r = await request(alice.c, `<iq type='get' id='${id}' to='localhost'>${payload}</iq>`, id);
    checkError(t, r, 'iq', id, 'modify', 'bad-request');
  });
}

for (const [name, to] of [['message', 'a@b@c'], ['iq', '@localhost'], ['message', 'bob@localhost/']] as const) {
  test(`${name === 'iq' ? 'an' : 'a'} ${name} with a malformed to='${to}' → jid-malformed`, async (t) => {
    const id = uid('bad');
    const body = name === 'iq' ? `<iq type='get' id='${id}' to='${to}'><ping xmlns='${NS_PING}'/></iq>` : `<message to='${to}' id='${id}' type='chat'><body>x</body></message>`;
    const r = await request(alice.c, body, id);
    checkError(t, r, name, id, 'modify', 'jid-malformed');
  });
}

test('a message to an offline full JID goes to an available resource of the account (RFC 6121 §8.5.3.2.1)', async (t) => {
  const dave = await online(server.c2sPort, 'dave', 'dave-pw', 'home');
  await available(dave, alice);
  const id = uid('m');
  alice.c.send(`<message to='dave@localhost/gone' id='${id}' type='chat'><body>for any dave</body></message>`);
  const m = await within(dave.c.find((el) => el.attrs.id === id), 5000, 'message at dave/home');
  t.is(m.attrs.from, alice.jid);
  t.is(m.getChildText('body'), 'for any dave');
  dave.c.destroy();
});

test('a message to a bare JID with no available resource, not to be stored → service-unavailable, not delivered', async (t) => {
  // carol is connected and bound, but has sent no presence: not available.
  // The <no-store/> hint (XEP-0334) keeps the message out of offline storage
  // (test/protocol/offline.test.ts covers storage).
  const carol = await online(server.c2sPort, 'carol', 'carol-pw', 'quiet');
  const id = uid('m');
  const r = await request(alice.c, `<message to='carol@localhost' id='${id}' type='chat'><body>are you there?</body><no-store xmlns='urn:xmpp:hints'/></message>`, id);
  checkError(t, r, 'message', id, 'cancel', 'service-unavailable', 'carol@localhost');
  // Also to an offline full JID of that account.
  const id2 = uid('m');
  const r2 = await request(alice.c, `<message to='carol@localhost/elsewhere' id='${id2}' type='chat'><body>?</body><no-store xmlns='urn:xmpp:hints'/></message>`, id2);
  checkError(t, r2, 'message', id2, 'cancel', 'service-unavailable');
  await ping(carol.c);
  t.false(carol.c.items.some((i) => i.kind === 'el' && i.el.name === 'message'), 'carol received nothing');
  carol.c.destroy();
});

test('a headline to a bare JID with no available resource is silently dropped', async (t) => {
  const { c } = await online(server.c2sPort, 'frank', 'frank-pw', 'h');
  c.send(`<message to='carol@localhost' id='hl' type='headline'><body>news</body></message>`);
  c.send(pingIq('after-headline'));
  const next = await within(c.nextEl(), 5000, 'next stanza');
  t.is(next.attrs.id, 'after-headline', `nothing before the ping's answer; got ${next.toString()}`);
  t.is(next.attrs.type, 'result');
  c.destroy();
});

test('every iq get/set gets exactly one reply, in order; result and error iqs get none', async (t) => {
  const { c, jid } = await online(server.c2sPort, 'erin', 'erin-pw', 'count');
  const iqs: [string, string][] = [
    ['ping-server', `<iq type='get' id='ping-server' to='localhost'><ping xmlns='${NS_PING}'/></iq>`],
    ['ping-self-bare', `<iq type='get' id='ping-self-bare' to='erin@localhost'><ping xmlns='${NS_PING}'/></iq>`],
    ['ping-no-to', `<iq type='get' id='ping-no-to'><ping xmlns='${NS_PING}'/></iq>`],
    ['ping-other-bare', `<iq type='get' id='ping-other-bare' to='bob@localhost'><ping xmlns='${NS_PING}'/></iq>`],
    ['version', `<iq type='get' id='version' to='localhost'><query xmlns='${NS_VERSION}'/></iq>`],
    ['disco-info', `<iq type='get' id='disco-info' to='localhost'><query xmlns='${NS_DISCO_INFO}'/></iq>`],
    ['disco-items', `<iq type='get' id='disco-items' to='localhost'><query xmlns='${NS_DISCO_ITEMS}'/></iq>`],
    ['disco-node', `<iq type='get' id='disco-node' to='localhost'><query xmlns='${NS_DISCO_INFO}' node='x'/></iq>`],
    ['unknown-ns', `<iq type='get' id='unknown-ns' to='localhost'><q xmlns='urn:example:x'/></iq>`],
    ['unknown-ns-set', `<iq type='set' id='unknown-ns-set' to='localhost'><q xmlns='urn:example:x'/></iq>`],
    ['unknown-ns-account', `<iq type='get' id='unknown-ns-account' to='bob@localhost'><q xmlns='urn:example:x'/></iq>`],
    ['ping-set', `<iq type='set' id='ping-set' to='localhost'><ping xmlns='${NS_PING}'/></iq>`],
    ['no-user', `<iq type='get' id='no-user' to='nobody@localhost'><ping xmlns='${NS_PING}'/></iq>`],
    ['offline-full', `<iq type='get' id='offline-full' to='bob@localhost/nothere'><ping xmlns='${NS_PING}'/></iq>`],
    ['server-full', `<iq type='get' id='server-full' to='localhost/res'><ping xmlns='${NS_PING}'/></iq>`],
    ['remote', `<iq type='get' id='remote' to='example.org'><ping xmlns='${NS_PING}'/></iq>`],
    ['malformed', `<iq type='get' id='malformed' to='a@b@c'><ping xmlns='${NS_PING}'/></iq>`],
    ['two', `<iq type='get' id='two' to='localhost'><ping xmlns='${NS_PING}'/><ping xmlns='${NS_PING}'/></iq>`],
    ['none', `<iq type='set' id='none' to='localhost'/>`],
    ['bad-type', `<iq type='fetch' id='bad-type' to='localhost'><ping xmlns='${NS_PING}'/></iq>`],
  ];
  const silent = [
    `<iq type='result' id='a-result' to='localhost'/>`,
    `<iq type='error' id='an-error' to='localhost'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
  ];
  c.send(iqs.map(([, x]) => x).join('') + silent.join('') + pingIq('last'));
  const replies: Element[] = [];
  for (;;) {
    const el = await within(c.nextEl(), 5000, 'next reply');
    replies.push(el);
    if (el.attrs.id === 'last') break;
  }
  // Anything late would show up before the answer to one more ping.
  c.send(pingIq('final'));
  for (;;) {
    const el = await within(c.nextEl(), 5000, 'final');
    if (el.attrs.id === 'final') break;
    replies.push(el);
  }
  const ids = replies.map((r) => r.attrs.id);
  t.deepEqual(ids, [...iqs.map(([id]) => id), 'last'], 'one reply per iq get/set, in order, none for result/error');
  for (const r of replies) {
    t.is(r.name, 'iq');
    t.true(r.attrs.type === 'result' || r.attrs.type === 'error', r.toString());
    t.is(r.attrs.to, jid, `reply ${r.attrs.id} addressed to the full JID`);
  }
  const byId = Object.fromEntries(replies.map((r) => [r.attrs.id, r]));
  for (const id of ['ping-server', 'ping-self-bare', 'ping-no-to', 'ping-other-bare', 'version', 'disco-info', 'disco-items']) t.is(byId[id].attrs.type, 'result', id);
  const expectErr: Record<string, string> = {
    'disco-node': 'item-not-found', 'unknown-ns': 'service-unavailable', 'unknown-ns-set': 'service-unavailable',
    'unknown-ns-account': 'service-unavailable', 'ping-set': 'feature-not-implemented', 'no-user': 'service-unavailable',
    'offline-full': 'service-unavailable', 'server-full': 'service-unavailable', remote: 'remote-server-not-found',
    malformed: 'jid-malformed', two: 'bad-request', none: 'bad-request', 'bad-type': 'bad-request',
  };
  for (const [id, cond] of Object.entries(expectErr)) t.is(stanzaError(byId[id]).condition, cond, id);
  c.destroy();
});
