export * from '../transforms/index.js';
export type * from './protocol/types.js';
export type * from '../sinks/sink.js';
