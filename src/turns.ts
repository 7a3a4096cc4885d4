// One run at a time per key, in the order asked: an account's data kept in
// step in two copies (modules/avatar.ts, modules/bookmarks.ts: two runs at
// once would each read what the other is about to replace), a user's
// offline queue on PostgreSQL (offline/postgres.ts: pushes in the order
// given), a user's presence to the pubsub service (modules/pubsub.ts).
// Nothing is kept for a key once its last run is over.
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
}
