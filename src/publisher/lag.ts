import type { ObjectStore } from '../core/ports/object-store.ts'
import { BY_DATE_PREFIX, parseSegmentKey } from '../event-store/keys.ts'

/**
 * The publisher's lag as an operator reads it: the age of the oldest event not yet published,
 * 0 when it is caught up (an idle, caught-up pipeline has no lag, however long ago its last event
 * was).
 */

/** Segments after the checkpoint counted at most this far (the listing stays one page). */
export const UNPUBLISHED_COUNT_CAP = 1000

/**
 * The segments after the checkpoint: the key time (µs) of the first (null when there is none)
 * and how many there are, counted up to UNPUBLISHED_COUNT_CAP (`capped` then).
 */
export const unpublishedSegments = async (
  store: ObjectStore,
  checkpointKey: string | null,
): Promise<{ oldestUs: number | null; count: number; capped: boolean }> => {
  const page = await store.list(BY_DATE_PREFIX, {
    ...(checkpointKey === null ? {} : { startAfter: checkpointKey }),
    limit: UNPUBLISHED_COUNT_CAP,
  })
  let oldestUs: number | null = null
  let count = 0
  for (const key of page.keys) {
    const parts = parseSegmentKey(key)
    if (parts === null) continue
    oldestUs ??= parts.us
    count++
  }
  return { oldestUs, count, capped: page.next !== undefined }
}

/** Whole seconds from `oldestUs` to `nowUs` (both on the database's clock); 0 when none. */
export const lagSeconds = (oldestUs: number | null, nowUs: number): number =>
  oldestUs === null ? 0 : Math.max(0, Math.round((nowUs - oldestUs) / 1_000_000))
