import { createEnvelope, domainEventId, uuidV5 } from '../core/envelope.ts'
import type { EventEnvelope, StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import { isRejection } from './define.ts'
import type {
  SomeAggregate,
  SomeCommand,
  DecideContext,
  DomainDefinition,
  EventDefinition,
  EventMeta,
  Rejection,
} from './define.ts'

/**
 * The pure half of command handling, shared by the command processor, the OMS's inline mode and
 * the test kit: validating against a schema, the command envelope and its parsing, upcasting and
 * folding a stream, deciding, and the envelopes of a decision. No I/O.
 */

/** The event type of a stored rejection (an outcome, never given to `evolve`). */
export const COMMAND_REJECTED = 'COMMAND_REJECTED'

import { problemsOf } from '../http/validate.ts'

export { problemsOf }
export type { FieldProblem } from '../http/validate.ts'

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

// ---- commands as envelopes ----

export type CommandEnvelopeOptions = {
  readonly commandId: string
  readonly actor?: string | null
  readonly expectedSeq?: number | null
  readonly correlationId?: string
  readonly traceparent?: string
  /** Who sent it, e.g. `oms` or `process:transfers`. */
  readonly service?: string
  readonly now?: () => number
}

/** The command's envelope: stored on its target aggregate, carried on the aggregate's command topic. */
export const commandEnvelope = (
  command: SomeCommand,
  payload: Readonly<Record<string, unknown>>,
  opts: CommandEnvelopeOptions,
): EventEnvelope => {
  const aggregateId = (command.aggregateId as (c: unknown) => string)(payload)
  return createEnvelope(
    {
      event_id: opts.commandId,
      event_type: `${command.type}_REQUESTED`,
      aggregate_type: command.aggregate.type,
      aggregate_id: aggregateId,
      actor: opts.actor ?? null,
      data: {
        command_id: opts.commandId,
        command_type: command.type,
        expected_seq: opts.expectedSeq ?? null,
        ...(command.storage === null
          ? { payload }
          : (command.storage.data as (c: unknown) => Record<string, unknown>)(payload)),
      },
      metadata: {
        kind: 'command',
        command_type: command.type,
        command_id: opts.commandId,
        kafka_topic: command.aggregate.topics.commands,
        ordering_key: aggregateId,
        service: opts.service ?? 'oms',
        ...(opts.correlationId === undefined ? {} : { correlation_id: opts.correlationId }),
        ...(opts.traceparent === undefined ? {} : { traceparent: opts.traceparent }),
      },
    },
    opts.now,
  )
}

export type ParsedCommand =
  | {
      readonly ok: true
      readonly command: SomeCommand
      readonly payload: Readonly<Record<string, unknown>>
      readonly commandId: string
    }
  | { readonly ok: false; readonly reason: string }

/**
 * Reads a command back from its envelope with the scrutiny the OMS gave it (an envelope from
 * anywhere else gets the same), including that it is stored on the aggregate it targets.
 */
export const parseCommandEnvelope = (
  domain: DomainDefinition,
  envelope: StoredEnvelope,
): ParsedCommand => {
  const bad = (reason: string): ParsedCommand => ({ ok: false, reason })
  if (envelope.metadata.kind !== 'command') return bad('not a command envelope')
  const type = envelope.data['command_type']
  const command = domain.commands.find((c) => c.type === type)
  if (command === undefined) return bad(`unknown command type ${JSON.stringify(type)}`)
  if (envelope.event_type !== `${command.type}_REQUESTED`) {
    return bad(`event type ${envelope.event_type} does not match command type ${command.type}`)
  }
  let payload = envelope.data['payload']
  if (command.storage !== null) {
    const read = command.storage.read(envelope)
    if (!read.ok) return bad(read.reason)
    payload = read.command
  }
  const problems = problemsOf(command.schema, payload, '/data/payload')
  if (problems.length > 0) return bad(problems.map((p) => `${p.pointer}: ${p.message}`).join('; '))
  const p = payload as Record<string, unknown>
  let target: string
  try {
    target = (command.aggregateId as (c: unknown) => string)(p)
  } catch (error) {
    return bad(`aggregateId failed: ${(error as Error).message}`)
  }
  if (command.aggregate.type !== envelope.aggregate_type || target !== envelope.aggregate_id) {
    return bad(
      `the command is for ${command.aggregate.type} ${target} but is stored in ${envelope.aggregate_type} ${envelope.aggregate_id}`,
    )
  }
  const id = envelope.data['command_id']
  return {
    ok: true,
    command,
    payload: p,
    commandId: typeof id === 'string' ? id : envelope.event_id,
  }
}

/** The command id a process manager gives the i-th command an event leads to. */
export const reactionCommandId = (reaction: string, eventId: string, index: number): string =>
  uuidV5(`cairn:reaction:${reaction}:${eventId}:${index}`)

// ---- folding a stream ----

/** The event's data at the definition's current version. */
export const upcastData = (
  def: EventDefinition,
  storedVersion: string,
  data: Readonly<Record<string, unknown>>,
): Record<string, unknown> => {
  let v = Number(storedVersion)
  if (!Number.isSafeInteger(v) || v < 1 || v > def.version) {
    throw new CairnError(
      ErrorCode.INVALID_ENVELOPE,
      `event ${def.type} has schema_version ${JSON.stringify(storedVersion)}; this code knows 1 to ${def.version}`,
    )
  }
  let out = data as Record<string, unknown>
  for (; v < def.version; v++)
    out = (def.upcast[v] as (d: Record<string, unknown>) => Record<string, unknown>)(out)
  return out
}

export const metaOf = (e: StoredEnvelope): EventMeta => ({
  eventId: e.event_id,
  sequence: e.sequence_number,
  occurredAt: e.occurred_at,
  actor: e.actor,
})

/** The definition of a stored domain event of `aggregate`, or null for what `evolve` never sees. */
export const definitionOf = (
  aggregate: SomeAggregate,
  e: StoredEnvelope,
): EventDefinition | null => {
  if (e.metadata.kind !== 'domain' || e.event_type === COMMAND_REJECTED) return null
  const def = aggregate.events.find((d) => d.type === e.event_type)
  if (def === undefined) {
    throw new CairnError(
      ErrorCode.INVALID_ENVELOPE,
      `${aggregate.type} ${e.aggregate_id} #${e.sequence_number}: event type ${e.event_type} is not one of the aggregate's events`,
    )
  }
  return def
}

/** Folds stored envelopes (sequence order) into `state`; commands and rejections are skipped. */
export const foldStream = (
  aggregate: SomeAggregate,
  state: unknown,
  envelopes: readonly StoredEnvelope[],
): unknown => {
  const evolve = aggregate.evolve as (state: unknown, event: unknown, meta: EventMeta) => unknown
  let s = state
  for (const e of envelopes) {
    const def = definitionOf(aggregate, e)
    if (def === null) continue
    s = evolve(s, { type: def.type, data: upcastData(def, e.schema_version, e.data) }, metaOf(e))
  }
  return s
}

// ---- deciding ----

export type Decision =
  | {
      readonly outcome: 'events'
      readonly events: readonly { type: string; data: Record<string, unknown> }[]
    }
  | { readonly outcome: 'rejected'; readonly rejection: Rejection }

/**
 * Runs `decide` and checks what it returned: each event is one of the aggregate's, its data
 * valid against its schema. A decider that throws, or returns something else, is a bug in the
 * domain: the error says which command and why (the worker retries, then dead-letters it).
 */
export const runDecide = (
  command: SomeCommand,
  payload: Readonly<Record<string, unknown>>,
  state: unknown,
  ctx: Omit<DecideContext, 'loaded'> & { readonly loaded?: unknown },
): Decision => {
  const decide = command.decide as (c: unknown, s: unknown, ctx: unknown) => unknown
  const out = decide(payload, state, { ...ctx, loaded: ctx.loaded })
  if (isRejection(out)) return { outcome: 'rejected', rejection: out }
  if (!Array.isArray(out)) {
    throw new CairnError(
      ErrorCode.INVALID_ENVELOPE,
      `${command.type}: decide must return events or reject(code, reason)`,
    )
  }
  const events = (out as readonly { type: string; data: unknown }[]).map((e, i) => {
    const def = command.emits.find((d) => d.type === e?.type)
    if (def === undefined) {
      throw new CairnError(
        ErrorCode.INVALID_ENVELOPE,
        `${command.type}: decide returned event ${JSON.stringify(e?.type)} (#${i}), not one of ${command.emits === command.aggregate.events ? `${command.aggregate.type}'s events` : `the events it emits (${command.emits.map((d) => d.type).join(', ')})`}`,
      )
    }
    const problems = problemsOf(def.schema, e.data)
    if (problems.length > 0 || !isRecord(e.data)) {
      throw new CairnError(
        ErrorCode.INVALID_ENVELOPE,
        `${command.type}: event ${def.type} (#${i}) does not match its schema: ${problems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`,
      )
    }
    return { type: def.type, data: e.data }
  })
  return { outcome: 'events', events }
}

/** The id of the i-th event a command's decision stores: the same however often it is decided. */
export const decisionEventId = (commandId: string, aggregateId: string, index: number): string =>
  domainEventId(commandId, `#${index}`, aggregateId)

/**
 * The ids the first event of a command's decision may have (one, unless the domain's events are
 * `typed`): where an outcome stored by an earlier try is looked up.
 */
export const firstEventIds = (
  domain: DomainDefinition,
  command: SomeCommand,
  commandId: string,
  aggregateId: string,
): string[] =>
  domain.eventFormat === 'indexed'
    ? [decisionEventId(commandId, aggregateId, 0)]
    : [...command.emits.map((e) => e.type), COMMAND_REJECTED].map((type) =>
        domainEventId(commandId, type, aggregateId),
      )

export type DecisionEnvelopeOptions = {
  /** The `service` of the envelopes: the worker that decides (default `<domain>:commands`). */
  readonly service?: string
  /** The trace context of the envelopes (the deciding worker's span; default: the command's). */
  readonly traceparent?: string
  readonly now?: () => number
}

/** The envelopes of a decision, on the command's aggregate, with deterministic ids. */
export const decisionEnvelopes = (
  domain: DomainDefinition,
  command: SomeCommand,
  commandEnvelope: StoredEnvelope,
  commandId: string,
  decision: Decision,
  options: DecisionEnvelopeOptions = {},
): EventEnvelope[] => {
  const m = commandEnvelope.metadata
  const traceparent = options.traceparent ?? m.traceparent
  const aggregateId = commandEnvelope.aggregate_id
  const idOf = (index: number, type: string): string =>
    domain.eventFormat === 'indexed'
      ? decisionEventId(commandId, aggregateId, index)
      : domainEventId(commandId, type, aggregateId)
  const base = (index: number, type: string, data: Record<string, unknown>, version: number) =>
    createEnvelope(
      {
        event_id: idOf(index, type),
        event_type: type,
        aggregate_type: commandEnvelope.aggregate_type,
        aggregate_id: commandEnvelope.aggregate_id,
        actor: commandEnvelope.actor,
        data,
        schema_version: String(version),
        metadata: {
          kind: 'domain',
          kafka_topic: command.aggregate.topics.events,
          ordering_key: commandEnvelope.aggregate_id,
          command_id: commandId,
          ...(domain.eventFormat === 'indexed' ? { command_type: command.type } : {}),
          service: options.service ?? `${domain.name}:commands`,
          ...(typeof m.correlation_id === 'string' ? { correlation_id: m.correlation_id } : {}),
          ...(typeof traceparent === 'string' ? { traceparent } : {}),
        },
      },
      options.now,
    )
  if (decision.outcome === 'rejected') {
    const { code, reason, details } = decision.rejection
    return [
      base(
        0,
        COMMAND_REJECTED,
        { command_id: commandId, command_type: command.type, code, reason, ...details },
        1,
      ),
    ]
  }
  if (
    domain.eventFormat === 'typed' &&
    new Set(decision.events.map((e) => e.type)).size < decision.events.length
  ) {
    throw new CairnError(
      ErrorCode.INVALID_ENVELOPE,
      `${command.type}: a decision of a domain with typed events emits each event type at most once`,
    )
  }
  return decision.events.map((e, i) => {
    const def = command.aggregate.events.find((d) => d.type === e.type) as EventDefinition
    return base(i, e.type, e.data, def.version)
  })
}

/** What a command came to; the registry keeps it as the command's result (GET /commands/{id}). */
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

/** The result of a decision as stored. */
export const resultOf = (stored: readonly StoredEnvelope[]): CommandResult => {
  const events = stored.map((e) => ({
    event_id: e.event_id,
    event_type: e.event_type,
    aggregate_type: e.aggregate_type,
    aggregate_id: e.aggregate_id,
    sequence_number: e.sequence_number,
  }))
  const first = stored[0]
  if (first === undefined || first.event_type !== COMMAND_REJECTED)
    return { outcome: 'completed', events }
  const { code, reason } = first.data
  return {
    outcome: 'rejected',
    events,
    code: typeof code === 'string' ? code : 'REJECTED',
    reason: typeof reason === 'string' ? reason : 'rejected',
  }
}
