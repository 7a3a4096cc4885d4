// Delivery of a user's offline messages (XEP-0160) to one session, paced by
// the client's reading: a batch is fetched only when the session's output
// is low, and each message is removed from the store once it was written to
// the socket, so a connection that drops mid-way loses nothing (what was not
// written stays stored for the next login). The session claims the queue
// while it delivers, so that two resources becoming available at once do
// not both deliver it (XEP-0160: the first one gets it).
import type { OfflineStore } from './store.ts';
import type { Out, Paced } from '../session/session.ts';
import { log } from '../log.ts';

/** Messages fetched at a time. */
const BATCH = 16;
/** How long a claim lasts without being renewed (each fetch renews it). */
export const CLAIM_MS = 60_000;

export class OfflineDelivery implements Paced {
  private readonly store: OfflineStore;
  private readonly user: string;
  private readonly owner: string;
  private after = '';
  /** Messages handed to the session and not yet written (or failed). */
  private outstanding = 0;
  /** Messages the client has (written, or acknowledged with XEP-0198), to remove from the store. */
  private written: string[] = [];
  /** Messages handed out that the client does not have yet (with XEP-0198: not acknowledged). */
  private pending = 0;
  /** Everything was read and written: the claim goes once the client has it all (`pending`), or the session goes. */
  private finished = false;
  private removing: Promise<void> | undefined;
  private stopFlag = false;
  private released: Promise<void> | undefined;
  /** The claim may be this session's: a fetch took it, or is under way, or failed without saying. */
  private mayHold = false;
  private settled: (() => void) | undefined;
  /** Another session held the claim: it delivers them. */
  claimedByOther = false;
  /** The store failed: what is left waits for another try. */
  failed = false;
  private readonly track: (work: () => Promise<void>) => void;
  /** Whether the session went away before the end. */
  get stopped(): boolean {
    return this.stopFlag;
  }
  /** Called once the claim is released (the session may start another delivery after that). */
  onEnd: (() => void) | undefined;

  /** Stored messages the user must not get any more (from a JID it blocked since, XEP-0191 §5.3): removed unseen. */
  private readonly skip: ((xml: string) => boolean | Promise<boolean>) | undefined;

  /** `track`: work the worker must see done before its stores close (the claim's release). */
  constructor(store: OfflineStore, user: string, owner: string, track: (work: () => Promise<void>) => void = (w) => void w(), skip?: (xml: string) => boolean | Promise<boolean>) {
    this.store = store;
    this.user = user;
    this.owner = owner;
    this.track = track;
    this.skip = skip;
  }

  async next(): Promise<Out[] | null> {
    try {
      return await this.read();
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  private async read(): Promise<Out[] | null> {
    if (this.stopFlag) return null;
    await this.removeWritten();
    // Gone meanwhile: its release may already be on its way, and a fetch
    // after it would claim the queue again for a session that is no more
    // (the next login would wait for the claim to lapse).
    if (this.stopFlag) return null;
    const held = this.mayHold;
    this.mayHold = true;
    const batch = await this.store.fetch(this.user, this.owner, this.after, BATCH, CLAIM_MS);
    // An empty queue is not claimed (OfflineStore.fetch), nor one another session holds.
    if (!held && (batch === null || batch.length === 0)) this.mayHold = false;
    if (this.stopFlag) return null; // gone while reading: what was read stays stored
    if (batch === null) this.claimedByOther = true;
    if (batch === null || batch.length === 0) {
      // null: another session of the account delivers them. Done once what
      // was handed out is written and removed (or the session is gone).
      if (this.outstanding > 0 && batch !== null) await new Promise<void>((r) => (this.settled = r));
      // Acknowledgements may be outstanding: the session goes on meanwhile,
      // and the claim stays, or the messages would be read again.
      if (this.pending > 0 && !this.stopFlag) this.finished = true;
      else await this.release();
      return null;
    }
    this.after = batch[batch.length - 1].id;
    const kept = [];
    for (const m of batch) {
      // Taken as delivered: removed with what the client got.
      if (this.skip && (await this.skip(m.xml))) this.written.push(m.id);
      else kept.push(m);
    }
    if (kept.length === 0) return this.read();
    this.outstanding += kept.length;
    this.pending += kept.length;
    return kept.map((m) => ({
      xml: m.xml,
      stored: m.id,
      // Removed once the client has it; the next batch comes once it is written.
      delivered: () => {
        this.written.push(m.id);
        this.pending--;
        if (this.finished && this.pending === 0) void this.release();
        else void this.removeWritten();
      },
      written: () => this.settle(),
    }));
  }

  /** One message handed out was written. */
  private settle(): void {
    this.outstanding--;
    if (this.outstanding === 0) this.settled?.();
  }

  /** Removes what was written, a batch at a time. */
  private removeWritten(): Promise<void> {
    if (this.removing) return this.removing.then(() => this.removeWritten());
    if (this.written.length === 0) return Promise.resolve();
    const ids = this.written.splice(0);
    this.removing = this.store
      .remove(this.user, ids)
      .catch((err: unknown) => log.warn('offline messages delivered but not removed (they will come again)', { user: this.user, n: ids.length, err: String(err) }))
      .finally(() => (this.removing = undefined));
    return this.removing;
  }

  /** Removes what was written, then lets the claim go (if it may be this session's: a login with nothing waiting costs one read); once. */
  private release(): Promise<void> {
    if (!this.released) {
      this.released = this.removeWritten()
        .then(() => (this.mayHold ? this.store.release(this.user, this.owner) : undefined))
        .catch((err: unknown) => log.warn('offline claim not released (it lapses by itself)', { user: this.user, err: String(err) }))
        .finally(() => {
          try {
            this.onEnd?.();
          } catch (err) {
            log.warn('after an offline delivery', { user: this.user, err: String(err) });
          }
        });
      const done = this.released;
      this.track(() => done);
    }
    return this.released;
  }

  /** Done reading and writing, waiting only for the client's acknowledgements (XEP-0198). */
  get awaitingAcks(): boolean {
    return this.finished && this.pending > 0;
  }

  /** The session is gone: every write has completed or failed; what was not written stays stored. */
  stop(): Promise<void> {
    this.stopFlag = true;
    this.settled?.();
    return this.release();
  }
}
