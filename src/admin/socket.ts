// The node's administration socket: a Unix socket in the data directory
// (mode 0600, like the data: only the server's user, and root, may use it;
// nothing is exposed on the network), through which the CLI run beside a
// node talks to it. One JSON object per line each way: a request, then its
// answer ({"ok":true,...} or {"ok":false,"error":...}).
//
// What the CLI changed in the stores, for the node to act on at once (an
// account removed: its sessions end, its contacts are told; a blocklist
// imported: the workers read it); in a cluster the CLI tells every node
// through Redis instead. And runtime administration (`reload`, `sessions`,
// `stats`, `announce`): on one node of a cluster, these reach the whole
// cluster (acceptor/server.ts).
import net from 'node:net';
import { existsSync, unlinkSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type { RemovalNotice } from '../accounts/removal.ts';
import { isRemovalNotice } from '../accounts/removal.ts';
import { PRIVATE_FILE_MODE } from '../storage/files.ts';
import { MAX_ANNOUNCEMENT_CHARS } from '../modules/admin.ts';
import { log } from '../log.ts';

export type AdminRequest =
  | { op: 'removed'; notice: RemovalNotice }
  // what the workers keep of an account changed in the stores (an imported blocklist): they read it again
  | { op: 'changed'; kind: 'blocklist'; user: string }
  // SIGHUP's reload: answered with what it did
  | { op: 'reload' }
  // the sessions of the cluster (of one account, bare JID, or one full JID), per node
  | { op: 'sessions'; user?: string }
  // ends sessions (a bare JID: all of the account's) wherever they are
  | { op: 'kick'; jid: string }
  | { op: 'stats' }
  // a headline message to every session online (XEP-0133 announce)
  | { op: 'announce'; text: string };
export type AdminAnswer = ({ ok: true } & Record<string, unknown>) | { ok: false; error: string };

/** The request's fields checked (throws with what is wrong): a request reaches the server only whole. */
function check(req: AdminRequest): void {
  const name = req?.op === 'removed' ? 'removal notice' : req?.op === 'changed' ? 'change notice' : `${req?.op} request`;
  const bad = (what: string) => new Error(`a ${name} ${what}`);
  const str = (v: unknown, max: number) => typeof v === 'string' && v !== '' && v.length <= max;
  switch (req?.op) {
    case 'removed':
      if (!isRemovalNotice(req.notice)) throw bad('without the fields it needs');
      return;
    case 'changed':
      if (req.kind !== 'blocklist' || typeof req.user !== 'string' || req.user === '') throw bad('without the fields it needs');
      return;
    case 'reload':
    case 'stats':
      return;
    case 'sessions':
      if (req.user !== undefined && !str(req.user, 3071)) throw bad('with a user that is no JID');
      return;
    case 'kick':
      if (!str(req.jid, 3071)) throw bad('without a JID');
      return;
    case 'announce':
      if (!str(req.text, MAX_ANNOUNCEMENT_CHARS)) throw bad(`without a text of 1 to ${MAX_ANNOUNCEMENT_CHARS} characters`);
      return;
    default:
      throw new Error(`unknown request ${JSON.stringify((req as { op?: unknown } | null)?.op)}`);
  }
}

/** Where the socket lives for a data directory. */
export function adminSocketPath(dataDir: string): string {
  return join(dataDir, 'admin.sock');
}

/** Unix socket paths are short (about 100 bytes on Linux and macOS). */
const MAX_PATH = 100;

/** What the server does with a request: what goes in its answer, if anything. */
export type AdminHandler = (req: AdminRequest) => Promise<Record<string, unknown> | void> | Record<string, unknown> | void;

/** Listens on the data directory's socket; undefined (and a warning) where it cannot. */
export async function listenAdmin(dataDir: string, handle: AdminHandler): Promise<net.Server | undefined> {
  const path = adminSocketPath(dataDir);
  if (Buffer.byteLength(path) > MAX_PATH) {
    log.warn('no administration socket: the data directory path is too long for one', { path });
    return undefined;
  }
  // A socket left by a server that died: nobody answers on it any more.
  if (existsSync(path) && !(await answers(path))) unlinkSync(path);
  const server = net.createServer((sock) => {
    let buf = '';
    let turn = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 16 * 1024 * 1024) return sock.destroy(); // no such request is this large
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        // Answered in the order asked, each once its work is done.
        turn = turn.then(async () => {
          let answer: AdminAnswer;
          try {
            const req = JSON.parse(line) as AdminRequest;
            check(req);
            answer = { ...(await handle(req)), ok: true };
          } catch (err) {
            answer = { ok: false, error: (err as Error).message };
          }
          if (!sock.destroyed) sock.write(`${JSON.stringify(answer)}\n`);
        });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  server.on('error', (err) => log.warn('administration socket failed', { err: err.message }));
  chmodSync(path, PRIVATE_FILE_MODE);
  return server;
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** No server runs on this data directory (no socket, or nobody answering on it). */
export class NoServerError extends Error {
  override name = 'NoServerError';
}

/**
 * Sends a request to the server running on this data directory. False when
 * none runs (no socket, or nobody answering on it); throws when it answers
 * with an error.
 */
export async function tellServer(dataDir: string, req: AdminRequest, timeoutMs = 10_000): Promise<boolean> {
  try {
    await askServer(dataDir, req, timeoutMs);
    return true;
  } catch (err) {
    if (err instanceof NoServerError) return false;
    throw err;
  }
}

/**
 * Sends a request to the server running on this data directory and returns
 * its answer; throws a NoServerError when none runs, an Error with the
 * server's reason when it refuses.
 */
export function askServer(dataDir: string, req: AdminRequest, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const path = adminSocketPath(dataDir);
  if (!existsSync(path)) return Promise.reject(new NoServerError(`no server runs on ${dataDir}: no administration socket ${path}`));
  return new Promise((resolve, reject) => {
    const c = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`the server did not answer on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    c.setEncoding('utf8');
    c.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') reject(new NoServerError(`no server runs on ${dataDir}: nobody answers on ${path}`));
      else reject(err);
    });
    c.once('connect', () => c.write(`${JSON.stringify(req)}\n`));
    c.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      clearTimeout(timer);
      c.destroy();
      let a: AdminAnswer;
      try {
        a = JSON.parse(buf.slice(0, nl)) as AdminAnswer;
      } catch {
        return reject(new Error(`the server's answer on ${path} is not understood`));
      }
      if (a.ok) resolve(a);
      else reject(new Error(`the server refused: ${a.error}`));
    });
  });
}
