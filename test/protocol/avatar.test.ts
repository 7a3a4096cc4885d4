// XEP-0398 (User Avatar to vCard-Based Avatars Conversion) end to end, over
// real sockets with real TLS: a vCard set with a photo publishes the
// XEP-0084 data and metadata (§3.2), notified once each; an avatar
// published to PEP becomes the vCard's PHOTO (§3.1), which anyone can read;
// the photo hash stamped on the account's available presence, broadcast
// and directed, as §4 says for each shape of <x xmlns='vcard-temp:x:update'/>;
// a session on the other worker stamps the new hash too; the avatar removed
// from either side is removed from the other; the feature on the account
// and the server (§2); nothing bounces back (notifications counted).
import test, { type ExecutionContext } from 'ava';
import type { Element } from 'ltx';
import { createHash, randomBytes } from 'node:crypto';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { uid } from '../helpers/protocol.ts';
import { barrier, connect, expect, isPresence, newUser, ready, subscribe, type Peer } from '../helpers/im.ts';
import { NS_EVENT, eventItemId, iq, isEvent, isEventItem, items, itemIds, publish } from '../helpers/pep.ts';

const NS_VCARD = 'vcard-temp';
const NS_DATA = 'urn:xmpp:avatar:data';
const NS_METADATA = 'urn:xmpp:avatar:metadata';
const NS_UPDATE = 'vcard-temp:x:update';
const FEATURE = 'urn:xmpp:pep-vcard-conversion:0';
const CONTROL = 'urn:test:avatar-control';

let server: TestServer;

test.before(async () => {
  server = await startTestServer({ XMPP_WORKERS: '2' });
});
test.after.always(async () => {
  await server?.stop();
});

/** A PNG-looking image (its signature, then random bytes): its base64, SHA-1 (hex) and size. */
function image(): { b64: string; hash: string; bytes: number } {
  const b = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(600)]);
  return { b64: b.toString('base64'), hash: createHash('sha1').update(b).digest('hex'), bytes: b.length };
}

function ok(t: ExecutionContext, res: Element, what: string): void {
  t.is(res.attrs.type, 'result', `${what}: ${res.toString()}`);
}

const setVcard = (p: Peer, inner: string) => iq(p, 'set', `<vCard xmlns='${NS_VCARD}'>${inner}</vCard>`);
const getVcard = async (p: Peer, to?: string): Promise<Element> => {
  const res = await iq(p, 'get', `<vCard xmlns='${NS_VCARD}'/>`, to);
  if (res.attrs.type !== 'result') throw new Error(res.toString());
  return res.getChild('vCard', NS_VCARD)!;
};
/** The first item of a node, its payload. */
const firstPayload = (res: Element): Element | undefined => res.getChild('pubsub')?.getChild('items')?.getChild('item')?.children.find((c): c is Element => typeof c !== 'string');
/** The photo hash a presence carries: undefined without <x/>, null for an <x/> without <photo/>, else the text. */
const photoOf = (el: Element): string | null | undefined => {
  const x = el.getChild('x', NS_UPDATE);
  if (!x) return undefined;
  const p = x.getChild('photo');
  return p ? p.getText() : null;
};

/**
 * Events of `node` from the owner's bare JID that reached `p` from index
 * `from`: counted once `p` has the notification of a control item published
 * after the action checked (and a barrier behind it), so that what the
 * action caused has come.
 */
async function eventsOf(owner: Peer, p: Peer, node: string, from: number): Promise<Element[]> {
  const id = uid('control');
  const res = await publish(owner, CONTROL, `<c xmlns='urn:test'/>`, { id });
  if (res.attrs.type !== 'result') throw new Error(`control publish: ${res.toString()}`);
  await expect(p, 'the control notification', isEventItem(owner.bare, CONTROL, id), from);
  return (await barrier(p, from)).filter(isEvent(owner.bare, node));
}

test('§2: the conversion feature on the account and on the server', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  for (const [who, to] of [[alice, alice.bare], [bob, alice.bare], [alice, server.config.domain]] as const) {
    const res = await iq(who, 'get', `<query xmlns='http://jabber.org/protocol/disco#info'/>`, to);
    ok(t, res, `disco#info of ${to}`);
    t.true(res.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === FEATURE), `${to}: ${res.toString()}`);
  }
});

