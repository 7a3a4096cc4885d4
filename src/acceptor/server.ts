// The acceptor: the main thread listens, and hands every accepted socket,
// still paused, to a worker of the piscina pool by transferring the handle,
// so that reading, TLS and parsing all happen in the worker.
import net from 'node:net';
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { once } from 'node:events';
import { Piscina } from 'piscina';
import type { Config } from '../config/index.ts';
import { loadTlsIdentity } from '../tls/certificate.ts';
import { Hub } from './hub.ts';
import { decode } from '../worker/wire.ts';
import type { ToHub } from '../worker/wire.ts';
import type { WorkerData, Task } from '../worker/worker.ts';
import { log, setLogLevel } from '../log.ts';
import { collectWhenIdle } from '../idle-gc.ts';
import { connectRedis, waitForRedis } from '../cluster/redis.ts';
import type { Redis } from 'ioredis';
import { Membership } from '../cluster/membership.ts';
import type { Departed } from '../presence/presence.ts';
import { StorageThread } from '../storage/remote.ts';
import { listenAdmin } from '../admin/socket.ts';

export interface RunningServer {
  membership?: Membership;
  c2sPort: number;
  tlsPort: number;
  hub: Hub;
  /** Graceful: stop accepting, <system-shutdown/> to every session, bounded by shutdownTimeoutMs. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Abandons the start while it waits for Redis (a signal to the process). */
  signal?: AbortSignal;
}

export async function startServer(config: Config, { signal }: StartOptions = {}): Promise<RunningServer> {
  setLogLevel(config.logLevel);
  const tls = loadTlsIdentity(config);
  // Cluster mode: nothing works without Redis, so the start waits for it
  // first, saying what it waits for, within the configured bound.
  let redis: Redis | undefined;
  if (config.redisUrl) {
    redis = connectRedis(config.redisUrl, `${config.nodeId}:membership`);
    try {
      await waitForRedis(redis, { timeoutMs: config.redisStartupTimeoutMs, signal, bound: 'XMPP_REDIS_STARTUP_TIMEOUT_MS' });
    } catch (err) {
      redis.disconnect();
      throw err;
    }
  }
  const workerData: WorkerData = { config, tls };
  const pool = new Piscina({
    filename: new URL('../worker/worker.ts', import.meta.url).href,
    minThreads: config.workers,
    maxThreads: config.workers,
    // One task per connection, alive as long as the connection: a worker
    // holds thousands of them (one actor each), never one thread each.
    concurrentTasksPerWorker: 1 << 20,
    idleTimeout: Infinity,
    // Workers do asynchronous I/O between tasks; Atomics.wait would stall it.
    atomics: 'disabled',
    workerData,
  });
  pool.on('error', (err) => log.error('worker failed', { err: String(err) }));
  let stopping = false;

  // Cluster mode: hold a lease (and its fencing epoch) before serving anyone.
  let membership: Membership | undefined;
  const leftover: Departed[] = [];
  if (redis) {
    membership = new Membership(redis, config.nodeId, config.leaseMs);
    // What a crashed predecessor under this name left is announced once the workers are up.
    const onLeftover = (_node: string, _n: number, departed: Departed[]) => leftover.push(...departed);
    membership.on('dead', onLeftover);
    await membership.join();
    membership.off('dead', onLeftover);
  }

  // A single node keeps its durable data in SQLite files, which one thread
  // holds for all workers; a cluster's workers reach Redis themselves.
  const storage = config.redisUrl ? undefined : await StorageThread.start({ dataDir: config.dataDir, scramIterations: config.scramIterations, logLevel: config.logLevel });
  const hub = new Hub();
  const joins = await joinWorkers(pool, hub, config.workers, () => stopping, storage);
  hub.wire();
  if (membership) {
    hub.broadcast({ t: 'epoch', epoch: membership.epoch });
    membership.on('epoch', (epoch) => hub.broadcast({ t: 'epoch', epoch }));
    membership.on('fenced', () => hub.broadcast({ t: 'fenced' }));
    // The process that took our name announced our sessions as it joined.
    membership.on('superseded', () => hub.broadcast({ t: 'fenced' }));
    membership.on('reset', () => hub.broadcast({ t: 'reset' }));
    membership.on('recovered', () => hub.broadcast({ t: 'reconcile' }));
    membership.on('judging', (on) => hub.broadcast({ t: 'judging', on }));
    // Its sessions cannot say they are gone: a worker here says it for them.
    membership.on('dead', (_node, _n, departed) => {
      if (departed.length > 0) hub.toAny({ t: 'departed', list: departed });
    });
    membership.start();
  }
  await hub.ready();
  if (leftover.length > 0) hub.toAny({ t: 'departed', list: leftover });

  // Connection tasks in flight, so that shutdown waits for them to finish.
  const live = new Set<Promise<unknown>>();
  const run = (socket: net.Socket, directTls: boolean) => {
    const task: Task = { t: 'conn', socket, directTls };
    const transferList = [socket];
    const p = pool
      .run(task, { transferList: transferList as never })
      .catch((err: unknown) => {
        if (!stopping) log.error('connection task failed', { err: String(err) });
      })
      .finally(() => live.delete(p));
    live.add(p);
    // Piscina keeps the transfer list as long as the task (the connection)
    // lives; once the socket has been posted, what is left of it here is an
    // empty shell (a few KiB per connection). Not when the task was queued:
    // it is posted later, from this list.
    if (pool.queueSize === 0) transferList.length = 0;
  };
  const listen = async (port: number, directTls: boolean) => {
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => run(socket, directTls));
    server.maxConnections = 1 << 20;
    server.listen({ port, host: config.bindHost, backlog: 4096 });
    await once(server, 'listening');
    return server;
  };
  const c2s = await listen(config.c2sPort, false);
  const direct = await listen(config.tlsPort, true);
  const c2sPort = (c2s.address() as net.AddressInfo).port;
  const tlsPort = (direct.address() as net.AddressInfo).port;
  log.info('listening', { domain: config.domain, host: config.bindHost, c2sPort, tlsPort, workers: config.workers, node: config.nodeId, cluster: Boolean(config.redisUrl) });

  // What the CLI changes in the stores of a single node, the node acts on at once.
  const admin = config.redisUrl ? undefined : await listenAdmin(config.dataDir, (req) => hub.broadcast({ t: 'removed', notice: req.notice }));
  const idle = collectWhenIdle(config.idleGcMs, log.debug);
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      stopping = true;
      idle?.stop();
      c2s.close();
      direct.close();
      admin?.close();
      const clean = await hub.shutdown(config.shutdownTimeoutMs);
      if (!clean) log.warn('shutdown deadline reached with sessions still open');
      await membership?.leave();
      // Each worker's tasks end once its sessions are closed and flushed.
      await Promise.race([Promise.allSettled([...joins, ...live]), new Promise((r) => setTimeout(r, 1000).unref())]);
      hub.close();
      await pool.destroy();
      await storage?.close();
    })());
  return { c2sPort, tlsPort, hub, membership, close };
}

