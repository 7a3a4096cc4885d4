// A worker's view of the node's Guard (acceptor/guard.ts): each call a
// message to the main thread and its answer, so that every worker of the
// node counts failed authentications and registrations in one place.
import { HubCaller } from './hub-call.ts';

/** What the streams ask of the node's guard. */
export interface NodeGuard {
  /** Before an exchange: how long this address is still refused (0: it may try). */
  check(address: string): Promise<number>;
  /** Once the username is known: how long attempts as `user` from this address are still refused (left 0: go on), and whether it has a session here waiting to be resumed. */
  admit(address: string, user: string): Promise<{ left: number; resuming: boolean }>;
  /** A session of `user` started (true) or stopped (false) waiting to be resumed (XEP-0198). */
  detached(user: string, waiting: boolean): void;
  /** A failed authentication: how long to wait before answering it. */
  failed(address: string, user: string | null): Promise<number>;
  succeeded(address: string, user: string): void;
  /** An in-band registration: whether the rate lets it through. */
  register(address: string): Promise<boolean>;
  /** Counts an event (GuardCounters). */
  count(name: 'hashRefused' | 'readsExceeded'): void;
}

export class HubGuard extends HubCaller implements NodeGuard {
  async check(address: string): Promise<number> {
    return Number(await this.call('check', [address]));
  }

  async admit(address: string, user: string): Promise<{ left: number; resuming: boolean }> {
    const v = (await this.call('admit', [address, user])) as { left?: number; resuming?: boolean } | null;
    return { left: Number(v?.left ?? 0), resuming: v?.resuming === true };
  }

  detached(user: string, waiting: boolean): void {
    this.post(0, 'detached', [user, waiting]);
  }

  async failed(address: string, user: string | null): Promise<number> {
    return Number(await this.call('failed', [address, user]));
  }

  succeeded(address: string, user: string): void {
    this.post(0, 'succeeded', [address, user]);
  }

  async register(address: string): Promise<boolean> {
    // null: the hub keeps no record (a hub made without one, in tests).
    return (await this.call('register', [address])) !== false;
  }

  count(name: 'hashRefused' | 'readsExceeded'): void {
    this.post(0, 'count', [name]);
  }
}
