import type { ObjectStore } from '../core/ports/object-store.ts'
import { BY_DATE_PREFIX, parseSegmentKey } from '../event-store/keys.ts'

/**
 * The publisher's lag as an operator reads it: the age of the oldest event not yet published,
 * 0 when it is caught up (an idle, caught-up pipeline has no lag, however long ago its last event
 * was).
 */

/** The key time (µs) of the first segment after the checkpoint, or null when there is none. */
export const oldestUnpublishedUs = async (
  store: ObjectStore,
  checkpointKey: string | null,
): Promise<number | null> => {
  const page = await store.list(BY_DATE_PREFIX, {
    ...(checkpointKey === null ? {} : { startAfter: checkpointKey }),
    limit: 100,
  })
  for (const key of page.keys) {
    const parts = parseSegmentKey(key)
    if (parts !== null) return parts.us
  }
  return null
}

/** Whole seconds from `oldestUs` to `nowUs` (both on the database's clock); 0 when none. */
export const lagSeconds = (oldestUs: number | null, nowUs: number): number =>
  oldestUs === null ? 0 : Math.max(0, Math.round((nowUs - oldestUs) / 1_000_000))
