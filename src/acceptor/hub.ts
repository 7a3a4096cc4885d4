// The node's hub, in the main thread: it owns the node's session registry,
// wires the workers to each other (one MessageChannel per pair, so stanzas
// between workers never pass through here) and relays control messages.
import { MessageChannel } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { MemoryRegistry } from '../registry/memory.ts';
import { encode, decode } from '../worker/wire.ts';
import type { FromHub, ToHub } from '../worker/wire.ts';
import { log } from '../log.ts';

interface WorkerLink {
  index: number;
  port: MessagePort;
  threadId: number;
}

export class Hub {
  readonly registry = new MemoryRegistry();
  private readonly links: WorkerLink[] = [];
  private stoppedWaiters: (() => void)[] = [];
  private stopped = new Set<number>();
  private readyCount = 0;
  private readyWaiters: (() => void)[] = [];
  private turn = 0;

  /** Adopts the hub end of a worker's join channel once the worker said hello. */
  adopt(port: MessagePort, threadId: number): WorkerLink {
    const link: WorkerLink = { index: this.links.length, port, threadId };
    this.links.push(link);
    port.on('message', (raw: Uint8Array) => this.onMessage(link, decode<ToHub>(raw)));
    return link;
  }

  get workers(): number {
    return this.links.length;
  }

  /** Gives every worker its index and a direct port to every other worker. */
  wire(): void {
    const n = this.links.length;
    const peers: { index: number; port: MessagePort }[][] = this.links.map(() => []);
    for (let i = 0; i < n; i++)
      for (let j = i + 1; j < n; j++) {
        const { port1, port2 } = new MessageChannel();
        peers[i].push({ index: j, port: port1 });
        peers[j].push({ index: i, port: port2 });
      }
    for (const link of this.links) {
      this.send(link, { t: 'welcome', index: link.index, workers: n });
      const list = peers[link.index];
      link.port.postMessage({ t: 'peers', peers: list }, list.map((p) => p.port));
    }
  }

  private send(link: WorkerLink, msg: FromHub): void {
    link.port.postMessage(encode(msg));
  }

  /** To one worker, taking turns. */
  toAny(msg: FromHub): void {
    if (this.links.length === 0) return;
    this.send(this.links[this.turn++ % this.links.length], msg);
  }

  broadcast(msg: FromHub): void {
    const buf = encode(msg);
    for (const link of this.links) link.port.postMessage(buf);
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
      case 'stopped':
        this.stopped.add(link.index);
        if (this.stopped.size === this.links.length) for (const w of this.stoppedWaiters.splice(0)) w();
        break;
      case 'hello':
        break;
      case 'removed':
        this.broadcast({ t: 'removed', notice: msg.notice });
        break;
      case 'ready':
        if (++this.readyCount === this.links.length) for (const w of this.readyWaiters.splice(0)) w();
        break;
      default:
        log.warn('unknown hub message', { msg });
    }
  }

  /** Resolves once every worker can take connections. */
  ready(): Promise<void> {
    if (this.readyCount === this.links.length) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  /** Asks every worker to close its sessions; resolves when all have, or at the deadline. */
  shutdown(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.links.length === 0) return resolve(true);
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.stoppedWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
      this.broadcast({ t: 'shutdown' });
    });
  }

  close(): void {
    for (const link of this.links) link.port.close();
  }
}
