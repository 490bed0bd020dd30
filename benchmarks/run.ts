/**
 * Benchmark dispatcher: `npm run bench -- <suite> [args...]`.
 * Each suite is a module exporting `run(args: string[]): Promise<void>`.
 */
const SUITES: Record<string, () => Promise<{ run: (args: string[]) => Promise<void> }>> = {
  parser: () => import('./parser.js'),
  e2e: () => import('./e2e.js'),
  load: () => import('./load.js'),
  coldstart: () => import('./coldstart.js'),
  report: () => import('./report.js'),
  profile: () => import('./lib/profile.js'),
  budget: () => import('./budget.js'),
};

const [name, ...args] = process.argv.slice(2);
if (name === undefined || !(name in SUITES)) {
  console.error(`usage: npm run bench -- <suite> [args]\nsuites: ${Object.keys(SUITES).join(', ')}`);
  process.exit(2);
}
const suite = await SUITES[name]!();
await suite.run(args);
