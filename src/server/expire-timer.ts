/**
 * The standalone replica's housekeeping timer: every
 * `cyrsync_expire_interval` (default one day; the first run within five
 * minutes of the start), the run of `cyrsync expire -X <cyrsync_expire_expunged>
 * -D <cyrsync_expire_deleted>`, on its own connection to the store. Under
 * master(8) a process lives for a few connections only: there, cyrus.conf
 * EVENTS runs `cyrsync expire` instead (README).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DATABASE_FILE } from '../../sinks/replica/db.js';
import type { Settings } from '../config.js';
import { expireReplica, openForHousekeeping, type ExpireResult } from '../../sinks/replica/expire.js';

const FIRST_RUN_MAX_MS = 5 * 60_000;
/** setTimeout's longest delay (about 24.8 days): a longer interval runs at that bound. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** One housekeeping run with the configured ages; null when there is no store yet or it failed (logged). */
export function runHousekeeping(settings: Settings, log: Logger, now?: number): ExpireResult | null {
  const t0 = Date.now();
  // Nothing replicated yet: nothing to expire, and the store is not created here.
  if (!existsSync(join(settings.configdirectory, DATABASE_FILE))) return null;
  let store: ReturnType<typeof openForHousekeeping> | null = null;
  try {
    store = openForHousekeeping(settings);
    const r = expireReplica(store, {
      expungedAge: settings.cyrsync_expire_expunged > 0 ? settings.cyrsync_expire_expunged : null,
      deletedAge: settings.cyrsync_expire_deleted > 0 ? settings.cyrsync_expire_deleted : null,
      ...(now !== undefined ? { now } : {}),
    });
    log.info({ ...r, ms: Date.now() - t0 }, 'expire: housekeeping run done');
    return r;
  } catch (err) {
    // A busy store or a full disk: the next run tries again.
    log.warn({ err }, 'expire: housekeeping run failed');
    return null;
  } finally {
    store?.close();
  }
}

/** Starts the timer (nothing when the interval is 0); the returned function stops it. */
export function startHousekeepingTimer(settings: Settings, log: Logger): () => void {
  const interval = settings.cyrsync_expire_interval * 1000;
  if (interval <= 0) return () => {};
  let timer: NodeJS.Timeout | null = null;
  const schedule = (ms: number): void => {
    timer = setTimeout(() => {
      runHousekeeping(settings, log);
      schedule(interval);
    }, Math.min(ms, MAX_TIMEOUT_MS));
    // The timer never keeps the process alive: a stopped listener ends it.
    timer.unref();
  };
  schedule(Math.min(interval, FIRST_RUN_MAX_MS));
  log.debug({ intervalSeconds: settings.cyrsync_expire_interval }, 'expire: housekeeping timer started');
  return () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
}
