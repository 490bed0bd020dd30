/**
 * The real Cyrus 3.10.2 (Debian 13 "trixie", in a root of its own) against
 * cyrsync: the scenarios of releases.ts.
 */
import { releaseSuite } from './releases.js';

releaseSuite('3.10.2');
