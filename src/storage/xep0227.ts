// XEP-0227 (Portable Import/Export Format for XMPP-IM Servers, urn:xmpp:pie:0):
// `user export` writes the accounts of this server's domain as the stores
// hold them, and `user import` reads the exports of other servers (and ours).
//
//   <server-data xmlns='urn:xmpp:pie:0'>
//     <host jid='example.org'>
//       <user name='alice' password='...'?>             password: plaintext, never written by us
//         <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>
//           <iter-count/><salt/><server-key/><stored-key/>  (base64)
//         </scram-credentials>
//         <query xmlns='jabber:iq:roster'><item jid subscription ask name><group/></item></query>
//         <presence type='subscribe' from='...'/>         a request the user has not answered
//         <offline-messages><message>...<delay/></message></offline-messages>
//         <vCard xmlns='vcard-temp'>...</vCard>              the vCard (XEP-0054), as the user set it
//         <query xmlns='jabber:iq:private'>...</query>       private XML (XEP-0049), every namespace's elements
//         <query xmlns='jabber:iq:privacy'>                 the blocklist (XEP-0191) as the default privacy list (below)
//           <default name='blocklist'/><list name='blocklist'><item type='jid' value='...' action='deny' order='1'/>...</list>
//         </query>
//         <pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>   PEP (XEP-0227 1.1 §"Personal Eventing Protocol"):
//           <configure node='...'><x xmlns='jabber:x:data'/></configure>   each node's configuration, a pubsub#node_config form
//           <affiliations node='...'><affiliation jid affiliation='owner|member'/></affiliations>   its whitelist, if any
//         </pubsub>
//         <pubsub xmlns='http://jabber.org/protocol/pubsub'>
//           <items node='...'><item id='...'>payload</item></items>        and its items, oldest first
//         </pubsub>
//         <archive xmlns='urn:xmpp:pie:0#mam'>              the message archive (XEP-0227 1.1 §"Message Archive"),
//           <result xmlns='urn:xmpp:mam:2' id='...'>        oldest first, as a MAM query's results
//             <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp/><message xmlns='jabber:client'/></forwarded>
//
// What the real tools write, and is read here as they write it:
// - ejabberd (export_piefxis) writes a <server-data> of <xi:include href/>
//   (XInclude), one file per host whose root is <host>, and encodes each
//   SCRAM value twice in base64 (its own store keeps them as base64 text).
// - Prosody (prosody-migrator to xep0227) writes one <server-data> file per
//   user, may repeat a <scram-credentials> and a <presence>, and writes the
//   presence without a namespace of its own (urn:xmpp:pie:0 by inheritance).
// - A plaintext password (ejabberd with auth_password_format: plain) becomes
//   SCRAM verifiers of both hashes; it is never stored.
//
// - Prosody 0.12 (the `archive` store) writes archives as the XEP does, with
//   its own ids and stamps to the second; ejabberd 23.01 writes none.
//
// Files are read as a stream with the server's own parser (xml/parser.ts),
// <server-data>, <host>, <user> and <archive> as containers: of one <user>,
// what is not its archive is held (bounded by maxUserBytes), and its archive
// goes by one <result> at a time (each bounded alike), written in batches:
// an archive of any length takes bounded memory. Import reads the input
// twice: a first pass checks all of it and the accounts already here, so
// that bad input or an existing account (unless skipped) writes nothing; the
// second writes, user by user, the archive first and the account last, so
// that an account that exists was imported whole.
// An archived message keeps its id when it is one of ours whose time agrees
// with its stamp (a round trip keeps the ids clients hold); any other gets a
// new one from its stamp, so the archive's order is the stamps' order.
// Archiving preferences (XEP-0313 §6) have no place in the format: they are
// neither written nor read. Private XML elements without a namespace of
// their own or in a reserved one are left out (modules/private.ts refuses
// them too), and said.
//
// PEP, as XEP-0227 1.1 has it: a node's configuration carries what the
// store keeps (pubsub#access_model, persist_items, max_items,
// send_last_published_item, notify_retract, roster_groups_allowed); other
// fields are not read (pubsub#publish_model too: only the owner publishes
// to its PEP nodes here, XEP-0163 §4.1); a field left empty (as
// Prosody writes the ones never set) is the default (XEP-0163 §4.1). An
// access model this server lacks ('authorize') becomes 'whitelist' (only
// the owner, and the members the file names), and a max_items above
// MAX_ITEMS is MAX_ITEMS; both are said. A node with items and no configuration (the XEP
// asks for one) gets the defaults. Of a node's items, those a node of that
// configuration would keep are kept (the newest; a repeated id once, where
// it was last); items without exactly one payload that states its own
// namespace, or larger than MAX_ITEM_BYTES, are not (as a publish would be
// refused), and are counted. More than MAX_NODES nodes, a node name or item
// id longer than MAX_NAME, or an item without an id is bad input. An
// account's items past MAX_ACCOUNT_BYTES (the bound a publish checks) are
// trimmed, each node keeping its newest first (fitAccountBytes), and said.
// A node's whitelist (XEP-0060 §8.9) is written and read as Prosody 0.12's
// writer has it: <affiliations node> beside <configure> in the owner's
// <pubsub>, with <affiliation jid affiliation/> for the owner (implied, not
// kept) and each member; a publisher is kept as a member (only the account
// publishes to PEP nodes here, XEP-0163 §4.1), other affiliations are not
// kept, both said; more than MAX_WHITELIST members on a node is bad input.
// Subscriptions are not kept (presence subscriptions are PEP's) and are
// said. An item's publish time has no place in the format (XEP-0060's
// <item/> has none): it is not written, and an imported item is dated its
// import (the store's time of the publish that writes it). Prosody 0.12 writes PEP
// so (the 'pep' store); ejabberd 23.01's export_piefxis writes none. The
// pubsub service's nodes (modules/pubsub.ts, in the same store) are not
// exported: XEP-0227 leaves services out.
//
// Blocklists: XEP-0227 has no element for XEP-0191's blocklist, only
// §"Privacy Lists" (XEP-0016, jabber:iq:privacy), and a blocklist is a
// privacy list of JIDs denied every kind of stanza. So it is written as the
// user's default privacy list, named 'blocklist', one deny item per JID in
// the list's order; this is also what ejabberd 23.01 writes for its
// blocklists (mod_blocking keeps them as the default privacy list, 'Blocked
// contacts') and reads back. On import the default list becomes the
// blocklist as far as it is one: in XEP-0016 §2.2's order (ties as
// written), each item of type 'jid' that denies everything blocks its JID,
// up to the first item without a type (which decides for everyone else and
// ends the list); items that allow, that are about groups or subscription
// states, that deny only some stanzas, a fall-through that denies, and lists
// other than the default are not kept, and are said. More than MAX_BLOCKED
// JIDs, or one that is no JID, is bad input. Prosody 0.12's XEP-0227 writer
// has no blocklist (its 'blocklist' store is unsupported there).
import { createReadStream, createWriteStream, renameSync, rmSync, statSync, readdirSync } from 'node:fs';
import { once } from 'node:events';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Element, clone } from 'ltx';
import { StreamParser, type XmlErrorCondition } from '../xml/parser.ts';
import { NS_CLIENT, NS_DELAY, NS_FORWARD, NS_SID } from '../xmpp/ns.ts';
import { parseJid, bare, normalizeDomain } from '../xmpp/jid.ts';
import {
  type AccountStore, type ScramCredentials, type ScramHash, SCRAM_HASHES,
  newUsername, hashInfo, deriveBoth, InvalidUsernameError,
} from '../accounts/store.ts';
import { type RosterStore, type RosterItem, type Subscription, SUBSCRIPTIONS, type TransitionTable } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import { stamp, dateTime } from '../offline/offline.ts';
import { type ArchiveStore, type ArchivedMessage, idAt, isArchiveId, stampOf } from '../mam/store.ts';
import { type PersonalStore, type PrivateEntry, type StoredVcard, photoHash } from '../personal/store.ts';
import { type PepStore, type PepItem, type NodeConfig, type AccessModel, type SendLast, DEFAULT_CONFIG, MAX_ACCOUNT_BYTES, MAX_ITEMS, MAX_ITEM_BYTES, MAX_NODES, kept } from '../pep/store.ts';
import { type BlockStore, MAX_BLOCKED, normalizeBlocked } from '../blocking/store.ts';
import { MAX_NAME, MAX_WHITELIST, selfContained } from '../modules/pep.ts';

