/**
 * The publisher's best-effort dedup (P3): the ids of the most recently published events, oldest
 * first, bounded. A restart seeds it from the checkpoint's snapshot, so a restart or a checkpoint
 * rollback republishes little. Consumers stay correct either way (their registry dedups).
 */
export type DedupWindow = {
  has(eventId: string): boolean
  add(eventId: string): void
  /** The newest `max` ids, oldest first (for the checkpoint). */
  snapshot(max: number): string[]
  readonly size: number
}

export const createDedupWindow = (capacity: number, seed: readonly string[] = []): DedupWindow => {
  // A Set keeps insertion order: the first element is the oldest.
  const ids = new Set<string>()
  const add = (id: string): void => {
    if (capacity <= 0) return
    ids.delete(id)
    ids.add(id)
    while (ids.size > capacity) {
      const oldest = ids.values().next().value as string
      ids.delete(oldest)
    }
  }
  for (const id of seed) add(id)
  return {
    has: (id) => ids.has(id),
    add,
    snapshot(max) {
      if (max <= 0) return []
      const all = [...ids]
      return all.slice(Math.max(0, all.length - max))
    },
    get size() {
      return ids.size
    },
  }
}
