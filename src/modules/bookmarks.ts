// XEP-0402 PEP Native Bookmarks, §5.3 compatibility: an account's
// bookmarks are one list seen three ways, kept in step by the server:
//
// - urn:xmpp:bookmarks:1, the PEP node of XEP-0402: one item per room, its
//   id the room's JID, a <conference/> of that namespace;
// - storage:bookmarks in private XML storage (XEP-0049), where XEP-0048
//   clients keep one <storage/> of every <conference/> (and <url/>);
// - storage:bookmarks, the PEP node of XEP-0048 §3 (XEP-0223 style), one
//   item 'current' holding the same <storage/>.
//
// §5.3.2: a replacement list from an XEP-0048 client (private XML, or the
// legacy node) is compared with the XEP-0402 items: the rooms added or
// changed are published, those gone are retracted, and nothing is sent
// for a room that did not change. §5.3.1: an XEP-0402 publish or retract
// changes that room alone in the legacy <storage/> (what else is there,
// <url/> bookmarks and rooms the PEP node never had, stays). A purge or
// delete of the XEP-0402 node empties the legacy list of its rooms; a
// retract, purge or delete of the legacy node by a client is not taken as
// removing bookmarks (the node is written again at the next change).
//
// Private XML is where the legacy list lives; the legacy node is a copy of
// it (its rooms written one way, so that the same list is the same item),
// written when it differs and the account has bookmarks (or the node).
// What this module publishes carries its name (PepChange.by) and is not
// taken back, and its writes to private XML go to the store, not through
// the private module: a change is carried once.
//
// Several devices of an account, on several workers or nodes, change its
// bookmarks at once, and each change runs this module where its device is
// connected. Runs for one account take turns on one worker (personal/
// turns.ts); across workers and nodes nothing is locked: an edit of the
// legacy list in private XML is written only over the value it read (a
// swap, personal/store.ts), else read and redone, so that two devices'
// rooms both stay; a room is carried as the XEP-0402 node holds it when the
// run reads it (not as the change said); and what follows the legacy list
// (the XEP-0402 items, the legacy node) is made again from the list read
// anew until it held still while they were written. Every run ends with
// the stores agreeing as of its last read, and the last run to write
// reads last.
//
// Nodes the module creates: XEP-0402's with whitelist access (owner only),
// items kept up to the service's 'max', persisted, never sent as last item
// (XEP-0402 §3 publish-options); the legacy one with whitelist access and
// persisted items (XEP-0048 §3.3).
//
// Bounds: a legacy list is taken with at most MAX_ITEMS rooms (a private
// XML set with more is refused; a legacy node's item is taken up to that);
// a legacy list that would grow past MAX_PRIVATE_BYTES is not written.
import { Element, clone, parse as parseXml } from 'ltx';
import type { ServerModule } from './module.ts';
import type { PepApi, PepChange } from './pep.ts';
import type { PrivateApi } from './private.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid, bare } from '../xmpp/jid.ts';
import { type NodeConfig, type PepItem, DEFAULT_CONFIG, MAX_ITEMS } from '../pep/store.ts';
import { type PersonalStore, MAX_PRIVATE_BYTES, MAX_PRIVATE_NAMESPACES, utf8Bytes } from '../personal/store.ts';
import { Turns } from '../turns.ts';
import { log } from '../log.ts';

export const NS_BOOKMARKS = 'urn:xmpp:bookmarks:1';
export const NS_LEGACY_BOOKMARKS = 'storage:bookmarks';
/** §5.3: the server unifies XEP-0049 (private XML) bookmarks with XEP-0402's. */
export const FEATURE_COMPAT = `${NS_BOOKMARKS}#compat`;
/** §5.3: and XEP-0048's PEP node (XEP-0223) with XEP-0402's. */
export const FEATURE_COMPAT_PEP = `${NS_BOOKMARKS}#compat-pep`;
/** How this module's own PEP changes are marked (PepChange.by). */
const BY = 'xep-0402';
/** The legacy node's one item (XEP-0048 §3.3). */
const LEGACY_ITEM = 'current';
/** How many times a run reads the legacy list again because another device's run changed it meanwhile (then it leaves it to the next change). */
const MAX_ROUNDS = 10;

const NODE_CONFIG: NodeConfig = { ...DEFAULT_CONFIG, accessModel: 'whitelist', persistItems: true, maxItems: MAX_ITEMS, sendLastPublishedItem: 'never' };
const LEGACY_CONFIG: NodeConfig = { ...DEFAULT_CONFIG, accessModel: 'whitelist', persistItems: true };

