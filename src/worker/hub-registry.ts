// The worker's view of the node's registry: writes go to the main thread,
// which owns the authoritative MemoryRegistry and applies them one at a time
// (so binds are atomic); reads come from a local replica kept current by the
// changes the main thread broadcasts, so routing never waits on a round trip.
import type { MessagePort } from 'node:worker_threads';
import { MemoryRegistry } from '../registry/memory.ts';
import type { BindOutcome, BindRequest, SessionRecord, SessionRegistry } from '../registry/registry.ts';
import { ONLINE_PAGE } from '../registry/registry.ts';
import { encode } from './wire.ts';
import type { FromHub, ToHub } from './wire.ts';

export class HubRegistry implements SessionRegistry {
  private readonly replica = new MemoryRegistry();
  private readonly pending = new Map<number, (o: BindOutcome) => void>();
  private readonly acks = new Map<number, () => void>();
  private readonly moves = new Map<number, (ok: boolean) => void>();
  private nextQ = 1;
  private readonly hub: MessagePort;

  constructor(hub: MessagePort) {
    this.hub = hub;
  }

  private send(msg: ToHub): void {
    this.hub.postMessage(encode(msg));
  }

  /** Sends a message numbered `q`; resolves on the hub's ack of that number (the hub acks in order, after broadcasting what it applied). */
  private roundTrip(msg: (q: number) => ToHub): Promise<void> {
    const q = this.nextQ++;
    return new Promise((resolve) => {
      this.acks.set(q, resolve);
      this.send(msg(q));
    });
  }

  /** Applies a message from the hub; returns false if it was not a registry message. */
  onHubMessage(msg: FromHub): boolean {
    switch (msg.t) {
      case 'bound':
        this.pending.get(msg.q)?.(msg.outcome);
        this.pending.delete(msg.q);
        return true;
      case 'ack':
        this.acks.get(msg.q)?.();
        this.acks.delete(msg.q);
        return true;
      case 'moved':
        this.moves.get(msg.q)?.(msg.ok);
        this.moves.delete(msg.q);
        return true;
      case 'put':
        this.replica.put(msg.rec);
        return true;
      case 'del':
        this.replica.remove(msg.jid, msg.sid);
        return true;
      default:
        return false;
    }
  }

  bind(req: BindRequest): Promise<BindOutcome> {
    const q = this.nextQ++;
    return new Promise((resolve) => {
      this.pending.set(q, resolve);
      this.send({ t: 'bind', q, req });
    });
  }

  async unbind(jid: string, sid: string): Promise<void> {
    this.send({ t: 'unbind', jid, sid });
  }

  /** Resolves once the hub has applied the change and sent it to every worker. */
  async setPresence(jid: string, sid: string, available: boolean, priority: number): Promise<boolean> {
    await this.roundTrip((q) => ({ t: 'presence', q, jid, sid, available, priority }));
    return true;
  }

  /** One node: only the worker changes. */
  move(jid: string, sid: string, _node: string, worker: number): Promise<boolean> {
    const q = this.nextQ++;
    return new Promise((resolve) => {
      this.moves.set(q, resolve);
      this.send({ t: 'move', q, jid, sid, worker });
    });
  }

  async noteDirected(): Promise<void> {}

  async lookup(jid: string): Promise<SessionRecord | undefined> {
    return this.replica.lookup(jid);
  }

  /**
   * From the replica; `fresh`: after a round trip to the hub, so that every
   * bind and presence change the hub applied before it is in (the replica
   * may lag behind a change another worker was already told of).
   */
  async resources(bare: string, fresh = false): Promise<SessionRecord[]> {
    if (fresh) await this.roundTrip((q) => ({ t: 'sync', q }));
    return this.replica.resources(bare);
  }

  /** The node's records (the replica holds them all), after a round trip to the hub as for `fresh`, a page at a time. */
  async *onlinePages(pageSize = ONLINE_PAGE): AsyncGenerator<string[]> {
    await this.roundTrip((q) => ({ t: 'sync', q }));
    let page: string[] = [];
    for (const rec of this.replica.all()) {
      page.push(rec.jid);
      if (page.length < pageSize) continue;
      yield page;
      page = [];
    }
    if (page.length > 0) yield page;
  }
}
