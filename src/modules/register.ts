// XEP-0077: In-Band Registration. Before authentication it creates accounts
// (only when enabled); once authenticated it changes the password or cancels
// the account (§3.2, §3.3).
import { Element } from 'ltx';
import { NS_REGISTER } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { normalizedOrUndefined } from '../accounts/store.ts';
import type { ServerModule, IqResult } from './module.ts';
import { parseJid, bare } from '../xmpp/jid.ts';
import type { Session } from '../session/session.ts';
import { Saturated } from '../accounts/hashing.ts';

function field(q: Element, name: string): string | undefined {
  const el = q.getChild(name);
  return el ? el.getText() : undefined;
}

function accountError(err: unknown): StanzaError {
  const name = (err as Error).name;
  if (name === 'AccountExistsError') return new StanzaError('conflict', 'the username is taken');
  if (name === 'InvalidUsernameError') return new StanzaError('not-acceptable', 'the username is not a valid localpart');
  if (name === 'AccountNotFoundError') return new StanzaError('item-not-found');
  if (name === 'InvalidPasswordError') return new StanzaError('not-acceptable', 'the password is not usable (empty, longer than 1024 bytes, or characters SASLprep forbids)');
  return new StanzaError('internal-server-error');
}

/** Registration on an unauthenticated stream (§3.1). */
export async function registerUnauthenticated(iq: Element, session: Session): Promise<Element | null> {
  const q = iq.getChild('query', NS_REGISTER)!;
  if (iq.attrs.type === 'get') {
    const form = new Element('query', { xmlns: NS_REGISTER });
    form.c('instructions').t('Choose a username and password.').up().c('username').up().c('password');
    return form;
  }
  if (q.getChild('remove')) throw new StanzaError('not-authorized', 'authenticate before cancelling a registration');
  const username = field(q, 'username');
  const password = field(q, 'password');
  if (!username || !password) throw new StanzaError('not-acceptable', 'username and password are required');
  // One account per stream: a client registers, then logs in (XEP-0077 §3.1); a stream making accounts in a loop is not one.
  if (session.registeredHere) throw new StanzaError('not-allowed', 'an account was registered on this stream already: log in, or open another stream');
  // Per address, as Prosody's registration_throttle_max (XMPP_REGISTRATION_RATE): the attempt counts, whatever its outcome.
  if (!(await session.ctx.guard.register(session.clientAddress))) throw new StanzaError('policy-violation', 'too many registrations from your address recently: try again later', 'wait');
  try {
    await hashed(session, () => session.ctx.accounts.create(username, password));
  } catch (err) {
    if (err instanceof StanzaError) throw err;
    throw accountError(err);
  }
  session.registeredHere = true;
  return null;
}

/** A store call that hashes a password, within the worker's bound (accounts/hashing.ts): refused with resource-constraint when its queue is full. */
async function hashed(session: Session, fn: () => Promise<void>): Promise<void> {
  try {
    await session.ctx.hashing.run('change', fn);
  } catch (err) {
    if (err instanceof Saturated) throw new StanzaError('resource-constraint', 'the server is too busy to hash passwords now: try again later');
    throw err;
  }
}

/** §3.2, §3.3 concern the requester's own account: addressed to the server, to the account's bare JID, or to nobody (RFC 6120 §10.3). */
function ownAccount(iq: Element, session: Session): void {
  const to = iq.attrs.to;
  if (to === undefined || to === session.ctx.config.domain) return;
  let target: string;
  try {
    target = bare(parseJid(to));
  } catch {
    throw new StanzaError('forbidden', 'registration concerns the own account');
  }
  if (target !== session.bare && target !== session.ctx.config.domain) throw new StanzaError('forbidden', 'registration concerns the own account');
}

const registered = (iq: Element, session: Session) => {
  ownAccount(iq, session);
  const q = new Element('query', { xmlns: NS_REGISTER });
  q.c('registered').up().c('username').t(session.username ?? '').up().c('password');
  return q;
};

const change = async (iq: Element, session: Session): Promise<IqResult> => {
  ownAccount(iq, session);
  const q = iq.getChild('query', NS_REGISTER)!;
  if (session.username === null) throw new StanzaError('not-allowed', 'anonymous sessions have no account');
  if (q.getChild('remove')) {
    // §3.2: the account goes with its data; its contacts are told.
    const notice = await session.ctx.removeAccount(session.username);
    if (!notice) throw new StanzaError('item-not-found', 'the account is already gone');
    return {
      payload: null,
      // The result first; then every session of the account, wherever it
      // is and this one with it, ends with <not-authorized/>: it can no
      // longer stay authenticated.
      after: () => session.ctx.announceRemoval(notice),
    };
  }
  const username = field(q, 'username');
  const password = field(q, 'password');
  // XEP-0077 §3.3: both <username/> and <password/> are required (bad-request otherwise).
  if (!username || !password) throw new StanzaError('bad-request', 'username and password are required');
  if (normalizedOrUndefined(username) !== session.username) throw new StanzaError('not-allowed', 'a password can only be changed for the own account');
  const user = session.username;
  try {
    await hashed(session, () => session.ctx.accounts.setPassword(user, password));
  } catch (err) {
    if (err instanceof StanzaError) throw err;
    throw accountError(err);
  }
  return null;
};

/** Once authenticated: to the server (§3.2, §3.3 examples) or on behalf of the account (an iq without 'to'). */
export const register: ServerModule = {
  features: [NS_REGISTER],
  server: {
    [`get ${NS_REGISTER}`]: registered,
    [`set ${NS_REGISTER}`]: change,
  },
  account: {
    [`get ${NS_REGISTER}`]: registered,
    [`set ${NS_REGISTER}`]: change,
  },
};
