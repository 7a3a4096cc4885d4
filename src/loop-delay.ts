// How late each thread's event loop runs, for the operator (and the attack
// benchmarks): every period, at debug level, the 50th and 99th percentile
// and the largest delay the thread's event loop saw since the last line. A
// worker that is blocked (a synchronous call, a huge stanza) shows here
// before its clients notice.
import { monitorEventLoopDelay } from 'node:perf_hooks';

/** Starts the monitor and its log line; the timer does not keep the thread alive. Never throws from its timer. */
export function logLoopDelay(periodMs: number, log: (msg: string, fields: Record<string, unknown>) => void): () => void {
  const h = monitorEventLoopDelay({ resolution: 10 });
  h.enable();
  const ms = (ns: number) => +(ns / 1e6).toFixed(1);
  const timer = setInterval(() => {
    try {
      if (h.count === 0) return;
      log('event loop delay', { p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: ms(h.max) });
      h.reset();
    } catch {
      // a measurement is not worth a thread
    }
  }, periodMs).unref();
  return () => {
    clearInterval(timer);
    h.disable();
  };
}
