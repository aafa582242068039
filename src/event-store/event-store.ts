import { randomBytes } from 'node:crypto'
import { canonicalJson, idempotencyHash, validateEnvelope } from '../core/envelope.ts'
import type { EventEnvelope, StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import { systemClock } from '../core/ports/clock.ts'
import type { Clock } from '../core/ports/clock.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import { listAll } from '../core/ports/object-store.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import type { ReserveRequest, ReserveResult, SequenceAllocator } from '../sequencing/allocator.ts'
import { isGapMarker } from './gap.ts'
import type { GapMarker } from './gap.ts'
import {
  BY_DATE_PREFIX,
  eventKey,
  manifestKey,
  manifestKeyFloor,
  padSeq,
  parseManifestKey,
  seqOfEventKey,
  streamPrefix,
} from './keys.ts'
import { manifestEntry, parseManifest } from './manifest.ts'
import type { ManifestEntry } from './manifest.ts'

export type IdempotencyMismatchMode = 'error' | 'warn'

export type EventStoreOptions = {
  readonly objectStore: ObjectStore
  readonly allocator: SequenceAllocator
  /** `EVENT_STORE_SEQUENCE_HANDLER_PREFIX` (default `write_side`). */
  readonly handlerPrefix?: string
  /** `EVENT_STORE_IDEMPOTENCY_MISMATCH_MODE` (default `error`). */
  readonly idempotencyMismatchMode?: IdempotencyMismatchMode
  /** Stamps informational times (a manifest's `written_at`, a gap marker's `marked_at`) only. */
  readonly clock?: Clock
  readonly logger?: Logger
  /** Appends reserved together in one SQL round trip (default 256). */
  readonly maxGroupSize?: number
  /** Group commits in flight at once (default 4). */
  readonly maxGroupsInFlight?: number
  /**
   * While a group is in flight, the next one starts only once this many appends wait (default
   * 16) or the latest group started this long ago (`groupOverlapAfterMs`, default 10 ms): under
   * load the appends gather into fewer, larger groups (fewer PUTs per event: one manifest per
   * group), and a slow group holds the others back for 10 ms at most.
   */
  readonly groupOverlapMinAppends?: number
  readonly groupOverlapAfterMs?: number
  /** Object PUTs in flight per group (default 64). */
  readonly putConcurrency?: number
  /**
   * The writers' bound: a manifest durable later than this after the time in its key is not
   * acknowledged (the append fails and its events are re-indexed by the repair). Measured on the
   * monotonic clock from before the reservation was sent, so no wall clock decides it. The
   * publisher relies on it (docs/publisher.md). Default 10,000 ms.
   */
  readonly maxManifestDelayMs?: number
  /** Largest stored envelope, in bytes of canonical JSON (default 1 MiB). */
  readonly maxEventBytes?: number
  /** Reservations older than this with no confirmed write are repaired (default 60,000 ms). */
  readonly repairAfterMs?: number
  /** How often the repair runs; 0 turns it off (default 30,000 ms). */
  readonly repairIntervalMs?: number
}

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

export type ReadStreamOptions = {
  readonly fromSeq?: number
  readonly toSeq?: number
}

export type CommitNotice = {
  readonly manifestKey: string
  readonly entries: readonly ManifestEntry[]
}

/** A promise returned is awaited before the events are marked stored; any other value is ignored. */
export type CommitListener = (notice: CommitNotice) => unknown

export type RepairResult = {
  readonly indexed: number
  readonly gaps: number
  readonly unresolved: number
}

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
   * listener that announces the commit elsewhere (NOTIFY) returns the promise of that: the events
   * are marked stored only after it resolved, so a later append of the aggregate, which sees them
   * stored and is therefore not held for them, is announced after them (P2). If it rejects they
   * stay `reserved`: later appends are held until these are published, and the repair indexes them
   * once more.
   */
  onCommit(listener: CommitListener): () => void
  /** Settles reservations that never confirmed: re-indexes stored bodies, marks gaps. */
  repairStaleReservations(olderThanMs?: number): Promise<RepairResult>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
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
}

/** One envelope to write at one key, and what became of it. */
type Write = {
  readonly pending: Pending
  readonly envelope: StoredEnvelope
  readonly key: string
  readonly body: string
  /** From an earlier reservation (a retry, or a concurrent duplicate). */
  readonly duplicate: boolean
  readonly prevPending: boolean
  result?: WriteResult
}

