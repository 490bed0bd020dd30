/**
 * Logging per run mode.
 *
 * - standalone: JSON lines on stdout; when stdout is a terminal, one
 *   readable line per record instead (`HH:MM:SS.mmm LEVEL message key=value`).
 * - master and stdio: file descriptors 0-2 belong to the client connection,
 *   so nothing is ever written to stdout or stderr. Records go to
 *   `cyrsync_log_file` (JSON lines) when set, else to syslog through libc
 *   openlog(3)/syslog(3) (bound with koffi), with Cyrus's identity rules:
 *   ident `<prefix>/<service>` where the prefix comes from
 *   $CYRUS_SYSLOG_PREFIX or `syslog_prefix`, option LOG_PID, facility from
 *   `syslog_facility` (Cyrus's get_facility names), default LOG_LOCAL6 —
 *   upstream Cyrus's compiled-in default (configure.ac). Debian's Cyrus
 *   packages are built with LOG_MAIL instead; set `syslog_facility: MAIL` to
 *   log where they do.
 *
 * Levels: pino's, plus `notice` (35) for the records Cyrus logs at
 * LOG_NOTICE (login, badlogin). Syslog priorities: trace/debug → DEBUG,
 * info → INFO, notice → NOTICE, warn → WARNING, error → ERR, fatal → CRIT.
 */
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { Settings } from './config.js';

export type LogMode = 'standalone' | 'master' | 'stdio';

/** The logger type used across cyrsync: pino with the extra `notice` level. */
export type CyrsyncLogger = Logger<'notice'>;

export const CUSTOM_LEVELS = { notice: 35 } as const;

// syslog.h
export const LOG_EMERG = 0;
export const LOG_ALERT = 1;
export const LOG_CRIT = 2;
export const LOG_ERR = 3;
export const LOG_WARNING = 4;
export const LOG_NOTICE = 5;
export const LOG_INFO = 6;
export const LOG_DEBUG = 7;
export const LOG_PID = 0x01;

/** Facility codes (already shifted, as syslog.h defines them). */
export const FACILITIES: Readonly<Record<string, number>> = {
  DAEMON: 3 << 3,
  MAIL: 2 << 3,
  NEWS: 7 << 3,
  USER: 1 << 3,
  LOCAL0: 16 << 3,
  LOCAL1: 17 << 3,
  LOCAL2: 18 << 3,
  LOCAL3: 19 << 3,
  LOCAL4: 20 << 3,
  LOCAL5: 21 << 3,
  LOCAL6: 22 << 3,
  LOCAL7: 23 << 3,
};

/** Upstream Cyrus's SYSLOG_FACILITY. */
export const DEFAULT_FACILITY = FACILITIES['LOCAL6']!;

/**
 * Cyrus get_facility(): the names are matched case-insensitively; an
 * unknown name falls back to the default (Cyrus logs an error about it;
 * `known` tells the caller to do the same).
 */
export function syslogFacility(name: string | null | undefined): { facility: number; known: boolean } {
  if (name === null || name === undefined) return { facility: DEFAULT_FACILITY, known: true };
  const f = FACILITIES[name.toUpperCase()];
  return f === undefined ? { facility: DEFAULT_FACILITY, known: false } : { facility: f, known: true };
}

/** Syslog priority of a pino level number. */
export function syslogPriority(level: number): number {
  if (level >= 60) return LOG_CRIT;
  if (level >= 50) return LOG_ERR;
  if (level >= 40) return LOG_WARNING;
  if (level >= 35) return LOG_NOTICE;
  if (level >= 30) return LOG_INFO;
  return LOG_DEBUG;
}

/**
 * The syslog identity, as Cyrus cyrus_init() builds it: $CYRUS_SYSLOG_PREFIX
 * wins over `syslog_prefix`; with a prefix the ident is `<prefix>/<service>`.
 */
