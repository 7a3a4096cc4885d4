// Reading a server's /metrics, /healthz and /readyz in tests: plain HTTP
// requests, the Prometheus text format read back into samples, and
// Prometheus's own checker (promtool, Debian's prometheus package) run on it.
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { within } from './protocol.ts';
import { reply, type Reply } from './http.ts';

export type Answer = Reply;

/** One HTTP request to 127.0.0.1 (or `host`), bounded in time; `prefix`: bytes sent before it (a load balancer's PROXY protocol header). */
export function get(port: number, path: string, opts: { method?: string; headers?: Record<string, string>; host?: string; localAddress?: string; prefix?: Buffer } = {}): Promise<Answer> {
  const prefix = opts.prefix;
  // Without an agent (a fresh agent would make its own connection).
  const createConnection = prefix
    ? () => {
        const s = net.connect({ host: opts.host ?? '127.0.0.1', port, localAddress: opts.localAddress });
        s.write(prefix);
        return s;
      }
    : undefined;
  const req = http.request({ host: opts.host ?? '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, localAddress: opts.localAddress, ...(createConnection ? { createConnection } : { agent: false }) });
  return reply(req, `${opts.method ?? 'GET'} ${path}`, { ms: 15_000 });
}

/** One sample: its metric name, labels and value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments skipped). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1], labels, value: m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]) });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `match`. */
export function total(samples: Sample[], name: string, match: Record<string, string> = {}): number {
  let n = 0;
  for (const s of samples) if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) n += s.value;
  return n;
}

/** GET /metrics, which must answer 200 in the Prometheus text format: its samples and text. */
export async function scrape(port: number): Promise<{ text: string; samples: Sample[] }> {
  const r = await get(port, '/metrics');
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.body}`);
  if (!String(r.headers['content-type']).startsWith('text/plain; version=0.0.4')) throw new Error(`/metrics content type ${r.headers['content-type']}`);
  return { text: r.body, samples: parseMetrics(r.body) };
}

/** `promtool check metrics` on the text: its exit code and what it said (lint problems, parse errors). */
export function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return within(
    new Promise((resolve, reject) => {
      const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let output = '';
      p.stdout.on('data', (d: Buffer) => (output += d.toString()));
      p.stderr.on('data', (d: Buffer) => (output += d.toString()));
      p.on('error', reject);
      p.on('close', (code) => resolve({ code, output }));
      p.stdin.end(text);
    }),
    30_000,
    'promtool check metrics',
  );
}