export const NS_PIE = 'urn:xmpp:pie:0';
export const NS_PIE_SCRAM = 'urn:xmpp:pie:0#scram';
export const NS_PIE_MAM = 'urn:xmpp:pie:0#mam';
export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_ROSTER = 'jabber:iq:roster';
export const NS_VCARD = 'vcard-temp';
export const NS_PRIVATE = 'jabber:iq:private';
export const NS_PRIVACY = 'jabber:iq:privacy';
export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_PUBSUB_OWNER = `${NS_PUBSUB}#owner`;
const NS_DATA = 'jabber:x:data';
const NODE_CONFIG = `${NS_PUBSUB}#node_config`;
/** The name of the privacy list a blocklist is written as. */
export const BLOCKLIST_NAME = 'blocklist';
/** Namespaces private XML is not kept under (as modules/private.ts). */
const PRIVATE_RESERVED = new Set([NS_CLIENT, 'jabber:server', NS_PRIVATE]);
export const NS_XINCLUDE = 'http://www.w3.org/2001/XInclude';

/** Bad input: names the element (and the file) at fault. */
export class Xep0227Error extends Error {
  override name = 'Xep0227Error';
}

export interface Xep0227Stores {
  accounts: AccountStore;
  roster: RosterStore;
  offline: OfflineStore;
  archive: ArchiveStore;
  personal: PersonalStore;
  pep: PepStore;
  blocking: BlockStore;
}

export interface ImportOptions {
  /** This server's domain: users of other hosts are left out (and said). */
  domain: string;
  /** Leave accounts that exist here as they are (their data too) instead of refusing the import. */
  skipExisting?: boolean;
  /** Check and count only. */
  dryRun?: boolean;
  /** PBKDF2 iterations for the verifiers made from a plaintext password. */
  iterations: number;
  maxRosterItems: number;
  maxRosterBytes?: number;
  maxOfflineMessages: number;
  maxOfflineBytes: number;
  /** Largest <user> element, its <archive> aside, and largest archived message, in bytes (default 64 MiB). */
  maxUserBytes?: number;
  /** Archived messages written at once (default ARCHIVE_BATCH). */
  archiveBatch?: number;
  /** Told of each user once written (progress). */
  onUser?: (name: string) => void;
  /** Tells the running server of a user written with a blocklist (its workers keep which accounts block anyone). */
  announceBlocklist?: (name: string) => Promise<void>;
}

export interface ImportReport {
  accounts: number;
  /** From a plaintext password, hashed here. */
  fromPassword: number;
  /** With SCRAM-SHA-1 verifiers only (they get SHA-256 ones at their next PLAIN login or password change). */
  sha1Only: number;
  rosterItems: number;
  pending: number;
  offline: number;
  /** Offline messages beyond the configured limits, not kept. */
  offlineDropped: number;
  /** Messages of the users' archives (XEP-0313). */
  archived: number;
  /** vCards (XEP-0054), and namespaces of private XML (XEP-0049). */
  vcards: number;
  privateXml: number;
  /** PEP nodes and their items (XEP-0163). */
  pepNodes: number;
  pepItems: number;
  /** PEP items not kept: beyond their node's bound, too large, or without one self-contained payload. */
  pepDropped: number;
  /** JIDs of the users' blocklists (XEP-0191). */
  blocked: number;
  /** Accounts that existed here, left as they were (skipExisting). */
  skipped: string[];
  /** Hosts of the input that are not this server's, with their users' count. */
  otherHosts: Map<string, number>;
  /** Elements of a user this server does not keep, by name, with their count. */
  leftOut: Map<string, number>;
  /** What was kept otherwise than written, or left out, that is no element of its own (privacy list items, PEP configuration values), with the count of users. */
  notes: Map<string, number>;
}

/** A PEP node as read, checked, with the items it keeps. */
interface PepNode {
  node: string;
  config: NodeConfig;
  items: PepItem[];
  /** Its whitelist (XEP-0060 §8.9): the bare JIDs of its members. */
  members: string[];
}

/** What one <user> holds, checked, its archive aside. */
interface UserData {
  name: string;
  password?: string;
  verifiers: Partial<Record<ScramHash, ScramCredentials>>;
  items: RosterItem[];
  /** Pending requests: the contact's bare JID and the stanza to keep. */
  pending: { jid: string; stanza: string }[];
  /** Serialised messages, stamped. */
  offline: string[];
  vcard?: StoredVcard;
  private: PrivateEntry[];
  pep: PepNode[];
  /** Items of its PEP nodes not kept. */
  pepDropped: number;
  /** Its blocklist, normalised, in order. */
  blocked: string[];
  leftOut: string[];
  notes: string[];
}

const DEFAULT_MAX_USER_BYTES = 64 * 1024 * 1024;
/** A document's elements are bounded per <user> in bytes; this only stops an absurd count of tiny ones. */
const MAX_USER_ELEMENTS = 4 * 1024 * 1024;
/** Archived messages per write on import, and per page read on export. */
export const ARCHIVE_BATCH = 500;
export const ARCHIVE_PAGE = 200;

const where = (file: string, path: string) => `${basename(file)}: ${path}`;

// ---------------------------------------------------------------------------
// Reading

/** What the reader reports of the input, in document order. */
type Item =
  /** A <user> of <host jid=host> opens. */
  | { kind: 'user'; host: string; file: string; attrs: Record<string, string> }
  /** A child of the open <user>, its <archive> aside. */
  | { kind: 'child'; el: Element }
  /** A child of the open <user>'s <archive xmlns='urn:xmpp:pie:0#mam'>. */
  | { kind: 'archived'; el: Element }
  /** The open <user> closes. */
  | { kind: 'end' };

/**
 * The input files' items, in document order: `paths` are files or
 * directories (their *.xml files, sorted, skipping those included by
 * another). <xi:include href/> of a <server-data> is followed, to a file of
 * the same directory or below it.
 */
async function* items(paths: string[], maxUserBytes: number): AsyncGenerator<Item> {
  const files: string[] = [];
  for (const p of paths) {
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const f of readdirSync(p).filter((n) => n.endsWith('.xml')).sort()) files.push(join(p, f));
    } else files.push(p);
  }
  // ejabberd's directory holds the including file and the included ones: each is read once, through its includer.
  const included = new Set<string>();
  const queue = files.map((f) => resolve(f));
  const seen = new Set<string>();
  for (const file of queue) {
    if (included.has(file) || seen.has(file)) continue;
    seen.add(file);
    for await (const item of readFile(file, maxUserBytes, 0)) {
      if (!('include' in item)) yield item;
      else if (!seen.has(item.include)) {
        included.add(item.include);
        seen.add(item.include);
        for await (const inner of readFile(item.include, maxUserBytes, 1)) if (!('include' in inner)) yield inner;
      }
    }
  }
}

