import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode, isCairnError, isDependencyOutage } from '../core/errors.ts'
import { DEFAULT_MAX_BATCH } from '../core/ports/bus.ts'
import type { Bus, BusConsumer, BusProducer, DeliveredMessage } from '../core/ports/bus.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { Sql, SqlQueryable } from '../core/ports/sql.ts'
import { inSpan, noopTracer } from '../core/ports/tracer.ts'
import type { Span, Tracer } from '../core/ports/tracer.ts'
import type {
  ClaimOutcome,
  DoneInput,
  ProcessedEventRegistry,
} from '../registry/processed-events.ts'
import { backoffMs } from './backoff.ts'
import { decodeEnvelope } from './decode.ts'

export type HandlerContext = {
  /** The transaction a transactional handler writes in; it commits together with mark_done. */
  readonly tx: SqlQueryable | undefined
  /** 1 for the first try, then 2, 3 … */
  readonly attempt: number
  readonly signal: AbortSignal
  /**
   * The traceparent of this side effect's span, for what it causes (the events a command worker
   * appends) to join the event's trace; absent when tracing is off or in a batch.
   */
  readonly traceparent?: string
}

/**
 * A handler's side effect. Contract for handler authors (docs/consumers.md):
 * - transactional handlers write only through `ctx.tx`: their writes commit with mark_done, so the
 *   effect happens exactly once without being idempotent itself;
 * - other handlers have external effects: they may run again after a crash between the effect and
 *   mark_done, so they pass `envelope.event_id` as the idempotency key to the outside system;
 * - a thrown error is retried with backoff up to `maxAttempts`, then the event is dead-lettered.
 */
export type Handle = (envelope: StoredEnvelope, ctx: HandlerContext) => Promise<unknown>

/**
 * The batch form of a transactional handler: the side effects of several events at once (at most
 * one per aggregate, in sequence order), e.g. one statement for all their rows; one result per
 * event, in order. Used for batches; single events (retries) go through `Handle`.
 */
export type HandleBatch = (
  envelopes: readonly StoredEnvelope[],
  ctx: HandlerContext,
) => Promise<readonly unknown[]>

export type WorkerOptions = {
  readonly bus: Bus
  readonly registry: ProcessedEventRegistry
  /** Registry handler name, e.g. `projection:ontology_events`. */
  readonly handler: string
  readonly topics: readonly string[]
  readonly groupId: string
  readonly handle: Handle
  /**
   * Run `handle` and mark_done in one transaction on this SQL (a projection in the registry's
   * database). A batch is then claimed, applied and marked done in one transaction.
   */
  readonly transactional?: Sql
  /** The batch form of a transactional `handle` (ignored without `transactional`). */
  readonly handleBatch?: HandleBatch
  /** Attempts before dead-lettering (default 5). */
  readonly maxAttempts?: number
  /**
   * Messages taken per poll (default 500): a transactional batch holds one lock per aggregate
   * until it commits, and a worker has at most twice the batch size in flight, so 2 × batch size
   * × concurrent workers must fit PostgreSQL's lock table.
   */
  readonly batchSize?: number
  readonly backoffBaseMs?: number
  readonly backoffMaxMs?: number
  /** Dead-letter topic (default `<first topic>-dlq`). */
  readonly dlqTopic?: string
  /** `PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS` in ms (default 30,000). */
  readonly heartbeatMs?: number
  /**
   * Side effects of a non-transactional handler run at once on events of different aggregates
   * (default 8; 1 runs them one by one). Per aggregate the order is kept.
   */
  readonly concurrency?: number
  /** Longest wait of one poll (default 500 ms). */
  readonly pollWaitMs?: number
  /** Pause before asking again about an event whose predecessor is in flight (default 100 ms). */
  readonly inProgressWaitMs?: number
  /** Reads an event from the event store, for events an operator released for a retry. */
  readonly loadEnvelope?: (eventId: string) => Promise<StoredEnvelope | null>
  /**
   * Offsets of settled messages are committed at most this often (default 500 ms; 0 commits after
   * every batch), all at once, and when the worker stops. A crash redelivers what was settled
   * since: those events are duplicates to the registry, acknowledged without their effect.
   */
  readonly commitIntervalMs?: number
  /** How often it looks for events released for a retry (default 1,000 ms). */
  readonly redriveIntervalMs?: number
  readonly logger?: Logger
  /**
   * Spans per event: `process <topic>` (consumer, child of the message's `traceparent` header,
   * else of the envelope's), with `cairn.claim` and `cairn.handle` under it (default: none).
   */
  readonly tracer?: Tracer
}

