// XEP-0133: Service Administration, as ad-hoc commands (adhoc.ts) on the
// server's JID, for the accounts listed in XMPP_ADMINS only (§8: never for
// users without service-level privileges). Every command acts on the whole
// server, whichever node answers: accounts are in the shared store, online
// sessions are read from the registry (Redis in a cluster), and sessions
// are ended or reached wherever they live (Router.kick, routing to full
// JIDs, the removal notice every worker of every node acts on).
import { Element } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import { parseJid } from '../xmpp/jid.ts';
import type { Jid } from '../xmpp/jid.ts';
import { CommandError, NS_DATA } from './adhoc.ts';
import type { Command, Step, Submitted, StageRequest } from './adhoc.ts';
import type { Session } from '../session/session.ts';
import type { SessionRegistry } from '../registry/registry.ts';
import type { Router } from '../router/router.ts';
import { log } from '../log.ts';

export const NS_ADMIN = 'http://jabber.org/protocol/admin';
const node = (name: string) => `${NS_ADMIN}#${name}`;

/**
 * Users (bare JIDs) counted at most by get-online-users-num: past it the
 * answer says "at least" (the registry is read a page at a time, and no
 * more than needed: a list stops at its max_items).
 */
export const ONLINE_COUNT_MAX = 100_000;
/** Bare JIDs one list answers with, whatever max_items says ('none' included). */
export const MAX_LIST = 10_000;
/** Announcements being sent at once by one worker (more: resource-constraint), and messages of one on their way at once. */
export const ANNOUNCEMENTS_AT_ONCE = 4;
/** How long an accepted announcement holds its place waiting for its answer to go out (its `after`), should that never happen. */
const ANNOUNCE_START_MS = 60_000;
const ANNOUNCE_CONCURRENCY = 32;
/** Characters of one announcement. */
export const MAX_ANNOUNCEMENT_CHARS = 16_384;

interface Field {
  var: string;
  type?: string;
  label?: string;
  required?: boolean;
  values?: string[];
  options?: string[];
}

/** A data form (XEP-0004) of FORM_TYPE http://jabber.org/protocol/admin (XEP-0133 §8.2). */
function form(type: 'form' | 'result', fields: Field[], title?: string, instructions?: string): Element {
  const x = new Element('x', { xmlns: NS_DATA, type });
  if (title) x.c('title').t(title);
  if (instructions) x.c('instructions').t(instructions);
  x.c('field', { type: 'hidden', var: 'FORM_TYPE' }).c('value').t(NS_ADMIN);
  for (const f of fields) {
    const el = x.c('field', { var: f.var, ...(f.type ? { type: f.type } : {}), ...(f.label ? { label: f.label } : {}) });
    if (f.required) el.c('required');
    for (const o of f.options ?? []) el.c('option', { label: o }).c('value').t(o);
    for (const v of f.values ?? []) el.c('value').t(v);
  }
  return x;
}

const asking = (f: Element): Step => ({ status: 'executing', form: f, actions: ['complete'], execute: 'complete' });

/** The submitted form of this stage, checked against its FORM_TYPE and required fields. */
function submitted(req: StageRequest, required: string[]): Submitted {
  const f = req.forms[req.forms.length - 1];
  const type = f.get('FORM_TYPE');
  if (type && type[0] !== NS_ADMIN) throw new CommandError('bad-request', 'bad-payload', `FORM_TYPE is ${NS_ADMIN}`);
  for (const name of required) {
    const v = f.get(name);
    if (!v || v.length === 0 || v.every((x) => x.trim() === '')) throw new CommandError('bad-request', 'bad-payload', `the field ${name} is required`);
  }
  return f;
}

/** An address of this server's accounts: bare only, unless `full` allows a resource. */
function accountJid(session: Session, raw: string, full = false): Jid {
  let j: Jid;
  try {
    j = parseJid(raw.trim());
  } catch (err) {
    throw new StanzaError('jid-malformed', `${JSON.stringify(raw)}: ${(err as Error).message}`);
  }
  const domain = session.ctx.config.domain;
  if (!j.local || j.domain !== domain || (j.resource && !full)) throw new CommandError('bad-request', 'bad-payload', `${JSON.stringify(raw)} is not ${full ? 'the JID' : 'the bare JID'} of an account of ${domain}`);
  return j;
}

function accountError(err: unknown): StanzaError {
  switch ((err as Error).name) {
    case 'AccountExistsError':
      return new StanzaError('conflict', 'the account exists already');
    case 'InvalidUsernameError':
      return new StanzaError('not-acceptable', 'the username is not a valid localpart');
    case 'InvalidPasswordError':
      return new StanzaError('not-acceptable', 'the password is not usable (empty, or characters SASLprep forbids)');
    case 'AccountNotFoundError':
      return new StanzaError('item-not-found', 'no such account');
    default:
      return new StanzaError('internal-server-error');
  }
}

