/**
 * The shared-memory layout of a queue's ring, in one place.
 *
 * A ring is one SharedArrayBuffer: a header of Int32 slots, then a data area of
 * 8-byte-aligned, length-prefixed records. HEAD and TAIL are byte offsets into the
 * data area; the writer stores a record, then publishes it with an ordered
 * `Atomics.store` of TAIL; readers load TAIL and read up to it. HEAD == TAIL means empty;
 * the writer always leaves a gap, so a full ring never looks empty.
 */

/** Int32 slot indices of the header. */
export const H_MAGIC = 0;
export const H_CAPACITY = 1; // data area bytes
export const H_HEAD = 2; // byte offset of the oldest live record
export const H_TAIL = 3; // byte offset where the next record goes
export const H_TAIL_SEQ_LO = 4; // seq of the next record (low/high 32 bits), written before TAIL
export const H_TAIL_SEQ_HI = 5;
export const H_HEAD_SEQ_LO = 6; // seq of the record at HEAD, written before HEAD
export const H_HEAD_SEQ_HI = 7;
export const H_MAX_CAPACITY = 8; // the data area may grow up to this (growable SharedArrayBuffer)
export const HEADER_SLOTS = 16;
export const HEADER_BYTES = HEADER_SLOTS * 4;
export const MAGIC = 0x5350_574c; // "SPWL"

/** Byte offsets inside a record. */
export const R_LEN = 0; // i32: whole record, multiple of 8
export const R_KIND = 4; // u8
export const R_FLAGS = 5; // u8
export const R_SEQ = 8; // f64
export const R_PUBLISHED_AT = 16; // f64, ms since epoch
export const R_PUBLISHER_SEQ = 24; // f64, NaN when absent
export const R_PUBLISHER = 32; // i32: publisher slot in the queue's ledger
export const R_BYTES = 36; // i32: payload bytes, for accounting
export const R_BODY_LEN = 40; // i32: body bytes
export const R_ATTRS_OFF = 44; // i32: attributes JSON, offset inside the body
export const R_ATTRS_LEN = 48; // i32
export const R_CHECKSUM = 52; // u32: CRC-32 of the body, checked when read back from disk
export const RECORD_HEADER_BYTES = 56;

export const KIND_MESSAGE = 1;
/** Padding: skip `len` bytes. Written where a record would not fit before the end. */
export const KIND_PADDING = 2;
/** Set by the spill reader on a record read back whose checksum failed: never delivered. */
export const KIND_CORRUPT = 3;

export const ALIGN = 8;
export const align = (n: number): number => (n + 7) & ~7;

/** Capacity bounds: the smallest ring that is still useful, the largest an Int32 offset can address. */
export const MIN_CAPACITY = 256;
/** A growable ring starts this small and doubles as it fills, so idle queues cost little. */
export const INITIAL_CAPACITY = 64 * 1024;
export const MAX_CAPACITY = 0x4000_0000; // 1 GiB

/** Bytes of a SharedArrayBuffer holding a ring with `capacity` data bytes. */
export function storageBytes(capacity: number): number {
  return HEADER_BYTES + align(capacity);
}
