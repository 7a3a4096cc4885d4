// Querying an archive (XEP-0313 §4, §5, with #extended): what every
// archive the server exposes answers the same way, an account's on its bare
// JID (modules/mam.ts) and a room's on the room's JID (muc/mam.ts). The
// query form, its parsing (form fields, RSM, flip-page, full text), the
// <result/> messages and the <fin/> that ends them, and the archive's
// metadata; who may ask, and what each archived stanza becomes for the
// asker, are the caller's.
import { Element, parse as parseXml } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import { NS_DELAY, NS_FORWARD } from '../xmpp/ns.ts';
import { dateTime } from '../offline/offline.ts';
import { type ArchiveQuery, type ArchiveStore, MAX_IDS, MAX_PAGE, MAX_TEXT, isArchiveId, stampOf } from './store.ts';

export const NS_MAM = 'urn:xmpp:mam:2';
export const NS_MAM_EXTENDED = 'urn:xmpp:mam:2#extended';
export const NS_FULLTEXT = 'urn:xmpp:fulltext:0';
const NS_DATA = 'jabber:x:data';
const NS_RSM = 'http://jabber.org/protocol/rsm';
const FULLTEXT_FIELD = `{${NS_FULLTEXT}}fulltext`;
const DEFAULT_PAGE = 50;
/** Ids younger than this may still be in a writer's buffer on another worker or node: a query may name them before they land. */
const IN_FLIGHT_MS = 60_000;

/** One archive, as a query reads it. */
export interface ArchiveAccess {
  store: ArchiveStore;
  /** The archive's owner in the store (an account's localpart, a room's JID). */
  owner: string;
  /** Full-text search (XEP-0431) offered. */
  fulltext: boolean;
  /**
   * Resolves once what this worker archived before the call is written
   * (an account's rows go through a buffer); undefined for an archive
   * written before anything is sent (a room's), whose ids a query names
   * are in the store or nowhere.
   */
  flushed?: () => Promise<void>;
}

/** Where the results go, and what each archived stanza becomes for the asker. */
export interface ResultSink {
  /** The archive's JID (the results' 'from'). */
  from: string;
  /** The asker's full JID. */
  to: string;
  /** Sends one result; awaited, so that the results precede the answer to the query. */
  send(msg: Element): void | Promise<void>;
  /** The archived stanza as the asker gets it (default: as archived). */
  present?(archived: Element): Element;
}

/** §4.1.1 (1.1): the fields a query may use. */
export function queryForm(fulltext: boolean): Element {
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

/** #extended: the archive's first and last message. */
export async function metadata(a: ArchiveAccess): Promise<Element> {
  await a.flushed?.();
  const b = await a.store.bounds(a.owner);
  const meta = new Element('metadata', { xmlns: NS_MAM });
  if (b.first) meta.c('start', { id: b.first.id, timestamp: dateTime(new Date(b.first.stamp)) });
  if (b.last) meta.c('end', { id: b.last.id, timestamp: dateTime(new Date(b.last.stamp)) });
  return meta;
}

/**
 * Answers a <query/> (iq set): one <message><result/></message> per
 * archived message of the page, sent in order before this resolves, then
 * the <fin/> for the iq result.
 */
export async function answerQuery(q: Element, a: ArchiveAccess, out: ResultSink): Promise<Element> {
  const parsed = parseQuery(q, a.fulltext);
  // A message archived on this worker a moment ago is in the answer.
  await a.flushed?.();
  const now = Date.now();
  for (const id of parsed.mustExist) {
    // §4.3: an id not in the archive is item-not-found; one of the last minute may be on its way from another worker's buffer: a bound, not a lookup.
    if (a.flushed && now - stampOf(id) <= IN_FLIGHT_MS) continue;
    if (!(await a.store.has(a.owner, id))) throw new StanzaError('item-not-found', `no message ${id} in the archive`);
  }
  const queryid = q.attrs.queryid;
  const fin = new Element('fin', { xmlns: NS_MAM });
  const set = new Element('set', { xmlns: NS_RSM });
  if (parsed.query.max === 0) {
    // XEP-0059 §2.7: the number of items of the whole set (the form's filters; RSM paging aside), none of them.
    set.c('count').t(String(await a.store.count(a.owner, { ...parsed.query, afterId: parsed.formAfter, beforeId: parsed.formBefore })));
    fin.cnode(set);
    return fin;
  }
  const page = await a.store.query(a.owner, parsed.query);
  const items = parsed.flip ? [...page.items].reverse() : page.items;
  for (const m of items) {
    const archived = parseXml(m.xml) as Element;
    const msg = new Element('message', { to: out.to, from: out.from });
    msg
      .c('result', { xmlns: NS_MAM, id: m.id, ...(queryid !== undefined ? { queryid } : {}) })
      .c('forwarded', { xmlns: NS_FORWARD })
      .c('delay', { xmlns: NS_DELAY, stamp: dateTime(new Date(m.stamp)) })
      .up()
      .cnode(out.present ? out.present(archived) : archived);
    await out.send(msg);
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
