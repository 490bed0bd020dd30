// Interop suite: the real Cyrus 3.6.1 (installed with apt when missing), 3.10.2 and 3.12.4 (Debian roots made when missing) against cyrsync.
export default {
  files: ['test/interop/**/*.test.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  serial: true,
  timeout: '12m',
};
