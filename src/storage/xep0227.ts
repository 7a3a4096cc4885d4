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
// Files are read as a stream with the server's own parser (xml/parser.ts),
// <server-data> and <host> as containers: one <user> at a time is held, and
// each is bounded (maxUserBytes). Import reads the input twice: a first pass
// checks all of it and the accounts already here, so that bad input or an
// existing account (unless skipped) writes nothing; the second writes, user by
// user, the account last, so that an account that exists was imported whole.
// Vcards, private XML, PEP and archives are not kept by this server yet:
// they are counted as left out.
import { createReadStream, createWriteStream, renameSync, rmSync, statSync, readdirSync } from 'node:fs';
import { once } from 'node:events';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { Element, clone } from 'ltx';
import { StreamParser, type XmlErrorCondition } from '../xml/parser.ts';
import { NS_CLIENT, NS_DELAY } from '../xmpp/ns.ts';
import { parseJid, bare, normalizeDomain } from '../xmpp/jid.ts';
import {
  type AccountStore, type ScramCredentials, type ScramHash, SCRAM_HASHES,
  newUsername, hashInfo, deriveBoth, InvalidUsernameError,
} from '../accounts/store.ts';
import { type RosterStore, type RosterItem, type Subscription, SUBSCRIPTIONS, type TransitionTable } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import { stamp } from '../offline/offline.ts';

export const NS_PIE = 'urn:xmpp:pie:0';
export const NS_PIE_SCRAM = 'urn:xmpp:pie:0#scram';
export const NS_ROSTER = 'jabber:iq:roster';
export const NS_XINCLUDE = 'http://www.w3.org/2001/XInclude';

/** Bad input: names the element (and the file) at fault. */
export class Xep0227Error extends Error {
  override name = 'Xep0227Error';
}

export interface Xep0227Stores {
  accounts: AccountStore;
  roster: RosterStore;
  offline: OfflineStore;
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
  /** Largest <user> element, in bytes (default 64 MiB). */
  maxUserBytes?: number;
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
  /** Accounts that existed here, left as they were (skipExisting). */
  skipped: string[];
  /** Hosts of the input that are not this server's, with their users' count. */
  otherHosts: Map<string, number>;
  /** Elements of a user this server does not keep, by name, with their count. */
  leftOut: Map<string, number>;
}

/** What one <user> holds, checked. */
interface UserData {
  name: string;
  password?: string;
  verifiers: Partial<Record<ScramHash, ScramCredentials>>;
  items: RosterItem[];
  /** Pending requests: the contact's bare JID and the stanza to keep. */
  pending: { jid: string; stanza: string }[];
  /** Serialised messages, stamped. */
  offline: string[];
  leftOut: string[];
}

const DEFAULT_MAX_USER_BYTES = 64 * 1024 * 1024;
/** A document's elements are bounded per <user> in bytes; this only stops an absurd count of tiny ones. */
const MAX_USER_ELEMENTS = 4 * 1024 * 1024;

const where = (file: string, path: string) => `${basename(file)}: ${path}`;

// ---------------------------------------------------------------------------
// Reading

interface HostUser {
  host: string;
  user: Element;
  file: string;
}

/**
 * The input files' users, one at a time, in document order: `paths` are
 * files or directories (their *.xml files, sorted, skipping those included
 * by another). <xi:include href/> of a <server-data> is followed, to a file
 * of the same directory or below it.
 */
