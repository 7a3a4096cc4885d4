// Micro-benchmark of what /metrics costs on a stanza's path: counting it
// in and out (stanzaIn, stanzaOut: plain additions) and timing its routing
// (routingTimer: two clock reads and a tally histogram), next to what
// prom-client's own Histogram.observe costs (hashing its labels), which the
// tally histogram was made to avoid on this path.
//
//   npx node bench/metrics.ts [iterations=1000000] [rounds=7]
import { Histogram, Registry } from 'prom-client';
import { routingTimer, stanzaIn, stanzaOut } from '../src/metrics/metrics.ts';
import { median } from './lib.ts';

const iterations = Number(process.argv[2] ?? 1_000_000);
const rounds = Number(process.argv[3] ?? 7);
const buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const promHistogram = new Histogram({ name: 'bench_seconds', help: 'bench', labelNames: ['stream'], buckets, registers: [new Registry()] });

const cases: [string, () => void][] = [
  ['stanzaIn', () => stanzaIn('message', 'c2s')],
  ['stanzaOut', () => stanzaOut("<message to='a@b'/>", 'c2s')],
  ['routingTimer', () => routingTimer('c2s')()],
  ['performance.now x2', () => void (performance.now() - performance.now())],
  ['prom-client observe', () => promHistogram.observe({ stream: 'c2s' }, 0.0003)],
];

console.log(`${iterations.toLocaleString('en')} calls per round, median of ${rounds} rounds, node ${process.version}`);
for (const [label, fn] of cases) {
  for (let i = 0; i < iterations / 10; i++) fn();
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn();
    times.push(Number(process.hrtime.bigint() - t0));
  }
  console.log(`${label.padEnd(20)} ${(median(times) / iterations).toFixed(0).padStart(6)} ns/call`);
}