async function mustExist(session: Session, j: Jid): Promise<void> {
  if (!(await session.ctx.accounts.exists(j.local))) throw new StanzaError('item-not-found', `no account ${j.local}@${j.domain}`);
}

/**
 * Bare JIDs with a session bound anywhere (components' records left out),
 * read a page at a time until `cap` are found, sorted; `more` when there
 * are others (the reading stops there).
 */
async function onlineUsers(session: Session, cap: number): Promise<{ bares: string[]; more: boolean }> {
  const registry = session.ctx.registry;
  if (!registry.onlinePages) throw new StanzaError('feature-not-implemented', 'this registry cannot list sessions');
  const bares = new Set<string>();
  for await (const page of registry.onlinePages()) {
    for (const jid of page) {
      if (!jid.includes('@')) continue;
      const bare = jid.slice(0, jid.indexOf('/'));
      if (bares.has(bare)) continue;
      if (bares.size >= cap) return { bares: [...bares].sort(), more: true };
      bares.add(bare);
    }
  }
  return { bares: [...bares].sort(), more: false };
}

/**
 * An announcement to every session bound anywhere, each routed to its full
 * JID (its node and worker by the registry), read from the registry a page
 * at a time and sent ANNOUNCE_CONCURRENCY at a time; what could not be
 * sent is counted and logged.
 */
export async function fanOut(registry: SessionRegistry, router: Router, domain: string, text: string, by: string): Promise<{ sent: number; failed: number }> {
  let sent = 0;
  let failed = 0;
  let firstError: string | undefined;
  const underway = new Set<Promise<void>>();
  try {
    for await (const page of registry.onlinePages!()) {
      for (const jid of page) {
        if (!jid.includes('@')) continue;
        const msg = new Element('message', { from: domain, to: jid, type: 'headline' });
        msg.c('body').t(text);
        const p: Promise<void> = router.routeFromServer(msg).then(
          () => void sent++,
          (err: unknown) => {
            failed++;
            firstError ??= String(err);
          },
        ).finally(() => underway.delete(p));
        underway.add(p);
        if (underway.size >= ANNOUNCE_CONCURRENCY) await Promise.race(underway);
      }
    }
  } catch (err) {
    log.warn('announcement: the sessions online could not all be read; those not read yet get nothing', { by, sent, err: String(err) });
  }
  await Promise.all(underway);
  if (failed > 0) log.warn('announcement: not every session could be sent it', { by, sent, failed, err: firstError });
  else log.info('announcement sent', { by, sent });
  return { sent, failed };
}

/** The account's sessions (all of them for a bare JID, the one for a full JID), read fresh from the registry. */
async function sessionsOf(registry: SessionRegistry, j: Jid) {
  const recs = await registry.resources(`${j.local}@${j.domain}`, true);
  return j.resource ? recs.filter((r) => r.jid === `${j.local}@${j.domain}/${j.resource}`) : recs;
}

/**
 * Ends sessions with a policy-violation stream error (XEP-0133 §4.5): every
 * session of a bare JID, the one session of a full JID, on whatever node
 * they are (the registry says where; Router.kick reaches it). How many.
 * Also what the CLI's `sessions kick` runs.
 */
export async function endSessions(d: { registry: SessionRegistry; router: Router }, j: Jid, text = 'your session was ended by an administrator'): Promise<number> {
  let ended = 0;
  for (const rec of await sessionsOf(d.registry, j)) {
    d.router.kick(rec, 'policy-violation', text);
    ended++;
  }
  return ended;
}

const jids = (values: string[] | undefined) => (values ?? []).filter((v) => v.trim() !== '');

