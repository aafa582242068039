import { idempotencyHash } from '../core/envelope.ts'
import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import type { Logger } from '../core/ports/logger.ts'
import { listAll } from '../core/ports/object-store.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import type {
  FoundSegment,
  RegistryMeta,
  ReserveResults,
  SequenceAllocator,
} from '../sequencing/allocator.ts'
import { handlerOf } from '../sequencing/allocator.ts'
import { sleep } from './context.ts'
import { BY_DATE_PREFIX, RETIRED_EVENTS_PREFIX, parseSegmentKey, segmentKeyFloor } from './keys.ts'
import { fetchSegment, forEachLimit } from './reading.ts'

/**
 * W2 when PostgreSQL and the bucket disagree (DESIGN.md section 4). Sequence uniqueness is
 * enforced by the registry, so a registry restored from an older backup, or lost, would hand out
 * sequences the bucket already holds. Every segment's row is committed before its PUT, so in a
 * healthy system every segment key in the bucket is known to the registry; the guard checks that
 * by listing the bucket from `verified_through_us` (the registry's own mark, which a restore
 * takes back with it) and comparing. A key the registry does not know means it went back in
 * time: appends are refused, with the command that reconciles, until a check passes again.
 *
 * When it checks: before this writer's first reservation; before writing a segment whose
 * reservation came from a registry with another identity, a server that restarted (a restore of
 * its files needs one) — after waiting out the writers' bound since that start, so any write
 * reserved before it has landed or been refused — or a segment id not above the last one this
 * writer was given (ids only go up, unless the registry went back: a logical restore); and every
 * repair round, which also moves the mark on.
 */
export type BucketGuard = {
  /**
   * Before a reservation: checks when due. Returns the highest segment id this writer had been
   * given by then, the floor `afterReserve` judges the reservation's id against.
   */
  beforeReserve(): Promise<number>
  /**
   * After a reservation issued when the writer held segment ids up to `floor`: an id not above
   * it means the registry went back. (Reservations in flight together may come back in any
   * order; only one issued after another's answer must have a higher id.)
   */
  afterReserve(
    reserved: Pick<ReserveResults, 'instance' | 'startedUs' | 'segmentId'>,
    floor: number,
  ): Promise<void>
  /**
   * Checks now (shared with a check in progress); throws REGISTRY_BEHIND_BUCKET on a mismatch.
   * A check that passes moves the registry's mark on, unless `advance` is false.
   */
  check(advance?: boolean): Promise<void>
  /** The refusal in force, if any. */
  readonly refusal: () => CairnError | null
}

/** A refused writer checks again at most this often (appends resume once reconciled). */
const RECHECK_AFTER_MS = 2_000

export const behindBucket = (unknown: readonly string[]): CairnError =>
  new CairnError(
    ErrorCode.REGISTRY_BEHIND_BUCKET,
    'appends refused until `cairn reconcile --yes` rebuilds the sequence registry from the ' +
      `bucket: the bucket holds ${unknown.length} segment(s) the registry does not know ` +
      '(PostgreSQL restored from an older backup, or lost), and appending now could give a ' +
      `sequence twice. First unknown: ${unknown[0]}`,
    { retryable: true, details: { unknown_segments: unknown.length, first: unknown[0] } },
  )

export const createBucketGuard = (options: {
  readonly store: ObjectStore
  readonly allocator: SequenceAllocator
  readonly log: Logger
  readonly boundMs: number
}): BucketGuard => {
  const { store, allocator, log, boundMs } = options
  let known: { instance: string; startedUs: number } | null = null
  /** The highest segment id this writer was given. */
  let lastSegmentId = 0
  /** A reservation came from a server that started since the last check. */
  let restartSeen = false
  let refused: CairnError | null = null
  let checkedAt = 0
  let running: Promise<void> | null = null

  const runCheck = async (advance: boolean): Promise<void> => {
    const meta: RegistryMeta = await allocator.meta()
    if (meta.reconciling) {
      throw new CairnError(
        ErrorCode.REGISTRY_RECONCILING,
        'appends are paused: the registry is being reconciled from the bucket (cairn reconcile)',
        { retryable: true },
      )
    }
    // A server seen to restart less than the bound ago: let every write reserved before settle.
    // (Not at this process's first check: an embedded database starts with its process.)
    const nowUs = await allocator.now()
    const sinceStartMs = (nowUs - meta.startedUs) / 1000
    if (restartSeen && sinceStartMs < boundMs) await sleep(boundMs - sinceStartMs)
    restartSeen = false
    const listed: { key: string; us: number; id: string }[] = []
    for await (const key of listAll(
      store,
      BY_DATE_PREFIX,
      segmentKeyFloor(meta.verifiedThroughUs),
    )) {
      const parts = parseSegmentKey(key)
      if (parts === null || parts.us < meta.verifiedThroughUs) continue
      listed.push({ key, us: parts.us, id: `${parts.us}-${parts.writer}-${parts.n}` })
    }
    const unknown: string[] = []
    if (listed.length > 0) {
      const rows = await allocator.segmentsKeyedBetween(
        meta.verifiedThroughUs,
        Math.max(...listed.map((l) => l.us)),
      )
      const ids = new Set(rows.map((r) => `${r.atUs}-${r.writer}-${r.n}`))
      for (const l of listed) if (!ids.has(l.id)) unknown.push(l.key)
    }
    checkedAt = performance.now()
    known = { instance: meta.instance, startedUs: meta.startedUs }
    if (unknown.length > 0) {
      refused = behindBucket(unknown)
      log.error(
        { unknown_segments: unknown.length, first: unknown[0] },
        'the bucket holds segments the registry does not know; appends refused until `cairn reconcile`',
      )
      throw refused
    }
    if (refused !== null) log.info({}, 'the registry agrees with the bucket again; appends resume')
    refused = null
    // Keys older than the bound before now can no longer appear from a reservation it holds.
    if (advance) await allocator.advanceVerified(nowUs - boundMs * 1000 - 1_000_000)
  }

  const check = (advance = true): Promise<void> => {
    if (!advance) return runCheck(false)
    running ??= runCheck(true).finally(() => {
      running = null
    })
    return running
  }

  return {
    async beforeReserve() {
      if (known === null) await check()
      else if (refused !== null) {
        if (performance.now() - checkedAt < RECHECK_AFTER_MS) throw refused
        await check()
      }
      return lastSegmentId
    },
    async afterReserve(reserved, floor) {
      const wentBack = reserved.segmentId !== null && reserved.segmentId <= floor
      if (reserved.segmentId !== null) lastSegmentId = Math.max(lastSegmentId, reserved.segmentId)
      if (
        !wentBack &&
        known !== null &&
        known.instance === reserved.instance &&
        known.startedUs === reserved.startedUs
      )
        return
      log.warn(
        {
          instance: reserved.instance,
          started_us: reserved.startedUs,
          segment_id: reserved.segmentId,
        },
        'the registry was replaced, restored or restarted; checking it against the bucket',
      )
      if (wentBack) lastSegmentId = reserved.segmentId ?? 0
      if (known !== null && known.startedUs !== reserved.startedUs) restartSeen = true
      return check()
    },
    check,
    refusal: () => refused,
  }
}

