/**
 * Results of the side-by-side suites: per-run samples, their medians, the
 * cyrsync/Cyrus ratios, and their renderings (stdout table, JSON under
 * benchmarks/results/, an SVG chart of the ratios, the README block between
 * `<!-- bench:start -->` and `<!-- bench:end -->`).
 *
 * Ratios are cyrsync divided by Cyrus, taken from medians of runs made in one
 * process, alternating, on one machine: below 1 means cyrsync used less.
 * `npm run bench -- report` re-renders the chart and README from the latest
 * JSON files without running anything.
 */
import fs from 'node:fs';
import path from 'node:path';
import { RESULTS_DIR, REPO, median, machine, type Machine } from './lib/common.js';

export type ServerName = 'cyrus' | 'cyrsync';

/** One measured run of one server. */
export interface Sample {
  suite: string;
  dataset: string;
  compress: boolean;
  server: ServerName;
  run: number;
  /** Message octets the run carried. */
  bytes: number;
  wallSeconds: number;
  mbPerSecond: number;
  peakRssKiB: number;
  cpuSeconds: number;
  diskBytes: number;
  /** The client's own CPU (sync_client or bench-client), for context. */
  clientCpuSeconds?: number;
}

export interface Aggregate {
  runs: number;
  wallSeconds: number;
  mbPerSecond: number;
  peakRssKiB: number;
  cpuSeconds: number;
  cpuMsPerMB: number;
  diskBytes: number;
}

export interface Comparison {
  suite: string;
  dataset: string;
  compress: boolean;
  bytes: number;
  cyrus: Aggregate;
  cyrsync: Aggregate;
  /** cyrsync / Cyrus of the medians. */
  ratio: { wall: number; peakRss: number; cpuPerMB: number; disk: number };
}

export interface ColdStart {
  mode: string;
  runs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export interface SuiteResult {
  suite: string;
  machine: Machine;
  options: Record<string, unknown>;
  totalSeconds: number;
  comparisons: Comparison[];
  coldStart?: ColdStart[];
  samples: Sample[];
}

function aggregate(xs: Sample[]): Aggregate {
  const wall = median(xs.map((s) => s.wallSeconds));
  const cpu = median(xs.map((s) => s.cpuSeconds));
  const bytes = xs[0]?.bytes ?? 0;
  return {
    runs: xs.length,
    wallSeconds: wall,
    mbPerSecond: median(xs.map((s) => s.mbPerSecond)),
    peakRssKiB: median(xs.map((s) => s.peakRssKiB)),
    cpuSeconds: cpu,
    cpuMsPerMB: bytes > 0 ? (cpu * 1000) / (bytes / 1e6) : NaN,
    diskBytes: median(xs.map((s) => s.diskBytes)),
  };
}

/** Groups samples by (dataset, compress) in first-seen order and compares the medians. */
export function compare(samples: Sample[]): Comparison[] {
  const keys: string[] = [];
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = `${s.suite}\0${s.dataset}\0${s.compress}`;
    if (!groups.has(k)) {
      groups.set(k, []);
      keys.push(k);
    }
    groups.get(k)!.push(s);
  }
  const out: Comparison[] = [];
  for (const k of keys) {
    const g = groups.get(k)!;
    const cy = g.filter((s) => s.server === 'cyrus');
    const cs = g.filter((s) => s.server === 'cyrsync');
    if (cy.length === 0 || cs.length === 0) continue;
    const a = aggregate(cy);
    const b = aggregate(cs);
    out.push({
      suite: g[0]!.suite,
      dataset: g[0]!.dataset,
      compress: g[0]!.compress,
      bytes: g[0]!.bytes,
      cyrus: a,
      cyrsync: b,
      ratio: {
        wall: b.wallSeconds / a.wallSeconds,
        peakRss: b.peakRssKiB / a.peakRssKiB,
        cpuPerMB: b.cpuMsPerMB / a.cpuMsPerMB,
        disk: b.diskBytes / a.diskBytes,
      },
    });
  }
  return out;
}

// ------------------------------------------------------------------- table

const mb = (bytes: number): string => (bytes / 1e6).toFixed(bytes >= 1e8 ? 0 : 1);
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');

function pad(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n');
}

export const HEADER = [
  'suite',
  'data set',
  'deflate',
  'wall s Cyrus',
  'wall s cyrsync',
  'wall ratio',
  'MB/s cyrsync',
  'peak RSS MiB Cyrus',
  'peak RSS MiB cyrsync',
  'CPU ms/MB Cyrus',
  'CPU ms/MB cyrsync',
  'CPU/MB ratio',
  'disk MB Cyrus',
  'disk MB cyrsync',
];