export function adminCommands(admins: ReadonlySet<string>): Command[] {
  /** Announcements this worker accepted and is sending, or about to (fanOut). */
  let announcing = 0;
  const allowed = (s: Session) => s.username !== null && s.bare !== undefined && admins.has(s.bare);
  const jidsField = (label: string): Field => ({ var: 'accountjids', type: 'jid-multi', label, required: true });

  const addUser: Command = {
    node: node('add-user'),
    name: 'Add a User',
    allowed,
    async step(req) {
      if (req.forms.length === 0) {
        return asking(form('form', [
          { var: 'accountjid', type: 'jid-single', label: 'The Jabber ID for the account to be added', required: true },
          { var: 'password', type: 'text-private', label: 'The password for this account', required: true },
          { var: 'password-verify', type: 'text-private', label: 'Retype password' },
        ], 'Adding a User', 'Fill out this form to add a user.'));
      }
      const f = submitted(req, ['accountjid', 'password']);
      const j = accountJid(req.session, f.get('accountjid')![0]);
      const password = f.get('password')![0];
      const verify = f.get('password-verify');
      if (verify && verify.length > 0 && verify[0] !== password) throw new CommandError('bad-request', 'bad-payload', 'the passwords do not match');
      try {
        await req.session.ctx.accounts.create(j.local, password);
      } catch (err) {
        throw accountError(err);
      }
      return { status: 'completed', note: { type: 'info', text: `${j.local}@${j.domain} was added` } };
    },
  };

  /** Two stages: the accounts, then a confirmation (or 'complete' on the first: at once). */
  const deleteUser: Command = {
    node: node('delete-user'),
    name: 'Delete a User',
    allowed,
    async step(req) {
      if (req.forms.length === 0) {
        return { status: 'executing', form: form('form', [jidsField('The Jabber ID(s) to delete')], 'Deleting a User', 'Fill out this form to delete a user.'), actions: ['next', 'complete'], execute: 'next' };
      }
      const f = req.forms.length === 1 ? submitted(req, ['accountjids']) : req.forms[0];
      const targets = jids(f.get('accountjids')).map((v) => accountJid(req.session, v));
      if (req.forms.length === 1 && req.action === 'next') {
        const list = targets.map((j) => `${j.local}@${j.domain}`);
        return {
          status: 'executing',
          form: form('form', [{ var: 'accountjids', type: 'jid-multi', label: 'The accounts to delete, with all their data', values: list }], 'Confirm the deletion', 'These accounts, their rosters, offline messages and archives will be removed, and their sessions ended. Complete to confirm.'),
          actions: ['complete'],
          execute: 'complete',
          note: { type: 'warn', text: `${list.length} account(s) will be deleted` },
        };
      }
      const missing: string[] = [];
      let removed = 0;
      for (const j of targets) {
        // The removal path of the CLI and XEP-0077: the stores' part here, then the
        // notice every worker of every node acts on (sessions end, contacts are told).
        const notice = await req.session.ctx.removeAccount(j.local);
        if (!notice) missing.push(`${j.local}@${j.domain}`);
        else {
          removed++;
          req.session.ctx.announceRemoval(notice);
        }
      }
      if (removed === 0 && missing.length > 0) throw new StanzaError('item-not-found', `no account ${missing.join(', ')}`);
      return { status: 'completed', note: missing.length > 0 ? { type: 'warn', text: `${removed} deleted; not found: ${missing.join(', ')}` } : { type: 'info', text: `${removed} deleted` } };
    },
  };

  const changePassword: Command = {
    node: node('change-user-password'),
    name: 'Change User Password',
    allowed,
    async step(req) {
      if (req.forms.length === 0) {
        return asking(form('form', [
          { var: 'accountjid', type: 'jid-single', label: 'The Jabber ID for this account', required: true },
          { var: 'password', type: 'text-private', label: 'The password for this account', required: true },
        ], 'Changing a User Password', "Fill out this form to change a user's password."));
      }
      const f = submitted(req, ['accountjid', 'password']);
      const j = accountJid(req.session, f.get('accountjid')![0]);
      await mustExist(req.session, j);
      try {
        await req.session.ctx.accounts.setPassword(j.local, f.get('password')![0]);
      } catch (err) {
        throw accountError(err);
      }
      return { status: 'completed', note: { type: 'info', text: 'the password was changed' } };
    },
  };

  const userStats: Command = {
    node: node('user-stats'),
    name: 'Get User Statistics',
    allowed,
    async step(req) {
      if (req.forms.length === 0) {
        return asking(form('form', [{ var: 'accountjid', type: 'jid-single', label: 'The Jabber ID for statistics', required: true }], 'Get User Statistics', 'Fill out this form to gather user statistics.'));
      }
      const f = submitted(req, ['accountjid']);
      const j = accountJid(req.session, f.get('accountjid')![0]);
      await mustExist(req.session, j);
      const recs = await sessionsOf(req.session.ctx.registry, j);
      const { items } = await req.session.ctx.roster.get(j.local);
      const resources = recs.map((r) => r.jid.slice(r.jid.indexOf('/') + 1)).sort();
      return {
        status: 'completed',
        form: form('result', [
          { var: 'accountjid', values: [`${j.local}@${j.domain}`] },
          { var: 'onlineresources', label: "The names of an account's online sessions", values: resources },
          { var: 'rostersize', label: 'Number of roster items for an account', values: [String(items.length)] },
        ]),
      };
    },
  };

  const endSession: Command = {
    node: node('end-user-session'),
    name: 'End User Session',
    allowed,
    async step(req) {
      if (req.forms.length === 0) return asking(form('form', [jidsField('The Jabber ID(s) for which to end sessions')], 'Ending a User Session', 'Fill out this form to end a user\'s session.'));
      const f = submitted(req, ['accountjids']);
      const targets = jids(f.get('accountjids')).map((v) => accountJid(req.session, v, true));
      let ended = 0;
      // XEP-0133 §4.5: a bare JID ends all of the user's sessions, a full JID only that one; on whatever node they are.
      for (const j of targets) ended += await endSessions(req.session.ctx, j);
      return { status: 'completed', note: { type: 'info', text: `${ended} session(s) ended` } };
    },
  };

  const onlineList: Command = {
    node: node('get-online-users-list'),
    name: 'Get List of Online Users',
    allowed,
    async step(req) {
      if (req.forms.length === 0) {
        return asking(form('form', [{ var: 'max_items', type: 'list-single', label: 'Maximum number of items to show', options: ['25', '50', '75', '100', '150', '200', 'none'] }], 'Requesting List of Online Users', 'Fill out this form to request the online users of this service.'));
      }
      const f = submitted(req, []);
      const raw = f.get('max_items')?.[0] ?? 'none';
      const max = raw === 'none' ? MAX_LIST : Number(raw);
      if (!Number.isSafeInteger(max) || max < 1) throw new CommandError('bad-request', 'bad-payload', 'max_items is a positive number or none');
      const { bares, more } = await onlineUsers(req.session, Math.min(max, MAX_LIST));
      return {
        status: 'completed',
        form: form('result', [{ var: 'onlineuserjids', type: 'jid-multi', label: 'The list of all online users', values: bares }]),
        ...(more ? { note: { type: 'info' as const, text: `${bares.length} shown; more users are online` } } : {}),
      };
    },
  };

  const onlineNum: Command = {
    node: node('get-online-users-num'),
    name: 'Get Number of Online Users',
    allowed,
    async step(req) {
      const { bares, more } = await onlineUsers(req.session, ONLINE_COUNT_MAX);
      return {
        status: 'completed',
        form: form('result', [{ var: 'onlineusersnum', label: 'The number of online users', values: [String(bares.length)] }]),
        ...(more ? { note: { type: 'warn' as const, text: `at least ${bares.length}: counting stops there` } } : {}),
      };
    },
  };

  const registeredNum: Command = {
    node: node('get-registered-users-num'),
    name: 'Get Number of Registered Users',
    allowed,
    async step(req) {
      const n = (await req.session.ctx.accounts.list()).length;
      return { status: 'completed', form: form('result', [{ var: 'registeredusersnum', label: 'The number of registered users', values: [String(n)] }]) };
    },
  };

  const announce: Command = {
    node: node('announce'),
    name: 'Send Announcement to Online Users',
    allowed,
    async step(req) {
      if (req.forms.length === 0) {
        return asking(form('form', [{ var: 'announcement', type: 'text-multi', label: 'Announcement', required: true }], 'Making an Announcement', 'Fill out this form to make an announcement to all active users of this service.'));
      }
      const f = submitted(req, ['announcement']);
      const text = f.get('announcement')!.join('\n');
      if (text.length > MAX_ANNOUNCEMENT_CHARS) throw new CommandError('bad-request', 'bad-payload', `an announcement is at most ${MAX_ANNOUNCEMENT_CHARS} characters`);
      const { registry, router, config } = req.session.ctx;
      if (!registry.onlinePages) throw new StanzaError('feature-not-implemented', 'this registry cannot list sessions');
      if (announcing >= ANNOUNCEMENTS_AT_ONCE) throw new StanzaError('resource-constraint', 'other announcements are being sent; try again once they are out', 'wait');
      // Its place taken here, where it is checked, not when it starts: requests accepted before any of them has
      // started (their answers on their way) count too.
      announcing++;
      let started = false;
      // An answer that never went out (its `after` not run) gives the place back.
      const lapse = setTimeout(() => {
        if (started) return;
        started = true;
        announcing--;
      }, ANNOUNCE_START_MS);
      lapse.unref();
      const by = req.session.jid!;
      // The admin is answered at once; the sessions get it in the background (fanOut), however many they are.
      const after = () => {
        if (started) return;
        started = true;
        clearTimeout(lapse);
        void fanOut(registry, router, config.domain, text, by).finally(() => announcing--);
      };
      return { status: 'completed', note: { type: 'info', text: 'the announcement is being sent to every session online' }, after };
    },
  };

  return [addUser, deleteUser, changePassword, endSession, userStats, onlineList, onlineNum, registeredNum, announce];
}

