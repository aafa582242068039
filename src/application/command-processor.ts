import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { ProcessedEventRegistry } from '../registry/processed-events.ts'
import type { Handle } from '../worker/worker.ts'
import {
  COMMAND_REJECTED,
  decisionEnvelopes,
  firstEventIds,
  foldStream,
  parseCommandEnvelope,
  resultOf,
  runDecide,
} from './decider.ts'
import type { CommandResult } from './decider.ts'
import type { SomeAggregate, SomeCommand, DomainDefinition, ReadState } from './define.ts'
import type { SnapshotStore } from './snapshots.ts'

export type CommandProcessorOptions = {
  readonly domain: DomainDefinition
  readonly eventStore: EventStore
  /** Where snapshots live; aggregates with `snapshotEvery` use it (omitted: none are taken). */
  readonly snapshots?: SnapshotStore
  readonly logger?: Logger
  /** Decisions tried again after a sequence conflict before a retryable error (default 5). */
  readonly maxConflicts?: number
  /** Aggregate states kept in memory (default 10,000; least recently used go first). */
  readonly cacheSize?: number
  /**
   * The `service` of the events it stores, by aggregate: the worker that decides them, when a
   * runtime splits a domain's commands across workers (default `<domain>:commands`).
   */
  readonly service?: (aggregate: SomeAggregate) => string
  readonly now?: () => number
}

/** An aggregate's state as of a sequence (0: nothing stored). */
export type LoadedState = { readonly state: unknown; readonly sequence: number }

export type CommandProcessor = {
  /** Decides one stored command and appends its outcome; an outcome stored before is returned. */
  process(command: StoredEnvelope, traceparent?: string): Promise<CommandResult>
  /** The worker's side effect (what `process` does, as a worker handler). */
  readonly handle: Handle
  /** An aggregate's current state, from its snapshot (if any) and the events after it. */
  load(aggregate: SomeAggregate, aggregateId: string): Promise<LoadedState>
}

type Cached = { seq: number; state: unknown }

/**
 * Command handling from a domain's declaration. Per command: the outcome stored by an earlier try
 * is returned as it is (a crash between the append and mark_done decides nothing twice);
 * otherwise the aggregate's state is loaded (memory, then snapshot, then the events after it),
 * `decide` runs, and its events — or its rejection — are appended with `expectedSeq` = the
 * sequence the decision saw, deciding again after a conflict. Event-store outages throw (the
 * worker retries); a command that cannot be read is a rejection, never a throw.
 */