export type WorkerMetrics = {
  processed: number
  duplicates: number
  stale: number
  retries: number
  deadLettered: number
  parked: number
  pauses: number
  redriven: number
  /** 1 while the worker is paused (a dependency is away), else 0. */
  paused: number
}

export type Worker = {
  /**
   * Consumes until the signal aborts or `close`; resolves after a clean stop. Outages pause it;
   * an error that waiting cannot fix at start (a misconfigured client) rejects.
   */
  run(signal?: AbortSignal): Promise<void>
  metrics(): Readonly<WorkerMetrics>
  /** Why the worker is paused (the error it waits out), or null while it works. */
  pausedBy(): string | null
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

class LostClaim extends Error {}

/**
 * Transactional batches a worker settles at once (each in its own transaction and connection,
 * holding its aggregates' locks until it commits).
 */
const TRANSACTIONAL_FLIGHTS = 4

/** Pauses in a row after which the worker replaces its bus consumer (about 10 s of failures). */
const RENEW_CONSUMER_AFTER = 6

/**
 * A batch split by partition into at most `parts` batches (partitions dealt out in turn), each in
 * the order of `batch`: messages of different partitions never share a key, so the parts can be
 * settled side by side.
 */
export const byPartition = (
  batch: readonly DeliveredMessage[],
  parts: number,
): DeliveredMessage[][] => {
  const groups: DeliveredMessage[][] = []
  const groupOf = new Map<string, DeliveredMessage[]>()
  const count = Math.max(1, parts)
  for (const message of batch) {
    const id = `${message.partition}:${message.topic}`
    let group = groupOf.get(id)
    if (group === undefined) {
      group = groups[groupOf.size % count]
      if (group === undefined) {
        group = []
        groups.push(group)
      }
      groupOf.set(id, group)
    }
    group.push(message)
  }
  return groups
}

/** The event whose handler threw in a batch (its try counts as its first attempt). */
type Thrower = { readonly eventId: string; readonly error: unknown }

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error)

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done(): void {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done)
  })

/**
 * The worker runtime: a consumer-group member that decodes, claims (one statement per batch),
 * heartbeats while the side effect runs, marks done, then commits the offsets. Retries with
 * backoff, dead-letters with the reason and records `failed` (parking the aggregate's later events
 * for this handler), pauses while the registry or the bus is unreachable and resumes, and stops at
 * the next safe point when its signal aborts. Offsets are committed only for messages that are
 * settled: processed, duplicate, stale, dead-lettered or parked (C6).
 */