/**
 * Gives each worker one long-lived "join" task carrying its port to the hub.
 * Piscina sends a task to the least busy worker, so N pending joins land on N
 * workers; a worker that already joined declines, and the join is retried.
 */
async function joinWorkers(pool: Piscina, hub: Hub, n: number, stopping: () => boolean, storage: StorageThread | undefined): Promise<Promise<unknown>[]> {
  const seen = new Set<number>();
  const joins: Promise<unknown>[] = [];
  // Bounded by time, not attempts: on a loaded machine a worker can take a
  // while to be offered tasks, and declined joins return in microseconds.
  const deadline = Date.now() + 30_000;
  while (seen.size < n) {
    if (Date.now() > deadline) throw new Error(`could not reach ${n} distinct workers within 30 s`);
    const { port1, port2 } = new MessageChannel();
    const hello = new Promise<number>((resolve) => port1.once('message', (raw: Uint8Array) => resolve(decode<ToHub & { t: 'hello' }>(raw).threadId)));
    const store = storage?.give();
    const task: Task = store ? { t: 'join', port: port2, store } : { t: 'join', port: port2 };
    const joined = pool.run(task, { transferList: (store ? [port2, store] : [port2]) as never });
    const first = await Promise.race([hello, joined.then(() => -1)]);
    if (first === -1 || seen.has(first)) {
      port1.close();
      // A worker that is not yet offered tasks comes with piscina's workerCreate.
      const ac = new AbortController();
      await Promise.race([once(pool, 'workerCreate', { signal: ac.signal }), new Promise((r) => setTimeout(r, 20))]).catch(() => {});
      ac.abort();
      continue;
    }
    seen.add(first);
    hub.adopt(port1 as MessagePort, first);
    joins.push(
      joined.catch((err: unknown) => {
        // Past the shutdown deadline the pool stops workers still closing sessions.
        if (stopping()) log.warn('worker stopped before its sessions were all closed', { err: String(err) });
        else log.error('worker left the hub', { err: String(err) });
      }),
    );
  }
  return joins;
}
