// The node's administration socket: a Unix socket in the data directory
// (mode 0600, like the data), through which the CLI, run beside a single
// node, tells the running server what it changed in the stores, so that the
// server acts on it at once (an account removed: its sessions end, its
// contacts are told; a blocklist imported: the workers read it). One JSON object per line each way. In a cluster the
// CLI reaches every node through Redis instead.
import net from 'node:net';
import { existsSync, unlinkSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type { RemovalNotice } from '../accounts/removal.ts';
import { isRemovalNotice } from '../accounts/removal.ts';
import { PRIVATE_FILE_MODE } from '../storage/files.ts';
import { log } from '../log.ts';

export type AdminRequest =
  | { op: 'removed'; notice: RemovalNotice }
  // what the workers keep of an account changed in the stores (an imported blocklist): they read it again
  | { op: 'changed'; kind: 'blocklist'; user: string };
export type AdminAnswer = { ok: true } | { ok: false; error: string };

/** Where the socket lives for a data directory. */
export function adminSocketPath(dataDir: string): string {
  return join(dataDir, 'admin.sock');
}

/** Unix socket paths are short (about 100 bytes on Linux and macOS). */
const MAX_PATH = 100;

/** Listens on the data directory's socket; undefined (and a warning) where it cannot. */
export async function listenAdmin(dataDir: string, handle: (req: AdminRequest) => void): Promise<net.Server | undefined> {
  const path = adminSocketPath(dataDir);
  if (Buffer.byteLength(path) > MAX_PATH) {
    log.warn('no administration socket: the data directory path is too long for one', { path });
    return undefined;
  }
  // A socket left by a server that died: nobody answers on it any more.
  if (existsSync(path) && !(await answers(path))) unlinkSync(path);
  const server = net.createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 16 * 1024 * 1024) return sock.destroy(); // no such request is this large
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let answer: AdminAnswer;
        try {
          const req = JSON.parse(line) as AdminRequest;
          if (req?.op === 'removed') {
            if (!isRemovalNotice(req.notice)) throw new Error('a removal notice without the fields it needs');
          } else if (req?.op === 'changed') {
            if (req.kind !== 'blocklist' || typeof req.user !== 'string' || req.user === '') throw new Error('a change notice without the fields it needs');
          } else throw new Error(`unknown request ${JSON.stringify((req as { op?: unknown } | null)?.op)}`);
          handle(req);
          answer = { ok: true };
        } catch (err) {
          answer = { ok: false, error: (err as Error).message };
        }
        sock.write(`${JSON.stringify(answer)}\n`);
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

/**
 * Sends a request to the server running on this data directory. False when
 * none runs (no socket, or nobody answering on it); throws when it answers
 * with an error.
 */
export async function tellServer(dataDir: string, req: AdminRequest, timeoutMs = 10_000): Promise<boolean> {
  const path = adminSocketPath(dataDir);
  if (!existsSync(path)) return false;
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
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
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
      if (a.ok) resolve(true);
      else reject(new Error(`the server refused: ${a.error}`));
    });
  });
}
