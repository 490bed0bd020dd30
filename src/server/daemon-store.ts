/**
 * The store of a daemon process: the replica or the backup store, opened
 * at once by a standalone listener, or in the background by a process per
 * connection (Cyrus master), where start-up is on every connection's path.
 */
import type { Logger } from 'pino';
import type { Sink } from '../../sinks/sink.js';
import type { Settings } from '../config.js';
import type { LogMode } from '../log.js';
import { DeferredSink } from './deferred-sink.js';
import type { Profile } from './router.js';

/** Opens the profile's store: the replica (sync) or the Cyrus-format backup store. */
export async function openSink(profile: Profile, settings: Settings, log: Logger): Promise<Sink> {
  if (profile === 'sync') {
    const { createReplicaSink } = await import('../../sinks/replica/index.js');
    return createReplicaSink({
      configdirectory: settings.configdirectory,
      partitions: { ...settings.partitions },
      logger: log,
    });
  }
  const { createBackupSink } = await import('../../sinks/backup/index.js');
  return createBackupSink({
    settings: {
      configdirectory: settings.configdirectory,
      backuppartitions: { ...settings.backuppartitions },
      fulldirhash: settings.fulldirhash,
      backup_staging_path: settings.backup_staging_path,
      temp_path: settings.temp_path,
      backup_db: settings.backup_db,
      backup_db_path: settings.backup_db_path,
    },
    logger: log,
  });
}

/** The store of a daemon process and when it opens. */
export interface DaemonStore {
  sink: Sink;
  /** Set when the store opens in the background (a process per connection); null when it is open already. */
  deferred: DeferredSink | null;
  /** Called when a session is being created (before its greeting is written). */
  start: () => void;
  /** Resolves once the store is open. */
  ready: () => Promise<void>;
}

/**
 * Standalone: the store opens before the first connection (null when it
 * cannot). A process per connection: the store opens once the greeting is
 * on its way (or after a short idle wait, for a process that waits for its
 * client).
 */
export async function openDaemonStore(profile: Profile, mode: LogMode, settings: Settings, log: Logger): Promise<DaemonStore | null> {
  const storeName = profile === 'sync' ? 'replica' : 'backup';
  if (mode === 'standalone') {
    try {
      const sink = await openSink(profile, settings, log);
      return { sink, deferred: null, start: () => undefined, ready: async () => undefined };
    } catch (err) {
      log.fatal({ err }, `cannot open the ${storeName} store`);
      return null;
    }
  }
  // Whichever of the two kicks comes first opens it, once: a second
  // openSink() would open the store twice and its failure would go unheard.
  let kick: () => void = () => undefined;
  const opening = new Promise<Sink>((resolve) => {
    kick = () => {
      kick = () => undefined;
      resolve(openSink(profile, settings, log));
    };
  });
  opening.catch((err: unknown) => log.fatal({ err }, `cannot open the ${storeName} store`));
  const deferred = new DeferredSink(profile, opening);
  setTimeout(() => kick(), 100).unref();
  return {
    sink: deferred,
    deferred,
    start: () => setImmediate(() => kick()),
    ready: async () => {
      await deferred.ready;
    },
  };
}
