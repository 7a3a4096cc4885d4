// The worker thread: piscina runs one long-lived task per connection (the
// actor's lifetime) plus one "join" task that links it to the node's hub.
// A worker that dies is replaced by piscina; its replacement joins the hub
// the same way, under a new index.
import { createHash } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { pemCertificates } from '../tls/trust.ts';
import { workerData, threadId } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import type { Redis } from 'ioredis';
import type { Config } from '../config/index.ts';
import type { TlsIdentity } from '../tls/certificate.ts';
import { openAccountStore } from '../accounts/open.ts';
import { openRosterStore } from '../roster/open.ts';
import { openOfflineStore } from '../offline/open.ts';
import { openArchiveStore } from '../mam/open.ts';
import type { ArchiveStore } from '../mam/store.ts';
import { ArchiveWriter } from '../mam/writer.ts';
import { mam } from '../modules/mam.ts';
import { openBlockStore } from '../blocking/open.ts';
import type { BlockStore } from '../blocking/store.ts';
import { MAX_BLOCKED } from '../blocking/store.ts';
import { blocking } from '../modules/blocking.ts';
import { openPersonalStore } from '../personal/open.ts';
import type { PersonalStore } from '../personal/store.ts';
import { vcard } from '../modules/vcard.ts';
import { privateStorage } from '../modules/private.ts';
import { pubsubService } from '../modules/pubsub.ts';
import { uploadService } from '../modules/upload.ts';
import { extdisco } from '../modules/extdisco.ts';
import { openUploadStore } from '../upload/open.ts';
import type { UploadStore } from '../upload/store.ts';
import { UploadHttp } from '../upload/http.ts';
import { avatar } from '../modules/avatar.ts';
import { bookmarks } from '../modules/bookmarks.ts';
import { muc, hashPlacement, type MucEvents } from '../modules/muc.ts';
import { ClusterRooms } from '../muc/placement.ts';
import { RoomArchive } from '../muc/history.ts';
import { openPepStore } from '../pep/open.ts';
import { openMucStore } from '../muc/open.ts';
import type { PepStore } from '../pep/store.ts';
import type { RoomStore } from '../muc/store.ts';
import { pep } from '../modules/pep.ts';
import { redisCaps, type SharedCaps } from '../pep/caps.ts';
import { HubPep, redisRemoteResources, type RemoteResources } from '../pep/remote.ts';
import { HubGuard } from './guard.ts';
import { HashGate } from '../accounts/hashing.ts';
import { StorageClient, remoteStores } from '../storage/remote.ts';
import type { AccountStore } from '../accounts/store.ts';
import type { RosterStore } from '../roster/store.ts';
import type { OfflineStore } from '../offline/store.ts';
import { HubRegistry } from './hub-registry.ts';
import { RedisRegistry, K } from '../registry/redis.ts';
import { connectRedis, ready, waitForRedis } from '../cluster/redis.ts';
import { NodeTransport } from '../cluster/transport.ts';
import type { SessionRegistry } from '../registry/registry.ts';
import { Router } from '../router/router.ts';
import type { Transport } from '../router/router.ts';
import { Session } from '../session/session.ts';
import { ComponentStream } from '../component/stream.ts';
import { ServerIn } from '../s2s/incoming.ts';
import { Federation } from '../s2s/federation.ts';
import { componentsOf, adminsOf, publicUrlOf, uploadTypesOf, extdiscoServicesOf } from '../config/index.ts';
import { Resumption } from '../session/resumption.ts';
import { DurableSessions } from '../session/durable.ts';
import { encode, encodeBuffer, decode } from './wire.ts';
import { adoptSocket } from './socket.ts';
import type { Peer } from './socket.ts';
import { WebServer, elsewhereUri } from '../web/http.ts';
import { BoshService } from '../web/bosh.ts';
import { connectionCap, openFileLimit } from '../acceptor/limits.ts';
import type { HttpPorts } from '../web/http.ts';
import type { Envelope, FromHub, Peers, StorePort, ToHub, Welcome } from './wire.ts';
import type { WorkerContext } from './context.ts';
import { ping } from '../modules/ping.ts';
import { version } from '../modules/version.ts';
import { disco } from '../modules/disco.ts';
import { register } from '../modules/register.ts';
import { sessionLegacy } from '../modules/session-legacy.ts';
import { roster, pushQuery } from '../modules/roster.ts';
import { carbons } from '../modules/carbons.ts';
import { offlineStorage } from '../modules/offline.ts';
import { presence } from '../modules/presence.ts';
import { PresenceService } from '../presence/presence.ts';
import { csi } from '../modules/csi.ts';
import { adhoc } from '../modules/adhoc.ts';
import { adminCommands } from '../modules/admin.ts';
import { runAdminTask } from '../admin/tasks.ts';
import { sm } from '../modules/sm.ts';
import { hooksOf, type ServerModule } from '../modules/module.ts';
import { removeAccount, isRemovalNotice } from '../accounts/removal.ts';
import type { RemovalNotice } from '../accounts/removal.ts';
import { log, setLogLevel, guarded, Throttled } from '../log.ts';
import { collectWhenIdle } from '../idle-gc.ts';
import { logLoopDelay } from '../loop-delay.ts';
import { registry as metricsRegistry } from '../metrics/metrics.ts';
import { workerGauges } from '../metrics/worker.ts';
import { acquirePool } from '../storage/postgres.ts';

export interface WorkerData {
  config: Config;
  tls: TlsIdentity;
}

/** A join carries the worker's port to the hub and, on a single node, its port to the storage thread. */
export type Task = { t: 'join'; port: MessagePort; store?: MessagePort } | { t: 'conn'; socket: net.Socket; directTls: boolean; kind?: 'component' | 's2s' | 'http'; ports?: HttpPorts; peer?: Peer };

const { config } = workerData as WorkerData;
/** The certificate and key: a reload may bring new ones (see 'reload' in join()). */
let identity = (workerData as WorkerData).tls;
/** Entities one session may send directed presence to and have it tracked (RFC 6121 §4.6). */
const MAX_DIRECTED_PRESENCE = 1000;
/** How long a removal is remembered for sessions that were authenticating while it happened. */
const REMOVED_KEPT_MS = 5 * 60_000;
setLogLevel(config.logLevel);
collectWhenIdle(config.idleGcMs, log.debug);
/** The event-loop delay lines, at debug level only (a reload may turn them on or off). */
let loopDelay: (() => void) | undefined;
const watchLoopDelay = (): void => {
  if (config.logLevel === 'debug') loopDelay ??= logLoopDelay(5000, log.debug);
  else {
    loopDelay?.();
    loopDelay = undefined;
  }
};
watchLoopDelay();

/**
 * Tests only: a worker started with XMPP_TEST_FAULTS=1 in its environment
 * throws out of the thread when the hub sends it 'fault', as an uncaught
 * EMFILE from a timer did (issue 14): the worker dies like a crashed one,
 * without killing anything from outside. Elsewhere the message is ignored.
 */