test('§3.2: a vCard set with a photo publishes the data, then the metadata, once each; the photo hash goes in presence', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const img = image();
  const from = alice.c.items.length;
  ok(t, await setVcard(alice, `<FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>\n${img.b64.replace(/(.{76})/g, '$1\n')}\n</BINVAL></PHOTO>`), 'vCard set');
  // Published before the vCard set was answered.
  const data = await items(alice, undefined, NS_DATA);
  t.deepEqual(itemIds(data), [img.hash], 'the data item, its id the SHA-1 of the image');
  t.is(firstPayload(data)?.attrs.xmlns, NS_DATA);
  t.is(firstPayload(data)?.getText(), img.b64);
  const meta = await items(alice, undefined, NS_METADATA);
  t.deepEqual(itemIds(meta), [img.hash]);
  const info = firstPayload(meta)?.getChildren('info') ?? [];
  t.is(info.length, 1, 'one <info/>');
  t.deepEqual({ ...info[0].attrs }, { bytes: String(img.bytes), id: img.hash, type: 'image/png' });
  // The owner's resource is notified of each, once; no publish comes back from the vCard written.
  const metaEvents = await eventsOf(alice, alice, NS_METADATA, from);
  t.deepEqual(metaEvents.map(eventItemId), [img.hash], 'one metadata notification');
  t.deepEqual((await barrier(alice, from)).filter(isEvent(alice.bare, NS_DATA)).map(eventItemId), [img.hash], 'one data notification');
  const f = alice.c.items.length;
  alice.c.send('<presence/>');
  t.is(photoOf(await expect(alice, 'its own presence', isPresence(alice.jid), f)), img.hash, '§4: the hash on its presence');

  // The same photo again: nothing new is published.
  const again = alice.c.items.length;
  ok(t, await setVcard(alice, `<FN>Alice again</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>${img.b64}</BINVAL></PHOTO>`), 'the same photo');
  t.deepEqual(await eventsOf(alice, alice, NS_METADATA, again), [], 'the same avatar: no metadata published');

  // §3.2: without a TYPE, one read from the image.
  const other = image();
  ok(t, await setVcard(alice, `<PHOTO><BINVAL>${other.b64}</BINVAL></PHOTO>`), 'a photo without TYPE');
  t.is(firstPayload(await items(alice, undefined, NS_METADATA))?.getChild('info')?.attrs.type, 'image/png');
  // Not a valid photo (no base64 in it): its hash is none, and so is the avatar.
  ok(t, await setVcard(alice, `<PHOTO><TYPE>image/png</TYPE><BINVAL>***</BINVAL></PHOTO>`), 'an invalid photo');
  t.is(firstPayload(await items(alice, undefined, NS_METADATA))?.children.length, 0, 'an empty <metadata/>');
});

