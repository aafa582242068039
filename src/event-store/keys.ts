/**
 * The whole bucket layout, in one place (DESIGN.md section 4).
 *
 *   indexes/by-date/{YYYY}/{MM}/{DD}/{us:016d}-{writer}-{n:010d}.ndjson
 *                                     one segment per group commit: the envelopes it stored, one
 *                                     per line (src/event-store/segment.ts), or a gap marker when
 *                                     its commit was given up; `us` is the reservation's time in
 *                                     microseconds (database clock), `writer` the process's id,
 *                                     `n` its counter. The publisher tails this prefix.
 *   indexes/quarantine/{YYYY}/…       what the publisher set aside (a listed segment it could not
 *                                     read), with the reason: `cairn quarantine`
 *   checkpoints/event_publisher.json  the publisher's durable checkpoint
 *   probes/{run}/…                    the conformance probe's scratch objects
 *
 * Aggregate types and ids never reach a key: an aggregate's stream is found through the stream
 * index in PostgreSQL (aggregate, sequence → segment, line). Keys under `events/` are the retired
 * per-event layout; a bucket holding them is refused.
 */
export const BY_DATE_PREFIX = 'indexes/by-date/'
export const QUARANTINE_PREFIX = 'indexes/quarantine/'
export const CHECKPOINT_KEY = 'checkpoints/event_publisher.json'
export const PROBES_PREFIX = 'probes/'
/** Where the retired per-event layout kept its objects (`events/{type}/{id}/{seq}.json`). */
export const RETIRED_EVENTS_PREFIX = 'events/'

const pad = (n: number, width: number): string => String(n).padStart(width, '0')

export const dayPrefix = (us: number): string => {
  const d = new Date(Math.floor(us / 1000))
  return `${BY_DATE_PREFIX}${pad(d.getUTCFullYear(), 4)}/${pad(d.getUTCMonth() + 1, 2)}/${pad(d.getUTCDate(), 2)}/`
}

export const segmentKey = (us: number, writer: string, n: number): string =>
  `${dayPrefix(us)}${pad(us, 16)}-${writer}-${pad(n, 10)}.ndjson`

/** A key that sorts before every segment key of time `us` or later (for `startAfter`). */
export const segmentKeyFloor = (us: number): string => `${dayPrefix(us)}${pad(us, 16)}`

export type SegmentKeyParts = { readonly us: number; readonly writer: string; readonly n: number }

export const parseSegmentKey = (key: string): SegmentKeyParts | null => {
  const m = /^indexes\/by-date\/\d{4}\/\d{2}\/\d{2}\/(\d{16})-([a-z0-9]+)-(\d{10})\.ndjson$/.exec(
    key,
  )
  if (m === null) return null
  return { us: Number(m[1]), writer: m[2] as string, n: Number(m[3]) }
}
