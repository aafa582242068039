import { randomBytes } from 'node:crypto'
import type { StoredEnvelope } from '../core/envelope.ts'
import type { CairnError } from '../core/errors.ts'
import { systemClock } from '../core/ports/clock.ts'
import type { Clock } from '../core/ports/clock.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import { noopTracer } from '../core/ports/tracer.ts'
import type { Tracer } from '../core/ports/tracer.ts'
import { handlerOf } from '../sequencing/allocator.ts'
import type { SequenceAllocator } from '../sequencing/allocator.ts'
import type { CommitNotice, WriteContext } from './context.ts'
import { createGroupCommit } from './group-commit.ts'
import type { AppendInput, AppendResult } from './group-commit.ts'
import { createReader } from './reading.ts'
import { createBucketGuard } from './reconcile.ts'
import type { BucketGuard } from './reconcile.ts'
import { repairStaleSegments } from './repair.ts'
import type { RepairResult } from './repair.ts'

export type { AppendInput, AppendResult } from './group-commit.ts'
export type { CommitNotice } from './context.ts'
export type { RepairResult } from './repair.ts'

export type IdempotencyMismatchMode = 'error' | 'warn'

export type EventStoreOptions = {
  readonly objectStore: ObjectStore
  readonly allocator: SequenceAllocator
  /** `EVENT_STORE_SEQUENCE_HANDLER_PREFIX` (default `write_side`). */
  readonly handlerPrefix?: string
  /** `EVENT_STORE_IDEMPOTENCY_MISMATCH_MODE` (default `error`). */
  readonly idempotencyMismatchMode?: IdempotencyMismatchMode
  /** Stamps informational times (a segment's `written_at`, a gap marker's `marked_at`) only. */
  readonly clock?: Clock
  readonly logger?: Logger
  /** Appends reserved together in one SQL round trip and written in one segment (default 256). */
  readonly maxGroupSize?: number
  /** Group commits in flight at once (default 4). */
  readonly maxGroupsInFlight?: number
  /**
   * While a group is in flight, the next one starts only once this many appends wait (default
   * 32) or the latest group started this long ago (`groupOverlapAfterMs`, default 10 ms): under
   * load the appends gather into fewer, larger groups (fewer PUTs per event: one segment per
   * group), and a slow group holds the others back for 10 ms at most.
   */
  readonly groupOverlapMinAppends?: number
  readonly groupOverlapAfterMs?: number
  /**
   * The writers' bound: a segment durable later than this after the time in its key is not
   * acknowledged (the append fails and the repair re-indexes the segment). Measured on the
   * monotonic clock from before the reservation was sent, so no wall clock decides it. The
   * publisher relies on it (docs/publisher.md). Default 10,000 ms.
   */
  readonly maxSegmentDelayMs?: number
  /** Largest stored envelope, in bytes of canonical JSON (default 1 MiB). */
  readonly maxEventBytes?: number
  /** Segments older than this with no confirmed write are repaired (default 60,000 ms). */
  readonly repairAfterMs?: number
  /** How often the repair (and the check of the bucket against the registry) runs; 0 turns it off (default 30,000 ms). */
  readonly repairIntervalMs?: number
  /** A span per append, child of its first envelope's traceparent (default: no tracing). */
  readonly tracer?: Tracer
}

export type ReadStreamOptions = {
  readonly fromSeq?: number
  readonly toSeq?: number
}

/** A promise returned is awaited before the segment is marked stored; any other value is ignored. */
export type CommitListener = (notice: CommitNotice) => unknown

