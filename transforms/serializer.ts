/**
 * Dlist output: the exact octets Cyrus 3.6.1 writes (imap/dlist.c
 * `dlist_print`, lib/prot.c `prot_printastring` / `prot_printamap` /
 * `prot_printliteral`, lib/imparse.c `imparse_isnatom`).
 *
 * The serializer's public face, gathered from its modules: the pure core
 * in dlist-encoder.ts (`encode*Parts` turn values into parts, each either a
 * Buffer of finished octets or a body still to be streamed) with the string
 * rules in string-form.ts; the adapters in body-stream.ts (`streamBody` /
 * `streamFileLiteral` write to a Writable with exact-count and SHA-1 checks)
 * and dlist-writer.ts (`DlistWriter` and its `ResponseWriter` /
 * `CommandWriter` faces, a Readable the session pipes to the connection).
 *
 * Invariants:
 * - Text is latin1 (one char per octet); nothing is ever re-encoded.
 * - A file literal is never padded or truncated: the announced size and guid
 *   are checked while the bytes go out, and a mismatch destroys the output
 *   with an OutputLiteralError (the peer must never see a completed command
 *   or reply carrying wrong bytes).
 * - Containers use single SP separators, no other whitespace (csync-wire §1.5,
 *   backup-format §5.3).
 */
export {
  bodyHeader,
  encodeItemParts,
  encodeLineParts,
  encodeValueParts,
  hex64,
  iterateLineParts,
  resolveMode,
  serializeItem,
  serializeLine,
  serializeValue,
  type BodyPart,
  type OutputPart,
  type SerializeMode,
  type SerializeOptions,
} from './dlist-encoder.js';
export { MAX_QSTRING, stringForm, type StringForm } from './string-form.js';
export { OutputLiteralError, streamBody, streamFileLiteral } from './body-stream.js';
export { CommandWriter, DlistWriter, MAX_MESSAGE_FILES, ResponseWriter, type DlistWriterOptions } from './dlist-writer.js';
