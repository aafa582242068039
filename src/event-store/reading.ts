import type { StoredEnvelope } from '../core/envelope.ts'
import { isCairnError } from '../core/errors.ts'
import type { Logger } from '../core/ports/logger.ts'
import { listAll } from '../core/ports/object-store.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import type { IndexedRow, SegmentRef, SequenceAllocator } from '../sequencing/allocator.ts'
import { BY_DATE_PREFIX, parseSegmentKey, segmentKey, segmentKeyFloor } from './keys.ts'
import { parseSegment } from './segment.ts'
import type { ParsedSegment } from './segment.ts'

/** GETs in flight at once for one read. */
const READ_CONCURRENCY = 16

export const keyOf = (segment: Pick<SegmentRef, 'atUs' | 'writer' | 'n'>): string =>
  segmentKey(segment.atUs, segment.writer, segment.n)

/** Runs `fn` over `items` with at most `limit` in flight. */
export const forEachLimit = async <T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> => {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T
      await fn(item)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

/** A segment's object, parsed; null when the key holds nothing (not written, or not yet). */
export const fetchSegment = async (
  store: ObjectStore,
  key: string,
): Promise<ParsedSegment | null> => {
  const got = await store.get(key)
  return got === null ? null : parseSegment(got.body)
}

/** The envelope at `row`'s line of its segment, when the segment holds it there. */
export const envelopeAt = (
  parsed: ParsedSegment | null,
  row: Pick<IndexedRow, 'eventId' | 'position'>,
): StoredEnvelope | null => {
  if (parsed === null || parsed.kind === 'gap') return null
  const line = parsed.lines[row.position]
  if (line === undefined) return null
  const envelope = JSON.parse(line) as StoredEnvelope
  return envelope.event_id === row.eventId ? envelope : null
}

export type Reader = {
  readonly readStream: (
    handler: string,
    aggregateId: string,
    fromSeq: number,
    toSeq: number,
  ) => Promise<StoredEnvelope[]>
  readonly getByEventId: (eventId: string) => Promise<StoredEnvelope | null>
  readonly readByDate: (fromMs: number, toMs: number) => AsyncGenerator<StoredEnvelope>
}

/**
 * Reads go through the stream index: the rows of an aggregate (or of one event id) name the
 * segments and lines that hold them; each segment is read once, whole, at most
 * `READ_CONCURRENCY` at a time. An event whose segment is a gap, or not written (yet), is not
 * returned: nothing unacknowledged is read, and no reader waits on a sequence.
 */
export const createReader = (options: {
  readonly store: ObjectStore
  readonly allocator: SequenceAllocator
  readonly log: Logger
}): Reader => {
  const { store, allocator, log } = options

  const readRows = async (rows: readonly IndexedRow[]): Promise<StoredEnvelope[]> => {
    const bySegment = new Map<number, { key: string; parsed: ParsedSegment | null }>()
    for (const row of rows) {
      if (row.state === 'gap' || bySegment.has(row.segment.id)) continue
      bySegment.set(row.segment.id, { key: keyOf(row.segment), parsed: null })
    }
    await forEachLimit([...bySegment.values()], READ_CONCURRENCY, async (s) => {
      s.parsed = await fetchSegment(store, s.key)
    })
    const out: StoredEnvelope[] = []
    for (const row of rows) {
      const s = bySegment.get(row.segment.id)
      if (s === undefined) continue
      const envelope = envelopeAt(s.parsed, row)
      if (envelope !== null) out.push(envelope)
      else if (s.parsed !== null && s.parsed.kind === 'segment')
        log.error(
          { key: s.key, position: row.position, event_id: row.eventId },
          'the stream index points at a line that does not hold its event',
        )
    }
    return out
  }

  async function* readByDate(fromMs: number, toMs: number): AsyncGenerator<StoredEnvelope> {
    const seen = new Set<string>()
    for await (const key of listAll(store, BY_DATE_PREFIX, segmentKeyFloor(fromMs * 1000))) {
      const parts = parseSegmentKey(key)
      if (parts === null) continue
      if (parts.us > toMs * 1000 + 999) return
      if (parts.us < fromMs * 1000) continue
      let envelopes: StoredEnvelope[]
      try {
        const parsed = await fetchSegment(store, key)
        if (parsed === null || parsed.kind === 'gap') continue
        envelopes = parsed.lines.map((line) => JSON.parse(line) as StoredEnvelope)
      } catch (error) {
        if (isCairnError(error)) throw error
        log.error({ key, err: String(error) }, 'skipping a malformed segment')
        continue
      }
      for (const envelope of envelopes) {
        if (seen.has(envelope.event_id)) continue
        seen.add(envelope.event_id)
        yield envelope
      }
    }
  }

  return {
    async readStream(handler, aggregateId, fromSeq, toSeq) {
      return readRows(await allocator.stream(handler, aggregateId, fromSeq, toSeq))
    },
    async getByEventId(eventId) {
      const row = await allocator.lookup(eventId)
      if (row === null) return null
      return (await readRows([row]))[0] ?? null
    },
    readByDate,
  }
}
