// The acceptor: the main thread listens, and hands every accepted socket,
// still paused, to a worker of the piscina pool by transferring the handle,
// so that reading, TLS and parsing all happen in the worker.
import net from 'node:net';
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { once } from 'node:events';
import { Piscina } from 'piscina';
import type { Config } from '../config/index.ts';
import { reloadConfig, RELOADABLE } from '../config/index.ts';
import { loadTlsIdentity } from '../tls/certificate.ts';
import type { TlsIdentity } from '../tls/certificate.ts';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { validFor } from '../tls/trust.ts';
import { X509Certificate } from 'node:crypto';
import { Hub, UPKEEP_EVERY_MS } from './hub.ts';
import { Guard } from './guard.ts';
import type { GuardCounters } from './guard.ts';
import type { DropWorker, WorkerLink } from './hub.ts';
import { connectionCap, addressKey, openFileLimit, listed } from './limits.ts';
import { readProxyHeader, PROXY_HEADER_TIMEOUT_MS } from './proxy.ts';
import type { ProxiedFrom } from './proxy.ts';
import { proxyProtocolFromOf } from '../config/index.ts';
import { decode } from '../worker/wire.ts';
import type { ToHub } from '../worker/wire.ts';
import type { WorkerData, Task } from '../worker/worker.ts';
import { log, setLogLevel, Throttled } from '../log.ts';
import { collectWhenIdle } from '../idle-gc.ts';
import { connectRedis, waitForRedis } from '../cluster/redis.ts';
import type { Redis } from 'ioredis';
import { Membership } from '../cluster/membership.ts';
import { RedisRegistry } from '../registry/redis.ts';
import type { Departed } from '../presence/presence.ts';
import { StorageThread } from '../storage/remote.ts';
import { listenAdmin } from '../admin/socket.ts';
import { ClusterAdmin } from '../admin/cluster.ts';
import type { NodeQuestion } from '../admin/cluster.ts';
import { MAX_LISTED } from '../admin/tasks.ts';
import type { SessionInfo } from '../admin/tasks.ts';
import type { HttpPorts } from '../web/http.ts';
import { NodeMetrics } from '../metrics/node.ts';

export interface ServerStats {
  /** Client connections open now. */
  connections: number;
  /** The cap on them (XMPP_MAX_CONNECTIONS, or derived from the open-file limit). */
  maxConnections: number;
  /** Connections closed at once because the node was full. */
  refusedFull: number;
  /** Connections closed at once because their address had XMPP_MAX_CONNECTIONS_PER_IP open. */
  refusedPerIp: number;
  /** Connections closed at once because their address opened more than XMPP_CONNECTION_RATE_PER_IP a second. */
  refusedRate: number;
  /** Connections from a load balancer of XMPP_PROXY_PROTOCOL_FROM closed without a valid PROXY header. */
  refusedProxyHeader: number;
  /** Failed authentications, refusals and registrations counted by the node (acceptor/guard.ts). */
  guard: GuardCounters;
  /** Errors from accept() (EMFILE...), each survived. */
  acceptErrors: number;
  /** Worker threads that died (and were replaced). */
  workerDeaths: number;
  /** Workers joined to the hub now. */
  workers: number;
}

/** What a reload did (environment variable names). */
export interface ReloadOutcome {
  applied: string[];
  /** Changed in the configuration, but they take a restart: left as they were. */
  needRestart: string[];
  /** Set in the config file, but the environment (fixed for the process) sets them too, and wins. */
  overridden: string[];
  /** The certificate new connections get now. */
  certificate: { subject: string; validTo: string; fingerprint256: string };
}

