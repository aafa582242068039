import { createEnvelope, uuidV5 } from '../core/envelope.ts'
import type { EventEnvelope } from '../core/envelope.ts'
import type { TSchema } from 'typebox'
import { problemsOf } from '../http/validate.ts'
import type { FieldProblem } from '../http/validate.ts'
import {
  AGGREGATE,
  LIMITS,
  TOPICS,
  classAggregateId,
  databaseAggregateId,
  instanceAggregateId,
} from './model.ts'
import type { AggregateType, ClassDefinition, PropertyDef } from './model.ts'
import {
  ClassId,
  CreateClassBody,
  CreateDatabaseBody,
  CreateInstanceBody,
  DatabaseName,
  InstanceId,
  UpdateClassBody,
  UpdateInstanceBody,
} from './requests.ts'
import type {
  CreateClassRequest,
  CreateDatabaseRequest,
  CreateInstanceRequest,
  UpdateClassRequest,
  UpdateInstanceRequest,
} from './requests.ts'

/**
 * The commands of the reference domain and their parsers. The parsers check shape only, with the
 * request schemas of requests.ts (types, unknown fields, ids, sizes); whether a command makes sense against the current state (does the
 * class exist, does the data fit it) is decided by the workers (decide.ts).
 */

export type { FieldProblem } from '../http/validate.ts'

export type Parsed<T> =
  | { readonly ok: true; readonly value: T }
  | {
      readonly ok: false
      readonly problems: FieldProblem[]
      /**
       * The request fits its schema but breaks a rule the schema states only in words (unique
       * property names, data depth and size): a 422 rather than a 400.
       */
      readonly beyondSchema?: true
    }

export type InstanceData = Readonly<Record<string, unknown>>

export type ClassPatch = {
  readonly label?: string | null
  readonly description?: string | null
  readonly properties?: readonly PropertyDef[]
}

export type DomainCommand =
  | {
      readonly type: 'CREATE_DATABASE'
      readonly db: string
      readonly payload: { readonly name: string; readonly description: string | null }
    }
  | { readonly type: 'DELETE_DATABASE'; readonly db: string }
  | {
      readonly type: 'CREATE_ONTOLOGY_CLASS'
      readonly db: string
      readonly classId: string
      readonly payload: ClassDefinition
    }
  | {
      readonly type: 'UPDATE_ONTOLOGY_CLASS'
      readonly db: string
      readonly classId: string
      readonly payload: ClassPatch
    }
  | { readonly type: 'DELETE_ONTOLOGY_CLASS'; readonly db: string; readonly classId: string }
  | {
      readonly type: 'CREATE_INSTANCE'
      readonly db: string
      readonly classId: string
      readonly instanceId: string
      readonly payload: { readonly data: InstanceData }
    }
  | {
      readonly type: 'UPDATE_INSTANCE'
      readonly db: string
      readonly classId: string
      readonly instanceId: string
      /** A JSON merge patch at the top level: `null` removes a property. */
      readonly payload: { readonly data: InstanceData }
    }
  | {
      readonly type: 'DELETE_INSTANCE'
      readonly db: string
      readonly classId: string
      readonly instanceId: string
    }

export type CommandType = DomainCommand['type']

export const COMMAND_TYPES: readonly CommandType[] = [
  'CREATE_DATABASE',
  'DELETE_DATABASE',
  'CREATE_ONTOLOGY_CLASS',
  'UPDATE_ONTOLOGY_CLASS',
  'DELETE_ONTOLOGY_CLASS',
  'CREATE_INSTANCE',
  'UPDATE_INSTANCE',
  'DELETE_INSTANCE',
]

export const isCommandType = (v: unknown): v is CommandType =>
  typeof v === 'string' && (COMMAND_TYPES as readonly string[]).includes(v)

// ---- parsers: the request schemas (requests.ts), then what a schema cannot say ----

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const has = (o: Record<string, unknown>, key: string): boolean =>
  Object.prototype.hasOwnProperty.call(o, key)

