// The upload URLs' handler (upload/http.ts) on a plain HTTP server of the
// test's own, over real sockets, with a SQLite slot store and a clock the
// test moves: a file's life and its cleanup, a file missing from this
// node's disk, a PUT cut off halfway, what a crash left in tmp/.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteUploadStore } from '../../src/upload/sqlite.ts';
import { UploadHttp, UPLOAD_PATH, SLOT_WINDOW_MS, UPLOAD_WRITE_MS, newToken } from '../../src/upload/http.ts';
import { until } from '../helpers/protocol.ts';

const DAY = 86_400_000;

interface Harness {
  base: string;
  dir: string;
  store: SqliteUploadStore;
  upload: UploadHttp;
  clock: { now: number };
  /** A slot reserved as the service would, for `name` of `size` bytes: its URL path. */
  slot(name: string, size: number, type?: string): Promise<{ token: string; path: string }>;
}

async function harness(t: ExecutionContext, expireDays = 7): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-upload-http-'));
  const store = SqliteUploadStore.open(join(dir, 'upload.sqlite'));
  const clock = { now: 1_700_000_000_000 };
  const upload = new UploadHttp({ store, dir: join(dir, 'files'), types: [], expireMs: expireDays * DAY, now: () => clock.now });
  await upload.prepare();
  const server = http.createServer((req, res) => upload.handle(req, res, (req.url ?? '/').split('?', 1)[0]));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    server.closeAllConnections();
    server.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    base,
    dir: join(dir, 'files'),
    store,
    upload,
    clock,
    async slot(name, size, type = 'text/plain') {
      const token = newToken();
      await store.reserve({ token, owner: 'alice', filename: name, size, type, created: clock.now, putUntil: clock.now + SLOT_WINDOW_MS }, { quotaBytes: 0, maxFiles: 100 }, upload.rules());
      return { token, path: `${UPLOAD_PATH}${token}/${encodeURIComponent(name)}` };
    },
  };
}

const put = (h: Harness, path: string, body: string, type = 'text/plain') => fetch(`${h.base}${path}`, { method: 'PUT', body, headers: { 'Content-Type': type } });
const get = (h: Harness, path: string) => fetch(`${h.base}${path}`);

test('a file is served until its life is over (404 from then on, before any cleanup); the cleanup removes it from disk and store, and slots never put', async (t) => {
  const h = await harness(t, 7);
  const a = await h.slot('a.txt', 5);
  t.is((await put(h, a.path, 'hello')).status, 201);
  t.is(await (await get(h, a.path)).text(), 'hello');
  const never = await h.slot('never.txt', 3);
  h.clock.now += 7 * DAY - 1;
  t.is((await get(h, a.path)).status, 200, 'still within its life');
  t.is(await h.upload.sweep(), 1, 'only the slot never put, its window and write time long over');
  t.is(await h.store.slot(never.token), undefined);
  h.clock.now += 1;
  t.is((await get(h, a.path)).status, 404, 'past its life');
  t.true(existsSync(join(h.dir, a.token)));
  t.is(await h.upload.sweep(), 1);
  t.false(existsSync(join(h.dir, a.token)), 'the file is gone');
  t.is(await h.store.slot(a.token), undefined, 'and its slot');
  t.is(await h.upload.sweep(), 0);
});

test('files kept for ever (XMPP_UPLOAD_EXPIRE_DAYS=0) are never swept', async (t) => {
  const h = await harness(t, 0);
  const a = await h.slot('a.txt', 2);
  t.is((await put(h, a.path, 'hi')).status, 201);
  h.clock.now += 10_000 * DAY;
  t.is(await h.upload.sweep(), 0);
  t.is(await (await get(h, a.path)).text(), 'hi');
});

test('a slot the store says is done whose file this node does not have gets 404 (shared storage is required in a cluster)', async (t) => {
  const h = await harness(t);
  const a = await h.slot('a.txt', 2);
  t.is((await put(h, a.path, 'hi')).status, 201);
  unlinkSync(join(h.dir, a.token));
  t.is((await get(h, a.path)).status, 404);
});