export function rowOf(c: Comparison): string[] {
  return [
    c.suite,
    c.dataset,
    c.compress ? 'yes' : 'no',
    f2(c.cyrus.wallSeconds),
    f2(c.cyrsync.wallSeconds),
    f2(c.ratio.wall),
    c.cyrsync.mbPerSecond.toFixed(1),
    (c.cyrus.peakRssKiB / 1024).toFixed(1),
    (c.cyrsync.peakRssKiB / 1024).toFixed(1),
    c.cyrus.cpuMsPerMB.toFixed(1),
    c.cyrsync.cpuMsPerMB.toFixed(1),
    f2(c.ratio.cpuPerMB),
    mb(c.cyrus.diskBytes),
    mb(c.cyrsync.diskBytes),
  ];
}

export function table(comparisons: Comparison[]): string {
  return pad([HEADER, ...comparisons.map(rowOf)]);
}

export function coldTable(cs: ColdStart[]): string {
  return pad([
    ['cold start', 'mode', 'runs', 'median ms', 'min ms', 'max ms'],
    ...cs.map((c) => ['cold start', c.mode, String(c.runs), c.medianMs.toFixed(1), c.minMs.toFixed(1), c.maxMs.toFixed(1)]),
  ]);
}

// -------------------------------------------------------------------- files

/** Writes `<suite>-<time>.json` and `<suite>-latest.json`; returns the first path. */
export function writeResult(r: SuiteResult): string {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = r.machine.date.replace(/[:.]/g, '-');
  const file = path.join(RESULTS_DIR, `${r.suite}-${stamp}.json`);
  const text = JSON.stringify(r, null, 2) + '\n';
  fs.writeFileSync(file, text);
  fs.writeFileSync(path.join(RESULTS_DIR, `${r.suite}-latest.json`), text);
  return file;
}

/** Appends one sample as a JSON line while a suite runs, so an interrupted run keeps its figures. */
export function appendSample(file: string, s: Sample): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.appendFileSync(file, JSON.stringify(s) + '\n');
}

function readLatest(suite: string): SuiteResult | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, `${suite}-latest.json`), 'utf8')) as SuiteResult;
  } catch {
    return undefined;
  }
}

// --------------------------------------------------------------------- chart

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * A grouped horizontal bar chart: per comparison, the wall, peak RSS and
 * CPU/MB ratios on a log scale around 1 (the Cyrus figure), with the goal
 * lines (wall 0.8, CPU/MB 1).
 */
