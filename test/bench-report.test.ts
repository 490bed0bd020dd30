import test from 'ava';
import { compare, goalLines, svgChart, table, type Sample } from '../benchmarks/report.js';
import { median, parseClientLine, parseTreeLine } from '../benchmarks/lib/common.js';

function sample(server: 'cyrus' | 'cyrsync', run: number, wall: number, rssKiB: number, cpu: number): Sample {
  const bytes = 100e6;
  return { suite: 'e2e', dataset: '20x20M', compress: true, server, run, bytes, wallSeconds: wall, mbPerSecond: bytes / 1e6 / wall, peakRssKiB: rssKiB, cpuSeconds: cpu, diskBytes: 101e6 };
}

test('median of odd and even counts', (t) => {
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 3, 2]), 2.5);
  t.true(Number.isNaN(median([])));
});

test('compare takes medians per server and divides cyrsync by Cyrus', (t) => {
  const samples = [
    sample('cyrus', 1, 10, 40 * 1024, 4),
    sample('cyrsync', 1, 5, 80 * 1024, 1),
    sample('cyrus', 2, 30, 42 * 1024, 6),
    sample('cyrsync', 2, 9, 90 * 1024, 3),
    sample('cyrus', 3, 20, 41 * 1024, 5),
    sample('cyrsync', 3, 7, 200 * 1024, 2),
  ];
  const [c] = compare(samples);
  t.truthy(c);
  t.is(c!.cyrus.runs, 3);
  t.is(c!.cyrus.wallSeconds, 20);
  t.is(c!.cyrsync.wallSeconds, 7);
  t.is(c!.ratio.wall, 7 / 20);
  t.is(c!.ratio.peakRss, (90 * 1024) / (41 * 1024));
  // CPU ms per MB: 2 s and 5 s over 100 MB
  t.is(c!.cyrsync.cpuMsPerMB, 20);
  t.is(c!.ratio.cpuPerMB, 2 / 5);
  t.true(table([c!]).includes('0.35'));
});

test('a data set measured on one server only is not compared', (t) => {
  t.deepEqual(compare([sample('cyrus', 1, 1, 1, 1)]), []);
});

test('goal lines name each comparison that misses a goal', (t) => {
  const miss = compare([sample('cyrus', 1, 10, 40 * 1024, 1), sample('cyrsync', 1, 9, 120 * 1024, 2)]);
  const line = goalLines(miss).join('\n');
  t.regex(line, /wall time > 0\.8 × Cyrus: e2e 20x20M deflate/);
  t.regex(line, /peak RSS > 100 MB: e2e 20x20M deflate/);
  t.regex(line, /CPU per MB not below Cyrus: e2e 20x20M deflate/);
  const met = compare([sample('cyrus', 1, 10, 40 * 1024, 2), sample('cyrsync', 1, 5, 60 * 1024, 1)]);
  t.regex(goalLines(met).join('\n'), /0\.8 × Cyrus: none; peak RSS > 100 MB: none; CPU per MB not below Cyrus: none/);
});

test('the chart is one SVG element with a bar per finite ratio and escaped labels', (t) => {
  const comps = compare([sample('cyrus', 1, 10, 40 * 1024, 2), sample('cyrsync', 1, 5, 60 * 1024, 1)]);
  const svg = svgChart(comps, 'a < b & c');
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  t.true(svg.trimEnd().endsWith('</svg>'));
  t.true(svg.includes('a &lt; b &amp; c'));
  t.is((svg.match(/<title>/g) ?? []).length, 3);
  t.true(svg.includes('<title>wall time: 0.500</title>'));
});

test('sync_client and server summary lines of cyrus-peer are parsed', (t) => {
  const out =
    '+ sync_client -C x -S 127.0.0.1:1 -u bob\n' +
    'sync_client exit=0 wall=12.34s user=1.50s sys=0.25s maxrss=41132KB (harness 12.4s)\n' +
    'server side (pid 5 and its children): peak RSS (VmHWM) 81352 KB in sync_server pid 7; tree CPU 10.82s during the run\n';
  t.deepEqual(parseClientLine(out), { exit: 0, wallSeconds: 12.34, clientCpuSeconds: 1.75, clientPeakRssKiB: 41132 });
  t.deepEqual(parseTreeLine(out.split('\n')[2]!), { peakRssKiB: 81352, process: 'sync_server', cpuSeconds: 10.82 });
  t.throws(() => parseClientLine('nothing here'), { message: /no sync_client summary/ });
  t.throws(() => parseTreeLine(''), { message: /no server sample/ });
});
