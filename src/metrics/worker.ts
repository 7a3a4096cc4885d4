// What a worker reports of its state when the hub asks for its metrics
// (metrics/node.ts adds up every worker's): its connections by kind and
// state, its sessions, and how late its event loop runs and how much heap
// it holds, those two labelled with the worker's index (they are the
// thread's own, not to be added up).
import { Gauge } from 'prom-client';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { registry } from './metrics.ts';
import { liveStreams } from '../stream/engine.ts';
import type { State } from '../stream/engine.ts';

export interface WorkerView {
  /** The worker's index in its node's hub (a replacement gets a new one). */
  index(): number;
  /** Its bound sessions, those waiting to be resumed (XEP-0198 §5) among them. */
  sessions: ReadonlyMap<string, { detached: boolean }>;
}

const KINDS = [['c2s', 'tcp'], ['c2s', 'websocket'], ['c2s', 'bosh'], ['s2s_in', 'tcp'], ['s2s_out', 'tcp'], ['component', 'tcp']] as const;
const STATES: readonly State[] = ['wait-stream', 'negotiating', 'wait-bind', 'established', 'closed'];

/** Registers the worker's gauges; they read `view` when collected. Once per worker thread. */
export function workerGauges(view: WorkerView): void {
  const registers = [registry];
  new Gauge({
    name: 'xmpp_connections',
    help: 'Open connections, by kind of stream (c2s, s2s_in, s2s_out, component), transport (tcp, websocket, bosh) and stream state (wait-stream, negotiating, wait-bind, established, closed: closing).',
    labelNames: ['kind', 'transport', 'state'],
    registers,
    collect() {
      const counts = new Map<string, number>();
      for (const s of liveStreams) {
        const key = `${s.kind} ${s.transport} ${s.state}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      for (const [kind, transport] of KINDS) for (const state of STATES) this.set({ kind, transport, state }, counts.get(`${kind} ${transport} ${state}`) ?? 0);
    },
  });
  new Gauge({
    name: 'xmpp_sessions',
    help: 'Bound client sessions, by state: online (with a connection), detached (its connection lost, waiting to be resumed, XEP-0198 §5).',
    labelNames: ['state'],
    registers,
    collect() {
      let detached = 0;
      for (const s of view.sessions.values()) if (s.detached) detached++;
      this.set({ state: 'online' }, view.sessions.size - detached);
      this.set({ state: 'detached' }, detached);
    },
  });
  // What prom-client's own event loop lag metrics do for the main thread:
  // percentiles since the last collection, then the histogram starts again.
  // Node's histogram records the time between the ticks of a timer of that
  // resolution, which an idle loop fires on time: the delay is what exceeds it.
  const RESOLUTION_MS = 10;
  const delay = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  delay.enable();
  const seconds = (ns: number) => (Number.isFinite(ns) && delay.count > 0 ? Math.max(0, ns / 1e9 - RESOLUTION_MS / 1000) : 0);
  const loop = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['worker'],
      registers,
      collect() {
        this.reset();
        this.set({ worker: String(view.index()) }, read());
      },
    });
  loop('xmpp_worker_event_loop_delay_p50_seconds', "Median delay of the worker's event loop since the last scrape.", () => seconds(delay.percentile(50)));
  loop('xmpp_worker_event_loop_delay_p99_seconds', "99th percentile of the delay of the worker's event loop since the last scrape.", () => seconds(delay.percentile(99)));
  // Read last: it starts the histogram again.
  loop('xmpp_worker_event_loop_delay_max_seconds', "Longest delay of the worker's event loop since the last scrape.", () => {
    const max = seconds(delay.max);
    delay.reset();
    return max;
  });
  loop('xmpp_worker_heap_used_bytes', "Bytes of the worker thread's JavaScript heap in use.", () => getHeapStatistics().used_heap_size);
}
