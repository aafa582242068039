import { createCommandProcessor } from '../application/command-processor.ts'
import type { StoredEnvelope } from '../core/envelope.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { Handle } from '../worker/worker.ts'
import { commandTarget } from './commands.ts'
import type { DomainCommand } from './commands.ts'
import { foldClass, foldDatabase, foldInstance, liveClass, liveInstance } from './decide.ts'
import { AGGREGATE, classAggregateId, commandHandlerFor } from './model.ts'
import { ontology } from './ontology.ts'

/** What a command handler returns; the registry stores it as the command's `result`. */
export type { CommandResult } from '../application/decider.ts'

export type CommandHandlerOptions = {
  readonly eventStore: EventStore
  readonly logger?: Logger
  /** Decisions tried again after a sequence conflict before giving up with a retryable error (default 5). */
  readonly maxConflicts?: number
  readonly now?: () => number
}

// ---- reading streams ----

/**
 * Reads an aggregate's stream in sequence order; `current`, when the caller just asked the
 * allocator, saves asking again.
 */
type StreamReader = (
  aggregateType: string,
  aggregateId: string,
  current?: number,
) => Promise<readonly StoredEnvelope[]>

/** A stream cache: a reader that also takes events the caller already holds. */
export type StreamCache = StreamReader & {
  /** An event read elsewhere (a command delivered by the bus): kept if it extends the prefix. */
  remember(event: StoredEnvelope): void
}

/**
 * A stream reader that remembers what it read: events are immutable and sequences contiguous, so
 * a cached stream is extended with what follows its last event — asking the allocator for the
 * current sequence (one SQL query) instead of listing the bucket again. Only a gap-free prefix is
 * kept (an event still in flight leaves a hole that is read again next time). Bounded: the least
 * recently used streams are forgotten.
 */
export const createStreamCache = (es: EventStore, maxStreams = 10_000): StreamCache => {
  const cache = new Map<string, StoredEnvelope[]>()
  const read = async (type: string, id: string, known?: number) => {
    const key = `${type}\u0000${id}`
    const cached = cache.get(key) ?? []
    const have = cached.at(-1)?.sequence_number ?? 0
    const current = known ?? (await es.currentSequence(type, id))
    if (current <= have) {
      cache.delete(key)
      cache.set(key, cached)
      return cached
    }
    const more = await es.readStream(type, id, { fromSeq: have + 1 })
    const stream = [...cached]
    for (const e of more) {
      if (e.sequence_number !== (stream.at(-1)?.sequence_number ?? 0) + 1) break
      stream.push(e)
    }
    cache.delete(key)
    cache.set(key, stream)
    if (cache.size > maxStreams) cache.delete(cache.keys().next().value as string)
    // What was read past a hole is still returned (it is stored), just not remembered.
    return stream.length === cached.length + more.length ? stream : [...cached, ...more]
  }
  const remember = (event: StoredEnvelope): void => {
    const key = `${event.aggregate_type}\u0000${event.aggregate_id}`
    const cached = cache.get(key) ?? []
    if (event.sequence_number !== (cached.at(-1)?.sequence_number ?? 0) + 1) return
    cache.delete(key)
    cache.set(key, [...cached, event])
    if (cache.size > maxStreams) cache.delete(cache.keys().next().value as string)
  }
  return Object.assign(read, { remember })
}

/**
 * The expected sequence for a create command: 0 for a new aggregate, the current sequence when
 * the aggregate does not exist any more (deleted, a rejected create, or a parent deleted or
 * re-created since: generations), and 0 otherwise so that the append conflicts (409). A
 * command still undecided at the head of the stream counts as existing.
 */
export const expectedSeqForCreate = async (
  eventStore: EventStore,
  cmd: DomainCommand,
): Promise<number> => {
  const target = commandTarget(cmd)
  const current = await eventStore.currentSequence(target.aggregateType, target.aggregateId)
  if (current === 0) return 0
  const events = await eventStore.readStream(target.aggregateType, target.aggregateId, {
    toSeq: current,
  })
  const last = events.at(-1)
  if (last === undefined || last.sequence_number !== current || last.metadata.kind !== 'domain') {
    return 0
  }
  const read = async (type: string, id: string) => eventStore.readStream(type, id)
  const database = foldDatabase(await read(AGGREGATE.database, cmd.db))
  let live: boolean
  if (cmd.type === 'CREATE_DATABASE') {
    live = foldDatabase(events) !== null
  } else if (!('classId' in cmd)) {
    live = database !== null
  } else if (!('instanceId' in cmd)) {
    live = liveClass(foldClass(events), database) !== null
  } else {
    const cls =
      database === null
        ? null
        : liveClass(
            foldClass(await read(AGGREGATE.ontologyClass, classAggregateId(cmd.db, cmd.classId))),
            database,
          )
    live = liveInstance(foldInstance(events), cls) !== null
  }
  return live ? 0 : current
}

/**
 * The command handler of the ontology and instance workers (all three command topics): the
 * application API's command processor over the ontology's declaration (ontology.ts). Per command:
 * an outcome already stored is returned as is; otherwise it reads the states the command depends
 * on, decides, and appends the one domain event with `expectedSeq` = the aggregate's sequence at
 * decision time, deciding again after a conflict. Event-store outages throw (the worker retries);
 * a malformed command is a rejection result, never a throw. Its events name the worker that
 * decided them (`service`), as the runtime's roles split the commands.
 */
export const createCommandHandler = (options: CommandHandlerOptions): Handle =>
  createCommandProcessor({
    domain: ontology,
    eventStore: options.eventStore,
    service: (aggregate) => commandHandlerFor(aggregate.type),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.maxConflicts === undefined ? {} : { maxConflicts: options.maxConflicts }),
    ...(options.now === undefined ? {} : { now: options.now }),
  }).handle
