import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { segmentKey } from '../../src/event-store/keys.ts'
import { parseSegment } from '../../src/event-store/segment.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'

/**
 * An event's envelope exactly as the bucket holds it: its line of the segment the stream index
 * points at, read from the object itself (never re-serialised), so a test can compare bytes.
 * Null when the event is not indexed, or its segment does not hold it at that line.
 */
export const storedLine = async (
  ws: { readonly objectStore: ObjectStore; readonly sql: Sql; readonly schema: string },
  eventId: string,
): Promise<string | null> => {
  const row = await createSequenceAllocator({ sql: ws.sql, schema: ws.schema }).lookup(eventId)
  if (row === null) return null
  const { atUs, writer, n } = row.segment
  const got = await ws.objectStore.get(segmentKey(atUs, writer, n))
  if (got === null) return null
  const parsed = parseSegment(got.body)
  if (parsed.kind === 'gap') return null
  const line = parsed.lines[row.position]
  if (line === undefined) return null
  return (JSON.parse(line) as { event_id?: unknown }).event_id === eventId ? line : null
}