type Problems = FieldProblem[]

const done = <T>(problems: Problems, value: () => T): Parsed<T> =>
  problems.length > 0 ? { ok: false, problems } : { ok: true, value: value() }

/** The path's ids against their schemas (`#/path/<name>`). */
const pathProblems = (ids: Readonly<Record<string, unknown>>): Problems => {
  const schemas: Readonly<Record<string, TSchema>> = {
    db: DatabaseName,
    class_id: ClassId,
    instance_id: InstanceId,
  }
  const out: Problems = []
  for (const [name, value] of Object.entries(ids)) {
    const schema = schemas[name]
    if (schema !== undefined) out.push(...problemsOf(schema, value, `#/path/${name}`))
  }
  return out
}

/** A class's property names are unique (JSON Schema's uniqueItems compares whole items). */
const duplicateNames = (properties: unknown): Problems => {
  if (!Array.isArray(properties)) return []
  const seen = new Set<string>()
  const out: Problems = []
  properties.forEach((p: unknown, i) => {
    if (!isRecord(p) || typeof p.name !== 'string') return
    if (seen.has(p.name)) {
      out.push({
        pointer: `/properties/${i}/name`,
        message: `duplicate property name "${p.name}"`,
      })
    }
    seen.add(p.name)
  })
  return out
}

/** Depth of nested arrays/objects, stopping early past the limit (no deep recursion). */
const tooDeep = (value: unknown, limit: number): boolean => {
  let level: unknown[] = [value]
  for (let depth = 0; level.length > 0; depth++) {
    if (depth > limit) return true
    const next: unknown[] = []
    for (const v of level) {
      if (Array.isArray(v)) next.push(...(v as unknown[]))
      else if (isRecord(v)) next.push(...Object.values(v))
    }
    level = next
  }
  return false
}

/** Instance data's depth and size, which its schema describes in words only. */
const dataLimits = (body: unknown): Problems => {
  if (!isRecord(body) || !isRecord(body.data)) return []
  const value = body.data
  if (tooDeep(value, LIMITS.maxDataDepth)) {
    return [{ pointer: '/data', message: `nested deeper than ${LIMITS.maxDataDepth} levels` }]
  }
  let size = Infinity
  try {
    size = new TextEncoder().encode(JSON.stringify(value)).length
  } catch {
    // not representable as JSON: reported as too large
  }
  return size > LIMITS.maxDataBytes
    ? [
        {
          pointer: '/data',
          message: `at most ${LIMITS.maxDataBytes} bytes of JSON (got ${Number.isFinite(size) ? size : 'more'})`,
        },
      ]
    : []
}

type BodyCheck = { readonly problems: Problems; readonly beyondSchema: boolean }

/** The body's schema problems, else the rules the schema states only in words. */
const checkBody = (schema: TSchema, body: unknown): BodyCheck => {
  const problems = problemsOf(schema, body)
  if (problems.length > 0) return { problems, beyondSchema: false }
  const rules = [
    ...duplicateNames(isRecord(body) ? body.properties : undefined),
    ...dataLimits(body),
  ]
  return { problems: rules, beyondSchema: rules.length > 0 }
}

/** A command from the path's ids and the body, or every problem of both, in document order. */
const parsed = <T>(path: Problems, body: BodyCheck, value: () => T): Parsed<T> => {
  if (path.length === 0 && body.problems.length === 0) return { ok: true, value: value() }
  const problems = [...path, ...body.problems].sort((a, b) => comparePointers(a.pointer, b.pointer))
  return path.length === 0 && body.beyondSchema
    ? { ok: false, problems, beyondSchema: true }
    : { ok: false, problems }
}

