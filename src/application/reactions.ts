import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { Sql } from '../core/ports/sql.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { ProcessedEventRegistry } from '../registry/processed-events.ts'
import { replayIntoHandler } from '../registry/replay.ts'
import type { Handle, HandleBatch, HandlerContext } from '../worker/worker.ts'
import { commandEnvelope, metaOf, problemsOf, reactionCommandId, upcastData } from './decider.ts'
import type {
  DomainDefinition,
  EventDefinition,
  SomeProcessManager,
  ProjectionContext,
  SomeProjection,
} from './define.ts'

/**
 * The side effects of a domain's reactions, as worker handlers: process managers send commands,
 * projections write tables in the worker's transaction. Both see events typed and upcast.
 */

/** Registry handler names (and consumer groups) of a domain's workers. */
export const handlerNames = (domain: DomainDefinition) => ({
  commands: `${domain.name}:commands`,
  processManager: (name: string) => `${domain.name}:process:${name}`,
  projection: (name: string) => `${domain.name}:projection:${name}`,
})

/** The event as a reaction receives it, or null when the reaction does not take it. */
const delivered = (
  events: readonly EventDefinition[],
  domain: DomainDefinition,
  e: StoredEnvelope,
): Record<string, unknown> | null => {
  if (e.metadata.kind !== 'domain') return null
  const def = events.find((d) => d.type === e.event_type)
  if (def === undefined) return null
  // An event type belongs to one aggregate of the domain; another aggregate's event of the same
  // name (from outside the domain) is not this one.
  const owner = domain.aggregates.find((a) => a.events.includes(def))
  if (owner === undefined || owner.type !== e.aggregate_type) return null
  return {
    type: def.type,
    data: upcastData(def, e.schema_version, e.data),
    aggregateType: e.aggregate_type,
    aggregateId: e.aggregate_id,
    meta: metaOf(e),
    commandId: typeof e.metadata.command_id === 'string' ? e.metadata.command_id : null,
  }
}

/** Topics a reaction consumes: the event topics of the aggregates that own its events. */
export const topicsOf = (
  domain: DomainDefinition,
  events: readonly EventDefinition[],
): string[] => [
  ...new Set(
    domain.aggregates
      .filter((a) => a.events.some((e) => events.includes(e)))
      .map((a) => a.topics.events),
  ),
]

/**
 * A process manager's handler: the commands an event leads to are stored with ids derived from
 * the event's id, so a redelivery (or a crash before mark_done) stores nothing twice (W3), and
 * the command processor decides each once: exactly once end to end. A command that does not fit
 * its schema is a bug in the reaction: it throws (retried, then parked with the reason).
 */
export const createProcessManagerHandler = (options: {
  readonly domain: DomainDefinition
  readonly processManager: SomeProcessManager
  readonly eventStore: EventStore
  readonly now?: () => number
}): Handle => {
  const { domain, processManager: pm, eventStore } = options
  return async (envelope, ctx) => {
    const event = delivered(pm.events, domain, envelope)
    if (event === null) return { ignored: true }
    const requests = pm.react(event as never)
    const sent: string[] = []
    for (const [i, request] of requests.entries()) {
      const problems = problemsOf(request.command.schema, request.payload)
      if (problems.length > 0) {
        throw new CairnError(
          ErrorCode.INVALID_ENVELOPE,
          `process manager ${pm.name} sent ${request.command.type} that does not match its schema: ${problems
            .map((p) => `${p.pointer} ${p.message}`)
            .join('; ')}`,
        )
      }
      const commandId = reactionCommandId(pm.name, envelope.event_id, i)
      const correlation = envelope.metadata.correlation_id
      const trace = ctx.traceparent ?? envelope.metadata.traceparent
      await eventStore.append({
        envelopes: [
          commandEnvelope(request.command, request.payload, {
            commandId,
            actor: envelope.actor,
            service: handlerNames(domain).processManager(pm.name),
            ...(typeof correlation === 'string' ? { correlationId: correlation } : {}),
            ...(typeof trace === 'string' ? { traceparent: trace } : {}),
            ...(options.now === undefined ? {} : { now: options.now }),
          }),
        ],
      })
      sent.push(commandId)
    }
    return { commands: sent }
  }
}

const quote = (name: string): string => `"${name.replace(/"/g, '""')}"`

export const projectionContext = (
  tx: ProjectionContext['tx'],
  schema: string,
): ProjectionContext => ({ tx, schema, table: (name) => `${quote(schema)}.${quote(name)}` })

/** A projection's handlers (one event, and a batch), writing only in the worker's transaction. */
export const createProjectionHandlers = (options: {
  readonly domain: DomainDefinition
  readonly projection: SomeProjection
  readonly schema: string
}): { readonly handle: Handle; readonly handleBatch: HandleBatch } => {
  const { domain, projection, schema } = options
  const handleBatch: HandleBatch = async (envelopes, ctx: HandlerContext) => {
    if (ctx.tx === undefined) {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        `projection ${projection.name} runs in a transaction`,
      )
    }
    const events = envelopes.map((e) => delivered(projection.events, domain, e))
    const taken = events.filter((e) => e !== null)
    if (taken.length > 0) await projection.apply(taken as never, projectionContext(ctx.tx, schema))
    return events.map((e) => (e === null ? { ignored: true } : { applied: true }))
  }
  return {
    handleBatch,
    handle: async (envelope, ctx) => (await handleBatch([envelope], ctx))[0],
  }
}

/** Creates a projection's tables if missing. */
export const setupProjection = async (
  sql: Sql,
  projection: SomeProjection,
  schema: string,
): Promise<void> => {
  const ctx = projectionContext(sql, schema)
  await sql.exec(projection.setup({ schema, table: ctx.table }))
}

/**
 * Rebuilds a projection from the bucket alone: empties its tables and its registry records, then
 * applies every stored event it takes, in stored order, claimed and recorded done in the registry
 * in the same transaction, batch by batch — so its worker, started afterwards, treats them as
 * duplicates. Its worker must be stopped meanwhile (a live claim is refused).
 */
export const rebuildDeclaredProjection = async (options: {
  readonly domain: DomainDefinition
  readonly projection: SomeProjection
  readonly eventStore: EventStore
  readonly sql: Sql
  readonly schema: string
  readonly registry: ProcessedEventRegistry
  readonly batchSize?: number
  readonly onProgress?: (applied: number) => void
}): Promise<number> => {
  const { domain, projection, eventStore, sql, schema, registry } = options
  await setupProjection(sql, projection, schema)
  const { handleBatch } = createProjectionHandlers({ domain, projection, schema })
  const signal = new AbortController().signal
  const types = new Set(projection.events.map((e) => e.type))
  return replayIntoHandler({
    sql,
    schema,
    registry,
    handler: handlerNames(domain).projection(projection.name),
    reset: (tx) => projection.reset(projectionContext(tx, schema)),
    events: eventStore.readByDate(0, Number.POSITIVE_INFINITY),
    takes: (e) => e.metadata.kind === 'domain' && types.has(e.event_type),
    apply: (batch, tx) => handleBatch(batch, { tx, attempt: 1, signal }),
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  })
}
