/**
 * The command reader of a session, admitting each input chunk through the
 * process's memory budget (src/memory.ts) before parsing it. A chunk the
 * budget holds back keeps the write callback withheld, so the connection
 * stays paused (backpressure to the client) until the budget lets the
 * session go on.
 */
import { CommandReader, type CommandReaderOptions } from '../../transforms/dlist-parser.js';
import type { BudgetOwner, MemoryBudget } from '../memory.js';

interface HeldWrite {
  chunk: Buffer;
  enc: BufferEncoding;
  cb: (err?: Error | null) => void;
}

export class BudgetedReader extends CommandReader {
  private held: HeldWrite | null = null;

  constructor(
    options: CommandReaderOptions,
    private readonly budget: MemoryBudget,
    private readonly owner: BudgetOwner,
  ) {
    super(options);
  }

  override _write(chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.budget.tryEnter(this.owner, chunk.length)) {
      super._write(chunk, enc, cb);
      return;
    }
    this.held = { chunk, enc, cb };
    void this.budget.wait(this.owner).then(() => {
      const h = this.held;
      this.held = null;
      if (h === null) return; // taken by detachRemainder() or destroy
      if (this.destroyed) h.cb();
      else super._write(h.chunk, h.enc, h.cb);
    });
  }

  /** As CommandReader's, plus a chunk still waiting for the budget (it came after the remainder). */
  override detachRemainder(): Buffer {
    const rest = super.detachRemainder();
    const h = this.held;
    if (h === null) return rest;
    this.held = null;
    h.cb();
    return rest.length === 0 ? h.chunk : Buffer.concat([rest, h.chunk]);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const h = this.held;
    this.held = null;
    this.budget.forget(this.owner);
    h?.cb(err);
    super._destroy(err, cb);
  }
}
