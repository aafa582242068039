import { canonicalJson, idempotencyHash, validateEnvelope } from '../core/envelope.ts'
import type { EventEnvelope, StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import type { IndexedRow, ReserveRequest, ReserveResults } from '../sequencing/allocator.ts'
import type { WriteContext } from './context.ts'
import { appendFailed, sleep } from './context.ts'
import { envelopeAt, fetchSegment, forEachLimit, keyOf } from './reading.ts'
import { encodeSegment, segmentEntry } from './segment.ts'
import type { ParsedSegment, SegmentEntry } from './segment.ts'
import { closeWithGap, writeSegment } from './segment-writes.ts'

export type AppendInput = {
  /** One command's envelopes, all of one aggregate. Their sequence numbers are assigned here. */
  readonly envelopes: readonly EventEnvelope[]
  /** Optimistic concurrency: the aggregate's current sequence the caller expects (0 = new). */
  readonly expectedSeq?: number | null
}

export type AppendResult = {
  readonly outcome: 'appended' | 'duplicate'
  /** The envelopes as stored, with their sequence numbers (for a duplicate: the stored ones). */
  readonly envelopes: readonly StoredEnvelope[]
}

export type GroupCommitOptions = {
  readonly maxGroupSize: number
  readonly maxGroupsInFlight: number
  readonly overlapMinAppends: number
  readonly overlapAfterMs: number
  readonly maxEventBytes: number
  readonly mismatchMode: 'error' | 'warn'
}

type Pending = {
  readonly input: AppendInput
  readonly aggregateType: string
  readonly aggregateId: string
  readonly handler: string
  readonly hashes: readonly (string | null)[]
  /** Each envelope's canonical JSON with `sequence_number: null`, serialised once at validation. */
  readonly templates: readonly string[]
  readonly resolve: (r: AppendResult) => void
  readonly reject: (e: unknown) => void
  attempt: number
  /** In a group: the append as queued, and how the group learns it was queued again. */
  readonly origin?: Pending
  readonly onRequeue?: () => void
}

/** An append whose earlier attempt is still in flight is tried again this often. */
const REQUEUE_AFTER_MS = 20

/**
 * `sequence_number` sorts last among the envelope's fields, so the stored body is the template
 * (serialised once, with `null`) with its tail replaced: no second serialisation per event.
 */
const SEQ_TAIL = '"sequence_number":null}'
const withSequence = (template: string, envelope: StoredEnvelope): string =>
  template.endsWith(SEQ_TAIL)
    ? `${template.slice(0, -SEQ_TAIL.length)}"sequence_number":${envelope.sequence_number}}`
    : canonicalJson(envelope)

export type GroupCommit = {
  readonly append: (input: AppendInput) => Promise<AppendResult>
  readonly close: () => Promise<void>
}

/**
 * Group commit (DESIGN.md sections 3 and 5). Appends waiting together are reserved in one SQL
 * round trip (sequences, OCC, stream index and the group's segment row), then their envelopes go
 * into one segment, written with one create-only PUT; each append is acknowledged after it (W1).
 * A segment that cannot be written is closed with a gap marker at its key (W4). A retried event id
 * returns what is stored (W3). Before its first PUT, and whenever the registry may have been
 * replaced or restored under it, the writer checks the bucket against the registry (W2).
 */
export const createGroupCommit = (ctx: WriteContext, options: GroupCommitOptions): GroupCommit => {
  const { store, allocator, log, guard } = ctx
  const queue: Pending[] = []
  let inFlight = 0
  let closed = false
  // Segments confirmed written and announced, riding along with the next reservation.
  let storedSegments: number[] = []
  let storedFlush: ReturnType<typeof setTimeout> | undefined

  const noteStored = (id: number): void => {
    storedSegments.push(id)
    // When no group comes along soon, confirm them on their own.
    storedFlush ??= setTimeout(() => {
      storedFlush = undefined
      const ids = storedSegments
      storedSegments = []
      allocator.markStored(ids).catch((error: unknown) => {
        storedSegments.push(...ids)
        log.warn({ err: String(error) }, 'could not confirm stored segments; will retry')
      })
    }, 200)
    storedFlush.unref()
  }

  const requeue = (p: Pending, afterMs: number): void => {
    const origin = p.origin ?? p
    // Past the writers' bound the earlier attempt is closed instead: this is only a safety net.
    if (++origin.attempt > (2 * ctx.maxSegmentDelayMs) / REQUEUE_AFTER_MS + 100) {
      p.reject(appendFailed(`could not append to ${p.aggregateType}/${p.aggregateId}`))
      return
    }
    p.onRequeue?.()
    const again = (): void => {
      if (closed)
        return origin.reject(new CairnError(ErrorCode.CLOSED, 'the event store is closed'))
      queue.push(origin)
      pump()
    }
    if (afterMs <= 0) again()
    else setTimeout(again, afterMs).unref()
  }

  // ---------------------------------------------------------------------------------------------
  // Scheduling: groups form while others are in flight

  /** When the latest group started (monotonic ms). */
  let lastStart = 0
  let repump: ReturnType<typeof setTimeout> | undefined
  const pump = (): void => {
    while (!closed && queue.length > 0 && inFlight < options.maxGroupsInFlight) {
      const age = performance.now() - lastStart
      if (
        inFlight > 0 &&
        queue.length < options.overlapMinAppends &&
        age < options.overlapAfterMs
      ) {
        // Gather more behind the groups in flight; look again when the latest is old enough.
        repump ??= setTimeout(
          () => {
            repump = undefined
            pump()
          },
          Math.max(1, Math.ceil(options.overlapAfterMs - age)),
        )
        return
      }
      lastStart = performance.now()
      inFlight++
      // The group stops holding the next one back once each of its appends is answered (its
      // callers may append again before the group's bookkeeping ends), or when it ends.
      let holding = true
      const release = (): void => {
        if (!holding) return
        holding = false
        inFlight--
        pump()
      }
      let unanswered = 0
      const answered = (): void => {
        if (--unanswered === 0) release()
      }
      const group = queue.splice(0, options.maxGroupSize).map((p): Pending => {
        unanswered++
        let once = true
        const settle = (): void => {
          if (once) {
            once = false
            answered()
          }
        }
        return {
          ...p,
          resolve: (r) => {
            p.resolve(r)
            settle()
          },
          reject: (e) => {
            p.reject(e)
            settle()
          },
          origin: p,
          // Queued again: no longer this group's to answer.
          onRequeue: settle,
        }
      })
      void commitGroup(group).finally(release)
    }
  }

  const commitGroup = async (group: Pending[]): Promise<void> => {
    try {
      await commitGroupUnsafe(group)
    } catch (error) {
      // Anything unexpected fails the group's appends; none of them was acknowledged.
      for (const p of group)
        p.reject(isCairnError(error) ? error : appendFailed('append failed', error))
    }
  }

  // ---------------------------------------------------------------------------------------------
  // One group

  const commitGroupUnsafe = async (group: Pending[]): Promise<void> => {
    const floor = await guard.beforeReserve()
    const stored = storedSegments
    storedSegments = []
    const requests: ReserveRequest[] = group.map((p) => ({
      handler: p.handler,
      aggregateId: p.aggregateId,
      expectedSeq: p.input.expectedSeq ?? null,
      eventIds: p.input.envelopes.map((e) => e.event_id),
      hashes: p.hashes,
    }))
    const n = ctx.nextCounter()
    let reserved: ReserveResults
    // Before the request is sent: the database stamps the reservation after this instant.
    const sentAtMs = performance.now()
    try {
      reserved = await allocator.reserve(requests, stored, ctx.writer, n)
    } catch (error) {
      storedSegments.push(...stored)
      throw error
    }
    const { atUs, segmentId, results } = reserved

    const entries: SegmentEntry[] = []
    const ours: { pending: Pending; envelopes: StoredEnvelope[] }[] = []
    const duplicates: { pending: Pending; rows: readonly IndexedRow[] }[] = []
    group.forEach((p, i) => {
      const r = results[i]
      if (r === undefined) return p.reject(appendFailed('the allocator returned no outcome'))
      switch (r.outcome) {
        case 'conflict':
          return p.reject(
            new CairnError(
              ErrorCode.SEQUENCE_CONFLICT,
              `aggregate ${p.aggregateType}/${p.aggregateId} is at sequence ${r.actualSeq}, not ${String(p.input.expectedSeq)}`,
              {
                details: {
                  aggregate_type: p.aggregateType,
                  aggregate_id: p.aggregateId,
                  expected_seq: p.input.expectedSeq,
                  actual_seq: r.actualSeq,
                },
              },
            ),
          )
        case 'mismatch':
          return p.reject(
            new CairnError(ErrorCode.IDEMPOTENCY_MISMATCH, `idempotency mismatch: ${r.reason}`, {
              details: { event_ids: p.input.envelopes.map((e) => e.event_id) },
            }),
          )
        case 'duplicate': {
          const byId = new Map(r.rows.map((row) => [row.eventId, row]))
          const differing = p.input.envelopes.filter((e, k) => {
            const h = p.hashes[k]
            return h !== null && h !== undefined && byId.get(e.event_id)?.hash !== h
          })
          if (differing.length > 0) {
            const message = `event id ${differing[0]?.event_id} was appended before with a different payload`
            if (options.mismatchMode === 'error') {
              return p.reject(
                new CairnError(ErrorCode.IDEMPOTENCY_MISMATCH, message, {
                  details: { event_ids: differing.map((e) => e.event_id) },
                }),
              )
            }
            log.warn({ event_ids: differing.map((e) => e.event_id) }, message)
          }
          duplicates.push({ pending: p, rows: r.rows })
          return
        }
        case 'reserved': {
          const envelopes = p.input.envelopes.map((e, k): StoredEnvelope => ({
            ...e,
            sequence_number: r.firstSeq + k,
          }))
          envelopes.forEach((e, k) =>
            entries.push(
              segmentEntry(e, withSequence(p.templates[k] as string, e), k === 0 && r.prevPending),
            ),
          )
          ours.push({ pending: p, envelopes })
          return
        }
      }
    })

    // The registry may have been replaced or restored since the last check: check before writing.
    try {
      await guard.afterReserve(reserved, floor)
    } catch (error) {
      for (const { pending } of ours) pending.reject(error)
      for (const { pending } of duplicates) pending.reject(error)
      return
    }

    let written = false
    const key = keyOf({ atUs, writer: ctx.writer, n })
    if (segmentId !== null && entries.length > 0) {
      const failed = await writeOurs(key, segmentId, entries, sentAtMs)
      written = failed === null
      for (const { pending, envelopes } of ours) {
        if (failed === null) pending.resolve({ outcome: 'appended', envelopes })
        else pending.reject(failed)
      }
    }
    if (written && segmentId !== null) {
      const announced = ctx.announce({ segmentKey: key, entries })
      const id = segmentId
      // Marked stored once announced (see onCommit): at once when every listener is in-process.
      void announced.then((ok) => {
        if (ok) noteStored(id)
        else log.warn({ key }, 'commit not announced; segment left reserved')
      })
    }
    await settleDuplicates(duplicates, segmentId, written ? entries : null, atUs)
  }

  /** Writes this group's segment; null when it is durable within the bound, else the error. */
  const writeOurs = async (
    key: string,
    segmentId: number,
    entries: readonly SegmentEntry[],
    sentAtMs: number,
  ): Promise<CairnError | null> => {
    const bytes = encodeSegment(ctx.writer, new Date(ctx.clock.now()).toISOString(), entries)
    const outcome = await writeSegment(store, key, bytes, sentAtMs + ctx.maxSegmentDelayMs)
    if (outcome.kind === 'gap')
      return appendFailed(`segment ${key} was closed with a gap marker before it was written`)
    if (outcome.kind === 'unknown') {
      // Close the key, so that a late landing of the segment and the marker cannot both happen.
      const closed = await closeWithGap(
        ctx,
        key,
        `segment could not be written: ${String(outcome.error)}`,
      )
      if (closed?.kind !== 'segment') {
        if (closed?.kind === 'gap') await allocator.markGap([segmentId]).catch(() => {})
        return appendFailed(
          `segment ${key} could not be written; nothing was acknowledged`,
          outcome.error,
        )
      }
    }
    const delay = Math.round(performance.now() - sentAtMs)
    if (delay > ctx.maxSegmentDelayMs) {
      // The publisher may already have settled past this key; the repair re-indexes the segment.
      return appendFailed(
        `segment ${key} took ${delay} ms, beyond the ${ctx.maxSegmentDelayMs} ms bound`,
      )
    }
    return null
  }

  /**
   * Duplicates: an earlier append of these ids. Stored → read back from its segment. In this
   * very segment (the same id twice in one group) → what was just written. In a segment not yet
   * confirmed: read it — written means stored (its writer or the repair announces it); a gap
   * means that attempt was given up (append anew); not there yet: wait for it, and once the
   * writers' bound has passed since its reservation, close it with a gap marker.
   */
  const settleDuplicates = async (
    duplicates: readonly { pending: Pending; rows: readonly IndexedRow[] }[],
    segmentId: number | null,
    ownEntries: readonly SegmentEntry[] | null,
    atUs: number,
  ): Promise<void> => {
    const fetched = new Map<number, Promise<ParsedSegment | null>>()
    const read = (row: IndexedRow): Promise<ParsedSegment | null> => {
      let got = fetched.get(row.segment.id)
      if (got === undefined) {
        got = fetchSegment(store, keyOf(row.segment))
        fetched.set(row.segment.id, got)
      }
      return got
    }
    await forEachLimit(duplicates, 16, async ({ pending, rows }) => {
      try {
        const envelopes: StoredEnvelope[] = []
        for (const row of rows) {
          if (row.segment.id === segmentId) {
            const own = ownEntries?.find((e) => e.event_id === row.eventId)
            if (own === undefined) throw appendFailed('this append was not stored; retry')
            envelopes.push(JSON.parse(own.body) as StoredEnvelope)
            continue
          }
          let parsed = await read(row)
          if (parsed === null && row.state === 'reserved') {
            const ageUs = atUs - row.segment.atUs
            if (ageUs <= ctx.maxSegmentDelayMs * 1000) return requeue(pending, REQUEUE_AFTER_MS)
            parsed = await closeWithGap(
              ctx,
              keyOf(row.segment),
              'reservation never confirmed (writer crashed or stalled)',
            )
          }
          if (parsed?.kind === 'gap') {
            await allocator.markGap([row.segment.id])
            return requeue(pending, 0)
          }
          const envelope = envelopeAt(parsed, row)
          if (envelope === null)
            throw appendFailed(`stored event ${row.eventId} is not readable in its segment`)
          envelopes.push(envelope)
        }
        pending.resolve({ outcome: 'duplicate', envelopes })
      } catch (error) {
        pending.reject(error)
      }
    })
  }

  // ---------------------------------------------------------------------------------------------

  const append = (input: AppendInput): Promise<AppendResult> => {
    if (closed) return Promise.reject(new CairnError(ErrorCode.CLOSED, 'the event store is closed'))
    const first = input.envelopes[0]
    if (first === undefined) {
      return Promise.reject(
        new CairnError(ErrorCode.INVALID_ENVELOPE, 'an append needs at least one envelope'),
      )
    }
    const errors: string[] = []
    const ids = new Set<string>()
    const valid: EventEnvelope[] = []
    const templates: string[] = []
    input.envelopes.forEach((e, i) => {
      const v = validateEnvelope(e)
      if (!v.ok) errors.push(...v.errors.map((m) => `envelopes[${i}].${m}`))
      else {
        valid.push(v.envelope)
        let size = 0
        try {
          const template = canonicalJson({ ...v.envelope, sequence_number: null })
          templates.push(template)
          size = Buffer.byteLength(template)
        } catch (error) {
          errors.push(`envelopes[${i}].data: ${(error as Error).message}`)
        }
        if (size > options.maxEventBytes) {
          errors.push(
            `envelopes[${i}]: ${size} bytes, more than the limit of ${options.maxEventBytes} bytes per event`,
          )
        }
      }
      if (e.aggregate_type !== first.aggregate_type || e.aggregate_id !== first.aggregate_id) {
        errors.push(`envelopes[${i}]: all envelopes of one append must belong to one aggregate`)
      }
      if (ids.has(e.event_id)) errors.push(`envelopes[${i}].event_id: repeated within the append`)
      ids.add(e.event_id)
    })
    const expected = input.expectedSeq
    if (
      expected !== undefined &&
      expected !== null &&
      !(Number.isSafeInteger(expected) && expected >= 0)
    ) {
      errors.push('expectedSeq: must be an integer ≥ 0')
    }
    if (errors.length > 0) {
      return Promise.reject(
        new CairnError(ErrorCode.INVALID_ENVELOPE, `invalid append: ${errors.join('; ')}`, {
          details: { errors },
        }),
      )
    }
    const normalised: AppendInput = { ...input, envelopes: valid }
    return new Promise<AppendResult>((resolve, reject) => {
      queue.push({
        input: normalised,
        aggregateType: first.aggregate_type,
        aggregateId: first.aggregate_id,
        handler: ctx.handlerOf(first.aggregate_type),
        hashes: valid.map((e) => (e.metadata.kind === 'command' ? idempotencyHash(e) : null)),
        templates,
        resolve,
        reject,
        attempt: 0,
      })
      pump()
    })
  }

  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    if (repump !== undefined) clearTimeout(repump)
    for (const p of queue.splice(0))
      p.reject(new CairnError(ErrorCode.CLOSED, 'the event store is closed'))
    while (inFlight > 0) await sleep(5)
    if (storedFlush !== undefined) clearTimeout(storedFlush)
    storedFlush = undefined
    if (storedSegments.length > 0) {
      await allocator.markStored(storedSegments).catch(() => {})
      storedSegments = []
    }
  }

  return { append, close }
}