/** One file: its items, and the files it includes (depth 0 only). */
async function* readFile(file: string, maxUserBytes: number, depth: number): AsyncGenerator<Item | { include: string }> {
  const out: (Item | { include: string })[] = [];
  let failure: Xep0227Error | undefined;
  let root = '';
  let rootNs: string | undefined;
  let host: string | undefined;
  /** The open <user> (its name as written), the cost of what of it is held, and whether its <archive> is open. */
  let user: string | undefined;
  let userCost = 0;
  let inArchive = false;
  let ended = false;
  const fail = (msg: string) => {
    failure ??= new Xep0227Error(where(file, msg));
  };
  const hostOf = (attrs: Record<string, string>) => {
    const jid = attrs.jid;
    if (!jid) return fail('<host> without a jid attribute');
    try {
      host = normalizeDomain(jid);
    } catch {
      fail(`<host jid=${JSON.stringify(jid)}>: not a domain`);
    }
  };
  const pie = (attrs: Record<string, string>) => attrs.xmlns === undefined || attrs.xmlns === NS_PIE;
  const parser = new StreamParser(
    {
      streamStart(name, attrs) {
        root = name;
        rootNs = attrs.xmlns;
        if (rootNs !== NS_PIE) return fail(`the root element <${name}> is not in ${NS_PIE} (xmlns=${JSON.stringify(rootNs ?? '')})`);
        // ejabberd's included files are a <host> each.
        if (name === 'host') hostOf(attrs);
        else if (name !== 'server-data') fail(`the root element is <${name}>, not <server-data> or <host>`);
      },
      containerStart(name, attrs) {
        if (failure) return;
        if (name === 'host') hostOf(attrs);
        else if (name === 'user') {
          user = attrs.name ?? '';
          userCost = 0;
          out.push({ kind: 'user', host: host!, file, attrs });
        } else inArchive = true;
      },
      containerEnd(name) {
        if (name === 'host') host = undefined;
        else if (name === 'user') {
          user = undefined;
          if (!failure) out.push({ kind: 'end' });
        } else inArchive = false;
      },
      element(el, cost) {
        if (failure) return;
        const ns = el.attrs.xmlns;
        if (inArchive) {
          out.push({ kind: 'archived', el });
          return;
        }
        if (user !== undefined) {
          // What is held of one user until it ends is bounded; its archive is not held.
          userCost += cost;
          if (userCost > maxUserBytes) return fail(`<user name=${JSON.stringify(user)}> is too large: more than ${maxUserBytes} bytes besides its <archive>`);
          out.push({ kind: 'child', el });
          return;
        }
        if (root === 'server-data' && host === undefined) {
          if (el.name === 'xi:include' || (el.name === 'include' && ns === NS_XINCLUDE)) {
            const href = el.attrs.href;
            if (depth > 0) return fail('<xi:include> inside an included file');
            if (!href || href.startsWith('/') || href.split(/[\\/]/).includes('..')) return fail(`<xi:include href=${JSON.stringify(href ?? '')}>: only a file beside this one (or below it) is read`);
            const target = resolve(dirname(file), href);
            if (!target.startsWith(dirname(file) + sep)) return fail(`<xi:include href=${JSON.stringify(href)}>: outside this directory`);
            out.push({ include: target });
            return;
          }
          return fail(`<${el.name}> where <host> was expected`);
        }
        fail(`<${el.name}${ns ? ` xmlns='${ns}'` : ''}> in <host jid='${host}'> where <user> was expected`);
      },
      streamEnd() {
        ended = true;
      },
      error(condition: XmlErrorCondition, text: string) {
        const at = user !== undefined ? `<user name=${JSON.stringify(user)}>${inArchive ? ': <archive>' : ''}: ` : '';
        fail(`${at}${condition === 'policy-violation' ? 'too large' : 'not well-formed XML'}: ${text}`);
      },
    },
    {
      maxStanzaBytes: maxUserBytes,
      maxStanzaElements: MAX_USER_ELEMENTS,
      // <host> of a <server-data>, <user> of a <host>, <archive> of a <user>: their children come one at a time.
      container: (name, attrs) => {
        if (root !== 'server-data' && root !== 'host') return false;
        if (name === 'host') return root === 'server-data' && host === undefined && pie(attrs);
        if (name === 'user') return host !== undefined && user === undefined && pie(attrs);
        return name === 'archive' && user !== undefined && !inArchive && attrs.xmlns === NS_PIE_MAM;
      },
    },
  );
  const stream = createReadStream(file, { highWaterMark: 64 * 1024 });
  try {
    for await (const chunk of stream) {
      parser.write(chunk as Buffer);
      if (failure) throw failure;
      // What this chunk completed, before reading more: at most a chunk's worth of items waits.
      for (const item of out.splice(0)) yield item;
    }
  } finally {
    stream.destroy();
    parser.end();
  }
  if (failure) throw failure;
  if (!ended) throw new Xep0227Error(where(file, root ? `the document ends inside <${root}>` : 'no XML document'));
}

/** Base64 as XEP-0227 writes it (whitespace allowed), strictly. */
function base64(text: string, what: string): Buffer {
  const t = text.replace(/\s+/g, '');
  if (t.length === 0 || t.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(t)) throw new Xep0227Error(`${what} is not base64`);
  return Buffer.from(t, 'base64');
}

/** A value ejabberd encoded twice: the base64 text of base64 text of the expected length. */
function undouble(once: Buffer, length: number): Buffer | undefined {
  const s = once.toString('latin1');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(s) || s.length % 4 !== 0) return undefined;
  const twice = Buffer.from(s, 'base64');
  return twice.length === length ? twice : undefined;
}

/** The most PBKDF2 iterations an imported account may carry (RFC 7677 asks at least 4096; servers use 4096 to a few hundred thousand). */
const MAX_IMPORTED_ITERATIONS = 1_000_000;

function scramOf(el: Element, what: string): [ScramHash, ScramCredentials] {
  const mechanism = el.attrs.mechanism ?? '';
  const hash = SCRAM_HASHES.find((h) => mechanism === `SCRAM-${h}` || mechanism === `SCRAM-${h}-PLUS`);
  if (!hash) throw new Xep0227Error(`${what}: <scram-credentials mechanism=${JSON.stringify(mechanism)}>: only SCRAM-SHA-1 and SCRAM-SHA-256 are kept here`);
  const at = `${what}: <scram-credentials mechanism='${mechanism}'>`;
  const child = (name: string) => {
    const c = el.getChild(name);
    if (!c) throw new Xep0227Error(`${at} has no <${name}>`);
    return c.getText();
  };
  const iterText = child('iter-count').trim();
  const iterations = /^[0-9]{1,9}$/.test(iterText) ? Number(iterText) : NaN;
  if (!(iterations >= 1)) throw new Xep0227Error(`${at}: <iter-count> ${JSON.stringify(iterText)} is not a positive count`);
  // Each login (PLAIN, and the client's side of SCRAM) runs this many PBKDF2 rounds: an imported file must not make one take minutes.
  if (iterations > MAX_IMPORTED_ITERATIONS) throw new Xep0227Error(`${at}: <iter-count> ${iterations} is more than ${MAX_IMPORTED_ITERATIONS} (a login would take too long)`);
  let salt = base64(child('salt'), `${at}: <salt>`);
  let storedKey = base64(child('stored-key'), `${at}: <stored-key>`);
  let serverKey = base64(child('server-key'), `${at}: <server-key>`);
  const { length } = hashInfo(hash);
  if (storedKey.length !== length || serverKey.length !== length) {
    const stored = undouble(storedKey, length);
    const server = undouble(serverKey, length);
    if (!stored || !server) throw new Xep0227Error(`${at}: <stored-key> and <server-key> must be ${length} bytes (${storedKey.length} and ${serverKey.length} given)`);
    // ejabberd's double encoding: the salt went through it too.
    storedKey = stored;
    serverKey = server;
    salt = base64(salt.toString('latin1'), `${at}: <salt> (decoded once)`);
  }
  if (salt.length === 0) throw new Xep0227Error(`${at}: empty <salt>`);
  return [hash, { salt, iterations, storedKey, serverKey }];
}

const PENDING_TO: TransitionTable = { none: 'none+in', 'none+out': 'none+out+in', to: 'to+in' };

function bareJid(raw: string | undefined, what: string): string {
  if (!raw) throw new Xep0227Error(`${what} has no jid`);
  try {
    const j = parseJid(raw);
    return bare(j);
  } catch (err) {
    throw new Xep0227Error(`${what}: ${JSON.stringify(raw)} is not a JID (${(err as Error).message})`);
  }
}

/** Stanzas are kept as a client stream carries them: jabber:client is the default, not an attribute. */
function asClientStanza(el: Element): Element {
  const copy = clone(el);
  if (copy.attrs.xmlns === NS_CLIENT || copy.attrs.xmlns === NS_PIE || copy.attrs.xmlns === undefined) delete copy.attrs.xmlns;
  else throw new Xep0227Error(`<${el.name} xmlns='${copy.attrs.xmlns}'> is no client stanza`);
  return copy;
}

/** An open <user> of this server's domain: its name checked. */
interface UserStart {
  name: string;
  /** The element, for errors: the file and the name as written. */
  at: string;
  attrs: Record<string, string>;
  file: string;
}

function userStart(host: string, file: string, attrs: Record<string, string>): UserStart {
  const nameAttr = attrs.name;
  const at = where(file, `<user name=${JSON.stringify(nameAttr ?? '')}>`);
  if (!nameAttr) throw new Xep0227Error(where(file, `<user> without a name in <host jid='${host}'>`));
  try {
    return { name: newUsername(nameAttr), at, attrs, file };
  } catch (err) {
    if (err instanceof InvalidUsernameError) throw new Xep0227Error(`${at}: ${err.message}`);
    throw err;
  }
}

/** XEP-0082 date-time, in ms since the epoch, within what an archive id holds. */
function stampMs(v: string | undefined, what: string): number {
  const ms = v !== undefined && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(v) ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw new Xep0227Error(`${what}: stamp=${JSON.stringify(v ?? '')} is not an XEP-0082 date-time`);
  if (ms < 0 || ms >= 16 ** 12) throw new Xep0227Error(`${what}: stamp=${JSON.stringify(v)} is before 1970 or too far ahead`);
  return Math.floor(ms);
}

