// A self-contained HTML report of a load run: the summary, the errors, and
// two hand-drawn SVG line charts (throughput and latency per second).
import type { SeriesPoint } from './stats.ts';

export interface ReportInput {
  title: string;
  summary: Record<string, unknown>;
  series: SeriesPoint[];
  /** Names of the throughput lines to draw from the series. */
  throughput: { key: 'completed' | 'sent' | 'delivered' | 'failed'; label: string }[];
  latencyLabel: string;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten. */
function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v >= 1000) return `${+(v / 1000).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

interface Line {
  label: string;
  points: [number, number][];
}

export function lineChart(title: string, yLabel: string, lines: Line[], xMax: number): string {
  const W = 760;
  const H = 280;
  const L = 60;
  const R = 20;
  const T = 30;
  const B = 40;
  const pw = W - L - R;
  const ph = H - T - B;
  const yMax = niceMax(Math.max(0, ...lines.flatMap((l) => l.points.map((p) => p[1]))));
  const xm = Math.max(1, xMax);
  const x = (v: number) => L + (v / xm) * pw;
  const y = (v: number) => T + ph - (v / yMax) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${fmt(v)}</text>`);
  }
  const xStep = niceMax(xm / 8);
  for (let v = 0; v <= xm + 1e-9; v += xStep) {
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${T + ph}" y2="${T + ph + 4}" stroke="#333"/>`);
    out.push(`<text x="${x(v)}" y="${T + ph + 16}" text-anchor="middle">${fmt(v)}</text>`);
  }
  out.push(`<line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#333"/><line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="#333"/>`);
  out.push(`<text x="${L + pw / 2}" y="${H - 6}" text-anchor="middle">time (s)</text>`);
  out.push(`<text transform="translate(14 ${T + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  lines.forEach((l, i) => {
    const color = COLORS[i % COLORS.length];
    if (l.points.length > 0) {
      const d = l.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ');
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.8" points="${d}"/>`);
    }
    out.push(`<rect x="${L + 10 + i * 150}" y="${T + 2}" width="10" height="10" fill="${color}"/><text x="${L + 24 + i * 150}" y="${T + 11}">${esc(l.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

export function renderReport(r: ReportInput): string {
  const xMax = r.series.length;
  // Each point stands for its second's middle.
  const at = (p: SeriesPoint) => p.t + 0.5;
  const throughput = lineChart(
    'Throughput',
    'per second',
    r.throughput.map((t) => ({ label: `${t.label}/s`, points: r.series.map((p) => [at(p), p[t.key]] as [number, number]) })),
    xMax,
  );
  const withLatency = r.series.filter((p) => p.max > 0);
  const latency = lineChart(
    `Latency (${r.latencyLabel})`,
    'ms',
    [
      { label: 'p50', points: withLatency.map((p) => [at(p), p.p50]) },
      { label: 'p99', points: withLatency.map((p) => [at(p), p.p99]) },
      { label: 'max', points: withLatency.map((p) => [at(p), p.max]) },
    ],
    xMax,
  );
  const rows = Object.entries(r.summary)
    .filter(([k]) => k !== 'errors' && k !== 'latencyMs')
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`)
    .join('');
  const lat = r.summary.latencyMs as Record<string, number>;
  const latRows = Object.entries(lat)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v} ms</td></tr>`)
    .join('');
  const errors = Object.entries(r.summary.errors as Record<string, number>);
  const errRows = errors.length === 0 ? '<tr><td>none</td></tr>' : errors.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:0 2em 1em 0;display:inline-table;vertical-align:top}th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}th{font-weight:600}</style>
</head><body>
<h1>${esc(r.title)}</h1>
<table><caption>Summary</caption>${rows}</table>
<table><caption>Latency (${esc(r.latencyLabel)})</caption>${latRows}</table>
<table><caption>Errors</caption>${errRows}</table>
<div>${throughput}</div>
<div>${latency}</div>
</body></html>
`;
}
