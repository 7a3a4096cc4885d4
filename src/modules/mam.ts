// XEP-0313 Message Archive Management (urn:xmpp:mam:2, with #extended):
// every account's one-to-one messages are archived as the server receives
// them, in the sender's archive when the sender is an account of ours and
// in the recipient's when the recipient is, whether the message is then
// delivered live, copied by carbons or stored offline (archived once, on
// arrival); messages to and from other servers too. The recipient's copy
// carries its archive id (XEP-0359 <stanza-id by='account'/>), and ids a
// sender forged in our name are removed first. Writes go through the
// worker's ArchiveWriter (batched, bounded). Queries (form fields, RSM
// paging, flip-page, ids, full text: mam/query.ts, which rooms' archives
// share), the archive's first and last message, and preferences are
// answered on the account's bare JID.
import { Element } from 'ltx';
import type { ServerModule, IqHandler } from './module.ts';
import type { Session } from '../session/session.ts';
import type { RosterStore } from '../roster/store.ts';
import { StanzaError, errorReply } from '../xmpp/errors.ts';
import { parseJid, JidError } from '../xmpp/jid.ts';
import { NS_CARBONS, NS_CLIENT, NS_HINTS, NS_SID } from '../xmpp/ns.ts';
import { ANON_PREFIX } from '../accounts/store.ts';
import { type ArchiveDefault, type ArchivePrefs, type ArchiveStore, type ArchivedMessage, MAX_PREF_JIDS, archiveId, prefsAllow, stampOf } from '../mam/store.ts';
import { type ArchiveAccess, NS_FULLTEXT, NS_MAM, NS_MAM_EXTENDED, answerQuery, metadata, queryForm } from '../mam/query.ts';
import type { ArchiveWriter } from '../mam/writer.ts';
import { log } from '../log.ts';

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

  /** The account's archive, as a query reads it (rows wait in the worker's buffer before they land). */
  const access = (owner: string): ArchiveAccess => ({ store: o.store, owner, fulltext: o.fulltext, flushed: () => o.writer.flushed() });

  const get: IqHandler = async (iq, session) => {
    const payload = ownArchive(iq, session);
    const owner = session.username!;
    switch (payload.name) {
      case 'query':
        return queryForm(o.fulltext);
      case 'metadata':
        return metadata(access(owner));
      case 'prefs':
        return prefsElement(await prefsOf(owner));
      default:
        throw new StanzaError('feature-not-implemented', `<${payload.name}/> is not part of XEP-0313`);
    }
  };

  const set: IqHandler = async (iq, session) => {
    const payload = ownArchive(iq, session);
    const owner = session.username!;
    if (payload.name === 'query') return answerQuery(payload, access(owner), { from: session.bare!, to: session.jid!, send: (msg) => session.send(msg) });
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

