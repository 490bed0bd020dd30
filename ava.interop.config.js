// Interop suite: the real Cyrus 3.6.1 (installed with apt when missing), 3.10.2 and 3.12.4 (Debian roots made when missing) against cyrsync.
export default {
  // sigterm.test.ts is left out until its wait for 20 logins is made reliable: run it with CYRSYNC_INTEROP_SIGTERM=1.
  files: ['test/interop/**/*.test.ts', ...(process.env.CYRSYNC_INTEROP_SIGTERM ? [] : ['!test/interop/sigterm.test.ts'])],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  serial: true,
  timeout: '12m',
};
