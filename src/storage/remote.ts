// The worker's side of the storage thread (thread.ts): each store interface
// (accounts, rosters, offline messages, the message archive, ...) as an object whose methods post a
// request on the worker's port and resolve with the answer. Errors come back
// with their name, message and limit fields, so callers that tell store
// errors apart by name (AccountExistsError, RosterFullError...) work as with
// a store in the same thread.
import { Worker, MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { EventEmitter, once } from 'node:events';
import type { AccountStore } from '../accounts/store.ts';
import type { RosterStore } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import type { ArchiveStore } from '../mam/store.ts';
import type { BlockStore } from '../blocking/store.ts';
import type { PersonalStore } from '../personal/store.ts';
import type { PepStore } from '../pep/store.ts';
import type { RoomStore } from '../muc/store.ts';
import type { UploadStore } from '../upload/store.ts';
import { encode, decode } from '../worker/wire.ts';
import type { FromStorage, StorageThreadData, ToStorage } from './thread.ts';
import { log } from '../log.ts';
import { performance } from 'node:perf_hooks';
import { databaseCall } from '../metrics/metrics.ts';

/** Errors of no class of a store's own: SQLite's, the thread's absence, a bug. */
const GENERIC_ERRORS = new Set(['Error', 'TypeError', 'RangeError', 'ReferenceError', 'SyntaxError']);

export type StoreName = 'accounts' | 'roster' | 'offline' | 'archive' | 'blocking' | 'personal' | 'pep' | 'muc' | 'upload' | 'info';
export interface StoreRequest {
  i: number;
  s: StoreName;
  m: string;
  a: unknown[];
}
export type StoreAnswer = { i: number; v: unknown } | { i: number; e: { name: string; message: string; fields: Record<string, unknown> } };

/** A store error rebuilt on this side of the port. */
class RemoteStoreError extends Error {
  constructor(name: string, message: string, fields: Record<string, unknown>) {
    super(message);
    this.name = name;
    Object.assign(this, fields);
  }
}

/** Binary values come back as Uint8Arrays: Buffers again, as the stores return them (salts, keys). */
function buffers(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(buffers);
  if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) (v as Record<string, unknown>)[k] = buffers(x);
  }
  return v;
}

/**
 * One worker's connection to the storage thread. If the thread dies, what
 * was asked of it fails at once (and so does what is asked until the new
 * thread's port arrives through replace()), instead of waiting forever.
 */
export class StorageClient {
  private port: MessagePort | undefined;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(port: MessagePort) {
    this.replace(port);
  }

  /** A port to a (new) storage thread. */
  replace(port: MessagePort): void {
    const old = this.port;
    this.port = port;
    old?.close();
    this.failAll();
    this.listen(port);
  }

  private failAll(): void {
    for (const w of this.waiting.values()) w.reject(new Error('the storage thread is gone'));
    this.waiting.clear();
  }

  private listen(port: MessagePort): void {
    port.on('close', () => {
      if (this.port !== port) return;
      this.port = undefined;
      this.failAll();
    });
    port.on('message', (buf: Uint8Array) => {
      const a = decode<StoreAnswer>(buf);
      const w = this.waiting.get(a.i);
      if (!w) return;
      this.waiting.delete(a.i);
      if ('e' in a) w.reject(new RemoteStoreError(a.e.name, a.e.message, a.e.fields));
      else w.resolve(buffers(a.v));
    });
  }

  call(s: StoreName, m: string, a: unknown[]): Promise<unknown> {
    const start = performance.now();
    const p = this.request(s, m, a);
    // Timed for /metrics; a store's refusal (an error of its own class: AccountExistsError...) is an answer, not a failure.
    p.then(
      () => databaseCall('sqlite', (performance.now() - start) / 1000, false),
      (err: Error) => databaseCall('sqlite', (performance.now() - start) / 1000, GENERIC_ERRORS.has(err.name)),
    );
    return p;
  }

  private request(s: StoreName, m: string, a: unknown[]): Promise<unknown> {
    const i = this.next++;
    return new Promise((resolve, reject) => {
      if (!this.port) return reject(new Error('the storage thread is gone'));
      this.waiting.set(i, { resolve, reject });
      try {
        this.port.postMessage(encode({ i, s, m, a } satisfies StoreRequest));
      } catch (err) {
        this.waiting.delete(i);
        reject(err as Error);
      }
    });
  }

