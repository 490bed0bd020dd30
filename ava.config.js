// .ts tests run through tsx; worker threads would bypass the loader.
export default {
  files: ['test/**/*.test.ts', '!test/interop/**'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  timeout: '10m',
  concurrency: 2,
};
