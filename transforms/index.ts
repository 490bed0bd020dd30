export * from './errors.js';
export * from './limits.js';
export type * from './dlist-types.js';
export { FramerCore, type FramerHandler, type FramerOptions, type LiteralHeader } from './framer-core.js';
export { Framer, LiteralBody, type FramerStreamOptions } from './framer.js';
export * from './dlist-parser.js';
export * from './serializer.js';
export * from './deflate.js';