const faults = process.env.XMPP_TEST_FAULTS === '1';
/**
 * Tests only: a worker started with XMPP_TEST_CHANGE_DELAY_MS in its
 * environment applies the change notices of other workers (a blocklist
 * changed there) that much later, as a busy worker would, so that a test
 * can see whether the answer to the change waits for them.
 */
const changeDelayMs = Math.max(0, Number(process.env.XMPP_TEST_CHANGE_DELAY_MS ?? 0) || 0);

/**
 * How long a change (a blocklist, XEP-0191) waits for every worker to
 * acknowledge its notice before the client is answered all the same (see
 * announceChange in join()).
 */
const CHANGE_ACK_MS = 3000;

/** How long a read of the cluster's live nodes stands for a node not in it (web/bosh.ts BoshEnv.alive). */
const LIVE_NODES_MS = 1000;

/** How long /readyz waits for the registry or the database to answer. */
const HEALTH_MS = 2000;
/** How long /metrics waits for the node's answer (the hub waits up to 3 s for the workers'). */
const METRICS_MS = 10_000;

/** What the HTTP listener's /metrics and /readyz ask of this worker, once it has joined. */
let ops: { metrics(): Promise<string>; readiness(): Promise<string | undefined> } | undefined;

/** Whether `p` settles within `ms` (then its value), or false. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | false> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A change notice from another worker or node: each module drops its copy; then `done` (the acknowledgement). */
function applyChange(router: Router, kind: string, user: string, done?: () => void): void {
  const apply = () => {
    router.changed(kind, user);
    done?.();
  };
  if (changeDelayMs > 0) setTimeout(apply, changeDelayMs);
  else apply();
}

let ctx: WorkerContext | undefined;
let joined: Promise<void> | undefined;
const onJoined: (() => void)[] = [];
/** How long a connection handed to this worker before it joined waits for the join. */
const JOIN_WAIT_MS = 10_000;
/** Archive rows per write (mam/writer.ts), and archived messages the retention removes at a time. */
const ARCHIVE_BATCH = 2000;
const PRUNE_CHUNK = 10_000;

/** Removes archived messages older than the retention, a chunk at a time (no long lock on the database); returns how many. */
async function pruneArchive(archive: ArchiveStore, days: number): Promise<number> {
  const before = Date.now() - days * 86_400_000;
  let total = 0;
  for (;;) {
    const n = await archive.prune(before, PRUNE_CHUNK);
    total += n;
    if (n < PRUNE_CHUNK) break;
    // The database serves the stanzas between two chunks.
    await new Promise((r) => setTimeout(r, 50));
  }
  log.info('archive retention: old messages removed', { removed: total, days });
  return total;
}
const notJoined = new Throttled('error', 'connection closed: its worker did not join the hub in time');

const sweepFailed = new Throttled('error', 'sweep failed for a session');
function sweep(): void {
  if (!ctx) return;
  const now = Date.now();
  const { bindTimeoutMs, idleTimeoutMs } = config;
  for (const s of ctx.all) {
    // One session's failure must not spare the others their timeout.
    try {
      if (s.state !== 'established' && now - s.createdAt > bindTimeoutMs) s.close({ condition: 'connection-timeout', text: 'no resource bound in time' });
      else if (s.state === 'established' && idleTimeoutMs > 0 && now - s.lastActivity > idleTimeoutMs) s.disconnect('connection-timeout', 'idle for too long');
    } catch (err) {
      sweepFailed.hit({ err: String(err), code: (err as NodeJS.ErrnoException).code });
    }
  }
}

/** How this worker reaches the registry and the other nodes. */
interface Backend {
  registry: SessionRegistry;
  /** Cluster: where XMPP_SM_DURABLE keeps resumable sessions' state. */
  durable?: DurableSessions;
  /** XEP-0115 vers verified by any worker (PEP): the node's hub, or Redis for every node of a cluster. */
  caps: SharedCaps;
  /** PEP: contacts of other servers' resources and caps, seen by every worker (the hub), or every node (Redis). */
  remote: RemoteResources;
  /** Cluster: what the MUC service's rooms need of it (muc/placement.ts). */
  muc?: { redis: Redis; epoch(): string; mayAct(): boolean };
  toNode: Transport['toNode'];
  /** Cluster: whether another node is a live member (web/bosh.ts BoshEnv.alive). */
  alive?(node: string): boolean | Promise<boolean>;
  /** To every worker of every node, this one included; `here` is this worker's share, for when the others cannot be reached. */
  announceRemoval(notice: RemovalNotice, here: (notice: RemovalNotice) => void): void;
  /**
   * Cluster: a change notice (Router.changed) to every worker of every
   * node; resolves true once every worker subscribed when Redis took it has
   * acknowledged having applied it, false if some had not within `waitMs`.
   */
  publishChange?(kind: string, user: string, waitMs: number): Promise<boolean>;
  /** Called once the worker knows its index: start receiving (envelopes go to `deliver`). */
  listen(index: number, router: Router, onRemoved: (notice: unknown) => void, deliver: (env: Envelope) => void): Promise<void>;
  onHub(msg: FromHub): boolean;
  /** Calls `fn` each time the registry is reachable again after an outage. */
  onRecovered(fn: () => void): void;
  /** Why this worker cannot serve the cluster now (/readyz): the registry unreachable, the lease lapsed; undefined when it can. */
  health(): Promise<string | undefined>;
  /** Resolves once the connections are up; rejects past the start's bound on waiting for Redis. */
  connected(): Promise<void>;
  close(): void;
}

function singleNode(hub: MessagePort): Backend {
  const registry = new HubRegistry(hub);
  const pepShared = new HubPep((q, m, a) => hub.postMessage(encode({ t: 'pep', q, m, a })));
  return {
    registry,
    caps: pepShared,
    remote: pepShared,
    toNode: async () => false, // there is no other node
    announceRemoval: (notice) => hub.postMessage(encode({ t: 'removed', notice })),
    listen: async () => {},
    onHub: (msg) => {
      if (msg.t !== 'pep') return registry.onHubMessage(msg);
      pepShared.answered(msg.q, msg.v);
      return true;
    },
    onRecovered: () => {},
    // The registry is the hub's, in this process.
    health: async () => undefined,
    connected: async () => {},
    close: () => {},
  };
}

