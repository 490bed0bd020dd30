/**
 * The set-up and teardown the interop test files share: one cyrus-peer
 * instance and one scratch directory for the whole file, both stopped and
 * removed after its last test unless `CYRSYNC_INTEROP_KEEP` is set or (with
 * `keepFailed`) a test failed, when their paths are logged instead.
 */
import type { ExecutionContext, TestFn } from 'ava';
import fsp from 'node:fs/promises';
import { Peer, makeRunDir, stopOwnProcesses } from './harness.js';

export interface PeerContext {
  peer: Peer;
  /** the file's scratch directory */
  work: string;
}

export interface PeerFixtureOptions<C extends PeerContext> {
  /** prefix of the scratch directory's name (under the run directory) */
  prefix: string;
  /** keep the peer and the scratch directory for inspection when a test failed */
  keepFailed?: boolean;
  /**
   * stop the processes a test left running after each test: only for files
   * whose tests run one at a time (stopOwnProcesses stops every test's)
   */
  stopAfterEach?: boolean;
  /** when false, nothing is set up (the tests skip themselves, saying why) */
  when?: () => boolean;
  /** more set-up once the peer and the scratch directory exist */
  setup?: (t: ExecutionContext<C>) => Promise<void>;
  /** more teardown before the peer stops (daemons of the file's own) */
  teardown?: (t: ExecutionContext<C>) => Promise<void>;
}

/** Registers the before, afterEach and after hooks of a peer fixture on `test`. */
export function usePeer<C extends PeerContext>(test: TestFn<C>, o: PeerFixtureOptions<C>): void {
  let failed = false;
  test.before(async (t) => {
    if (o.when && !o.when()) return;
    t.context.peer = await Peer.create();
    t.context.work = await makeRunDir(o.prefix);
    await o.setup?.(t);
  });
  test.afterEach.always((t) => {
    if (!t.passed) failed = true;
    if (o.stopAfterEach) stopOwnProcesses();
  });
  test.after.always(async (t) => {
    const { peer, work } = t.context;
    await o.teardown?.(t);
    await peer?.stopAll();
    stopOwnProcesses();
    if ((o.keepFailed && failed) || process.env['CYRSYNC_INTEROP_KEEP']) {
      t.log(`kept for inspection: ${[peer?.dir, work].filter(Boolean).join(' ')}`);
      return;
    }
    await peer?.remove();
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });
}
