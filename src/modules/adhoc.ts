// XEP-0050: Ad-Hoc Commands on the server's JID. The framework: discovery
// (the commands node lists what the asker may run, §2.2; each command's node
// answers disco#info, §2.3), execution in stages with data forms (XEP-0004),
// sessions keyed by sessionid and bound to the full JID that started them
// (§3.3), 'prev' back to the stage before, 'cancel', and the errors of §6.
// The commands themselves (XEP-0133 service administration) are in admin.ts.
//
// A command session lives on the worker that holds the requester's stream,
// in memory: bounded per account and in all, and dropped once idle for
// SESSION_IDLE_MS (a session resumed on another worker starts over). The
// ids of sessions that ended are kept a while longer (bounded too), to tell
// a session that is over (session-expired) from one that never was
// (bad-sessionid), as §4.6 asks.
import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import { StanzaError } from '../xmpp/errors.ts';
import type { StanzaCondition } from '../xmpp/errors.ts';
import { NS_DISCO_INFO, NS_DISCO_ITEMS } from '../xmpp/ns.ts';
import type { ServerModule, IqResult } from './module.ts';
import type { Session } from '../session/session.ts';

export const NS_COMMANDS = 'http://jabber.org/protocol/commands';
export const NS_DATA = 'jabber:x:data';

/** Command sessions one account may have open at once, on one worker. */
export const MAX_SESSIONS_PER_ACCOUNT = 8;
/** Command sessions open at once on one worker. */
export const MAX_SESSIONS = 1000;
/** A session with no request for this long is gone (§3.4.3: the responder may end it); XMPP_ADHOC_IDLE_MS. */
export const SESSION_IDLE_MS = 10 * 60_000;
/** Ids of sessions that ended, kept to answer session-expired (§4.6): at most this many per worker, for this long. */
export const MAX_ENDED = 4 * MAX_SESSIONS;
export const ENDED_KEEP_MS = 60 * 60_000;
/** Data form limits (XEP-0004): fields in a submission, values in a field, characters in a value. */
export const MAX_FIELDS = 32;
export const MAX_VALUES = 200;
export const MAX_VALUE_CHARS = 4096;

export type Action = 'next' | 'prev' | 'complete';

/** A note to the requester (§4.5). */
export interface Note {
  type: 'info' | 'warn' | 'error';
  text: string;
}

/** What one stage of a command gives back. */
export type Step =
  /** More to do: a form to fill, the actions allowed next (§4.4; 'prev' is added where there is a stage to go back to), the one an 'execute' means. */
  | { status: 'executing'; form: Element; actions: ('next' | 'complete')[]; execute: 'next' | 'complete'; note?: Note }
  /** Done: what it gives back, if anything; `after` runs once the answer is on its way (work that goes on in the background). */
  | { status: 'completed'; form?: Element; note?: Note; after?: () => void };

/** A submitted form, its fields by name. */
export type Submitted = Map<string, string[]>;

export interface StageRequest {
  session: Session;
  /** The forms submitted so far, in stage order (the last is this request's; none on the first). */
  forms: Submitted[];
  /** 'complete': the requester asked to finish now; 'next': to go on. */
  action: 'next' | 'complete';
}

export interface Command {
  node: string;
  name: string;
  /** Whether this session may run it (and see it listed). */
  allowed(session: Session): boolean;
  /** A stage: the first (forms empty) or the one after the forms submitted. Throws a StanzaError to refuse. */
  step(req: StageRequest): Promise<Step> | Step;
}

/** An error with the XEP-0050 §6 application condition beside the stanza one. */
export class CommandError extends StanzaError {
  readonly specific: string;
  constructor(condition: StanzaCondition, specific: string, text?: string) {
    super(condition, text);
    this.specific = specific;
  }
  override toElement(by?: string): Element {
    const el = super.toElement(by);
    el.c(this.specific, { xmlns: NS_COMMANDS });
    return el;
  }
}

interface Open {
  id: string;
  command: Command;
  /** The full JID that started it: only that one may go on with it (§3.3). */
  owner: string;
  bare: string;
  forms: Submitted[];
  /** The step answered last at each stage, for 'prev' (§3.4.2). */
  steps: Step[];
  touched: number;
}

