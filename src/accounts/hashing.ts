// Password hashing in flight, bounded per worker. PBKDF2 (RFC 8018) runs on
// libuv's thread pool, which every thread of the process shares with DNS
// lookups and file access: unbounded, a storm of PLAIN logins or
// registrations queues thousands of hashings there and takes the cores
// from the established sessions. A worker runs XMPP_HASH_CONCURRENCY at
// once; up to XMPP_HASH_QUEUE more wait, logins ahead of registrations and
// password changes; past that a job is refused at once (Saturated), for
// the stream to say so (resource-constraint) instead of letting the client
// time out.

/** The worker's queue of hashings is full: the job was not run. */
export class Saturated extends Error {
  override name = 'Saturated';
}

/** What a hashing is for: a login waits ahead of a change (registration, new password). */
export type HashPriority = 'login' | 'change';

interface Waiting {
  start: () => void;
  refuse: () => void;
}

export class HashGate {
  private readonly concurrency: number;
  private readonly queueMax: number;
  private readonly onRefused: () => void;
  private running = 0;
  private readonly logins: Waiting[] = [];
  private readonly changes: Waiting[] = [];

  constructor(concurrency: number, queueMax: number, onRefused: () => void = () => {}) {
    this.concurrency = concurrency;
    this.queueMax = queueMax;
    this.onRefused = onRefused;
  }

  /** Jobs waiting now. */
  get waiting(): number {
    return this.logins.length + this.changes.length;
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
        // A login takes the place of the latest change waiting, if any; otherwise it is refused.
        const bumped = priority === 'login' ? this.changes.pop() : undefined;
        this.onRefused();
        if (!bumped) return w.refuse();
        bumped.refuse();
      }
      (priority === 'login' ? this.logins : this.changes).push(w);
    });
  }

  private startNext(): void {
    if (this.running >= this.concurrency) return;
    const next = this.logins.shift() ?? this.changes.shift();
    if (!next) return;
    this.running++;
    next.start();
  }
}