export function syslogIdent(service: string, settings: Pick<Settings, 'syslog_prefix'>, env: NodeJS.ProcessEnv = process.env): string {
  const prefix = env.CYRUS_SYSLOG_PREFIX || settings.syslog_prefix;
  return prefix ? `${prefix}/${service}` : service;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 35: 'NOTICE', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMIT = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

function renderValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

/** `message key=value ...` of one pino record (the form used for syslog and the terminal). */
export function formatRecordText(rec: Record<string, unknown>): string {
  const parts: string[] = [];
  const msg = rec['msg'];
  if (msg !== undefined) parts.push(typeof msg === 'string' ? msg : JSON.stringify(msg));
  for (const [k, v] of Object.entries(rec)) {
    if (OMIT.has(k)) continue;
    if (k === 'err' && v && typeof v === 'object') {
      const e = v as { type?: string; message?: string; stack?: string };
      parts.push(`err=${renderValue(`${e.type ?? 'Error'}: ${e.message ?? ''}`)}`);
      continue;
    }
    parts.push(`${k}=${renderValue(v)}`);
  }
  return parts.join(' ');
}

/** One terminal line for a pino JSON line (no colour when `color` is false). */
export function formatPrettyLine(jsonLine: string, color: boolean): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(jsonLine) as Record<string, unknown>;
  } catch {
    return jsonLine.endsWith('\n') ? jsonLine : jsonLine + '\n';
  }
  const t = typeof rec['time'] === 'number' ? new Date(rec['time']) : new Date();
  const hh = String(t.getHours()).padStart(2, '0');
  const mm = String(t.getMinutes()).padStart(2, '0');
  const ss = String(t.getSeconds()).padStart(2, '0');
  const ms = String(t.getMilliseconds()).padStart(3, '0');
  const level = typeof rec['level'] === 'number' ? rec['level'] : 30;
  let name = (LEVEL_NAMES[level] ?? String(level)).padEnd(6);
  if (color) {
    const c = level >= 50 ? 31 : level >= 40 ? 33 : level >= 35 ? 36 : level >= 30 ? 32 : 90;
    name = `\x1b[${c}m${name}\x1b[0m`;
  }
  let line = `${hh}:${mm}:${ss}.${ms} ${name} ${formatRecordText(rec)}`;
  const err = rec['err'] as { stack?: string } | undefined;
  if (err && typeof err.stack === 'string' && level >= 50) line += '\n' + err.stack;
  return line + '\n';
}

/** A pino destination that rewrites each record for a terminal and writes it to `out`. */
export function prettyStream(out: NodeJS.WritableStream, color = true): DestinationStream {
  return {
    write(msg: string): void {
      out.write(formatPrettyLine(msg, color));
    },
  };
}

// ---------------------------------------------------------------------------
// syslog through libc

export interface SyslogBinding {
  openlog(ident: string, option: number, facility: number): void;
  syslog(priority: number, message: string): void;
  closelog(): void;
}

let libcBinding: SyslogBinding | null | undefined;

/**
 * libc openlog/syslog/closelog through koffi, or null when they cannot be
 * bound (no koffi build for this platform, no glibc). openlog keeps the
 * ident pointer, so the ident lives in native memory allocated here, freed
 * only when a later openlog replaces it.
 */
export function loadLibcSyslog(): SyslogBinding | null {
  if (libcBinding !== undefined) return libcBinding;
  try {
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as typeof import('koffi');
    const libc = koffi.load('libc.so.6');
    const openlog = libc.func('void openlog(void *ident, int option, int facility)');
    const syslog = libc.func('void syslog(int priority, const char *format, ...)');
    const closelog = libc.func('void closelog()');
    let identMemory: unknown = null;
    libcBinding = {
      openlog(ident: string, option: number, facility: number): void {
        const bytes = Buffer.concat([Buffer.from(ident, 'utf8'), Buffer.from([0])]);
        const mem: unknown = koffi.alloc('uint8_t', bytes.length);
        koffi.encode(mem, koffi.array('uint8_t', bytes.length), [...bytes]);
        openlog(mem, option, facility);
        // libc now points at the new ident; calls are synchronous on this thread, so the old one is unused.
        if (identMemory !== null) koffi.free(identMemory);
        identMemory = mem;
      },
      syslog(priority: number, message: string): void {
        // Never pass the message as the format: it may contain '%'.
        syslog(priority, '%s', 'str', message);
      },
      closelog(): void {
        closelog();
      },
    };
  } catch {
    libcBinding = null;
  }
  return libcBinding;
}

/** Longest text handed to syslog(3); longer records are cut (a datagram to /dev/log must stay small). */
export const MAX_SYSLOG_TEXT = 8192;

/**
 * A pino destination writing each record to syslog with the priority of its
 * level and the text `message key=value ...`. `binding` is for tests.
 */
export function syslogStream(
  opts: { ident: string; facility: number; binding?: SyslogBinding | null },
): DestinationStream {
  const binding = opts.binding === undefined ? loadLibcSyslog() : opts.binding;
  if (!binding) throw new Error('syslog is not available: libc openlog/syslog could not be bound (set cyrsync_log_file instead)');
  binding.openlog(opts.ident, LOG_PID, opts.facility);
  return {
    write(line: string): void {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        binding.syslog(LOG_INFO, line.trimEnd().slice(0, MAX_SYSLOG_TEXT));
        return;
      }
      const level = typeof rec['level'] === 'number' ? rec['level'] : 30;
      let text = formatRecordText(rec);
      if (text.length > MAX_SYSLOG_TEXT) text = text.slice(0, MAX_SYSLOG_TEXT - 3) + '...';
      binding.syslog(syslogPriority(level) | opts.facility, text);
    },
  };
}

// ---------------------------------------------------------------------------

