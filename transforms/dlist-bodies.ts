/**
 * Literal and file-literal bodies of the dlist parser. A literal at or
 * below smallLiteralThreshold is copied into one Buffer allocated at its
 * header (a value, or a kvlist key); a larger literal and every file literal
 * go to the BodySink with SHA-1 computed on the way, or are consumed by
 * counting (still hashed) when there is no writer. A BodyWriter.write()
 * returning false blocks the parser right after that chunk (`blocked`).
 */
import { createHash, type Hash } from 'node:crypto';
import { CommandError } from './errors.js';
import type { LiteralHeader } from './literal-header.js';
import { latin1 } from './octets.js';
import type { CommandBuilder } from './dlist-builder.js';
import type { BodyHeader, BodySink, BodyWriter, StagedBody } from './dlist-types.js';
import type { Limits } from './limits.js';

const enum BodyKind {
  /** Small literal value: copied into `buf`. */
  Small,
  /** Small literal used as a kvlist key. */
  Key,
  /** Big literal or file literal: streamed, hashed. */
  Stream,
}

interface BodyState {
  kind: BodyKind;
  header: LiteralHeader;
  buf: Buffer;
  filled: number;
  hash: Hash | null;
  writer: BodyWriter | null;
}

const EMPTY = Buffer.alloc(0);

export class LiteralBodies {
  /** Consulted at every body header: may be swapped between commands. */
  sink: BodySink | null;
  /** The writer whose write() returned false: the parser waits for its drain. */
  blocked: BodyWriter | null = null;
  private body: BodyState | null = null;

  /** `unpause` lets the framer go on after a body whose writer was blocked ended. */
  constructor(
    private readonly cmd: CommandBuilder,
    private readonly limits: Limits,
    sink: BodySink | null,
    private readonly unpause: () => void,
  ) {
    this.sink = sink;
  }

  /** A literal header ended the segment: 'skip' has the framer count the body away. */
  start(h: LiteralHeader): void | 'skip' {
    const cmd = this.cmd;
    if (cmd.verb === null) {
      cmd.verb = '';
      cmd.syntax('Literal in place of the command verb');
      return 'skip';
    }
    if (cmd.needSep) {
      cmd.syntax('Missing space before a literal');
      return 'skip';
    }
    const keyPos = cmd.keyFrame() !== null;
    if (h.kind === 'file') {
      if (keyPos) {
        cmd.syntax('File literal in place of a kvlist key');
        return 'skip';
      }
      return this.openStream(h, { kind: 'file', partition: h.partition!, guid: h.guid!.toLowerCase(), size: h.size });
    }
    if (h.size <= this.limits.smallLiteralThreshold) {
      cmd.hold(h.size, 'literal');
      const kind = keyPos ? BodyKind.Key : BodyKind.Small;
      this.body = { kind, header: h, buf: Buffer.allocUnsafe(h.size), filled: 0, hash: null, writer: null };
      return;
    }
    if (keyPos) {
      cmd.syntax(`Literal key of ${h.size} octets`);
      return 'skip';
    }
    return this.openStream(h, { kind: 'literal', size: h.size });
  }

  /** One chunk of the current body; false when its writer asked to wait. */
  data(chunk: Buffer): boolean {
    const b = this.body;
    if (b === null) return true;
    if (b.kind !== BodyKind.Stream) {
      chunk.copy(b.buf, b.filled);
      b.filled += chunk.length;
      return true;
    }
    b.hash!.update(chunk);
    const w = b.writer;
    if (w === null) return true;
    let ok: boolean;
    try {
      ok = w.write(chunk);
    } catch (err) {
      this.writerFailed(b, err as Error);
      return true;
    }
    if (ok === false) {
      this.blocked = w;
      return false;
    }
    return true;
  }

  /** The current body is complete: its value goes to the builder. */
  end(): void {
    const b = this.body;
    this.body = null;
    if (b === null) return;
    if (b.kind === BodyKind.Key) {
      if (b.buf.indexOf(0) >= 0) this.cmd.syntax('NUL in a literal used as a key');
      else this.cmd.setKey(this.cmd.keyFrame()!, latin1(b.buf, 0, b.buf.length));
      return;
    }
    if (b.kind === BodyKind.Small) {
      this.cmd.addValue({ kind: 'literal', value: b.buf });
      return;
    }
    this.endStream(b);
  }

  /** Terminal stop: the open body writer is aborted. */
  abort(err: Error): void {
    const b = this.body;
    this.body = null;
    this.blocked = null;
    if (b?.writer) {
      b.writer.abort(err);
      b.writer = null;
    }
  }

  private openStream(h: LiteralHeader, bh: BodyHeader): void | 'skip' {
    let writer: BodyWriter | null = null;
    if (this.sink !== null) {
      try {
        writer = this.sink.open(bh);
      } catch (err) {
        this.cmd.fail(new CommandError('IMAP_IOERROR', `Cannot store a body: ${(err as Error).message}`, { cause: err }));
        return 'skip';
      }
    }
    this.body = { kind: BodyKind.Stream, header: h, buf: EMPTY, filled: 0, hash: createHash('sha1'), writer };
  }

  private endStream(b: BodyState): void {
    const sha1 = b.hash!.digest('hex');
    if (this.blocked !== null && this.blocked === b.writer) {
      // end() takes over the writer's buffered octets (and `done` reports
      // them); after end() no 'drain' comes, so waiting for one would stall.
      this.blocked = null;
      this.unpause();
    }
    let staged: StagedBody | null = null;
    if (b.writer !== null) {
      try {
        staged = b.writer.end(sha1);
        this.cmd.addBody(staged);
      } catch (err) {
        this.writerFailed(b, err as Error);
      }
    }
    const h = b.header;
    if (h.kind === 'file') {
      this.cmd.addValue({ kind: 'file', partition: h.partition!, guid: h.guid!, size: h.size, sha1, body: staged });
    } else {
      this.cmd.addValue({ kind: 'bigliteral', size: h.size, sha1, body: staged });
    }
  }

  private writerFailed(b: BodyState, err: Error): void {
    const w = b.writer;
    b.writer = null;
    this.cmd.fail(new CommandError('IMAP_IOERROR', `Cannot store a body: ${err.message}`, { cause: err }));
    try {
      w?.abort(err);
    } catch {
      // The writer already failed; its abort is best effort.
    }
  }
}
