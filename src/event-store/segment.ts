import type { StoredEnvelope } from '../core/envelope.ts'
import { isGapMarker } from './gap.ts'
import type { GapMarker } from './gap.ts'

/**
 * A segment: the one object a group commit writes, at its key under `indexes/by-date/`
 * (keys.ts). It is JSON lines a person can read: a header line, then one stored envelope per
 * line, byte for byte as stored (canonical JSON never holds a raw newline):
 *
 *   {"cairn_segment":1,"writer":"3f09a1c2d4","written_at":"2026-12-06T21:04:05.123Z","events":2,"prev_pending":[0]}
 *   {"actor":"…","aggregate_id":"p1",…,"sequence_number":7}
 *   {"actor":"…","aggregate_id":"q9",…,"sequence_number":1}
 *
 * `prev_pending` lists the lines whose aggregate's previous event was still in flight at
 * reservation: the publisher publishes such an event only after that one (or once the segment is
 * settled). An event may appear in more than one segment (the repair re-indexes a late segment by
 * copying it): readers dedup by event id, and the stream index says where each one is read.
 */
export const SEGMENT_VERSION = 1

export type SegmentHeader = {
  readonly cairn_segment: typeof SEGMENT_VERSION
  readonly writer: string
  readonly written_at: string
  readonly events: number
  readonly prev_pending?: readonly number[]
}

/** One event of a segment as the publisher handles it: routing fields and the exact bytes. */
export type SegmentEntry = {
  readonly event_id: string
  readonly event_type: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  readonly sequence_number: number
  readonly kafka_topic: string | null
  readonly ordering_key: string | null
  /** The envelope exactly as stored (canonical JSON). */
  readonly body: string
  /** The aggregate's previous event was in flight at reservation (see above). */
  readonly prev_pending?: true
  /** Trace context of the envelope, for the Kafka headers. */
  readonly traceparent?: string
  readonly tracestate?: string
}

export const segmentEntry = (
  envelope: StoredEnvelope,
  body: string,
  prevPending = false,
): SegmentEntry => ({
  event_id: envelope.event_id,
  event_type: envelope.event_type,
  aggregate_type: envelope.aggregate_type,
  aggregate_id: envelope.aggregate_id,
  sequence_number: envelope.sequence_number,
  kafka_topic:
    typeof envelope.metadata.kafka_topic === 'string' ? envelope.metadata.kafka_topic : null,
  ordering_key:
    typeof envelope.metadata.ordering_key === 'string' ? envelope.metadata.ordering_key : null,
  body,
  ...(prevPending ? { prev_pending: true as const } : {}),
  ...(typeof envelope.metadata.traceparent === 'string'
    ? { traceparent: envelope.metadata.traceparent }
    : {}),
  ...(typeof envelope.metadata.tracestate === 'string'
    ? { tracestate: envelope.metadata.tracestate }
    : {}),
})

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** The bytes of a segment holding `entries`, in this order (their lines are 0, 1, …). */
export const encodeSegment = (
  writer: string,
  writtenAt: string,
  entries: readonly SegmentEntry[],
): Uint8Array => {
  const pending: number[] = []
  entries.forEach((e, i) => {
    if (e.prev_pending === true) pending.push(i)
  })
  const header: SegmentHeader = {
    cairn_segment: SEGMENT_VERSION,
    writer,
    written_at: writtenAt,
    events: entries.length,
    ...(pending.length > 0 ? { prev_pending: pending } : {}),
  }
  let text = `${JSON.stringify(header)}\n`
  for (const e of entries) text += `${e.body}\n`
  return encoder.encode(text)
}

/** A segment as read: its header and its lines (the stored envelopes' bytes), or a gap marker. */
export type ParsedSegment =
  | { readonly kind: 'segment'; readonly header: SegmentHeader; readonly lines: readonly string[] }
  | { readonly kind: 'gap'; readonly marker: GapMarker }

