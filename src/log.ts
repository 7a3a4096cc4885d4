// One line of JSON per event on stderr: easy to read in docker logs and to grep.
import { threadId } from 'node:worker_threads';

type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold = ORDER[(process.env.XMPP_LOG_LEVEL as Level) ?? 'info'] ?? ORDER.info;

export function setLogLevel(level: Level): void {
  threshold = ORDER[level];
}

function emit(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (ORDER[level] < threshold) return;
  const line = JSON.stringify({ t: new Date().toISOString(), level, thread: threadId, msg, ...fields });
  process.stderr.write(line + '\n');
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => emit('debug', msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => emit('info', msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => emit('warn', msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => emit('error', msg, fields),
};

/**
 * One kind of event that may come in a flood (refused connections, a
 * failing timer): the first is logged at once, the rest are counted and
 * summed up in at most one line per interval, so that a flood cannot fill
 * the disk or keep the thread busy writing. `total` counts every event.
 */
export class Throttled {
  total = 0;
  private readonly level: Level;
  private readonly msg: string;
  private readonly intervalMs: number;
  private last = -Infinity;
  private unlogged = 0;
  private fields: Record<string, unknown> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(level: Level, msg: string, intervalMs = 10_000) {
    this.level = level;
    this.msg = msg;
    this.intervalMs = intervalMs;
  }

  /** Counts one event; `fields` describe it (the latest ones go in a summary line). */
  hit(fields?: Record<string, unknown>): void {
    this.total++;
    const now = performance.now();
    if (now - this.last >= this.intervalMs) {
      this.last = now;
      emit(this.level, this.msg, { ...fields, count: 1, total: this.total });
      return;
    }
    this.unlogged++;
    this.fields = fields;
    this.timer ??= setTimeout(() => this.flush(), this.last + this.intervalMs - now).unref();
  }

  private flush(): void {
    this.timer = undefined;
    if (this.unlogged === 0) return;
    this.last = performance.now();
    emit(this.level, this.msg, { ...this.fields, count: this.unlogged, total: this.total });
    this.unlogged = 0;
    this.fields = undefined;
  }
}

const failures = new Map<string, Throttled>();

/**
 * A timer or housekeeping callback that never throws out of its thread: a
 * failure (EMFILE, ENOMEM and the like from a system call, or a bug) is
 * logged, at a bounded rate, and the next run tries again. An uncaught
 * exception would end a worker thread with all its connections, or in the
 * main thread the whole process.
 */
export function guarded(what: string, fn: () => unknown): () => void {
  const fail = (err: unknown) => {
    let t = failures.get(what);
    if (!t) failures.set(what, (t = new Throttled('error', 'housekeeping failed')));
    t.hit({ what, err: String(err), code: (err as NodeJS.ErrnoException | undefined)?.code });
  };
  return () => {
    try {
      const r = fn();
      if (r instanceof Promise) r.catch(fail);
    } catch (err) {
      fail(err);
    }
  };
}