test('a PUT cut off halfway leaves nothing behind and the slot open again; the whole file then goes in', async (t) => {
  const h = await harness(t);
  const a = await h.slot('half.txt', 10);
  const sock = net.connect(Number(new URL(h.base).port), '127.0.0.1');
  await once(sock, 'connect');
  sock.write(`PUT ${a.path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhello`);
  await until(() => readdirSync(join(h.dir, 'tmp')).length === 1, 10_000, 'the PUT being written');
  t.is((await h.store.slot(a.token))?.state, 'writing');
  sock.destroy();
  // The slot is released before the partial file goes.
  await until(() => readdirSync(join(h.dir, 'tmp')).length === 0, 10_000, 'the partial file removed');
  const s = await h.store.slot(a.token);
  t.is(s?.state, 'pending');
  t.false(existsSync(join(h.dir, a.token)));
  t.is((await put(h, a.path, 'helloworld')).status, 201);
  t.is(await (await get(h, a.path)).text(), 'helloworld');
});

test('the cleanup removes what a crash left in tmp/ once no PUT can still be writing it, and nothing younger', async (t) => {
  const h = await harness(t);
  const old = join(h.dir, 'tmp', `${newToken()}.abc`);
  const young = join(h.dir, 'tmp', `${newToken()}.def`);
  writeFileSync(old, 'x');
  writeFileSync(young, 'y');
  const at = (ms: number) => new Date(ms);
  utimesSync(old, at(h.clock.now - SLOT_WINDOW_MS - UPLOAD_WRITE_MS - 1000), at(h.clock.now - SLOT_WINDOW_MS - UPLOAD_WRITE_MS - 1000));
  utimesSync(young, at(h.clock.now - 1000), at(h.clock.now - 1000));
  await h.upload.sweep();
  t.false(existsSync(old));
  t.true(existsSync(young));
});

test('byte ranges: one range is served as 206, a range past the end is 416', async (t) => {
  const h = await harness(t);
  const a = await h.slot('r.txt', 10);
  t.is((await put(h, a.path, '0123456789')).status, 201);
  const r = await fetch(`${h.base}${a.path}`, { headers: { Range: 'bytes=2-4' } });
  t.is(r.status, 206);
  t.is(r.headers.get('content-range'), 'bytes 2-4/10');
  t.is(await r.text(), '234');
  const tail = await fetch(`${h.base}${a.path}`, { headers: { Range: 'bytes=-3' } });
  t.is(await tail.text(), '789');
  t.is((await fetch(`${h.base}${a.path}`, { headers: { Range: 'bytes=10-' } })).status, 416);
});

test('what is not an upload URL gets 404 (no token, a malformed one, a name that does not decode or is not the slot\'s); other methods 405; nothing outside the directory is reached', async (t) => {
  const h = await harness(t);
  const a = await h.slot('a.txt', 2);
  t.is((await put(h, a.path, 'hi')).status, 201);
  for (const p of [`${UPLOAD_PATH}`, `${UPLOAD_PATH}x/a.txt`, `${UPLOAD_PATH}${a.token}`, `${UPLOAD_PATH}${a.token}/`, `${UPLOAD_PATH}${a.token}/%E0%A4%A`, `${UPLOAD_PATH}${a.token}/..%2Fupload.sqlite`, `${UPLOAD_PATH}..%2F..%2Fupload.sqlite/a.txt`, `${UPLOAD_PATH}${a.token}/A.TXT`]) {
    t.is((await get(h, p)).status, 404, p);
  }
  const del = await fetch(`${h.base}${a.path}`, { method: 'DELETE' });
  t.is(del.status, 405);
  t.regex(String(del.headers.get('allow')), /PUT/);
  t.is(await (await get(h, a.path)).text(), 'hi');
});
