// The node's hub, in the main thread: it owns the node's session registry,
// wires the workers to each other (one MessageChannel per pair, so stanzas
// between workers never pass through here) and relays control messages.
//
// Workers come and go: piscina replaces one that dies. Every worker, at
// start or as a replacement, goes through admit(), the one place that gives
// a joining worker everything it needs (its index, the registry, the cluster
// state, a port to every other worker); lost() takes a dead one out and
// removes its sessions, whose end the survivors announce.
import { EventEmitter } from 'node:events';
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { MemoryRegistry } from '../registry/memory.ts';
import { encode, decode } from '../worker/wire.ts';
import type { FromHub, PeerPort, Peers, ToHub, Welcome } from '../worker/wire.ts';
import type { Departed } from '../presence/presence.ts';
import type { AdminTask } from '../admin/tasks.ts';
import { PepShared } from '../pep/remote.ts';
import type { Guard } from './guard.ts';
import { log } from '../log.ts';

export interface WorkerLink {
  index: number;
  port: MessagePort;
  threadId: number;
  /** Subscribed and serving: it said 'ready'. */
  ready: boolean;
}

/** The messages that describe the cluster's state as it stands: a joining worker gets the last of each. */
type Sticky = Extract<FromHub, { t: 'epoch' } | { t: 'judging' } | { t: 'lease' } | { t: 'http-ports' } | { t: 'reload' }>;

/**
 * Cluster mode: removes the records a dead worker left in Redis and returns
 * what announcing their end takes; undefined when there is nothing to do
 * (this node was fenced: whoever fenced it removed them). Throws when Redis
 * cannot be reached: it is tried again.
 */
export type DropWorker = (index: number) => Promise<Departed[] | undefined>;

/** How often the node's upkeep runs (archive retention, expired uploads). */
export const UPKEEP_EVERY_MS = 10 * 60_000;

/** What one run of the node's upkeep removed (a part that is off, or failed, is absent). */
export interface Upkept {
  /** The worker that ran it. */
  worker: number;
  /** Archived messages past XMPP_MAM_RETENTION_DAYS. */
  archive?: number;
  /** Upload slots past their life or never put, with their files. */
  uploads?: number;
}

