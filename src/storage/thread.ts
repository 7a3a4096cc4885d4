// The storage thread of a single node: it alone opens the embedded SQLite
// files, and the worker threads call it over MessagePorts. node:sqlite is
// synchronous, so a query run on a worker would stall every connection of
// that worker for as long as it takes (and, with several writers on one
// file, for as long as SQLite's busy timeout makes it wait for the lock);
// here only this thread waits, and the writers are serialised without
// contention.
//
// Requests and answers are msgpackr-encoded (see remote.ts for the protocol).
import { parentPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { join } from 'node:path';
import { SqliteAccountStore } from '../accounts/sqlite.ts';
import { SqliteRosterStore } from '../roster/sqlite.ts';
import { SqliteOfflineStore } from '../offline/sqlite.ts';
import { SqliteArchiveStore } from '../mam/sqlite.ts';
import { SqliteBlockStore } from '../blocking/sqlite.ts';
import { SqlitePersonalStore } from '../personal/sqlite.ts';
import { SqlitePepStore } from '../pep/sqlite.ts';
import { SqliteRoomStore } from '../muc/sqlite.ts';
import { SqliteUploadStore } from '../upload/sqlite.ts';
import { encode, decode } from '../worker/wire.ts';
import type { StoreRequest, StoreAnswer, StoreName } from './remote.ts';
import { log, setLogLevel } from '../log.ts';

export interface StorageThreadData {
  dataDir: string;
  scramIterations: number;
  /** XMPP_MAM_FULLTEXT (and the archive on): the full-text index made, or emptied. */
  mamFulltext: boolean;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

/** What the thread says to its parent. */
export type FromStorage = { t: 'ready' } | { t: 'failed'; err: string };
/** What the parent says to the thread: a port for one more caller, a new log level (a reload), or stop. */
export type ToStorage = { t: 'port'; port: MessagePort } | { t: 'log-level'; level: StorageThreadData['logLevel'] } | { t: 'close' };

const data = workerData as StorageThreadData;
setLogLevel(data.logLevel);

let stores: Record<StoreName, object>;
try {
  const accounts = SqliteAccountStore.open(join(data.dataDir, 'accounts.sqlite'), data.scramIterations);
  const offline = SqliteOfflineStore.open(join(data.dataDir, 'offline.sqlite'));
  // Claims on offline queues belong to sessions of this node, none of which
  // outlives the thread: what a crash or a restart left would hold logins back.
  offline.clearClaims();
  stores = {
    accounts,
    roster: SqliteRosterStore.open(join(data.dataDir, 'roster.sqlite')),
    offline,
    archive: SqliteArchiveStore.open(join(data.dataDir, 'archive.sqlite'), { fulltext: data.mamFulltext }),
    blocking: SqliteBlockStore.open(join(data.dataDir, 'blocklist.sqlite')),
    personal: SqlitePersonalStore.open(join(data.dataDir, 'personal.sqlite')),
    pep: SqlitePepStore.open(join(data.dataDir, 'pep.sqlite')),
    muc: SqliteRoomStore.open(join(data.dataDir, 'muc.sqlite')),
    upload: SqliteUploadStore.open(join(data.dataDir, 'upload.sqlite')),
    // What a caller needs synchronously (SCRAM's fake exchanges): asked once.
    info: { async get() { return { iterations: accounts.iterations, fakeSaltKey: accounts.fakeSaltKey() }; } },
  };
} catch (err) {
  parentPort!.postMessage({ t: 'failed', err: (err as Error).message } satisfies FromStorage);
  throw err;
}

const ports = new Set<MessagePort>();

async function answer(port: MessagePort, req: StoreRequest): Promise<void> {
  let reply: StoreAnswer;
  try {
    const store = stores[req.s] as Record<string, (...a: unknown[]) => unknown>;
    const method = store?.[req.m];
    if (typeof method !== 'function' || req.m === 'close') throw new TypeError(`no such store call: ${req.s}.${req.m}`);
    reply = { i: req.i, v: await method.apply(store, req.a) };
  } catch (err) {
    const e = err as Error & Record<string, unknown>;
    const fields: Record<string, unknown> = {};
    for (const k of ['max', 'maxBytes', 'retryAt']) if (typeof e[k] === 'number') fields[k] = e[k];
    reply = { i: req.i, e: { name: e.name ?? 'Error', message: e.message ?? String(err), fields } };
  }
  try {
    port.postMessage(encode(reply));
  } catch (err) {
    // The caller's port closed (its worker died): nobody waits for this answer.
    log.debug('storage answer not delivered', { err: String(err) });
  }
}

parentPort!.on('message', (msg: ToStorage) => {
  if (msg.t === 'port') {
    const port = msg.port;
    ports.add(port);
    port.on('message', (buf: Uint8Array) => {
      let req: StoreRequest;
      try {
        req = decode<StoreRequest>(buf);
      } catch (err) {
        log.error('storage request not understood', { err: String(err) });
        return;
      }
      void answer(port, req);
    });
    port.on('close', () => ports.delete(port));
    return;
  }
  if (msg.t === 'log-level') return setLogLevel(msg.level);
  for (const p of ports) p.close();
  for (const s of Object.values(stores)) (s as { close?: () => void }).close?.();
  parentPort!.close();
});
parentPort!.postMessage({ t: 'ready' } satisfies FromStorage);
