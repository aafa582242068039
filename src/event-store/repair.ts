import type { WriteContext } from './context.ts'
import { keyOf, fetchSegment } from './reading.ts'
import { encodeSegment, segmentEntries } from './segment.ts'
import type { SegmentEntry } from './segment.ts'
import { closeWithGap, writeSegment } from './segment-writes.ts'

export type RepairResult = {
  /** Events of late segments indexed again (copied into a new segment). */
  readonly indexed: number
  /** Segments never written, closed with a gap marker. */
  readonly gaps: number
  readonly unresolved: number
}

/**
 * Settles segments whose reservation never confirmed (a crashed or stalled writer, a late PUT, a
 * failed announcement), oldest first:
 *   - not in the bucket: its key is closed with a gap marker (create-only, W4), so the writer, if
 *     it comes back, loses; its sequences hold no event and no reader waits on them;
 *   - in the bucket: it may have landed after the publisher settled past its key, so its events
 *     are copied into a new segment keyed by the database's time now (the publisher finds that
 *     one), each marked as waiting for its predecessor. The stream index keeps pointing at the
 *     first copy; both hold the same bytes.
 */
export const repairStaleSegments = async (
  ctx: WriteContext,
  olderThanMs: number,
): Promise<RepairResult> => {
  const { store, allocator, log } = ctx
  const stale = await allocator.staleSegments(olderThanMs, 100)
  let indexed = 0
  let gaps = 0
  let unresolved = 0
  for (const s of stale) {
    const key = keyOf(s)
    let parsed
    try {
      parsed =
        (await fetchSegment(store, key)) ??
        (await closeWithGap(ctx, key, 'reservation never confirmed (writer crashed or stalled)'))
    } catch (error) {
      unresolved++
      log.error({ key, err: String(error) }, 'stale segment could not be read')
      continue
    }
    if (parsed === null) {
      unresolved++
      continue
    }
    if (parsed.kind === 'gap') {
      await allocator.markGap([s.id])
      gaps++
      continue
    }
    // Stamped by the database's clock, like every reservation: this host's clock may be off,
    // and a key older than the publisher's watermark would never be published.
    const entries: SegmentEntry[] = segmentEntries(parsed).map((e) => ({
      ...e,
      prev_pending: true,
    }))
    const sentAtMs = performance.now()
    const copy = await allocator.reserveSegment(ctx.writer, ctx.nextCounter())
    const copyKey = keyOf(copy)
    const bytes = encodeSegment(ctx.writer, new Date(ctx.clock.now()).toISOString(), entries)
    const outcome = await writeSegment(store, copyKey, bytes, sentAtMs + ctx.maxSegmentDelayMs)
    if (outcome.kind !== 'written' || performance.now() - sentAtMs > ctx.maxSegmentDelayMs) {
      // Both rows stay reserved: the next round settles them.
      unresolved++
      continue
    }
    // Marked stored even if the announcement fails: the repair must not copy it over and over
    // (a listing finds the copy; its events were late anyway).
    await ctx.announce({ segmentKey: copyKey, entries })
    await allocator.markStored([s.id, copy.id])
    indexed += entries.length
  }
  if (stale.length > 0) log.info({ indexed, gaps, unresolved }, 'repaired stale segments')
  return { indexed, gaps, unresolved }
}