async function* users(paths: string[], maxUserBytes: number): AsyncGenerator<HostUser> {
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

/** One file: its users, and the files it includes (depth 0 only). */
async function* readFile(file: string, maxUserBytes: number, depth: number): AsyncGenerator<HostUser | { include: string }> {
  const out: (HostUser | { include: string })[] = [];
  let failure: Xep0227Error | undefined;
  let root = '';
  let rootNs: string | undefined;
  let host: string | undefined;
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
        if (name === 'host') hostOf(attrs);
      },
      containerEnd(name) {
        if (name === 'host') host = undefined;
      },
      element(el) {
        if (failure) return;
        const ns = el.attrs.xmlns;
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
        if (el.name !== 'user' || (ns !== undefined && ns !== NS_PIE)) return fail(`<${el.name}${ns ? ` xmlns='${ns}'` : ''}> in <host jid='${host}'> where <user> was expected`);
        out.push({ host: host!, user: el, file });
      },
      streamEnd() {
        ended = true;
      },
      error(condition: XmlErrorCondition, text: string) {
        fail(`${condition === 'policy-violation' ? 'too large' : 'not well-formed XML'}: ${text}`);
      },
    },
    {
      maxStanzaBytes: maxUserBytes,
      maxStanzaElements: MAX_USER_ELEMENTS,
      container: (name, attrs) => name === 'host' && (attrs.xmlns === undefined || attrs.xmlns === NS_PIE) && root === 'server-data',
    },
  );
  const stream = createReadStream(file, { highWaterMark: 64 * 1024 });
  try {
    for await (const chunk of stream) {
      parser.write(chunk as Buffer);
      if (failure) throw failure;
      // What this chunk completed, before reading more: at most a chunk's worth of users waits.
      while (out.length > 0) yield out.shift()!;
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

/** A <user> checked and turned into what the stores take. */
function readUser({ host, user, file }: HostUser, domain: string): UserData {
  const nameAttr = user.attrs.name;
  const at = where(file, `<user name=${JSON.stringify(nameAttr ?? '')}>`);
  if (!nameAttr) throw new Xep0227Error(where(file, `<user> without a name in <host jid='${host}'>`));
  let name: string;
  try {
    name = newUsername(nameAttr);
  } catch (err) {
    if (err instanceof InvalidUsernameError) throw new Xep0227Error(`${at}: ${err.message}`);
    throw err;
  }
  const userBare = `${name}@${domain}`;
  const data: UserData = { name, verifiers: {}, items: [], pending: [], offline: [], leftOut: [] };
  if (user.attrs.password !== undefined && user.attrs.password !== '') data.password = user.attrs.password;
  const pendingFrom = new Set<string>();
  for (const el of user.getChildElements()) {
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
    } else data.leftOut.push(el.name);
  }
  if (!data.password && Object.keys(data.verifiers).length === 0) throw new Xep0227Error(`${at}: no password and no <scram-credentials>: the account could never log in`);
  return data;
}

// ---------------------------------------------------------------------------
// Import

function emptyReport(): ImportReport {
  return { accounts: 0, fromPassword: 0, sha1Only: 0, rosterItems: 0, pending: 0, offline: 0, offlineDropped: 0, skipped: [], otherHosts: new Map(), leftOut: new Map() };
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

/**
 * Imports the users of `opts.domain` from XEP-0227 files. Throws
 * Xep0227Error (nothing written) for bad input, for an account that exists
 * here (unless skipExisting), and for verifiers the store cannot keep;
 * ImportFailedError when a store fails part way.
 */
export async function importFiles(paths: string[], stores: Xep0227Stores, opts: ImportOptions): Promise<ImportReport> {
  const { accounts } = stores;
  if (!accounts.importAccount) throw new Xep0227Error('this account store cannot import accounts (a cluster keeps them in PostgreSQL: set XMPP_DATABASE_URL)');
  const maxUserBytes = opts.maxUserBytes ?? DEFAULT_MAX_USER_BYTES;
  const domain = normalizeDomain(opts.domain);
  const required = accounts.requiredHashes ?? [];

  // First pass: everything checked, nothing written.
  const check = emptyReport();
  const existing: string[] = [];
  const names = new Set<string>();
  let mine = 0;
  for await (const hu of users(paths, maxUserBytes)) {
    if (hu.host !== domain) {
      check.otherHosts.set(hu.host, (check.otherHosts.get(hu.host) ?? 0) + 1);
      continue;
    }
    mine++;
    const u = readUser(hu, domain);
    if (names.has(u.name)) throw new Xep0227Error(where(hu.file, `<user name='${u.name}'> appears twice`));
    names.add(u.name);
    for (const h of required) {
      if (!u.password && !u.verifiers[h]) throw new Xep0227Error(where(hu.file, `<user name='${u.name}'> has no SCRAM-${h} credentials, which this store requires (PostgreSQL: see the README, "user import")`));
    }
    if (u.items.length > opts.maxRosterItems) throw new Xep0227Error(where(hu.file, `<user name='${u.name}'>: ${u.items.length} roster items, more than XMPP_MAX_ROSTER_ITEMS (${opts.maxRosterItems})`));
    if (await accounts.exists(u.name)) existing.push(u.name);
    tally(check, u);
  }
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

  // Second pass: user by user, the account last.
  const report = emptyReport();
  report.otherHosts = check.otherHosts;
  const skip = new Set(existing);
  let current = '';
  try {
    for await (const hu of users(paths, maxUserBytes)) {
      if (hu.host !== domain) continue;
      const u = readUser(hu, domain);
      current = u.name;
      if (skip.has(u.name) || (await accounts.exists(u.name))) {
        report.skipped.push(u.name);
        continue;
      }
      await writeUser(u, stores, opts, report);
      opts.onUser?.(u.name);
    }
  } catch (err) {
    const done = `imported ${summary(report)}`;
    throw new ImportFailedError(`the import stopped at user ${current}: ${(err as Error).message}; ${done}; the rest was not imported (running the import again with --skip-existing takes up where it stopped)`, report, err);
  }
  return report;
}

function tally(r: ImportReport, u: UserData): void {
  r.accounts++;
  if (u.password) r.fromPassword++;
  else if (!u.verifiers['SHA-256']) r.sha1Only++;
  r.rosterItems += u.items.length;
  r.pending += u.pending.length;
  r.offline += u.offline.length;
  for (const n of u.leftOut) r.leftOut.set(n, (r.leftOut.get(n) ?? 0) + 1);
}

async function writeUser(u: UserData, { accounts, roster, offline }: Xep0227Stores, opts: ImportOptions, report: ImportReport): Promise<void> {
  // No account: whatever a store holds under the name is what an import stopped part way left.
  await roster.removeAll(u.name);
  await offline.removeAll(u.name);
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
  if (!(await accounts.importAccount!(u.name, verifiers))) {
    // Created meanwhile (by a registration, say): its data stays as the server made it.
    await roster.removeAll(u.name).catch(() => {});
    await offline.removeAll(u.name).catch(() => {});
    report.skipped.push(u.name);
    return;
  }
  tally(report, { ...u, pending: u.pending.slice(0, pending), offline: u.offline.slice(0, kept) });
}

export function summary(r: ImportReport): string {
  return `${r.accounts} accounts (${r.fromPassword} from a plaintext password, ${r.sha1Only} with SCRAM-SHA-1 only), ${r.rosterItems} roster items, ${r.pending} pending subscription requests, ${r.offline} offline messages`;
}

// ---------------------------------------------------------------------------
// Export

export interface ExportCounts {
  accounts: number;
  rosterItems: number;
  pending: number;
  offline: number;
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

/**
 * Writes the accounts of `domain` (SCRAM verifiers, never a password),
 * their rosters, pending requests and offline messages to `file`, through a
 * temporary file renamed at the end (a failed export leaves no half file),
 * readable by its owner only. One user is held at a time.
 */
export async function exportFile(file: string, stores: Xep0227Stores, domain: string): Promise<ExportCounts> {
  const { accounts, roster, offline } = stores;
  if (!offline.peek) throw new Error('this offline store cannot be read without delivering (a cluster keeps its data in PostgreSQL: set XMPP_DATABASE_URL)');
  const counts: ExportCounts = { accounts: 0, rosterItems: 0, pending: 0, offline: 0 };
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
      await write(`${first ? '' : '</offline-messages>'}</user>\n`);
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
