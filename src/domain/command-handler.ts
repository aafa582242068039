import { createEnvelope, domainEventId } from '../core/envelope.ts'
import type { EventEnvelope, StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { Handle } from '../worker/worker.ts'
import {
  commandTarget,
  isCommandType,
  parseCreateClass,
  parseCreateDatabase,
  parseCreateInstance,
  parseDeleteClass,
  parseDeleteDatabase,
  parseDeleteInstance,
  parseUpdateClass,
  parseUpdateInstance,
} from './commands.ts'
import type { DomainCommand, Parsed } from './commands.ts'
import {
  COMMAND_REJECTED,
  REJECTION,
  SUCCESS_EVENT,
  decide,
  foldClass,
  foldDatabase,
  foldInstance,
  liveClass,
  liveInstance,
  mergeData,
  patchClass,
  referencedClasses,
  referencesIn,
} from './decide.ts'
import type { ClassState, DatabaseState, Decision, InstanceState, World } from './decide.ts'
import { AGGREGATE, HANDLERS, TOPICS, classAggregateId, instanceAggregateId } from './model.ts'

/** What a command handler returns; the registry stores it as the command's `result`. */
export type CommandResult = {
  readonly outcome: 'completed' | 'rejected'
  readonly events: readonly {
    readonly event_id: string
    readonly event_type: string
    readonly aggregate_type: string
    readonly aggregate_id: string
    readonly sequence_number: number
  }[]
  readonly code?: string
  readonly reason?: string
}

export type CommandHandlerOptions = {
  readonly eventStore: EventStore
  readonly logger?: Logger
  /** Decisions tried again after a sequence conflict before giving up with a retryable error (default 5). */
  readonly maxConflicts?: number
  readonly now?: () => number
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * Reads the command back from its envelope, checking it as the OMS did (an envelope from
 * anywhere else gets the same scrutiny), and that it belongs to the aggregate it is stored in.
 */
export const commandFromEnvelope = (envelope: StoredEnvelope): Parsed<DomainCommand> => {
  const bad = (message: string): Parsed<DomainCommand> => ({
    ok: false,
    problems: [{ pointer: '/data', message }],
  })
  if (envelope.metadata.kind !== 'command') return bad('not a command envelope')
  const d = envelope.data
  const type = d.command_type
  if (!isCommandType(type)) return bad(`unknown command type ${JSON.stringify(type)}`)
  if (envelope.event_type !== `${type}_REQUESTED`) {
    return bad(`event type ${envelope.event_type} does not match command type ${type}`)
  }
  const p = isRecord(d.payload) ? d.payload : {}
  const commandId = typeof d.command_id === 'string' ? d.command_id : envelope.event_id
  const parsed: Parsed<DomainCommand> = (() => {
    switch (type) {
      case 'CREATE_DATABASE':
        return parseCreateDatabase(p)
      case 'DELETE_DATABASE':
        return parseDeleteDatabase(d.db_name)
      case 'CREATE_ONTOLOGY_CLASS':
        return parseCreateClass(d.db_name, p)
      case 'UPDATE_ONTOLOGY_CLASS':
        return parseUpdateClass(d.db_name, d.class_id, p)
      case 'DELETE_ONTOLOGY_CLASS':
        return parseDeleteClass(d.db_name, d.class_id)
      case 'CREATE_INSTANCE':
        return parseCreateInstance(
          d.db_name,
          d.class_id,
          { id: d.instance_id, data: p.data },
          commandId,
        )
      case 'UPDATE_INSTANCE':
        return parseUpdateInstance(d.db_name, d.class_id, d.instance_id, p)
      case 'DELETE_INSTANCE':
        return parseDeleteInstance(d.db_name, d.class_id, d.instance_id)
    }
  })()
  if (!parsed.ok) return parsed
  const target = commandTarget(parsed.value)
  if (
    target.aggregateType !== envelope.aggregate_type ||
    target.aggregateId !== envelope.aggregate_id
  ) {
    return bad(
      `the command is for ${target.aggregateType} ${target.aggregateId} but is stored in ${envelope.aggregate_type} ${envelope.aggregate_id}`,
    )
  }
  return parsed
}

// ---- loading state from the event store ----

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

const direct =
  (es: EventStore): StreamReader =>
  (type, id) =>
    es.readStream(type, id)

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

const loadDatabase = async (read: StreamReader, db: string): Promise<DatabaseState | null> =>
  foldDatabase(await read(AGGREGATE.database, db))

/** The class if live under `db` (already loaded). */
const loadClass = async (
  read: StreamReader,
  db: DatabaseState | null,
  dbName: string,
  classId: string,
): Promise<ClassState | null> =>
  db === null
    ? null
    : liveClass(
        foldClass(await read(AGGREGATE.ontologyClass, classAggregateId(dbName, classId))),
        db,
      )

const loadInstance = async (
  read: StreamReader,
  cls: ClassState | null,
  dbName: string,
  classId: string,
  instanceId: string,
): Promise<InstanceState | null> =>
  cls === null
    ? null
    : liveInstance(
        foldInstance(
          await read(AGGREGATE.instance, instanceAggregateId(dbName, classId, instanceId)),
        ),
        cls,
      )

/** Reads every state the command's decision depends on, as live states. */
const loadWorld = async (
  es: StreamReader,
  cmd: DomainCommand,
  currentSeq: number,
): Promise<World> => {
  const database = await loadDatabase(es, cmd.db)
  if (cmd.type === 'CREATE_DATABASE' || cmd.type === 'DELETE_DATABASE') {
    return { nextSeq: currentSeq + 1, database }
  }
  const cls = await loadClass(es, database, cmd.db, cmd.classId)
  const classes = new Map<string, ClassState>()
  if (cls !== null) classes.set(cmd.classId, cls)
  const classOf = async (classId: string): Promise<ClassState | null> => {
    if (!classes.has(classId)) {
      const c = await loadClass(es, database, cmd.db, classId)
      if (c !== null) classes.set(classId, c)
    }
    return classes.get(classId) ?? null
  }
  switch (cmd.type) {
    case 'CREATE_ONTOLOGY_CLASS':
    case 'UPDATE_ONTOLOGY_CLASS': {
      const def =
        cmd.type === 'CREATE_ONTOLOGY_CLASS'
          ? cmd.payload
          : cls !== null
            ? patchClass(cls.definition, cmd.payload)
            : null
      if (def !== null) for (const id of referencedClasses(def)) await classOf(id)
      return { nextSeq: currentSeq + 1, database, cls, classes }
    }
    case 'DELETE_ONTOLOGY_CLASS':
      return { nextSeq: currentSeq + 1, database, cls, classes }
    case 'CREATE_INSTANCE':
    case 'UPDATE_INSTANCE':
    case 'DELETE_INSTANCE': {
      const instance = await loadInstance(es, cls, cmd.db, cmd.classId, cmd.instanceId)
      const instances = new Set<string>()
      if (cls !== null && cmd.type !== 'DELETE_INSTANCE') {
        const data =
          cmd.type === 'CREATE_INSTANCE'
            ? cmd.payload.data
            : mergeData(instance?.data ?? {}, cmd.payload.data)
        for (const ref of referencesIn(cls.definition, data)) {
          const target = await classOf(ref.classId)
          const found = await loadInstance(es, target, cmd.db, ref.classId, ref.instanceId)
          if (found !== null) instances.add(`${ref.classId}:${ref.instanceId}`)
        }
      }
      return { nextSeq: currentSeq + 1, database, cls, instance, classes, instances }
    }
  }
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
  const database = await loadDatabase(direct(eventStore), cmd.db)
  let live: boolean
  if (cmd.type === 'CREATE_DATABASE') {
    live = foldDatabase(events) !== null
  } else if (!('classId' in cmd)) {
    live = database !== null
  } else if (!('instanceId' in cmd)) {
    live = liveClass(foldClass(events), database) !== null
  } else {
    const cls = await loadClass(direct(eventStore), database, cmd.db, cmd.classId)
    live = liveInstance(foldInstance(events), cls) !== null
  }
  return live ? 0 : current
}

// ---- the handler ----

const topicOf = (aggregateType: string): string =>
  aggregateType === AGGREGATE.instance ? TOPICS.instanceEvents : TOPICS.ontologyEvents

const serviceOf = (aggregateType: string): string =>
  aggregateType === AGGREGATE.instance ? HANDLERS.instance : HANDLERS.ontology

/** The domain event of a decision, on the command's aggregate, with a deterministic id. */
export const domainEnvelope = (
  command: StoredEnvelope,
  commandId: string,
  decision: Decision,
  now: () => number = Date.now,
): EventEnvelope => {
  const m = command.metadata
  return createEnvelope(
    {
      event_id: domainEventId(commandId, decision.eventType, command.aggregate_id),
      event_type: decision.eventType,
      aggregate_type: command.aggregate_type,
      aggregate_id: command.aggregate_id,
      actor: command.actor,
      data: decision.data,
      metadata: {
        kind: 'domain',
        kafka_topic: topicOf(command.aggregate_type),
        ordering_key: command.aggregate_id,
        command_id: commandId,
        service: serviceOf(command.aggregate_type),
        ...(typeof m.correlation_id === 'string' ? { correlation_id: m.correlation_id } : {}),
        ...(typeof m.traceparent === 'string' ? { traceparent: m.traceparent } : {}),
      },
    },
    now,
  )
}

const resultOf = (stored: StoredEnvelope): CommandResult => {
  const event = {
    event_id: stored.event_id,
    event_type: stored.event_type,
    aggregate_type: stored.aggregate_type,
    aggregate_id: stored.aggregate_id,
    sequence_number: stored.sequence_number,
  }
  if (stored.event_type !== COMMAND_REJECTED) return { outcome: 'completed', events: [event] }
  const { code, reason } = stored.data
  return {
    outcome: 'rejected',
    events: [event],
    code: typeof code === 'string' ? code : REJECTION.invalidCommand,
    reason: typeof reason === 'string' ? reason : 'rejected',
  }
}

/**
 * The command handler of the ontology and instance workers (all three command topics). Per
 * command: an outcome already stored is returned as is (a crash between the append and mark_done
 * decides nothing twice); otherwise it folds the states the command depends on, decides, and
 * appends the one domain event with `expectedSeq` = the aggregate's sequence at decision time,
 * deciding again after a conflict. Event-store outages throw (the worker retries); a malformed
 * command is a rejection result, never a throw.
 */
export const createCommandHandler = (options: CommandHandlerOptions): Handle => {
  const es = options.eventStore
  const log = options.logger ?? silentLogger
  const maxConflicts = options.maxConflicts ?? 5
  const streams = createStreamCache(es)
  const now = options.now ?? Date.now

  return async (envelope): Promise<CommandResult> => {
    const parsed = commandFromEnvelope(envelope)
    if (!parsed.ok) {
      const reason = parsed.problems.map((p) => `${p.pointer}: ${p.message}`).join('; ')
      log.warn({ event_id: envelope.event_id, reason }, 'rejecting a malformed command')
      return { outcome: 'rejected', events: [], code: REJECTION.invalidCommand, reason }
    }
    const cmd = parsed.value
    const commandId =
      typeof envelope.data.command_id === 'string' ? envelope.data.command_id : envelope.event_id
    const target = commandTarget(cmd)

    // An outcome stored by an earlier try (both lookups at once: one round trip of waiting).
    const earlier = await Promise.all(
      [SUCCESS_EVENT[cmd.type], COMMAND_REJECTED].map((type) =>
        es.getByEventId(domainEventId(commandId, type, target.aggregateId)),
      ),
    )
    const stored = earlier.find((e) => e !== null)
    if (stored !== undefined && stored !== null) return resultOf(stored)

    // The command is its aggregate's latest stored event, often the whole stream so far (a
    // create): with it in the cache the aggregate is not read back from the bucket.
    streams.remember(envelope)
    for (let attempt = 1; ; attempt++) {
      const current = await es.currentSequence(target.aggregateType, target.aggregateId)
      const read: StreamReader = (type, id) =>
        streams(
          type,
          id,
          type === target.aggregateType && id === target.aggregateId ? current : undefined,
        )
      const world = await loadWorld(read, cmd, current)
      const decision = decide(cmd, commandId, world)
      try {
        const appended = await es.append({
          envelopes: [domainEnvelope(envelope, commandId, decision, now)],
          expectedSeq: current,
        })
        const stored = appended.envelopes[0]
        if (stored === undefined)
          throw new CairnError(ErrorCode.APPEND_FAILED, 'append stored nothing')
        log.debug(
          {
            command_id: commandId,
            event_type: stored.event_type,
            aggregate_id: stored.aggregate_id,
            sequence_number: stored.sequence_number,
          },
          'command decided',
        )
        return resultOf(stored)
      } catch (error) {
        if (!isCairnError(error, ErrorCode.SEQUENCE_CONFLICT)) throw error
        if (attempt >= maxConflicts) {
          throw new CairnError(
            ErrorCode.SEQUENCE_CONFLICT,
            `command ${commandId}: aggregate ${target.aggregateId} kept moving during ${attempt} decisions`,
            { retryable: true, cause: error },
          )
        }
        log.debug({ command_id: commandId, attempt }, 'sequence conflict; deciding again')
      }
    }
  }
}