export interface BookmarksOptions {
  store: PersonalStore;
  pep: PepApi;
  private: PrivateApi;
  maxPrivateBytes?: number;
}

/** One bookmarked room, whichever way it was stored. */
interface Bookmark {
  /** The room's JID, as given (the item id, or the legacy jid attribute). */
  jid: string;
  name: string | undefined;
  autojoin: boolean;
  nick: string | undefined;
  password: string | undefined;
  /** Elements of other namespaces kept with it (XEP-0402 <extensions/>; children of a legacy <conference/>). */
  extensions: Element[];
}

const isEl = (c: Element | string): c is Element => typeof c !== 'string';

/** A room JID compared as the server compares JIDs; undefined for one that is not a bare JID. */
function key(jid: string | undefined): string | undefined {
  if (!jid) return undefined;
  try {
    const j = parseJid(jid);
    return j.resource ? undefined : bare(j);
  } catch {
    return undefined;
  }
}

const truthy = (v: string | undefined): boolean => v === 'true' || v === '1';
const text = (el: Element, name: string): string | undefined => {
  const c = el.getChild(name);
  return c ? c.getText() : undefined;
};
/** Elements with a namespace of their own, the ones a bookmark carries along. */
const foreign = (els: Element[]): Element[] => els.filter((c) => typeof c.attrs.xmlns === 'string' && c.attrs.xmlns !== NS_LEGACY_BOOKMARKS && c.attrs.xmlns !== NS_BOOKMARKS);

function parsed(xml: string): Element | undefined {
  try {
    return parseXml(xml) as Element;
  } catch {
    return undefined;
  }
}

/** An XEP-0402 item as a bookmark; undefined when it is not one (its id not a JID, its payload not a <conference/>). */
function fromItem(item: PepItem): Bookmark | undefined {
  const c = parsed(item.xml);
  if (c?.name !== 'conference' || c.attrs.xmlns !== NS_BOOKMARKS || !key(item.id)) return undefined;
  return { jid: item.id, name: c.attrs.name, autojoin: truthy(c.attrs.autojoin), nick: text(c, 'nick'), password: text(c, 'password'), extensions: foreign(c.getChild('extensions')?.children.filter(isEl) ?? []) };
}

/** An XEP-0048 <conference/> as a bookmark; undefined without a room JID. */
function fromLegacy(c: Element): Bookmark | undefined {
  if (!key(c.attrs.jid)) return undefined;
  return { jid: c.attrs.jid, name: c.attrs.name, autojoin: truthy(c.attrs.autojoin), nick: text(c, 'nick'), password: text(c, 'password'), extensions: foreign(c.children.filter(isEl)) };
}

/** XEP-0402 §3's payload, always written the same way: two bookmarks are the same when these are. */
function toPayload(b: Bookmark): string {
  const c = new Element('conference', { xmlns: NS_BOOKMARKS, ...(b.name !== undefined ? { name: b.name } : {}), ...(b.autojoin ? { autojoin: 'true' } : {}) });
  if (b.nick !== undefined) c.c('nick').t(b.nick);
  if (b.password !== undefined) c.c('password').t(b.password);
  if (b.extensions.length > 0) {
    const x = c.c('extensions');
    for (const e of b.extensions) x.cnode(clone(e));
  }
  return c.toString();
}

/** XEP-0048's <conference/> (§3.2), the room's JID in 'jid', what else the bookmark carries as its children. */
function toLegacy(b: Bookmark): Element {
  const c = new Element('conference', { jid: b.jid, ...(b.name !== undefined ? { name: b.name } : {}), autojoin: b.autojoin ? 'true' : 'false' });
  if (b.nick !== undefined) c.c('nick').t(b.nick);
  if (b.password !== undefined) c.c('password').t(b.password);
  for (const e of b.extensions) c.cnode(clone(e));
  return c;
}

/** The <storage/> elements of a namespace's value (private XML keeps it as the client sent it) merged into one. */
function storageOf(xml: string | undefined): Element {
  const s = new Element('storage', { xmlns: NS_LEGACY_BOOKMARKS });
  if (!xml) return s;
  const wrapper = parsed(`<q>${xml}</q>`);
  for (const st of wrapper?.children.filter(isEl) ?? []) {
    if (st.name !== 'storage' || st.attrs.xmlns !== NS_LEGACY_BOOKMARKS) continue;
    for (const c of st.children.filter(isEl)) s.cnode(c);
  }
  return s;
}

const conferences = (s: Element): Element[] => s.children.filter((c): c is Element => isEl(c) && c.name === 'conference');