/** Document order: by each step of the pointer, array indexes as numbers. */
const comparePointers = (a: string, b: string): number => {
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const p = x[i] as string
    const q = y[i] as string
    if (p === q) continue
    const m = Number(p)
    const n = Number(q)
    return /^\d+$/.test(p) && /^\d+$/.test(q) ? m - n : 0
  }
  return x.length - y.length
}

export const parseCreateDatabase = (body: unknown): Parsed<DomainCommand> => {
  return parsed([], checkBody(CreateDatabaseBody, body), () => {
    const b = body as CreateDatabaseRequest
    return {
      type: 'CREATE_DATABASE' as const,
      db: b.name,
      payload: { name: b.name, description: b.description ?? null },
    }
  })
}

export const parseDeleteDatabase = (db: unknown): Parsed<DomainCommand> =>
  done(pathProblems({ db }), () => ({ type: 'DELETE_DATABASE' as const, db: db as string }))

const propertyDefs = (properties: CreateClassRequest['properties']): PropertyDef[] =>
  (properties ?? []).map((p) => ({
    name: p.name,
    type: p.type,
    required: p.required === true,
    ...(p.type === 'reference' && p.target_class !== undefined
      ? { target_class: p.target_class }
      : {}),
    ...(p.description !== undefined ? { description: p.description } : {}),
  }))

export const parseCreateClass = (db: unknown, body: unknown): Parsed<DomainCommand> => {
  return parsed(pathProblems({ db }), checkBody(CreateClassBody, body), () => {
    const b = body as CreateClassRequest
    return {
      type: 'CREATE_ONTOLOGY_CLASS' as const,
      db: db as string,
      classId: b.id,
      payload: {
        id: b.id,
        label: b.label ?? null,
        description: b.description ?? null,
        properties: propertyDefs(b.properties),
      },
    }
  })
}

export const parseUpdateClass = (
  db: unknown,
  classId: unknown,
  body: unknown,
): Parsed<DomainCommand> => {
  return parsed(pathProblems({ db, class_id: classId }), checkBody(UpdateClassBody, body), () => {
    const b = body as UpdateClassRequest
    return {
      type: 'UPDATE_ONTOLOGY_CLASS' as const,
      db: db as string,
      classId: classId as string,
      payload: {
        ...(has(b, 'label') ? { label: b.label ?? null } : {}),
        ...(has(b, 'description') ? { description: b.description ?? null } : {}),
        ...(b.properties !== undefined ? { properties: propertyDefs(b.properties) } : {}),
      },
    }
  })
}

export const parseDeleteClass = (db: unknown, classId: unknown): Parsed<DomainCommand> =>
  done(pathProblems({ db, class_id: classId }), () => ({
    type: 'DELETE_ONTOLOGY_CLASS' as const,
    db: db as string,
    classId: classId as string,
  }))

/**
 * The instance id a create without `id` gets: derived from the command id, so a retried request
 * (same Idempotency-Key, same command id) builds the identical command.
 */
export const derivedInstanceId = (commandId: string): string =>
  uuidV5(`cairn:instance-id:${commandId}`).replace(/-/g, '').slice(0, 16)

export const parseCreateInstance = (
  db: unknown,
  classId: unknown,
  body: unknown,
  commandId: string,
): Parsed<DomainCommand> => {
  return parsed(
    pathProblems({ db, class_id: classId }),
    checkBody(CreateInstanceBody, body),
    () => {
      const b = body as CreateInstanceRequest
      return {
        type: 'CREATE_INSTANCE' as const,
        db: db as string,
        classId: classId as string,
        instanceId: b.id ?? derivedInstanceId(String(commandId)),
        payload: { data: b.data },
      }
    },
  )
}

export const parseUpdateInstance = (
  db: unknown,
  classId: unknown,
  instanceId: unknown,
  body: unknown,
): Parsed<DomainCommand> => {
  return parsed(
    pathProblems({ db, class_id: classId, instance_id: instanceId }),
    checkBody(UpdateInstanceBody, body),
    () => ({
      type: 'UPDATE_INSTANCE' as const,
      db: db as string,
      classId: classId as string,
      instanceId: instanceId as string,
      payload: { data: (body as UpdateInstanceRequest).data },
    }),
  )
}

