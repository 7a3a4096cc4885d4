// The HTTP side of the upload service (XEP-0363 §6): PUT and GET at
// /upload/<token>/<file name> on the server's HTTP listener (web/http.ts),
// served by whichever worker has the connection. The token (32 random
// bytes) is what makes a URL unguessable; the name is the one the slot was
// asked for, and must match. Files live in XMPP_UPLOAD_DIR under their
// token alone (no user-chosen name ever reaches the file system): written
// to tmp/ as they arrive, renamed into place once whole, and recorded as
// done in the store, which alone says what is served.
//
// In a cluster every node must see the same directory (a shared volume):
// a node that does not find a file the store says is there answers 404, and
// says so in its log.
import type http from 'node:http';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { randomBytes } from 'node:crypto';
import type { MediaPattern } from '../config/index.ts';
import type { UploadRules, UploadSlot, UploadStore } from './store.ts';
import { OCTET_STREAM, contentDisposition, inlineSafe, parseMediaType, typeAllowed } from './media.ts';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from '../storage/files.ts';
import { log, Throttled } from '../log.ts';

/** The path the URLs start with. */
export const UPLOAD_PATH = '/upload/';
/** How long after its request a slot's PUT may start (XEP-0363 §7 recommends a short window: a client uploads at once). */
export const SLOT_WINDOW_MS = 300_000;
/** How long one PUT may take once started (the HTTP listener's bound on an upload PUT's arrival; other requests keep XMPP_HTTP_REQUEST_TIMEOUT_MS). */
export const UPLOAD_WRITE_MS = 600_000;
/** Where files are written as they arrive, under the upload directory. */
const TMP = 'tmp';
/** Slots the cleanup takes at a time. */
const SWEEP_CHUNK = 1000;

/** RFC 4648 §5 base64url of 32 bytes: what a token is. */
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Headers that let a web page of any origin put and get files (browser clients, Converse.js...). */
const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, PUT, OPTIONS',
  'Access-Control-Allow-Headers': 'Content-Type',
  'Access-Control-Expose-Headers': 'Content-Length, Content-Type, Content-Disposition',
};

export interface UploadHttpOptions {
  store: UploadStore;
  dir: string;
  types: readonly MediaPattern[];
  /** A file's life after its upload (ms); 0: for ever. */
  expireMs: number;
  now?: () => number;
}

const missing = new Throttled('warn', 'an uploaded file is recorded but not on this node\'s disk: every node of a cluster must share XMPP_UPLOAD_DIR');
const failed = new Throttled('error', 'an upload could not be stored');

export class UploadHttp {
  private readonly o: UploadHttpOptions;
  private readonly now: () => number;

  constructor(o: UploadHttpOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
  }

  /** Makes the directories (for the owner only). */
  async prepare(): Promise<void> {
    await mkdir(join(this.o.dir, TMP), { recursive: true, mode: PRIVATE_DIR_MODE });
  }

  rules(): UploadRules {
    return { now: this.now(), writeMs: UPLOAD_WRITE_MS, expireMs: this.o.expireMs };
  }

