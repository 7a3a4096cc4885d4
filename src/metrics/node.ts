// The node's /metrics answer, made in the main thread: the acceptor's own
// figures and the process's (prom-client's default metrics: CPU, memory,
// file descriptors, the main thread's event loop), plus what every worker
// reports when the hub asks (metrics/metrics.ts, metrics/worker.ts), added
// up by prom-client's AggregatorRegistry as it does for a cluster of
// processes: counters and histograms are summed, so are the workers'
// connection and session gauges; per-thread gauges carry a worker label.
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { registry as threadRegistry } from './metrics.ts';
import type { ServerStats } from '../acceptor/server.ts';
import type { Hub } from '../acceptor/hub.ts';

export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** How long a scrape waits for the workers' answers; one that is late counts with what it said last time. */
const COLLECT_MS = 3000;

export class NodeMetrics {
  private readonly own = new Registry();
  private readonly hub: Hub;
  private readonly node: string | undefined;
  /** What each live worker said last, by index. */
  private readonly last = new Map<number, MetricsJson>();
  /**
   * The counters and histograms of workers that died, as they stood at the
   * last scrape before their death: they stay in the node's totals, which
   * would otherwise go down (a counter that goes down reads as a restart).
   */
  private retired: MetricsJson[] = [];

  /** `node`: the label every series gets (a cluster's node id); undefined on a single node. */
  constructor(hub: Hub, stats: () => ServerStats, node: string | undefined) {
    this.hub = hub;
    this.node = node;
    const registers = [this.own];
    collectDefaultMetrics({ register: this.own });
    // Gauges named like counters, which Prometheus's own checker (promtool
    // check metrics) rejects; nodejs_active_handles and the others say the
    // same by type.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.own.removeSingleMetric(name);
    const gauge = (name: string, help: string, read: (s: ServerStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(stats()));
        },
      });
    gauge('xmpp_accepted_connections', 'Connections the acceptor has handed to workers and that are still open, on every listener (HTTP included).', (s) => s.connections);
    gauge('xmpp_max_connections', 'The cap on open connections (XMPP_MAX_CONNECTIONS, or derived from the open-file limit).', (s) => s.maxConnections);
    gauge('xmpp_workers', 'Worker threads joined to the hub.', (s) => s.workers);
    const counter = (name: string, help: string, labels: Record<string, string>[], read: (s: ServerStats) => number[]) =>
      new Counter({
        name,
        help,
        labelNames: labels.length > 0 ? Object.keys(labels[0]) : [],
        registers,
        collect() {
          // The acceptor keeps the totals; the counter says them.
          this.reset();
          const values = read(stats());
          if (labels.length === 0) this.inc(values[0]);
          else labels.forEach((l, i) => this.inc(l, values[i]));
        },
      });
    counter('xmpp_connections_refused_total', 'Connections closed by the acceptor before a worker had them: the node was full (XMPP_MAX_CONNECTIONS), the address had XMPP_MAX_CONNECTIONS_PER_IP open, or opened more than XMPP_CONNECTION_RATE_PER_IP a second, or a load balancer of XMPP_PROXY_PROTOCOL_FROM sent no valid PROXY header.', [{ reason: 'node_full' }, { reason: 'per_ip' }, { reason: 'rate' }, { reason: 'proxy_header' }], (s) => [s.refusedFull, s.refusedPerIp, s.refusedRate, s.refusedProxyHeader]);
    // The node's guard (acceptor/guard.ts): password guessing, registrations, and what the workers report to it.
    counter('xmpp_auth_throttle_total', 'Failed authentications (wrong credentials) counted per address and account, those answered after a delay, attempts refused because their address or account failed too often, and the lock-outs themselves.', ['failure', 'delayed', 'refused_ip', 'refused_account', 'lockout_ip', 'lockout_account'].map((event) => ({ event })), (s) => [s.guard.authFailures, s.guard.authDelayed, s.guard.authRefusedIp, s.guard.authRefusedAccount, s.guard.ipLockouts, s.guard.accountLockouts]);
    counter('xmpp_registrations_total', 'In-band registrations (XEP-0077) let through or refused by XMPP_REGISTRATION_RATE.', [{ outcome: 'allowed' }, { outcome: 'rate_limited' }], (s) => [s.guard.registrations, s.guard.registrationsRefused]);
    counter('xmpp_hashing_refused_total', "Password hashings refused because a worker's queue was full (XMPP_HASH_QUEUE): PLAIN logins closed, registrations and password changes refused.", [], (s) => [s.guard.hashRefused]);
    counter('xmpp_reads_exceeded_total', 'Connections ended for more than XMPP_MAX_READS_PER_SECOND reads (TLS records) in a second.', [], (s) => [s.guard.readsExceeded]);
    counter('xmpp_accept_errors_total', 'Errors from accept() (out of file descriptors...), each survived.', [], (s) => [s.acceptErrors]);
    counter('xmpp_worker_deaths_total', 'Worker threads that died (and were replaced).', [], (s) => [s.workerDeaths]);
    hub.on('lost', (link) => {
      const last = this.last.get(link.index);
      this.last.delete(link.index);
      // (prom-client's types say an enum; its JSON says 'counter', 'gauge'...)
      if (last) this.retired.push(last.filter((m) => ['counter', 'histogram'].includes(m.type as unknown as string)));
    });
  }

  /** The node's metrics in the Prometheus text format. */
  async render(): Promise<string> {
    const answers = await this.hub.collectMetrics(COLLECT_MS);
    for (const [index, m] of answers) if (this.last.has(index) || this.hub.has(index)) this.last.set(index, m as MetricsJson);
    const workers = [...this.last.entries()].map(([index, m]) => (answers.get(index) as MetricsJson | undefined) ?? m);
    // Many deaths make one entry, not many.
    if (this.retired.length > 1) this.retired = [await AggregatorRegistry.aggregate(this.retired).getMetricsAsJSON()];
    const all = [await this.own.getMetricsAsJSON(), await threadRegistry.getMetricsAsJSON(), ...this.retired, ...workers];
    const out = AggregatorRegistry.aggregate(all);
    if (this.node !== undefined) out.setDefaultLabels({ node: this.node });
    return out.metrics();
  }
}
