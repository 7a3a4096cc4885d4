// PEP (XEP-0163) with contacts of another server, against a scripted peer
// (helpers/fake-peer.ts) whose every stanza the test writes and reads: the
// peer's users' presence, their clients' answers to our caps queries
// (XEP-0115) and their items requests come in on its stream to us; our
// notifications, last items, questions and answers go out on ours to it.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testCa, issue } from '../helpers/pki.ts';
import { federation, loopbackAddresses } from '../helpers/s2s.ts';
import type { Federated } from '../helpers/s2s.ts';
import { fakePeer } from '../helpers/fake-peer.ts';
import type { FakePeer } from '../helpers/fake-peer.ts';
import type { RawClient } from '../helpers/raw.ts';
import { uid, within } from '../helpers/protocol.ts';
import { WAIT, expect, newUser, push } from '../helpers/im.ts';
import type { Peer } from '../helpers/im.ts';
import { NS_PUBSUB, itemIds, publish } from '../helpers/pep.ts';

const dir = mkdtempSync(join(tmpdir(), 'xmpp-s2s-pep-'));
const ca = testCa(dir, 'pep-ca');
const [ourAddr, peerAddr] = loopbackAddresses(2);
let ours: Federated;
let peer: FakePeer;
let out: RawClient;
let stop: () => Promise<void>;

test.before(async () => {
  const f = await federation([{ domain: 'a.example', cert: issue(dir, ca, 'a.example', { dns: ['a.example'] }) }], {
    addresses: [ourAddr],
    env: { XMPP_TLS_CA: ca.cert },
    extra: { 'peer.example': `${peerAddr}:5269` },
  });
  [ours] = f.servers;
  stop = f.stop;
  peer = await fakePeer({ domain: 'peer.example', address: peerAddr, cert: issue(dir, ca, 'peer.example', { dns: ['peer.example'] }), server: { host: ourAddr, domain: 'a.example' } });
});
test.after.always(async () => {
  await peer?.stop();
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

/** The first stanza our server sent the peer, from index `from` of its stream, that matches. */
const sent = async (what: string, pred: (el: Element) => boolean, from = 0): Promise<Element> => {
  out ??= await peer.outgoing();
  return within(out.find(pred, from), WAIT, `our server to peer.example: ${what}`);
};
/** Where our stream to the peer is now (an index for `sent`). */
const mark = async (): Promise<number> => {
  out ??= await peer.outgoing();
  return out.items.length;
};

/** `me` and `contact` (a user of the peer) share presence both ways (RFC 6121 §3), the peer's side played by the test. */
async function contacts(t: ExecutionContext, me: Peer, contact: string): Promise<void> {
  let f = me.c.items.length;
  me.c.send(`<presence to='${contact}' type='subscribe'/>`);
  f = await push(t, me, contact, 'none', 'subscribe', f);
  await sent('the request', (el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.to === contact);
  peer.incoming.send(`<presence from='${contact}' to='${me.bare}' type='subscribed'/>`);
  f = await push(t, me, contact, 'to', undefined, f);
  peer.incoming.send(`<presence from='${contact}' to='${me.bare}' type='subscribe'/>`);
  await expect(me, "the contact's request", (el) => el.name === 'presence' && el.attrs.type === 'subscribe' && el.attrs.from === contact, f);
  me.c.send(`<presence to='${contact}' type='subscribed'/>`);
  await push(t, me, contact, 'both', undefined, f);
}

test("an items request from a peer's user whose address its server spelt in capitals: prepared before the access model reads the roster (RFC 7622 §3)", async (t) => {
  const alice = await newUser(t, ours.server, 'alice');
  const carol = `carol-${uid('c')}@peer.example`;
  await contacts(t, alice, carol);
  t.is((await publish(alice, 'urn:test:mood', `<mood xmlns='urn:test'>fine</mood>`, { id: 'm1' })).attrs.type, 'result');
  const id = uid('items');
  const from = await mark();
  const shouting = `${carol.replace(/^carol/, 'CAROL')}/Phone`;
  peer.incoming.send(`<iq type='get' id='${id}' from='${shouting}' to='${alice.bare}'><pubsub xmlns='${NS_PUBSUB}'><items node='urn:test:mood'/></pubsub></iq>`);
  const res = await sent('the items answer', (el) => el.name === 'iq' && el.attrs.id === id, from);
  t.is(res.attrs.type, 'result', res.toString());
  t.deepEqual(itemIds(res), ['m1']);
});
