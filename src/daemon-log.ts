/**
 * Where the daemon's pino logger writes, by front-end:
 *
 *  - standalone listener: JSON lines on stdout, or one readable line per
 *    record when stdout is a terminal;
 *  - master(8) service and stdin/stdout session: `cyrsync_log_file` when set
 *    (JSON lines), syslog(3) otherwise. Never fds 0-2: under master they are
 *    /dev/null or master's own log, and in stdin/stdout mode fd 1 (and often
 *    fd 2, under inetd) is the client connection.
 *
 * Syslog as Cyrus opens it (imap/global.c cyrus_init): ident `<prefix>/<ident>`
 * with the prefix from $CYRUS_SYSLOG_PREFIX, else `syslog_prefix`; facility
 * `syslog_facility`, else LOCAL6 (Cyrus's compiled-in SYSLOG_FACILITY);
 * LOG_PID. Records are written synchronously, so an exit right after a
 * record loses nothing.
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogLevelName } from './config.js';

export type LogMode = 'standalone' | 'master' | 'stdio';

export interface DaemonLogOptions {
  mode: LogMode;
  level: LogLevelName;
  /** Service name: syslog ident and `service` field. */
  ident: string;
  syslogPrefix?: string | null;
  syslogFacility?: string | null;
  /** JSON lines to this file instead of syslog (master and stdio modes). */
  file?: string | null;
  /** Base fields of every record. */
  base?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

const FACILITIES: Record<string, number> = {
  KERN: 0 << 3,
  USER: 1 << 3,
  MAIL: 2 << 3,
  DAEMON: 3 << 3,
  AUTH: 4 << 3,
  SYSLOG: 5 << 3,
  LPR: 6 << 3,
  NEWS: 7 << 3,
  UUCP: 8 << 3,
  CRON: 9 << 3,
  AUTHPRIV: 10 << 3,
  FTP: 11 << 3,
  LOCAL0: 16 << 3,
  LOCAL1: 17 << 3,
  LOCAL2: 18 << 3,
  LOCAL3: 19 << 3,
  LOCAL4: 20 << 3,
  LOCAL5: 21 << 3,
  LOCAL6: 22 << 3,
  LOCAL7: 23 << 3,
};

/** Cyrus's compiled-in SYSLOG_FACILITY (configure.ac: LOG_LOCAL6). */
export const DEFAULT_FACILITY = 'LOCAL6';

/** get_facility() of imap/global.c; unknown names fall back to LOCAL6 (Cyrus logs and does the same). */
export function facilityCode(name: string | null | undefined): { code: number; known: boolean } {
  if (!name) return { code: FACILITIES[DEFAULT_FACILITY]!, known: true };
  const n = name.toUpperCase().replace(/^LOG_/, '');
  const code = FACILITIES[n];
  return code === undefined ? { code: FACILITIES[DEFAULT_FACILITY]!, known: false } : { code, known: true };
}

/** `<prefix>/<ident>`, $CYRUS_SYSLOG_PREFIX first, as cyrus_init. */
export function syslogIdent(ident: string, prefix: string | null | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const p = env.CYRUS_SYSLOG_PREFIX || prefix;
  return p ? `${p}/${ident}` : ident;
}

const LOG_CRIT = 2;
const LOG_ERR = 3;
const LOG_WARNING = 4;
const LOG_NOTICE = 5;
const LOG_INFO = 6;
const LOG_DEBUG = 7;

/** pino level number -> syslog priority. */
export function syslogPriority(level: number): number {
  if (level >= 60) return LOG_CRIT;
  if (level >= 50) return LOG_ERR;
  if (level >= 40) return LOG_WARNING;
  if (level >= 30) return LOG_INFO;
  return LOG_DEBUG;
}
void LOG_NOTICE;

const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'service', 'v']);

/**
 * One pino JSON record as a single text line: the message, then the fields
 * as key=value (strings with spaces quoted, errors by their message).
 */
