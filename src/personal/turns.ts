// One change at a time per account: what keeps two copies of an account's
// data in step (modules/avatar.ts, modules/bookmarks.ts) reads one and
// writes the other; two such runs for one account at once on a worker
// would each read what the other is about to replace. Nothing is kept for
// an account once its last run is over.
export class Turns {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every run for `key` queued before it has ended (whatever their outcome); its outcome. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    const run = before.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }

  /** Accounts with a run queued or under way. */
  get size(): number {
    return this.tails.size;
  }
}