export const createWorker = (options: WorkerOptions): Worker => {
  const { bus, registry, handler } = options
  const log = (options.logger ?? silentLogger).child({ component: 'worker', handler })
  const maxAttempts = options.maxAttempts ?? 5
  const heartbeatMs = options.heartbeatMs ?? 30_000
  const pollWaitMs = options.pollWaitMs ?? 500
  const inProgressWaitMs = options.inProgressWaitMs ?? 100
  const concurrency = Math.max(1, options.concurrency ?? 8)
  const dlqTopic = options.dlqTopic ?? `${options.topics[0] ?? handler}-dlq`
  const tracer = options.tracer ?? noopTracer
  const messagingSystem = bus.describe.startsWith('kafka') ? 'kafka' : 'in_process'
  /** The consumer span of each event being settled: the parent of its claim and side effect. */
  const consuming = new Map<string, Span>()
  const parentOf = (envelope: StoredEnvelope): string | undefined =>
    consuming.get(envelope.event_id)?.traceparent ??
    (typeof envelope.metadata.traceparent === 'string' ? envelope.metadata.traceparent : undefined)
  const handleAttributes = (envelope: StoredEnvelope, attempt: number) => ({
    'cairn.handler': handler,
    'cairn.event.id': envelope.event_id,
    'cairn.event.type': envelope.event_type,
    'cairn.aggregate.type': envelope.aggregate_type,
    'cairn.sequence_number': envelope.sequence_number,
    'cairn.attempt': attempt,
    'cairn.transactional': options.transactional !== undefined,
  })
  /** A handler's side effect, in a span whose traceparent the handler gets (tracing on). */
  const runHandle = (envelope: StoredEnvelope, ctx: HandlerContext): Promise<unknown> =>
    tracer.enabled
      ? inSpan(
          tracer,
          'cairn.handle',
          { parent: parentOf(envelope), attributes: handleAttributes(envelope, ctx.attempt) },
          (span) =>
            options.handle(
              envelope,
              span.traceparent === undefined ? ctx : { ...ctx, traceparent: span.traceparent },
            ),
        )
      : options.handle(envelope, ctx)
  /** Spans of one claim statement, one per event under its consumer span (tracing on). */
  const traceClaim = (
    ids: readonly string[],
  ): ((outcomes: ReadonlyMap<string, ClaimOutcome> | { readonly error: unknown }) => void) => {
    if (!tracer.enabled) return () => {}
    const spans = ids.map((id) => ({
      id,
      span: tracer.startSpan('cairn.claim', {
        parent: consuming.get(id)?.traceparent,
        attributes: { 'cairn.handler': handler, 'cairn.event.id': id, 'cairn.batch': ids.length },
      }),
    }))
    return (outcomes) => {
      for (const { id, span } of spans) {
        if ('error' in outcomes) span.fail(outcomes.error)
        else span.setAttributes({ 'cairn.claim.outcome': outcomes.get(id) })
        span.end()
      }
    }
  }
  const m: WorkerMetrics = {
    processed: 0,
    duplicates: 0,
    stale: 0,
    retries: 0,
    deadLettered: 0,
    parked: 0,
    pauses: 0,
    redriven: 0,
    paused: 0,
  }
  let pausedBy: string | null = null
  const stop = new AbortController()
  let producer: BusProducer | undefined
  /** Side effects of a non-transactional handler running now, over every batch in flight. */
  let running = 0
  const slotWaiters: (() => void)[] = []
  const takeSlot = async (): Promise<void> => {
    if (running < concurrency) {
      running++
      return
    }
    await new Promise<void>((resolve) => slotWaiters.push(resolve))
  }
  /** Hands the slot to a waiting lane, or frees it. */
  const freeSlot = (): void => {
    const next = slotWaiters.shift()
    if (next === undefined) running--
    else next()
  }

  const deadLetter = async (
    value: Uint8Array,
    key: string,
    headers: Readonly<Record<string, string>>,
    reason: string,
    source?: DeliveredMessage,
  ): Promise<void> => {
    producer ??= bus.producer({ clientId: `${handler}-dlq` })
    await producer.send([
      {
        topic: dlqTopic,
        key,
        value,
        headers: {
          ...headers,
          dlq_reason: reason.slice(0, 2000),
          dlq_handler: handler,
          dlq_failed_at: new Date().toISOString(),
          ...(source === undefined
            ? {}
            : {
                dlq_source_topic: source.topic,
                dlq_partition: String(source.partition),
                dlq_offset: String(source.offset),
              }),
        },
      },
    ])
    m.deadLettered++
  }

  type Claimed = {
    readonly envelope: StoredEnvelope
    readonly value: Uint8Array
    readonly source?: DeliveredMessage
  }

  /**
   * How `execute` completes a successful try of a non-transactional handler in a batch: the
   * result waits for the batch's one mark_done (`defer`), and what waits is marked done before any
   * backoff (`flush`) so that a retry does not hold the others' claims.
   */
  type Deferral = {
    defer(eventId: string, result: unknown): void
    pendingIds(): readonly string[]
    flush(): Promise<void>
  }

  const retryBackoff = (attempt: number): number =>
    backoffMs(attempt, {
      ...(options.backoffBaseMs === undefined ? {} : { baseMs: options.backoffBaseMs }),
      ...(options.backoffMaxMs === undefined ? {} : { maxMs: options.backoffMaxMs }),
    })

  const lostClaim = (eventId: string): void => {
    log.warn(
      { event_id: eventId },
      'claim was taken over meanwhile; leaving the event to its new owner',
    )
  }

  /**
   * Runs the side effect of a claimed event: retries, then dead-letter. Registry outages
   * propagate. `from` continues after tries already made (a batch's failed try counts as one).
   */
  const execute = async (
    { envelope, value, source }: Claimed,
    from: { readonly attempt: number; readonly lastError: string } = { attempt: 1, lastError: '' },
    deferral?: Deferral,
  ): Promise<void> => {
    let lastError = from.lastError
    for (let attempt = from.attempt; attempt <= maxAttempts; attempt++) {
      if (attempt > 1) {
        await deferral?.flush()
        m.retries++
        await sleep(retryBackoff(attempt - 1), stop.signal)
        if (stop.signal.aborted) {
          // Leave it claimable for whoever comes next; nothing is committed for it.
          await registry.markFailed(
            handler,
            envelope.event_id,
            `stopped while retrying: ${lastError}`,
            true,
          )
          throw new CairnError(ErrorCode.CLOSED, 'worker stopped')
        }
      }
      const beat = setInterval(() => {
        registry
          .heartbeat(handler, [envelope.event_id, ...(deferral?.pendingIds() ?? [])])
          .catch((error: unknown) => {
            log.warn({ err: String(error), event_id: envelope.event_id }, 'heartbeat failed')
          })
      }, heartbeatMs)
      try {
        const ctxBase = { attempt, signal: stop.signal }
        const tx = options.transactional
        if (tx !== undefined) {
          await tx.transaction(async (t) => {
            const result = await runHandle(envelope, { ...ctxBase, tx: t })
            const marked = await registry.markDone(handler, [envelope.event_id], t, result)
            if (!marked.has(envelope.event_id)) throw new LostClaim()
          })
        } else {
          const result = await runHandle(envelope, { ...ctxBase, tx: undefined })
          if (deferral !== undefined) {
            deferral.defer(envelope.event_id, result)
            return
          }
          const marked = await registry.markDone(handler, [envelope.event_id], undefined, result)
          if (!marked.has(envelope.event_id)) throw new LostClaim()
        }
        m.processed++
        return
      } catch (error) {
        if (error instanceof LostClaim) return lostClaim(envelope.event_id)
        // A dependency away (registry, bucket, database, bus) is not the event's fault: the
        // worker pauses and settles the batch again, without counting a try (C6).
        if (isDependencyOutage(error)) throw error
        lastError = messageOf(error)
        log.warn({ event_id: envelope.event_id, attempt, err: lastError }, 'handler failed')
      } finally {
        clearInterval(beat)
      }
    }
    await deferral?.flush()
    const reason = `failed ${maxAttempts} times: ${lastError}`
    await deadLetter(
      value,
      envelope.aggregate_id,
      { event_id: envelope.event_id, event_type: envelope.event_type },
      reason,
      source,
    )
    await registry.markFailed(handler, envelope.event_id, reason, false)
    log.error(
      { event_id: envelope.event_id, reason },
      'event dead-lettered; later events of its aggregate are parked',
    )
  }

  /**
   * A transactional batch's side effects in `t`: the batch form when the handler has one, else
   * one event after the other (`onThrow` learns which one threw). Returns what mark_done records.
   */
  const applyBatch = async (
    t: SqlQueryable,
    envelopes: readonly StoredEnvelope[],
    onThrow: (eventId: string, error: unknown) => void,
  ): Promise<DoneInput[]> => {
    const ctx = { tx: t, attempt: 1, signal: stop.signal }
    if (options.handleBatch !== undefined && envelopes.length > 1) {
      // One statement for all: each event's span covers it.
      const spans = tracer.enabled
        ? envelopes.map((e) =>
            tracer.startSpan('cairn.handle', {
              parent: parentOf(e),
              attributes: { ...handleAttributes(e, 1), 'cairn.batch': envelopes.length },
            }),
          )
        : []
      let results: readonly unknown[]
      try {
        results = await options.handleBatch(envelopes, ctx)
      } catch (error) {
        for (const span of spans) span.fail(error)
        throw error
      } finally {
        for (const span of spans) span.end()
      }
      if (results.length !== envelopes.length) {
        throw new CairnError(
          ErrorCode.INVALID_CONFIG,
          `${handler}: the batch handler returned ${results.length} results for ${envelopes.length} events`,
        )
      }
      return envelopes.map((e, i) => ({ eventId: e.event_id, result: results[i] }))
    }
    const done: DoneInput[] = []
    for (const envelope of envelopes) {
      try {
        done.push({ eventId: envelope.event_id, result: await runHandle(envelope, ctx) })
      } catch (error) {
        onThrow(envelope.event_id, error)
        throw error
      }
    }
    return done
  }

  /**
   * Runs the claimed events of one batch (sequence order, at most one per aggregate: the claim
   * rules keep it so) and marks them done with one statement.
   * Transactional: every handler and the one mark_done in ONE transaction; if a handler throws or
   * a claim was lost, the batch rolls back and its events run one by one (the thrower's try counts
   * as its first attempt), so a poison event gets its retries and dead letter and the others
   * commit. With `preset` (a one-transaction batch already failed, see `settle`) they run one by
   * one at once, `preset.thrower` counted as above. Non-transactional: side effects of different aggregates side by side (up to `concurrency`),
   * successes marked done together.
   */
  const executeBatch = async (
    items: readonly Claimed[],
    preset?: { readonly thrower: Thrower | undefined },
  ): Promise<void> => {
    const tx = options.transactional
    if (items.length === 1 && items[0] !== undefined && preset?.thrower === undefined) {
      if (tx !== undefined) return execute(items[0])
      await takeSlot()
      try {
        return await execute(items[0])
      } finally {
        freeSlot()
      }
    }
    if (tx === undefined) {
      const waiting: DoneInput[] = []
      const deferral: Deferral = {
        defer: (eventId, result) => waiting.push({ eventId, result }),
        pendingIds: () => waiting.map((w) => w.eventId),
        async flush() {
          // A snapshot: side effects running alongside may defer more meanwhile.
          const batch = waiting.splice(0)
          if (batch.length === 0) return
          let marked: Set<string>
          try {
            marked = await registry.markDone(handler, batch)
          } catch (error) {
            waiting.unshift(...batch)
            throw error
          }
          for (const w of batch) {
            if (marked.has(w.eventId)) m.processed++
            else lostClaim(w.eventId)
          }
        },
      }
      // The claim rules give at most one event per aggregate per round, so these external side
      // effects (e.g. a command worker's appends) may run side by side, `concurrency` at once.
      let next = 0
      const lane = async (): Promise<void> => {
        for (let item = items[next++]; item !== undefined; item = items[next++]) {
          // `concurrency` counts the side effects of every batch in flight, not of each.
          await takeSlot()
          try {
            await execute(item, undefined, deferral)
          } finally {
            freeSlot()
          }
        }
      }
      const lanes = await Promise.allSettled(
        Array.from({ length: Math.min(concurrency, items.length) }, lane),
      )
      await deferral.flush()
      const failed = lanes.find((l) => l.status === 'rejected')
      if (failed !== undefined) throw failed.reason
      return
    }
    const ids = items.map((i) => i.envelope.event_id)
    let thrower: Thrower | undefined = preset?.thrower
    if (preset === undefined) {
      const beat = setInterval(() => {
        registry.heartbeat(handler, ids).catch((error: unknown) => {
          log.warn({ err: String(error), events: ids.length }, 'heartbeat failed')
        })
      }, heartbeatMs)
      try {
        await tx.transaction(async (t) => {
          const done = await applyBatch(
            t,
            items.map((i) => i.envelope),
            (eventId, error) => {
              thrower = { eventId, error }
            },
          )
          const marked = await registry.markDone(handler, done, t)
          if (marked.size !== ids.length) throw new LostClaim()
        })
        m.processed += items.length
        return
      } catch (error) {
        if (isDependencyOutage(error)) throw error
        log.warn(
          { events: ids.length, event_id: thrower?.eventId, err: messageOf(error) },
          'batch rolled back; running its events one by one',
        )
      } finally {
        clearInterval(beat)
      }
    }
    for (const item of items) {
      const failed = thrower?.eventId === item.envelope.event_id ? thrower.error : undefined
      if (failed === undefined || isDependencyOutage(failed)) {
        await execute(item)
      } else {
        const lastError = messageOf(failed)
        log.warn({ event_id: item.envelope.event_id, attempt: 1, err: lastError }, 'handler failed')
        await execute(item, { attempt: 2, lastError })
      }
    }
  }

  /** Settles every message of a batch; throws (without committing) when the registry is unreachable. */
  const settle = async (messages: readonly DeliveredMessage[]): Promise<void> => {
    const pending = new Map<string, { envelope: StoredEnvelope; message: DeliveredMessage }>()
    for (const message of messages) {
      const decoded = decodeEnvelope(message.value)
      if (!decoded.ok) {
        await deadLetter(message.value, message.key, message.headers, decoded.reason, message)
        log.error(
          { topic: message.topic, offset: String(message.offset), reason: decoded.reason },
          'undecodable message dead-lettered',
        )
        continue
      }
      if (pending.has(decoded.envelope.event_id)) {
        // The same event twice in one batch (a republish): settled with its first copy.
        m.duplicates++
        continue
      }
      pending.set(decoded.envelope.event_id, { envelope: decoded.envelope, message })
    }
    if (!tracer.enabled) return claimAndRun(pending)
    const spans = [...pending.values()].map(({ envelope, message }) => {
      const span = tracer.startSpan(`process ${message.topic}`, {
        kind: 'consumer',
        parent: message.headers['traceparent'] ?? parentOf(envelope),
        attributes: {
          'messaging.system': messagingSystem,
          'messaging.operation.type': 'process',
          'messaging.operation.name': 'process',
          'messaging.destination.name': message.topic,
          'messaging.destination.partition.id': String(message.partition),
          'messaging.consumer.group.name': options.groupId,
          'messaging.kafka.offset': Number(message.offset),
          'messaging.message.id': envelope.event_id,
          'cairn.handler': handler,
        },
      })
      consuming.set(envelope.event_id, span)
      return { id: envelope.event_id, span }
    })
    try {
      await claimAndRun(pending)
    } catch (error) {
      for (const { span } of spans) span.fail(error)
      throw error
    } finally {
      for (const { id, span } of spans) {
        span.end()
        if (consuming.get(id) === span) consuming.delete(id)
      }
    }
  }

  /** Claims the decoded messages of a batch and runs what is claimed (see `settle`). */
  const claimAndRun = async (
    pending: Map<string, { envelope: StoredEnvelope; message: DeliveredMessage }>,
  ): Promise<void> => {
    const claimInputs = () =>
      [...pending.values()].map(({ envelope: e }) => ({
        eventId: e.event_id,
        aggregateType: e.aggregate_type,
        aggregateId: e.aggregate_id,
        seq: e.sequence_number,
      }))
    const claimedOf = (outcomes: ReadonlyMap<string, ClaimOutcome>) =>
      [...pending.values()]
        .filter(({ envelope: e }) => outcomes.get(e.event_id) === 'claimed')
        .sort((a, b) => a.envelope.sequence_number - b.envelope.sequence_number)
    /** Counts the outcomes; what is settled leaves `pending` (claimed ones once done). */
    const account = (outcomes: ReadonlyMap<string, ClaimOutcome>): void => {
      for (const [id, { envelope }] of pending) {
        const outcome = outcomes.get(id)
        if (outcome === 'duplicate') m.duplicates++
        else if (outcome === 'stale') m.stale++
        else if (outcome === 'parked' || outcome === 'failed') m.parked++
        if (outcome !== 'claimed' && outcome !== 'in_progress') pending.delete(envelope.event_id)
      }
    }

    // Transactional: the batch's claims, side effects and mark_done in ONE transaction (one
    // commit per batch; a crash leaves nothing behind). Should anything in it fail, it rolls back
    // whole and the batch takes the path below: claims of their own, then one transaction for the
    // batch or one per event, with the thrower's try counted.
    let preset: { readonly thrower: Thrower | undefined } | undefined
    const tx = options.transactional
    if (tx !== undefined && pending.size > 0 && !stop.signal.aborted) {
      let thrower: Thrower | undefined
      try {
        const outcomes = await tx.transaction(async (t) => {
          const claiming = traceClaim([...pending.keys()])
          const { outcomes: got, deferred } = await registry
            .claimInTransaction(handler, claimInputs(), t)
            .catch((error: unknown) => {
              claiming({ error })
              throw error
            })
          claiming(got)
          const claimed = claimedOf(got)
          if (claimed.length > 0) {
            const done = await applyBatch(
              t,
              claimed.map((c) => c.envelope),
              (eventId, error) => {
                thrower = { eventId, error }
              },
            )
            // Claims the statement deferred get their one row now, done; others are updated.
            const first = done.filter((d) => deferred.has(d.eventId))
            const rest = done.filter((d) => !deferred.has(d.eventId))
            const recorded = await registry.recordDone(
              handler,
              first.map((d) => {
                const e = (pending.get(d.eventId) as { envelope: StoredEnvelope }).envelope
                return {
                  eventId: d.eventId,
                  aggregateType: e.aggregate_type,
                  aggregateId: e.aggregate_id,
                  seq: e.sequence_number,
                  result: d.result,
                }
              }),
              t,
            )
            const marked = await registry.markDone(handler, rest, t)
            if (recorded.size + marked.size !== claimed.length) throw new LostClaim()
          }
          return got
        })
        const claimed = claimedOf(outcomes)
        m.processed += claimed.length
        account(outcomes)
        for (const { envelope } of claimed) pending.delete(envelope.event_id)
      } catch (error) {
        if (isDependencyOutage(error)) throw error
        log.warn(
          { events: pending.size, event_id: thrower?.eventId, err: messageOf(error) },
          'batch rolled back; claiming and running its events again',
        )
        preset = { thrower }
      }
    }

    while (pending.size > 0 && !stop.signal.aborted) {
      const claiming = traceClaim([...pending.keys()])
      const outcomes = await registry.claim(handler, claimInputs()).catch((error: unknown) => {
        claiming({ error })
        throw error
      })
      claiming(outcomes)
      const claimed = claimedOf(outcomes)
      account(outcomes)
      await executeBatch(
        claimed.map(({ envelope, message }) => ({
          envelope,
          value: message.value,
          source: message,
        })),
        preset,
      )
      preset = undefined
      for (const { envelope } of claimed) pending.delete(envelope.event_id)
      // What is left waits for an older event of its aggregate (here or elsewhere) to finish.
      if (pending.size > 0 && claimed.length === 0) await sleep(inProgressWaitMs, stop.signal)
    }
  }

  const redriveIntervalMs = options.redriveIntervalMs ?? 1_000
  let redrivenAt = Number.NEGATIVE_INFINITY
  /**
   * Events an operator released for a retry: read them from the event store, in sequence order.
   * Looked for every `redriveIntervalMs`, not at every poll (one statement each time).
   */
  const redrive = async (): Promise<void> => {
    if (options.loadEnvelope === undefined) return
    if (performance.now() - redrivenAt < redriveIntervalMs) return
    redrivenAt = performance.now()
    const rows = await registry.claimRetries(handler, 50)
    for (const row of rows) {
      const envelope = await options.loadEnvelope(row.eventId)
      if (envelope === null) {
        await registry.markFailed(
          handler,
          row.eventId,
          'released for a retry but not found in the event store',
          false,
        )
        continue
      }
      await execute({ envelope, value: new TextEncoder().encode(JSON.stringify(envelope)) })
      m.redriven++
    }
  }

  let looping: Promise<void> | undefined

  /**
   * A polled batch (or, for a transactional worker, one partition's part of it) being settled.
   * The worker polls on while batches settle, up to `pipeline` of them: a slow side effect holds
   * back only its own batch, and a transactional worker's batches of different partitions commit
   * side by side, each in its own transaction. A batch sharing an aggregate (a message key) with
   * an earlier one waits for it, and is not settled at all if that one failed (it is settled
   * again later, in order). Offsets are committed in poll order, each batch's once it and every
   * batch before it are settled.
   */
  type Flight = {
    readonly batch: readonly DeliveredMessage[]
    readonly keys: ReadonlySet<string>
    done: Promise<void>
    state: 'settling' | 'settled' | 'failed'
    error?: unknown
  }
  const pipeline = options.transactional === undefined ? 2 : TRANSACTIONAL_FLIGHTS
  const commitIntervalMs = options.commitIntervalMs ?? 500
  /**
   * A transactional worker polls again only while at most one batch's worth of messages is in
   * flight, so its transactions hold at most twice the batch size of aggregate locks.
   */
  const lockBudget =
    options.transactional === undefined ? Infinity : (options.batchSize ?? DEFAULT_MAX_BATCH)

  const loop = async (): Promise<void> => {
    const signal = stop.signal
    let consumer: BusConsumer | undefined
    let ownerBeat: ReturnType<typeof setInterval> | undefined
    let flights: Flight[] = []
    /** Per partition, the last settled message whose offset is not committed yet. */
    const uncommitted = new Map<string, DeliveredMessage>()
    const settledAll = (batch: readonly DeliveredMessage[]): void => {
      for (const m of batch) uncommitted.set(`${m.partition}:${m.topic}`, m)
    }
    const commitSettled = async (c: BusConsumer): Promise<void> => {
      await c.commit([...uncommitted.values()])
      uncommitted.clear()
      committedAt = performance.now()
    }
    let committedAt = Number.NEGATIVE_INFINITY
    /** Batches to settle again, one at a time and in order, after a failure (an outage). */
    let again: (readonly DeliveredMessage[])[] = []
    /** The signal of the poll under way: aborted when a flight ends or the worker stops. */
    let wake: AbortController | undefined
    const onStop = (): void => wake?.abort()
    signal.addEventListener('abort', onStop, { once: true })
    let failures = 0
    /** Consuming started once: later errors are outages, never a misconfiguration. */
    let consumed = false
    const inFlight = (): number =>
      flights.reduce((n, f) => (f.state === 'settling' ? n + f.batch.length : n), 0)
    const launch = (batch: readonly DeliveredMessage[]): void => {
      const keys = new Set(batch.map((message) => message.key))
      const before = flights.filter(
        (f) => f.state !== 'settled' && [...keys].some((k) => f.keys.has(k)),
      )
      const flight: Flight = { batch, keys, state: 'settling', done: Promise.resolve() }
      flight.done = Promise.all(before.map((f) => f.done))
        .then(() => {
          // An aggregate's later events must not be settled before its earlier ones are.
          const failed = before.find((f) => f.state === 'failed')
          if (failed !== undefined) throw failed.error
          return settle(batch)
        })
        .then(
          () => {
            flight.state = 'settled'
            wake?.abort()
          },
          (error: unknown) => {
            flight.state = 'failed'
            flight.error = error
            wake?.abort()
          },
        )
      flights.push(flight)
    }
    try {
      for (;;) {
        if (signal.aborted) return
        try {
          if (consumer === undefined) {
            await registry.start()
            ownerBeat ??= setInterval(
              () => {
                registry.touch().catch(() => {})
              },
              Math.max(1_000, Math.floor(heartbeatMs / 3)),
            )
            await bus.ensureTopics([{ name: dlqTopic, partitions: 1 }])
            consumer = await bus.consumer({
              groupId: options.groupId,
              topics: options.topics,
              clientId: handler,
              ...(options.batchSize === undefined ? {} : { maxBatch: options.batchSize }),
            })
            if (!consumed) {
              log.info({ topics: options.topics, owner: registry.owner }, 'worker consuming')
            }
            consumed = true
          }
          // The settled prefix leaves the flights; its offsets are committed in poll order, all
          // at once, at most every `commitIntervalMs`.
          let settled = 0
          while (flights[settled]?.state === 'settled') settled++
          for (const f of flights.splice(0, settled)) settledAll(f.batch)
          if (uncommitted.size > 0 && performance.now() - committedAt >= commitIntervalMs) {
            if (signal.aborted) return
            await commitSettled(consumer)
          }
          const failed = flights.find((f) => f.state === 'failed')
          if (failed !== undefined) {
            // Let the others end, then settle every uncommitted batch again, in order.
            await Promise.all(flights.map((f) => f.done))
            again = [...flights.map((f) => f.batch), ...again]
            flights = []
            throw failed.error
          }
          if (again.length > 0) {
            await settle(again[0] as readonly DeliveredMessage[])
            if (signal.aborted) return
            settledAll(again.shift() as readonly DeliveredMessage[])
            await commitSettled(consumer)
            continue
          }
          await redrive()
          if (flights.length < pipeline && inFlight() <= lockBudget) {
            wake = new AbortController()
            let batch: DeliveredMessage[]
            try {
              batch = signal.aborted ? [] : await consumer.poll(pollWaitMs, wake.signal)
            } finally {
              wake = undefined
            }
            if (batch.length > 0) {
              if (options.transactional === undefined) launch(batch)
              else for (const part of byPartition(batch, pipeline - flights.length)) launch(part)
            }
          } else {
            // Full: offsets go in order, so the oldest batch is the one to wait for.
            await (flights[0] as Flight).done
          }
          if (failures > 0 && flights.every((f) => f.state !== 'failed')) {
            log.info({ pauses: failures }, 'worker resumed')
            failures = 0
            m.paused = 0
            pausedBy = null
          }
        } catch (error) {
          if (isCairnError(error, ErrorCode.CLOSED) && signal.aborted) return
          // A misconfiguration at start (not an outage, not a topic yet to be created) will not
          // heal by waiting: stop and say why instead of pausing forever.
          if (
            !consumed &&
            isCairnError(error) &&
            !error.retryable &&
            error.code !== ErrorCode.BUS_UNKNOWN_TOPIC
          ) {
            log.error({ err: error.message }, 'worker cannot start')
            throw error
          }
          // Registry or bus unreachable: pause, keep the batches, commit nothing, try again.
          failures++
          m.pauses++
          m.paused = 1
          pausedBy = isCairnError(error) ? error.message : String(error)
          const wait = backoffMs(failures, { baseMs: 200, maxMs: 5_000, random: () => 1 })
          // Said when it pauses, then about every minute while the outage lasts.
          if (failures === 1 || failures % 12 === 0) {
            log.warn({ err: pausedBy, retry_in_ms: wait, pauses: failures }, 'worker paused')
          }
          // A bus client still failing after several pauses may be stuck on a connection that
          // does not recover by itself (seen after a broker hung): start a new one. Messages it
          // had not committed come again and are duplicates to the registry.
          if (consumer !== undefined && failures % RENEW_CONSUMER_AFTER === 0) {
            log.warn({ pauses: failures }, 'renewing the bus consumer')
            const old = consumer
            consumer = undefined
            await old.close().catch(() => {})
          }
          await sleep(wait, signal)
        }
      }
    } finally {
      // Batches still settling end first; what is settled in poll order is committed (the rest is
      // redelivered).
      await Promise.all(flights.map((f) => f.done))
      for (const f of flights) {
        if (f.state !== 'settled') break
        settledAll(f.batch)
      }
      if (consumer !== undefined && uncommitted.size > 0) {
        await commitSettled(consumer).catch((error: unknown) => {
          log.warn(
            { err: String(error) },
            'committing offsets at stop failed; they are redelivered',
          )
        })
      }
      signal.removeEventListener('abort', onStop)
      clearInterval(ownerBeat)
      await consumer?.close().catch(() => {})
      await producer?.close().catch(() => {})
      await registry.stop().catch(() => {})
      log.info({ ...m }, 'worker stopped')
    }
  }

  const close = async (): Promise<void> => {
    stop.abort()
    await looping
  }

  return {
    run(signal) {
      signal?.addEventListener('abort', () => stop.abort(), { once: true })
      looping ??= loop()
      return looping
    },
    metrics: () => ({ ...m }),
    pausedBy: () => pausedBy,
    close,
    [Symbol.asyncDispose]: close,
  }
}
