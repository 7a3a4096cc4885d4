// XEP-0398 User Avatar to vCard-Based Avatars Conversion, which is also the
// server's side of XEP-0153 (vCard-based avatars):
//
// - §3.1, PEP to vCard: a client's publish to the account's
//   urn:xmpp:avatar:metadata node (XEP-0084) puts the image of the
//   urn:xmpp:avatar:data item it points to in the vCard's PHOTO (TYPE and
//   BINVAL); an empty <metadata/> (XEP-0084 §4.5, avatar publishing
//   disabled), or a node left with no item, takes the PHOTO out.
// - §3.2, vCard to PEP: a vCard set with a photo publishes the image to the
//   data node (item id: the SHA-1 of the image, hex), then the metadata
//   (one <info/>: bytes, id, type); a vCard set without one, when PEP still
//   says there is an avatar, publishes an empty <metadata/>.
// - §4: the account's available presence, broadcast or directed, carries
//   <x xmlns='vcard-temp:x:update'><photo>HASH</photo></x> with the hash of
//   the stored vCard's photo (an empty <photo/> for none).
//
// Loops: what this module publishes carries its name (PepChange.by) and is
// not taken back; what it writes to the vCard goes to the store, not
// through the vcard module; and each side is written only when it differs
// from the other (the vCard's photo hash against the metadata's id), so
// that a change made on one side is carried to the other once.
//
// Devices of one account on several workers or nodes change its avatar or
// vCard at once, each conversion running where its device is connected
// (runs for an account take turns on one worker: personal/turns.ts). Across
// them: the vCard is written only over the one read (a swap, personal/
// store.ts), else read again, so that a vCard set meanwhile keeps its
// other fields; each side follows the other as it is when read, not as the
// change that called said; and a run reads its source again after writing,
// running once more when it changed meanwhile: of two runs carrying
// opposite ways, the one that reads last writes what both sides end with.
//
// The photo hash of each account with sessions on this worker is kept here
// (a hash, not the vCard), read again after any change to the account's
// vCard, wherever it was made: every vCard change is announced to every
// worker and node (Router.changed, kind 'vcard').
//
// Privacy (XEP-0398 §6): a vCard is readable by anyone, and so becomes an
// avatar published to PEP with a narrower access model; the feature
// urn:xmpp:pep-vcard-conversion:0 tells clients that this happens.
import { Element, parse as parseXml } from 'ltx';
import { createHash } from 'node:crypto';
import type { ServerModule, InboundHook } from './module.ts';
import type { PepApi } from './pep.ts';
import type { VcardApi } from './vcard.ts';
import { NS_VCARD } from './vcard.ts';
import type { PepItem } from '../pep/store.ts';
import { type PersonalStore, MAX_VCARD_BYTES, photoHash, utf8Bytes } from '../personal/store.ts';
import { Turns } from '../turns.ts';
import { log } from '../log.ts';

export const NS_PEP_VCARD_CONVERSION = 'urn:xmpp:pep-vcard-conversion:0';
export const NS_AVATAR_DATA = 'urn:xmpp:avatar:data';
export const NS_AVATAR_METADATA = 'urn:xmpp:avatar:metadata';
export const NS_VCARD_UPDATE = 'vcard-temp:x:update';
/** How this module's own PEP changes are marked (PepChange.by). */
const BY = 'xep-0398';
/** How many times a conversion reads its source again because another device changed it meanwhile (then it leaves it to the next change). */
const MAX_ROUNDS = 10;
/** Accounts whose photo hash one worker keeps (the least recently used go first). */
const MAX_KEPT = 50_000;

export interface AvatarOptions {
  store: PersonalStore;
  pep: PepApi;
  vcard: VcardApi;
  /** Tells every other worker and node that the account's vCard changed (Router.changed 'vcard'). */
  announce: (user: string) => Promise<void>;
  maxVcardBytes?: number;
  /** Accounts whose photo hash is kept (MAX_KEPT). */
  maxKept?: number;
}

