import type { StoredEnvelope } from '../core/envelope.ts'
import { listAll } from '../core/ports/object-store.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import { BY_DATE_PREFIX, parseSegmentKey, segmentKeyFloor } from './keys.ts'
import { parseSegment } from './segment.ts'

export type FollowOptions = {
  /** Events of segments keyed at or after this time (ms) are followed. */
  readonly sinceMs: number
  /**
   * How late a segment may appear after its key's time (the event store's bound on the index
   * delay): each listing starts this far before the newest key seen, so a late one is not missed.
   */
  readonly lateMs: number
  readonly pollMs?: number
  readonly signal: AbortSignal
}

/**
 * The events committed to the bucket from `sinceMs` on, as they come: the segments are listed
 * every `pollMs` (500 ms), each read once, its envelopes yielded in order. For operators (`cairn
 * tail`); the publisher is what delivers events to consumers.
 */
export async function* followEvents(
  store: ObjectStore,
  options: FollowOptions,
): AsyncGenerator<StoredEnvelope> {
  const { signal } = options
  const sinceUs = options.sinceMs * 1000
  const lateUs = options.lateMs * 1000
  const seen = new Map<string, number>()
  let newestUs = sinceUs
  while (!signal.aborted) {
    const from = segmentKeyFloor(Math.max(0, Math.min(newestUs, Date.now() * 1000) - lateUs))
    for await (const key of listAll(store, BY_DATE_PREFIX, from)) {
      if (signal.aborted) return
      const parts = parseSegmentKey(key)
      if (parts === null || parts.us < sinceUs || seen.has(key)) continue
      seen.set(key, parts.us)
      newestUs = Math.max(newestUs, parts.us)
      const object = await store.get(key)
      if (object === null) continue
      let parsed: ReturnType<typeof parseSegment>
      try {
        parsed = parseSegment(object.body)
      } catch {
        continue // malformed: the publisher quarantines it; nothing to show
      }
      if (parsed.kind !== 'segment') continue
      for (const line of parsed.lines) yield JSON.parse(line) as StoredEnvelope
    }
    for (const [key, us] of seen) if (us < newestUs - 2 * lateUs) seen.delete(key)
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, options.pollMs ?? 500)
      signal.addEventListener('abort', done, { once: true })
    })
  }
}