export function formatRecord(rec: Record<string, unknown>): string {
  const parts: string[] = [];
  if (typeof rec.msg === 'string' && rec.msg !== '') parts.push(rec.msg);
  for (const [k, v] of Object.entries(rec)) {
    if (SKIP.has(k) || v === undefined) continue;
    parts.push(`${k}=${fieldText(v)}`);
  }
  // syslog lines are single lines: control characters would split or garble them.
  return parts.join(' ').replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\n' ? ' | ' : ' '));
}

function fieldText(v: unknown): string {
  if (v !== null && typeof v === 'object') {
    const o = v as { message?: unknown; code?: unknown };
    if (typeof o.message === 'string') return JSON.stringify(typeof o.code === 'string' ? `${o.code}: ${o.message}` : o.message);
    return JSON.stringify(v);
  }
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return String(v);
}

// -------------------------------------------------------------------- syslog(3)

interface Syslog {
  open(ident: string, facility: number): void;
  write(priority: number, line: string): void;
}

let syslogCache: Syslog | undefined;
/** openlog(3) keeps the ident pointer: the buffer must live as long as the process. */
let identKeepAlive: Buffer | undefined;

function libcSyslog(): Syslog {
  if (syslogCache) return syslogCache;
  // Required on demand, not imported: koffi stays out of the standalone path.
  const mod = createRequire(import.meta.url)('koffi') as typeof import('koffi') & { default?: typeof import('koffi') };
  const koffi = mod.default ?? mod;
  const lib = koffi.load('libc.so.6');
  const openlog = lib.func('void openlog(void *ident, int option, int facility)');
  const syslog = lib.func('void syslog(int priority, const char *format, ...)');
  const LOG_PID = 0x01;
  syslogCache = {
    open(ident, facility) {
      identKeepAlive = Buffer.alloc(Buffer.byteLength(ident) + 1);
      identKeepAlive.write(ident);
      openlog(identKeepAlive, LOG_PID, facility);
    },
    write(priority, line) {
      syslog(priority, '%s', 'str', line);
    },
  };
  return syslogCache;
}

/** A pino destination writing each record with syslog(3). */
export function syslogDestination(ident: string, facility: number): DestinationStream {
  const sys = libcSyslog();
  sys.open(ident, facility);
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        sys.write(LOG_INFO, line.trimEnd());
        return;
      }
      sys.write(syslogPriority(Number(rec.level) || 30), formatRecord(rec));
    },
  };
}

/** A single syslog line before any logger exists (configuration errors). */
export function syslogOnce(ident: string, facility: string | null | undefined, priority: 'err' | 'info', line: string): void {
  try {
    const sys = libcSyslog();
    sys.open(ident, facilityCode(facility).code);
    sys.write(priority === 'err' ? LOG_ERR : LOG_INFO, line);
  } catch {
    /* no syslog: nothing else may be written either */
  }
}

// ----------------------------------------------------------------- terminal

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** Human-readable records for a terminal: `HH:MM:SS.mmm LEVEL message key=value...`. */
export function prettyDestination(out: NodeJS.WritableStream = process.stdout): DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now());
      const ts = t.toISOString().slice(11, 23);
      const level = LEVEL_NAMES[Number(rec.level)] ?? String(rec.level);
      out.write(`${ts} ${level.padEnd(5)} ${formatRecord(rec)}\n`);
    },
  };
}

// ------------------------------------------------------------------- logger

export function createDaemonLogger(o: DaemonLogOptions): Logger {
  const opts = { level: o.level, base: { service: o.ident, ...(o.base ?? {}) } };
  if (o.mode === 'standalone') {
    return process.stdout.isTTY ? pino(opts, prettyDestination()) : pino(opts, pino.destination({ dest: 1, sync: false }));
  }
  if (o.file) return pino(opts, pino.destination({ dest: o.file, sync: true, mkdir: true }));
  const facility = facilityCode(o.syslogFacility);
  const log = pino(opts, syslogDestination(syslogIdent(o.ident, o.syslogPrefix, o.env), facility.code));
  if (!facility.known) log.error(`config error: syslog name ${o.syslogFacility} not recognised`);
  return log;
}

/** Makes sure a file destination exists and is writable before the first record (clear error otherwise). */
export function checkLogFile(file: string): void {
  const fd = fs.openSync(file, 'a');
  fs.closeSync(fd);
}
