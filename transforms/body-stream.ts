/**
 * Streaming a body part (file literal or big literal) from its source to an
 * output, its header having gone out before it: the octet count and the
 * SHA-1 are checked while the bytes pass. A file literal is never padded or
 * truncated: a mismatch destroys the output with an OutputLiteralError (the
 * peer must never see a completed command or reply carrying wrong bytes).
 */
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { CyrsyncError } from './errors.js';
import type { DlistFile } from './dlist-types.js';
import { bodyHeader, checkBigLiteral, checkFileHeader, type BodyPart, type SerializeMode } from './dlist-encoder.js';

/** A file literal's bytes did not match its header: the output is unusable. */
export class OutputLiteralError extends CyrsyncError {
  /** guid of a file literal, SHA-1 announced for a big literal */
  readonly guid: string;
  readonly expectedSize: number;
  readonly actualSize: number | undefined;
  readonly actualSha1: string | undefined;
  constructor(
    message: string,
    details: { guid: string; expectedSize: number; actualSize?: number; actualSha1?: string; cause?: unknown },
  ) {
    super('IMAP_IOERROR', message, { cause: details.cause });
    this.guid = details.guid;
    this.expectedSize = details.expectedSize;
    this.actualSize = details.actualSize;
    this.actualSha1 = details.actualSha1;
  }
}

/**
 * Pulls a body's bytes from its source, checking count and SHA-1 as they
 * pass. `emit` returns a promise when the consumer wants us to wait
 * (backpressure). Rejects with OutputLiteralError on a mismatch; bytes beyond
 * the announced size are never emitted.
 */
export async function pumpBody(b: BodyPart, emit: (chunk: Buffer) => Promise<void> | void): Promise<void> {
  const f = b.kind === 'file' ? { guid: b.guid, size: b.size, what: 'file literal' } : { guid: b.sha1, size: b.size, what: 'literal' };
  const src = b.source!();
  const hash = createHash('sha1');
  let count = 0;
  try {
    for await (const raw of src) {
      const chunk: Buffer = Buffer.isBuffer(raw) ? raw : Buffer.from(raw as string | Uint8Array);
      if (count + chunk.length > f.size) {
        throw new OutputLiteralError(
          `${f.what} ${f.guid}: source has more than the announced ${f.size} octets`,
          { guid: f.guid, expectedSize: f.size, actualSize: count + chunk.length },
        );
      }
      count += chunk.length;
      hash.update(chunk);
      const w = emit(chunk);
      if (w) await w;
    }
  } catch (err) {
    src.destroy();
    if (err instanceof OutputLiteralError) throw err;
    throw new OutputLiteralError(`${f.what} ${f.guid}: reading the source failed: ${(err as Error)?.message ?? err}`, {
      guid: f.guid,
      expectedSize: f.size,
      actualSize: count,
      cause: err,
    });
  }
  if (count !== f.size) {
    throw new OutputLiteralError(`${f.what} ${f.guid}: source ended after ${count} of ${f.size} octets`, {
      guid: f.guid,
      expectedSize: f.size,
      actualSize: count,
    });
  }
  const sha1 = hash.digest('hex');
  if (sha1 !== f.guid.toLowerCase()) {
    throw new OutputLiteralError(`${f.what} ${f.guid}: the octets sent have SHA-1 ${sha1}`, {
      guid: f.guid,
      expectedSize: f.size,
      actualSize: count,
      actualSha1: sha1,
    });
  }
}

async function writeTo(target: Writable, chunk: Buffer): Promise<void> {
  if (target.destroyed || target.writableEnded) {
    throw new CyrsyncError('IMAP_IOERROR', 'output closed while a file literal was being written');
  }
  if (!target.write(chunk)) await waitDrain(target);
}

export function waitDrain(target: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      target.off('drain', done);
      target.off('close', closed);
      target.off('error', closed);
      resolve();
    };
    const closed = (): void => {
      target.off('drain', done);
      target.off('close', closed);
      target.off('error', closed);
      reject(new CyrsyncError('IMAP_IOERROR', 'output closed while waiting for it to drain'));
    };
    target.on('drain', done);
    target.on('close', closed);
    target.on('error', closed);
  });
}

/**
 * Writes a body part's octets (its header went out in the preceding Buffer
 * part) to `target`, honouring its backpressure. On a count or SHA-1
 * mismatch the target is destroyed with the OutputLiteralError, which is
 * also the rejection.
 */
export async function streamBody(b: BodyPart, target: Writable): Promise<void> {
  if (b.kind === 'file') checkFileHeader(b);
  else checkBigLiteral(b);
  try {
    await pumpBody(b, (chunk) => writeTo(target, chunk));
  } catch (err) {
    target.destroy(err as Error);
    throw err;
  }
}

/** A whole file literal: `%{partition guid size}` CRLF and the bytes. */
export async function streamFileLiteral(f: DlistFile, target: Writable, mode: SerializeMode = 'server'): Promise<void> {
  checkFileHeader(f);
  await writeTo(target, bodyHeader(f, mode));
  await streamBody(f, target);
}
