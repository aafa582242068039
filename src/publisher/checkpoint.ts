import { CHECKPOINT_KEY, segmentKeyFloor } from '../event-store/keys.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'

/**
 * The publisher's durable checkpoint, `checkpoints/event_publisher.json` in the bucket.
 *
 * `last_index_key`: every segment key up to and including it is done (published, or skipped as
 * malformed, or quarantined); the publisher lists strictly after it. It is either a segment key or
 * a settled floor (a key prefix that sorts before every later segment). `last_timestamp_ms` is its
 * time. `recent_event_ids` is the dedup snapshot, oldest first. `owner` is the active publisher;
 * the object is only ever replaced by a conditional write on the version read, so two publishers
 * cannot both advance it.
 */
export type Checkpoint = {
  readonly last_index_key: string | null
  readonly last_timestamp_ms: number
  readonly updated_at: string
  readonly recent_event_ids: readonly string[]
  readonly owner: string
  /**
   * The active publisher's view of the clock that stamps keys when it saved: whether it could
   * settle, why not, and its own clock's offset from the database's (ms). Informational.
   */
  readonly key_clock?: {
    readonly settling: boolean
    readonly reason: string | null
    readonly offset_ms: number | null
  }
}

export type LoadedCheckpoint = {
  readonly checkpoint: Checkpoint | null
  readonly etag: string | null
}

const decoder = new TextDecoder()
const encoder = new TextEncoder()

export const loadCheckpoint = async (store: ObjectStore): Promise<LoadedCheckpoint> => {
  const got = await store.get(CHECKPOINT_KEY)
  if (got === null) return { checkpoint: null, etag: null }
  const raw = JSON.parse(decoder.decode(got.body)) as Partial<Checkpoint>
  return {
    etag: got.etag,
    checkpoint: {
      last_index_key: typeof raw.last_index_key === 'string' ? raw.last_index_key : null,
      last_timestamp_ms: typeof raw.last_timestamp_ms === 'number' ? raw.last_timestamp_ms : 0,
      updated_at: typeof raw.updated_at === 'string' ? raw.updated_at : new Date(0).toISOString(),
      recent_event_ids: Array.isArray(raw.recent_event_ids)
        ? raw.recent_event_ids.filter((x): x is string => typeof x === 'string')
        : [],
      owner: typeof raw.owner === 'string' ? raw.owner : '',
      ...(typeof raw.key_clock === 'object' && raw.key_clock !== null
        ? { key_clock: raw.key_clock }
        : {}),
    },
  }
}

/** Conditional save: returns the new version tag, or null when someone else wrote it meanwhile. */
export const saveCheckpoint = async (
  store: ObjectStore,
  checkpoint: Checkpoint,
  etag: string | null,
): Promise<string | null> => {
  const result = await store.putIfMatch(
    CHECKPOINT_KEY,
    encoder.encode(JSON.stringify(checkpoint)),
    etag,
  )
  return result.outcome === 'written' ? result.etag : null
}

/**
 * The time a checkpoint may be reset to, from an operator's text: an ISO-8601 time of a real
 * calendar day (not 2026-02-30), not before 1970 and not in the future (a checkpoint moved past
 * now would publish nothing until then). Milliseconds, or why not.
 */
export const resetTime = (
  text: string,
  nowMs: number,
): { readonly ms: number } | { readonly problem: string } => {
  const m = /^(\d{4})-(\d{2})-(\d{2})T/.exec(text)
  const ms = Date.parse(text)
  if (m === null || Number.isNaN(ms)) return { problem: 'not an ISO-8601 time' }
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])]
  const day = new Date(Date.UTC(y, mo - 1, d))
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d) {
    return { problem: `not a calendar day: ${m[0].slice(0, 10)}` }
  }
  if (ms < 0) return { problem: 'before 1970: no segment is keyed before then' }
  if (ms > nowMs + RESET_AHEAD_MS) {
    return {
      problem: 'in the future: the publisher would publish nothing stored before then',
    }
  }
  return { ms }
}

/** How far past this host's clock a reset may go (the clocks of hosts differ a little). */
const RESET_AHEAD_MS = 5 * 60_000

/**
 * Moves the checkpoint back (or forward) to a time (ms): the publisher republishes everything
 * stored after it, and consumers deduplicate. Unowned, so the active publisher adopts it on its
 * next save, with an empty dedup snapshot. Returns the keys it moved from and to, or null when
 * the checkpoint changed while it was read (the publisher saved meanwhile; try again).
 */
export const resetCheckpoint = async (
  store: ObjectStore,
  toMs: number,
): Promise<{ readonly from: string | null; readonly to: string } | null> => {
  const { checkpoint, etag } = await loadCheckpoint(store)
  const to = segmentKeyFloor(toMs * 1000)
  const written = await saveCheckpoint(
    store,
    {
      last_index_key: to,
      last_timestamp_ms: toMs,
      updated_at: new Date().toISOString(),
      recent_event_ids: [],
      owner: '',
    },
    etag,
  )
  return written === null ? null : { from: checkpoint?.last_index_key ?? null, to }
}