/** 'joined', 'lost': a worker joined, died. 'removed': the sessions of a dead worker are out of the registry (how many). */
export class Hub extends EventEmitter<{ joined: [WorkerLink]; lost: [WorkerLink]; removed: [index: number, sessions: number] }> {
  readonly registry = new MemoryRegistry();
  /** A single node's shared PEP state: remote contacts' resources and verified caps (pep/remote.ts). */
  readonly pep = new PepShared();
  /** Joined workers by index; a replacement gets a new index, never a dead one's. */
  private readonly links = new Map<number, WorkerLink>();
  private readonly servingThreads = new Set<number>();
  private nextIndex = 0;
  private readonly state = new Map<Sticky['t'], Sticky>();
  private stoppedWaiters: (() => void)[] = [];
  private stopped = new Set<number>();
  /** Shutdown: workers whose sessions are closed; once all are, the streams to peer servers close. */
  private drained = new Set<number>();
  private peersClosed = false;
  private readyWaiters: { n: number; resolve: () => void }[] = [];
  /** Ends to announce once a worker can (none was ready when they came). */
  private departed: Departed[] = [];
  /** Dead nodes whose rooms no worker was ready to look for yet. */
  private deadNodes: string[] = [];
  private turn = 0;
  /** Workers that died, since start. */
  deaths = 0;
  private readonly dropWorker: DropWorker | undefined;
  /** Dead workers whose records are still in Redis (it was unreachable when they died). */
  private readonly undropped = new Set<number>();
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private shuttingDown = false;
  /** Metrics asked of the workers, by number: what takes each answer (collectMetrics). */
  private readonly collecting = new Map<number, (index: number, m: unknown) => void>();
  private collectSeq = 0;
  /** The node's /metrics text (metrics/node.ts), for a worker whose HTTP client asked for it. */
  metricsSource: (() => Promise<string>) | undefined;
  /** The upkeep under way: the worker running it, and what settles its promise. */
  private upkeepRun: { link: WorkerLink; done: Promise<Upkept>; settle: (r: Upkept | Error) => void } | undefined;
  private upkeepTimer: NodeJS.Timeout | undefined;
  /** The upkeep was due while no worker served: the first to serve runs it. */
  private upkeepOwed = false;
  /** Administration tasks asked of workers (admin/tasks.ts), by number: the worker asked, and who waits. */
  private readonly asked = new Map<number, { worker: number; resolve: (v: unknown) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  private askSeq = 0;

  /** The node's record of failed authentications and registrations, when the server keeps one. */
  readonly guard: Guard | undefined;

  constructor(dropWorker?: DropWorker, guard?: Guard) {
    super();
    this.dropWorker = dropWorker;
    this.guard = guard;
  }

  /**
   * Takes in a worker that said hello on its join channel: gives it, in one
   * message, everything it needs to serve, and links it with every other
   * worker. The same for the first workers and for replacements.
   */
  admit(port: MessagePort, threadId: number): WorkerLink {
    const link: WorkerLink = { index: this.nextIndex++, port, threadId, ready: false };
    const peers: PeerPort[] = [];
    for (const other of this.links.values()) {
      const { port1, port2 } = new MessageChannel();
      peers.push({ index: other.index, port: port1 });
      const theirs: Peers = { t: 'peers', peers: [{ index: link.index, port: port2 }] };
      other.port.postMessage(theirs, [port2]);
    }
    const welcome: Welcome = {
      t: 'welcome',
      index: link.index,
      // Only a single node's registry lives here; in a cluster it is empty.
      records: [...this.registry.all()],
      state: [...this.state.values()],
      peers,
    };
    port.postMessage(welcome, peers.map((p) => p.port));
    this.links.set(link.index, link);
    port.on('message', (raw: Uint8Array) => this.onMessage(link, decode<ToHub>(raw)));
    // Joined while the others were asked to close: it has nothing to close, but says so.
    if (this.shuttingDown) this.send(link, { t: 'shutdown' });
    this.emit('joined', link);
    return link;
  }

  /** Calls `fn` for every joined worker. */
  each(fn: (link: WorkerLink) => void): void {
    for (const link of this.links.values()) fn(link);
  }

  /** Whether the worker with this index is joined (not dead). */
  has(index: number): boolean {
    return this.links.has(index);
  }

  /**
   * Asks every serving worker for its metrics (prom-client JSON); resolves
   * with those that answered within `timeoutMs`, by index.
   */
  collectMetrics(timeoutMs: number): Promise<Map<number, unknown>> {
    const got = new Map<number, unknown>();
    const asked = [...this.links.values()].filter((l) => l.ready);
    if (asked.length === 0) return Promise.resolve(got);
    const q = ++this.collectSeq;
    const left = new Set(asked.map((l) => l.index));
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.collecting.delete(q);
        this.off('lost', onLost);
        resolve(got);
      };
      const timer = setTimeout(finish, timeoutMs).unref();
      const onLost = (link: WorkerLink) => {
        if (left.delete(link.index) && left.size === 0) finish();
      };
      this.on('lost', onLost);
      this.collecting.set(q, (index, m) => {
        if (!left.delete(index)) return;
        got.set(index, m);
        if (left.size === 0) finish();
      });
      for (const l of asked) this.send(l, { t: 'collect', q });
    });
  }

  /** Joined workers (serving or about to). */
  get workers(): number {
    return this.links.size;
  }

  /** Whether the worker on this thread has joined and serves. */
  serving(threadId: number): boolean {
    return this.servingThreads.has(threadId);
  }

  /**
   * A worker died: it is taken out, the others drop their port to it, and
   * its sessions are removed from the registry and announced unavailable
   * to their contacts by a surviving worker. Returns how many sessions it held
   * on a single node; undefined in a cluster, where they are removed from
   * Redis asynchronously (and counted in a log line of their own).
   */
  lost(link: WorkerLink): number | undefined {
    if (this.links.get(link.index) !== link) return 0;
    this.links.delete(link.index);
    this.servingThreads.delete(link.threadId);
    this.deaths++;
    // Its upkeep is not finished: the next period's goes to a living worker.
    if (this.upkeepRun?.link === link) this.upkeepRun.settle(new Error(`worker ${link.index} died during the upkeep`));
    link.port.close();
    for (const [q, a] of this.asked) {
      if (a.worker !== link.index) continue;
      this.asked.delete(q);
      clearTimeout(a.timer);
      a.reject(new Error(`worker ${link.index} died`));
    }
    this.emit('lost', link);
    this.broadcast({ t: 'peer-gone', index: link.index });
    // Shutdown waits for every worker: not for this one any more.
    this.stopped.delete(link.index);
    this.drained.delete(link.index);
    this.checkStopped();
    this.checkDrained();
    let sessions = 0;
    const gone: Departed[] = [];
    for (const rec of [...this.registry.all()]) {
      if (rec.worker !== link.index) continue;
      this.registry.remove(rec.jid, rec.sid);
      this.broadcast({ t: 'del', jid: rec.jid, sid: rec.sid });
      // Directed presence is tracked by the session itself on a single node: it died with it.
      gone.push({ jid: rec.jid, bare: rec.bare, available: rec.available, directed: [] });
      sessions++;
    }
    this.announce(gone);
    if (!this.dropWorker) {
      this.emit('removed', link.index, sessions);
      return sessions;
    }
    this.undropped.add(link.index);
    this.dropUndropped();
    return undefined;
  }

  /** Cluster mode: removes what dead workers left in Redis, until it is done. */
  private dropUndropped(): void {
    if (this.retry || this.closed) return;
    for (const index of [...this.undropped]) {
      this.dropWorker!(index).then(
        (gone) => {
          if (!this.undropped.delete(index)) return; // a retry did it too
          if (gone && gone.length > 0) {
            log.warn('removed the sessions of a worker that died', { worker: index, sessions: gone.length });
            this.announce(gone);
          }
          this.emit('removed', index, gone?.length ?? 0);
        },
        (err: unknown) => {
          log.warn('cannot yet remove the sessions of a worker that died', { worker: index, err: String(err) });
          this.retry ??= setTimeout(() => {
            this.retry = undefined;
            this.dropUndropped();
          }, 2000).unref();
        },
      );
    }
  }

  /**
   * Runs an administration task on one worker: the one given, or a ready
   * one in turn. Rejects when it fails there, when the worker dies, or
   * past `timeoutMs`.
   */
  ask(task: AdminTask, timeoutMs: number, index?: number): Promise<unknown> {
    const ready = [...this.links.values()].filter((l) => l.ready);
    const link = index === undefined ? ready[this.turn++ % Math.max(1, ready.length)] : this.links.get(index);
    if (!link) return Promise.reject(new Error('no worker is serving'));
    const q = ++this.askSeq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.asked.delete(q);
        reject(new Error(`worker ${link.index} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.asked.set(q, { worker: link.index, resolve, reject, timer });
      this.send(link, { t: 'admin', q, task });
    });
  }

  /** ask() of every serving worker at once: each one's value, or why it has none. */
  askAll(task: AdminTask, timeoutMs: number): Promise<{ worker: number; v?: unknown; err?: string }[]> {
    const ready = [...this.links.values()].filter((l) => l.ready);
    return Promise.all(ready.map((l) => this.ask(task, timeoutMs, l.index).then((v) => ({ worker: l.index, v }), (err: Error) => ({ worker: l.index, err: err.message }))));
  }

  /** Has a worker announce these sessions' end (RFC 6121 §4.5.2 on their behalf), now or once one is ready. */
  announce(list: Departed[]): void {
    if (list.length === 0) return;
    const ready = [...this.links.values()].filter((l) => l.ready);
    if (ready.length === 0) {
      this.departed.push(...list);
      return;
    }
    this.send(ready[this.turn++ % ready.length], { t: 'departed', list });
  }

  /**
   * Cluster mode: a node was judged dead (or this one took a new epoch):
   * every worker forgets what it knew of that node's room claims, and one
   * ready worker (or the first to be ready) looks for its rooms.
   */
  nodeDead(node: string): void {
    const ready = [...this.links.values()].filter((l) => l.ready);
    const scanner = ready.length > 0 ? ready[this.turn++ % ready.length] : undefined;
    for (const link of this.links.values()) this.send(link, { t: 'node-dead', node, scan: link === scanner });
    if (!scanner) this.deadNodes.push(node);
  }

  /**
   * The node's upkeep (archive retention, expired uploads) every `everyMs`,
   * and as soon as a worker serves. The hub drives it, not a worker of a
   * given number: a worker that dies is replaced under a new number, and
   * the upkeep goes on with whichever worker serves.
   */
  scheduleUpkeep(everyMs: number): void {
    clearInterval(this.upkeepTimer);
    this.upkeepTimer = setInterval(() => this.upkeepNow(), everyMs).unref();
    this.upkeepNow();
  }

  private upkeepNow(): void {
    this.upkeep().catch((err: unknown) => log.warn('upkeep not done; the next period tries again', { err: String(err) }));
  }

  /**
   * Has the ready worker with the lowest number run the upkeep now (the same
   * one each time while it lives); resolves with what it removed once it is
   * done. Undefined when no worker serves (the first that does runs it) or
   * the node is stopping. One run at a time: asked during one, that one.
   */
  upkeep(): Promise<Upkept | undefined> {
    if (this.upkeepRun) return this.upkeepRun.done;
    if (this.shuttingDown || this.closed) return Promise.resolve(undefined);
    let link: WorkerLink | undefined;
    for (const l of this.links.values()) if (l.ready && (!link || l.index < link.index)) link = l;
    if (!link) {
      this.upkeepOwed = true;
      return Promise.resolve(undefined);
    }
    let settle!: (r: Upkept | Error) => void;
    const done = new Promise<Upkept>((resolve, reject) => {
      settle = (r) => {
        this.upkeepRun = undefined;
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
    });
    this.upkeepRun = { link, done, settle };
    this.send(link, { t: 'upkeep' });
    return done;
  }

  private send(link: WorkerLink, msg: FromHub): void {
    link.port.postMessage(encode(msg));
  }

  /** To one worker, by index (tests: 'fault'). */
  sendTo(index: number, msg: FromHub): boolean {
    const link = this.links.get(index);
    if (!link) return false;
    this.send(link, msg);
    return true;
  }

  broadcast(msg: FromHub): void {
    const buf = encode(msg);
    for (const link of this.links.values()) link.port.postMessage(buf);
  }

  /** Broadcasts a change of the cluster's state, which workers joining later get too. */
  setState(msg: Sticky): void {
    this.state.set(msg.t, msg);
    this.broadcast(msg);
  }

  private onMessage(link: WorkerLink, msg: ToHub): void {
    switch (msg.t) {
      case 'bind': {
        const outcome = this.registry.bind(msg.req);
        if (outcome.ok) {
          if (outcome.replaced) this.broadcast({ t: 'del', jid: outcome.replaced.jid, sid: outcome.replaced.sid });
          this.broadcast({ t: 'put', rec: outcome.rec });
        }
        this.send(link, { t: 'bound', q: msg.q, outcome });
        break;
      }
      case 'unbind':
        if (this.registry.remove(msg.jid, msg.sid)) this.broadcast({ t: 'del', jid: msg.jid, sid: msg.sid });
        break;
      case 'presence': {
        const rec = this.registry.setPresence(msg.jid, msg.sid, msg.available, msg.priority);
        if (rec) this.broadcast({ t: 'put', rec });
        this.send(link, { t: 'ack', q: msg.q });
        break;
      }
      case 'move': {
        const rec = this.registry.move(msg.jid, msg.sid, msg.worker);
        if (rec) this.broadcast({ t: 'put', rec });
        this.send(link, { t: 'moved', q: msg.q, ok: rec !== undefined });
        break;
      }
      case 'sync':
        // Messages to one worker keep their order: the changes broadcast
        // before this ack reach its replica first.
        this.send(link, { t: 'ack', q: msg.q });
        break;
      case 'drained':
        this.drained.add(link.index);
        // One that joined during the shutdown, after the others were told.
        if (this.peersClosed) this.send(link, { t: 'close-s2s' });
        else this.checkDrained();
        break;
      case 'stopped':
        this.stopped.add(link.index);
        this.checkStopped();
        break;
      case 'hello':
        break;
      case 'pep': {
        const q = msg.q;
        this.pep.call(msg.m, msg.a).then(
          (v) => this.send(link, { t: 'pep', q, v: v ?? null }),
          (err: unknown) => {
            log.warn('PEP hub call failed', { m: msg.m, err: String(err) });
            this.send(link, { t: 'pep', q, v: null });
          },
        );
        break;
      }
      case 'guard': {
        let v: unknown = null;
        try {
          v = this.guard?.call(msg.m, msg.a) ?? null;
        } catch (err) {
          log.warn('guard call failed', { m: msg.m, err: String(err) });
        }
        if (msg.q !== 0) this.send(link, { t: 'guard', q: msg.q, v: v ?? null });
        break;
      }
      case 'removed':
        this.broadcast({ t: 'removed', notice: msg.notice });
        break;
      case 'collected':
        this.collecting.get(msg.q)?.(link.index, msg.m);
        break;
      case 'metrics': {
        const q = msg.q;
        const source = this.metricsSource;
        if (!source) {
          this.send(link, { t: 'metrics', q, error: 'no metrics here' });
          break;
        }
        source().then(
          (text) => this.send(link, { t: 'metrics', q, text }),
          (err: unknown) => {
            log.warn('metrics could not be gathered', { err: String(err) });
            this.send(link, { t: 'metrics', q, error: String(err) });
          },
        );
        break;
      }
      case 'upkept':
        if (this.upkeepRun?.link === link) this.upkeepRun.settle({ worker: link.index, ...msg.removed });
        break;
      case 'admin': {
        const a = this.asked.get(msg.q);
        if (!a) break; // answered too late
        this.asked.delete(msg.q);
        clearTimeout(a.timer);
        if (msg.err !== undefined) a.reject(new Error(msg.err));
        else a.resolve(msg.v);
        break;
      }
      case 'ready': {
        link.ready = true;
        this.servingThreads.add(link.threadId);
        const waiting = this.departed.splice(0);
        if (waiting.length > 0) this.send(link, { t: 'departed', list: waiting });
        for (const node of this.deadNodes.splice(0)) this.send(link, { t: 'node-dead', node, scan: true });
        if (this.upkeepOwed) {
          this.upkeepOwed = false;
          this.upkeepNow();
        }
        const serving = this.servingThreads.size;
        this.readyWaiters = this.readyWaiters.filter((w) => (w.n <= serving ? (w.resolve(), false) : true));
        break;
      }
      default:
        log.warn('unknown hub message', { message: msg });
    }
  }

  private checkDrained(): void {
    if (!this.shuttingDown || this.peersClosed || ![...this.links.keys()].every((i) => this.drained.has(i))) return;
    this.peersClosed = true;
    this.broadcast({ t: 'close-s2s' });
  }

  private checkStopped(): void {
    if (this.stoppedWaiters.length > 0 && [...this.links.keys()].every((i) => this.stopped.has(i))) for (const w of this.stoppedWaiters.splice(0)) w();
  }

  /** Resolves once `n` workers serve. */
  ready(n: number): Promise<void> {
    if (this.servingThreads.size >= n) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push({ n, resolve }));
  }

  /** Asks every worker to close its sessions; resolves when all have, or at the deadline. */
  shutdown(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      this.shuttingDown = true;
      if (this.links.size === 0) return resolve(true);
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.stoppedWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
      this.broadcast({ t: 'shutdown' });
    });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    clearInterval(this.upkeepTimer);
    for (const link of this.links.values()) link.port.close();
  }
}