/** Reads a segment's object; throws a TypeError naming what is wrong (callers count and skip). */
export const parseSegment = (bytes: Uint8Array): ParsedSegment => {
  const text = decoder.decode(bytes)
  const cut = text.indexOf('\n')
  let first: unknown
  try {
    first = JSON.parse(cut < 0 ? text : text.slice(0, cut))
  } catch {
    throw new TypeError('not a cairn segment: its first line is not JSON')
  }
  if (isGapMarker(first)) {
    if (cut >= 0 && text.slice(cut + 1).trim() !== '')
      throw new TypeError('a gap marker followed by more lines')
    return { kind: 'gap', marker: first }
  }
  const header = first as Partial<SegmentHeader> | null
  if (header?.cairn_segment !== SEGMENT_VERSION || typeof header.events !== 'number') {
    throw new TypeError(`not a cairn segment (version ${SEGMENT_VERSION} header line)`)
  }
  const lines = cut < 0 ? [] : text.slice(cut + 1).split('\n')
  if (lines.at(-1) === '') lines.pop()
  if (lines.length !== header.events) {
    throw new TypeError(`segment header says ${header.events} events, it holds ${lines.length}`)
  }
  return { kind: 'segment', header: header as SegmentHeader, lines }
}

/** The entries of a parsed segment, in line order (none for a gap marker). */
export const segmentEntries = (parsed: ParsedSegment): SegmentEntry[] => {
  if (parsed.kind === 'gap') return []
  const pending = new Set(parsed.header.prev_pending ?? [])
  return parsed.lines.map((line, i) =>
    segmentEntry(JSON.parse(line) as StoredEnvelope, line, pending.has(i)),
  )
}

/** Throws a TypeError unless every entry has an event id and a body. */
const checkEntries = (entries: readonly unknown[]): void => {
  for (const e of entries) {
    const entry = e as Partial<SegmentEntry> | null
    if (typeof entry?.event_id !== 'string' || typeof entry.body !== 'string') {
      throw new TypeError('segment entry without event_id or body')
    }
  }
}

/**
 * PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a commit notice carries its
 * segment's entries in payloads below this, otherwise the key alone (the publisher reads the
 * segment).
 */
export const NOTICE_MAX_BYTES = 7_900

/**
 * Most payloads one commit is announced in (about 125 KB of entries, a group of 64 events of 1.4
 * KiB). A larger group is announced by its key alone: its publisher GETs the segment, one request
 * for that many events.
 */
export const NOTICE_MAX_PARTS = 16

const utf8Bytes = (s: string): number =>
  // A UTF-16 unit is one to three UTF-8 bytes: only a string in between needs counting.
  s.length * 3 < NOTICE_MAX_BYTES ? s.length : Buffer.byteLength(s, 'utf8')

/**
 * A commit notice as strings for another process, all sent in one transaction: the segment key,
 * then a newline and the entries as JSON, so the publisher there needs no GET.
 *   - `key\n[entries]` when they fit in one payload;
 *   - `key\n<i>/<n>\n[some entries]`, i = 1…n, when they fit in `maxParts` payloads (in order,
 *     each entry whole in one part; `createNoticeAssembler` puts them back together);
 *   - `key` alone otherwise (an entry too large for a payload, or too many parts).
 * A reader of the first form only (a publisher of an earlier release) reads a part as `key`.
 */
export const encodeCommitNotices = (
  segmentKey: string,
  entries: readonly SegmentEntry[],
  maxParts: number = NOTICE_MAX_PARTS,
): string[] => {
  let bodies = 0
  for (const e of entries) bodies += e.body.length
  // The bodies alone are a lower bound of the bytes: a group that cannot fit is not serialised.
  if (bodies >= NOTICE_MAX_BYTES * Math.max(1, maxParts)) return [segmentKey]
  const json = entries.map((e) => JSON.stringify(e))
  if (bodies < NOTICE_MAX_BYTES) {
    const whole = `${segmentKey}\n[${json.join(',')}]`
    if (utf8Bytes(whole) < NOTICE_MAX_BYTES) return [whole]
  }
  if (maxParts < 2 || entries.length < 2) return [segmentKey]
  // Room per part: the key, two newlines, `iii/nnn` and the brackets.
  const room = NOTICE_MAX_BYTES - Buffer.byteLength(segmentKey, 'utf8') - 12
  const groups: string[][] = []
  let current: string[] = []
  let used = 0
  for (const one of json) {
    const size = Buffer.byteLength(one, 'utf8') + 1
    if (size >= room) return [segmentKey]
    if (used + size >= room) {
      groups.push(current)
      if (groups.length >= maxParts) return [segmentKey]
      current = []
      used = 0
    }
    current.push(one)
    used += size
  }
  groups.push(current)
  const n = groups.length
  return groups.map((g, i) => `${segmentKey}\n${i + 1}/${n}\n[${g.join(',')}]`)
}

