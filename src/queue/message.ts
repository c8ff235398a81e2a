/**
 * What a record's body holds: the message as the JSON text of API.md's Message, minus
 * `deliveryAttempt` and the closing brace. It is encoded once at publish; a delivery is
 * then a copy of these bytes plus `,"deliveryAttempt":N}` (no JSON.stringify per delivery).
 */

export type Encoding = 'utf8' | 'base64';

/** A message as API.md shows it to consumers. */
export interface Message {
  id: string;
  seq: number;
  data: string;
  encoding: Encoding;
  attributes: Record<string, string>;
  key?: string;
  publisherId: string;
  publisherSeq?: number;
  publishedAt: string;
  deliveryAttempt: number;
}

/** Record flags. */
export const F_HAS_PUBLISHER_SEQ = 1;

/** A message id names the server run (so an id from before a restart is never mistaken) and the seq. */
export function messageId(runTag: string, seq: number): string {
  return runTag + '-' + seq;
}

/** The seq an id names, or -1 when it is not an id of this run. */
export function seqOfId(runTag: string, id: unknown): number {
  if (typeof id !== 'string' || id.length <= runTag.length + 1 || !id.startsWith(runTag) || id.charCodeAt(runTag.length) !== 45) return -1;
  const seq = Number(id.slice(runTag.length + 1));
  return Number.isSafeInteger(seq) && seq > 0 ? seq : -1;
}

export interface BodyParts {
  /** The body text. */
  text: string;
  /** Its UTF-8 byte length. */
  bodyLen: number;
  /** Where the attributes JSON starts in the body's UTF-8 bytes, and its length. */
  attrsOff: number;
  attrsLen: number;
}

const scratch: BodyParts = { text: '', bodyLen: 0, attrsOff: 0, attrsLen: 0 };

/**
 * Encodes a body. `dataJson` is the data as a JSON string literal; `attrsJson` and
 * `publisherJson` are JSON already. Returns a shared scratch object: read it before the next call.
 */
export function encodeBody(
  id: string, seq: number, dataJson: string, encoding: Encoding, attrsJson: string,
  keyJson: string | undefined, publisherJson: string, publisherSeq: number | undefined, publishedAtIso: string,
): BodyParts {
  const head = '{"id":"' + id + '","seq":' + seq + ',"data":' + dataJson + ',"encoding":"' + encoding + '","attributes":';
  let rest = attrsJson;
  if (keyJson !== undefined) rest += ',"key":' + keyJson;
  rest += ',"publisherId":' + publisherJson;
  if (publisherSeq !== undefined) rest += ',"publisherSeq":' + publisherSeq;
  rest += ',"publishedAt":"' + publishedAtIso + '"';
  // Each part is measured once: the data is the only long part and is scanned once here.
  const headBytes = Buffer.byteLength(head);
  scratch.attrsOff = headBytes;
  scratch.attrsLen = attrsJson.length === 2 ? 2 : Buffer.byteLength(attrsJson);
  scratch.bodyLen = headBytes + Buffer.byteLength(rest);
  scratch.text = head + rest;
  return scratch;
}

/** Parses a stored body into a Message. */
export function decodeBody(body: Uint8Array, start: number, len: number, deliveryAttempt: number): Message {
  const text = Buffer.from(body.buffer, body.byteOffset + start, len).toString('utf8');
  return JSON.parse(text + ',"deliveryAttempt":' + deliveryAttempt + '}') as Message;
}

/** The attributes of a stored body. */
export function decodeAttributes(body: Uint8Array, start: number, len: number): Record<string, string> {
  if (len === 2) return {};
  return JSON.parse(Buffer.from(body.buffer, body.byteOffset + start, len).toString('utf8')) as Record<string, string>;
}
