// What the node's main thread asks of its workers for the administration
// socket (admin/socket.ts): their sessions and counts, and the cluster-wide
// actions XEP-0133 already does from a worker (ending sessions wherever
// they are, an announcement to every session): the same code, reached from
// the command line instead of an administrator's client.
import { parseJid } from '../xmpp/jid.ts';
import { endSessions, fanOut } from '../modules/admin.ts';
import type { WorkerContext } from '../worker/context.ts';

/** One session as `sessions list` shows it. */
export interface SessionInfo {
  jid: string;
  /** The client's address (none while detached, waiting for its client to resume it). */
  ip?: string;
  port?: number;
  /** When its connection was opened (ISO). */
  since: string;
  /** tcp (STARTTLS or not: see secure), tls (direct TLS, XEP-0368), websocket, bosh. */
  transport: string;
  secure: boolean;
  /** XEP-0198: the client may resume it; detached: its connection is gone and it waits for that. */
  resumable: boolean;
  detached: boolean;
  node: string;
  worker: number;
}

/** One worker's counts (`stats`). */
export interface WorkerStats {
  worker: number;
  /** Client connections: every stream of this worker, bound or not (WebSocket and BOSH included). */
  connections: number;
  /** Sessions with a resource bound, and those of them detached (waiting to be resumed). */
  sessions: number;
  detached: number;
  components: number;
  s2sIncoming: number;
  s2sOutgoing: number;
}

/** Sessions one node lists at most (`total` says how many it has): an answer crosses Redis whole. */
export const MAX_LISTED = 10_000;

export type AdminTask =
  // this worker's sessions (at most `max`), those of one account (bare JID) or one full JID when `user` is given; and how many in all
  | { op: 'sessions'; user?: string; max: number }
  | { op: 'stats' }
  // cluster-wide, from this worker: the registry says where the sessions are
  | { op: 'kick'; jid: string; text?: string }
  | { op: 'announce'; text: string };

/** Runs one task on this worker. */
export async function runAdminTask(c: WorkerContext, task: AdminTask): Promise<unknown> {
  switch (task.op) {
    case 'sessions': {
      const sessions: SessionInfo[] = [];
      let total = 0;
      // Bound sessions, detached ones (waiting to be resumed) included.
      for (const s of c.sessions.values()) {
        if (!s.jid || (task.user && s.jid !== task.user && s.bare !== task.user)) continue;
        total++;
        if (sessions.length < task.max) sessions.push({ ...s.describe(), node: c.node, worker: c.index });
      }
      return { sessions, total };
    }
    case 'stats': {
      return {
        worker: c.index,
        connections: c.all.size,
        sessions: c.sessions.size,
        detached: c.detached.size,
        components: c.components.size,
        s2sIncoming: c.s2s?.incoming.size ?? 0,
        s2sOutgoing: c.s2s?.outgoingCount ?? 0,
      } satisfies WorkerStats;
    }
    case 'kick':
      return { ended: await endSessions(c, parseJid(task.jid), task.text) };
    case 'announce':
      if (!c.registry.onlinePages) throw new Error('this registry cannot list sessions');
      return fanOut(c.registry, c.router, c.config.domain, task.text, 'the command line');
  }
}