export function svgChart(comparisons: Comparison[], title: string): string {
  const metrics: { key: keyof Comparison['ratio']; label: string; color: string }[] = [
    { key: 'wall', label: 'wall time', color: '#3b6fb6' },
    { key: 'peakRss', label: 'peak RSS', color: '#d9822b' },
    { key: 'cpuPerMB', label: 'CPU per MB', color: '#4a9c5d' },
  ];
  const rowH = 14;
  const groupH = metrics.length * rowH + 12;
  const left = 190;
  const width = 760;
  const plotW = width - left - 70;
  const top = 46;
  const height = top + comparisons.length * groupH + 40;
  const lo = Math.log10(1 / 64);
  const hi = Math.log10(4);
  const x = (r: number): number => left + ((Math.log10(Math.min(Math.max(r, 1 / 64), 4)) - lo) / (hi - lo)) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="${left}" y="16" font-size="13" font-weight="bold">${esc(title)}</text>`);
  metrics.forEach((m, i) => {
    out.push(`<rect x="${left + i * 110}" y="24" width="10" height="10" fill="${m.color}"/>`);
    out.push(`<text x="${left + i * 110 + 14}" y="33">${m.label}</text>`);
  });
  const bottom = top + comparisons.length * groupH;
  for (const t of [1 / 64, 1 / 16, 1 / 4, 0.5, 0.8, 1, 2, 4]) {
    const xx = x(t).toFixed(1);
    const strong = t === 1 || t === 0.8;
    out.push(`<line x1="${xx}" y1="${top - 4}" x2="${xx}" y2="${bottom}" stroke="${t === 1 ? '#000' : t === 0.8 ? '#b33' : '#ddd'}" stroke-width="${strong ? 1 : 0.5}"${t === 0.8 ? ' stroke-dasharray="4,3"' : ''}/>`);
    const lab = t < 0.25 ? `1/${Math.round(1 / t)}` : String(t);
    out.push(`<text x="${xx}" y="${bottom + 14}" text-anchor="middle">${lab}</text>`);
  }
  out.push(`<text x="${left + plotW / 2}" y="${bottom + 30}" text-anchor="middle">cyrsync / Cyrus 3.6.1 (log scale; left of 1 = cyrsync uses less; dashed: wall-time goal 0.8)</text>`);
  comparisons.forEach((c, gi) => {
    const y0 = top + gi * groupH;
    const label = `${c.suite} ${c.dataset} ${c.compress ? 'deflate' : 'plain'}`;
    out.push(`<text x="${left - 8}" y="${y0 + groupH / 2}" text-anchor="end">${esc(label)}</text>`);
    metrics.forEach((m, mi) => {
      const r = c.ratio[m.key];
      if (!Number.isFinite(r)) return;
      const y = y0 + mi * rowH + 2;
      const x1 = x(1);
      const x2 = x(r);
      out.push(`<rect x="${Math.min(x1, x2).toFixed(1)}" y="${y}" width="${Math.max(1, Math.abs(x2 - x1)).toFixed(1)}" height="${rowH - 3}" fill="${m.color}"><title>${m.label}: ${r.toFixed(3)}</title></rect>`);
      out.push(`<text x="${(Math.max(x1, x2) + 4).toFixed(1)}" y="${y + rowH - 5}" font-size="10">${r.toFixed(2)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// -------------------------------------------------------------------- README

export const README_START = '<!-- bench:start -->';
export const README_END = '<!-- bench:end -->';
export const CHART_FILE = path.join(RESULTS_DIR, 'ratios.svg');

function mdTable(rows: string[][]): string {
  const head = rows[0]!;
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map((_, i) => (i < 3 ? '---' : '---:')).join(' | ')} |`,
    ...rows.slice(1).map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

/** The issue's goals per comparison: wall <= 0.8 x Cyrus, peak RSS <= 100 MB, CPU/MB below Cyrus. */
export function goalLines(comps: Comparison[]): string[] {
  const miss = (pred: (c: Comparison) => boolean): string =>
    comps
      .filter(pred)
      .map((c) => `${c.suite} ${c.dataset} ${c.compress ? 'deflate' : 'plain'}`)
      .join(', ') || 'none';
  return [
    `Goals missed: wall time > 0.8 × Cyrus: ${miss((c) => !(c.ratio.wall <= 0.8))}; ` +
      `peak RSS > 100 MB: ${miss((c) => !(c.cyrsync.peakRssKiB * 1024 <= 100e6))}; ` +
      `CPU per MB not below Cyrus: ${miss((c) => !(c.ratio.cpuPerMB < 1))}.`,
  ];
}

/** The README block from the latest e2e, load and coldstart results. */
export function readmeBlock(): string {
  const results = ['e2e', 'load', 'coldstart'].map(readLatest).filter((r): r is SuiteResult => r !== undefined);
  const comps = results.flatMap((r) => r.comparisons);
  const cold = results.flatMap((r) => r.coldStart ?? []);
  const lines: string[] = [
    README_START,
    '',
    '`npm run bench -- e2e [--quick] [--runs N] [--datasets 4k,20M,1G] [--modes deflate,plain] [--budget MIN]`: the real Cyrus 3.6.1 ' +
      '`sync_client` pushes the same user (10,000 × 4 KB; 20 × 20 MB; 1 × 1 GiB) from a real master to the real ' +
      '`sync_server` and to cyrsync, alternating, each run on a fresh target, with COMPRESS DEFLATE and without. ' +
      '`npm run bench -- load [--total 5G] [--size 20M]`: `cyrsync bench-client` streams 5 GB to each. ' +
      '`npm run bench -- coldstart`: spawn to greeting. `npm run bench -- profile --datasets 4k`: a `--cpu-prof` ' +
      'run of cyrsync with its hot spots. `npm run bench -- report` re-renders this block and the chart from ' +
      '`benchmarks/results/*-latest.json`. The e2e runs go in rounds (every data set and mode once per round) and a ' +
      'round starts only when it should end within the budget (default 27 min), so the suite stays under 30 min.',
    '',
  ];
  if (results.length === 0) {
    lines.push('No benchmark results yet: `npm run bench -- e2e`, `npm run bench -- load`, `npm run bench -- coldstart`.');
  } else {
    const m = results[0]!.machine;
    lines.push(
      `Latest figures (${results.map((r) => `${r.suite} ${r.machine.date.slice(0, 16).replace('T', ' ')} UTC`).join(', ')}) on ` +
        `${m.cpus} × ${m.model}, ${m.ramGiB} GiB RAM, Node ${m.node}; the real Cyrus 3.6.1 sync_server side by side, ` +
        `medians of alternating runs, fresh target each run. Ratios are cyrsync / Cyrus (below 1: cyrsync uses less). ` +
        `Peak RSS is the highest VmHWM of one server process (the sync_server child; the cyrsync process).`,
      '',
    );
    if (comps.length) lines.push(mdTable([HEADER, ...comps.map(rowOf)]), '', ...goalLines(comps), '');
    if (cold.length) {
      lines.push(
        mdTable([
          ['cold start', 'mode', 'runs', 'median ms', 'min ms', 'max ms'],
          ...cold.map((c) => ['spawn to greeting', c.mode, String(c.runs), c.medianMs.toFixed(1), c.minMs.toFixed(1), c.maxMs.toFixed(1)]),
        ]),
        '',
      );
    }
    if (comps.length) lines.push('![cyrsync / Cyrus ratios](benchmarks/results/ratios.svg)', '');
  }
  lines.push(...budgetLines());
  lines.push(README_END);
  return lines.join('\n');
}

/** What `npm run bench -- budget` writes (benchmarks/budget.ts). */
interface BudgetResult {
  machine: { date: string };
  loadAvg: number[];
  options: { sessions: number; messages: number; size: number; budgetMiB: number };
  peakAfterHostileMiB: number;
  peakMiB: number;
  sessionsFailed: number;
  loadSeconds: number;
}

/** The memory-budget rows of the README block, from budget-latest.json. */
export function budgetLines(): string[] {
  let r: BudgetResult;
  try {
    r = JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, 'budget-latest.json'), 'utf8')) as BudgetResult;
  } catch {
    return [];
  }
  const o = r.options;
  const load = r.loadAvg.map((l) => l.toFixed(1)).join(' / ');
  const verdict = r.peakMiB <= o.budgetMiB && r.sessionsFailed === 0 ? 'met' : 'missed';
  return [
    '`npm run bench -- budget [--sessions 50] [--messages 200] [--size 4k] [--budget 96]`: one standalone cyrsync ' +
      'sync-server takes the hostile-input catalogue (5 × a 100,000-GUID APPLY RESERVE answered by a `* MISSING` of ' +
      'all of them, 5 × a 10 MB command line, 100 logins, several connections at once), then N concurrent ' +
      'sessions of M messages each (bench-client workloads); its peak RSS is compared with `cyrsync_memory_budget`.',
    '',
    `Latest (${r.machine.date.slice(0, 16).replace('T', ' ')} UTC, load average ${load} on the 2 shared cores: a noisy single run):`,
    '',
    mdTable([
      ['suite', 'phase', 'server peak RSS MiB', 'budget MiB', 'sessions failed', 'seconds'],
      ['budget', 'hostile inputs', r.peakAfterHostileMiB.toFixed(1), String(o.budgetMiB), '-', '-'],
      ['budget', `then ${o.sessions} sessions × ${o.messages} × ${o.size} B`, r.peakMiB.toFixed(1), String(o.budgetMiB), String(r.sessionsFailed), r.loadSeconds.toFixed(1)],
    ]),
    '',
    `Goal (peak RSS within the budget, no session fails): ${verdict}.`,
    '',
  ];
}

