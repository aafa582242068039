import { CairnError, ErrorCode } from '../core/errors.ts'
import type { Clock } from '../core/ports/clock.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import type { SequenceAllocator } from '../sequencing/allocator.ts'
import type { BucketGuard } from './reconcile.ts'
import type { SegmentEntry } from './segment.ts'

export type CommitNotice = {
  readonly segmentKey: string
  readonly entries: readonly SegmentEntry[]
}

/** What the parts of one event store share (event-store.ts builds it). */
export type WriteContext = {
  readonly store: ObjectStore
  readonly allocator: SequenceAllocator
  readonly log: Logger
  /** Stamps informational times only (a segment's `written_at`, a gap marker's `marked_at`). */
  readonly clock: Clock
  /** This process's writer id in segment keys. */
  readonly writer: string
  /** The next segment counter of this writer (keys are unique per writer and counter). */
  nextCounter(): number
  handlerOf(aggregateType: string): string
  /** The writers' bound (ms): a segment durable later than this after its reservation is not acknowledged. */
  readonly maxSegmentDelayMs: number
  /** Tells the commit listeners; resolves true when every announcement they made succeeded. */
  announce(notice: CommitNotice): Promise<boolean>
  readonly guard: BucketGuard
}

export const appendFailed = (message: string, cause?: unknown): CairnError =>
  new CairnError(ErrorCode.APPEND_FAILED, message, { retryable: true, cause })

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