/** The archive of one user as it is read: the ids made so far (their last ms and the count within it), what is left out. */
interface ArchiveRead {
  ms: number;
  seq: number;
  n: number;
  leftOut: string[];
}

const newArchiveRead = (): ArchiveRead => ({ ms: -1, seq: 0, n: 0, leftOut: [] });

/**
 * A child of a user's <archive>, checked and made a row of the archive, or
 * undefined for an element that is no XEP-0313 result (left out, and said).
 */
function archivedRow(el: Element, u: UserStart, domain: string, a: ArchiveRead): ArchivedMessage | undefined {
  a.n++;
  const ns = el.attrs.xmlns;
  const what = `${u.at}: <archive>: <${el.name} id=${JSON.stringify(el.attrs.id ?? '')}> (item ${a.n})`;
  if (el.name !== 'result') {
    a.leftOut.push(`archive/${el.name}`);
    return undefined;
  }
  if (ns !== NS_MAM) throw new Xep0227Error(`${what}: in ${JSON.stringify(ns ?? '')}, not ${NS_MAM}`);
  const forwarded = el.getChild('forwarded', NS_FORWARD);
  if (!forwarded) throw new Xep0227Error(`${what} has no <forwarded xmlns='${NS_FORWARD}'>`);
  const delay = forwarded.getChild('delay', NS_DELAY);
  if (!delay) throw new Xep0227Error(`${what} has no <delay xmlns='${NS_DELAY}'> in <forwarded>`);
  const ms = stampMs(delay.attrs.stamp, `${what}: <delay>`);
  const messages = forwarded.getChildElements().filter((c) => c.name === 'message');
  if (messages.length !== 1) throw new Xep0227Error(`${what}: <forwarded> holds ${messages.length} <message> elements, not one`);
  const msg = clone(messages[0]);
  if (msg.attrs.xmlns !== undefined && msg.attrs.xmlns !== NS_CLIENT) throw new Xep0227Error(`${what}: <message xmlns='${msg.attrs.xmlns}'> is no client stanza`);
  msg.attrs.xmlns = NS_CLIENT;
  const jidAttr = (attr: 'from' | 'to') => {
    const raw = msg.attrs[attr] as string | undefined;
    if (raw === undefined) return undefined;
    try {
      return parseJid(raw);
    } catch (err) {
      throw new Xep0227Error(`${what}: <message ${attr}=${JSON.stringify(raw)}> is not a JID (${(err as Error).message})`);
    }
  };
  const owner = `${u.name}@${domain}`;
  const from = jidAttr('from');
  const to = jidAttr('to');
  // Relative to the owner: without 'from', sent by the owner's client; without 'to', to the owner (RFC 6120 §8.1.1.1).
  const fromOwner = from === undefined || bare(from) === owner;
  const toOwner = to === undefined || bare(to) === owner;
  if (!fromOwner && !toOwner) throw new Xep0227Error(`${what}: the message is neither from nor to ${owner}`);
  // Sent to another: outgoing; received, or to oneself: incoming, as the archive keeps them (modules/mam.ts).
  const outgoing = fromOwner && !toOwner;
  const peer = outgoing ? to! : (from ?? parseJid(owner));
  // XEP-0359 §3.3: a stanza-id in our name is one this archive did not give.
  for (const sid of msg.getChildren('stanza-id', NS_SID)) {
    const by: string = sid.attrs.by ?? '';
    if (by.slice(by.indexOf('@') + 1).split('/')[0] === domain) msg.remove(sid);
  }
  let id = el.attrs.id;
  // One of ours, of the time of its stamp (to the second, as other tools write it), is kept; any other is made from the stamp.
  if (id === undefined || !isArchiveId(id) || Math.floor(stampOf(id) / 1000) !== Math.floor(ms / 1000)) {
    if (ms === a.ms) a.seq++;
    else {
      a.ms = ms;
      a.seq = 0;
    }
    // More than 65536 in one ms borrow the next (as archiveId does).
    id = idAt(ms + Math.floor(a.seq / 0x10000), a.seq);
  }
  const body = msg.getChild('body');
  return { id, owner: u.name, stamp: stampOf(id), withBare: bare(peer), withResource: peer.resource, outgoing, body: body ? body.getText().slice(0, 64 * 1024) : '', xml: msg.toString() };
}

const ACCESS_MODELS: readonly AccessModel[] = ['presence', 'open', 'whitelist', 'roster'];
const SEND_LAST: readonly SendLast[] = ['never', 'on_sub', 'on_sub_and_presence'];
/** Roster groups a node keeps in pubsub#roster_groups_allowed (as modules/pep.ts). */
const MAX_ROSTER_GROUPS_ALLOWED = 100;

function pepNodeName(raw: string | undefined, what: string): string {
  if (!raw) throw new Xep0227Error(`${what} has no node attribute`);
  if (raw.length > MAX_NAME) throw new Xep0227Error(`${what}: a node name is at most ${MAX_NAME} characters`);
  return raw;
}

/**
 * A node's configuration from its pubsub#node_config form (XEP-0060 §16.4),
 * on the defaults; what this server keeps otherwise than written goes to
 * `notes`. Throws Xep0227Error for a value no PEP service has.
 */
function nodeConfig(x: Element | undefined, what: string, notes: string[]): NodeConfig {
  const c: NodeConfig = { ...DEFAULT_CONFIG, rosterGroups: [] };
  if (!x) return c;
  const values = new Map<string, string[]>();
  for (const f of x.getChildren('field')) if (f.attrs.var) values.set(f.attrs.var, f.getChildren('value').map((v) => v.getText().trim()));
  const formType = values.get('FORM_TYPE')?.[0];
  if (formType !== undefined && formType !== NODE_CONFIG) throw new Xep0227Error(`${what}: a form of FORM_TYPE ${JSON.stringify(formType)}, not ${NODE_CONFIG}`);
  // A field without a value is one the old server left at its default (Prosody writes them all).
  const one = (v: string): string | undefined => {
    const got = values.get(v)?.[0];
    return got === undefined || got === '' ? undefined : got;
  };
  const bool = (v: string): boolean | undefined => {
    const got = one(v);
    if (got === undefined) return undefined;
    if (got === '1' || got === 'true') return true;
    if (got === '0' || got === 'false') return false;
    throw new Xep0227Error(`${what}: ${v} ${JSON.stringify(got)} is not a boolean`);
  };
  const access = one('pubsub#access_model');
  if (access === 'authorize') {
    // Nobody is let in until the owner approves: only the owner, as 'whitelist' without members.
    c.accessModel = 'whitelist';
    notes.push("PEP nodes with pubsub#access_model 'authorize' (made 'whitelist')");
  } else if (access !== undefined) {
    if (!ACCESS_MODELS.includes(access as AccessModel)) throw new Xep0227Error(`${what}: pubsub#access_model ${JSON.stringify(access)}`);
    c.accessModel = access as AccessModel;
  }
  c.persistItems = bool('pubsub#persist_items') ?? c.persistItems;
  const max = one('pubsub#max_items');
  if (max !== undefined) {
    // XEP-0060 §16.4.3: 'max' is the service's own bound.
    const n = max === 'max' ? MAX_ITEMS : /^\d{1,9}$/.test(max) ? Number(max) : NaN;
    if (Number.isNaN(n)) throw new Xep0227Error(`${what}: pubsub#max_items ${JSON.stringify(max)} is neither a count nor max`);
    if (n > MAX_ITEMS) notes.push(`PEP nodes with pubsub#max_items above ${MAX_ITEMS} (made ${MAX_ITEMS})`);
    c.maxItems = Math.min(Math.max(n, 1), MAX_ITEMS);
  }
  const sendLast = one('pubsub#send_last_published_item');
  if (sendLast !== undefined) {
    if (!SEND_LAST.includes(sendLast as SendLast)) throw new Xep0227Error(`${what}: pubsub#send_last_published_item ${JSON.stringify(sendLast)}`);
    c.sendLastPublishedItem = sendLast as SendLast;
  }
  c.notifyRetract = bool('pubsub#notify_retract') ?? c.notifyRetract;
  c.rosterGroups = [...new Set((values.get('pubsub#roster_groups_allowed') ?? []).filter((g) => g !== ''))].slice(0, MAX_ROSTER_GROUPS_ALLOWED);
  return c;
}

/**
 * The user's PEP items brought within the account's bound in bytes
 * (MAX_ACCOUNT_BYTES, which a publish checks: an account imported past it
 * could publish nothing). Past it, each node keeps its newest items first:
 * the newest of every node, then the second newest of every node, and so
 * on while they fit (a node whose next item does not fit keeps no older
 * one); the rest is counted as dropped, and said.
 */