/** Re-renders the chart and the README block from the latest result files. */
export function refreshReport(): void {
  const results = ['e2e', 'load'].map(readLatest).filter((r): r is SuiteResult => r !== undefined);
  const comps = results.flatMap((r) => r.comparisons);
  if (comps.length) {
    const m = results[0]!.machine;
    fs.mkdirSync(RESULTS_DIR, { recursive: true });
    fs.writeFileSync(CHART_FILE, svgChart(comps, `cyrsync vs Cyrus 3.6.1 sync_server, ${m.date.slice(0, 10)}, ${m.cpus} × ${m.model}`));
  }
  const readme = path.join(REPO, 'README.md');
  const text = fs.readFileSync(readme, 'utf8');
  const block = readmeBlock();
  const a = text.indexOf(README_START);
  const b = text.indexOf(README_END);
  let next: string;
  if (a >= 0 && b > a) next = text.slice(0, a) + block + text.slice(b + README_END.length);
  else if (/^## Benchmarks$/m.test(text)) {
    // first run: the block goes at the end of the existing section
    const h = text.search(/^## Benchmarks$/m);
    const after = text.slice(h + 1).search(/^## /m);
    const end = after < 0 ? text.length : h + 1 + after;
    next = `${text.slice(0, end).replace(/\n*$/, '\n')}\n${block}\n${after < 0 ? '' : '\n'}${text.slice(end)}`;
  } else next = `${text.replace(/\n*$/, '\n')}\n## Benchmarks\n\n${block}\n`;
  if (next !== text) fs.writeFileSync(readme, next);
}

export async function run(_args: string[]): Promise<void> {
  refreshReport();
  for (const s of ['e2e', 'load']) {
    const r = readLatest(s);
    if (r) console.log(`${table(r.comparisons)}\n${goalLines(r.comparisons).join('\n')}\n`);
  }
  const c = readLatest('coldstart');
  if (c?.coldStart) console.log(coldTable(c.coldStart));
  console.log(`README block and ${path.relative(REPO, CHART_FILE)} updated (machine now: ${JSON.stringify(machine())})`);
}