function cluster(): Backend {
  const cmd = connectRedis(config.redisUrl, `${config.nodeId}:cmd`);
  const sub = connectRedis(config.redisUrl, `${config.nodeId}:sub`);
  let epoch = '';
  let leaseUntil = 0;
  const registry = new RedisRegistry(cmd, config.nodeId, () => epoch);
  let index = -1;
  let onEnvelope: (env: Envelope) => void = () => {};
  const durable = config.smDurable ? new DurableSessions(cmd) : undefined;
  const transport = new NodeTransport(cmd, config.nodeId, () => index, (env) => onEnvelope(env), durable && (() => durable.flush()));
  /** This worker's change notices waiting for acknowledgements, by id: how many came, and how many Redis said it delivered to (once known). */
  const awaitingAcks = new Map<string, { got: number; of: number; done: () => void }>();
  let noticeSeq = 0;
  /** The live nodes as last read, when, and the read under way: one read a second at most, however many names are asked about. */
  let live = { nodes: new Set<string>(), at: 0 };
  let reading: Promise<Set<string>> | undefined;
  const readLive = (): Promise<Set<string>> =>
    (reading ??= registry.liveNodes().then(
      (nodes) => {
        live = { nodes: new Set(nodes), at: Date.now() };
        return live.nodes;
      },
    ).finally(() => (reading = undefined)));
  const ackArrived = (id: string): void => {
    const w = awaitingAcks.get(id);
    if (!w) return;
    w.got++;
    if (w.of >= 0 && w.got >= w.of) w.done();
  };
  return {
    registry,
    durable,
    caps: redisCaps(cmd),
    remote: redisRemoteResources(cmd),
    muc: { redis: cmd, epoch: () => epoch, mayAct: () => Date.now() < leaseUntil },
    // Confirmed once handled there; false once nobody listens there (the node is gone).
    toNode: (node, worker, env) => transport.send(node, worker, env),
    alive(node) {
      // A node read as live: yes (one that died since finds nobody listening, and is "not taken").
      if (live.nodes.has(node)) return true;
      if (Date.now() - live.at < LIVE_NODES_MS) return false;
      return readLive().then((nodes) => nodes.has(node));
    },
    announceRemoval(notice, here) {
      cmd.publish(K.removed, encodeBuffer(notice)).catch((err: unknown) => {
        // The account and its data are gone, but the other nodes do not know:
        // its sessions there stay until they close.
        log.error('account removal not announced to the cluster', { user: notice.user, err: String(err) });
        here(notice);
      });
    },
    async publishChange(kind, user, waitMs) {
      // Redis answers PUBLISH with the number of connections it wrote the
      // notice to (one subscriber connection per worker of every node, this
      // one's too); each worker publishes the id back once it has applied it.
      const id = `${++noticeSeq}`;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const w = { got: 0, of: -1, done };
      awaitingAcks.set(id, w);
      const start = Date.now();
      try {
        w.of = await cmd.publish(K.changed, encodeBuffer({ kind, user, ack: K.changeAck(config.nodeId, index), id }));
        if (w.got >= w.of) done();
        return (await within(all.then(() => true), waitMs - (Date.now() - start))) === true;
      } finally {
        awaitingAcks.delete(id);
      }
    },
    async listen(i, router, onRemoved, deliver) {
      index = i;
      onEnvelope = deliver;
      const mine = K.channel(config.nodeId, index);
      const acks = K.changeAck(config.nodeId, index);
      // Invalidations sent while we were disconnected are lost: start cold.
      sub.on('ready', () => {
        registry.invalidateAll();
        router.changed('*', '');
      });
      sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
        const name = channel.toString();
        if (name === K.inv) registry.invalidate(message.toString());
        else if (name === K.removed) onRemoved(decode<unknown>(message));
        else if (name === K.changed) {
          const n = decode<{ kind: string; user: string; ack?: string; id?: string }>(message);
          applyChange(router, n.kind, n.user, () => {
            if (n.ack !== undefined && n.id !== undefined) cmd.publish(n.ack, n.id).catch((err: unknown) => log.debug('a change notice could not be acknowledged', { err: String(err) }));
          });
        } else if (name === acks) ackArrived(message.toString());
        else transport.receive(message);
      });
      // Ready only once binds can reach the registry too: the command
      // connection queues nothing while it connects (enableOfflineQueue off),
      // so a login right after start would be refused as if Redis were down.
      await Promise.all([sub.subscribe(mine, K.inv, K.removed, K.changed, acks), ready(cmd)]);
      // What the modules read before the subscription took (blocklists) may have changed unannounced meanwhile: read again.
      router.changed('*', '');
    },
    async connected() {
      const wait = { timeoutMs: config.redisStartupTimeoutMs, bound: 'XMPP_REDIS_STARTUP_TIMEOUT_MS' };
      await Promise.all([waitForRedis(cmd, wait), waitForRedis(sub, wait)]);
    },
    async health() {
      // A node that lost its lease is fenced, or about to be: its sessions are closed, new ones would be too.
      if (Date.now() >= leaseUntil) return 'cluster membership lease not held';
      // Asked, not read from the connection's status: a connection that went silent still says ready.
      const ok = await within(cmd.ping().then(() => true, () => false), HEALTH_MS);
      return ok ? undefined : 'registry (Redis) unreachable';
    },
    onRecovered(fn) {
      // However short the outage: a write may have failed in it.
      let seen = cmd.status === 'ready';
      cmd.on('ready', () => {
        if (seen) fn();
        seen = true;
      });
    },
    onHub(msg) {
      if (msg.t === 'epoch') {
        epoch = msg.epoch;
        return true;
      }
      if (msg.t === 'judging') {
        registry.judging = msg.on;
        return true;
      }
      if (msg.t === 'lease') {
        leaseUntil = msg.until;
        return true;
      }
      return false;
    },
    close() {
      cmd.disconnect();
      sub.disconnect();
    },
  };
}

/** After Redis lost its data: register this worker's sessions again, by the conflict policy. */
async function reregister(c: WorkerContext): Promise<void> {
  for (const s of [...c.sessions.values()]) {
    const rec = { jid: s.jid!, bare: s.bare!, sid: s.id, node: c.node, worker: c.index, priority: s.priority, available: s.available };
    // "assign" cannot rename a live session: it loses, as under old-wins.
    const policy = config.conflictPolicy === 'new-wins' ? 'new-wins' : 'old-wins';
    const out = await c.registry.bind({ rec, policy, maxResources: config.maxResourcesPerAccount, exclusiveBare: false });
    if (out.dropped) await c.router.presence.departed(out.dropped);
    if (out.ok && out.replaced && out.replaced.sid !== s.id) c.router.kick(out.replaced, 'conflict', 'replaced by a session re-registered after a registry outage');
    else if (!out.ok && out.condition === 'conflict') s.close({ condition: 'conflict', text: 'another session holds this resource' });
  }
  // External components hold records too: one connection per component, as before the loss.
  for (const comp of [...c.components.values()]) {
    const rec = { jid: comp.jid!, bare: comp.domain!, sid: comp.id, node: c.node, worker: c.index, priority: 0, available: true };
    const out = await c.registry.bind({ rec, policy: 'old-wins', maxResources: 1, exclusiveBare: false });
    if (!out.ok && out.condition === 'conflict') comp.close({ condition: 'conflict', text: `${comp.domain} is connected elsewhere` });
  }
}

