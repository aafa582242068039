import { canonicalJson } from '../core/envelope.ts'
import { isCairnError } from '../core/errors.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import type { WriteContext } from './context.ts'
import { sleep } from './context.ts'
import type { GapMarker } from './gap.ts'
import { fetchSegment } from './reading.ts'
import type { ParsedSegment } from './segment.ts'

const encoder = new TextEncoder()

export type SegmentWrite =
  | { readonly kind: 'written' }
  | { readonly kind: 'gap' }
  | { readonly kind: 'unknown'; readonly error: unknown }

/**
 * Create-only PUT of a segment at its key. The key is its writer's alone, so when a retry finds
 * it taken, the first attempt landed — unless the repair closed it with a gap marker meanwhile
 * (W2: an ambiguous outcome is settled by reading back). No attempt starts past the deadline.
 */
export const writeSegment = async (
  store: ObjectStore,
  key: string,
  bytes: Uint8Array,
  /** No attempt starts after this (monotonic ms): a write must land within the writers' bound. */
  deadlineMs: number = Number.POSITIVE_INFINITY,
): Promise<SegmentWrite> => {
  let lastError: unknown
  for (let attempt = 0; attempt < 3 && performance.now() < deadlineMs; attempt++) {
    try {
      const outcome = await store.putIfAbsent(key, bytes, 'application/x-ndjson')
      if (outcome === 'created') return { kind: 'written' }
      const found = await fetchSegment(store, key)
      if (found?.kind === 'gap') return { kind: 'gap' }
      if (found !== null) return { kind: 'written' }
    } catch (error) {
      lastError = error
      if (!isCairnError(error) || !error.retryable) break
      await sleep(25 * 2 ** attempt)
    }
  }
  return { kind: 'unknown', error: lastError }
}

/**
 * Closes a segment's key with a gap marker, create-only, so the key holds either the segment or
 * the marker, never both (W4). Returns what the key holds afterwards: the marker, the segment (it
 * landed first), or null when the store did not answer (the repair tries again later).
 */
export const closeWithGap = async (
  ctx: Pick<WriteContext, 'store' | 'clock' | 'log'>,
  key: string,
  reason: string,
): Promise<ParsedSegment | null> => {
  const marker: GapMarker = {
    gap: true,
    segment: key,
    reason,
    marked_at: new Date(ctx.clock.now()).toISOString(),
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const outcome = await ctx.store.putIfAbsent(key, encoder.encode(canonicalJson(marker)))
      if (outcome === 'created') {
        ctx.log.warn({ key, reason }, 'segment key closed with a gap marker')
        return { kind: 'gap', marker }
      }
      const found = await fetchSegment(ctx.store, key)
      if (found !== null) return found
    } catch {
      await sleep(25 * 2 ** attempt)
    }
  }
  return null
}
