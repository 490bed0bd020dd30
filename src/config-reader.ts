/**
 * The imapd.conf file reader, line by line as Cyrus 3.6.1's
 * config_read_file (see src/config.ts for the format): logical lines,
 * `@include`, `<ident>_<key>` overrides, keys given twice. Each value of a
 * known option is checked as it is read; the Settings are built afterwards
 * (src/config-settings.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ALIASES, SPEC_BY_KEY, validateOption } from './config-keys.js';
import { ConfigError, isAlnum, isSpace } from './config-values.js';

/** One value read, with where it was read. */
export interface Entry {
  value: string;
  file: string;
  line: number;
  /** 2 when set through `<ident>_<key>`, 1 otherwise (Cyrus imapopts[].seen). */
  seen: 1 | 2;
}

/** Reads imapd.conf text and files into `entries`, in the order and with the checks of Cyrus. */
export class ConfigReader {
  readonly entries = new Map<string, Entry>();
  readonly warnings: string[] = [];
  private readonly included = new Set<string>();
  constructor(
    private readonly ident: string | undefined,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  readFile(filename: string, from?: { file: string; line: number }): void {
    let text: string;
    let opened = filename;
    const prefix = this.env.CYRUS_PREFIX;
    try {
      if (prefix && existsSync(prefix + filename)) opened = prefix + filename;
      text = readFileSync(opened, 'utf8');
    } catch (err) {
      const reason = err instanceof Error && 'code' in err ? describeFsError(err as NodeJS.ErrnoException) : String(err);
      throw new ConfigError(from?.file ?? filename, from?.line ?? 0, from ? '@include' : '', `can't open configuration file ${filename}: ${reason}`);
    }
    const id = resolve(opened);
    if (this.included.has(id)) {
      throw new ConfigError(from?.file ?? filename, from?.line ?? 0, '@include', `configuration file ${filename} included twice`);
    }
    this.included.add(id);
    this.readText(text, filename);
  }

  readText(text: string, filename: string): void {
    const physical = text.split('\n');
    // A final '\n' leaves an empty last element that is not a line.
    if (physical.length > 0 && physical[physical.length - 1] === '') physical.pop();
    let lineno = 0;
    let logical = '';
    for (let i = 0; i < physical.length; i++) {
      const piece = physical[i]!;
      const terminated = i < physical.length - 1 || text.endsWith('\n');
      lineno++;
      if (terminated && piece.endsWith('\\')) {
        logical += piece.slice(0, -1);
        continue;
      }
      logical += piece;
      const line = logical;
      logical = '';
      this.readLine(line, filename, lineno);
    }
    // Cyrus's reader stops at end of file while still joining: the dangling line is dropped.
    if (logical !== '') {
      this.warnings.push(`${filename} line ${lineno}: the last line ends with '\\' (continued past the end of the file) and is ignored, as Cyrus does`);
    }
  }

  private readLine(buf: string, filename: string, lineno: number): void {
    let p = 0;
    while (p < buf.length && isSpace(buf[p])) p++;
    if (p >= buf.length || buf[p] === '#') return;
    const keyStart = p;
    if (buf[p] === '@') p++;
    while (p < buf.length && (isAlnum(buf[p]!) || buf[p] === '-' || buf[p] === '_')) p++;
    if (buf[p] !== ':') {
      const shown = buf.slice(keyStart, Math.min(buf.length, keyStart + 40)).trim();
      throw new ConfigError(filename, lineno, '', `invalid option name "${shown}" (expected "key: value"; keys hold only letters, digits, '-' and '_', followed directly by ':')`);
    }
    const fullkey = buf.slice(keyStart, p).toLowerCase();
    let value = buf.slice(p + 1);
    let a = 0;
    let b = value.length;
    while (a < b && isSpace(value[a])) a++;
    while (b > a && isSpace(value[b - 1])) b--;
    value = value.slice(a, b);
    if (value === '') throw new ConfigError(filename, lineno, fullkey, 'empty option value');

    if (fullkey.startsWith('@')) {
      if (fullkey === '@include') {
        this.readFile(value, { file: filename, line: lineno });
        return;
      }
      throw new ConfigError(filename, lineno, fullkey, 'invalid directive (only @include is known)');
    }

    let key = fullkey;
    let seen: 1 | 2 = 1;
    if (this.ident) {
      const pre = this.ident.toLowerCase() + '_';
      const rest = fullkey.slice(pre.length);
      if (fullkey.startsWith(pre) && (SPEC_BY_KEY.has(rest) || rest in ALIASES)) {
        key = rest;
        seen = 2;
      }
    }
    const prev = this.entries.get(key);
    if (prev) {
      if (prev.seen === 2 && seen === 1) return; // the service-specific form wins silently
      if (prev.seen === seen) {
        throw new ConfigError(filename, lineno, fullkey, `option specified twice (first on line ${prev.line} of ${prev.file})`);
      }
    }
    validateOption(key, value, filename, lineno, this.warnings);
    this.entries.set(key, { value, file: filename, line: lineno, seen });
  }
}

function describeFsError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT':
      return 'No such file or directory';
    case 'EACCES':
      return 'Permission denied';
    case 'EISDIR':
      return 'Is a directory';
    default:
      return err.message;
  }
}