/** Reads a submitted data form (XEP-0004 §3.2) within the limits; a bad one is bad-request + bad-payload (§6). */
export function readForm(x: Element | undefined): Submitted {
  const out: Submitted = new Map();
  if (!x) return out;
  if (x.attrs.type !== 'submit') throw new CommandError('bad-request', 'bad-payload', "a form is submitted with type='submit'");
  const fields = x.getChildren('field');
  if (fields.length > MAX_FIELDS) throw new CommandError('bad-request', 'bad-payload', `at most ${MAX_FIELDS} fields`);
  for (const f of fields) {
    const name = f.attrs.var;
    if (typeof name !== 'string' || name === '') continue;
    const values = f.getChildren('value');
    if (values.length > MAX_VALUES) throw new CommandError('bad-request', 'bad-payload', `at most ${MAX_VALUES} values in a field`);
    const texts = values.map((v) => v.getText());
    if (texts.some((t) => t.length > MAX_VALUE_CHARS)) throw new CommandError('bad-request', 'bad-payload', `a value is at most ${MAX_VALUE_CHARS} characters`);
    out.set(name, texts);
  }
  return out;
}

/** The XEP-0050 module over a set of commands, in the order they are listed. */
export function adhoc(commands: Command[], opts: { idleMs?: number } = {}): ServerModule {
  const byNode = new Map(commands.map((c) => [c.node, c]));
  const idleMs = opts.idleMs ?? SESSION_IDLE_MS;
  const open = new Map<string, Open>();
  /** Sessions that ended (completed, canceled, refused, idle too long), by id, oldest first: whose they were, for session-expired. */
  const ended = new Map<string, { owner: string; command: Command; at: number }>();

  /** The session is over: gone, its id remembered (within MAX_ENDED and ENDED_KEEP_MS). */
  const end = (o: Open, now: number): void => {
    open.delete(o.id);
    ended.set(o.id, { owner: o.owner, command: o.command, at: now });
    for (const [id, e] of ended) {
      if (ended.size <= MAX_ENDED && now - e.at <= ENDED_KEEP_MS) break;
      ended.delete(id);
    }
  };

  const sweep = (now: number) => {
    // In insertion order, touched sessions re-inserted: the oldest first.
    for (const s of open.values()) {
      if (now - s.touched <= idleMs) break;
      end(s, now);
    }
  };

  const payload = (o: Pick<Open, 'command' | 'id'>, step: Step | { status: 'canceled' }, back: boolean): Element => {
    const el = new Element('command', { xmlns: NS_COMMANDS, node: o.command.node, sessionid: o.id, status: step.status });
    if (step.status === 'executing') {
      // §4.4: the actions allowed now, and which one 'execute' means.
      const actions = el.c('actions', { execute: step.execute });
      if (back) actions.c('prev');
      for (const a of step.actions) actions.c(a);
    }
    if (step.status !== 'canceled') {
      if (step.note) el.c('note', { type: step.note.type }).t(step.note.text);
      if (step.form) el.cnode(step.form);
    }
    return el;
  };

  const commandOf = (node: string, session: Session | undefined): Command => {
    const command = byNode.get(node);
    // §6: item-not-found for a command that does not exist.
    if (!command) throw new StanzaError('item-not-found', 'no such command');
    // §6 forbidden: the requester may not run it (XEP-0133 §8: only service administrators).
    if (!session || !command.allowed(session)) throw new StanzaError('forbidden', 'you may not run this command');
    return command;
  };

  const run = async (o: Open, session: Session, action: 'next' | 'complete'): Promise<IqResult> => {
    const step = await o.command.step({ session, forms: o.forms, action });
    if (step.status === 'completed') {
      end(o, Date.now());
      return step.after ? { payload: payload(o, step, false), after: step.after } : payload(o, step, false);
    }
    o.steps.push(step);
    return payload(o, step, o.steps.length > 1);
  };

  const execute = async (iq: Element, session: Session): Promise<IqResult> => {
    const cmd = iq.getChild('command', NS_COMMANDS)!;
    const node = cmd.attrs.node;
    if (typeof node !== 'string' || node === '') throw new CommandError('bad-request', 'malformed-action', 'a command needs a node');
    const action = cmd.attrs.action ?? 'execute';
    // §6 malformed-action: not an action XEP-0050 defines.
    if (!['execute', 'next', 'prev', 'complete', 'cancel'].includes(action)) throw new CommandError('bad-request', 'malformed-action', `unknown action ${JSON.stringify(action)}`);
    const command = commandOf(node, session);
    const now = Date.now();
    sweep(now);
    const sid = cmd.attrs.sessionid;
    if (sid === undefined) {
      // A new session: only 'execute' starts one (§3.4: the first request carries no sessionid).
      if (action !== 'execute') throw new CommandError('bad-request', 'bad-action', 'a command starts with execute');
      const bare = session.bare!;
      let mine = 0;
      for (const s of open.values()) if (s.bare === bare) mine++;
      if (mine >= MAX_SESSIONS_PER_ACCOUNT || open.size >= MAX_SESSIONS) throw new StanzaError('resource-constraint', 'too many command sessions open; complete or cancel one', 'wait');
      const o: Open = { id: `${command.node.split('#').pop()}:${randomBytes(12).toString('base64url')}`, command, owner: session.jid!, bare, forms: [], steps: [], touched: now };
      open.set(o.id, o);
      try {
        return await run(o, session, 'next');
      } catch (err) {
        open.delete(o.id);
        throw err;
      }
    }
    const o = open.get(sid);
    if (!o || o.command !== command || o.owner !== session.jid) {
      // §4.6 session-expired: this requester's session of this command that is no longer active (completed, canceled or timed out).
      const e = o ? undefined : ended.get(sid);
      if (e && e.command === command && e.owner === session.jid) throw new CommandError('not-allowed', 'session-expired', 'this command session is over (completed, canceled or idle too long); execute the command again');
      // §4.6 bad-sessionid: one never issued, another command's, or another requester's (§3.3: bound to the full JID).
      throw new CommandError('bad-request', 'bad-sessionid', 'no such command session');
    }
    open.delete(sid);
    if (action === 'cancel') {
      end(o, now);
      return payload(o, { status: 'canceled' }, false);
    }
    o.touched = now;
    open.set(sid, o);
    const last = o.steps[o.steps.length - 1];
    if (!last || last.status !== 'executing') throw new CommandError('bad-request', 'bad-action', 'this session has nothing more to do');
    if (action === 'prev') {
      // §3.4.2: back to the stage before, its form as it was.
      if (o.steps.length < 2) throw new CommandError('bad-request', 'bad-action', 'there is no stage before this one');
      o.steps.pop();
      o.forms.pop();
      return payload(o, o.steps[o.steps.length - 1], o.steps.length > 1);
    }
    const chosen = action === 'execute' ? last.execute : (action as 'next' | 'complete');
    // §6 bad-action: an action this stage does not allow.
    if (!last.actions.includes(chosen)) throw new CommandError('bad-request', 'bad-action', `${action} is not allowed at this stage`);
    o.forms.push(readForm(cmd.getChild('x', NS_DATA)));
    try {
      return await run(o, session, chosen);
    } catch (err) {
      // A refused submission ends the session (the requester starts over):
      // sessions that failed do not pile up against the account's bound.
      end(o, Date.now());
      throw err;
    }
  };

  const discoNode = (kind: 'info' | 'items', node: string, session: Session | undefined): Element | undefined => {
    if (node === NS_COMMANDS) {
      if (kind === 'info') {
        const q = new Element('query', { xmlns: NS_DISCO_INFO, node });
        q.c('identity', { category: 'automation', type: 'command-list', name: 'Commands' });
        return q;
      }
      // §2.2: the commands this requester may run; none for another server's entities.
      const q = new Element('query', { xmlns: NS_DISCO_ITEMS, node });
      if (session) for (const c of commands) if (c.allowed(session)) q.c('item', { jid: session.ctx.config.domain, node: c.node, name: c.name });
      return q;
    }
    if (!byNode.has(node)) return undefined;
    const command = commandOf(node, session);
    if (kind === 'items') return new Element('query', { xmlns: NS_DISCO_ITEMS, node });
    // §2.3: a command node is a command-node with the commands and data forms features.
    const q = new Element('query', { xmlns: NS_DISCO_INFO, node });
    q.c('identity', { category: 'automation', type: 'command-node', name: command.name });
    q.c('feature', { var: NS_COMMANDS });
    q.c('feature', { var: NS_DATA });
    return q;
  };

  return {
    features: [NS_COMMANDS],
    server: { [`set ${NS_COMMANDS}`]: execute },
    discoNode,
    // The removed account's sessions go with it.
    removed: (user) => {
      for (const [id, s] of open) if (s.bare.slice(0, s.bare.lastIndexOf('@')) === user) open.delete(id);
      const prefix = `${user}@`;
      for (const [id, e] of ended) if (e.owner.startsWith(prefix)) ended.delete(id);
    },
  };
}
