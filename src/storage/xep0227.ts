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
// neither written nor read. PEP is not kept by this server yet: it is
// counted as left out, as are private XML elements without a namespace of
// their own or in a reserved one (modules/private.ts refuses them too).
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

export const NS_PIE = 'urn:xmpp:pie:0';
export const NS_PIE_SCRAM = 'urn:xmpp:pie:0#scram';
export const NS_PIE_MAM = 'urn:xmpp:pie:0#mam';
export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_ROSTER = 'jabber:iq:roster';
export const NS_VCARD = 'vcard-temp';
export const NS_PRIVATE = 'jabber:iq:private';
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
  /** Accounts that existed here, left as they were (skipExisting). */
  skipped: string[];
  /** Hosts of the input that are not this server's, with their users' count. */
  otherHosts: Map<string, number>;
  /** Elements of a user this server does not keep, by name, with their count. */
  leftOut: Map<string, number>;
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
  leftOut: string[];
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

/** A <user> (what is held of it: all but its archive) checked and turned into what the stores take. */
function readUser({ name, at, attrs }: UserStart, children: Element[], domain: string): UserData {
  const userBare = `${name}@${domain}`;
  const data: UserData = { name, verifiers: {}, items: [], pending: [], offline: [], private: [], leftOut: [] };
  const privateXml = new Map<string, string[]>();
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
    } else data.leftOut.push(el.name);
  }
  for (const [ns, list] of [...privateXml].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) data.private.push({ ns, xml: list.join('') });
  if (!data.password && Object.keys(data.verifiers).length === 0) throw new Xep0227Error(`${at}: no password and no <scram-credentials>: the account could never log in`);
  return data;
}

// ---------------------------------------------------------------------------
// Import

function emptyReport(): ImportReport {
  return { accounts: 0, fromPassword: 0, sha1Only: 0, rosterItems: 0, pending: 0, offline: 0, offlineDropped: 0, archived: 0, vcards: 0, privateXml: 0, skipped: [], otherHosts: new Map(), leftOut: new Map() };
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
  for (const n of u.leftOut) r.leftOut.set(n, (r.leftOut.get(n) ?? 0) + 1);
}

/** Writes what is not the archive (written already), the account last; false when the account was created meanwhile. `u` is left with what was kept. */
async function writeUser(u: UserData, { accounts, roster, offline, archive, personal }: Xep0227Stores, opts: ImportOptions, report: ImportReport): Promise<boolean> {
  // No account: whatever a store holds under the name is what an import stopped part way left.
  await roster.removeAll(u.name);
  await offline.removeAll(u.name);
  await personal.removeAll(u.name);
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
    report.skipped.push(u.name);
    return false;
  }
  u.pending = u.pending.slice(0, pending);
  u.offline = u.offline.slice(0, kept);
  return true;
}

export function summary(r: ImportReport): string {
  return `${r.accounts} accounts (${r.fromPassword} from a plaintext password, ${r.sha1Only} with SCRAM-SHA-1 only), ${r.rosterItems} roster items, ${r.pending} pending subscription requests, ${r.offline} offline messages, ${r.archived} archived messages, ${r.vcards} vCards, ${r.privateXml} namespaces of private XML`;
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

/** One archived message as a XEP-0313 result (XEP-0227 §"Message Archive"): its id, when it was received, the stanza. */
function resultElement(m: ArchivedMessage): string {
  return `<result xmlns='${NS_MAM}' id='${escAttr(m.id)}'><forwarded xmlns='${NS_FORWARD}'><delay xmlns='${NS_DELAY}' stamp='${dateTime(new Date(m.stamp))}'/>${withClientNs(m.xml)}</forwarded></result>`;
}

/**
 * Writes the accounts of `domain` (SCRAM verifiers, never a password),
 * their rosters, pending requests, offline messages, vCards, private XML and message archives
 * (not the archiving preferences: the format has no place for them) to
 * `file`, through a temporary file renamed at the end (a failed export
 * leaves no half file), readable by its owner only. One user is held at a
 * time, and of its offline messages and archive one page at a time.
 */
export async function exportFile(file: string, stores: Xep0227Stores, domain: string): Promise<ExportCounts> {
  const { accounts, roster, offline, archive, personal } = stores;
  const counts: ExportCounts = { accounts: 0, rosterItems: 0, pending: 0, offline: 0, archived: 0, vcards: 0, privateXml: 0 };
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
      await write(`<user name='${escAttr(name)}'>${parts.join('')}`);
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
