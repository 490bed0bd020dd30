/**
 * `npm run bench -- profile [--datasets 4k] [--modes deflate]`: one sync_client
 * push of a data set to a cyrsync started with `node --cpu-prof`, then the
 * profile's self time summed by function and by file (top entries), so a
 * missed goal comes with where the server's time goes. The .cpuprofile is
 * kept under benchmarks/results/profiles/ for a flame graph (Chrome DevTools,
 * speedscope).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Cyrsync, portOpen, waitFor } from '../../test/interop/harness.js';
import { CLI, REPO, RESULTS_DIR, ensureBuilt, ensureDataset, ensureMaster, log, parseClientLine, peer } from './common.js';
import { DATASETS } from '../e2e.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Hotspot {
  name: string;
  ms: number;
  share: number;
}

/** Self time by function and by file of a V8 .cpuprofile. */
export function summarize(p: CpuProfile, top = 25): { total: number; functions: Hotspot[]; files: Hotspot[] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  let total = 0;
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    total += ms;
    const url = n.callFrame.url.replace(/^file:\/\//, '').replace(REPO + '/', '');
    const where = url || '(native)';
    const name = `${n.callFrame.functionName || '(anonymous)'} ${where}${url ? `:${n.callFrame.lineNumber + 1}` : ''}`;
    fn.set(name, (fn.get(name) ?? 0) + ms);
    const f = url ? (url.startsWith('node:') ? url : url.replace(/^.*node_modules\//, 'node_modules/')) : n.callFrame.functionName || '(native)';
    file.set(f, (file.get(f) ?? 0) + ms);
  }
  const rank = (m: Map<string, number>): Hotspot[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, ms]) => ({ name, ms, share: ms / total }));
  return { total, functions: rank(fn), files: rank(file) };
}

export async function run(args: string[]): Promise<void> {
  const di = args.indexOf('--datasets');
  const want = di >= 0 ? args[di + 1]!.split(',') : ['4k'];
  const compress = !args.includes('--no-compress');
  await ensureBuilt();
  await ensureMaster();
  const dir = path.join(RESULTS_DIR, 'profiles');
  await fsp.mkdir(dir, { recursive: true });
  for (const d of DATASETS.filter((x) => want.includes(x.size) || want.includes(x.name))) {
    const pd = await ensureDataset(d);
    const profDir = await fsp.mkdtemp(path.join('/tmp', 'cyrsync-bench-prof-'));
    // the harness writes the configuration and passwords; the profiled server
    // then runs on the same configuration and port (--cpu-prof is refused in NODE_OPTIONS)
    const c = await Cyrsync.start();
    await c.stop();
    const child = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profDir}`, CLI, 'sync-server', '-C', c.conf, '--listen', c.target], {
      stdio: 'ignore',
    });
    const exited = once(child, 'exit');
    try {
      if (!(await waitFor(() => portOpen(c.port), 30_000, 50))) throw new Error('profiled cyrsync did not listen');
      const r = await peer(['bench', d.user, '--to', c.target, '--server-pid', String(child.pid), ...(compress ? [] : ['--no-compress'])]);
      const cl = parseClientLine(r.output);
      log(`${d.name} ${compress ? 'deflate' : 'plain'}: wall ${cl.wallSeconds} s; ${/^server side.*$/m.exec(r.output)?.[0] ?? ''}`);
    } finally {
      child.kill('SIGTERM');
      await exited;
      await c.remove();
    }
    const files = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
    if (files.length === 0) {
      log(`no .cpuprofile written in ${profDir} (the server must exit normally on SIGTERM)`);
      continue;
    }
    // the server process's profile is the largest (passwd runs are short)
    const biggest = files.map((f) => path.join(profDir, f)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0]!;
    const keep = path.join(dir, `cyrsync-${pd.name}-${compress ? 'deflate' : 'plain'}.cpuprofile`);
    await fsp.copyFile(biggest, keep);
    await fsp.rm(profDir, { recursive: true, force: true });
    const s = summarize(JSON.parse(fs.readFileSync(keep, 'utf8')) as CpuProfile);
    const lines = [`profile ${path.relative(REPO, keep)}: ${(s.total / 1000).toFixed(2)} s sampled`, 'self time by file:'];
    for (const h of s.files) lines.push(`  ${(h.share * 100).toFixed(1).padStart(5)}%  ${h.ms.toFixed(0).padStart(7)} ms  ${h.name}`);
    lines.push('self time by function:');
    for (const h of s.functions) lines.push(`  ${(h.share * 100).toFixed(1).padStart(5)}%  ${h.ms.toFixed(0).padStart(7)} ms  ${h.name}`);
    const text = lines.join('\n') + '\n';
    await fsp.writeFile(keep.replace(/\.cpuprofile$/, '.txt'), text);
    console.log(text);
  }
}