/**
 * After an outage in which Redis kept its data: what failed to be written
 * meanwhile is written now. Sessions that ended are removed and announced
 * (their unavailable presence could not be sent then); a session whose
 * resource was taken by a newer one (its kick lost) ends with conflict.
 */
async function reconcile(c: WorkerContext): Promise<void> {
  if (!(c.registry instanceof RedisRegistry)) return;
  // The list is taken once Redis can hear it, not before: what changes
  // while the connection comes back must be in it.
  await c.registry.connected();
  const live = [...c.sessions.values()].map((s) => ({ jid: s.jid!, sid: s.id, available: s.available, priority: s.priority }));
  // External components' records are this worker's live ones too.
  for (const comp of c.components.values()) live.push({ jid: comp.jid!, sid: comp.id, available: true, priority: 0 });
  const binding = [...c.all].filter((s) => s.state === 'wait-bind').map((s) => s.id);
  const out = await c.registry.reconcile(c.index, live, binding);
  if (!out) return; // fenced: the heartbeat closes everything
  for (const r of out.replaced) (c.sessions.get(r.sid) ?? c.components.get(r.sid))?.close({ condition: 'conflict', text: 'replaced by a new session while the registry was unreachable', forgotten: true });
  if (out.gone.length > 0) await c.router.presence.departed(out.gone);
  log.info('reconciled local sessions with the registry', { worker: c.index, live: live.length, gone: out.gone.length, replaced: out.replaced.length });
}

/** The durable stores: through the node's storage thread (SQLite), or PostgreSQL (XMPP_DATABASE_URL). */
async function openStores(store: MessagePort | undefined): Promise<{ accounts: AccountStore; roster: RosterStore; offline: OfflineStore; archive: ArchiveStore; personal: PersonalStore; replace(port: MessagePort): void; ping(): Promise<void>; close(): void }> {
  if (store) {
    const client = new StorageClient(store);
    // The storage thread answers (it holds the SQLite files open).
    return { ...(await remoteStores(client)), replace: (port) => client.replace(port), ping: async () => void (await client.call('info', 'get', [])), close: () => client.close() };
  }
  // All of them, or none left open (a store that opened keeps the thread's database pool).
  const opened = await Promise.allSettled([openAccountStore(config), openRosterStore(config), openOfflineStore(config), openArchiveStore(config, { fulltext: config.mam && config.mamFulltext }), openPersonalStore(config)]);
  const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(opened.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
    throw failed.reason;
  }
  const [a, r, o, m, p] = opened as [PromiseFulfilledResult<AccountStore>, PromiseFulfilledResult<RosterStore>, PromiseFulfilledResult<OfflineStore>, PromiseFulfilledResult<ArchiveStore>, PromiseFulfilledResult<PersonalStore>];
  const [accounts, roster, offline, archive, personal] = [a.value, r.value, o.value, m.value, p.value];
  // The thread's pool, which the stores share: a statement through it says PostgreSQL answers.
  const db = await acquirePool(config.databaseUrl);
  return {
    accounts,
    roster,
    offline,
    archive,
    personal,
    replace: (port) => port.close(),
    ping: async () => void (await db.pool.query('SELECT 1')),
    close: () => void Promise.all([accounts.close(), roster.close(), offline.close(), archive.close(), personal.close(), db.release()]),
  };
}

