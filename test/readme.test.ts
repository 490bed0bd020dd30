/**
 * README promises: the configuration table lists exactly the keys cyrsync
 * reads, with their defaults (generated from src/config.ts).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { configKeysMarkdown } from '../src/config.js';

test('README configuration table equals the keys src/config.ts reads', (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('<!-- config-keys:start -->');
  const end = readme.indexOf('<!-- config-keys:end -->');
  t.true(start > 0 && end > start, 'README has the config-keys markers');
  const table = readme.slice(start + '<!-- config-keys:start -->'.length, end).trim();
  t.is(table, configKeysMarkdown().trim());
});