export interface RunningServer {
  membership?: Membership;
  c2sPort: number;
  tlsPort: number;
  /** The external components' port (XEP-0114), when XMPP_COMPONENT_PORT is set. */
  componentPort: number | undefined;
  /** The server-to-server ports (STARTTLS, and direct TLS when XMPP_S2S_TLS_PORT is set), with federation on. */
  s2sPort: number | undefined;
  s2sTlsPort: number | undefined;
  /** The web clients' ports (WebSocket, XEP-0156), when XMPP_HTTP_PORT or XMPP_HTTPS_PORT is set. */
  httpPort: number | undefined;
  httpsPort: number | undefined;
  hub: Hub;
  /** A single node's storage thread. */
  storage?: StorageThread;
  stats(): ServerStats;
  /**
   * Reads the configuration file and the certificate files again and applies
   * what may change without a restart (config/index.ts RELOADABLE); throws,
   * changing nothing, when the new configuration or certificate is not
   * usable.
   */
  reload(): ReloadOutcome;
  /** Graceful: stop accepting, <system-shutdown/> to every session, bounded by shutdownTimeoutMs. */
  close(): Promise<void>;
}

/**
 * What the balancer reads on a task (through piscina's queue options, which
 * are not sent to the worker) and writes back: the thread it chose.
 */
interface Placement {
  join?: boolean;
  thread?: number;
}

type Balancer = NonNullable<ConstructorParameters<typeof Piscina>[0]>['loadBalancer'];
type PoolWorker = Parameters<NonNullable<Balancer>>[1][number];

function leastBusy(workers: PoolWorker[]): PoolWorker | null {
  let best: PoolWorker | null = null;
  for (const w of workers) if (!w.terminating && !w.destroyed && (!best || w.currentUsage < best.currentUsage)) best = w;
  return best;
}

/**
 * New connections per address: a token bucket per address key holding one
 * second's worth beyond the second under way, refilled at `rate` a second;
 * the buckets of addresses quiet for two seconds are full again and
 * dropped, so that the table holds only the addresses of the last ones.
 */
export class ConnectionRate {
  private readonly rate: number;
  private buckets = new Map<string, { tokens: number; at: number }>();
  private swept = 0;
  private readonly now: () => number;

  constructor(rate: number, now: () => number = () => performance.now()) {
    this.rate = rate;
    this.now = now;
  }