async function join(hub: MessagePort, store: MessagePort | undefined): Promise<void> {
  const backend = config.redisUrl ? cluster() : singleNode(hub);
  // The node's record of failed authentications and registrations, in the main thread (acceptor/guard.ts).
  const guard = new HubGuard((q, m, a) => hub.postMessage(encode({ t: 'guard', q, m, a })));
  const hashing = new HashGate(config.hashConcurrency, config.hashQueue, () => guard.count('hashRefused'));
  // Before the hello: a failure here fails the node's start.
  await backend.connected();
  const registry = backend.registry;
  const peers = new Map<number, MessagePort>();
  const stores = await openStores(store);
  const { roster: rosterStore, offline, accounts, archive, personal } = stores;
  // XEP-0191 blocklists: the storage thread's (one node), or PostgreSQL's.
  const blockStore: BlockStore = store ? (stores as Partial<{ blocking: BlockStore }>).blocking! : await openBlockStore(config);
  // XEP-0163 PEP nodes: the storage thread's (one node), or PostgreSQL's.
  const pepStore: PepStore = store ? (stores as Partial<{ pep: PepStore }>).pep! : await openPepStore(config);
  // XEP-0045 chat rooms: the storage thread's (one node), or PostgreSQL's.
  const mucStore: RoomStore = store ? (stores as Partial<{ muc: RoomStore }>).muc! : await openMucStore(config);
  // XEP-0363 upload slots: the storage thread's (one node), or PostgreSQL's; with the service off too,
  // since what an account put while it was on goes with the account.
  const uploadStore: UploadStore = store ? (stores as Partial<{ upload: UploadStore }>).upload! : await openUploadStore(config);
  /** The ports the node's HTTP listeners got (the hub's 'http-ports'). */
  let httpPorts: HttpPorts = {};
  /** XMPP_ADMINS (XEP-0133 commands, the MUC service's admins): one set, refilled by a reload. */
  const admins = new Set(adminsOf(config));
  /** Change notices sent to the other workers of this node, by number: the workers yet to acknowledge, and what resolves the wait. */
  const unacked = new Map<number, { left: Set<number>; done: () => void }>();
  let changeSeq = 0;
  const changeAcked = (q: number, worker: number): void => {
    const w = unacked.get(q);
    if (!w || !w.left.delete(worker) || w.left.size > 0) return;
    unacked.delete(q);
    w.done();
  };
  /**
   * A change to an account's blocklist (XEP-0191) or vCard (XEP-0398), to every other worker of
   * this node and of the cluster; the client is answered once this resolves.
   *
   * The guarantee: on this node, strict. Each other worker acknowledges the
   * notice (over its direct port) once it has dropped its copy, and the
   * answer waits for all of them: whatever a worker of this node routes
   * after the client has its answer is judged by the new list.
   *
   * On the other nodes, strict while they are healthy, bounded otherwise.
   * Redis pub/sub is asynchronous: PUBLISH answering says only that Redis
   * wrote the notice to each subscribed connection, not that a node read
   * it. So every worker that applies the notice publishes its id back, and
   * the answer waits for as many acknowledgements as PUBLISH counted
   * subscribers, for at most CHANGE_ACK_MS. A worker that did not
   * acknowledge by then (a stalled node, one whose subscription is down)
   * may route by its old copy until it reads the notice; one whose
   * subscription was cut reads every list again when it reconnects, and a
   * node cut off from Redis past its lease (XMPP_NODE_LEASE_MS) is fenced
   * and closes its sessions. A node that subscribes only after PUBLISH
   * reads the lists afresh anyway. So the stale window is at most
   * CHANGE_ACK_MS past the answer on any node that is alive and reachable,
   * and is logged when it is used.
   */
  const announceChange = async (kind: string, user: string): Promise<void> => {
    const q = ++changeSeq;
    const here = new Promise<void>((done) => {
      const left = new Set(peers.keys());
      if (left.size === 0) return done();
      unacked.set(q, { left, done });
      for (const p of peers.values()) p.postMessage(encode({ t: 'changed', kind, user, q } satisfies Envelope));
    });
    try {
      const [nodeDone, clusterDone] = await Promise.all([within(here.then(() => true), CHANGE_ACK_MS), backend.publishChange?.(kind, user, CHANGE_ACK_MS) ?? true]);
      if (!nodeDone || !clusterDone) log.warn('a change was answered before every worker acknowledged it; those that did not may route by their old copy a while', { kind, user, waitedMs: CHANGE_ACK_MS, thisNode: nodeDone, otherNodes: clusterDone });
    } finally {
      unacked.delete(q);
    }
  };
  const blocker = blocking({ domain: config.domain, store: blockStore, roster: rosterStore, max: MAX_BLOCKED, routing: () => router, announce: (user) => announceChange('blocklist', user) });
  // Batches of archive rows, written off the stanzas' way (mam/writer.ts).
  const archiveWriter = config.mam ? new ArchiveWriter({ store: archive, maxBuffered: config.mamMaxBuffered, batch: ARCHIVE_BATCH }) : undefined;
  // XEP-0163 PEP: its api is how other modules change an account's nodes (and hear of changes).
  const pepModule = pep({ domain: config.domain, store: pepStore, roster: rosterStore, routing: () => router, blocked: (from, to) => blocker.denies(from, to), sharedCaps: backend.caps, remote: backend.remote });
  const vcardModule = vcard({ store: personal });
  const privateModule = privateStorage({ store: personal });
  const modules: ServerModule[] = [
    // In this order in the stanza flow: presence takes its own, offline storage strips a forged delay, the archive
    // takes the sender's copy (or refuses the message) before carbons copy it.
    // First: a stanza to or from a blocked JID goes no further (XEP-0191), not even to the archive or carbons.
    blocker,
    // Before presence, which takes it: PEP reads the caps of broadcast presence (XEP-0163 §4.2).
    pepModule,
    // Before presence too: XEP-0398 §4 stamps the photo hash on available presence; it keeps vCard and PEP avatars in step.
    avatar({ store: personal, pep: pepModule.api, vcard: vcardModule.api, announce: (user) => announceChange('vcard', user) }),
    presence(() => router.presence),
    // Limits read at each use (getters): a reload changes them.
    offlineStorage({ store: offline, domain: config.domain, get max() { return config.maxOfflineMessages; }, get maxBytes() { return config.maxOfflineBytes; } }),
    ...(archiveWriter ? [mam({ domain: config.domain, store: archive, writer: archiveWriter, roster: rosterStore, get defaultMode() { return config.mamDefault; }, fulltext: config.mamFulltext })] : []),
    ping, version, register, sessionLegacy, carbons(() => router), csi(), sm,
    vcardModule, privateModule,
    // XEP-0402 §5.3: XEP-0048 bookmarks (private XML, the legacy PEP node) and PEP native bookmarks kept in step.
    bookmarks({ store: personal, pep: pepModule.api, private: privateModule.api }),
    roster({
      store: rosterStore,
      get maxItems() { return config.maxRosterItems; },
      get maxGroups() { return config.maxRosterGroups; },
      get maxBytes() { return config.maxRosterBytes; },
      push: (user, item, ver) => void router.pushRoster(`${user}@${config.domain}`, pushQuery(item, ver)),
      removed: (user, jid, before) => router.presence.itemRemoved(user, jid, before),
    }),
  ];
  // XEP-0060: the publish-subscribe service on its own domain, on PEP's store.
  if (config.pubsubDomain) modules.push(pubsubService({ domain: config.pubsubDomain, serverDomain: config.domain, store: pepStore, roster: rosterStore, send: (el) => router.routeInternal(el) }));
  // XEP-0363: the HTTP upload service on its own domain; its URLs on the HTTP listener.
  const uploadTypes = uploadTypesOf(config);
  const uploadExpireMs = config.uploadExpireDays * 86_400_000;
  const upload = config.uploadDomain ? new UploadHttp({ store: uploadStore, dir: config.uploadDir, types: uploadTypes, expireMs: uploadExpireMs }) : undefined;
  if (upload) {
    await upload.prepare();
    const publicUrl = publicUrlOf(config);
    const host = config.domain.includes(':') && !config.domain.startsWith('[') ? `[${config.domain}]` : config.domain;
    const configured = config.httpsPort !== '' && Number(config.httpsPort) !== 0 ? Number(config.httpsPort) : undefined;
    modules.push(uploadService({
      domain: config.uploadDomain,
      serverDomain: config.domain,
      store: uploadStore,
      dir: config.uploadDir,
      maxBytes: config.uploadMaxBytes,
      quotaBytes: config.uploadQuotaBytes,
      types: uploadTypes,
      expireMs: uploadExpireMs,
      // Behind a proxy, its address; else the HTTPS listener's (its port known once it listens: 'http-ports').
      baseUrl: () => {
        if (publicUrl !== '') return publicUrl;
        const port = httpPorts.https ?? configured;
        return port === undefined ? undefined : `https://${host}:${port}`;
      },
    }));
  }
  // XEP-0215: STUN and TURN servers for the server's users.
  const externalServices = extdiscoServicesOf(config);
  if (externalServices.length > 0) modules.push(extdisco({ services: externalServices, secret: config.turnSecret, ttlSeconds: config.turnTtlSeconds }));
  // XEP-0045: the multi-user chat service; each room an actor on one worker
  // (a hash of its name on one node; in a cluster, where its claim in Redis
  // says: muc/placement.ts).
  let mucEvents: MucEvents | undefined;
  if (config.mucDomain) {
    // XEP-0313 on rooms' JIDs: full-text search where the archive keeps its index.
    const roomArchive = new RoomArchive(archive, config.mucDomain, { fulltext: config.mam && config.mamFulltext });
    const shared = backend.muc;
    const rooms = shared && registry instanceof RedisRegistry
      ? new ClusterRooms({ redis: shared.redis, node: config.nodeId, epoch: shared.epoch, worker: () => index, workers: () => [index, ...peers.keys()] })
      : undefined;
    const service = muc({
      domain: config.mucDomain,
      serverDomain: config.domain,
      store: mucStore,
      placement: rooms ?? hashPlacement(config.nodeId, () => index, config.workers),
      send: (el) => router.routeInternal(el),
      forward: (place, env) => router.send(place, env),
      archive: roomArchive,
      isServiceAdmin: (bare) => admins.has(bare),
      // The same on every node (they share the key), unguessable without it.
      secret: createHash('sha256').update('xmpp muc occupant ids\0').update(identity.key).digest('base64'),
      ...(rooms && shared && registry instanceof RedisRegistry
        ? {
          cluster: {
            node: config.nodeId,
            rooms,
            locate: async (full: string, fresh?: boolean) => {
              const bare = full.slice(0, full.indexOf('/'));
              const rec = (await registry.resources(bare, fresh)).find((r) => r.jid === full);
              return rec ? { node: rec.node, worker: rec.worker } : undefined;
            },
            nodeLive: (node: string) => registry.leaseHeld(node),
            mayAct: shared.mayAct,
            // A stanza to a room of a node that died waits for the lease to lapse, and a little more.
            stallMs: config.leaseMs + 2000,
          },
        }
        : {}),
    });
    mucEvents = service.events;
    modules.push(service);
  }
  // XEP-0050 ad-hoc commands: XEP-0133 administration for XMPP_ADMINS.
  modules.push(adhoc(adminCommands(admins), { idleMs: config.adhocIdleMs }));
  // The server's disco#items: its hosted services and its external components.
  modules.push(disco(() => modules, () => [...modules.flatMap((m) => (m.service ? [m.service.domain] : [])), ...componentSecrets.keys()]));
  const sessions = new Map<string, Session>();
  const components = new Map<string, ComponentStream>();
  const componentSecrets = componentsOf(config);
  const closing = new Map<string, Session>();
  const local = new Map<string, Session>();
  if (registry instanceof RedisRegistry) {
    // The record is the newer session's: no unbind, and no unavailable
    // presence for a full JID that session holds and announced long ago.
    registry.onReplaced = (_jid, sid) => sessions.get(sid)?.close({ condition: 'conflict', text: 'replaced by a new session', forgotten: true });
  }
  let index = -1;
  const router = new Router({
    domain: config.domain,
    node: config.nodeId,
    get worker() {
      return index;
    },
    registry,
    sessions,
    closing,
    local,
    accountExists: (local) => accounts.exists(local),
    transport: {
      toWorker: (w, env) => {
        const port = peers.get(w);
        if (!port) return false; // that worker died
        port.postMessage(encode(env));
        return true;
      },
      toNode: backend.toNode,
    },
    modules,
    components,
    componentDomains: new Set(componentSecrets.keys()),
  });
  router.presence = new PresenceService(
    {
      domain: config.domain,
      roster: rosterStore,
      offline,
      registry,
      accountExists: (local) => accounts.exists(local),
      get maxRosterItems() { return config.maxRosterItems; },
      get maxPendingRequests() { return config.maxPendingRequests; },
      get maxOutgoingRequests() { return config.maxOutgoingRequests; },
      maxDirected: MAX_DIRECTED_PRESENCE,
      federation: config.s2s,
      blocked: (from, to) => blocker.denies(from, to),
      refuses: (to, from) => blocker.refuses(to, from),
      approved: (user, item) => {
        for (const m of modules) m.approved?.(user, item);
      },
    },
    router,
  );
  const detached = new Map<string, Session>();
  const resumption = new Resumption({ node: config.nodeId, worker: () => index, local, sessions, registry, router, durable: backend.durable, leaseHeld: registry instanceof RedisRegistry ? (node) => registry.leaseHeld(node) : undefined, offline, get maxResources() { return config.maxResourcesPerAccount; }, deathWaitMs: config.leaseMs + 2000 });
  router.resumption = resumption;
  const c: WorkerContext = {
    config,
    secureContext: tls.createSecureContext({ cert: identity.cert, key: identity.key, ...(config.tlsCa ? { ca: readFileSync(config.tlsCa, 'utf8') } : {}) }),
    trustAnchors: config.tlsCa ? pemCertificates(readFileSync(config.tlsCa, 'utf8')) : [],
    accounts,
    roster: rosterStore,
    offline,
    registry,
    router,
    hooks: hooksOf(modules),
    node: config.nodeId,
    index,
    sessions,
    closing,
    local,
    all: new Set(),
    components,
    componentSecrets,
    detached,
    durable: backend.durable,
    resumption,
    removeAccount: (user) => removeAccount({ accounts, roster: rosterStore, offline, archive, blocking: blockStore, personal, pep: pepStore, muc: mucStore, uploads: { store: uploadStore, dir: config.uploadDir } }, config.domain, user, config.maxRosterItems),
    // Here first, whatever becomes of the announcement; then everywhere.
    announceRemoval: (notice) => {
      onRemoved(notice);
      backend.announceRemoval(notice, onRemoved);
    },
    removed: new Map(),
    s2s: undefined,
    upload,
    guard,
    hashing,
  };
  /** Envelopes from other workers and nodes: BOSH's (web/bosh.ts), and the router's. */
  const deliver = (env: Envelope): void => {
    if (env.t === 'bosh' || env.t === 'bosh-res') return boshService.onEnvelope(env);
    router.onEnvelope(env);
  };
  const boshService = new BoshService({
    config,
    node: config.nodeId,
    // The acceptor spreads connections over the workers: each takes its share of the cap for BOSH sessions.
    maxSessions: Math.max(1, Math.floor(connectionCap(config, config.maxConnections > 0 ? undefined : openFileLimit()).max / config.workers)),
    worker: () => index,
    session: (transport) => void new Session(c, transport, false),
    ...(backend.alive ? { alive: backend.alive } : {}),
    send: (node, w, env) => {
      if (node !== config.nodeId) return backend.toNode(node, w, env);
      const port = peers.get(w);
      if (!port) return false; // that worker died, its sessions with it
      port.postMessage(encode(env));
      return true;
    },
  });
  bosh = boshService;
  if (config.s2s) {
    c.s2s = new Federation({
      ctx: c,
      worker: () => index,
      toWorker: (w, env) => {
        const port = peers.get(w);
        if (!port) return false;
        port.postMessage(encode(env));
        return true;
      },
      tlsKey: identity.key,
      extraAnchors: c.trustAnchors,
    });
    router.federation = c.s2s;
  }
  /**
   * A reload: the settings that may change (read at each use from `config`,
   * this thread's copy, so they apply from now on), the admins, and a TLS
   * context with the certificate and key given (new connections get it;
   * those open keep theirs), XMPP_TLS_CA's anchors, and the s2s settings.
   */
  const reload = (msg: Extract<FromHub, { t: 'reload' }>): void => {
    Object.assign(config, msg.config);
    setLogLevel(config.logLevel);
    watchLoopDelay();
    admins.clear();
    for (const a of adminsOf(config)) admins.add(a);
    identity = { cert: msg.tls.cert, key: msg.tls.key };
    c.secureContext = tls.createSecureContext({ cert: identity.cert, key: identity.key, ...(msg.tls.ca ? { ca: msg.tls.ca } : {}) });
    c.trustAnchors = msg.tls.ca ? pemCertificates(msg.tls.ca) : [];
    c.s2s?.reconfigure(identity.key, c.trustAnchors);
    log.debug('configuration reloaded', { worker: index });
  };
  /**
   * An account was removed somewhere: its sessions here end, its contacts
   * here are told; once per removal (the echo of one made here is skipped).
   * The time kept is this worker's own: no other clock is compared with it.
   */
  const onRemoved = (notice: unknown): void => {
    if (!isRemovalNotice(notice)) {
      log.error('an account removal notice not understood; ignored', { notice: JSON.stringify(notice).slice(0, 200) });
      return;
    }
    const now = Date.now();
    if (c.removed.get(notice.user)?.notice === notice.at) return;
    for (const [u, r] of c.removed) if (now - r.at > REMOVED_KEPT_MS) c.removed.delete(u);
    c.removed.set(notice.user, { at: now, notice: notice.at });
    router.accountRemoved(notice);
    for (const m of modules) m.removed?.(notice.user);
    for (const s of [...c.all, ...c.detached.values()]) if (s.username === notice.user) s.close({ condition: 'not-authorized', text: 'the account was removed' });
  };
  // After an outage, from either side: this worker's connection came back,
  // or the node's heartbeat did (after a lapse that refused the first try).
  // One at a time: a run asked for while one runs follows it, with a fresh list.
  let reconciling = false;
  let again = false;
  const reconcileNow = (): void => {
    again = true;
    if (reconciling) return;
    reconciling = true;
    void (async () => {
      while (again) {
        again = false;
        await reconcile(c).catch((err: unknown) => log.error('reconciliation failed', { err: String(err) }));
      }
      reconciling = false;
    })();
  };
  backend.onRecovered(reconcileNow);
  workerGauges({ index: () => index, sessions: c.sessions });
  /** /metrics requests sent to the hub, by number. */
  const metricsAsked = new Map<number, (answer: { text?: string; error?: string }) => void>();
  let metricsSeq = 0;
  let shuttingDown = false;
  ops = {
    metrics: async () => {
      const q = ++metricsSeq;
      const answer = new Promise<{ text?: string; error?: string }>((resolve) => metricsAsked.set(q, resolve));
      hub.postMessage(encode({ t: 'metrics', q }));
      try {
        const a = await within(answer, METRICS_MS);
        if (a === false) throw new Error('the node did not gather its metrics in time');
        if (a.text === undefined) throw new Error(a.error ?? 'no metrics');
        return a.text;
      } finally {
        metricsAsked.delete(q);
      }
    },
    readiness: async () => {
      if (shuttingDown) return 'shutting down';
      const [registryDown, dbDown] = await Promise.all([
        backend.health(),
        within(stores.ping().then(() => false, () => true), HEALTH_MS).then((down) => down !== false),
      ]);
      return registryDown ?? (dbDown ? 'database unreachable' : undefined);
    },
  };
  const sweeper = setInterval(guarded('sweep', sweep), Math.max(10, Math.min(1000, config.bindTimeoutMs / 4, config.idleTimeoutMs > 0 ? config.idleTimeoutMs / 4 : 1000)));
  sweeper.unref();
  /**
   * The node's upkeep, run when the hub asks this worker (hub.ts upkeep(),
   * every UPKEEP_EVERY_MS, one worker at a time): archived messages past
   * XMPP_MAM_RETENTION_DAYS, every archive by the same rule, accounts' and
   * rooms' alike (rooms archive with XMPP_MAM off too); uploads past
   * XMPP_UPLOAD_EXPIRE_DAYS, slots never used and what a crash left. Nodes
   * of a cluster running theirs at once only share the work. A part that
   * fails is logged, and the other still runs.
   */
  const upkeep = async (): Promise<{ archive?: number; uploads?: number }> => {
    const removed: { archive?: number; uploads?: number } = {};
    if (config.mamRetentionDays > 0) {
      try {
        removed.archive = await pruneArchive(archive, config.mamRetentionDays);
      } catch (err) {
        log.error('archive retention failed', { err: String(err) });
      }
    }
    if (upload) {
      try {
        removed.uploads = await upload.sweep();
        if (removed.uploads > 0) log.info('uploads removed: expired files and slots never used', { removed: removed.uploads });
      } catch (err) {
        log.error('upload cleanup failed', { err: String(err) });
      }
    }
    return removed;
  };

  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  let closePeers!: () => void;
  const peersClosable = new Promise<void>((r) => (closePeers = r));
  const addPeers = (list: Peers['peers']) => {
    for (const p of list) {
      peers.get(p.index)?.close();
      peers.set(p.index, p.port);
      p.port.on('message', (buf: Uint8Array) => {
        const env = decode<Envelope>(buf);
        if (env.t === 'changed-ok') return changeAcked(env.q, p.index);
        if (env.t === 'changed') {
          return applyChange(router, env.kind, env.user, () => {
            if (env.q !== undefined) p.port.postMessage(encode({ t: 'changed-ok', q: env.q } satisfies Envelope));
          });
        }
        deliver(env);
      });
    }
  };
  const onHub = (msg: FromHub) => {
    if (msg.t === 'guard') return guard.answered(msg.q, msg.v);
    if (backend.onHub(msg)) return;
    switch (msg.t) {
      case 'peer-gone':
        peers.get(msg.index)?.close();
        peers.delete(msg.index);
        // Its rooms go to another worker of this node; the lowest live one looks for them.
        mucEvents?.workerDead(msg.index, [...peers.keys()].every((p) => p > index));
        // A dead worker holds no copy: its acknowledgements are not waited for.
        for (const q of [...unacked.keys()]) changeAcked(q, msg.index);
        break;
      case 'collect': {
        const q = msg.q;
        metricsRegistry.getMetricsAsJSON().then(
          (m) => hub.postMessage(encode({ t: 'collected', q, m })),
          (err: unknown) => log.warn('metrics could not be collected', { err: String(err) }),
        );
        break;
      }
      case 'metrics':
        metricsAsked.get(msg.q)?.(msg);
        break;
      case 'upkeep':
        void upkeep().then((removed) => hub.postMessage(encode({ t: 'upkept', removed } satisfies ToHub)));
        break;
      case 'fault':
        if (faults) setImmediate(() => {
          throw Object.assign(new Error('EMFILE: too many open files (fault injected by a test: XMPP_TEST_FAULTS)'), { code: 'EMFILE' });
        });
        break;
      case 'node-dead':
        mucEvents?.nodeDead(msg.node, msg.scan);
        break;
      case 'fenced':
        // Its rooms run elsewhere now (or again here, claimed under the new epoch).
        mucEvents?.fenced();
        for (const s of [...c.all, ...c.detached.values()]) s.close({ condition: 'system-shutdown', text: 'this node lost its cluster membership; reconnect', forgotten: true, fenced: true, seeOtherUri: elsewhereUri(c.config) });
        for (const comp of [...c.components.values()]) comp.close({ condition: 'system-shutdown', text: 'this node lost its cluster membership; reconnect', forgotten: true });
        if (registry instanceof RedisRegistry) registry.invalidateAll();
        break;
      case 'reconcile':
        reconcileNow();
        break;
      case 'departed':
        void router.presence.departed(msg.list);
        break;
      case 'removed':
        onRemoved(msg.notice);
        break;
      case 'changed':
        applyChange(router, msg.kind, msg.user);
        break;
      case 'reset':
        if (registry instanceof RedisRegistry) registry.invalidateAll();
        void reregister(c).catch((err: unknown) => log.error('re-registration failed', { err: String(err) }));
        break;
      case 'shutdown':
        shuttingDown = true;
        void shutdown(c)
          .then(() => {
            // Every worker's sessions are closed before any stream to a peer
            // server: their last presence may leave through another worker's.
            hub.postMessage(encode({ t: 'drained' }));
            return peersClosable;
          })
          .then(async () => {
            await c.s2s?.close();
            await c.router.idle();
            // What the archive holds is written before the stores close.
            await archiveWriter?.close(config.shutdownTimeoutMs / 2);
            hub.postMessage(encode({ t: 'stopped' }));
            clearInterval(sweeper);
            stores.close();
            void blockStore.close();
            void pepStore.close();
            void mucStore.close();
            void uploadStore.close();
            backend.close();
            stop();
          });
        break;
      case 'close-s2s':
        closePeers();
        break;
      case 'http-ports':
        httpPorts = msg.ports;
        break;
      case 'reload':
        reload(msg);
        break;
      case 'admin': {
        const q = msg.q;
        runAdminTask(c, msg.task).then(
          (v) => hub.postMessage(encode({ t: 'admin', q, v: v ?? null })),
          (err: unknown) => hub.postMessage(encode({ t: 'admin', q, err: (err as Error).message ?? String(err) })),
        );
        break;
      }
    }
  };
  hub.on('message', (raw: Uint8Array | Welcome | Peers | StorePort) => {
    if (raw instanceof Uint8Array) {
      try {
        return onHub(decode<FromHub>(raw));
      } catch (err) {
        // One message's failure must not take the worker, and its sessions, down.
        log.error('a message from the hub failed', { err: String(err), stack: (err as Error).stack });
        return;
      }
    }
    if (raw.t === 'peers') return addPeers(raw.peers);
    if (raw.t === 'store') return stores.replace(raw.port);
    // Everything this worker needs to serve, given in one message.
    index = raw.index;
    c.index = index;
    for (const msg of raw.state) onHub(msg);
    for (const rec of raw.records) backend.onHub({ t: 'put', rec });
    addPeers(raw.peers);
    void backend.listen(index, router, onRemoved, deliver).then(
      () => {
        ctx = c;
        for (const w of onJoined.splice(0)) w();
        hub.postMessage(encode({ t: 'ready' }));
      },
      (err: unknown) => log.error('cannot subscribe to the cluster', { err: String(err) }),
    );
  });
  hub.postMessage(encode({ t: 'hello', threadId }));
  await stopped;
  for (const p of peers.values()) p.close();
  hub.close();
}

