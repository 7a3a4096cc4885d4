// Counters and latency histograms (HdrHistogram, in microseconds). Each
// worker keeps a Recorder and ships its deltas to the main thread every
// STATS_INTERVAL_MS, with the interval's histogram encoded; the main thread
// merges them into the run's totals and a per-second time series.
import hdr from 'hdr-histogram-js';
import type { Histogram } from 'hdr-histogram-js';

export const STATS_INTERVAL_MS = 250;

export function newHistogram(): Histogram {
  // 1 µs to 1 h at 3 significant digits; plain JS (no WebAssembly to set up in every worker).
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
}

export interface StatsDelta {
  completed: number;
  failed: number;
  sent: number;
  delivered: number;
  /** Gauge: operations or connections in progress now. */
  inflight: number;
  errors: Record<string, number>;
  /** The interval's latencies (µs), compressed base64 HdrHistogram; absent when none. */
  hist?: string;
}

export class Recorder {
  completed = 0;
  failed = 0;
  sent = 0;
  delivered = 0;
  inflight = 0;
  private errors: Record<string, number> = {};
  private hist = newHistogram();
  private recorded = 0;

  /** Records one latency in milliseconds. */
  latency(ms: number): void {
    const us = Math.round(ms * 1000);
    this.hist.recordValue(us < 1 ? 1 : us);
    this.recorded++;
  }

  /** Counts `n` errors of this kind; `failure` also counts them as failed operations. */
  error(kind: string, failure = true, n = 1): void {
    if (n <= 0) return;
    this.errors[kind] = (this.errors[kind] ?? 0) + n;
    if (failure) this.failed += n;
  }

  /** What happened since the last call. */
  take(): StatsDelta {
    const d: StatsDelta = { completed: this.completed, failed: this.failed, sent: this.sent, delivered: this.delivered, inflight: this.inflight, errors: this.errors };
    if (this.recorded > 0) {
      d.hist = hdr.encodeIntoCompressedBase64(this.hist);
      this.hist.reset();
      this.recorded = 0;
    }
    this.completed = this.failed = this.sent = this.delivered = 0;
    this.errors = {};
    return d;
  }
}

export interface SeriesPoint {
  /** Seconds since the workload started (start of the second). */
  t: number;
  completed: number;
  failed: number;
  sent: number;
  delivered: number;
  /** Latency of the operations completed in that second, ms (0 when none). */
  p50: number;
  p99: number;
  max: number;
}

interface Bucket {
  point: SeriesPoint;
  hist: Histogram | undefined;
}

export interface LatencySummary {
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

const ms = (us: number) => Math.round(us) / 1000;

export function summarize(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { p50: 0, p95: 0, p99: 0, max: 0, mean: 0 };
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p95: ms(h.getValueAtPercentile(95)),
    p99: ms(h.getValueAtPercentile(99)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

/** The run's totals, merged from every worker's deltas, and a per-second series. */
export class Aggregate {
  readonly total = newHistogram();
  completed = 0;
  failed = 0;
  sent = 0;
  delivered = 0;
  readonly errors: Record<string, number> = {};
  private readonly inflightBy = new Map<number, number>();
  private readonly buckets: Bucket[] = [];
  /** performance.now() of the series' second 0. */
  origin: number;

  constructor(origin: number) {
    this.origin = origin;
  }

  get inflight(): number {
    let n = 0;
    for (const v of this.inflightBy.values()) n += v;
    return n;
  }

  add(worker: number, d: StatsDelta, at: number): void {
    this.completed += d.completed;
    this.failed += d.failed;
    this.sent += d.sent;
    this.delivered += d.delivered;
    this.inflightBy.set(worker, d.inflight);
    for (const [k, v] of Object.entries(d.errors)) this.errors[k] = (this.errors[k] ?? 0) + v;
    const sec = Math.max(0, Math.floor((at - this.origin) / 1000));
    const b = this.bucket(sec);
    b.point.completed += d.completed;
    b.point.failed += d.failed;
    b.point.sent += d.sent;
    b.point.delivered += d.delivered;
    if (d.hist) {
      const h = hdr.decodeFromCompressedBase64(d.hist);
      this.total.add(h);
      (b.hist ??= newHistogram()).add(h);
    }
  }

  /** Extra errors found by the main thread (lost messages, ...). */
  addError(kind: string, n: number): void {
    if (n <= 0) return;
    this.errors[kind] = (this.errors[kind] ?? 0) + n;
    this.failed += n;
  }

  private bucket(sec: number): Bucket {
    while (this.buckets.length <= sec) {
      // Seconds before this one are complete: keep their figures, drop their histograms.
      const prev = this.buckets[this.buckets.length - 1];
      if (prev) this.seal(prev);
      this.buckets.push({ point: { t: this.buckets.length, completed: 0, failed: 0, sent: 0, delivered: 0, p50: 0, p99: 0, max: 0 }, hist: undefined });
    }
    return this.buckets[sec];
  }

  private seal(b: Bucket): void {
    if (!b.hist) return;
    const s = summarize(b.hist);
    b.point.p50 = s.p50;
    b.point.p99 = s.p99;
    b.point.max = s.max;
    b.hist = undefined;
  }

  series(): SeriesPoint[] {
    for (const b of this.buckets) this.seal(b);
    return this.buckets.map((b) => b.point);
  }

  latency(): LatencySummary {
    return summarize(this.total);
  }
}
