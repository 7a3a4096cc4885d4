// XEP-0313 Message Archive Management (urn:xmpp:mam:2, with #extended):
// every account's one-to-one messages are archived as the server receives
// them, in the sender's archive when the sender is an account of ours and
// in the recipient's when the recipient is, whether the message is then
// delivered live, copied by carbons or stored offline (archived once, on
// arrival); messages to and from other servers too. The recipient's copy
// carries its archive id (XEP-0359 <stanza-id by='account'/>), and ids a
// sender forged in our name are removed first. Writes go through the
// worker's ArchiveWriter (batched, bounded). Queries (form fields, RSM
// paging, flip-page, ids, full text), the archive's first and last
// message, and preferences are answered on the account's bare JID.
import { Element, parse as parseXml } from 'ltx';
import type { ServerModule, IqHandler } from './module.ts';
import type { Session } from '../session/session.ts';
import type { RosterStore } from '../roster/store.ts';
import { StanzaError, errorReply } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import { NS_CARBONS, NS_CLIENT, NS_DELAY, NS_FORWARD, NS_HINTS, NS_SID } from '../xmpp/ns.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { dateTime } from '../offline/offline.ts';
import { type ArchiveDefault, type ArchivePrefs, type ArchiveQuery, type ArchiveStore, type ArchivedMessage, MAX_IDS, MAX_PAGE, MAX_PREF_JIDS, MAX_TEXT, archiveId, isArchiveId, prefsAllow, stampOf } from '../mam/store.ts';
import type { ArchiveWriter } from '../mam/writer.ts';
import { log } from '../log.ts';

export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_MAM_EXTENDED = 'urn:xmpp:mam:2#extended';
export const NS_FULLTEXT = 'urn:xmpp:fulltext:0';
const NS_DATA = 'jabber:x:data';
const NS_RSM = 'http://jabber.org/protocol/rsm';
const FULLTEXT_FIELD = `{${NS_FULLTEXT}}fulltext`;
const DEFAULT_PAGE = 50;
/** Preferences read from the store are reused this long on a worker (a change made on another worker or node shows within it). */
const PREFS_TTL_MS = 10_000;
const PREFS_CACHED = 10_000;

export interface MamOptions {
  domain: string;
  store: ArchiveStore;
  writer: ArchiveWriter;
  roster: RosterStore;
  /** The default of accounts that set no preferences (XMPP_MAM_DEFAULT). */
  defaultMode: ArchiveDefault;
  /** Full-text search (XEP-0431) offered (XMPP_MAM_FULLTEXT: the store keeps the index). */
  fulltext: boolean;
}

const isElement = (c: Element | string): c is Element => typeof c !== 'string';