export const parseDeleteInstance = (
  db: unknown,
  classId: unknown,
  instanceId: unknown,
): Parsed<DomainCommand> =>
  done(pathProblems({ db, class_id: classId, instance_id: instanceId }), () => ({
    type: 'DELETE_INSTANCE' as const,
    db: db as string,
    classId: classId as string,
    instanceId: instanceId as string,
  }))

// ---- envelopes ----

export type CommandTarget = {
  readonly aggregateType: AggregateType
  readonly aggregateId: string
  readonly topic: string
}

export const commandTarget = (cmd: DomainCommand): CommandTarget => {
  switch (cmd.type) {
    case 'CREATE_DATABASE':
    case 'DELETE_DATABASE':
      return {
        aggregateType: AGGREGATE.database,
        aggregateId: databaseAggregateId(cmd.db),
        topic: TOPICS.databaseCommands,
      }
    case 'CREATE_ONTOLOGY_CLASS':
    case 'UPDATE_ONTOLOGY_CLASS':
    case 'DELETE_ONTOLOGY_CLASS':
      return {
        aggregateType: AGGREGATE.ontologyClass,
        aggregateId: classAggregateId(cmd.db, cmd.classId),
        topic: TOPICS.ontologyCommands,
      }
    case 'CREATE_INSTANCE':
    case 'UPDATE_INSTANCE':
    case 'DELETE_INSTANCE':
      return {
        aggregateType: AGGREGATE.instance,
        aggregateId: instanceAggregateId(cmd.db, cmd.classId, cmd.instanceId),
        topic: TOPICS.instanceCommands,
      }
  }
}

/** The ids a command names, as its envelope and its events' data hold them. */
export const commandIds = (cmd: DomainCommand): Record<string, unknown> => ({
  db_name: cmd.db,
  ...('classId' in cmd ? { class_id: cmd.classId } : {}),
  ...('instanceId' in cmd ? { instance_id: cmd.instanceId } : {}),
})

/** The command in its envelope's data, after `command_id`, `command_type` and `expected_seq`. */
export const commandData = (cmd: DomainCommand): Record<string, unknown> => ({
  ...commandIds(cmd),
  payload: 'payload' in cmd ? cmd.payload : {},
})

export type CommandEnvelopeOptions = {
  readonly commandId: string
  readonly expectedSeq: number
  readonly actor: string | null
  readonly correlationId?: string
  readonly traceparent?: string
  readonly now?: () => number
}

/**
 * The stored form of a command (kind `command`, `<TYPE>_REQUESTED`, event id = command id).
 * Identical for identical inputs except `occurred_at` and `traceparent`, which the store's
 * idempotency hash ignores.
 */
export const commandEnvelope = (
  cmd: DomainCommand,
  opts: CommandEnvelopeOptions,
): EventEnvelope => {
  const target = commandTarget(cmd)
  return createEnvelope(
    {
      event_id: opts.commandId,
      event_type: `${cmd.type}_REQUESTED`,
      aggregate_type: target.aggregateType,
      aggregate_id: target.aggregateId,
      actor: opts.actor,
      data: {
        command_id: opts.commandId,
        command_type: cmd.type,
        expected_seq: opts.expectedSeq,
        ...commandData(cmd),
      },
      metadata: {
        kind: 'command',
        command_type: cmd.type,
        command_id: opts.commandId,
        kafka_topic: target.topic,
        ordering_key: target.aggregateId,
        service: 'oms',
        ...(opts.correlationId !== undefined ? { correlation_id: opts.correlationId } : {}),
        ...(opts.traceparent !== undefined ? { traceparent: opts.traceparent } : {}),
      },
    },
    opts.now,
  )
}
