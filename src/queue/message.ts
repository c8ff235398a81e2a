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
  // Per acked message: digits are read in place, no substring is made.
  if (typeof id !== 'string') return -1;
  const n = runTag.length;
  const len = id.length;
  if (len <= n + 1 || len > n + 17 || id.charCodeAt(n) !== 45 || !id.startsWith(runTag)) return -1;
  let seq = 0;
  for (let i = n + 1; i < len; i++) {
    const d = id.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    seq = seq * 10 + d;
  }
  return seq > 0 && seq <= Number.MAX_SAFE_INTEGER ? seq : -1;
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

/** The parts of a message body made once at publish, with their UTF-8 byte lengths. */
export interface BodyInput {
  /** The data as a JSON string literal. */
  dataJson: string;
  dataJsonBytes: number;
  encoding: Encoding;
  attrsJson: string;
  attrsJsonBytes: number;
  keyJson: string | undefined;
  keyJsonBytes: number;
  publisherSeq: number | undefined;
}

/**
 * Encodes a body. Every part but the data, attributes, key and publisher is ASCII, so the
 * byte length is summed from lengths known in advance: nothing is scanned twice.
 * Returns a shared scratch object: read it before the next call.
 */
export function encodeBody(id: string, seq: number, m: BodyInput, publisherJson: string, publisherJsonBytes: number, publishedAtIso: string): BodyParts {
  const head = '{"id":"' + id + '","seq":' + seq + ',"data":';
  const mid = ',"encoding":"' + m.encoding + '","attributes":';
  let tail = ',"publisherId":';
  const ps = m.publisherSeq;
  let tail2 = ps !== undefined ? ',"publisherSeq":' + ps + ',"publishedAt":"' + publishedAtIso + '"' : ',"publishedAt":"' + publishedAtIso + '"';
  let text = head + m.dataJson + mid + m.attrsJson;
  let bytes = head.length + m.dataJsonBytes + mid.length + m.attrsJsonBytes;
  scratch.attrsOff = head.length + m.dataJsonBytes + mid.length;
  scratch.attrsLen = m.attrsJsonBytes;
  if (m.keyJson !== undefined) {
    text += ',"key":' + m.keyJson;
    bytes += 7 + m.keyJsonBytes;
  }
  text += tail + publisherJson + tail2;
  bytes += tail.length + publisherJsonBytes + tail2.length;
  scratch.text = text;
  scratch.bodyLen = bytes;
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