/** Refuses a bucket written in the retired per-event layout (DESIGN.md section 4). */
export const assertCurrentLayout = async (store: ObjectStore): Promise<void> => {
  const page = await store.list(RETIRED_EVENTS_PREFIX, { limit: 1 })
  if (page.keys.length > 0) {
    throw new CairnError(
      ErrorCode.BUCKET_LAYOUT_RETIRED,
      `${store.describe} holds events in the retired per-event layout (${page.keys[0]}). This ` +
        'cairn writes and reads segments only (one object per group commit under ' +
        'indexes/by-date/); it does not read that layout. Use a new, empty bucket.',
    )
  }
}

export type ReconcileProgress = {
  readonly segments: number
  readonly totalSegments: number
  readonly events: number
}

export type ReconcileResult = {
  readonly segments: number
  readonly gaps: number
  readonly events: number
  readonly malformed: readonly string[]
  /** Event ids found at a sequence another event already holds in the bucket (not recorded). */
  readonly clashes: readonly string[]
}

/**
 * Rebuilds the sequence allocator, the stream index and the idempotency records from the bucket
 * alone (`cairn reconcile`). Reservations are refused meanwhile (writers answer 503 and retry);
 * after emptying the tables it waits out the writers' bound, so a write reserved before has landed
 * or been refused, then reads every segment in key order: the first segment holding an event id
 * is where the index points (a repair's copy comes later). Aggregates resume after their last
 * sequence in the bucket; a new registry instance tells running writers to check again.
 */
export const reconcileFromBucket = async (options: {
  readonly store: ObjectStore
  readonly allocator: SequenceAllocator
  readonly handlerPrefix: string
  readonly boundMs: number
  readonly log: Logger
  readonly onProgress?: (p: ReconcileProgress) => void
}): Promise<ReconcileResult> => {
  const { store, allocator, log } = options
  await assertCurrentLayout(store)
  await allocator.beginReconcile()
  await sleep(options.boundMs)
  const startUs = await allocator.now()
  const keys: string[] = []
  for await (const key of listAll(store, BY_DATE_PREFIX)) {
    if (parseSegmentKey(key) !== null) keys.push(key)
  }
  const malformed: string[] = []
  const clashes: string[] = []
  let events = 0
  let gaps = 0
  let done = 0
  const BATCH = 64
  for (let i = 0; i < keys.length; i += BATCH) {
    const batch = keys.slice(i, i + BATCH)
    const found: (FoundSegment | null)[] = new Array<FoundSegment | null>(batch.length).fill(null)
    await forEachLimit(
      batch.map((key, k) => ({ key, k })),
      16,
      async ({ key, k }) => {
        const parts = parseSegmentKey(key)
        if (parts === null) return
        const base = { atUs: parts.us, writer: parts.writer, n: parts.n }
        try {
          const parsed = await fetchSegment(store, key)
          if (parsed === null) return
          if (parsed.kind === 'gap') {
            found[k] = { ...base, state: 'gap', events: [] }
            return
          }
          found[k] = {
            ...base,
            state: 'stored',
            events: parsed.lines.map((line, position) => {
              const e = JSON.parse(line) as StoredEnvelope
              return {
                eventId: e.event_id,
                handler: handlerOf(options.handlerPrefix, e.aggregate_type),
                aggregateId: e.aggregate_id,
                seq: e.sequence_number,
                hash: e.metadata.kind === 'command' ? idempotencyHash(e) : null,
                position,
              }
            }),
          }
        } catch (error) {
          if (isCairnError(error)) throw error
          malformed.push(key)
          log.error({ key, err: String(error) }, 'malformed segment skipped')
        }
      },
    )
    const segments = found.filter((f): f is FoundSegment => f !== null)
    gaps += segments.filter((s) => s.state === 'gap').length
    const r = await allocator.recordFound(segments)
    events += r.recorded
    clashes.push(...r.clashes)
    done += batch.length
    options.onProgress?.({ segments: done, totalSegments: keys.length, events })
  }
  if (clashes.length > 0) {
    log.error(
      { clashes: clashes.length, first: clashes[0] },
      'the bucket holds events at sequences another event already holds; they were not indexed',
    )
  }
  await allocator.endReconcile(startUs - options.boundMs * 1000)
  return { segments: keys.length, gaps, events, malformed, clashes }
}
