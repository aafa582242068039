import { createHash } from 'node:crypto'

/**
 * The whole bucket layout, in one place (DESIGN.md section 4).
 *
 *   events/{type}/{id}/{seq:020d}.json            one envelope per object; a prefix listing of
 *                                                 an aggregate is its stream, in sequence order
 *   indexes/by-date/{YYYY}/{MM}/{DD}/{us:016d}-{writer}-{n:010d}.json
 *                                                 one manifest per group commit: the keys and
 *                                                 bytes of the events it stored (publisher tail);
 *                                                 `us` is the reservation time in microseconds
 *   checkpoints/event_publisher.json              the publisher's durable checkpoint
 *   probes/{run}/…                                the conformance probe's scratch objects
 *
 * Aggregate types and ids are escaped into one path segment each: only [A-Za-z0-9_-] and a
 * non-leading `.` stay as they are, every other UTF-8 byte becomes `%XX`, so `/`, `..`, control
 * characters and unicode never reach a key raw. A segment longer than 160 characters keeps a
 * readable head and ends in `~` + SHA-256 of the raw value (`~` is always escaped otherwise), so
 * keys stay under S3's 1,024-byte limit and distinct ids never share a segment.
 */
export const EVENTS_PREFIX = 'events/'
export const BY_DATE_PREFIX = 'indexes/by-date/'
export const CHECKPOINT_KEY = 'checkpoints/event_publisher.json'
export const PROBES_PREFIX = 'probes/'

const SEQ_WIDTH = 20
const MAX_SEGMENT = 160
const HEAD_LENGTH = 80

const encoder = new TextEncoder()

const isPlain = (byte: number, first: boolean): boolean =>
  (byte >= 0x30 && byte <= 0x39) || // 0-9
  (byte >= 0x41 && byte <= 0x5a) || // A-Z
  (byte >= 0x61 && byte <= 0x7a) || // a-z
  byte === 0x5f || // _
  byte === 0x2d || // -
  (byte === 0x2e && !first) // . (never leading, so no `.` or `..` segment)

export const escapeSegment = (raw: string): string => {
  if (raw.length === 0) throw new RangeError('an aggregate type or id cannot be empty')
  let out = ''
  const bytes = encoder.encode(raw)
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number
    out += isPlain(b, i === 0)
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, '0')}`
  }
  if (out.length <= MAX_SEGMENT) return out
  let head = out.slice(0, HEAD_LENGTH)
  // Do not cut an escape in half.
  const pct = head.lastIndexOf('%')
  if (pct > HEAD_LENGTH - 3) head = head.slice(0, pct)
  return `${head}~${createHash('sha256').update(raw, 'utf8').digest('hex')}`
}

export const padSeq = (seq: number): string => String(seq).padStart(SEQ_WIDTH, '0')

export const streamPrefix = (aggregateType: string, aggregateId: string): string =>
  `${EVENTS_PREFIX}${escapeSegment(aggregateType)}/${escapeSegment(aggregateId)}/`

export const eventKey = (aggregateType: string, aggregateId: string, seq: number): string =>
  `${streamPrefix(aggregateType, aggregateId)}${padSeq(seq)}.json`

/** The sequence number of an event key of a stream, or null for anything else. */
export const seqOfEventKey = (key: string): number | null => {
  const m = /\/(\d{20})\.json$/.exec(key)
  return m === null ? null : Number(m[1])
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0')

export const dayPrefix = (us: number): string => {
  const d = new Date(Math.floor(us / 1000))
  return `${BY_DATE_PREFIX}${pad(d.getUTCFullYear(), 4)}/${pad(d.getUTCMonth() + 1, 2)}/${pad(d.getUTCDate(), 2)}/`
}

export const manifestKey = (us: number, writer: string, n: number): string =>
  `${dayPrefix(us)}${pad(us, 16)}-${writer}-${pad(n, 10)}.json`

/** A key that sorts before every manifest key of time `us` or later (for `startAfter`). */
export const manifestKeyFloor = (us: number): string => `${dayPrefix(us)}${pad(us, 16)}`

export type ManifestKeyParts = { readonly us: number; readonly writer: string; readonly n: number }

export const parseManifestKey = (key: string): ManifestKeyParts | null => {
  const m = /^indexes\/by-date\/\d{4}\/\d{2}\/\d{2}\/(\d{16})-([a-z0-9]+)-(\d{10})\.json$/.exec(key)
  if (m === null) return null
  return { us: Number(m[1]), writer: m[2] as string, n: Number(m[3]) }
}