  /** Answers a request whose path starts with UPLOAD_PATH. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): void {
    this.serve(req, res, path).catch((err: unknown) => {
      failed.hit({ err: String(err) });
      if (!res.headersSent) end(res, 500, 'the file could not be stored or read\n', { Connection: 'close' });
      else res.destroy();
    });
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    if (req.method === 'OPTIONS') return void res.writeHead(204, { ...CORS, 'Access-Control-Max-Age': '86400' }).end();
    const rest = path.slice(UPLOAD_PATH.length);
    const slash = rest.indexOf('/');
    const token = rest.slice(0, slash);
    let name: string;
    try {
      name = decodeURIComponent(rest.slice(slash + 1));
    } catch {
      return notFound(req, res);
    }
    if (slash < 0 || !TOKEN.test(token)) return notFound(req, res);
    if (req.method === 'PUT') return this.put(req, res, token, name);
    if (req.method !== 'GET' && req.method !== 'HEAD') return end(res, 405, 'PUT to upload, GET to download\n', { Allow: 'GET, HEAD, PUT, OPTIONS', Connection: 'close' });
    return this.get(req, res, token, name);
  }

  private async put(req: http.IncomingMessage, res: http.ServerResponse, token: string, name: string): Promise<void> {
    const slot = await this.o.store.slot(token);
    if (!slot || slot.filename !== name) return notFound(req, res);
    if (slot.state !== 'pending') return refuse(res, 409, 'this slot was used: request another\n');
    if (slot.putUntil <= this.now()) return refuse(res, 410, 'this slot expired: request another\n');
    // XEP-0363 §6: the upload MUST be refused when its Content-Length is not the slot's size.
    const length = req.headers['content-length'];
    if (length === undefined) return refuse(res, 411, `Content-Length required: ${slot.size}\n`);
    if (Number(length) !== slot.size) return refuse(res, Number(length) > slot.size ? 413 : 400, `Content-Length must be the slot's size, ${slot.size}\n`);
    // §6: SHOULD be refused when its Content-Type is not the one the slot was asked for.
    const said = req.headers['content-type'] === undefined ? undefined : parseMediaType(req.headers['content-type']);
    if (req.headers['content-type'] !== undefined && !said) return refuse(res, 415, 'not a media type\n');
    let type: string;
    if (slot.type !== '') {
      if (said && said.essence !== parseMediaType(slot.type)?.essence) return refuse(res, 415, `this slot is for ${slot.type}\n`);
      type = slot.type;
    } else {
      // No type was named in the request: the PUT's, or application/octet-stream, within XMPP_UPLOAD_TYPES.
      const t = said ?? parseMediaType(OCTET_STREAM)!;
      if (!typeAllowed(this.o.types, t)) return refuse(res, 415, `${t.essence} files are not accepted here\n`);
      type = t.full;
    }
    // One PUT only: another one at once, or after, finds it taken.
    if (!(await this.o.store.claim(token, this.now()))) return refuse(res, 409, 'this slot is being used or expired: request another\n');
    if (req.headers.expect?.toLowerCase() === '100-continue') res.writeContinue();
    const tmp = join(this.o.dir, TMP, `${token}.${randomBytes(6).toString('hex')}`);
    const final = join(this.o.dir, token);
    let received = 0;
    const bounded = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length;
        // Node reads no more than Content-Length; checked all the same, before a byte too many is written.
        if (received > slot.size) return done(new Error('more than the declared length'));
        done(null, chunk);
      },
    });
    try {
      await pipeline(req, bounded, createWriteStream(tmp, { flags: 'wx', mode: PRIVATE_FILE_MODE, flush: true }));
      if (received !== slot.size) throw new Error(`${received} bytes of ${slot.size}`);
      await rename(tmp, final);
    } catch (err) {
      // Open again for another try (then the partial file goes: who waits for it to go finds the slot open).
      try {
        await this.o.store.release(token);
      } finally {
        await unlink(tmp).catch(() => {});
      }
      log.debug('upload not completed', { token: token.slice(0, 8), err: String(err) });
      if (!res.headersSent && !res.destroyed) refuse(res, 400, 'the upload did not complete\n');
      return;
    }
    if (!(await this.o.store.complete(token, type, this.now()))) {
      await unlink(final).catch(() => {});
      return refuse(res, 409, 'this slot is no longer open\n');
    }
    // §6: 201, the file is served at the GET URL from now on.
    end(res, 201, '', {});
  }

  private async get(req: http.IncomingMessage, res: http.ServerResponse, token: string, name: string): Promise<void> {
    const slot = await this.o.store.slot(token);
    if (!slot || slot.filename !== name || !this.served(slot)) return notFound(req, res);
    const file = join(this.o.dir, token);
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      missing.hit({ dir: this.o.dir, token: token.slice(0, 8) });
      return notFound(req, res);
    }
    const type = parseMediaType(slot.type) ?? parseMediaType(OCTET_STREAM)!;
    const headers: Record<string, string | number> = {
      ...CORS,
      'Content-Type': type.full,
      // What could run in the server's origin is saved, not shown; nothing is sniffed into something else; nothing in it runs.
      'Content-Disposition': contentDisposition(inlineSafe(type) ? 'inline' : 'attachment', slot.filename),
      'X-Content-Type-Options': 'nosniff',
      'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'; sandbox",
      'Cache-Control': 'public, max-age=86400, immutable',
      'Accept-Ranges': 'bytes',
      ETag: `"${token}"`,
      'Last-Modified': new Date(slot.uploaded).toUTCString(),
    };
    // One byte range (RFC 9110 §14.2), for players that seek; anything else gets the whole file.
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let last = size - 1;
    let status = 200;
    if (range && (range[1] !== '' || range[2] !== '')) {
      if (range[1] === '') start = Math.max(0, size - Number(range[2]));
      else {
        start = Number(range[1]);
        if (range[2] !== '') last = Math.min(last, Number(range[2]));
      }
      if (start > last || start >= size) return end(res, 416, '', { ...CORS, 'Content-Range': `bytes */${size}` });
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${last}/${size}`;
    }
    headers['Content-Length'] = size === 0 ? 0 : last - start + 1;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || size === 0) return void res.end();
    // A client that goes away mid-download is no fault of the server's.
    await pipeline(createReadStream(file, { start, end: last }), res).catch((err: NodeJS.ErrnoException) => log.debug('download cut short', { token: token.slice(0, 8), err: err.code ?? err.message }));
  }

  /** Whether a slot's file is served now: put, and not past its life. */
  private served(slot: UploadSlot): boolean {
    return slot.state === 'done' && (this.o.expireMs === 0 || slot.uploaded + this.o.expireMs > this.now());
  }

  /**
   * Removes the files past their life and the slots never put (the store's
   * expired()), a chunk at a time; then what a crash left in tmp/ (older
   * than any PUT can run). Returns how many slots went.
   */
  async sweep(): Promise<number> {
    let total = 0;
    for (;;) {
      const gone = (await this.o.store.expired(this.rules(), SWEEP_CHUNK)).map((s) => s.token);
      await unlinkFiles(this.o.dir, gone);
      await this.o.store.remove(gone);
      total += gone.length;
      if (gone.length < SWEEP_CHUNK) break;
    }
    const tmpDir = join(this.o.dir, TMP);
    const before = this.now() - SLOT_WINDOW_MS - UPLOAD_WRITE_MS;
    for (const f of await readdir(tmpDir).catch(() => [] as string[])) {
      const p = join(tmpDir, f);
      const st = await stat(p).catch(() => undefined);
      if (st && st.mtimeMs < before) await unlink(p).catch(() => {});
    }
    return total;
  }
}

