/**
 * The real Cyrus 3.12.4 (Debian unstable "sid", in a root of its own)
 * against cyrsync: the scenarios of releases.ts. 3.12 ships no backup tools:
 * its sync_client's backups into cyrsync are read by the 3.10.2 tools.
 */
import { releaseSuite } from './releases.js';

releaseSuite('3.12.4');