/** How long archiving waits for what it must read (preferences, the roster) before the message is refused. */
const READ_WAIT_MS = 2000;
function bounded<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${READ_WAIT_MS} ms`)), READ_WAIT_MS)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
function unavailable(err: unknown): StanzaError {
  log.warn('message archive: cannot read archiving preferences; the message is refused', { err: String(err) });
  return new StanzaError('resource-constraint', 'the message archive cannot be reached; try again shortly', 'wait');
}

/**
 * XEP-0313 §5.1.1 (and XEP-0334): what goes into a user's archive. A
 * one-to-one message (chat or normal) with a body, or one a sender marked
 * <store/>; never one marked <no-store/> or <no-permanent-store/>, nor a
 * carbon or an archive result (copies of what is archived elsewhere).
 */
export function archivable(el: Element): boolean {
  if (el.name !== 'message') return false;
  const type = el.attrs.type ?? 'normal';
  if (type !== 'chat' && type !== 'normal') return false;
  if (el.getChild('no-store', NS_HINTS) || el.getChild('no-permanent-store', NS_HINTS)) return false;
  if (el.getChild('sent', NS_CARBONS) || el.getChild('received', NS_CARBONS) || el.getChild('result', NS_MAM)) return false;
  return Boolean(el.getChild('body') || el.getChild('store', NS_HINTS));
}

/** A JID as the archive keeps and compares it: normalised (RFC 7622), bare and resource apart; undefined for one that does not parse. */
function peerOf(jid: string | undefined): { bare: string; resource: string } | undefined {
  if (jid === undefined) return undefined;
  try {
    const j = parseJid(jid);
    return { bare: j.local ? `${j.local}@${j.domain}` : j.domain, resource: j.resource };
  } catch (err) {
    if (err instanceof JidError) return undefined;
    throw err;
  }
}

/** Ids younger than this may still be in a writer's buffer on another worker or node: a query may name them before they land. */
const IN_FLIGHT_MS = 60_000;

export function mam(o: MamOptions): ServerModule {
  const prefsCache = new Map<string, { prefs: ArchivePrefs; at: number }>();
  const defaults = (): ArchivePrefs => ({ default: o.defaultMode, always: [], never: [] });

  const prefsOf = async (owner: string): Promise<ArchivePrefs> => {
    const hit = prefsCache.get(owner);
    if (hit && Date.now() - hit.at < PREFS_TTL_MS) return hit.prefs;
    try {
      const prefs = (await bounded(o.store.prefs(owner))) ?? defaults();
      remember(owner, prefs);
      return prefs;
    } catch (err) {
      // A slow or unreachable database: the preferences last known, or the message waits for a retry.
      if (hit) return hit.prefs;
      throw unavailable(err);
    }
  };
  const remember = (owner: string, prefs: ArchivePrefs) => {
    prefsCache.delete(owner);
    if (prefsCache.size >= PREFS_CACHED) prefsCache.delete(prefsCache.keys().next().value!);
    prefsCache.set(owner, { prefs, at: Date.now() });
  };

  /** Whether the owner's preferences keep a message exchanged with `peer` (a bare JID). */
  const keeps = async (owner: string, peer: string): Promise<boolean> =>
    prefsAllow(await prefsOf(owner), peer, async () => {
      try {
        return (await bounded(o.roster.item(owner, peer))) !== undefined;
      } catch (err) {
        throw unavailable(err);
      }
    });

  const row = (el: Element, owner: string, peer: { bare: string; resource: string }, outgoing: boolean): ArchivedMessage => {
    const id = archiveId();
    const body = el.getChild('body');
    // Serialised as a stanza of its own (its namespace on it), without a copy.
    const had = el.attrs.xmlns;
    el.attrs.xmlns = NS_CLIENT;
    const xml = el.toString();
    if (had === undefined) delete el.attrs.xmlns;
    else el.attrs.xmlns = had;
    return { id, owner, stamp: stampOf(id), withBare: peer.bare, withResource: peer.resource, outgoing, body: body ? body.getText().slice(0, 64 * 1024) : '', xml };
  };

  /** XEP-0359 §3.3 (Security): a stanza-id claiming to be by one of our JIDs was not set by us: removed. */
  const stripForged = (el: Element) => {
    if (el.name !== 'message') return;
    for (const sid of el.getChildren('stanza-id', NS_SID)) {
      const by: string = sid.attrs.by ?? '';
      const domain = peerOf(by)?.bare.split('@').pop();
      // Compared as JIDs are (any case); one that does not parse but names our domain goes too.
      if (domain === o.domain || (domain === undefined && by.toLowerCase().includes(o.domain))) el.remove(sid);
    }
  };

  const full = () => new StanzaError('resource-constraint', 'the message archive is busy; try again shortly', 'wait');

  const query = async (iq: Element, session: Session, q: Element): Promise<Element> => {
    const owner = session.username!;
    const parsed = parseQuery(q, o.fulltext);
    // A message archived on this worker a moment ago is in the answer.
    await o.writer.flushed();
    // An id of the last minute may be on its way from another worker's buffer: a bound, not a lookup.
    const now = Date.now();
    for (const id of parsed.mustExist) if (now - stampOf(id) > IN_FLIGHT_MS && !(await o.store.has(owner, id))) throw new StanzaError('item-not-found', `no message ${id} in the archive`);
    const queryid = q.attrs.queryid;
    const fin = new Element('fin', { xmlns: NS_MAM });
    const set = new Element('set', { xmlns: NS_RSM });
    if (parsed.query.max === 0) {
      // XEP-0059 §2.7: the number of items of the whole set (the form's filters; RSM paging aside), none of them.
      set.c('count').t(String(await o.store.count(owner, { ...parsed.query, afterId: parsed.formAfter, beforeId: parsed.formBefore })));
      fin.cnode(set);
      return fin;
    }
    const page = await o.store.query(owner, parsed.query);
    const items = parsed.flip ? [...page.items].reverse() : page.items;
    for (const m of items) {
      const inner = parseXml(m.xml) as Element;
      const msg = new Element('message', { to: session.jid!, from: session.bare! });
      msg
        .c('result', { xmlns: NS_MAM, id: m.id, ...(queryid !== undefined ? { queryid } : {}) })
        .c('forwarded', { xmlns: NS_FORWARD })
        .c('delay', { xmlns: NS_DELAY, stamp: dateTime(new Date(m.stamp)) })
        .up()
        .cnode(inner);
      session.send(msg);
    }
    // §4.3 (1.1): complete once the page reaches the end of the selection in the direction of paging.
    if (page.complete) fin.attrs.complete = 'true';
    if (items.length > 0) {
      set.c('first').t(items[0].id);
      set.c('last').t(items[items.length - 1].id);
    }
    // The whole selection in one page: its size is known without counting.
    if (page.complete && parsed.unpaged) set.c('count').t(String(items.length));
    fin.cnode(set);
    return fin;
  };

  const get: IqHandler = async (iq, session) => {
    const payload = ownArchive(iq, session);
    const owner = session.username!;
    switch (payload.name) {
      case 'query':
        return queryForm(o.fulltext);
      case 'metadata': {
        // #extended: the archive's first and last message.
        await o.writer.flushed();
        const b = await o.store.bounds(owner);
        const meta = new Element('metadata', { xmlns: NS_MAM });
        if (b.first) meta.c('start', { id: b.first.id, timestamp: dateTime(new Date(b.first.stamp)) });
        if (b.last) meta.c('end', { id: b.last.id, timestamp: dateTime(new Date(b.last.stamp)) });
        return meta;
      }
      case 'prefs':
        return prefsElement(await prefsOf(owner));
      default:
        throw new StanzaError('feature-not-implemented', `<${payload.name}/> is not part of XEP-0313`);
    }
  };

  const set: IqHandler = async (iq, session) => {
    const payload = ownArchive(iq, session);
    const owner = session.username!;
    if (payload.name === 'query') return query(iq, session, payload);
    if (payload.name === 'prefs') {
      const prefs = parsePrefs(payload);
      await o.store.setPrefs(owner, prefs);
      remember(owner, prefs);
      return prefsElement(prefs);
    }
    throw new StanzaError('feature-not-implemented', `<${payload.name}/> is not part of XEP-0313`);
  };

  return {
    features: [],
    accountFeatures: [NS_MAM, NS_MAM_EXTENDED, NS_SID, ...(o.fulltext ? [NS_FULLTEXT] : [])],
    account: { [`get ${NS_MAM}`]: get, [`set ${NS_MAM}`]: set },
    inbound: async (el, session) => {
      if (el.name !== 'message') return;
      stripForged(el);
      if (!archivable(el) || !session.username) return;
      // The router checked 'to' parses; the archive keeps it normalised.
      const peer = peerOf(el.attrs.to);
      // To oneself: archived once, as received (the delivering hook).
      if (!peer || peer.bare === session.bare) return;
      if (!(await keeps(session.username, peer.bare))) return;
      if (await o.writer.admit([row(el, session.username, peer, true)])) return;
      const reply = errorReply(el, full());
      if (reply) session.send(reply);
      return true;
    },
    foreign: (el) => stripForged(el),
    // The account is gone: its rows still waiting here are dropped, and what was on its way is removed once written.
    removed: (user) => {
      prefsCache.delete(user);
      o.writer.drop(user);
      void o.writer
        .flushed()
        .then(() => o.store.removeAll(user))
        .catch((err: unknown) => log.warn('message archive: the archive of a removed account was not cleared', { user, err: String(err) }));
    },
    delivering: async (el, local) => {
      if (!archivable(el) || local.startsWith(ANON_PREFIX)) return;
      const bare = `${local}@${o.domain}`;
      // Archived on its first way here (it is being routed again).
      if (el.getChildren('stanza-id', NS_SID).some((s) => s.attrs.by === bare)) return;
      const from = peerOf(el.attrs.from);
      if (!from) return;
      if (!(await keeps(local, from.bare))) return;
      const r = row(el, local, from, false);
      if (!(await o.writer.admit([r]))) return full();
      // XEP-0359: the archive id, on what the user's clients get.
      el.c('stanza-id', { xmlns: NS_SID, id: r.id, by: bare });
      return;
    },
  };
}

/** The archive asked about must be the asker's own (an iq without 'to', or to its bare JID). */
function ownArchive(iq: Element, session: Session): Element {
  if (iq.attrs.to !== undefined && peerOf(iq.attrs.to)?.bare !== session.bare) throw new StanzaError('forbidden', "only the account's own archive can be queried");
  if (!session.username) throw new StanzaError('forbidden', 'anonymous sessions have no archive');
  return iq.children.find(isElement)!;
}

/** §4.1.1 (1.1): the fields a query may use. */
function queryForm(fulltext: boolean): Element {
  const q = new Element('query', { xmlns: NS_MAM });
  const x = q.c('x', { xmlns: NS_DATA, type: 'form' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_MAM);
  x.c('field', { var: 'with', type: 'jid-single' });
  x.c('field', { var: 'start', type: 'text-single' });
  x.c('field', { var: 'end', type: 'text-single' });
  x.c('field', { var: 'before-id', type: 'text-single' });
  x.c('field', { var: 'after-id', type: 'text-single' });
  x.c('field', { var: 'ids', type: 'text-multi' });
  if (fulltext) x.c('field', { var: FULLTEXT_FIELD, type: 'text-single' });
  return q;
}

interface ParsedQuery {
  query: ArchiveQuery;
  /** Ids the query refers to, which must be in the archive (§4.1.3: item-not-found otherwise). */
  mustExist: string[];
  flip: boolean;
  /** Neither end of the selection cut by paging (RSM after/before). */
  unpaged: boolean;
  /** The form's after-id and before-id alone (filters of the set, unlike RSM's paging). */
  formAfter?: string;
  formBefore?: string;
}

const later = (a: string | undefined, b: string): string => (a === undefined || b > a ? b : a);
const earlier = (a: string | undefined, b: string): string => (a === undefined || b < a ? b : a);

function archiveIdOf(v: string, what: string): string {
  // An id of another server or of no archive cannot be in this one.
  if (!isArchiveId(v)) throw new StanzaError('item-not-found', `${what}: no message ${v} in the archive`);
  return v;
}

/** XEP-0082 date-time (a date alone is not one). */
function timeOf(v: string, field: string): number {
  const ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(v) ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) throw new StanzaError('bad-request', `${field}: ${JSON.stringify(v)} is not an XEP-0082 date-time`);
  return ms;
}

export function parseQuery(q: Element, fulltext: boolean): ParsedQuery {
  const query: ArchiveQuery = { max: DEFAULT_PAGE, last: false };
  const mustExist: string[] = [];
  let unpaged = true;
  let formAfter: string | undefined;
  let formBefore: string | undefined;
  const form = q.getChild('x', NS_DATA);
  if (form) {
    if (form.attrs.type !== undefined && form.attrs.type !== 'submit') throw new StanzaError('bad-request', 'the query form must be of type submit');
    for (const field of form.getChildren('field')) {
      const name = field.attrs.var;
      const values = field.getChildren('value').map((v) => v.getText());
      const one = () => {
        if (values.length !== 1) throw new StanzaError('bad-request', `field ${name} takes one value`);
        return values[0].trim();
      };
      switch (name) {
        case 'FORM_TYPE':
          if (one() !== NS_MAM) throw new StanzaError('bad-request', `FORM_TYPE must be ${NS_MAM}`);
          break;
        case 'with': {
          let jid;
          try {
            jid = parseJid(one());
          } catch (err) {
            if (err instanceof JidError) throw new StanzaError('jid-malformed', `with: ${err.message}`);
            throw err;
          }
          // §4.1.1: a bare JID matches all its resources, a full JID only itself.
          query.withBare = jid.local ? `${jid.local}@${jid.domain}` : jid.domain;
          if (jid.resource) query.withResource = jid.resource;
          break;
        }
        case 'start':
          query.start = timeOf(one(), 'start');
          break;
        case 'end':
          query.end = timeOf(one(), 'end');
          break;
        case 'after-id': {
          const id = archiveIdOf(one(), 'after-id');
          query.afterId = later(query.afterId, id);
          formAfter = id;
          mustExist.push(id);
          break;
        }
        case 'before-id': {
          const id = archiveIdOf(one(), 'before-id');
          query.beforeId = earlier(query.beforeId, id);
          formBefore = id;
          mustExist.push(id);
          break;
        }
        case 'ids':
          if (values.length > MAX_IDS) throw new StanzaError('policy-violation', `at most ${MAX_IDS} ids in one query`);
          // Ids of no message of ours match nothing; they are no error.
          query.ids = values.map((v) => v.trim()).filter(isArchiveId);
          break;
        case FULLTEXT_FIELD: {
          // Without the index (XMPP_MAM_FULLTEXT off), a field the archive does not support.
          if (!fulltext) throw new StanzaError('bad-request', `unsupported field ${JSON.stringify(name)}: full-text search is off here`);
          const text = one();
          if (text.length > MAX_TEXT) throw new StanzaError('policy-violation', `at most ${MAX_TEXT} characters of text to search`);
          // XEP-0431 §2.2: an empty value does not filter.
          if (text !== '') query.text = text;
          break;
        }
        default:
          // §4.1.1: a field the archive does not support is an error, not ignored.
          throw new StanzaError('bad-request', `unsupported field ${JSON.stringify(name ?? '')}`);
      }
    }
  }
  const rsm = q.getChild('set', NS_RSM);
  if (rsm) {
    const max = rsm.getChild('max');
    if (max) {
      const n = /^\d{1,9}$/.test(max.getText().trim()) ? Number(max.getText().trim()) : NaN;
      if (!Number.isSafeInteger(n)) throw new StanzaError('bad-request', 'RSM <max/> must be a whole number');
      query.max = Math.min(n, MAX_PAGE);
    }
    if (rsm.getChild('index')) throw new StanzaError('feature-not-implemented', 'RSM <index/> is not supported; page with <after/> and <before/>');
    const after = rsm.getChild('after');
    if (after) {
      const id = archiveIdOf(after.getText().trim(), 'RSM after');
      query.afterId = later(query.afterId, id);
      mustExist.push(id);
      unpaged = false;
    }
    const before = rsm.getChild('before');
    if (before) {
      // XEP-0059 §2.5: <before/> pages from the end; empty, the last page.
      query.last = true;
      const v = before.getText().trim();
      if (v !== '') {
        const id = archiveIdOf(v, 'RSM before');
        query.beforeId = earlier(query.beforeId, id);
        mustExist.push(id);
      }
      unpaged = false;
    }
  }
  return { query, mustExist, flip: q.getChild('flip-page') !== undefined, unpaged, formAfter, formBefore };
}

function prefsElement(p: ArchivePrefs): Element {
  const el = new Element('prefs', { xmlns: NS_MAM, default: p.default });
  const always = el.c('always');
  for (const j of p.always) always.c('jid').t(j);
  const never = el.c('never');
  for (const j of p.never) never.c('jid').t(j);
  return el;
}

/** §6.1: the new preferences; JIDs kept as bare JIDs (what archiving compares), each list bounded. */
function parsePrefs(el: Element): ArchivePrefs {
  const mode = el.attrs.default;
  if (mode !== 'always' && mode !== 'never' && mode !== 'roster') throw new StanzaError('bad-request', "default must be 'always', 'never' or 'roster'");
  const list = (name: string): string[] => {
    const jids = new Set<string>();
    for (const j of el.getChild(name)?.getChildren('jid') ?? []) {
      try {
        const jid = parseJid(j.getText().trim());
        jids.add(jid.local ? `${jid.local}@${jid.domain}` : jid.domain);
      } catch (err) {
        if (err instanceof JidError) throw new StanzaError('jid-malformed', `${name}: ${err.message}`);
        throw err;
      }
    }
    if (jids.size > MAX_PREF_JIDS) throw new StanzaError('policy-violation', `at most ${MAX_PREF_JIDS} JIDs in <${name}/>`);
    return [...jids];
  };
  const never = list('never');
  return { default: mode, always: list('always').filter((j) => !never.includes(j)), never };
}