  /** Counts a new connection from `key`: false when it is one too many. */
  take(key: string): boolean {
    if (this.rate === 0) return true;
    const now = this.now();
    if (now - this.swept > 2000) {
      for (const [k, b] of this.buckets) if (now - b.at > 2000) this.buckets.delete(k);
      this.swept = now;
    }
    const b = this.buckets.get(key) ?? { tokens: 2 * this.rate, at: now };
    b.tokens = Math.min(2 * this.rate, b.tokens + ((now - b.at) * this.rate) / 1000);
    b.at = now;
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/** How long the workers have to answer an administration question, and to send an announcement to every session. */
const ADMIN_TASK_MS = 10_000;
const ANNOUNCE_TASK_MS = 5 * 60_000;

export interface StartOptions {
  /** Abandons the start while it waits for Redis (a signal to the process). */
  signal?: AbortSignal;
}

export async function startServer(config: Config, { signal }: StartOptions = {}): Promise<RunningServer> {
  setLogLevel(config.logLevel);
  const identity = loadTlsIdentity(config);
  if (config.s2s && !validFor(new X509Certificate(identity.cert), config.domain)) {
    // RFC 6120 §13.7.2.1: peers check that our certificate names our domain.
    log.warn('the TLS certificate does not name the served domain: peer servers will refuse it', { domain: config.domain, subject: new X509Certificate(identity.cert).subject });
  }
  if (config.s2s && config.redisUrl && !config.s2sSecret && !config.tlsCert) {
    // XEP-0185: every node must derive the same dialback secret; a key generated per node gives each its own.
    log.warn('federation in a cluster with a certificate generated by this node: set XMPP_TLS_CERT and XMPP_TLS_KEY (the same on every node) or XMPP_S2S_SECRET, or peers will fail to verify dialback keys made by other nodes');
  }
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
  // A single node keeps its durable data in SQLite files, which one thread
  // holds for all workers; a cluster's workers reach Redis themselves.
  // A single node's SQLite files are held by one storage thread; PostgreSQL and Redis are reached by each worker.
  if (config.databaseUrl && !config.redisUrl) {
    // One node delivering from the database: the claims of the process before are nobody's now (as the storage thread does for SQLite).
    const { PostgresOfflineStore } = await import('../offline/postgres.ts');
    const offline = await PostgresOfflineStore.open(config.databaseUrl);
    try {
      await offline.clearClaims();
    } finally {
      await offline.close();
    }
  }
  const storage = config.redisUrl || config.databaseUrl ? undefined : await StorageThread.start({ dataDir: config.dataDir, scramIterations: config.scramIterations, mamFulltext: config.mam && config.mamFulltext, logLevel: config.logLevel });
  const workerData: WorkerData = { config, tls: identity };
  let hub: Hub | undefined;
  /** Threads that were given a join task (thread ids are never reused). */
  const joinAsked = new Set<number>();
  /** Connections placed on each thread, for the count a worker's death takes with it. */
  const perThread = new Map<number, number>();
  // Piscina's own balancer would send new connections to the least busy
  // worker: a replacement that has not joined yet, which cannot serve them;
  // and a join task to a worker that joined already. This one sends a join
  // to a worker that was not asked yet, and a connection to the least busy
  // of the workers that serve (any, only when none does: it waits there).
  const loadBalancer: Balancer = (task, workers) => {
    const place = (task as unknown as Record<symbol, Placement | null>)[Piscina.queueOptionsSymbol];
    let pick: PoolWorker | null;
    if (place?.join) {
      pick = workers.find((w) => !w.terminating && !w.destroyed && !joinAsked.has(w.id)) ?? null;
      if (pick) joinAsked.add(pick.id);
      else pick = leastBusy(workers); // it declines
    } else {
      pick = leastBusy(workers.filter((w) => hub?.serving(w.id))) ?? leastBusy(workers);
      if (place && pick) perThread.set(pick.id, (perThread.get(pick.id) ?? 0) + 1);
    }
    if (place && pick) place.thread = pick.id;
    return pick;
  };
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
    loadBalancer,
    workerData,
  });
  // A worker that fails with no task running (our workers always run their join).
  pool.on('error', (err) => log.error('worker failed', { err: String(err) }));
  let stopping = false;
  // Every worker piscina starts, at first or in place of one that died, is
  // given a join task once piscina can give it tasks (after this event).
  // Those started before the hub exists are asked once it does.
  let unasked = 0;
  let started = false;
  pool.on('workerCreate', () => {
    if (started) setImmediate(requestJoin);
    else unasked++;
  });

  // Cluster mode: hold a lease (and its fencing epoch) before serving anyone.
  let membership: Membership | undefined;
  let dropWorker: DropWorker | undefined;
  const leftover: Departed[] = [];
  if (redis) {
    const m = (membership = new Membership(redis, config.nodeId, config.leaseMs));
    // What a crashed predecessor under this name left is announced once the workers are up.
    const onLeftover = (_node: string, _n: number, departed: Departed[]) => leftover.push(...departed);
    m.on('dead', onLeftover);
    await m.join();
    m.off('dead', onLeftover);
    // A dead worker's records, which its sessions can no longer remove:
    // RECONCILE with no live session drops that worker's, and only its.
    const registry = new RedisRegistry(redis, config.nodeId, () => m.epoch);
    dropWorker = async (index) => (await registry.reconcile(index, [], []))?.gone;
  }

  const guard = new Guard(config);
  const h = (hub = new Hub(dropWorker, guard));
  // Archive retention and expired uploads: at start and then every ten minutes, by whichever worker serves.
  if (config.mamRetentionDays > 0 || config.uploadDomain !== '') h.scheduleUpkeep(UPKEEP_EVERY_MS);
  // A storage thread that died was started again: every worker gets a port to the new one.
  storage?.on('restarted', () => h.each((link) => {
    const port = storage.give();
    link.port.postMessage({ t: 'store', port }, [port]);
  }));
  const joins = new Set<Promise<unknown>>();
  const lostWithWorker = new Throttled('warn', 'connection lost with its worker');