/** The single-payload form of `encodeCommitNotices` (the entries, or the key alone). */
export const encodeCommitNotice = (segmentKey: string, entries: readonly SegmentEntry[]): string =>
  encodeCommitNotices(segmentKey, entries, 1)[0] ?? segmentKey

/** A commit notice as read from one payload. */
export type DecodedNotice = {
  readonly segmentKey: string
  /** The entries (of this part, for a part); absent when not carried or not readable. */
  readonly entries?: readonly SegmentEntry[]
  /** Part `index` of `count` (from 1), when the commit was announced in several payloads. */
  readonly part?: { readonly index: number; readonly count: number }
}

/** Reads one of `encodeCommitNotices`' strings; entries are absent when not carried or not readable. */
export const decodeCommitNotice = (payload: string): DecodedNotice => {
  const cut = payload.indexOf('\n')
  if (cut < 0) return { segmentKey: payload }
  const segmentKey = payload.slice(0, cut)
  let rest = payload.slice(cut + 1)
  let part: { index: number; count: number } | undefined
  const head = /^(\d{1,3})\/(\d{1,3})\n/.exec(rest)
  if (head !== null) {
    const index = Number(head[1])
    const count = Number(head[2])
    if (index < 1 || index > count) return { segmentKey }
    part = { index, count }
    rest = rest.slice(head[0].length)
  }
  try {
    const entries: unknown = JSON.parse(rest)
    if (!Array.isArray(entries)) return { segmentKey }
    checkEntries(entries)
    return {
      segmentKey,
      entries: entries as SegmentEntry[],
      ...(part === undefined ? {} : { part }),
    }
  } catch {
    return { segmentKey }
  }
}

/** What a listener passes on: a commit with its entries, or its key alone (the segment is read). */
export type AssembledNotice = {
  readonly segmentKey: string
  readonly entries?: readonly SegmentEntry[]
}

export type NoticeAssembler = {
  /**
   * One decoded payload, in the order received; returns the notices complete by now, in commit
   * order. A notice of one payload passes through. Parts are kept until the last one came; a
   * commit's payloads arrive together (PostgreSQL queues a transaction's notifications in one
   * go), so when anything else arrives first, the parts that did not come are taken as lost and
   * that commit is passed on by key, before what came.
   */
  take(notice: DecodedNotice): AssembledNotice[]
  /** The commits still waiting for parts, by key (the listener lost its session meanwhile). */
  flush(): AssembledNotice[]
}

export const createNoticeAssembler = (): NoticeAssembler => {
  let key: string | null = null
  let parts: (readonly SegmentEntry[] | undefined)[] = []
  let got = 0
  const flush = (): AssembledNotice[] => {
    if (key === null) return []
    const out = [{ segmentKey: key }]
    key = null
    parts = []
    got = 0
    return out
  }
  return {
    take(notice) {
      const p = notice.part
      if (p === undefined || notice.entries === undefined) {
        // Not a part, or an unreadable one: whatever was waiting will not be complete.
        if (notice.segmentKey === key) return flush()
        const plain: AssembledNotice =
          notice.entries === undefined
            ? { segmentKey: notice.segmentKey }
            : { segmentKey: notice.segmentKey, entries: notice.entries }
        return [...flush(), plain]
      }
      const out: AssembledNotice[] = []
      if (key !== notice.segmentKey || parts.length !== p.count) {
        out.push(...flush())
        key = notice.segmentKey
        parts = new Array<readonly SegmentEntry[] | undefined>(p.count)
      }
      if (parts[p.index - 1] === undefined) {
        parts[p.index - 1] = notice.entries
        got++
      }
      if (got === p.count) {
        const entries = parts.flatMap((x) => x ?? [])
        out.push({ segmentKey: notice.segmentKey, entries })
        key = null
        parts = []
        got = 0
      }
      return out
    },
    flush,
  }
}
