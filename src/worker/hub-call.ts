// Calls from a worker to a service the hub (main thread) holds for the whole
// node: each call a message carrying a number, its answer a message
// carrying the same one. What HubGuard (worker/guard.ts) and HubPep
// (pep/remote.ts) share.

export class HubCaller {
  /** Sends a call to the hub; q 0 asks for no answer. */
  protected readonly post: (q: number, m: string, a: unknown[]) => void;
  private readonly waiting = new Map<number, (v: unknown) => void>();
  private next = 1;

  constructor(post: (q: number, m: string, a: unknown[]) => void) {
    this.post = post;
  }

  /** The hub's answer to call `q`. */
  answered(q: number, v: unknown): void {
    this.waiting.get(q)?.(v);
    this.waiting.delete(q);
  }

  /** Calls `m` with `a` on the hub's side; resolves with its answer. */
  protected call(m: string, a: unknown[]): Promise<unknown> {
    const q = this.next++;
    return new Promise((resolve) => {
      this.waiting.set(q, resolve);
      this.post(q, m, a);
    });
  }
}