  /**
   * One join task: it carries the worker's end of a channel to the hub and
   * lasts as long as the worker serves. Its end says the worker is gone: a
   * rejection after the worker joined is its death (piscina rejects every
   * task of a worker that exits), with the cause.
   */
  function requestJoin(): void {
    if (stopping) return;
    const { port1, port2 } = new MessageChannel();
    let link: WorkerLink | undefined;
    port1.once('message', (raw: Uint8Array) => {
      link = h.admit(port1 as MessagePort, decode<ToHub & { t: 'hello' }>(raw).threadId);
    });
    const place: Placement = { join: true };
    // On a single node, the worker's port to the storage thread comes with it.
    const store = storage?.give();
    const task = { t: 'join', port: port2, ...(store ? { store } : {}), [Piscina.queueOptionsSymbol]: place } as Task;
    const p = pool.run(task, { transferList: (store ? [port2, store] : [port2]) as never }).then(
      (result: string) => {
        if (result === 'declined') return port1.close();
        // The worker stopped as asked; its last word ('stopped', on the port)
        // may still be on its way: the port is closed with the hub.
        if (stopping) return;
        if (link) h.lost(link);
        log.warn('a worker left the hub', { worker: link?.index });
      },
      (err: unknown) => {
        if (stopping) {
          // Past the shutdown deadline the pool stops workers still closing sessions.
          log.warn('worker stopped before its sessions were all closed', { err: String(err) });
          return;
        }
        if (!link) {
          // It failed before joining (a store it could not open): ask again.
          port1.close();
          if (place.thread !== undefined) joinAsked.delete(place.thread);
          log.error('a worker could not join the hub; trying again', { err: String(err) });
          setTimeout(requestJoin, 1000).unref();
          return;
        }
        const connections = perThread.get(link.threadId) ?? 0;
        perThread.delete(link.threadId);
        const sessions = h.lost(link);
        log.error('worker died', {
          worker: link.index,
          threadId: link.threadId,
          cause: String(err),
          stack: (err as Error | undefined)?.stack,
          connections,
          sessions,
          deaths: h.deaths,
        });
      },
    );
    joins.add(p);
    void p.finally(() => joins.delete(p));
  }
  started = true;
  for (; unasked > 0; unasked--) requestJoin();

