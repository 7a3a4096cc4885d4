// Password hashing in flight, bounded per worker. PBKDF2 (RFC 8018) runs on
// libuv's thread pool, which every thread of the process shares with DNS
// lookups and file access: unbounded, a storm of PLAIN logins or
// registrations queues thousands of hashings there and takes the cores
// from the established sessions. A worker runs XMPP_HASH_CONCURRENCY at
// once; up to XMPP_HASH_QUEUE more wait, the logins of accounts with a
// session waiting to be resumed (XEP-0198) first, then other logins, then
// registrations and password changes; past that a job is refused at once
// (Saturated), or takes the place of the latest of a lower class, for
// the stream to say so (resource-constraint) instead of letting the client
// time out.

/** The worker's queue of hashings is full: the job was not run. */
export class Saturated extends Error {
  override name = 'Saturated';
}

/** What a hashing is for, first served first: a login that will likely resume a session, another login, a change (registration, new password). */
export type HashPriority = 'resume' | 'login' | 'change';
const ORDER: readonly HashPriority[] = ['resume', 'login', 'change'];

interface Waiting {
  start: () => void;
  refuse: () => void;
}

export class HashGate {
  private readonly concurrency: number;
  private readonly queueMax: number;
  private readonly onRefused: () => void;
  private running = 0;
  private readonly queues: Record<HashPriority, Waiting[]> = { resume: [], login: [], change: [] };

  constructor(concurrency: number, queueMax: number, onRefused: () => void = () => {}) {
    this.concurrency = concurrency;
    this.queueMax = queueMax;
    this.onRefused = onRefused;
  }

  /** Jobs waiting now. */
  get waiting(): number {
    return this.queues.resume.length + this.queues.login.length + this.queues.change.length;
  }

  get active(): number {
    return this.running;
  }

  /** Runs `fn` once a place is free; throws Saturated when none is and the queue is full. */
  async run<T>(priority: HashPriority, fn: () => Promise<T>): Promise<T> {
    // A job that waited is given its place by startNext.
    if (this.running >= this.concurrency) await this.wait(priority);
    else this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.startNext();
    }
  }

  private wait(priority: HashPriority): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w: Waiting = { start: resolve, refuse: () => reject(new Saturated('too many password hashings waiting')) };
      if (this.waiting >= this.queueMax) {
        // It takes the place of the latest waiting job of the lowest class below its own, if any; otherwise it is refused.
        const lower = ORDER.slice(ORDER.indexOf(priority) + 1).reverse();
        const bumped = lower.map((p) => this.queues[p]).find((q) => q.length > 0)?.pop();
        this.onRefused();
        if (!bumped) return w.refuse();
        bumped.refuse();
      }
      this.queues[priority].push(w);
    });
  }

  private startNext(): void {
    if (this.running >= this.concurrency) return;
    const next = this.queues.resume.shift() ?? this.queues.login.shift() ?? this.queues.change.shift();
    if (!next) return;
    this.running++;
    next.start();
  }
}
