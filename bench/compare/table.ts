// The comparison's table (server × workload × figure, each run, the mean, the
// spread and the ratio to ours) and the goals checked against it.

export type Figure = 'login' | 'chat' | 'muc' | 'idle' | 'idleSettled' | 'storm';

export const FIGURES: Record<Figure, { label: string; unit: string; higherIsBetter: boolean }> = {
  login: { label: 'logins/s (p99 connect-to-bound < 500 ms)', unit: 'logins/s', higherIsBetter: true },
  chat: { label: 'chat msgs/s delivered at p99 < 50 ms', unit: 'msg/s', higherIsBetter: true },
  muc: { label: 'muc deliveries/s fanned out at p99 < 50 ms', unit: 'deliveries/s', higherIsBetter: true },
  idle: { label: 'memory per idle TLS connection, 0.5 s after the last bind', unit: 'KiB', higherIsBetter: false },
  idleSettled: { label: 'memory per idle TLS connection, settled (end of the hold)', unit: 'KiB', higherIsBetter: false },
  storm: { label: 'storm: all rebound after', unit: 'ms', higherIsBetter: false },
};

export interface RunRecord {
  server: string;
  figure: Figure;
  /** null: not measured (the run failed, or no step passed). */
  value: number | null;
  context: { rep: number; rate?: number };
  detail: Record<string, unknown>;
  /** Set when the figure is incomplete (e.g. some connections never came back); shown with a *. */
  flag?: string;
}

function matching(records: RunRecord[], server: string, figure: Figure): RunRecord[] {
  return records.filter((r) => r.server === server && r.figure === figure).sort((a, b) => a.context.rep - b.context.rep);
}

function values(records: RunRecord[], server: string, figure: Figure): (number | null)[] {
  return matching(records, server, figure).map((r) => r.value);
}

export function mean(xs: (number | null)[]): number | null {
  const ok = xs.filter((x): x is number => x !== null);
  return ok.length === 0 ? null : ok.reduce((a, b) => a + b, 0) / ok.length;
}

function fmt(x: number | null): string {
  if (x === null) return 'n/a';
  if (Math.abs(x) >= 100) return String(Math.round(x));
  return String(Math.round(x * 10) / 10);
}

export function renderTable(records: RunRecord[], servers: string[], reps: number): { text: string; markdown: string } {
  const head = ['server', 'figure', 'unit', ...Array.from({ length: reps }, (_, i) => `run ${i + 1}`), 'mean', 'spread', 'ratio to ours'];
  const rows: string[][] = [];
  for (const figure of Object.keys(FIGURES) as Figure[]) {
    const f = FIGURES[figure];
    const ours = mean(values(records, 'ours', figure));
    for (const server of servers) {
      const xs = values(records, server, figure);
      if (xs.length === 0) continue;
      const m = mean(xs);
      const ok = xs.filter((x): x is number => x !== null);
      const spread = m !== null && m !== 0 && ok.length > 1 ? `±${Math.round(((Math.max(...ok) - Math.min(...ok)) / 2 / m) * 1000) / 10}%` : '-';
      const ratio = m !== null && ours !== null && ours !== 0 ? `${(m / ours).toFixed(2)}×` : 'n/a';
      const recs = matching(records, server, figure);
      const cells = Array.from({ length: reps }, (_, i) => fmt(xs[i] ?? null) + (recs[i]?.flag ? '*' : ''));
      rows.push([server === 'relay' ? 'relay (ceiling)' : server, f.label, `${f.unit} (${f.higherIsBetter ? 'higher' : 'lower'} is better)`, ...cells, fmt(m), spread, server === 'ours' ? '1.00×' : ratio]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i >= 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  const text = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
  const flagged = records.filter((r) => r.flag).map((r) => `* ${r.server} run ${r.context.rep}, ${r.figure}: ${r.flag}`);
  const markdown = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i >= 3 ? '---:' : '---')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ').replaceAll('*', '\\*')} |`)].join('\n');
  return { text: [text, ...flagged].join('\n'), markdown: [markdown, '', ...flagged.map((f) => `\\${f}`)].join('\n') };
}

/** The goals, each met, missed or not measured. */
export function evaluateGoals(records: RunRecord[]): { lines: string[]; met: Record<string, boolean | null> } {
  const m = (server: string, figure: Figure) => mean(values(records, server, figure));
  const met: Record<string, boolean | null> = {};
  const lines: string[] = [];
  const goal = (key: string, text: string, ours: number | null, other: number | null, ok: (o: number, t: number) => boolean, ratioText: (o: number, t: number) => string) => {
    if (ours === null || other === null) {
      met[key] = null;
      lines.push(`not measured: ${text}`);
      return;
    }
    met[key] = ok(ours, other);
    lines.push(`${met[key] ? 'MET   ' : 'MISSED'} ${text}: ${ratioText(ours, other)}`);
  };
  const times = (o: number, t: number) => (t === 0 ? 'n/a' : `ours ${fmt(o)} vs ${fmt(t)} = ${(o / t).toFixed(2)}×`);
  goal('login-prosody', 'logins/s >= 1.5× Prosody', m('ours', 'login'), m('prosody', 'login'), (o, t) => o >= 1.5 * t, times);
  goal('login-ejabberd', 'logins/s >= ejabberd', m('ours', 'login'), m('ejabberd', 'login'), (o, t) => o >= t, times);
  goal('chat-prosody', 'chat msgs/s at p99 < 50 ms >= 2× Prosody', m('ours', 'chat'), m('prosody', 'chat'), (o, t) => o >= 2 * t, times);
  goal('chat-ejabberd', 'chat msgs/s at p99 < 50 ms >= 1.2× ejabberd', m('ours', 'chat'), m('ejabberd', 'chat'), (o, t) => o >= 1.2 * t, times);
  // An idle connection is one that has been idle: the goal is read on the
  // settled figure; the one taken 0.5 s after the last bind still holds the
  // residue of the connection burst, and is shown beside it.
  goal('idle-ejabberd', "memory per idle TLS connection (settled) <= ejabberd's", m('ours', 'idleSettled'), m('ejabberd', 'idleSettled'), (o, t) => o <= t, (o, t) => `ours ${fmt(o)} KiB vs ${fmt(t)} KiB`);
  goal('storm-prosody', 'storm: all rebound sooner than Prosody', m('ours', 'storm'), m('prosody', 'storm'), (o, t) => o < t, (o, t) => `ours ${fmt(o)} ms vs ${fmt(t)} ms`);
  goal('storm-ejabberd', 'storm: all rebound sooner than ejabberd', m('ours', 'storm'), m('ejabberd', 'storm'), (o, t) => o < t, (o, t) => `ours ${fmt(o)} ms vs ${fmt(t)} ms`);
  const relay = m('relay', 'chat');
  const ours = m('ours', 'chat');
  if (relay !== null && ours !== null && relay > 0) lines.push(`ceiling: ours delivers ${Math.round((ours / relay) * 100)}% of the bare TLS relay's chat msgs/s at p99 < 50 ms`);
  return { lines, met };
}