test('§3.1: an avatar published to PEP becomes the vCard PHOTO; §4: the hash on broadcast and directed presence, as each shape of <x/> asks', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const bob = await newUser(t, server, 'bob');
  await subscribe(bob, alice);
  ok(t, await setVcard(alice, `<FN>Alice</FN><NICKNAME>al</NICKNAME>`), 'a vCard without photo');
  // Alice's other sessions, logged in before the avatar (and so on both workers): each stamps the new hash after.
  const others: Peer[] = [];
  for (const r of ['second', 'third', 'fourth']) {
    const p = await connect(t, server.c2sPort, alice.name, r);
    await ready(p);
    others.push(p);
  }
  const img = image();
  const from = alice.c.items.length;
  ok(t, await publish(alice, NS_DATA, `<data xmlns='${NS_DATA}'>${img.b64}</data>`, { id: img.hash }), 'data publish');
  ok(t, await publish(alice, NS_METADATA, `<metadata xmlns='${NS_METADATA}'><info bytes='${img.bytes}' id='${img.hash}' type='image/png' url='https://example.org/a.png'/><info bytes='${img.bytes}' id='${img.hash}' type='image/png'/></metadata>`, { id: img.hash }), 'metadata publish');
  // Read by a contact, written before the publish was answered: the photo, the rest of the vCard as it was.
  const v = await getVcard(bob, alice.bare);
  t.is(v.getChild('PHOTO')?.getChildText('TYPE'), 'image/png');
  t.is(v.getChild('PHOTO')?.getChildText('BINVAL'), img.b64);
  t.is(v.getChildText('NICKNAME'), 'al', 'the rest of the vCard kept');
  t.is(createHash('sha1').update(Buffer.from(v.getChild('PHOTO')!.getChildText('BINVAL')!, 'base64')).digest('hex'), img.hash);
  // One notification of each publish: the vCard written does not publish again.
  t.deepEqual((await eventsOf(alice, alice, NS_METADATA, from)).map(eventItemId), [img.hash], 'one metadata notification');
  t.deepEqual((await barrier(alice, from)).filter(isEvent(alice.bare, NS_DATA)).map(eventItemId), [img.hash], 'one data notification');

  const sent = async (who: Peer, stanza: string, seenFrom: string): Promise<Element> => {
    const f = bob.c.items.length;
    who.c.send(stanza);
    return expect(bob, `${who.jid}'s presence ${stanza}`, isPresence(seenFrom), f);
  };
  t.is(photoOf(await sent(alice, '<presence/>', alice.jid)), img.hash, 'none: the hash added');
  for (const p of others) t.is(photoOf(await sent(p, '<presence><show>away</show></presence>', p.jid)), img.hash, `from ${p.jid}, logged in before the change`);
  t.is(photoOf(await sent(alice, `<presence><x xmlns='${NS_UPDATE}'/></presence>`, alice.jid)), img.hash, 'an <x/> without <photo/>: overwritten');
  t.is(photoOf(await sent(alice, `<presence><x xmlns='${NS_UPDATE}'><photo/></x></presence>`, alice.jid)), '', 'an empty <photo/>: left as it is');
  t.is(photoOf(await sent(alice, `<presence><x xmlns='${NS_UPDATE}'><photo>${'0'.repeat(40)}</photo></x></presence>`, alice.jid)), img.hash, 'another hash: the stored one');
  const directed = await sent(alice, `<presence to='${bob.jid}'/>`, alice.jid);
  t.is(photoOf(directed), img.hash, 'directed presence too');
  t.is(directed.getChildren('x', NS_UPDATE).length, 1, 'one <x/>');

  // A metadata whose data is not this account's (or does not match its id) changes nothing.
  const stray = image();
  ok(t, await publish(alice, NS_METADATA, `<metadata xmlns='${NS_METADATA}'><info bytes='1' id='${stray.hash}' type='image/png'/></metadata>`, { id: stray.hash }), 'metadata of no data');
  t.is((await getVcard(alice)).getChild('PHOTO')?.getChildText('BINVAL'), img.b64);
});

test('removal: an empty <metadata/> (XEP-0084) takes the PHOTO out of the vCard; a vCard without photo publishes an empty <metadata/>; presence says no avatar', async (t) => {
  const alice = await newUser(t, server, 'alice');
  const img = image();
  ok(t, await setVcard(alice, `<FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>${img.b64}</BINVAL></PHOTO>`), 'vCard with photo');
  // From PEP: disabled.
  let from = alice.c.items.length;
  ok(t, await publish(alice, NS_METADATA, `<metadata xmlns='${NS_METADATA}'/>`, { id: 'none' }), 'empty metadata');
  const v = await getVcard(alice);
  t.is(v.getChild('PHOTO'), undefined, 'no PHOTO');
  t.is(v.getChildText('FN'), 'A');
  t.is((await eventsOf(alice, alice, NS_METADATA, from)).length, 1, 'the removal alone is notified');
  let f = alice.c.items.length;
  alice.c.send('<presence/>');
  t.is(photoOf(await expect(alice, 'its presence', isPresence(alice.jid), f)), '', 'no avatar: an empty <photo/>');

  // From the vCard: set again, then removed.
  ok(t, await setVcard(alice, `<FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>${img.b64}</BINVAL></PHOTO>`), 'vCard with photo again');
  t.deepEqual(itemIds(await items(alice, undefined, NS_METADATA)), [img.hash]);
  from = alice.c.items.length;
  ok(t, await setVcard(alice, `<FN>A</FN>`), 'vCard without photo');
  const meta = firstPayload(await items(alice, undefined, NS_METADATA));
  t.is(meta?.name, 'metadata');
  t.is(meta?.children.length, 0, 'an empty <metadata/>');
  const events = await eventsOf(alice, alice, NS_METADATA, from);
  t.is(events.length, 1, 'one notification');
  t.is(events[0].getChild('event', NS_EVENT)!.getChild('items')!.getChild('item')!.getChild('metadata', NS_METADATA)!.children.length, 0);
  // A vCard without photo again: PEP already says none, nothing is published.
  from = alice.c.items.length;
  ok(t, await setVcard(alice, `<FN>B</FN>`), 'still no photo');
  t.deepEqual(await eventsOf(alice, alice, NS_METADATA, from), []);
  f = alice.c.items.length;
  alice.c.send('<presence/>');
  t.is(photoOf(await expect(alice, 'its presence', isPresence(alice.jid), f)), '');
});