function fitAccountBytes(data: UserData, maxBytes = MAX_ACCOUNT_BYTES): void {
  const size = (it: PepItem) => Buffer.byteLength(it.xml, 'utf8');
  if (data.pep.reduce((sum, n) => sum + n.items.reduce((s, it) => s + size(it), 0), 0) <= maxBytes) return;
  const keep = data.pep.map(() => 0);
  const full = data.pep.map(() => false);
  let used = 0;
  for (let rank = 0, more = true; more; rank++) {
    more = false;
    data.pep.forEach((n, i) => {
      if (full[i] || rank >= n.items.length) return;
      const b = size(n.items[n.items.length - 1 - rank]);
      if (used + b > maxBytes) {
        full[i] = true;
        return;
      }
      used += b;
      keep[i]++;
      more = true;
    });
  }
  data.pep.forEach((n, i) => {
    data.pepDropped += n.items.length - keep[i];
    n.items = n.items.slice(n.items.length - keep[i]);
  });
  data.notes.push(`PEP items past the account's ${maxBytes} bytes (the oldest of each node not kept)`);
}

/** An <item> of a node's <items>, as PEP keeps it, or undefined for one a publish would have been refused (counted by the caller). */
function pepItem(item: Element, what: string): PepItem | undefined {
  const id = item.attrs.id as string | undefined;
  if (!id) throw new Xep0227Error(`${what}: an <item> without an id`);
  if (id.length > MAX_NAME) throw new Xep0227Error(`${what}: an item id is at most ${MAX_NAME} characters`);
  // XEP-0060 §7.1.3.7: one payload; stored and sent on alone, it must state its namespace and declare its prefixes (as modules/pep.ts).
  const payloads = item.getChildElements();
  if (payloads.length !== 1 || !selfContained(payloads[0])) return undefined;
  const xml = payloads[0].toString();
  if (Buffer.byteLength(xml, 'utf8') > MAX_ITEM_BYTES) return undefined;
  return { id, xml };
}

/**
 * The blocklist a user's default privacy list amounts to (see the head of
 * this file): the JIDs its items deny everything, in the order XEP-0016
 * §2.2 applies them, up to its first item without a type.
 */
function blockedFrom(list: Element, what: string, notes: string[]): string[] {
  const rules = list.getChildren('item').map((it, i) => {
    const order = /^\d{1,10}$/.test(it.attrs.order ?? '') ? Number(it.attrs.order) : Number.POSITIVE_INFINITY;
    return { it, i, order };
  });
  rules.sort((a, b) => a.order - b.order || a.i - b.i);
  const out = new Set<string>();
  for (const { it } of rules) {
    const { type, action, value } = it.attrs as Record<string, string | undefined>;
    if (action !== 'allow' && action !== 'deny') throw new Xep0227Error(`${what}: <item action=${JSON.stringify(action ?? '')}>: neither allow nor deny`);
    if (type === undefined) {
      // The fall-through: it decides for everyone else, and nothing after it is reached (§2.2, rule 6).
      if (action === 'deny') notes.push('privacy lists that deny everyone not allowed before (not kept)');
      break;
    }
    if (type !== 'jid') {
      notes.push(`privacy list items of type ${type === 'group' || type === 'subscription' ? type : 'other than jid'} (not kept)`);
      continue;
    }
    if (it.getChildElements().length > 0) {
      notes.push('privacy list items about some kinds of stanza only (not kept)');
      continue;
    }
    if (action === 'allow') {
      notes.push('privacy list items that allow a JID (not kept)');
      continue;
    }
    let jid: string;
    try {
      jid = normalizeBlocked(value ?? '');
    } catch (err) {
      throw new Xep0227Error(`${what}: <item type='jid' value=${JSON.stringify(value ?? '')}>: not a JID (${(err as Error).message})`);
    }
    out.add(jid);
  }
  return [...out];
}

