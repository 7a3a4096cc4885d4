// One line of JSON per event on stderr, through pino: easy to read in docker
// logs and journald, and to grep. A line reads
//   {"level":"info","t":"2026-…Z","thread":0,"sid":"…","user":"alice","msg":"authenticated"}
// level as a word (not pino's number: log readers and tests match on it), t
// the ISO time, thread the worker thread (0: the main thread), then the
// logger's bindings (a stream's sid: child()), the event's fields, msg.
//
// Every thread has its own logger writing to its own process.stderr: a
// worker thread's lines go through the main thread whole, so that lines of
// different threads never interleave within a line (no pino transport, no
// extra thread). Fields named like credentials are redacted wherever they
// appear at the top level or one level down (REDACTED).
import { threadId } from 'node:worker_threads';
import { pino } from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** What the level filter lets through, in this thread; setLogLevel changes it for every logger of the thread, children included. */
let threshold = ORDER[(process.env.XMPP_LOG_LEVEL as Level) ?? 'info'] ?? ORDER.info;

export function setLogLevel(level: Level): void {
  threshold = ORDER[level] ?? threshold;
}

/**
 * Field names whose values are credentials, never printed: passwords, SASL
 * payloads, secrets and tokens (a URL field keeps all but its password).
 */
export const REDACTED = ['password', 'passwd', 'pass', 'newPassword', 'secret', 's2sSecret', 'token', 'authorization', 'auth', 'credentials', 'payload', 'response', 'privateKey', 'components', 'url', 'redisUrl', 'databaseUrl'];

/** A URL with its password masked; any other credential replaced whole. */
function censor(value: unknown, path: string[]): unknown {
  const key = path[path.length - 1];
  if (key === 'url' || key === 'redisUrl' || key === 'databaseUrl') return typeof value === 'string' ? value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, '$1***@') : value;
  return '[redacted]';
}

const root = pino(
  {
    // The filter is ours (threshold), so that a level change reaches the children made before it.
    level: 'debug',
    base: { thread: threadId },
    timestamp: () => `,"t":"${new Date().toISOString()}"`,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: [...REDACTED, ...REDACTED.map((k) => `*.${k}`)], censor },
  },
  process.stderr,
);

/**
 * log.debug/info/warn/error(msg, fields): the methods are bound (they are
 * passed around as callbacks: collectWhenIdle(ms, log.debug)).
 */
export class Logger {
  private readonly p: pino.Logger;

  constructor(p: pino.Logger) {
    this.p = p;
  }

  readonly debug = (msg: string, fields?: Fields): void => {
    if (threshold <= ORDER.debug) this.p.debug(fields ?? {}, msg);
  };

  readonly info = (msg: string, fields?: Fields): void => {
    if (threshold <= ORDER.info) this.p.info(fields ?? {}, msg);
  };

  readonly warn = (msg: string, fields?: Fields): void => {
    if (threshold <= ORDER.warn) this.p.warn(fields ?? {}, msg);
  };

  readonly error = (msg: string, fields?: Fields): void => {
    if (threshold <= ORDER.error) this.p.error(fields ?? {}, msg);
  };

  /** A logger whose every line carries `bindings` (a stream's sid), filtered by the thread's level like the rest. */
  child(bindings: Fields): Logger {
    return new Logger(this.p.child(bindings));
  }

  /** By level name. */
  at(level: Level): (msg: string, fields?: Fields) => void {
    return this[level];
  }
}

export const log = new Logger(root);

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
  private fields: Fields | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(level: Level, msg: string, intervalMs = 10_000) {
    this.level = level;
    this.msg = msg;
    this.intervalMs = intervalMs;
  }

  /** Counts one event; `fields` describe it (the latest ones go in a summary line). */
  hit(fields?: Fields): void {
    this.total++;
    const now = performance.now();
    if (now - this.last >= this.intervalMs) {
      this.last = now;
      log.at(this.level)(this.msg, { ...fields, count: 1, total: this.total });
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
    log.at(this.level)(this.msg, { ...this.fields, count: this.unlogged, total: this.total });
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