async function shutdown(c: WorkerContext): Promise<void> {
  const open = [...c.all];
  // Sessions waiting to be resumed end too: what they kept goes offline before the stores close.
  for (const s of [...c.detached.values()]) s.close({ condition: 'system-shutdown', text: 'the server is shutting down' });
  // Web clients of a cluster are sent to the cluster's public endpoint, which another node serves.
  for (const s of open) s.close({ condition: 'system-shutdown', text: 'the server is shutting down', seeOtherUri: elsewhereUri(c.config) });
  // BOSH sessions answer what they hold with the stream's end now, before
  // the HTTP connections close (they carry those answers).
  bosh?.close();
  web?.close();
  const comps = [...c.components.values()];
  for (const s of comps) s.close({ condition: 'system-shutdown', text: 'the server is shutting down' });
  // Peer servers' streams too: nothing new comes in (ours to them close last, once every worker is here).
  const peers = c.s2s?.closeIncoming();
  await Promise.all(comps.map((s) => s.done));
  await Promise.all(open.map((s) => s.done));
  await peers;
  // What the closed sessions could not write goes offline before the stores close.
  await c.router.idle();
  // Let the unbinds the closes started reach the registry.
  await new Promise<void>((r) => setImmediate(r));
}

// Not an async function: a suspended frame per connection, for as long as it
// lives, would only wait for what session.done already says.
export default function handle(task: Task): Promise<string> {
  if (task.t === 'join') {
    if (joined) {
      task.port.close();
      task.store?.close();
      return Promise.resolve('declined');
    }
    const attempt = join(task.port, task.store);
    joined = attempt;
    // Failed before it said hello (a store that could not be opened): it
    // may be asked again, and nothing of the attempt is left to leak.
    attempt.catch(() => {
      if (!ctx && joined === attempt) joined = undefined;
    });
    return attempt.then(() => 'left');
  }
  // Piscina keeps the task for as long as it runs (the connection's
  // lifetime): it must not keep the transferred shell alive with it.
  // The client a load balancer named in a PROXY header, if it did (acceptor/proxy.ts).
  task.socket = adoptSocket(task.socket, task.peer);
  if (ctx) return serve(ctx, task);
  // A connection reaches a worker that has not joined yet only when none had
  // (the only worker died and its replacement is starting): it waits for the
  // join rather than being dropped, within a bound.
  const socket = task.socket;
  return new Promise<WorkerContext | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), JOIN_WAIT_MS);
    onJoined.push(() => {
      clearTimeout(timer);
      resolve(ctx);
    });
  }).then((c) => {
    if (c) return serve(c, task);
    socket.destroy();
    notJoined.hit({ waitedMs: JOIN_WAIT_MS });
    return 'refused';
  });
}

