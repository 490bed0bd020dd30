/**
 * The dlist parser, csync command lines: bytes -> CommandLine values
 * (csync-wire.md §1.2-1.3). The pure core is DlistParserCore (dlist-core.ts)
 * and the stream adapter CommandReader (command-reader.ts); this module
 * offers both with the whole-buffer conveniences below.
 */
import { DlistParserCore } from './dlist-core.js';
import type { BodySink, BodyWriter, CommandLine, StagedBody } from './dlist-types.js';
import type { Limits } from './limits.js';

export { DlistParserCore, type DlistParserOptions } from './dlist-core.js';
export { CommandReader, type CommandReaderOptions } from './command-reader.js';

export interface ParseCommandLinesOptions {
  limits?: Partial<Limits>;
  /** Default: none (big bodies skipped, SHA-1 still computed). See memoryBodySink(). */
  sink?: BodySink | null;
}

/**
 * Parse a whole buffer of command lines synchronously. Throws FramingError
 * on a limit violation or when the buffer ends inside a command. Writers
 * that return false are not waited for (their write() already took the chunk).
 */
export function parseCommandLines(buf: Buffer, opts: ParseCommandLinesOptions = {}): CommandLine[] {
  const out: CommandLine[] = [];
  const core = new DlistParserCore({ limits: opts.limits, sink: opts.sink ?? null, onCommand: (c) => out.push(c) });
  let done = core.push(buf);
  while (!done) done = core.resume();
  core.end();
  return out;
}

/** A StagedBody whose `ref` is the collected Buffer. */
export interface MemoryStagedBody extends StagedBody {
  readonly ref: Buffer;
}

/** A BodySink that keeps every body in memory (tests and tools only). */
export function memoryBodySink(): BodySink {
  return {
    open(): BodyWriter {
      const chunks: Buffer[] = [];
      return {
        write(chunk: Buffer): boolean {
          chunks.push(Buffer.from(chunk));
          return true;
        },
        onDrain(cb: () => void): void {
          queueMicrotask(cb);
        },
        end(): StagedBody {
          const body: MemoryStagedBody = { done: Promise.resolve(), ref: Buffer.concat(chunks) };
          return body;
        },
        abort(): void {
          chunks.length = 0;
        },
      };
    },
  };
}