/** A <user> (what is held of it: all but its archive) checked and turned into what the stores take. */
function readUser({ name, at, attrs }: UserStart, children: Element[], domain: string): UserData {
  const userBare = `${name}@${domain}`;
  const data: UserData = { name, verifiers: {}, items: [], pending: [], offline: [], private: [], pep: [], pepDropped: 0, blocked: [], leftOut: [], notes: [] };
  const privateXml = new Map<string, string[]>();
  const pepConfigs = new Map<string, NodeConfig>();
  const pepItems = new Map<string, Element[]>();
  const pepMembers = new Map<string, Set<string>>();
  if (attrs.password !== undefined && attrs.password !== '') data.password = attrs.password;
  const pendingFrom = new Set<string>();
  for (const el of children) {
    const ns = el.attrs.xmlns;
    if (el.name === 'scram-credentials' && ns === NS_PIE_SCRAM) {
      const [hash, creds] = scramOf(el, at);
      const had = data.verifiers[hash];
      // Prosody may write the same element twice; two that differ are a contradiction.
      if (had && !(had.salt.equals(creds.salt) && had.iterations === creds.iterations && had.storedKey.equals(creds.storedKey) && had.serverKey.equals(creds.serverKey))) {
        throw new Xep0227Error(`${at}: two different <scram-credentials mechanism='${el.attrs.mechanism}'>`);
      }
      data.verifiers[hash] = creds;
    } else if (el.name === 'query' && ns === NS_ROSTER) {
      const jids = new Set<string>();
      for (const item of el.getChildren('item')) {
        const what = `${at}: roster <item jid=${JSON.stringify(item.attrs.jid ?? '')}>`;
        const jid = bareJid(item.attrs.jid, what);
        if (jid === userBare || jids.has(jid)) continue; // no item for oneself (as Prosody); a repeated one once
        jids.add(jid);
        const subscription = (item.attrs.subscription ?? 'none') as Subscription;
        if (!SUBSCRIPTIONS.includes(subscription)) throw new Xep0227Error(`${what}: subscription ${JSON.stringify(subscription)}`);
        const ask = item.attrs.ask === 'subscribe' ? 'subscribe' : undefined;
        const groups = [...new Set(item.getChildren('group').map((g) => g.getText()).filter((g) => g !== ''))];
        data.items.push({ jid, ...(item.attrs.name ? { name: item.attrs.name } : {}), subscription, ...(ask ? { ask } : {}), groups });
      }
    } else if (el.name === 'presence' && (ns === undefined || ns === NS_CLIENT || ns === NS_PIE)) {
      if (el.attrs.type !== 'subscribe') throw new Xep0227Error(`${at}: <presence type=${JSON.stringify(el.attrs.type ?? '')}>: only pending subscription requests (type='subscribe') are expected`);
      const jid = bareJid(el.attrs.from, `${at}: <presence type='subscribe'> from`);
      if (pendingFrom.has(jid) || jid === userBare) continue; // Prosody may write it twice
      pendingFrom.add(jid);
      const stanza = asClientStanza(el);
      stanza.attrs.from = jid;
      stanza.attrs.to = userBare;
      data.pending.push({ jid, stanza: stanza.toString() });
    } else if (el.name === 'offline-messages' && (ns === undefined || ns === NS_PIE)) {
      for (const m of el.getChildElements()) {
        if (m.name !== 'message') throw new Xep0227Error(`${at}: <${m.name}> in <offline-messages>`);
        let msg: Element;
        try {
          msg = asClientStanza(m);
        } catch (err) {
          throw new Xep0227Error(`${at}: <offline-messages>: ${(err as Error).message}`);
        }
        msg.attrs.to ??= userBare;
        // Kept with the stamp it came with (XEP-0203: when it was first stored); one of ours when it has none.
        data.offline.push((msg.getChild('delay', NS_DELAY) ? msg : stamp(msg, domain, new Date())).toString());
      }
    } else if (el.name === 'vCard' && ns === NS_VCARD) {
      const v = clone(el);
      v.attrs.xmlns = NS_VCARD;
      data.vcard = { xml: v.toString(), photoHash: photoHash(v) };
    } else if (el.name === 'query' && ns === NS_PRIVATE) {
      for (const c of el.getChildElements()) {
        const cns = c.name.includes(':') ? undefined : c.attrs.xmlns;
        if (cns === undefined || cns === '' || PRIVATE_RESERVED.has(cns)) {
          data.leftOut.push(`query/${c.name}`);
          continue;
        }
        privateXml.set(cns, [...(privateXml.get(cns) ?? []), c.toString()]);
      }
    } else if (el.name === 'query' && ns === NS_PRIVACY) {
      const def = el.getChild('default')?.attrs.name as string | undefined;
      for (const list of el.getChildren('list')) {
        const what = `${at}: <query xmlns='${NS_PRIVACY}'>: <list name=${JSON.stringify(list.attrs.name ?? '')}>`;
        // Only the default list applies to the user as a whole (XEP-0016 §2.2, rule 2); the others apply to the sessions that choose them.
        if (def === undefined || list.attrs.name !== def) {
          data.notes.push('privacy lists other than the default (not kept)');
          continue;
        }
        data.blocked = blockedFrom(list, what, data.notes);
      }
      if (data.blocked.length > MAX_BLOCKED) throw new Xep0227Error(`${at}: a blocklist of ${data.blocked.length} JIDs, more than ${MAX_BLOCKED}`);
    } else if (el.name === 'pubsub' && ns === NS_PUBSUB_OWNER) {
      for (const c of el.getChildElements()) {
        const what = `${at}: <pubsub xmlns='${NS_PUBSUB_OWNER}'>: <${c.name} node=${JSON.stringify(c.attrs.node ?? '')}>`;
        if (c.name === 'configure') {
          const node = pepNodeName(c.attrs.node, what);
          if (pepConfigs.has(node)) throw new Xep0227Error(`${what}: the node is configured twice`);
          pepConfigs.set(node, nodeConfig(c.getChild('x', NS_DATA), what, data.notes));
        } else if (c.name === 'affiliations') {
          const node = pepNodeName(c.attrs.node, what);
          const members = pepMembers.get(node) ?? new Set<string>();
          pepMembers.set(node, members);
          for (const a of c.getChildren('affiliation')) {
            const jid = bareJid(a.attrs.jid, `${what}: <affiliation>`);
            const aff = a.attrs.affiliation as string | undefined;
            // The owner's own affiliation goes without saying (Prosody writes it); 'none' is no affiliation.
            if (jid === userBare || aff === 'none') continue;
            if (aff === 'member') members.add(jid);
            else if (aff === 'publisher') {
              // XEP-0060 §4.1: a publisher may read as a member may; publishing is the owner's alone here (XEP-0163 §4.1).
              members.add(jid);
              data.notes.push('PEP publisher affiliations (kept as member: only the account publishes to its PEP nodes)');
            } else data.notes.push(`PEP ${aff === 'owner' || aff === 'outcast' || aff === 'publish-only' ? aff : 'other'} affiliations (not kept: only members are let in)`);
          }
          if (members.size > MAX_WHITELIST) throw new Xep0227Error(`${what}: a whitelist of ${members.size} JIDs, more than ${MAX_WHITELIST}`);
        } else data.leftOut.push(`pubsub/${c.name}`);
      }
    } else if (el.name === 'pubsub' && ns === NS_PUBSUB) {
      for (const c of el.getChildElements()) {
        if (c.name !== 'items') {
          data.leftOut.push(`pubsub/${c.name}`);
          continue;
        }
        const node = pepNodeName(c.attrs.node, `${at}: <pubsub xmlns='${NS_PUBSUB}'>: <items>`);
        pepItems.set(node, [...(pepItems.get(node) ?? []), ...c.getChildren('item')]);
      }
    } else data.leftOut.push(el.name);
  }
  const nodes = [...new Set([...pepConfigs.keys(), ...pepItems.keys()])].sort();
  if (nodes.length > MAX_NODES) throw new Xep0227Error(`${at}: ${nodes.length} PEP nodes, more than ${MAX_NODES}`);
  for (const node of nodes) {
    // XEP-0227 1.1 asks a configuration of every node with items; without one, it has the defaults of a node a publish creates.
    const config = pepConfigs.get(node) ?? DEFAULT_CONFIG;
    const byId = new Map<string, PepItem>();
    for (const el of pepItems.get(node) ?? []) {
      const item = pepItem(el, `${at}: <items node=${JSON.stringify(node)}>`);
      if (!item) {
        data.pepDropped++;
        continue;
      }
      // A repeated id replaces the item, newest where it was last (as a publish does).
      byId.delete(item.id);
      byId.set(item.id, item);
    }
    const all = [...byId.values()];
    const keep = kept(config);
    data.pepDropped += Math.max(0, all.length - keep);
    data.pep.push({ node, config, items: all.slice(Math.max(0, all.length - keep)), members: [...(pepMembers.get(node) ?? [])].sort() });
  }
  if ([...pepMembers].some(([node, m]) => m.size > 0 && !pepConfigs.has(node) && !pepItems.has(node))) data.notes.push('PEP affiliations of a node that is not there (not kept)');
  fitAccountBytes(data);
  for (const [ns, list] of [...privateXml].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) data.private.push({ ns, xml: list.join('') });
  if (!data.password && Object.keys(data.verifiers).length === 0) throw new Xep0227Error(`${at}: no password and no <scram-credentials>: the account could never log in`);
  return data;
}

// ---------------------------------------------------------------------------
// Import

function emptyReport(): ImportReport {
  return { accounts: 0, fromPassword: 0, sha1Only: 0, rosterItems: 0, pending: 0, offline: 0, offlineDropped: 0, archived: 0, vcards: 0, privateXml: 0, pepNodes: 0, pepItems: 0, pepDropped: 0, blocked: 0, skipped: [], otherHosts: new Map(), leftOut: new Map(), notes: new Map() };
}

/** Raised by importFiles when it stops part way: what was imported until then is in `report`. */
export class ImportFailedError extends Error {
  override name = 'ImportFailedError';
  readonly report: ImportReport;
  constructor(message: string, report: ImportReport, cause: unknown) {
    super(message, { cause });
    this.report = report;
  }
}

/** What a pass over the input does with each user of this domain, as it is read. */
interface UserVisitor {
  /** A <user> opens: its name checked. */
  begin(u: UserStart): Promise<void>;
  /** A message of its archive, checked. */
  archived(row: ArchivedMessage): Promise<void>;
  /** It closed: the rest of it, checked; `archived` is how many messages its archive held. */
  end(u: UserData, start: UserStart, archived: number): Promise<void>;
}

/** Reads the input once, telling `v` of the users of `domain`; counts those of other hosts. Returns how many users of `domain` it held. */
async function walk(paths: string[], maxUserBytes: number, domain: string, otherHosts: Map<string, number>, v: UserVisitor): Promise<number> {
  let mine = 0;
  let cur: { start: UserStart; children: Element[]; archive: ArchiveRead; rows: number } | undefined;
  for await (const it of items(paths, maxUserBytes)) {
    if (it.kind === 'user') {
      cur = undefined;
      if (it.host !== domain) {
        otherHosts.set(it.host, (otherHosts.get(it.host) ?? 0) + 1);
        continue;
      }
      mine++;
      cur = { start: userStart(it.host, it.file, it.attrs), children: [], archive: newArchiveRead(), rows: 0 };
      await v.begin(cur.start);
    } else if (!cur) continue;
    else if (it.kind === 'child') cur.children.push(it.el);
    else if (it.kind === 'archived') {
      const row = archivedRow(it.el, cur.start, domain, cur.archive);
      if (row) {
        cur.rows++;
        await v.archived(row);
      }
    } else {
      const u = readUser(cur.start, cur.children, domain);
      u.leftOut.push(...new Set(cur.archive.leftOut));
      const { start, rows } = cur;
      cur = undefined;
      await v.end(u, start, rows);
    }
  }
  return mine;
}

/**
 * Imports the users of `opts.domain` from XEP-0227 files. Throws
 * Xep0227Error (nothing written) for bad input, for an account that exists
 * here (unless skipExisting), and for verifiers the store cannot keep;
 * ImportFailedError when a store fails part way.
 */