const isEl = (c: Element | string): c is Element => typeof c !== 'string';
const sha1 = (b: Buffer): string => createHash('sha1').update(b).digest('hex');

/**
 * Base64 (RFC 4648 §4; whitespace ignored, XEP-0153 §4.5) decoded, and
 * written again in its canonical form; undefined when it is not base64, or
 * empty (the vCard's photo hash, photoHash(), is '' then: no photo).
 */
function decode(text: string): { b64: string; bytes: Buffer } | undefined {
  const raw = text.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(raw)) return undefined;
  const bytes = Buffer.from(raw, 'base64');
  return bytes.length > 0 ? { b64: bytes.toString('base64'), bytes } : undefined;
}

/** The image type of the common avatar formats, read from their first bytes (a vCard PHOTO need not say its TYPE). */
function sniff(b: Buffer): string | undefined {
  if (b.length >= 8 && b.readUInt32BE(0) === 0x89504e47) return 'image/png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.length >= 6 && b.toString('latin1', 0, 4) === 'GIF8') return 'image/gif';
  if (b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return 'image/webp';
  return undefined;
}

/** A parsed PEP payload; undefined when it does not parse (it was checked at publish, but stores outlive versions). */
function payload(item: PepItem): Element | undefined {
  try {
    return parseXml(item.xml) as Element;
  } catch {
    return undefined;
  }
}

/**
 * What a metadata item says (XEP-0084 §4.2): the id (SHA-1) and type of the
 * image to use, the <info/> that points to no external URL (XEP-0398 §3.1);
 * 'none' for an empty <metadata/> (§4.5); undefined for nothing usable.
 */
function current(item: PepItem | undefined): { id: string; type: string | undefined } | 'none' | undefined {
  if (!item) return 'none';
  const m = payload(item);
  if (m?.name !== 'metadata' || m.attrs.xmlns !== NS_AVATAR_METADATA) return undefined;
  const infos = m.getChildren('info');
  if (infos.length === 0) return 'none';
  const info = infos.find((i) => !i.attrs.url && typeof i.attrs.id === 'string');
  return info ? { id: String(info.attrs.id).toLowerCase(), type: info.attrs.type as string | undefined } : undefined;
}

export function avatar(o: AvatarOptions): ServerModule {
  const maxVcardBytes = o.maxVcardBytes ?? MAX_VCARD_BYTES;
  const maxKept = o.maxKept ?? MAX_KEPT;
  const turns = new Turns();

  // --- the photo hash of each account, for presence ------------------------

  /** Hash by account ('' for no photo), least recently used first. */
  const hashes = new Map<string, string>();
  const reading = new Map<string, Promise<string>>();
  /** Bumped by every change: a read that began before one is not kept. */
  let changes = 0;
  const keep = (user: string, hash: string): void => {
    hashes.delete(user);
    hashes.set(user, hash);
    if (hashes.size > maxKept) hashes.delete(hashes.keys().next().value!);
  };
  const forget = (user: string): void => {
    changes++;
    hashes.delete(user);
    reading.delete(user);
  };
  const hashOf = (user: string): Promise<string> => {
    const known = hashes.get(user);
    if (known !== undefined) {
      keep(user, known);
      return Promise.resolve(known);
    }
    const pending = reading.get(user);
    if (pending) return pending;
    const at = changes;
    const p = o.store.photoHash(user).then((h) => {
      if (changes === at) keep(user, h ?? '');
      return h ?? '';
    });
    reading.set(user, p);
    void p.then(
      () => reading.get(user) === p && reading.delete(user),
      () => reading.get(user) === p && reading.delete(user),
    );
    return p;
  };
  /** The account's vCard changed here: this worker's hash is the new one, the others read theirs again. */
  const vcardChanged = async (user: string, hash: string): Promise<void> => {
    forget(user);
    keep(user, hash);
    // Not told (Redis unreachable): the other nodes stamp the hash they had until the next change, or until their own
    // subscription comes back (Router.changed '*'); the conversion itself goes on.
    await o.announce(user).catch((err: unknown) => log.warn('XEP-0398: a vCard change not announced to the other workers', { user, err: String(err) }));
  };

  // --- §3.1: PEP to vCard --------------------------------------------------

  /**
   * Puts the photo in the account's vCard (or takes it out), unless it is
   * there already; the vCard written back only over the one read (a swap:
   * a vCard set meanwhile, here or on another worker or node, is read again
   * and the photo put in it), personal/store.ts, Compare-and-set.
   */
  const setPhoto = async (user: string, photo: { b64: string; type: string | undefined; hash: string } | undefined): Promise<void> => {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const stored = await o.store.vcard(user);
      if ((stored?.photoHash ?? '') === (photo?.hash ?? '')) return;
      const v = stored ? (parseXml(stored.xml) as Element) : new Element('vCard', { xmlns: NS_VCARD });
      v.children = v.children.filter((c) => !(isEl(c) && c.name === 'PHOTO'));
      if (photo) {
        const p = v.c('PHOTO');
        if (photo.type) p.c('TYPE').t(photo.type);
        p.c('BINVAL').t(photo.b64);
      }
      const xml = v.toString();
      if (utf8Bytes(xml) > maxVcardBytes) {
        log.info('XEP-0398: the avatar does not fit in the vCard; the vCard is left as it was', { user, bytes: utf8Bytes(xml) });
        return;
      }
      const hash = photoHash(v);
      if (await o.store.swapVcard(user, stored?.xml, { xml, photoHash: hash })) {
        await vcardChanged(user, hash);
        return;
      }
    }
    log.warn('XEP-0398: the vCard kept changing under the avatar written to it; left to the next change', { user, rounds: MAX_ROUNDS });
  };

  /** The vCard made to say what the metadata item says (the image of its data item), or nothing when it says nothing usable. */
  const metadataToVcard = async (user: string, item: PepItem | undefined): Promise<void> => {
    const now = current(item);
    if (now === undefined) return;
    if (now === 'none') return setPhoto(user, undefined);
    const [data] = await o.pep.items(user, NS_AVATAR_DATA, [now.id]);
    const el = data ? payload(data) : undefined;
    const image = el?.name === 'data' && el.attrs.xmlns === NS_AVATAR_DATA ? decode(el.getText()) : undefined;
    if (!image) {
      log.debug('XEP-0398: the metadata points to no data item of this account; the vCard is left as it was', { user, id: now.id });
      return;
    }
    // §3.1: the SHA-1 of the image is checked against the id.
    const hash = sha1(image.bytes);
    if (hash !== now.id) {
      log.debug('XEP-0398: the avatar data does not match its id; the vCard is left as it was', { user, id: now.id });
      return;
    }
    await setPhoto(user, { b64: image.b64, type: now.type ?? sniff(image.bytes), hash });
  };

  /**
   * §3.1 for a change of the metadata node: the vCard follows what the node
   * says now (its newest item; not the change's: another device's publish
   * may have come since, its run ahead of this one), read again after the
   * vCard was written until it held still meanwhile.
   */
  const fromPep = async (user: string): Promise<void> => {
    const newest = async () => (await o.pep.items(user, NS_AVATAR_METADATA)).at(-1);
    let item = await newest();
    for (let round = 0; round < MAX_ROUNDS; round++) {
      await metadataToVcard(user, item);
      const now = await newest();
      if (now?.id === item?.id && now?.xml === item?.xml) return;
      item = now;
    }
    log.warn('XEP-0398: the avatar metadata kept changing while the vCard followed it; left to the next change', { user, rounds: MAX_ROUNDS });
  };

  // --- §3.2: vCard to PEP --------------------------------------------------

  /** PEP's avatar made to be the vCard's photo (an empty <metadata/> for none), unless it is already. */
  const vcardToPep = async (user: string, vcard: Element, hash: string): Promise<void> => {
    const [last] = (await o.pep.items(user, NS_AVATAR_METADATA)).slice(-1);
    const now = last ? current(last) : undefined;
    if (hash === '') {
      // The photo is gone from the vCard: PEP says so too, if it still shows one.
      if (now !== undefined && now !== 'none') await o.pep.publish(user, NS_AVATAR_METADATA, { id: 'current', xml: `<metadata xmlns='${NS_AVATAR_METADATA}'/>` }, { by: BY });
      return;
    }
    if (now !== undefined && now !== 'none' && now.id === hash) return;
    const photo = vcard.getChild('PHOTO');
    const image = decode(photo?.getChildText('BINVAL') ?? '');
    // Only a valid photo (§3.2): base64 of an image whose type is said or known.
    const type = photo?.getChildText('TYPE')?.trim() || (image ? sniff(image.bytes) : undefined);
    if (!image || !type || sha1(image.bytes) !== hash) return;
    // §3.2: the data first, its id the image's SHA-1, then the metadata that points to it (its notification follows).
    await o.pep.publish(user, NS_AVATAR_DATA, { id: hash, xml: `<data xmlns='${NS_AVATAR_DATA}'>${image.b64}</data>` }, { by: BY });
    const meta = new Element('metadata', { xmlns: NS_AVATAR_METADATA });
    meta.c('info', { bytes: String(image.bytes.length), id: hash, type });
    await o.pep.publish(user, NS_AVATAR_METADATA, { id: hash, xml: meta.toString() }, { by: BY });
  };

  /**
   * §3.2 for a vCard set: PEP follows the vCard as it is stored now (a set
   * made meanwhile on another device may be newer than the one that called),
   * read again after PEP was written until it held still meanwhile.
   */
  const fromVcard = async (user: string): Promise<void> => {
    let stored = await o.store.vcard(user);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      // No vCard (the account removed meanwhile): nothing to follow.
      if (!stored) return;
      await vcardToPep(user, parseXml(stored.xml) as Element, stored.photoHash);
      const now = await o.store.vcard(user);
      if (now?.xml === stored.xml) return;
      stored = now;
    }
    log.warn('XEP-0398: the vCard kept changing while PEP followed it; left to the next change', { user, rounds: MAX_ROUNDS });
  };

  o.pep.listen((change) => {
    // Its own changes are made within a turn of the account, which waits for this listener: not taken back, nor waited for.
    if (change.by === BY || change.node !== NS_AVATAR_METADATA) return;
    return turns.run(change.owner, () => fromPep(change.owner));
  });
  o.vcard.listen(async (user, _vcard, hash) => {
    await vcardChanged(user, hash);
    await turns.run(user, () => fromVcard(user));
  });

  // --- §4: the hash in presence --------------------------------------------

  const inbound: InboundHook = async (el, session) => {
    if (el.name !== 'presence' || el.attrs.type !== undefined || !session.username) return false;
    const x = el.getChild('x', NS_VCARD_UPDATE);
    const photo = x?.getChild('photo');
    // §4: an empty <photo/> (the client says there is no avatar) is left as it is.
    if (photo && photo.getText().trim() === '') return false;
    let hash: string;
    try {
      hash = await hashOf(session.username);
    } catch (err) {
      log.warn('XEP-0398: the photo hash cannot be read; presence goes unstamped', { user: session.username, err: String(err) });
      return false;
    }
    if (photo) {
      // §4 MAY: a hash that is not the stored photo's is replaced by it (none known: the client's stays).
      if (hash !== '' && photo.getText().trim() !== hash) photo.children = [hash];
      return false;
    }
    // §4 MUST: the hash in every available presence, an <x/> without <photo/> overwritten.
    const into = x ?? el.c('x', { xmlns: NS_VCARD_UPDATE });
    into.children = [];
    const p = into.c('photo');
    if (hash !== '') p.t(hash);
    return false;
  };

  return {
    // §2 asks for the feature on the account; the server's own disco#info says it too, the server being what converts.
    features: [NS_PEP_VCARD_CONVERSION],
    accountFeatures: [NS_PEP_VCARD_CONVERSION],
    inbound,
    changed: (kind, user) => {
      if (kind === '*') {
        changes++;
        hashes.clear();
        reading.clear();
      } else if (kind === 'vcard') forget(user);
    },
    removed: (user) => forget(user),
  };
}