export const createCommandProcessor = (options: CommandProcessorOptions): CommandProcessor => {
  const { domain, eventStore: es, snapshots } = options
  const log = (options.logger ?? silentLogger).child({ component: `${domain.name}:commands` })
  const maxConflicts = options.maxConflicts ?? 5
  const cacheSize = options.cacheSize ?? 10_000
  const now = options.now ?? Date.now
  const cache = new Map<string, Cached>()

  const keep = (key: string, entry: Cached): void => {
    cache.delete(key)
    cache.set(key, entry)
    if (cache.size > cacheSize) cache.delete(cache.keys().next().value as string)
  }

  /**
   * The state at `current`. Only a state folded from every sequence up to its own is kept (in
   * memory or as a snapshot): an event still in flight leaves a hole, and what follows it is
   * folded for this decision but read again the next time.
   */
  const stateAt = async (
    aggregate: SomeAggregate,
    id: string,
    current: number,
  ): Promise<LoadedState> => {
    const key = `${aggregate.type}\u0000${id}`
    let base = cache.get(key)
    if (base !== undefined && base.seq > current) base = undefined
    if (base === undefined && snapshots !== undefined && aggregate.snapshotEvery !== null) {
      const snap = await snapshots.load(aggregate.type, id, aggregate.version)
      if (snap !== null && snap.seq <= current) base = { seq: snap.seq, state: snap.state }
    }
    base ??= { seq: 0, state: aggregate.initialState() }
    if (base.seq === current) {
      keep(key, base)
      return { state: base.state, sequence: current }
    }
    const more = await es.readStream(aggregate.type, id, { fromSeq: base.seq + 1, toSeq: current })
    const state = foldStream(aggregate, base.state, more)
    const contiguous = more.every((e, i) => e.sequence_number === base.seq + 1 + i)
    const last = more.at(-1)?.sequence_number ?? base.seq
    if (contiguous && last === current) {
      keep(key, { seq: current, state })
      await maybeSnapshot(aggregate, id, base.seq, { seq: current, state })
    } else {
      keep(key, base)
    }
    return { state, sequence: current }
  }

  /** A snapshot once `snapshotEvery` events followed the last one; best effort. */
  const maybeSnapshot = async (
    aggregate: SomeAggregate,
    id: string,
    since: number,
    entry: Cached,
  ): Promise<void> => {
    const every = aggregate.snapshotEvery
    if (snapshots === undefined || every === null) return
    if (Math.floor(entry.seq / every) === Math.floor(since / every)) return
    try {
      await snapshots.save(aggregate.type, id, aggregate.version, entry)
    } catch (error) {
      log.warn(
        { aggregate_id: id, err: String(error) },
        'snapshot not saved (derived data; goes on)',
      )
    }
  }

  /**
   * The whole stored decision whose first event is `first` (one append, so contiguous). A
   * rejection is one event, and so is a typed decision of a command that emits one type.
   */
  const storedDecision = async (first: StoredEnvelope, command: SomeCommand, commandId: string) => {
    if (
      first.event_type === COMMAND_REJECTED ||
      (domain.eventFormat === 'typed' && command.emits.length === 1)
    ) {
      return [first]
    }
    const rest = await es.readStream(first.aggregate_type, first.aggregate_id, {
      fromSeq: first.sequence_number,
    })
    const out: StoredEnvelope[] = []
    for (const e of rest) {
      if (e.metadata.command_id !== commandId || e.metadata.kind !== 'domain') break
      out.push(e)
    }
    return out.length > 0 ? out : [first]
  }

  /** `traceparent`: the parent of the events it appends (the worker's span), else the command's. */
  const process = async (
    envelope: StoredEnvelope,
    traceparent?: string,
  ): Promise<CommandResult> => {
    const parsed = parseCommandEnvelope(domain, envelope)
    if (!parsed.ok) {
      log.warn(
        { event_id: envelope.event_id, reason: parsed.reason },
        'rejecting a malformed command',
      )
      return {
        outcome: 'rejected',
        events: [],
        code: domain.invalidCommandCode,
        reason: parsed.reason,
      }
    }
    const { command, payload, commandId } = parsed
    const aggregate = command.aggregate
    const id = envelope.aggregate_id
    // An outcome stored by an earlier try (several possible ids are looked up at once).
    const earlier = await Promise.all(
      firstEventIds(domain, command, commandId, id).map((e) => es.getByEventId(e)),
    )
    const first = earlier.find((e) => e !== null)
    if (first !== undefined && first !== null) {
      return resultOf(await storedDecision(first, command, commandId))
    }

    // The command is usually its aggregate's latest event: a cached state one behind it moves
    // past it without reading (commands do not change state), and a command that opens its
    // stream needs no read at all.
    const key = `${aggregate.type}\u0000${id}`
    const cached = cache.get(key)
    if (cached !== undefined && cached.seq === envelope.sequence_number - 1) {
      cached.seq = envelope.sequence_number
    } else if (cached === undefined && envelope.sequence_number === 1) {
      keep(key, { seq: 1, state: aggregate.initialState() })
    }
    const service = options.service?.(aggregate)
    const load = command.load as ((c: unknown, read: ReadState) => Promise<unknown>) | null
    for (let attempt = 1; ; attempt++) {
      const current = await es.currentSequence(aggregate.type, id)
      const { state } = await stateAt(aggregate, id, current)
      const read = (async (other: SomeAggregate, otherId: string) =>
        other === aggregate && otherId === id
          ? state
          : (await stateAt(other, otherId, await es.currentSequence(other.type, otherId)))
              .state) as ReadState
      const decision = runDecide(command, payload, state, {
        commandId,
        actor: envelope.actor,
        sequence: current,
        submittedAt: envelope.occurred_at,
        loaded: load === null ? undefined : await load(payload, read),
      })
      const envelopes = decisionEnvelopes(domain, command, envelope, commandId, decision, {
        now,
        ...(service === undefined ? {} : { service }),
        ...(traceparent === undefined ? {} : { traceparent }),
      })
      // A decision with no events changes nothing and stores nothing: a redelivery decides again.
      if (envelopes.length === 0) return { outcome: 'completed', events: [] }
      try {
        const appended = await es.append({ envelopes, expectedSeq: current })
        const stored = appended.envelopes
        const entry = cache.get(key)
        if (
          appended.outcome === 'appended' &&
          entry !== undefined &&
          entry.seq === current &&
          stored[0]?.sequence_number === current + 1
        ) {
          const next = {
            seq: current + stored.length,
            state: foldStream(aggregate, entry.state, stored),
          }
          keep(key, next)
          await maybeSnapshot(aggregate, id, current, next)
        }
        log.debug(
          { command_id: commandId, outcome: decision.outcome, aggregate_id: id },
          'command decided',
        )
        return resultOf(stored)
      } catch (error) {
        if (!isCairnError(error, ErrorCode.SEQUENCE_CONFLICT)) throw error
        if (attempt >= maxConflicts) {
          throw new CairnError(
            ErrorCode.SEQUENCE_CONFLICT,
            `command ${commandId}: aggregate ${id} kept moving during ${attempt} decisions`,
            { retryable: true, cause: error },
          )
        }
        log.debug({ command_id: commandId, attempt }, 'sequence conflict; deciding again')
      }
    }
  }

  return {
    process,
    handle: (envelope, ctx) => process(envelope, ctx.traceparent),
    async load(aggregate, id) {
      return stateAt(aggregate, id, await es.currentSequence(aggregate.type, id))
    },
  }
}