/** A second session of `p`'s account, on the other worker than p's. */
async function onOtherWorker(t: ExecutionContext, p: Peer): Promise<Peer> {
  const workerOf = (x: Peer) => server.hub.registry.lookup(x.jid)?.worker;
  for (let i = 0; i < 20; i++) {
    const q = await connect(t, server.c2sPort, p.name, `other${i}`);
    if (workerOf(q) !== undefined && workerOf(q) !== workerOf(p)) {
      await ready(q);
      return q;
    }
    q.c.destroy();
  }
  throw new Error(`20 logins of ${p.name}, none on another worker than ${p.jid}'s`);
}

/** The SHA-1 of the vCard's photo ('' for none), and the id its newest metadata points to ('' for an empty one, or none). */
async function bothSides(p: Peer): Promise<{ vcard: string; pep: string; fn: string | null }> {
  const v = await getVcard(p);
  const binval = v.getChild('PHOTO')?.getChildText('BINVAL');
  const meta = (await items(p, undefined, NS_METADATA)).getChild('pubsub')?.getChild('items')?.getChildren('item').at(-1)?.getChild('metadata', NS_METADATA);
  return { vcard: binval ? createHash('sha1').update(Buffer.from(binval, 'base64')).digest('hex') : '', pep: meta?.getChild('info')?.attrs.id ?? '', fn: v.getChildText('FN') };
}

test('two devices on two workers publishing avatars at the same time: the vCard ends with the avatar PEP ends with', async (t) => {
  const desk = await newUser(t, server, 'alice');
  const phone = await onOtherWorker(t, desk);
  // The data node keeps both images of a round (one item by default).
  const options = { 'pubsub#max_items': '4' };
  for (let round = 0; round < 8; round++) {
    const [a, b] = [image(), image()];
    ok(t, await publish(desk, NS_DATA, `<data xmlns='${NS_DATA}'>${a.b64}</data>`, { id: a.hash, options }), 'data a');
    ok(t, await publish(phone, NS_DATA, `<data xmlns='${NS_DATA}'>${b.b64}</data>`, { id: b.hash, options }), 'data b');
    const meta = (p: Peer, img: ReturnType<typeof image>) => publish(p, NS_METADATA, `<metadata xmlns='${NS_METADATA}'><info bytes='${img.bytes}' id='${img.hash}' type='image/png'/></metadata>`, { id: img.hash });
    // Each answered once its conversion is done.
    for (const res of await Promise.all([meta(desk, a), meta(phone, b)])) ok(t, res, 'metadata');
    const now = await bothSides(desk);
    t.true([a.hash, b.hash].includes(now.pep), `round ${round}: PEP says one of the two`);
    t.is(now.vcard, now.pep, `round ${round}: the vCard's photo is PEP's avatar`);
  }
});

test("a vCard set on one device while the other publishes an avatar: the vCard set is not lost, and the vCard and PEP agree", async (t) => {
  const desk = await newUser(t, server, 'alice');
  const phone = await onOtherWorker(t, desk);
  for (let round = 0; round < 8; round++) {
    const a = image();
    ok(t, await publish(desk, NS_DATA, `<data xmlns='${NS_DATA}'>${a.b64}</data>`, { id: a.hash }), 'data');
    const [avatar, vcard] = await Promise.all([
      publish(desk, NS_METADATA, `<metadata xmlns='${NS_METADATA}'><info bytes='${a.bytes}' id='${a.hash}' type='image/png'/></metadata>`, { id: a.hash }),
      setVcard(phone, `<FN>round ${round}</FN>`),
    ]);
    ok(t, avatar, 'metadata');
    ok(t, vcard, 'vCard');
    const now = await bothSides(desk);
    t.is(now.fn, `round ${round}`, `round ${round}: the vCard set kept`);
    t.true(['', a.hash].includes(now.pep), `round ${round}: PEP says the avatar, or none`);
    t.is(now.vcard, now.pep, `round ${round}: the vCard's photo is PEP's avatar`);
  }
});