  close(): void {
    const port = this.port;
    this.port = undefined;
    port?.close();
    this.failAll();
  }
}

function proxy<T extends object>(client: StorageClient, name: StoreName, local: Partial<T>): T {
  return new Proxy(local, {
    get(target, prop) {
      if (prop in target) return target[prop as keyof T];
      if (typeof prop !== 'string' || prop === 'then') return undefined;
      return (...args: unknown[]) => client.call(name, prop, args);
    },
  }) as T;
}

/** The stores, through the storage thread. */
export async function remoteStores(client: StorageClient): Promise<{ accounts: AccountStore; roster: RosterStore; offline: OfflineStore; archive: ArchiveStore; blocking: BlockStore; personal: PersonalStore; pep: PepStore; muc: RoomStore; upload: UploadStore }> {
  const info = (await client.call('info', 'get', [])) as { iterations: number; fakeSaltKey: Uint8Array };
  const key = Buffer.from(info.fakeSaltKey);
  const close = () => {};
  return {
    accounts: proxy<AccountStore>(client, 'accounts', { iterations: info.iterations, fakeSaltKey: () => key, close }),
    roster: proxy<RosterStore>(client, 'roster', { close }),
    offline: proxy<OfflineStore>(client, 'offline', { close }),
    archive: proxy<ArchiveStore>(client, 'archive', { close }),
    blocking: proxy<BlockStore>(client, 'blocking', { close }),
    personal: proxy<PersonalStore>(client, 'personal', { close }),
    pep: proxy<PepStore>(client, 'pep', { close }),
    muc: proxy<RoomStore>(client, 'muc', { close }),
    upload: proxy<UploadStore>(client, 'upload', { close }),
  };
}

/**
 * The storage thread of a node, started by the acceptor; give() hands out a
 * port for one more caller. If the thread dies it is started again and
 * 'restarted' tells the acceptor to give every worker a new port; if it
 * cannot be, the process ends (a node without its stores serves nobody).
 */
export class StorageThread extends EventEmitter<{ restarted: [] }> {
  private worker: Worker;
  private readonly data: StorageThreadData;
  private closing = false;
  private exited = false;

  private constructor(data: StorageThreadData, worker: Worker) {
    super();
    this.data = data;
    this.worker = worker;
    this.watch(worker);
  }

  private static async spawn(data: StorageThreadData): Promise<Worker> {
    const worker = new Worker(new URL('./thread.ts', import.meta.url), { workerData: data, name: 'storage' });
    const failed = once(worker, 'error').then(([err]) => Promise.reject(err as Error));
    failed.catch(() => {}); // once started, errors are the watcher's
    const [msg] = (await Promise.race([once(worker, 'message'), failed])) as [FromStorage];
    if (msg.t === 'failed') throw new Error(`cannot open the stores: ${msg.err}`);
    return worker;
  }

  static async start(data: StorageThreadData): Promise<StorageThread> {
    return new StorageThread(data, await StorageThread.spawn(data));
  }

  private watch(worker: Worker): void {
    worker.on('error', (err: Error) => log.error('the storage thread failed', { err: String(err), stack: err.stack }));
    worker.on('exit', (code) => {
      if (worker !== this.worker) return;
      this.exited = true;
      if (this.closing) return;
      log.error('the storage thread died; starting another', { code });
      StorageThread.spawn(this.data).then(
        (next) => {
          this.worker = next;
          this.exited = false;
          this.watch(next);
          this.emit('restarted');
        },
        (err: unknown) => {
          log.error('cannot start the storage thread again; exiting', { err: String(err) });
          process.exit(1);
        },
      );
    });
  }

  /** The thread now (it changes when one dies). */
  get thread(): Worker {
    return this.worker;
  }

  /** A reload changed the log level: this thread's, and that of one started in its place later. */
  setLogLevel(level: StorageThreadData['logLevel']): void {
    this.data.logLevel = level;
    this.worker.postMessage({ t: 'log-level', level } satisfies ToStorage);
  }

  /** A new port to the thread, for one worker. */
  give(): MessagePort {
    const { port1, port2 } = new MessageChannel();
    this.worker.postMessage({ t: 'port', port: port1 } satisfies ToStorage, [port1]);
    return port2;
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.exited) return;
    const exited = once(this.worker, 'exit');
    this.worker.postMessage({ t: 'close' } satisfies ToStorage);
    await exited;
  }
}
