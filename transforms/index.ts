export * from './errors.js';
export * from './limits.js';
export type * from './dlist-types.js';
export {
  Framer,
  FramerCore,
  LiteralBody,
  type FramerHandler,
  type FramerOptions,
  type FramerStreamOptions,
  type LiteralHeader,
} from './framer.js';
export * from './dlist-parser.js';
export * from './serializer.js';
export * from './deflate.js';
