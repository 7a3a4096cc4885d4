// XEP-0077: In-Band Registration. Before authentication it creates accounts
// (only when enabled); once authenticated it changes the password or cancels
// the account (§3.2, §3.3).
import { Element } from 'ltx';
import { NS_REGISTER } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { normalizedOrUndefined } from '../accounts/store.ts';
import type { ServerModule } from './module.ts';
import type { Session } from '../session/session.ts';

function field(q: Element, name: string): string | undefined {
  const el = q.getChild(name);
  return el ? el.getText() : undefined;
}

function accountError(err: unknown): StanzaError {
  const name = (err as Error).name;
  if (name === 'AccountExistsError') return new StanzaError('conflict', 'the username is taken');
  if (name === 'InvalidUsernameError') return new StanzaError('not-acceptable', 'the username is not a valid localpart');
  if (name === 'AccountNotFoundError') return new StanzaError('item-not-found');
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
  try {
    await session.ctx.accounts.create(username, password);
  } catch (err) {
    throw accountError(err);
  }
  return null;
}

export const register: ServerModule = {
  features: [NS_REGISTER],
  server: {
    [`get ${NS_REGISTER}`]: (_iq, session) => {
      const q = new Element('query', { xmlns: NS_REGISTER });
      q.c('registered').up().c('username').t(session.username ?? '').up().c('password');
      return q;
    },
    [`set ${NS_REGISTER}`]: async (iq, session) => {
      const q = iq.getChild('query', NS_REGISTER)!;
      if (session.username === null) throw new StanzaError('not-allowed', 'anonymous sessions have no account');
      if (q.getChild('remove')) {
        await session.ctx.accounts.remove(session.username);
        await session.ctx.roster.removeAll(session.username);
        await session.ctx.offline.removeAll(session.username);
        // §3.2: the account is gone; the stream cannot stay authenticated.
        queueMicrotask(() => session.close({ condition: 'not-authorized', text: 'account removed' }));
        return null;
      }
      const username = field(q, 'username');
      const password = field(q, 'password');
      if (!password) throw new StanzaError('bad-request', 'password is required');
      if (username !== undefined && normalizedOrUndefined(username) !== session.username) throw new StanzaError('not-allowed', 'a password can only be changed for the own account');
      try {
        await session.ctx.accounts.setPassword(session.username, password);
      } catch (err) {
        throw accountError(err);
      }
      return null;
    },
  },
};
