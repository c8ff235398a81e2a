import { isUtf8 } from 'node:buffer';
import { SpillwayError, invalid } from '../errors';
import type { BodyInput, Encoding } from '../queue/message';

/** A message as a publisher sends it (API.md, Publish). */
export interface PublishMessage {
  data: string;
  encoding?: Encoding;
  attributes?: Record<string, string>;
  key?: string;
  publisherSeq?: number;
}

/** A validated message, with its JSON parts made once. */
export interface Prepared extends BodyInput {
  /** Payload bytes, for limits and accounting. */
  bytes: number;
  attributes: Record<string, string> | undefined;
}

/** Characters a JSON string literal must escape (and surrogates, which JSON.stringify may escape). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** `text` as a JSON string literal. Most data needs no escaping: quoting it then costs no copy. */
export function jsonString(text: string): string {
  return NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : '"' + text + '"';
}

/** UTF-8 bytes of a JSON string literal made from a string of `bytes` UTF-8 bytes. */
function jsonBytes(json: string, raw: string, bytes: number): number {
  // No escapes (the common case): the literal is the text and two quotes, no second scan.
  return json.length === raw.length + 2 ? bytes + 2 : Buffer.byteLength(json);
}

/** A Prepared from parts already known to be valid (dead letters, propagation). */
export function preparedFrom(data: string, encoding: Encoding, bytes: number, attributes: Record<string, string> | undefined, key: string | undefined, publisherSeq: number | undefined): Prepared {
  const dataJson = encoding === 'utf8' ? jsonString(data) : '"' + data + '"';
  const attrsJson = attributes === undefined ? '{}' : JSON.stringify(attributes);
  const keyJson = key === undefined ? undefined : JSON.stringify(key);
  return {
    dataJson, dataJsonBytes: Buffer.byteLength(dataJson), encoding, bytes, attributes,
    attrsJson, attrsJsonBytes: Buffer.byteLength(attrsJson),
    keyJson, keyJsonBytes: keyJson === undefined ? 0 : Buffer.byteLength(keyJson), publisherSeq,
  };
}

export const MAX_BATCH = 1000;
const MAX_ATTRIBUTES = 100;
const MAX_ATTRIBUTE_BYTES = 1024;
const MAX_KEY_BYTES = 1024;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Validates one message. `index` names it in errors. */
export function prepareMessage(m: unknown, index: number, maxMessageBytes: number): Prepared {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw invalid(`messages[${index}] must be an object`, { index });
  const msg = m as Record<string, unknown>;
  for (const k in msg) {
    if (k !== 'data' && k !== 'encoding' && k !== 'attributes' && k !== 'key' && k !== 'publisherSeq') {
      throw invalid(`messages[${index}]: unknown field ${JSON.stringify(k)}`, { index, field: k });
    }
  }
  const data = msg.data;
  if (typeof data !== 'string') throw invalid(`messages[${index}].data must be a string`, { index, field: 'data' });
  let encoding: Encoding = 'utf8';
  let bytes: number;
  if (msg.encoding === undefined || msg.encoding === 'utf8') {
    bytes = Buffer.byteLength(data);
  } else if (msg.encoding === 'base64') {
    if (data.length % 4 !== 0 || !BASE64.test(data)) throw invalid(`messages[${index}].data is not valid base64`, { index, field: 'data' });
    encoding = 'base64';
    bytes = (data.length / 4) * 3 - (data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0);
  } else {
    throw invalid(`messages[${index}].encoding must be "utf8" or "base64"`, { index, field: 'encoding' });
  }
  if (bytes > maxMessageBytes) {
    throw new SpillwayError('MESSAGE_TOO_LARGE', `messages[${index}] is ${bytes} bytes, over the queue's maxMessageBytes of ${maxMessageBytes}`, { index, maxMessageBytes });
  }
  const attributes = checkAttributes(msg.attributes, index);
  let keyJson: string | undefined;
  if (msg.key !== undefined) {
    if (typeof msg.key !== 'string' || Buffer.byteLength(msg.key) > MAX_KEY_BYTES) {
      throw invalid(`messages[${index}].key must be a string of at most ${MAX_KEY_BYTES} bytes`, { index, field: 'key' });
    }
    keyJson = JSON.stringify(msg.key);
  }
  let publisherSeq: number | undefined;
  if (msg.publisherSeq !== undefined) {
    const s = msg.publisherSeq;
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) {
      throw invalid(`messages[${index}].publisherSeq must be a non-negative integer`, { index, field: 'publisherSeq' });
    }
    publisherSeq = s;
  }
  const dataJson = encoding === 'utf8' ? jsonString(data) : '"' + data + '"';
  const attrsJson = attributes === undefined ? '{}' : JSON.stringify(attributes);
  return {
    dataJson,
    dataJsonBytes: encoding === 'utf8' ? jsonBytes(dataJson, data, bytes) : dataJson.length,
    encoding,
    bytes,
    attributes,
    attrsJson,
    attrsJsonBytes: attributes === undefined ? 2 : Buffer.byteLength(attrsJson),
    keyJson,
    keyJsonBytes: keyJson === undefined ? 0 : Buffer.byteLength(keyJson),
    publisherSeq,
  };
}

