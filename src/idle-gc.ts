// Gives memory back after a burst. V8 grows a thread's young generation (up
// to tens of MB) and keeps the garbage of a burst (TLS handshakes, SASL,
// binds) for as long as nothing more is allocated, and a server holding idle
// connections allocates next to nothing: after a login storm the process would
// keep its peak footprint indefinitely, with the native memory (sockets, TLS
// state) that dead objects still hold. So each thread (the acceptor and every
// worker) watches its event loop, and once it has been quiet for a whole
// period after doing work, runs one full collection, after which V8 also
// shrinks the young generation again. A busy thread is left to V8 alone.
//
// Collecting frees the native memory dead objects held (sockets, TLS state,
// buffers), but glibc keeps freed memory that lies between live allocations
// (most of it, after thousands of handshakes interleaved with the sessions
// that stay): so where the C library has malloc_trim, the next quiet period
// after a collection hands those free pages back to the system as well. It
// waits for the whole process to be quiet, not only the thread: a trim walks
// every thread's heap under that heap's lock.
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { EventLoopUtilization } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { guarded } from './log.ts';

/** Event-loop utilisation below which a period counts as quiet. */
const QUIET_ELU = 0.05;

/**
 * glibc's malloc_trim through node:ffi, or undefined where either is missing
 * (musl, macOS, Node without FFI or run with --no-experimental-ffi). FFI is
 * experimental in Node 26: its one-time warning is not printed for this use,
 * a single call taking no pointers.
 */
async function loadMallocTrim(): Promise<((pad: bigint) => number) | undefined> {
  const emitWarning = process.emitWarning;
  process.emitWarning = function (this: unknown, warning: string | Error, ...rest: unknown[]) {
    if (String(warning).includes('FFI')) return;
    return (emitWarning as (...a: unknown[]) => void).call(this, warning, ...rest);
  } as typeof process.emitWarning;
  try {
    const ffi = await import('node:ffi');
    const { functions } = ffi.dlopen(null, { malloc_trim: { arguments: ['u64'], return: 'i32' } });
    return functions.malloc_trim as (pad: bigint) => number;
  } catch {
    return undefined;
  } finally {
    process.emitWarning = emitWarning;
  }
}

const mallocTrim = await loadMallocTrim();

/** Whether this platform can hand freed native memory back (the collector then emits 'trim'). */
export const canTrim = mallocTrim !== undefined;

export interface Trimmed {
  ms: number;
  rssBefore: number;
  rssAfter: number;
}

export interface Collected {
  /** How long the collection paused the thread. */
  ms: number;
  heapBefore: number;
  heapAfter: number;
}

/**
 * V8's gc extension. The flag is process-wide and read when a context is
 * created, so it is set and left set: switching it back off raced with the
 * other threads doing the same at start (one thread's "off" landing between
 * another's "on" and its new context: "gc is not defined"). Contexts created
 * afterwards (worker threads started later) see a global gc too.
 */
function gcFunction(): (options?: object) => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as (options?: object) => void;
}

/**
 * The heap in use, from V8 alone: process.memoryUsage() also reads the
 * resident set size from /proc/self/stat, which needs a file descriptor and
 * throws EMFILE when the process has none left.
 */
const heapUsed = (): number => v8.getHeapStatistics().used_heap_size;

/** The resident set size, NaN when it cannot be read (no descriptor left for /proc). */
function rss(): number {
  try {
    return process.memoryUsage.rss();
  } catch {
    return NaN;
  }
}

/**
 * Events: 'check' (utilisation of the period just ended), 'collect'
 * (Collected), 'trim' (Trimmed: where canTrim, the first period after a
 * collection in which this thread and the whole process were quiet). Its
 * timer does not keep the thread alive.
 */
export class IdleCollector extends EventEmitter<{ check: [number]; collect: [Collected]; trim: [Trimmed] }> {
  private readonly timer: NodeJS.Timeout;
  private readonly gc = gcFunction();
  // Where the current period started: this thread's event-loop time, and the
  // CPU time of the whole process (all threads) with when it was read.
  private last!: EventLoopUtilization;
  private cpu!: NodeJS.CpuUsage;
  private cpuAt!: number;
  /** Work was done since the last collection. */
  private dirty = true;
  /** A collection ran in the last period: trim if this one was quiet too. */
  private collected = false;

  constructor(periodMs: number) {
    super();
    this.mark();
    // Out of descriptors or memory, a call here can throw (reading RSS opens
    // /proc/self/stat): the collection is skipped and the thread lives on.
    this.timer = setInterval(guarded('idle collector', () => this.check()), periodMs).unref();
  }

  /** Starts a new period (also after the collector's own work, which is not the application's). */
  private mark(): void {
    this.last = performance.eventLoopUtilization();
    this.cpu = process.cpuUsage();
    this.cpuAt = performance.now();
  }

  private check(): void {
    const elu = performance.eventLoopUtilization(this.last).utilization;
    const used = process.cpuUsage(this.cpu);
    const processQuiet = used.user + used.system < (performance.now() - this.cpuAt) * 1000 * QUIET_ELU;
    this.mark();
    this.emit('check', elu);
    if (elu >= QUIET_ELU) {
      this.dirty = true;
      this.collected = false;
      return;
    }
    if (this.collected && processQuiet) {
      // A period later, so that the native memory released by the
      // collection's finalizers (which run after it) is free by now.
      this.collected = false;
      this.trim();
    }
    if (!this.dirty) return;
    this.dirty = false;
    const heapBefore = heapUsed();
    const t = performance.now();
    // 'last-resort': the collection V8 runs under memory pressure (repeated
    // until nothing more is freed, with compaction and the young generation
    // shrunk); a regular full one often leaves the young generation at its
    // burst size.
    this.gc({ type: 'major', flavor: 'last-resort' });
    const ms = performance.now() - t;
    this.emit('collect', { ms, heapBefore, heapAfter: heapUsed() });
    this.collected = canTrim;
    this.mark();
  }

  private trim(): void {
    const rssBefore = rss();
    const t = performance.now();
    mallocTrim!(0n);
    const ms = performance.now() - t;
    this.emit('trim', { ms, rssBefore, rssAfter: rss() });
    this.mark();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** The collector a server thread runs (periodMs 0: none), logging each collection at debug level. */
export function collectWhenIdle(periodMs: number, log: (msg: string, fields: Record<string, unknown>) => void): IdleCollector | undefined {
  if (periodMs === 0) return undefined;
  const c = new IdleCollector(periodMs);
  const mb = (n: number) => +(n / 2 ** 20).toFixed(1);
  c.on('collect', ({ ms, heapBefore, heapAfter }) => log('idle collection', { ms: Math.round(ms), heapBeforeMB: mb(heapBefore), heapAfterMB: mb(heapAfter) }));
  c.on('trim', ({ ms, rssBefore, rssAfter }) => log('idle trim', { ms: Math.round(ms), rssBeforeMB: mb(rssBefore), rssAfterMB: mb(rssAfter) }));
  return c;
}