export async function importFiles(paths: string[], stores: Xep0227Stores, opts: ImportOptions): Promise<ImportReport> {
  const { accounts, archive } = stores;
  const maxUserBytes = opts.maxUserBytes ?? DEFAULT_MAX_USER_BYTES;
  const batchSize = opts.archiveBatch ?? ARCHIVE_BATCH;
  const domain = normalizeDomain(opts.domain);

  // First pass: everything checked, nothing written.
  const check = emptyReport();
  const existing: string[] = [];
  const names = new Set<string>();
  const mine = await walk(paths, maxUserBytes, domain, check.otherHosts, {
    async begin({ name, file }) {
      if (names.has(name)) throw new Xep0227Error(where(file, `<user name='${name}'> appears twice`));
      names.add(name);
      if (await accounts.exists(name)) existing.push(name);
    },
    async archived() {},
    async end(u, { file }, archived) {
      if (u.items.length > opts.maxRosterItems) throw new Xep0227Error(where(file, `<user name='${u.name}'>: ${u.items.length} roster items, more than XMPP_MAX_ROSTER_ITEMS (${opts.maxRosterItems})`));
      tally(check, u, archived);
    },
  });
  if (mine === 0) {
    const others = [...check.otherHosts.keys()];
    throw new Xep0227Error(others.length > 0 ? `no user of ${domain} in the input (it holds ${others.join(', ')}): the domain must be this server's (XMPP_DOMAIN)` : 'no user in the input');
  }
  if (existing.length > 0 && !opts.skipExisting) {
    const shown = existing.slice(0, 10).join(', ') + (existing.length > 10 ? `, and ${existing.length - 10} more` : '');
    throw new Xep0227Error(`${existing.length} account(s) of the input exist here already: ${shown}. Nothing was imported; --skip-existing imports the others and leaves those as they are`);
  }
  if (opts.dryRun) {
    check.skipped = existing;
    return check;
  }

  // Second pass: user by user, the archive first (as it is read, in batches), the account last.
  const report = emptyReport();
  report.otherHosts = check.otherHosts;
  const skip = new Set(existing);
  let current = '';
  let writing = false;
  let batch: ArchivedMessage[] = [];
  let written = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    await archive.append(batch);
    written += batch.length;
    batch = [];
  };
  try {
    await walk(paths, maxUserBytes, domain, new Map(), {
      async begin({ name }) {
        current = name;
        writing = !skip.has(name) && !(await accounts.exists(name));
        if (!writing) {
          report.skipped.push(name);
          return;
        }
        // No account: whatever the archive holds under the name is what an import stopped part way left.
        await archive.removeAll(name);
        batch = [];
        written = 0;
      },
      async archived(row) {
        if (!writing) return;
        batch.push(row);
        if (batch.length >= batchSize) await flush();
      },
      async end(u) {
        if (!writing) return;
        await flush();
        if (await writeUser(u, stores, opts, report)) {
          tally(report, u, written);
          opts.onUser?.(u.name);
        }
        writing = false;
      },
    });
  } catch (err) {
    const done = `imported ${summary(report)}`;
    throw new ImportFailedError(`the import stopped at user ${current}: ${(err as Error).message}; ${done}; the rest was not imported (running the import again with --skip-existing takes up where it stopped)`, report, err);
  }
  return report;
}

function tally(r: ImportReport, u: UserData, archived: number): void {
  r.accounts++;
  if (u.password) r.fromPassword++;
  else if (!u.verifiers['SHA-256']) r.sha1Only++;
  r.rosterItems += u.items.length;
  r.pending += u.pending.length;
  r.offline += u.offline.length;
  r.archived += archived;
  if (u.vcard) r.vcards++;
  r.privateXml += u.private.length;
  r.pepNodes += u.pep.length;
  for (const n of u.pep) r.pepItems += n.items.length;
  r.pepDropped += u.pepDropped;
  r.blocked += u.blocked.length;
  for (const n of new Set(u.leftOut)) r.leftOut.set(n, (r.leftOut.get(n) ?? 0) + 1);
  for (const n of new Set(u.notes)) r.notes.set(n, (r.notes.get(n) ?? 0) + 1);
}

/** Writes what is not the archive (written already), the account last; false when the account was created meanwhile. `u` is left with what was kept. */
async function writeUser(u: UserData, { accounts, roster, offline, archive, personal, pep, blocking }: Xep0227Stores, opts: ImportOptions, report: ImportReport): Promise<boolean> {
  // No account: whatever a store holds under the name is what an import stopped part way left.
  await roster.removeAll(u.name);
  await offline.removeAll(u.name);
  await personal.removeAll(u.name);
  await pep.removeAll(u.name);
  await blocking.unblockAll(u.name);
  for (const n of u.pep) {
    await pep.create(u.name, n.node, n.config, MAX_NODES);
    // Oldest first, each the newest when published: the node's order as it was.
    for (const item of n.items) await pep.publish(u.name, n.node, item, n.config, MAX_NODES);
    for (const jid of n.members) await pep.setAffiliation(u.name, n.node, jid, 'member');
  }
  if (u.blocked.length > 0) await blocking.block(u.name, u.blocked, MAX_BLOCKED);
  if (u.vcard) await personal.setVcard(u.name, u.vcard);
  // The per-account limits are the protocol's (modules/private.ts): an import keeps what the old server kept.
  if (u.private.length > 0) await personal.setPrivateXml(u.name, u.private, Number.MAX_SAFE_INTEGER);
  const max = opts.maxRosterItems;
  for (const item of u.items) {
    await roster.set(u.name, { jid: item.jid, ...(item.name !== undefined ? { name: item.name } : {}), groups: item.groups }, max, opts.maxRosterBytes);
    if (item.subscription !== 'none' || item.ask) await roster.setSubscription(u.name, item.jid, item.subscription, item.ask);
  }
  let pending = 0;
  for (const p of u.pending) {
    // A request from a contact the user is subscribed-from already is answered: none is kept (RFC 6121 Appendix A).
    const r = await roster.transition(u.name, p.jid, PENDING_TO, { max, request: p.stanza, maxPending: Number.MAX_SAFE_INTEGER });
    if (r.after !== r.before) pending++;
  }
  let kept = 0;
  for (const xml of u.offline) {
    if (await offline.push(u.name, xml, { max: opts.maxOfflineMessages, maxBytes: opts.maxOfflineBytes })) kept++;
    else report.offlineDropped++;
  }
  const verifiers = u.password ? await deriveBoth(u.password, opts.iterations).then(([sha1, sha256]) => ({ 'SHA-1': sha1, 'SHA-256': sha256 })) : u.verifiers;
  if (!(await accounts.importAccount(u.name, verifiers))) {
    // Created meanwhile (by a registration, say): its data stays as the server made it.
    await roster.removeAll(u.name).catch(() => {});
    await offline.removeAll(u.name).catch(() => {});
    await archive.removeAll(u.name).catch(() => {});
    await personal.removeAll(u.name).catch(() => {});
    await pep.removeAll(u.name).catch(() => {});
    await blocking.unblockAll(u.name).catch(() => {});
    report.skipped.push(u.name);
    return false;
  }
  // The server's workers know which accounts block anyone (modules/blocking.ts): this one does now.
  if (u.blocked.length > 0) await opts.announceBlocklist?.(u.name);
  u.pending = u.pending.slice(0, pending);
  u.offline = u.offline.slice(0, kept);
  return true;
}

export function summary(r: ImportReport): string {
  return `${r.accounts} accounts (${r.fromPassword} from a plaintext password, ${r.sha1Only} with SCRAM-SHA-1 only), ${r.rosterItems} roster items, ${r.pending} pending subscription requests, ${r.offline} offline messages, ${r.archived} archived messages, ${r.vcards} vCards, ${r.privateXml} namespaces of private XML, ${r.pepNodes} PEP nodes with ${r.pepItems} items, ${r.blocked} blocked JIDs`;
}

// ---------------------------------------------------------------------------
// Export

export interface ExportCounts {
  accounts: number;
  rosterItems: number;
  pending: number;
  offline: number;
  archived: number;
  vcards: number;
  privateXml: number;
  pepNodes: number;
  pepItems: number;
  blocked: number;
}

const escAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');

/** The stored stanza (no namespace of its own: jabber:client by the stream) with its namespace written out. */
function withClientNs(xml: string): string {
  const el = parseStored(xml);
  el.attrs.xmlns = NS_CLIENT;
  return el.toString();
}

/** A stanza the stores kept (serialised by ltx), parsed with the server's parser. */
export function parseStored(xml: string): Element {
  let el: Element | undefined;
  let error: string | undefined;
  const p = new StreamParser(
    {
      streamStart() {},
      element(e) {
        el ??= e;
      },
      streamEnd() {},
      error(_c, text) {
        error = text;
      },
    },
    { maxStanzaBytes: Buffer.byteLength(xml) + 64, maxStanzaElements: Number.MAX_SAFE_INTEGER },
  );
  p.write(Buffer.from(`<r xmlns='${NS_CLIENT}'>${xml}</r>`));
  p.end();
  if (!el || error) throw new Error(`a stored stanza does not parse: ${error ?? 'empty'}`);
  return el;
}

