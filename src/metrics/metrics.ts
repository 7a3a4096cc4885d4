// What this thread counts for /metrics (Prometheus text format, through
// prom-client). Every thread of a node has its own registry: a worker's
// values reach the node's answer through the hub, which asks every worker
// for them and adds them up (metrics/node.ts). Labels take only values from
// fixed, short lists (kinds of stanza, of stream, SASL mechanisms and
// conditions): never a JID, a domain or an address, so that the number of
// series stays bounded whatever clients do.
import { Counter, Histogram, Registry } from 'prom-client';
import type { Metric } from 'prom-client';
import { performance } from 'node:perf_hooks';

/** This thread's registry: what it reports when the hub asks (getMetricsAsJSON). */
export const registry = new Registry();
const registers = [registry];

/** The kinds of stream the engine runs (RFC 6120 c2s and s2s, XEP-0114 components). */
export type StreamKind = 'c2s' | 's2s_in' | 's2s_out' | 'component';
/** Where a stanza came from or went: a client, a peer server, a component. */
export type StanzaSource = 'c2s' | 's2s' | 'component';
export const sourceOf = (kind: StreamKind): StanzaSource => (kind === 's2s_in' || kind === 's2s_out' ? 's2s' : kind);

const STANZA_KINDS = ['message', 'presence', 'iq'] as const;
const SOURCES = ['c2s', 's2s', 'component'] as const satisfies readonly StanzaSource[];

/**
 * Stanzas counted on their hot path as plain additions into an array (one
 * slot per kind and source), moved into the prom-client counter when it is
 * read: a Counter.inc per stanza would hash its labels every time.
 */
function stanzaCounter(name: string, help: string): (kind: number, source: number) => void {
  const tally = new Float64Array(STANZA_KINDS.length * SOURCES.length);
  const labels = STANZA_KINDS.flatMap((kind) => SOURCES.map((stream) => ({ kind, stream })));
  new Counter({
    name,
    help,
    labelNames: ['kind', 'stream'],
    registers,
    collect() {
      for (let i = 0; i < tally.length; i++) {
        // Every series is there from the start (at 0), as dashboards expect.
        this.inc(labels[i], tally[i]);
        tally[i] = 0;
      }
    },
  });
  return (kind, source) => {
    tally[kind * SOURCES.length + source]++;
  };
}

const countIn = stanzaCounter('xmpp_stanzas_received_total', 'Stanzas read from streams, by kind (message, presence, iq) and by the kind of stream (c2s, s2s, component).');
const countOut = stanzaCounter('xmpp_stanzas_sent_total', 'Stanzas written to streams, by kind (message, presence, iq) and by the kind of stream (c2s, s2s, component).');
const kindIndex = (name: string): number => (name === 'message' ? 0 : name === 'presence' ? 1 : name === 'iq' ? 2 : -1);
const sourceIndex = (s: StanzaSource): number => (s === 'c2s' ? 0 : s === 's2s' ? 1 : 2);

/** A top-level element read from a stream: counted if it is a stanza. */
export function stanzaIn(name: string, source: StanzaSource): void {
  const k = kindIndex(name);
  if (k >= 0) countIn(k, sourceIndex(source));
}

/** Serialised output handed to a stream's socket: counted if it is a stanza (by its first tag). */
export function stanzaOut(xml: string, source: StanzaSource): void {
  const k = xml.startsWith('<message') ? 0 : xml.startsWith('<presence') ? 1 : xml.startsWith('<iq') ? 2 : -1;
  if (k >= 0) countOut(k, sourceIndex(source));
}