/** This worker's HTTP server (web clients), made on its first HTTP connection. */
let web: WebServer | undefined;
/** This worker's BOSH sessions (web/bosh.ts), made when it joins: requests for them may come from other workers. */
let bosh: BoshService | undefined;

function serve(c: WorkerContext, task: Task & { t: 'conn' }): Promise<string> {
  const { socket, directTls, kind } = task;
  if (kind === 'http') {
    // The TLS context of now for each connection: a reload replaces it.
    web ??= new WebServer({
      config: c.config,
      get secureContext() {
        return c.secureContext;
      },
      session: (transport) => void new Session(c, transport, false),
      bosh: (body, info, to) => bosh!.request(body, info, to),
      metrics: () => ops!.metrics(),
      readiness: () => ops!.readiness(),
      upload: c.upload,
    });
    return web.serve(socket, directTls, task.ports ?? {});
  }
  if (kind === 'component') return new ComponentStream(c, socket).done.then(() => 'closed');
  if (kind === 's2s') {
    // A peer server reached a node with federation off (a listener left from a configuration change): not served.
    if (!c.s2s) {
      socket.destroy();
      return Promise.resolve('refused');
    }
    return new ServerIn(c, c.s2s, socket, directTls).done.then(() => 'closed');
  }
  const session = new Session(c, socket, directTls);
  return session.done.then(() => 'closed');
}