export type EventStore = {
  append(input: AppendInput): Promise<AppendResult>
  readStream(
    aggregateType: string,
    aggregateId: string,
    options?: ReadStreamOptions,
  ): Promise<StoredEnvelope[]>
  /** The aggregate's current sequence number as the allocator knows it (0 if none). */
  currentSequence(aggregateType: string, aggregateId: string): Promise<number>
  getByEventId(eventId: string): Promise<StoredEnvelope | null>
  /**
   * Events indexed in [fromMs, toMs] (the database's time of their reservation, ms; `toMs` may be
   * Infinity), in the order they were indexed.
   */
  readByDate(fromMs: number, toMs: number): AsyncGenerator<StoredEnvelope>
  /**
   * Called after each group commit, in-process (wakes the publisher). Returns an unsubscribe. A
   * listener that announces the commit elsewhere (NOTIFY) returns the promise of that: the
   * segment is marked stored only after it resolved, so a later append of the aggregate, which
   * sees it stored and is therefore not held for it, is announced after it (P2). If it rejects
   * the segment stays `reserved`: later appends are held until these are published, and the
   * repair indexes them once more.
   */
  onCommit(listener: CommitListener): () => void
  /** Settles segments that never confirmed: re-indexes written ones, closes missing ones. */
  repairStaleReservations(olderThanMs?: number): Promise<RepairResult>
  /**
   * Checks the bucket against the registry now (W2), changing nothing; throws
   * REGISTRY_BEHIND_BUCKET on a mismatch.
   */
  checkAgainstBucket(): Promise<void>
  /** Why appends are refused (the registry is behind the bucket), or null. */
  appendsRefused(): CairnError | null
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * The event store on an object store plus the sequence allocator and stream index (DESIGN.md
 * sections 3 to 5): group commit (group-commit.ts), reads through the stream index (reading.ts),
 * the repair of unconfirmed segments (repair.ts) and the check of the bucket against the registry
 * (reconcile.ts). Layout: keys.ts and segment.ts.
 */
export const createEventStore = (options: EventStoreOptions): EventStore => {
  const store = options.objectStore
  const allocator = options.allocator
  const prefix = options.handlerPrefix ?? 'write_side'
  const log = (options.logger ?? silentLogger).child({ component: 'event-store' })
  const maxSegmentDelayMs = options.maxSegmentDelayMs ?? 10_000
  const repairAfterMs = options.repairAfterMs ?? 60_000
  const repairIntervalMs = options.repairIntervalMs ?? 30_000

  const listeners = new Set<CommitListener>()
  const announce = (notice: CommitNotice): Promise<boolean> => {
    const pending: Promise<unknown>[] = []
    for (const listener of listeners) {
      try {
        const r = listener(notice)
        if (r instanceof Promise) pending.push(r)
      } catch (error) {
        log.error({ err: String(error) }, 'commit listener failed')
      }
    }
    if (pending.length === 0) return Promise.resolve(true)
    return Promise.allSettled(pending).then((all) => all.every((r) => r.status === 'fulfilled'))
  }

  const guard: BucketGuard = createBucketGuard({
    store,
    allocator,
    log,
    boundMs: maxSegmentDelayMs,
  })
  let counter = 0
  const ctx: WriteContext = {
    store,
    allocator,
    log,
    clock: options.clock ?? systemClock,
    writer: randomBytes(5).toString('hex'),
    nextCounter: () => counter++,
    handlerOf: (aggregateType) => handlerOf(prefix, aggregateType),
    maxSegmentDelayMs,
    announce,
    guard,
  }
  const groups = createGroupCommit(ctx, {
    maxGroupSize: options.maxGroupSize ?? 256,
    maxGroupsInFlight: options.maxGroupsInFlight ?? 4,
    overlapMinAppends: options.groupOverlapMinAppends ?? 32,
    overlapAfterMs: options.groupOverlapAfterMs ?? 10,
    maxEventBytes: options.maxEventBytes ?? 1_048_576,
    mismatchMode: options.idempotencyMismatchMode ?? 'error',
  })
  const reader = createReader({ store, allocator, log })
  const tracer = options.tracer ?? noopTracer

  /**
   * The append as its caller waits for it: gathered into a group, reserved, written in the
   * group's segment. One span per append (not per group), so that it joins its command's trace.
   */
  const tracedAppend = async (input: AppendInput): Promise<AppendResult> => {
    const first = input.envelopes[0]
    const span = tracer.startSpan('cairn.append', {
      parent:
        typeof first?.metadata.traceparent === 'string' ? first.metadata.traceparent : undefined,
      attributes: {
        'cairn.aggregate.type': first?.aggregate_type,
        'cairn.aggregate.id': first?.aggregate_id,
        'cairn.event.type': first?.event_type,
        'cairn.event.id': first?.event_id,
        'cairn.events': input.envelopes.length,
        'cairn.expected_seq': input.expectedSeq ?? undefined,
      },
    })
    try {
      const result = await groups.append(input)
      span.setAttributes({
        'cairn.outcome': result.outcome,
        'cairn.sequence_number': result.envelopes[0]?.sequence_number,
      })
      return result
    } catch (error) {
      span.fail(error)
      throw error
    } finally {
      span.end()
    }
  }

  const repairStaleReservations = (olderThanMs: number = repairAfterMs): Promise<RepairResult> =>
    repairStaleSegments(ctx, olderThanMs)

  const repairTimer =
    repairIntervalMs > 0
      ? setInterval(() => {
          repairStaleReservations()
            .then(() => guard.check())
            .catch((error: unknown) =>
              log.warn({ err: String(error) }, 'repair or bucket check failed; will retry'),
            )
        }, repairIntervalMs)
      : undefined
  repairTimer?.unref()

  const close = async (): Promise<void> => {
    if (repairTimer !== undefined) clearInterval(repairTimer)
    await groups.close()
  }

  return {
    // Tracing off: the group commit's own function, not a wrapper.
    append: tracer.enabled ? tracedAppend : groups.append,
    readStream: (aggregateType, aggregateId, readOptions = {}) =>
      reader.readStream(
        ctx.handlerOf(aggregateType),
        aggregateId,
        readOptions.fromSeq ?? 1,
        readOptions.toSeq ?? Number.MAX_SAFE_INTEGER,
      ),
    currentSequence: (aggregateType, aggregateId) =>
      allocator.current(ctx.handlerOf(aggregateType), aggregateId),
    getByEventId: reader.getByEventId,
    readByDate: reader.readByDate,
    onCommit(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    repairStaleReservations,
    checkAgainstBucket: () => guard.check(false),
    appendsRefused: guard.refusal,
    close,
    [Symbol.asyncDispose]: close,
  }
}