type WriteResult =
  | { readonly kind: 'ours'; readonly envelope: StoredEnvelope; readonly body: string }
  | { readonly kind: 'gap' }
  | { readonly kind: 'foreign' }
  | { readonly kind: 'unknown'; readonly error: unknown }

const decoder = new TextDecoder()
const encoder = new TextEncoder()

/**
 * `sequence_number` sorts last among the envelope's fields, so the stored body is the template
 * (serialised once, with `null`) with its tail replaced: no second serialisation per event.
 */
const SEQ_TAIL = '"sequence_number":null}'
const withSequence = (template: string, envelope: StoredEnvelope): string =>
  template.endsWith(SEQ_TAIL)
    ? `${template.slice(0, -SEQ_TAIL.length)}"sequence_number":${envelope.sequence_number}}`
    : canonicalJson(envelope)

const appendFailed = (message: string, cause?: unknown): CairnError =>
  new CairnError(ErrorCode.APPEND_FAILED, message, { retryable: true, cause })

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Runs `fn` over `items` with at most `limit` in flight. */
const forEachLimit = async <T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> => {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T
      await fn(item)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

/**
 * The event store on an object store plus the sequence allocator (DESIGN.md sections 3 and 5).
 *
 * An append is acknowledged only once its bodies and a by-date manifest listing them are durable
 * (W1). Bodies are create-only at `events/{type}/{id}/{seq}.json` (W2); ambiguous outcomes are
 * settled by reading back. Event ids are recorded with their sequence forever (W3). A slot whose
 * body cannot be written is closed with a gap marker (W4). `expectedSeq` is checked in the same
 * statement that reserves (W5). Concurrent appends share one SQL round trip and one manifest.
 */
export const createEventStore = (options: EventStoreOptions): EventStore => {
  const store = options.objectStore
  const allocator = options.allocator
  const prefix = options.handlerPrefix ?? 'write_side'
  const mismatchMode = options.idempotencyMismatchMode ?? 'error'
  const clock = options.clock ?? systemClock
  const log = (options.logger ?? silentLogger).child({ component: 'event-store' })
  const maxGroupSize = options.maxGroupSize ?? 256
  const maxGroupsInFlight = options.maxGroupsInFlight ?? 4
  const overlapMinAppends = options.groupOverlapMinAppends ?? 16
  const overlapAfterMs = options.groupOverlapAfterMs ?? 10
  const putConcurrency = options.putConcurrency ?? 64
  const maxEventBytes = options.maxEventBytes ?? 1_048_576
  const maxManifestDelayMs = options.maxManifestDelayMs ?? 10_000
  const repairAfterMs = options.repairAfterMs ?? 60_000
  const repairIntervalMs = options.repairIntervalMs ?? 30_000
  const writer = randomBytes(5).toString('hex')

  const handlerOf = (aggregateType: string): string => `${prefix}:${aggregateType}`
  const typeOfHandler = (handler: string): string => handler.slice(prefix.length + 1)

  let manifestCounter = 0
  /**
   * A manifest's key carries the time of its group's reservation (database clock): an aggregate's
   * later reservations get later times, so manifests sort in per-aggregate sequence order whatever
   * order their PUTs finish in. The writer id and counter make the key unique.
   */
  const nextManifestKey = (atUs: number): string => manifestKey(atUs, writer, manifestCounter++)

  const listeners = new Set<CommitListener>()

  /** Tells the listeners; resolves true when every announcement they made succeeded. */
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
  const queue: Pending[] = []
  let inFlight = 0
  let closed = false
  // Ids confirmed stored, waiting to ride along with the next reservation round trip.
  let storedIds: string[] = []
  let storedFlush: ReturnType<typeof setTimeout> | undefined

  const noteStored = (ids: readonly string[]): void => {
    storedIds.push(...ids)
    // When no group comes along soon, confirm them on their own.
    storedFlush ??= setTimeout(() => {
      storedFlush = undefined
      const ids = storedIds
      storedIds = []
      allocator.markStored(ids).catch((error: unknown) => {
        storedIds.push(...ids)
        log.warn({ err: String(error) }, 'could not confirm stored events; will retry')
      })
    }, 200)
    storedFlush.unref()
  }

  // ---------------------------------------------------------------------------------------------
  // Object writes with settlement of ambiguous outcomes

  const readObject = async (key: string): Promise<{ value: unknown; body: string } | null> => {
    const got = await store.get(key)
    if (got === null) return null
    const body = decoder.decode(got.body)
    return { value: JSON.parse(body) as unknown, body }
  }

  /** What a slot holds, from our point of view. */
  const judge = (eventId: string, found: { value: unknown; body: string }): WriteResult => {
    if (isGapMarker(found.value)) return { kind: 'gap' }
    const v = found.value as Partial<StoredEnvelope>
    if (v.event_id === eventId)
      return { kind: 'ours', envelope: v as StoredEnvelope, body: found.body }
    return { kind: 'foreign' }
  }

  /**
   * Create-only PUT of one body. A transport failure may or may not have stored it: retry, and
   * when the key exists read it back: our event id means success (W2). When retries run out,
   * close the slot with a gap marker, itself create-only, so that a late landing of our body and
   * the marker cannot both happen.
   */
  const writeBody = async (w: Write): Promise<WriteResult> => {
    let lastError: unknown
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const outcome = await store.putIfAbsent(w.key, encoder.encode(w.body))
        if (outcome === 'created') return { kind: 'ours', envelope: w.envelope, body: w.body }
        const found = await readObject(w.key)
        if (found !== null) return judge(w.envelope.event_id, found)
      } catch (error) {
        lastError = error
        if (!isCairnError(error) || !error.retryable) break
        await sleep(25 * 2 ** attempt)
      }
    }
    return closeWithGap(
      w.key,
      w.envelope,
      `body could not be written: ${String(lastError)}`,
      lastError,
    )
  }

  const closeWithGap = async (
    key: string,
    envelope: Pick<
      StoredEnvelope,
      'event_id' | 'aggregate_type' | 'aggregate_id' | 'sequence_number'
    >,
    reason: string,
    cause: unknown,
  ): Promise<WriteResult> => {
    const marker: GapMarker = {
      gap: true,
      event_id: envelope.event_id,
      aggregate_type: envelope.aggregate_type,
      aggregate_id: envelope.aggregate_id,
      sequence_number: envelope.sequence_number,
      reason,
      marked_at: new Date(clock.now()).toISOString(),
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const outcome = await store.putIfAbsent(key, encoder.encode(canonicalJson(marker)))
        if (outcome === 'created') {
          await allocator.markGap([envelope.event_id])
          log.warn({ key, event_id: envelope.event_id }, 'sequence slot closed with a gap marker')
          return { kind: 'gap' }
        }
        const found = await readObject(key)
        if (found !== null) {
          const judged = judge(envelope.event_id, found)
          if (judged.kind === 'gap') await allocator.markGap([envelope.event_id])
          return judged
        }
      } catch (error) {
        cause = error
        await sleep(25 * 2 ** attempt)
      }
    }
    // The slot stays reserved; the repair settles it later.
    return { kind: 'unknown', error: cause }
  }

  /**
   * Writes a manifest listing `entries`, keyed by `atUs` (the database's time of the reservation),
   * and fails unless it was durable within the writers' bound of that time. The bound is measured
   * without a wall clock: the database took `atUs` after this writer sent its request at
   * `sentAtMs` (monotonic), so the time elapsed since then bounds the manifest's delay from above,
   * whatever this host's clock says (docs/publisher.md).
   */
  const writeManifest = async (
    entries: readonly ManifestEntry[],
    atUs: number,
    sentAtMs: number,
  ): Promise<string> => {
    const key = nextManifestKey(atUs)
    const body = encoder.encode(
      JSON.stringify({
        version: 1,
        writer,
        written_at: new Date(clock.now()).toISOString(),
        entries,
      }),
    )
    let lastError: unknown
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        // The key is this writer's alone: `exists` on a retry means the first attempt landed.
        await store.putIfAbsent(key, body)
        lastError = undefined
        break
      } catch (error) {
        lastError = error
        await sleep(25 * 2 ** attempt)
      }
    }
    if (lastError !== undefined)
      throw appendFailed(`manifest ${key} could not be written`, lastError)
    const delay = Math.round(performance.now() - sentAtMs)
    if (delay > maxManifestDelayMs) {
      // The publisher may already have settled past this key; the repair re-indexes these events.
      throw appendFailed(
        `manifest ${key} took ${delay} ms, beyond the ${maxManifestDelayMs} ms bound`,
      )
    }
    return key
  }

  // ---------------------------------------------------------------------------------------------
  // Group commit

  /** When the latest group started (monotonic ms). */
  let lastStart = 0
  let repump: ReturnType<typeof setTimeout> | undefined
  const pump = (): void => {
    while (!closed && queue.length > 0 && inFlight < maxGroupsInFlight) {
      const age = performance.now() - lastStart
      if (inFlight > 0 && queue.length < overlapMinAppends && age < overlapAfterMs) {
        // Gather more behind the groups in flight; look again when the latest is old enough.
        repump ??= setTimeout(
          () => {
            repump = undefined
            pump()
          },
          Math.max(1, Math.ceil(overlapAfterMs - age)),
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
      const group = queue.splice(0, maxGroupSize).map((p): Pending => {
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

  const commitGroupUnsafe = async (group: Pending[]): Promise<void> => {
    const stored = storedIds
    storedIds = []
    const requests: ReserveRequest[] = group.map((p) => ({
      handler: p.handler,
      aggregateId: p.aggregateId,
      expectedSeq: p.input.expectedSeq ?? null,
      eventIds: p.input.envelopes.map((e) => e.event_id),
      hashes: p.hashes,
    }))
    let atUs: number
    let results: readonly ReserveResult[]
    // Before the request is sent: the database stamps the reservation after this instant.
    const sentAtMs = performance.now()
    try {
      ;({ atUs, results } = await allocator.reserve(requests, stored))
    } catch (error) {
      storedIds.push(...stored)
      throw error
    }

    const writes: Write[] = []
    const storedDuplicates: { pending: Pending; rows: { eventId: string; seq: number }[] }[] = []
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
            if (mismatchMode === 'error') {
              return p.reject(
                new CairnError(ErrorCode.IDEMPOTENCY_MISMATCH, message, {
                  details: { event_ids: differing.map((e) => e.event_id) },
                }),
              )
            }
            log.warn({ event_ids: differing.map((e) => e.event_id) }, message)
          }
          if (r.rows.every((row) => row.state === 'stored')) {
            storedDuplicates.push({
              pending: p,
              rows: r.rows.map((row) => ({ eventId: row.eventId, seq: row.seq })),
            })
            return
          }
          // An earlier attempt reserved these slots but never confirmed: finish its work.
          p.input.envelopes.forEach((e, k) => {
            const row = byId.get(e.event_id)
            if (row !== undefined) writes.push(makeWrite(p, k, row.seq, true, r.prevPending))
          })
          return
        }
        case 'reserved':
          p.input.envelopes.forEach((_, k) =>
            writes.push(makeWrite(p, k, r.firstSeq + k, false, k === 0 && r.prevPending)),
          )
          return
      }
    })

    await Promise.all([
      forEachLimit(writes, putConcurrency, async (w) => {
        w.result = await writeBody(w)
      }),
      forEachLimit(storedDuplicates, putConcurrency, async ({ pending, rows }) => {
        try {
          const envelopes = await Promise.all(
            rows.map(async (row) => {
              const found = await readObject(
                eventKey(pending.aggregateType, pending.aggregateId, row.seq),
              )
              const judged = found === null ? null : judge(row.eventId, found)
              if (judged?.kind !== 'ours')
                throw appendFailed(`stored event ${row.eventId} is not readable at its key`)
              return judged.envelope
            }),
          )
          pending.resolve({ outcome: 'duplicate', envelopes })
        } catch (error) {
          pending.reject(error)
        }
      }),
    ])

    // Settle each append that wrote bodies: all ours → index; a foreign body → reseed and retry.
    const byPending = new Map<Pending, Write[]>()
    for (const w of writes) byPending.set(w.pending, [...(byPending.get(w.pending) ?? []), w])
    const toIndex: { pending: Pending; writes: Write[] }[] = []
    for (const [p, ws] of byPending) {
      const results = ws.map((w) => w.result)
      if (results.every((r) => r?.kind === 'ours')) {
        toIndex.push({ pending: p, writes: ws })
      } else if (results.some((r) => r?.kind === 'foreign')) {
        await reseedAndRetry(p, ws)
      } else {
        const unknown = results.find((r) => r?.kind === 'unknown')
        p.reject(
          appendFailed(
            `append to ${p.aggregateType}/${p.aggregateId} failed; nothing was acknowledged`,
            unknown?.kind === 'unknown' ? unknown.error : undefined,
          ),
        )
      }
    }
    if (toIndex.length === 0) return

    const entries = new Map<string, ManifestEntry>()
    for (const { writes: ws } of toIndex) {
      for (const w of ws) {
        const r = w.result as Extract<WriteResult, { kind: 'ours' }>
        entries.set(r.envelope.event_id, manifestEntry(w.key, r.envelope, r.body, w.prevPending))
      }
    }
    let key: string
    try {
      key = await writeManifest([...entries.values()], atUs, sentAtMs)
    } catch (error) {
      for (const { pending } of toIndex) pending.reject(error)
      return
    }
    for (const { pending, writes: ws } of toIndex) {
      pending.resolve({
        outcome: ws.every((w) => w.duplicate) ? 'duplicate' : 'appended',
        envelopes: ws.map((w) => (w.result as Extract<WriteResult, { kind: 'ours' }>).envelope),
      })
    }
    const ids = [...entries.keys()]
    const announced = announce({ manifestKey: key, entries: [...entries.values()] })
    // Marked stored once announced (see onCommit): at once when every listener is in-process.
    void announced.then((ok) => {
      if (ok) noteStored(ids)
      else log.warn({ event_ids: ids.length }, 'commit not announced; events left reserved')
    })
  }

  const makeWrite = (
    pending: Pending,
    index: number,
    seq: number,
    duplicate: boolean,
    prevPending: boolean,
  ): Write => {
    const envelope: StoredEnvelope = {
      ...(pending.input.envelopes[index] as EventEnvelope),
      sequence_number: seq,
    }
    return {
      pending,
      envelope,
      key: eventKey(pending.aggregateType, pending.aggregateId, seq),
      body: withSequence(pending.templates[index] as string, envelope),
      duplicate,
      prevPending,
    }
  }

  /**
   * The bucket holds events the allocator did not know (a registry restored from an old backup, or
   * lost): raise the allocator to the bucket's last sequence and append again, so the expected
   * sequence is checked against the truth. Nothing was overwritten: every write is create-only.
   */
  const reseedAndRetry = async (p: Pending, ws: readonly Write[]): Promise<void> => {
    try {
      let max = 0
      for await (const key of listAll(store, streamPrefix(p.aggregateType, p.aggregateId))) {
        max = Math.max(max, seqOfEventKey(key) ?? 0)
      }
      const ours = ws.filter((w) => w.result?.kind !== 'foreign').map((w) => w.envelope.event_id)
      if (ours.length > 0) {
        // A body landed in a slot past a foreign one: the stream had a hole the registry lost.
        throw appendFailed(
          `bucket and allocator disagree on ${p.aggregateType}/${p.aggregateId}; rebuild the registry from the bucket`,
        )
      }
      log.warn(
        { aggregate_type: p.aggregateType, aggregate_id: p.aggregateId, bucket_max: max },
        'allocator behind the bucket; reseeded',
      )
      await allocator.reseed(
        p.handler,
        p.aggregateId,
        max,
        ws.map((w) => w.envelope.event_id),
      )
      if (++p.attempt > 3)
        throw appendFailed(
          `could not append to ${p.aggregateType}/${p.aggregateId} after reseeding`,
        )
      queue.push(p)
      pump()
    } catch (error) {
      p.reject(error)
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  const parseStored = (body: string): StoredEnvelope | null => {
    const value = JSON.parse(body) as unknown
    return isGapMarker(value) ? null : (value as StoredEnvelope)
  }

  const readStream = async (
    aggregateType: string,
    aggregateId: string,
    readOptions: ReadStreamOptions = {},
  ): Promise<StoredEnvelope[]> => {
    const pfx = streamPrefix(aggregateType, aggregateId)
    const from = readOptions.fromSeq ?? 1
    const to = readOptions.toSeq ?? Number.MAX_SAFE_INTEGER
    const keys: string[] = []
    const startAfter = from > 1 ? `${pfx}${padSeq(from - 1)}.json` : undefined
    for await (const key of listAll(store, pfx, startAfter)) {
      const seq = seqOfEventKey(key)
      if (seq === null) continue
      if (seq > to) break
      keys.push(key)
    }
    const out: (StoredEnvelope | null)[] = new Array<StoredEnvelope | null>(keys.length).fill(null)
    await forEachLimit(
      keys.map((key, i) => ({ key, i })),
      32,
      async ({ key, i }) => {
        const got = await store.get(key)
        if (got !== null) out[i] = parseStored(decoder.decode(got.body))
      },
    )
    return out.filter((e): e is StoredEnvelope => e !== null)
  }

  async function* readByDate(fromMs: number, toMs: number): AsyncGenerator<StoredEnvelope> {
    const seen = new Set<string>()
    for await (const key of listAll(store, BY_DATE_PREFIX, manifestKeyFloor(fromMs * 1000))) {
      const parts = parseManifestKey(key)
      if (parts === null) continue
      if (parts.us > toMs * 1000 + 999) return
      if (parts.us < fromMs * 1000) continue
      const got = await store.get(key)
      if (got === null) continue
      let manifest
      try {
        manifest = parseManifest(got.body)
      } catch (error) {
        log.error({ key, err: String(error) }, 'skipping a malformed manifest')
        continue
      }
      for (const entry of manifest.entries) {
        if (seen.has(entry.event_id)) continue
        seen.add(entry.event_id)
        yield JSON.parse(entry.body) as StoredEnvelope
      }
    }
  }

  const getByEventId = async (eventId: string): Promise<StoredEnvelope | null> => {
    const row = await allocator.lookup(eventId)
    if (row === null || row.state === 'gap') return null
    const found = await readObject(eventKey(typeOfHandler(row.handler), row.aggregateId, row.seq))
    if (found === null) return null
    const judged = judge(eventId, found)
    return judged.kind === 'ours' ? judged.envelope : null
  }

  // ---------------------------------------------------------------------------------------------
  // Repair of reservations that never confirmed (a crashed or stalled writer)

  const repairStaleReservations = async (
    olderThanMs: number = repairAfterMs,
  ): Promise<RepairResult> => {
    const stale = await allocator.staleReservations(olderThanMs, 500)
    let gaps = 0
    let unresolved = 0
    const entries: ManifestEntry[] = []
    for (const s of stale) {
      const aggregateType = typeOfHandler(s.handler)
      const key = eventKey(aggregateType, s.aggregateId, s.seq)
      const found = await readObject(key)
      let judged: WriteResult
      if (found === null) {
        judged = await closeWithGap(
          key,
          {
            event_id: s.eventId,
            aggregate_type: aggregateType,
            aggregate_id: s.aggregateId,
            sequence_number: s.seq,
          },
          'reservation never confirmed (writer crashed or stalled)',
          undefined,
        )
      } else {
        judged = judge(s.eventId, found)
        if (judged.kind === 'gap') await allocator.markGap([s.eventId])
      }
      // Its predecessor may be long published or still pending: let the publisher hold it until settled.
      if (judged.kind === 'ours')
        entries.push(manifestEntry(key, judged.envelope, judged.body, true))
      else if (judged.kind === 'gap') gaps++
      else {
        unresolved++
        log.error(
          { key, event_id: s.eventId, kind: judged.kind },
          'stale reservation could not be settled',
        )
      }
    }
    if (entries.length > 0) {
      // Stamped by the database's clock, like every reservation: this host's clock may be off,
      // and a key older than the publisher's watermark would never be published.
      const sentAtMs = performance.now()
      const key = await writeManifest(entries, await allocator.now(), sentAtMs)
      // Marked stored even if the announcement fails: the repair must not index them over and
      // over (a listing finds this manifest; its events were late anyway).
      await announce({ manifestKey: key, entries })
      await allocator.markStored(entries.map((e) => e.event_id))
    }
    if (stale.length > 0)
      log.info({ indexed: entries.length, gaps, unresolved }, 'repaired stale reservations')
    return { indexed: entries.length, gaps, unresolved }
  }

  const repairTimer =
    repairIntervalMs > 0
      ? setInterval(() => {
          repairStaleReservations().catch((error: unknown) =>
            log.warn({ err: String(error) }, 'repair of stale reservations failed; will retry'),
          )
        }, repairIntervalMs)
      : undefined
  repairTimer?.unref()

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
        if (size > maxEventBytes) {
          errors.push(
            `envelopes[${i}]: ${size} bytes, more than the limit of ${maxEventBytes} bytes per event`,
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
        handler: handlerOf(first.aggregate_type),
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
    if (repairTimer !== undefined) clearInterval(repairTimer)
    if (repump !== undefined) clearTimeout(repump)
    for (const p of queue.splice(0))
      p.reject(new CairnError(ErrorCode.CLOSED, 'the event store is closed'))
    while (inFlight > 0) await sleep(5)
    if (storedFlush !== undefined) clearTimeout(storedFlush)
    storedFlush = undefined
    if (storedIds.length > 0) {
      await allocator.markStored(storedIds).catch(() => {})
      storedIds = []
    }
  }

  return {
    append,
    readStream,
    currentSequence: (aggregateType, aggregateId) =>
      allocator.current(handlerOf(aggregateType), aggregateId),
    getByEventId,
    readByDate,
    onCommit(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    repairStaleReservations,
    close,
    [Symbol.asyncDispose]: close,
  }
}
