// The archive's write path, one per worker: messages are archived in
// batches, off the stanza's way. A message is stamped with its id and
// routed at once; its archive row joins a buffer that one write at a time
// empties (whatever arrived while a write was under way goes in the next),
// so a busy worker writes many rows per round trip and a quiet one writes
// each row at once. A write that fails is retried with a growing pause;
// rows are dropped only when the worker stops with the database still
// failing, and that is logged with their number. The buffer is bounded:
// past half of it, a sender's stream waits (admit) for writes to make room,
// which paces a burst to what the database takes; when no write completes
// for STALL_MS (the database is slow or away) nobody waits any more, the
// rest of the buffer fills, and then the message is refused (MAM module),
// so routing never stalls for long and nothing accepted goes unarchived
// without a word.
import type { ArchivedMessage, ArchiveStore } from './store.ts';
import { log } from '../log.ts';
import * as metrics from '../metrics/metrics.ts';

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;
/** At most one "buffer full" line in this long. */
const FULL_LOG_MS = 10_000;
/** Default bound on the bytes of stanzas a writer holds. */
export const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
/** A sender waits for room at most this long without a write completing; then the writer counts as stalled until one does. */
const STALL_MS = 1000;

export interface WriterOptions {
  store: ArchiveStore;
  /** Rows waiting at most. */
  maxBuffered: number;
  /** Bytes of stanzas waiting at most (default MAX_BUFFERED_BYTES): big messages fill it before the row count does. */
  maxBytes?: number;
  /** Rows per write at most. */
  batch: number;
}

export class ArchiveWriter {
  private readonly o: WriterOptions;
  private buffer: ArchivedMessage[] = [];
  private bytes = 0;
  /** Rows added and written so far: what flushed() waits for. */
  private added = 0;
  private written = 0;
  private writing = false;
  private scheduled = false;
  private retry: NodeJS.Timeout | undefined;
  private retryMs = 0;
  private waiters: { upTo: number; resolve: () => void }[] = [];
  /** Senders waiting for room (admit): told when a write completes. */
  private roomWaiters: ((progressed: boolean) => void)[] = [];
  /** No write completed while a sender waited STALL_MS: nobody waits until one does. */
  private stalled = false;
  /** The rows of the write under way. */
  private inFlight = new Set<ArchivedMessage>();
  private refused = 0;
  private fullLogged = 0;
  private closed = false;
  /** Closed and given up: no more writes, no more retries. */
  private stopped = false;

  constructor(o: WriterOptions) {
    this.o = o;
  }

  /** Rows waiting to be written. */
  get pending(): number {
    return this.buffer.length;
  }

