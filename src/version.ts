import { readFileSync } from 'node:fs';

/** The package version, as shown in the greeting (`Cyrus sync server <version>`: no spaces). */
export const VERSION: string = (() => {
  // src/version.ts runs from the source tree (tests) and from dist/src (built).
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'cyrsync' && pkg.version) return `cyrsync-${pkg.version}`;
    } catch {
      /* try the next location */
    }
  }
  return 'cyrsync';
})();