function scramElement(hash: ScramHash, c: ScramCredentials): string {
  const b = (x: Buffer) => x.toString('base64');
  return `<scram-credentials xmlns='${NS_PIE_SCRAM}' mechanism='SCRAM-${hash}'><iter-count>${c.iterations}</iter-count><salt>${b(c.salt)}</salt><server-key>${b(c.serverKey)}</server-key><stored-key>${b(c.storedKey)}</stored-key></scram-credentials>`;
}

function rosterElement(items: RosterItem[]): string {
  const out = [`<query xmlns='${NS_ROSTER}'>`];
  for (const it of items) {
    out.push(`<item jid='${escAttr(it.jid)}'${it.name !== undefined ? ` name='${escAttr(it.name)}'` : ''} subscription='${it.subscription}'${it.ask ? ` ask='${it.ask}'` : ''}`);
    out.push(it.groups.length === 0 ? '/>' : `>${it.groups.map((g) => new Element('group').t(g).toString()).join('')}</item>`);
  }
  out.push('</query>');
  return out.join('');
}

/** The blocklist as XEP-0227 §"Privacy Lists" has a user's lists: the default one, denying each JID everything, in order. */
function privacyElement(jids: string[]): string {
  const items = jids.map((j, i) => `<item type='jid' value='${escAttr(j)}' action='deny' order='${i + 1}'/>`).join('');
  return `<query xmlns='${NS_PRIVACY}'><default name='${BLOCKLIST_NAME}'/><list name='${BLOCKLIST_NAME}'>${items}</list></query>`;
}

/** A node's configuration as a pubsub#node_config form (XEP-0227 §"PEP node configuration"), what the store keeps of it. */
function configureElement(node: string, c: NodeConfig): string {
  const field = (v: string, values: string[]) => `<field var='${v}'>${values.map((x) => `<value>${escAttr(x)}</value>`).join('')}</field>`;
  return `<configure node='${escAttr(node)}'><x xmlns='${NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NODE_CONFIG}</value></field>${[
    field('pubsub#access_model', [c.accessModel]),
    field('pubsub#persist_items', [c.persistItems ? '1' : '0']),
    field('pubsub#max_items', [String(c.maxItems)]),
    field('pubsub#send_last_published_item', [c.sendLastPublishedItem]),
    field('pubsub#notify_retract', [c.notifyRetract ? '1' : '0']),
    // Empty is the default: no field, as for a server that has none (Prosody 0.12).
    c.rosterGroups.length > 0 ? field('pubsub#roster_groups_allowed', c.rosterGroups) : '',
  ].join('')}</x></configure>`;
}

/**
 * A node's whitelist as Prosody's XEP-0227 writer has it (and XEP-0060
 * §8.9.1's answer): <affiliations node> beside its <configure>, the owner
 * first, then each member; nothing for a node without members.
 */
function affiliationsElement(node: string, owner: string, affs: { jid: string; affiliation: string }[]): string {
  if (affs.length === 0) return '';
  return `<affiliations node='${escAttr(node)}'><affiliation jid='${escAttr(owner)}' affiliation='owner'/>${affs.map((a) => `<affiliation jid='${escAttr(a.jid)}' affiliation='${escAttr(a.affiliation)}'/>`).join('')}</affiliations>`;
}

/** One archived message as a XEP-0313 result (XEP-0227 §"Message Archive"): its id, when it was received, the stanza. */
function resultElement(m: ArchivedMessage): string {
  return `<result xmlns='${NS_MAM}' id='${escAttr(m.id)}'><forwarded xmlns='${NS_FORWARD}'><delay xmlns='${NS_DELAY}' stamp='${dateTime(new Date(m.stamp))}'/>${withClientNs(m.xml)}</forwarded></result>`;
}

/**
 * Writes the accounts of `domain` (SCRAM verifiers, never a password),
 * their rosters, pending requests, offline messages, vCards, private XML,
 * blocklists, PEP nodes and message archives
 * (not the archiving preferences: the format has no place for them) to
 * `file`, through a temporary file renamed at the end (a failed export
 * leaves no half file), readable by its owner only. One user is held at a
 * time, and of its offline messages and archive one page at a time.
 */
export async function exportFile(file: string, stores: Xep0227Stores, domain: string): Promise<ExportCounts> {
  const { accounts, roster, offline, archive, personal, pep, blocking } = stores;
  const counts: ExportCounts = { accounts: 0, rosterItems: 0, pending: 0, offline: 0, archived: 0, vcards: 0, privateXml: 0, pepNodes: 0, pepItems: 0, blocked: 0 };
  const tmp = `${file}.${process.pid}.tmp`;
  const out = createWriteStream(tmp, { mode: 0o600, flags: 'wx' });
  const opened = once(out, 'open');
  let failed: Error | undefined;
  out.on('error', (err) => {
    failed = err;
  });
  const write = async (s: string) => {
    if (failed) throw failed;
    if (!out.write(s)) await Promise.race([once(out, 'drain'), once(out, 'error')]);
    if (failed) throw failed;
  };
  try {
    await opened;
    await write(`<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='${NS_PIE}'>\n<host jid='${escAttr(domain)}'>\n`);
    for (const name of await accounts.list()) {
      const parts: string[] = [];
      for (const h of SCRAM_HASHES) {
        const c = await accounts.scram(name, h);
        if (c) parts.push(scramElement(h, c));
      }
      if (parts.length === 0) continue; // removed meanwhile
      const r = await roster.get(name);
      if (r.items.length > 0) parts.push(rosterElement(r.items));
      const pending = await roster.pendingRequests(name);
      for (const p of pending) parts.push(withClientNs(p.stanza));
      counts.rosterItems += r.items.length;
      counts.pending += pending.length;
      // The vCard and private XML as the store keeps them: elements with their namespace written out.
      const vcard = await personal.vcard(name);
      if (vcard) parts.push(vcard.xml);
      const priv = await personal.privateAll(name);
      if (priv.length > 0) parts.push(`<query xmlns='${NS_PRIVATE}'>${priv.map((e) => e.xml).join('')}</query>`);
      counts.vcards += vcard ? 1 : 0;
      counts.privateXml += priv.length;
      const blocked = await blocking.list(name);
      if (blocked.length > 0) parts.push(privacyElement(blocked));
      counts.blocked += blocked.length;
      const nodes = await pep.nodes(name);
      if (nodes.length > 0) {
        const owner: string[] = [];
        for (const n of nodes) owner.push(configureElement(n.node, n.config), affiliationsElement(n.node, `${name}@${domain}`, await pep.affiliations(name, n.node)));
        parts.push(`<pubsub xmlns='${NS_PUBSUB_OWNER}'>${owner.join('')}</pubsub>`);
      }
      await write(`<user name='${escAttr(name)}'>${parts.join('')}`);
      // PEP items one node at a time (at most MAX_ITEMS of MAX_ITEM_BYTES held), oldest first.
      if (nodes.length > 0) {
        await write(`<pubsub xmlns='${NS_PUBSUB}'>`);
        for (const { node } of nodes) {
          const items = await pep.items(name, node);
          await write(`<items node='${escAttr(node)}'>${items.map((it) => `<item id='${escAttr(it.id)}'>${it.xml}</item>`).join('')}</items>`);
          counts.pepItems += items.length;
        }
        await write('</pubsub>');
        counts.pepNodes += nodes.length;
      }
      let after = '';
      let first = true;
      for (;;) {
        const batch = await offline.peek(name, after, 100);
        if (batch.length === 0) break;
        if (first) await write('<offline-messages>');
        first = false;
        for (const m of batch) await write(withClientNs(m.xml));
        counts.offline += batch.length;
        after = batch[batch.length - 1].id;
      }
      if (!first) await write('</offline-messages>');
      // The archive oldest first, a page at a time (ids sort as the messages were received).
      let afterId: string | undefined;
      for (;;) {
        const page = await archive.query(name, { max: ARCHIVE_PAGE, last: false, ...(afterId !== undefined ? { afterId } : {}) });
        if (page.items.length === 0) break;
        if (afterId === undefined) await write(`<archive xmlns='${NS_PIE_MAM}'>`);
        for (const m of page.items) await write(resultElement(m));
        counts.archived += page.items.length;
        afterId = page.items[page.items.length - 1].id;
        if (page.complete) break;
      }
      await write(`${afterId === undefined ? '' : '</archive>'}</user>\n`);
      counts.accounts++;
    }
    await write('</host>\n</server-data>\n');
    out.end();
    await once(out, 'finish');
    if (failed) throw failed;
    renameSync(tmp, file);
    return counts;
  } catch (err) {
    out.destroy();
    rmSync(tmp, { force: true });
    throw err;
  }
}