/** Deletes the files of these tokens from the upload directory; one already gone is no error. */
async function unlinkFiles(dir: string, tokens: string[]): Promise<void> {
  for (const token of tokens) await unlink(join(dir, token)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/**
 * Removes what an account put (its account is removed): its slots first,
 * so that from then on no worker of any node serves them or takes a PUT
 * for them, then their files from XMPP_UPLOAD_DIR (shared by every node of
 * a cluster, so once is enough). A PUT under way finds its slot gone as it
 * completes and deletes what it wrote. Returns how many slots went.
 */
export async function removeOwnerUploads(store: UploadStore, dir: string, owner: string): Promise<number> {
  const tokens = await store.removeOwner(owner);
  if (tokens.length === 0) return 0;
  // Where the directory is not (the CLI run on a host without the shared volume), the files stay: said, not silently skipped.
  if (!(await stat(dir).then((s) => s.isDirectory(), () => false))) {
    log.warn('the files of a removed account stay in XMPP_UPLOAD_DIR: it is not here to delete them from', { dir, files: tokens.length });
    return tokens.length;
  }
  await unlinkFiles(dir, tokens);
  return tokens.length;
}

function notFound(req: http.IncomingMessage, res: http.ServerResponse): void {
  // A PUT's body is not read: the connection closes after the answer.
  end(res, 404, 'not found\n', req.method === 'PUT' ? { Connection: 'close' } : {});
}

/** A PUT refused before its body is read: the connection closes after the answer. */
function refuse(res: http.ServerResponse, status: number, body: string): void {
  end(res, status, body, { Connection: 'close' });
}

function end(res: http.ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { ...CORS, 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), ...headers }).end(body);
}