  /**
   * Adds rows, first waiting (past half of the buffer) for writes to make
   * room while the database makes progress; false when the buffer is full
   * (the caller refuses the message).
   */
  async admit(rows: ArchivedMessage[]): Promise<boolean> {
    const high = Math.floor(this.o.maxBuffered / 2);
    const highBytes = this.maxBytes / 2;
    while (!this.closed && !this.stalled && (this.buffer.length + rows.length > high || this.bytes > highBytes)) {
      const progressed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.roomWaiters = this.roomWaiters.filter((w) => w !== done);
          resolve(false);
        }, STALL_MS);
        const done = (p: boolean) => {
          clearTimeout(timer);
          resolve(p);
        };
        this.roomWaiters.push(done);
      });
      if (!progressed) this.stalled = true;
    }
    return this.add(rows);
  }

  /** Adds rows at once; false when the buffer is full (the caller refuses the message). */
  add(rows: ArchivedMessage[]): boolean {
    const size = rows.reduce((n, r) => n + r.xml.length + r.body.length, 0);
    if (this.closed) return false;
    if (this.buffer.length + rows.length > this.o.maxBuffered || this.bytes + size > this.maxBytes) {
      this.refused += rows.length;
      metrics.archiveRefusedRows(rows.length);
      const now = Date.now();
      if (now - this.fullLogged >= FULL_LOG_MS) {
        this.fullLogged = now;
        log.error('message archive: the write buffer is full (the database is slow or unreachable); messages are refused', { buffered: this.buffer.length, refused: this.refused });
      }
      return false;
    }
    this.buffer.push(...rows);
    this.bytes += size;
    this.added += rows.length;
    this.schedule();
    return true;
  }

  private get maxBytes(): number {
    return this.o.maxBytes ?? MAX_BUFFERED_BYTES;
  }

  /** Forgets the owner's rows that wait (its account was removed); a write under way is left to end. */
  drop(owner: string): void {
    const keep: ArchivedMessage[] = [];
    for (const r of this.buffer) {
      if (r.owner !== owner || this.inFlight.has(r)) keep.push(r);
      else {
        this.bytes -= r.xml.length + r.body.length;
        // Settled, as far as flushed() is concerned.
        this.written++;
      }
    }
    this.buffer = keep;
    this.settle(false);
  }

  /** Resolves once what was added before the call is written, or a write of it failed (a query then reads what is there). */
  flushed(): Promise<void> {
    // Waiting out a failed write's pause would only delay a query that reads what is there.
    if (this.written >= this.added || this.retry) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ upTo: this.added, resolve }));
  }

  private schedule(): void {
    if (this.stopped || this.writing || this.scheduled || this.retry) return;
    this.scheduled = true;
    // The rows of this turn of the event loop go together.
    setImmediate(() => {
      this.scheduled = false;
      void this.write();
    });
  }

  private settle(all: boolean): void {
    const keep = [];
    for (const w of this.waiters) {
      if (all || this.written >= w.upTo) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  private async write(): Promise<void> {
    if (this.writing || this.buffer.length === 0) return;
    this.writing = true;
    const batch = this.buffer.slice(0, this.o.batch);
    this.inFlight = new Set(batch);
    try {
      await this.o.store.append(batch);
      metrics.archiveWritten(batch.length);
      // The batch is still the buffer's head: drop() leaves the rows of a write under way.
      this.buffer.splice(0, batch.length);
      this.bytes -= batch.reduce((n, r) => n + r.xml.length + r.body.length, 0);
      this.written += batch.length;
      if (this.retryMs > 0) log.info('message archive: writes succeed again', { buffered: this.buffer.length });
      this.retryMs = 0;
      this.stalled = false;
      this.settle(false);
      for (const w of this.roomWaiters.splice(0)) w(true);
    } catch (err) {
      this.retryMs = Math.min(Math.max(RETRY_MIN_MS, this.retryMs * 2), RETRY_MAX_MS);
      metrics.archiveFailed();
      log.warn('message archive: a write failed; retrying', { rows: batch.length, buffered: this.buffer.length, retryMs: this.retryMs, err: String(err) });
      this.settle(true);
      if (!this.stopped) this.retry = setTimeout(() => {
        this.retry = undefined;
        this.schedule();
      }, this.retryMs);
    } finally {
      this.writing = false;
      this.inFlight = new Set();
    }
    if (this.buffer.length > 0) this.schedule();
  }

  /**
   * Stops taking rows and writes what waits, for up to `timeoutMs`; what
   * could not be written by then is logged with its number.
   */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    const deadline = Date.now() + timeoutMs;
    while (this.buffer.length > 0 && Date.now() < deadline) {
      if (this.retry) {
        // A write failed: its pause, then again now rather than by the timer.
        clearTimeout(this.retry);
        this.retry = undefined;
        await new Promise((r) => setTimeout(r, Math.min(this.retryMs, Math.max(0, deadline - Date.now()))));
      }
      // A write the database never answers must not hold the stop past its deadline.
      const left = new Promise<void>((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref());
      await Promise.race([this.writing ? this.flushed() : this.write(), left]);
    }
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
    if (this.buffer.length > 0) log.error('message archive: the worker stops with messages not archived (the database failed)', { lost: this.buffer.length });
    this.settle(true);
  }
}
