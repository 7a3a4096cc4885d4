// Messages that cross a thread (and, in a cluster, a node) are msgpackr
// encoded. Records are off so that any peer can decode without shared state.
import { Packr } from 'msgpackr';
import type { BindOutcome, BindRequest, SessionRecord } from '../registry/registry.ts';
import type { StreamCondition } from '../xmpp/errors.ts';

const packr = new Packr({ useRecords: false, moreTypes: false });

export const encode = (msg: unknown): Uint8Array => packr.pack(msg);
export const decode = <T>(buf: Uint8Array): T => packr.unpack(buf) as T;

/** Worker → main thread (the node's hub). */
export type ToHub =
  | { t: 'bind'; q: number; req: BindRequest }
  | { t: 'unbind'; jid: string; sid: string }
  | { t: 'presence'; jid: string; sid: string; available: boolean; priority: number }
  | { t: 'hello'; threadId: number }
  | { t: 'ready' }
  | { t: 'stopped' };

/** Main thread → worker. */
export type FromHub =
  | { t: 'welcome'; index: number; workers: number }
  | { t: 'bound'; q: number; outcome: BindOutcome }
  | { t: 'put'; rec: SessionRecord }
  | { t: 'del'; jid: string; sid: string }
  | { t: 'shutdown' }
  // cluster mode: the node's fencing token changed / the node was fenced /
  // Redis lost its data and local sessions must be registered again
  | { t: 'epoch'; epoch: string }
  | { t: 'fenced' }
  | { t: 'reset' };

/** Worker ↔ worker (and node ↔ node): delivery to one session. */
export type Envelope =
  | { t: 'deliver'; jid: string; sid: string; xml: string; roster?: true }
  | { t: 'kick'; jid: string; sid: string; condition: StreamCondition; text?: string };