/** The SASL mechanisms a label may name (sasl/mechanism.ts); anything else a client names is 'other'. */
const MECHANISM_NAMES = new Set(['EXTERNAL', 'SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'ANONYMOUS']);
/** RFC 6120 §6.5: the SASL failure conditions, the only values of the condition label. */
const SASL_CONDITIONS = new Set(['aborted', 'account-disabled', 'credentials-expired', 'encryption-required', 'incorrect-encoding', 'invalid-authzid', 'invalid-mechanism', 'malformed-request', 'mechanism-too-weak', 'not-authorized', 'temporary-auth-failure']);
const mechanismLabel = (m: string): string => (MECHANISM_NAMES.has(m) ? m : m === '' ? 'none' : 'other');

const logins = new Counter({ name: 'xmpp_logins_total', help: 'Successful SASL authentications, by mechanism and kind of stream (c2s, s2s_in).', labelNames: ['mechanism', 'stream'], registers });
const loginFailures = new Counter({ name: 'xmpp_login_failures_total', help: 'Failed SASL authentications, by mechanism (none: no known one named), RFC 6120 §6.5 condition and kind of stream.', labelNames: ['mechanism', 'condition', 'stream'], registers });

export function login(mechanism: string, stream: StreamKind): void {
  logins.inc({ mechanism: mechanismLabel(mechanism), stream });
}

export function loginFailure(mechanism: string, condition: string, stream: StreamKind): void {
  loginFailures.inc({ mechanism: mechanismLabel(mechanism), condition: SASL_CONDITIONS.has(condition) ? condition : 'other', stream });
}

/** Latencies from 0.1 ms to 10 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * A histogram by one label taking a few fixed values, observed on a hot
 * path (every stanza) as a bucket search and two additions: a prom-client
 * Histogram.observe hashes and checks its labels every time, 600 to 800 ns
 * a call on a shared 2-core machine (bench/metrics.ts), where timing a
 * stanza this way costs about its two clock reads. The registry reads it
 * in the form prom-client's own histograms take in getMetricsAsJSON
 * (buckets cumulative, then _sum and _count), which it prints and the hub
 * adds up like any other.
 */
function tallyHistogram(name: string, help: string, label: string, values: readonly string[], buckets: readonly number[]): (value: number, seconds: number) => void {
  const n = buckets.length;
  // Per label value: one slot per bucket and one past the last (+Inf only).
  const counts = new Float64Array(values.length * (n + 1));
  const sums = new Float64Array(values.length);
  const metric = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    get: async () => ({
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      values: values.flatMap((v, i) => {
        const out: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
        let cumulative = 0;
        for (let b = 0; b <= n; b++) {
          cumulative += counts[i * (n + 1) + b];
          out.push({ labels: { le: b < n ? buckets[b] : '+Inf', [label]: v }, value: cumulative, metricName: `${name}_bucket` });
        }
        out.push({ labels: { [label]: v }, value: sums[i], metricName: `${name}_sum` }, { labels: { [label]: v }, value: cumulative, metricName: `${name}_count` });
        return out;
      }),
    }),
    reset: () => {
      counts.fill(0);
      sums.fill(0);
    },
  };
  registry.registerMetric(metric as unknown as Metric);
  return (i, seconds) => {
    let b = 0;
    while (b < n && seconds > buckets[b]) b++;
    counts[i * (n + 1) + b]++;
    sums[i] += seconds;
  };
}

const routing = tallyHistogram(
  'xmpp_routing_duration_seconds',
  "Time from a stanza read from a stream to its routing done on this worker (modules, registry lookup, hand-off to the recipient's worker or node, or storage), by the kind of stream it came from.",
  'stream',
  SOURCES,
  LATENCY_BUCKETS,
);

/** Starts timing one stanza's routing; the function returned records it. */
export function routingTimer(source: StanzaSource): () => void {
  const start = performance.now();
  const i = sourceIndex(source);
  return () => routing(i, (performance.now() - start) / 1000);
}

/** Runs the routing of one stanza from `source`, timed (routingTimer) however it ends. */
export async function timedRouting(source: StanzaSource, work: () => Promise<void>): Promise<void> {
  const timed = routingTimer(source);
  try {
    await work();
  } finally {
    timed();
  }
}

const resumptions = new Counter({ name: 'xmpp_sm_resumptions_total', help: 'XEP-0198 §5 resumption requests, by result (resumed, item-not-found, handled-count-too-high).', labelNames: ['result'], registers });
export function resumption(result: 'resumed' | 'item-not-found' | 'handled-count-too-high'): void {
  resumptions.inc({ result });
}

const offline = new Counter({ name: 'xmpp_offline_messages_total', help: "Messages for an account with no session to take them (XEP-0160), by outcome: stored; full (the account's bound reached) or error (the store failed), both refused to the sender; dropped (nothing worth keeping); refused (not a kind that is stored).", labelNames: ['result'], registers });
export function offlineMessage(result: 'stored' | 'full' | 'error' | 'dropped' | 'refused'): void {
  offline.inc({ result });
}

const archived = new Counter({ name: 'xmpp_archive_rows_written_total', help: 'Rows written to the message archive (XEP-0313), in batches.', registers });
const archiveFailures = new Counter({ name: 'xmpp_archive_write_failures_total', help: 'Message archive batch writes that failed (and were retried).', registers });
const archiveRefused = new Counter({ name: 'xmpp_archive_rows_refused_total', help: "Archive rows refused because the write buffer was full (XMPP_MAM_MAX_BUFFERED): their messages were refused.", registers });
export function archiveWritten(rows: number): void {
  archived.inc(rows);
}
export function archiveFailed(): void {
  archiveFailures.inc();
}
export function archiveRefusedRows(rows: number): void {
  archiveRefused.inc(rows);
}

const s2sAuthenticated = new Counter({ name: 'xmpp_s2s_authenticated_total', help: 'Peer server domains authenticated on a server-to-server stream (SASL EXTERNAL or dialback), by direction (in, out).', labelNames: ['direction'], registers });
const s2sFailures = new Counter({ name: 'xmpp_s2s_failures_total', help: 'Server-to-server streams that could not be used, by direction (out: the peer could not be reached or authenticated; in: a peer refused), and the stanza error condition given to waiting senders.', labelNames: ['direction', 'condition'], registers });
/** RFC 6120 §8.3.3: the conditions s2s failures are given (others are 'other'). */
const S2S_CONDITIONS = new Set(['remote-server-not-found', 'remote-server-timeout', 'remote-connection-failed', 'not-authorized', 'policy-violation', 'resource-constraint', 'service-unavailable', 'internal-server-error', 'undefined-condition']);
export function s2sAuthenticatedDomain(direction: 'in' | 'out'): void {
  s2sAuthenticated.inc({ direction });
}
export function s2sFailure(direction: 'in' | 'out', condition: string): void {
  s2sFailures.inc({ direction, condition: S2S_CONDITIONS.has(condition) ? condition : 'other' });
}

const redisDuration = new Histogram({ name: 'xmpp_redis_command_duration_seconds', help: 'Time Redis took to answer a command (or fail it), as this node saw it.', buckets: LATENCY_BUCKETS, registers });
const redisErrors = new Counter({ name: 'xmpp_redis_command_errors_total', help: 'Redis commands that failed: unreachable, timed out (2 s) or refused.', registers });
export function redisCommand(seconds: number, failed: boolean): void {
  redisDuration.observe(seconds);
  if (failed) redisErrors.inc();
}

const dbDuration = new Histogram({ name: 'xmpp_database_query_duration_seconds', help: "Time a database call took: a PostgreSQL statement, or a call to a single node's SQLite storage thread; by backend.", labelNames: ['backend'], buckets: LATENCY_BUCKETS, registers });
const dbErrors = new Counter({ name: 'xmpp_database_errors_total', help: "Database calls that failed (unreachable, or an error of the database itself; not a store's refusal such as an account that exists), by backend.", labelNames: ['backend'], registers });
export function databaseCall(backend: 'postgres' | 'sqlite', seconds: number, failed: boolean): void {
  dbDuration.observe({ backend }, seconds);
  if (failed) dbErrors.inc({ backend });
}

/** Series with no label exist from the start (prom-client shows them at 0); labelled ones that dashboards read are made here too. */
for (const result of ['resumed', 'item-not-found', 'handled-count-too-high']) resumptions.inc({ result }, 0);
for (const result of ['stored', 'full', 'error', 'dropped', 'refused']) offline.inc({ result }, 0);