export function bookmarks(o: BookmarksOptions): ServerModule {
  const maxPrivateBytes = o.maxPrivateBytes ?? MAX_PRIVATE_BYTES;
  const turns = new Turns();

  /** §5.3.2: the XEP-0402 items made to match a replacement list, changing only what differs. */
  const toPep = async (user: string, storage: Element): Promise<void> => {
    const wanted = new Map<string, Bookmark>();
    for (const c of conferences(storage)) {
      const b = fromLegacy(c);
      if (!b) continue;
      const k = key(b.jid)!;
      if (!wanted.has(k) && wanted.size >= MAX_ITEMS) {
        log.info('XEP-0402: a legacy bookmark list holds more rooms than a node keeps; the rest are not published', { user, max: MAX_ITEMS });
        break;
      }
      wanted.set(k, b);
    }
    const existing = new Map<string, { id: string; payload: string | undefined }>();
    for (const item of await o.pep.items(user, NS_BOOKMARKS)) {
      const b = fromItem(item);
      existing.set(key(item.id) ?? item.id, { id: item.id, payload: b ? toPayload(b) : undefined });
    }
    const gone = [...existing].filter(([k]) => !wanted.has(k)).map(([, e]) => e.id);
    if (gone.length > 0) await o.pep.retract(user, NS_BOOKMARKS, gone, BY);
    for (const [k, b] of wanted) {
      const had = existing.get(k);
      const payload = toPayload(b);
      // §5.3.2: no notification for a room that did not change.
      if (had?.payload === payload) continue;
      await o.pep.publish(user, NS_BOOKMARKS, { id: had?.id ?? k, xml: payload }, { create: NODE_CONFIG, by: BY });
    }
  };

  /** The legacy node's item made the same as the legacy list (its rooms written the one way), if it differs (and there is something to say). */
  const toLegacyNode = async (user: string, storage: Element): Promise<void> => {
    const copy = new Element('storage', { xmlns: NS_LEGACY_BOOKMARKS });
    for (const c of storage.children.filter(isEl)) {
      if (c.name !== 'conference') copy.cnode(clone(c));
      else {
        const b = fromLegacy(c);
        if (b) copy.cnode(toLegacy(b));
      }
    }
    const xml = copy.toString();
    const [had] = await o.pep.items(user, NS_LEGACY_BOOKMARKS, [LEGACY_ITEM]);
    if (had ? had.xml === xml : copy.children.length === 0) return;
    await o.pep.publish(user, NS_LEGACY_BOOKMARKS, { id: LEGACY_ITEM, xml }, { create: LEGACY_CONFIG, by: BY });
  };

  /**
   * The legacy list written to private XML: over `expected` alone when given
   * (a swap: 'conflict' when another writer came between), else over
   * whatever is there; 'refused' when it does not fit.
   */
  const writePrivate = async (user: string, storage: Element, expected?: { xml: string | undefined }): Promise<'written' | 'conflict' | 'refused'> => {
    const xml = storage.children.length > 0 ? storage.toString() : '';
    if (utf8Bytes(xml) > maxPrivateBytes) {
      log.info('XEP-0402: the bookmarks do not fit in private XML storage; it is left as it was', { user, bytes: utf8Bytes(xml) });
      return 'refused';
    }
    try {
      if (!expected) await o.store.setPrivateXml(user, [{ ns: NS_LEGACY_BOOKMARKS, xml }], MAX_PRIVATE_NAMESPACES);
      else if (!(await o.store.swapPrivateXml(user, NS_LEGACY_BOOKMARKS, expected.xml, xml, MAX_PRIVATE_NAMESPACES))) return 'conflict';
    } catch (err) {
      if ((err as Error).name !== 'PrivateStorageFullError') throw err;
      log.info('XEP-0402: private XML storage holds as many namespaces as it may; bookmarks not written there', { user });
      return 'refused';
    }
    return 'written';
  };

  /**
   * The legacy list in private XML changed by `edit` (which changes the list
   * it is given, read just before), and written back only over what was
   * read: when another device's run (on another worker or node) wrote in
   * between, read and edited again (personal/store.ts, Compare-and-set).
   * Whether it wrote a change.
   */
  const editPrivate = async (user: string, edit: (storage: Element) => Promise<void>): Promise<boolean> => {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const before = await o.store.privateXml(user, NS_LEGACY_BOOKMARKS);
      const storage = storageOf(before);
      const was = storage.toString();
      await edit(storage);
      if (storage.toString() === was) return false;
      const done = await writePrivate(user, storage, { xml: before });
      if (done !== 'conflict') return done === 'written';
    }
    log.warn('XEP-0402: the legacy bookmarks kept changing under an edit; left to the next change', { user, rounds: MAX_ROUNDS });
    return false;
  };

  /**
   * `sync` (the XEP-0402 items, or the legacy node, made to follow a legacy
   * list) run on the list private XML holds, and again while that changed
   * meanwhile: a run that followed an older list than another device's
   * later one is followed by one on the newer list.
   */
  const following = async (user: string, sync: (user: string, storage: Element) => Promise<void>): Promise<void> => {
    let xml = await o.store.privateXml(user, NS_LEGACY_BOOKMARKS);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      await sync(user, storageOf(xml));
      const now = await o.store.privateXml(user, NS_LEGACY_BOOKMARKS);
      if (now === xml) return;
      xml = now;
    }
    log.warn('XEP-0402: the legacy bookmarks kept changing while PEP followed them; left to the next change', { user, rounds: MAX_ROUNDS });
  };

  /**
   * §5.3.1: an XEP-0402 change carried to the legacy list, that room alone
   * (or every room, for a purge or delete). Each room it names is taken as
   * the node holds it now, not as the change said: another device's change
   * of the same room may have come since, and its run may have come first.
   */
  const fromPep = async (change: PepChange): Promise<void> => {
    const user = change.owner;
    const ids = change.kind === 'publish' ? [change.item.id] : change.kind === 'retract' ? change.ids : undefined;
    const written = await editPrivate(user, async (storage) => {
      const items = await o.pep.items(user, NS_BOOKMARKS, ids);
      const isRoom = (c: Element | string, k?: string): c is Element => isEl(c) && c.name === 'conference' && (k === undefined || key(c.attrs.jid) === k);
      if (!ids) {
        // A purge or delete: the rooms of the list are those the node holds (none, unless published since).
        storage.children = storage.children.filter((c) => !isRoom(c));
        for (const item of items) {
          const b = fromItem(item);
          if (b) storage.cnode(toLegacy(b));
        }
        return;
      }
      for (const id of ids) {
        const k = key(id);
        if (k === undefined) continue;
        const item = items.find((i) => i.id === id);
        const b = item && fromItem(item);
        // An item that is not a bookmark leaves the list as it was.
        if (item && !b) continue;
        const at = storage.children.findIndex((c) => isRoom(c, k));
        storage.children = storage.children.filter((c) => !isRoom(c, k));
        if (!b) continue;
        const el = toLegacy(b);
        // In its place in the list, if it was there.
        if (at >= 0) {
          storage.children.splice(at, 0, el);
          el.parent = storage;
        } else storage.cnode(el);
      }
    });
    if (written) await following(user, toLegacyNode);
  };

  /** §5.3.2: a replacement list from an XEP-0048 client through its PEP node: private XML takes it, and the XEP-0402 items follow. */
  const fromLegacyNode = async (user: string, item: PepItem): Promise<void> => {
    const s = parsed(item.xml);
    if (s?.name !== 'storage' || s.attrs.xmlns !== NS_LEGACY_BOOKMARKS) return;
    const storage = storageOf(s.toString());
    // A replacement: written over whatever is there.
    if (storageOf(await o.store.privateXml(user, NS_LEGACY_BOOKMARKS)).toString() !== storage.toString() && (await writePrivate(user, storage)) === 'refused') {
      // Not kept in private XML: the XEP-0402 items follow the client's list all the same.
      await toPep(user, storage);
      return;
    }
    await following(user, toPep);
  };

  o.pep.listen((change) => {
    // Its own changes are made within a turn of the account, which waits for this listener: not taken back, nor waited for.
    if (change.by === BY) return;
    if (change.node === NS_BOOKMARKS) return turns.run(change.owner, () => fromPep(change));
    if (change.node === NS_LEGACY_BOOKMARKS && change.kind === 'publish') return turns.run(change.owner, () => fromLegacyNode(change.owner, change.item));
  });

  o.private.listen({
    ns: NS_LEGACY_BOOKMARKS,
    check: (_user, els) => {
      let rooms = 0;
      for (const s of els) if (s.name === 'storage') rooms += conferences(s).length;
      if (rooms > MAX_ITEMS) throw new StanzaError('policy-violation', `at most ${MAX_ITEMS} bookmarked rooms`);
    },
    // §5.3.2 through private XML: the XEP-0402 items and the legacy node follow.
    changed: (user) =>
      turns.run(user, async () => {
        await following(user, toPep);
        await following(user, toLegacyNode);
      }),
  });

  return {
    features: [],
    // §5.3 and §6: said on the account.
    accountFeatures: [FEATURE_COMPAT, FEATURE_COMPAT_PEP],
  };
}