/** How long an inline answer waits for the command worker that claimed the command first. */
const INLINE_WAIT_MS = 5_000

/**
 * Decides a command in the process that stored it, with the worker's guarantees: it claims the
 * command in the registry under the command worker's handler name first, so the worker, when
 * the command reaches it, finds it done (or waits while it is processing). Returns null when it
 * cannot decide now (an older command of the aggregate is still open): the worker will. When the
 * worker claimed it first, its outcome is returned once it is decided (within 5 s). A failure is released to the worker's retries, and null returned.
 */
export const decideInline = async (
  processor: CommandProcessor,
  registry: ProcessedEventRegistry,
  handler: string,
  command: StoredEnvelope,
  logger: Logger = silentLogger,
): Promise<CommandResult | null> => {
  const claim = {
    eventId: command.event_id,
    aggregateType: command.aggregate_type,
    aggregateId: command.aggregate_id,
    seq: command.sequence_number,
  }
  const outcome = (await registry.claim(handler, [claim])).get(command.event_id)
  const decided = async (): Promise<CommandResult | null> => {
    const row = (await registry.status(command.event_id)).find((r) => r.handler === handler)
    return row?.status === 'done' ? ((row.result ?? null) as CommandResult | null) : null
  }
  if (outcome === 'duplicate') return decided()
  if (outcome === 'in_progress') {
    // The command worker claimed it first (it was delivered before this claim): its decision is
    // the outcome, once it is there; past the bound the answer is a 202 after all.
    const deadline = performance.now() + INLINE_WAIT_MS
    for (let pause = 5; performance.now() < deadline; pause = Math.min(pause * 1.5, 25)) {
      await new Promise((resolve) => setTimeout(resolve, pause))
      const result = await decided()
      if (result !== null) return result
    }
    return null
  }
  if (outcome !== 'claimed') return null
  let result: CommandResult
  try {
    result = await processor.process(command)
  } catch (error) {
    logger.warn(
      { command_id: command.event_id, err: String(error) },
      'inline decision failed; the command worker takes it over',
    )
    await registry.markFailed(handler, command.event_id, String(error), true).catch(() => undefined)
    return null
  }
  const marked = await registry.markDone(handler, [{ eventId: command.event_id, result }])
  return marked.has(command.event_id) ? result : null
}