export interface CreateLoggerOptions {
  mode: LogMode;
  settings: Settings;
  /** Log file for master/stdio modes (overrides `cyrsync_log_file`). */
  file?: string;
  /** Syslog service name (Cyrus: the service name from cyrus.conf); default `cyrsync`. */
  service?: string;
  /** Lowest level (default `settings.cyrsync_log_level`). */
  level?: string;
  /** Destination override (tests). */
  destination?: DestinationStream;
  /** Environment for $CYRUS_SYSLOG_PREFIX (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Standalone output (default process.stdout). */
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  /** libc syslog binding (tests; null = unavailable). Default: loadLibcSyslog(). */
  syslogBinding?: SyslogBinding | null;
}

/** Where records of a mode go, in words (for the startup line). */
export interface LogTarget {
  kind: 'stdout' | 'pretty' | 'file' | 'syslog' | 'custom';
  /** File path, or syslog `ident facility`. */
  detail?: string;
  /** Set when `syslog_facility` named an unknown facility (the default was used). */
  warning?: string;
}

/**
 * Create the root logger of a run mode. In master and stdio modes a failure
 * to bind syslog falls back to `<configdirectory>/cyrsync.log`, never to the
 * standard streams. `logger.target` (non-enumerable) says where records go.
 */
export function createLogger(opts: CreateLoggerOptions): CyrsyncLogger & { readonly target: LogTarget } {
  const { settings } = opts;
  const level = opts.level ?? settings.cyrsync_log_level;
  let dest: DestinationStream;
  let target: LogTarget;
  if (opts.destination) {
    dest = opts.destination;
    target = { kind: 'custom' };
  } else if (opts.mode === 'standalone') {
    const out = opts.stdout ?? process.stdout;
    if (out.isTTY) {
      dest = prettyStream(out, true);
      target = { kind: 'pretty' };
    } else if (out === process.stdout) {
      dest = pino.destination({ fd: 1, sync: true });
      target = { kind: 'stdout' };
    } else {
      dest = { write: (s: string) => void out.write(s) };
      target = { kind: 'stdout' };
    }
  } else {
    const file = opts.file ?? settings.cyrsync_log_file;
    if (file) {
      dest = pino.destination({ dest: file, mkdir: true, sync: true });
      target = { kind: 'file', detail: file };
    } else {
      const ident = syslogIdent(opts.service ?? 'cyrsync', settings, opts.env);
      const fac = syslogFacility(settings.syslog_facility);
      const binding = opts.syslogBinding === undefined ? loadLibcSyslog() : opts.syslogBinding;
      if (binding) {
        dest = syslogStream({ ident, facility: fac.facility, binding });
        const facName = Object.entries(FACILITIES).find(([, v]) => v === fac.facility)![0];
        target = { kind: 'syslog', detail: `${ident} ${facName}` };
        if (!fac.known) target.warning = `config error: syslog name ${settings.syslog_facility} not recognised; using ${facName}`;
      } else {
        const fallback = join(settings.configdirectory, 'cyrsync.log');
        dest = pino.destination({ dest: fallback, mkdir: true, sync: true });
        target = { kind: 'file', detail: fallback, warning: 'syslog unavailable (libc could not be bound); logging to this file' };
      }
    }
  }
  const logger = pino<'notice'>(
    {
      level,
      customLevels: CUSTOM_LEVELS,
      base: { pid: process.pid },
      // Passwords never reach a log: any field with these names is masked.
      redact: { paths: ['password', '*.password', 'pass', '*.pass'], censor: '[redacted]' },
    },
    dest,
  );
  if (target.warning) logger.warn(target.warning);
  Object.defineProperty(logger, 'target', { value: target, enumerable: false });
  return logger as CyrsyncLogger & { readonly target: LogTarget };
}

/**
 * A session id as Cyrus makes it (imap/global.c session_new_id):
 * `<base>-<unix time>-<pid>-<count within this second>-<64-bit random>`,
 * where base is `syslog_prefix`, else the servername (at most 128 chars).
 */
let sessionTime = 0;
let sessionCount = 0;
export function makeSessionId(base: string | Pick<Settings, 'syslog_prefix' | 'servername'>): string {
  const b = typeof base === 'string' ? base : (base.syslog_prefix ?? base.servername);
  const now = Math.floor(Date.now() / 1000);
  if (now !== sessionTime) {
    sessionTime = now;
    sessionCount = 0;
  }
  sessionCount++;
  const rand = randomBytes(8).readBigUInt64LE(0);
  return `${b.slice(0, 128)}-${now}-${process.pid}-${sessionCount}-${rand}`;
}

/** The per-connection child logger's bindings (the session sets `user` after login with `logger.setBindings`). */
export function sessionBindings(b: { session: string; peer: string; user?: string }): Record<string, string> {
  return b.user === undefined ? { session: b.session, peer: b.peer } : { session: b.session, peer: b.peer, user: b.user };
}