  if (membership) {
    const m = membership;
    h.setState({ t: 'epoch', epoch: m.epoch });
    h.setState({ t: 'lease', until: m.leaseUntil });
    m.on('lease', (until) => h.setState({ t: 'lease', until }));
    // A new epoch (rejoining after being fenced): the rooms claimed under the old one are free, and looked for.
    m.on('epoch', (epoch) => {
      h.setState({ t: 'epoch', epoch });
      h.nodeDead(m.node);
    });
    membership.on('fenced', () => h.broadcast({ t: 'fenced' }));
    // The process that took our name announced our sessions as it joined.
    membership.on('superseded', () => h.broadcast({ t: 'fenced' }));
    membership.on('reset', () => h.broadcast({ t: 'reset' }));
    membership.on('recovered', () => h.broadcast({ t: 'reconcile' }));
    membership.on('judging', (on) => h.setState({ t: 'judging', on }));
    // Its sessions cannot say they are gone: a worker here says it for them.
    membership.on('dead', (node, _n, departed) => {
      h.announce(departed);
      // Its rooms (XEP-0045) are taken over, those with occupants at once.
      h.nodeDead(node);
    });
    membership.start();
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    h.ready(config.workers),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${config.workers} workers did not join within 30 s`)), 30_000))),
  ]).finally(() => clearTimeout(timer));
  h.announce(leftover);
  // The rooms a previous run under this name held (claims of an older epoch) are free: those with occupants are taken over.
  if (membership) h.nodeDead(membership.node);

  // Connection tasks in flight, so that shutdown waits for them to finish.
  const live = new Set<Promise<unknown>>();
  // Connections: how many are open, from where, and what is refused.
  // A reload may change it (XMPP_MAX_CONNECTIONS).
  let cap = connectionCap(config, config.maxConnections > 0 ? undefined : openFileLimit());
  let open = 0;
  const byAddress = new Map<string, number>();
  const refusedFull = new Throttled('warn', 'connection refused: the node is full (XMPP_MAX_CONNECTIONS)');
  const refusedPerIp = new Throttled('warn', 'connection refused: too many from one address (XMPP_MAX_CONNECTIONS_PER_IP)');
  const refusedRate = new Throttled('warn', 'connection refused: too many new ones from one address (XMPP_CONNECTION_RATE_PER_IP)');
  const newConnections = new ConnectionRate(config.connectionRatePerIp);
  const acceptFailed = new Throttled('error', 'accept failed');
  const refuse = (socket: net.Socket, why: Throttled, address: string) => {
    // At once and without a word: reading a stream header, or a TLS
    // handshake, would spend what the cap is there to save. A reset leaves
    // no TIME_WAIT behind on this side.
    socket.resetAndDestroy();
    why.hit({ address, open, max: cap.max });
  };
  /** What the web listeners got, for host-meta (XEP-0156) to announce. */
  const httpPorts: HttpPorts = {};
  // Load balancers that say in a PROXY header whom each connection is from.
  const proxyFrom = config.proxyProtocolFrom.trim() === '' ? undefined : proxyProtocolFromOf(config);
  const refusedProxyHeader = new Throttled('warn', 'connection closed: no valid PROXY protocol header from a load balancer (XMPP_PROXY_PROTOCOL_FROM)');
  /**
   * A new connection. From a load balancer of XMPP_PROXY_PROTOCOL_FROM
   * (on every listener but the components'), its PROXY header is read
   * first: the client it names is the one every check here and everything
   * in the worker sees. It counts as open while the header is awaited (it
   * holds a descriptor), against no address's share yet.
   */
  const accept = (socket: net.Socket, directTls: boolean, kind?: 'component' | 's2s' | 'http') => {
    const balancer = socket.remoteAddress;
    if (!proxyFrom || kind === 'component' || balancer === undefined || !listed(proxyFrom, balancer)) return run(socket, directTls, kind);
    if (stopping) return void socket.destroy();
    if (open >= cap.max) return refuse(socket, refusedFull, addressKey(balancer));
    open++;
    const port = socket.remotePort;
    readProxyHeader(socket, PROXY_HEADER_TIMEOUT_MS).then(
      ({ socket: s, from }) => {
        open--;
        // A connection of the balancer's own (its health checks: LOCAL) is from the balancer.
        run(s, directTls, kind, from);
      },
      (err: unknown) => {
        open--;
        refusedProxyHeader.hit({ balancer, port, err: (err as Error).message });
      },
    );
  };
  const run = (socket: net.Socket, directTls: boolean, kind?: 'component' | 's2s' | 'http', peer?: ProxiedFrom) => {
    const address = peer?.address ?? socket.remoteAddress;
    if (stopping || address === undefined) return void socket.destroy(); // already gone
    const key = addressKey(address);
    const fromThere = byAddress.get(key) ?? 0;
    if (open >= cap.max) return refuse(socket, refusedFull, key);
    if (config.maxConnectionsPerIp > 0 && fromThere >= config.maxConnectionsPerIp) return refuse(socket, refusedPerIp, key);
    if (config.connectionRatePerIp > 0 && !guard.exempted(address) && !newConnections.take(key)) return refuse(socket, refusedRate, key);
    open++;
    byAddress.set(key, fromThere + 1);
    const place: Placement = {};
    const task = { t: 'conn', socket, directTls, ...(kind ? { kind } : {}), ...(kind === 'http' ? { ports: { ...httpPorts } } : {}), ...(peer ? { peer } : {}), [Piscina.queueOptionsSymbol]: place } as Task;
    const transferList = [socket];
    const p = pool
      .run(task, { transferList: transferList as never })
      .catch((err: unknown) => {
        // Its worker died (logged once, with the cause and how many went with it).
        if (!stopping) lostWithWorker.hit({ err: String(err) });
      })
      .finally(() => {
        live.delete(p);
        open--;
        const n = byAddress.get(key)! - 1;
        if (n === 0) byAddress.delete(key);
        else byAddress.set(key, n);
        const t = place.thread;
        const left = t === undefined ? undefined : perThread.get(t);
        if (left !== undefined) perThread.set(t!, left - 1);
      });
    live.add(p);
    // Piscina keeps the transfer list as long as the task (the connection)
    // lives; once the socket has been posted, what is left of it here is an
    // empty shell (a few KiB per connection). Not when the task was queued
    // (no worker at all, one being replaced): it is posted later, from this
    // list. The balancer has placed it if it was posted.
    if (place.thread !== undefined) transferList.length = 0;
  };
  const listen = async (port: number, directTls: boolean, kind?: 'component' | 's2s' | 'http') => {
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => accept(socket, directTls, kind));
    server.listen({ port, host: kind === 's2s' ? config.s2sBindHost : config.bindHost, backlog: 4096 });
    await once(server, 'listening');
    // Out of descriptors (the cap set above the limit, or files opened
    // elsewhere), accept() fails: the listener stays and tries again with
    // the next connection, and the process lives on.
    server.on('error', (err: NodeJS.ErrnoException) => acceptFailed.hit({ port, code: err.code, err: err.message }));
    return server;
  };
  const c2s = await listen(config.c2sPort, false);
  const direct = await listen(config.tlsPort, true);
  // External components (XEP-0114), when a port is set.
  const comp = config.componentPort === '' ? undefined : await listen(Number(config.componentPort), false, 'component');
  // Peer servers (RFC 6120 s2s; XEP-0368 direct TLS), with federation on.
  const s2s = config.s2s ? await listen(config.s2sPort, false, 's2s') : undefined;
  const s2sDirect = config.s2s && config.s2sTlsPort !== '' ? await listen(Number(config.s2sTlsPort), true, 's2s') : undefined;
  const s2sPort = s2s ? (s2s.address() as net.AddressInfo).port : undefined;
  const s2sTlsPort = s2sDirect ? (s2sDirect.address() as net.AddressInfo).port : undefined;
  const c2sPort = (c2s.address() as net.AddressInfo).port;
  const tlsPort = (direct.address() as net.AddressInfo).port;
  const componentPort = comp ? (comp.address() as net.AddressInfo).port : undefined;
  // Web clients (RFC 7395 WebSocket, XEP-0156 discovery): plain HTTP and HTTPS, when set; served in the workers too.
  const web = config.httpPort === '' ? undefined : await listen(Number(config.httpPort), false, 'http');
  const webTls = config.httpsPort === '' ? undefined : await listen(Number(config.httpsPort), true, 'http');
  const httpPort = web ? (web.address() as net.AddressInfo).port : undefined;
  const httpsPort = webTls ? (webTls.address() as net.AddressInfo).port : undefined;
  if (httpPort !== undefined) httpPorts.http = httpPort;
  if (httpsPort !== undefined) httpPorts.https = httpsPort;
  // The workers make upload URLs (XEP-0363) on the HTTPS port it got.
  if (httpPort !== undefined || httpsPort !== undefined) h.setState({ t: 'http-ports', ports: { ...httpPorts } });
  // Administration from the command line (admin/socket.ts): what the CLI changed in the stores of a single
  // node, which the node acts on at once; runtime administration, cluster-wide on any node. Ready (and
  // private, 0600) before "listening" says the node is.
  /** This node's answer to an administration question: its workers' sessions, or its counts. */
  const nodeAnswer = async (q: NodeQuestion): Promise<unknown> => {
    if (q.op === 'sessions') {
      const per = await h.askAll({ op: 'sessions', max: MAX_LISTED, ...(q.user ? { user: q.user } : {}) }, ADMIN_TASK_MS);
      const sessions: SessionInfo[] = [];
      let total = 0;
      for (const p of per) {
        const v = p.v as { sessions: SessionInfo[]; total: number } | undefined;
        total += v?.total ?? 0;
        for (const x of v?.sessions ?? []) if (sessions.length < MAX_LISTED) sessions.push(x);
      }
      const failed = per.filter((p) => p.err !== undefined).map((p) => ({ worker: p.worker, err: p.err }));
      return { sessions, total, ...(failed.length > 0 ? { failed } : {}) };
    }
    const per = await h.askAll({ op: 'stats' }, ADMIN_TASK_MS);
    const { connections, maxConnections, refusedFull, refusedPerIp, acceptErrors, workerDeaths } = stats();
    return { connections, maxConnections, refusedFull, refusedPerIp, acceptErrors, workerDeaths, uptimeMs: Math.round(performance.now()), workers: per.map((p) => p.v ?? { worker: p.worker, err: p.err }) };
  };
  let clusterAdmin: ClusterAdmin | undefined;
  if (redis) {
    clusterAdmin = new ClusterAdmin(redis, connectRedis(config.redisUrl, `${config.nodeId}:admin`), config.nodeId, nodeAnswer);
    await clusterAdmin.start();
  }
  /** The question asked of every node (a cluster) or of this one. */
  const everyNode = async (q: NodeQuestion) => (clusterAdmin ? clusterAdmin.ask(q, ADMIN_TASK_MS + 2000) : { answers: [{ node: config.nodeId, v: await nodeAnswer(q) }], missing: 0 });
  const admin = await listenAdmin(config.dataDir, async (req) => {
    switch (req.op) {
      case 'removed':
        return h.broadcast({ t: 'removed', notice: req.notice });
      case 'changed':
        return h.broadcast({ t: 'changed', kind: req.kind, user: req.user });
      case 'reload':
        return { ...reload() };
      case 'sessions':
        return everyNode({ op: 'sessions', ...(req.user ? { user: req.user } : {}) });
      case 'stats':
        return everyNode({ op: 'stats' });
      case 'kick':
        // From a worker of this node, as XEP-0133's end-user-session: the registry says where the sessions are, on any node.
        return (await h.ask({ op: 'kick', jid: req.jid, text: 'your session was ended by an administrator' }, ADMIN_TASK_MS)) as Record<string, unknown>;
      case 'announce':
        return (await h.ask({ op: 'announce', text: req.text }, ANNOUNCE_TASK_MS)) as Record<string, unknown>;
    }
  });
  log.info('listening', {
    domain: config.domain,
    host: config.bindHost,
    c2sPort,
    tlsPort,
    ...(componentPort !== undefined ? { componentPort } : {}),
    ...(httpPort !== undefined ? { httpPort } : {}),
    ...(httpsPort !== undefined ? { httpsPort } : {}),
    ...(s2sPort !== undefined ? { s2sPort } : {}),
    ...(s2sTlsPort !== undefined ? { s2sTlsPort } : {}),
    workers: config.workers,
    node: config.nodeId,
    cluster: Boolean(config.redisUrl),
    maxConnections: cap.max,
    ...(cap.reserve !== undefined ? { openFileLimit: cap.limit ?? 'unknown', reservedDescriptors: cap.reserve } : {}),
    maxConnectionsPerIp: config.maxConnectionsPerIp,
  });
  if (cap.limit !== undefined && cap.reserve !== undefined && cap.limit - cap.reserve < 16) log.warn('the open-file limit leaves almost no room for connections: raise it (ulimit -n)', { openFileLimit: cap.limit, maxConnections: cap.max });

  const idle = collectWhenIdle(config.idleGcMs, log.debug);
  const stats = (): ServerStats => ({
    connections: open,
    maxConnections: cap.max,
    refusedFull: refusedFull.total,
    refusedPerIp: refusedPerIp.total,
    refusedRate: refusedRate.total,
    refusedProxyHeader: refusedProxyHeader.total,
    guard: { ...guard.counters },
    acceptErrors: acceptFailed.total,
    workerDeaths: h.deaths,
    workers: h.workers,
  });
  // /metrics, asked by a worker's HTTP client: this thread's figures and every worker's. A cluster's series carry the node's id.
  const nodeMetrics = new NodeMetrics(h, stats, config.redisUrl ? config.nodeId : undefined);
  h.metricsSource = () => nodeMetrics.render();
  const reload = (): ReloadOutcome => {
    // Everything is read and checked before anything changes: a reload applies whole or not at all.
    const { next, applied, needRestart, overridden } = reloadConfig(config);
    const id: TlsIdentity = loadTlsIdentity(next);
    const ca = next.tlsCa ? readFileSync(next.tlsCa, 'utf8') : undefined;
    // A key that does not match the certificate, or PEM that is not one, throws here rather than in every worker.
    tls.createSecureContext({ cert: id.cert, key: id.key, ...(ca ? { ca } : {}) });
    const cert = new X509Certificate(id.cert);
    for (const k of RELOADABLE) (config as unknown as Record<string, unknown>)[k] = next[k];
    setLogLevel(config.logLevel);
    storage?.setLogLevel(config.logLevel);
    cap = connectionCap(config, config.maxConnections > 0 ? undefined : openFileLimit());
    // Sticky: a worker started from now on (in place of one that dies) gets it on joining. Its workerData keeps
    // the certificate of the start, from which what must stay the same for the process's life is derived
    // (MUC occupant ids).
    h.setState({ t: 'reload', config: Object.fromEntries([...RELOADABLE].map((k) => [k, config[k]])) as Partial<Config>, tls: { ...id, ...(ca ? { ca } : {}) } });
    if (config.s2s && !validFor(cert, config.domain)) log.warn('the TLS certificate does not name the served domain: peer servers will refuse it', { domain: config.domain, subject: cert.subject });
    const certificate = { subject: cert.subject, validTo: cert.validTo, fingerprint256: cert.fingerprint256 };
    log.info('configuration reloaded', { applied, certificate, maxConnections: cap.max });
    // Named, so that an operator knows the change is not in effect yet.
    if (needRestart.length > 0) log.warn('configuration changes that take a restart were not applied', { settings: needRestart });
    if (overridden.length > 0) log.warn('config file keys overridden by environment variables (fixed for the process): changing them in the file has no effect', { keys: overridden });
    return { applied, needRestart, overridden, certificate };
  };
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      stopping = true;
      idle?.stop();
      c2s.close();
      direct.close();
      comp?.close();
      web?.close();
      webTls?.close();
      s2s?.close();
      s2sDirect?.close();
      admin?.close();
      clusterAdmin?.close();
      const clean = await h.shutdown(config.shutdownTimeoutMs);
      if (!clean) log.warn('shutdown deadline reached with sessions still open');
      await membership?.leave();
      // Each worker's tasks end once its sessions are closed and flushed.
      await Promise.race([Promise.allSettled([...joins, ...live]), new Promise((r) => setTimeout(r, 1000).unref())]);
      h.close();
      await pool.destroy();
      await storage?.close();
    })());
  return { c2sPort, tlsPort, componentPort, s2sPort, s2sTlsPort, httpPort, httpsPort, hub: h, membership, storage, stats, reload, close };
}