/** A raw body (any content type but JSON) as one message: UTF-8 text stays text, other bytes go as base64. */
export function prepareRaw(body: Buffer, maxMessageBytes: number): Prepared {
  if (body.length > maxMessageBytes) {
    throw new SpillwayError('MESSAGE_TOO_LARGE', `message is ${body.length} bytes, over the queue's maxMessageBytes of ${maxMessageBytes}`, { index: 0, maxMessageBytes });
  }
  const text = isUtf8(body);
  const dataJson = text ? JSON.stringify(body.toString('utf8')) : '"' + body.toString('base64') + '"';
  return {
    dataJson,
    dataJsonBytes: text ? Buffer.byteLength(dataJson) : dataJson.length,
    encoding: text ? 'utf8' : 'base64',
    bytes: body.length,
    attributes: undefined,
    attrsJson: '{}',
    attrsJsonBytes: 2,
    keyJson: undefined,
    keyJsonBytes: 0,
    publisherSeq: undefined,
  };
}

function checkAttributes(a: unknown, index: number): Record<string, string> | undefined {
  if (a === undefined) return undefined;
  if (typeof a !== 'object' || a === null || Array.isArray(a)) {
    throw invalid(`messages[${index}].attributes must be an object of strings`, { index, field: 'attributes' });
  }
  const out: Record<string, string> = Object.create(null) as Record<string, string>; // '__proto__' is a key like any other
  let n = 0;
  for (const k in a) {
    const v = (a as Record<string, unknown>)[k];
    if (typeof v !== 'string' || k.length === 0 || Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_ATTRIBUTE_BYTES) {
      throw invalid(`messages[${index}].attributes.${k} must be a string (key and value at most ${MAX_ATTRIBUTE_BYTES} bytes)`, { index, field: 'attributes' });
    }
    if (++n > MAX_ATTRIBUTES) throw invalid(`messages[${index}] has more than ${MAX_ATTRIBUTES} attributes`, { index, field: 'attributes' });
    out[k] = v;
  }
  return n === 0 ? undefined : out;
}

/** Validates the `messages` array of a publish body. */
export function prepareBatch(messages: unknown, maxMessageBytes: number): Prepared[] {
  if (!Array.isArray(messages) || messages.length === 0 || messages.length > MAX_BATCH) {
    throw invalid(`messages must be an array of 1 to ${MAX_BATCH} messages`, { field: 'messages' });
  }
  const out: Prepared[] = new Array(messages.length);
  for (let i = 0; i < messages.length; i++) out[i] = prepareMessage(messages[i], i, maxMessageBytes);
  return out;
}

export function checkPublisherId(id: unknown): string | undefined {
  if (id === undefined || id === null) return undefined;
  if (typeof id !== 'string' || id.length === 0 || id.length > 256 || /[\u0000-\u001f\u007f]/.test(id)) {
    throw invalid('publisherId must be a string of 1 to 256 characters without control characters', { field: 'publisherId' });
  }
  return id;
}
