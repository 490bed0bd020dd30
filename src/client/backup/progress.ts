/**
 * A one-line progress bar for the long backup operations (verify, compact,
 * reindex): bytes and messages done, rate, ETA. Drawn only when the output
 * is a terminal; otherwise every call is a no-op, so piped output stays
 * exactly what the Cyrus tools print.
 */
import * as fs from 'node:fs';
import type { Writable } from 'node:stream';

function human(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function clock(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--:--';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return `${h > 0 ? `${h}:${String(m).padStart(2, '0')}` : String(m)}:${String(sec).padStart(2, '0')}`;
}

export class Progress {
  private readonly enabled: boolean;
  private readonly started = Date.now();
  private lastDraw = 0;
  private bytes = 0;
  private messages = 0;
  private drawn = false;

  constructor(
    private readonly out: Writable & { isTTY?: boolean; columns?: number },
    private readonly label: string,
    private total: number,
  ) {
    this.enabled = out.isTTY === true;
  }

  /** Takes the total from a file's size (when it can be read); returns this. */
  sized(file: string): this {
    try {
      this.total = fs.statSync(file).size;
    } catch {
      /* unknown size: the bar shows bytes only */
    }
    return this;
  }

  /** Bytes of the data file done so far, and messages seen. */
  update(bytes: number, messages = this.messages): void {
    if (!this.enabled) return;
    this.bytes = bytes;
    this.messages = messages;
    const now = Date.now();
    if (now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.draw(now);
  }

  addMessages(n: number): void {
    this.messages += n;
  }

  private draw(now: number): void {
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? this.bytes / secs : 0;
    const frac = this.total > 0 ? Math.min(1, this.bytes / this.total) : 1;
    const eta = rate > 0 ? (this.total - this.bytes) / rate : NaN;
    const width = 20;
    const filled = Math.round(frac * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    let line = `${this.label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${human(this.bytes)}/${human(this.total)}, ${this.messages} messages, ${human(rate)}/s, ETA ${clock(eta)}`;
    const cols = this.out.columns ?? 100;
    if (line.length > cols - 1) line = line.slice(0, cols - 1);
    this.out.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  /** Clears the bar (before the result line is printed). */
  done(): void {
    if (!this.enabled || !this.drawn) return;
    this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}
