import { createEnvelope, uuidV5 } from '../core/envelope.ts'
import type { EventEnvelope } from '../core/envelope.ts'
import {
  AGGREGATE,
  LIMITS,
  TOPICS,
  classAggregateId,
  databaseAggregateId,
  describe,
  instanceAggregateId,
  isClassId,
  isDatabaseName,
  isInstanceId,
  isPropertyName,
  isPropertyType,
  PROPERTY_TYPES,
} from './model.ts'
import type { AggregateType, ClassDefinition, PropertyDef } from './model.ts'

/**
 * The commands of the reference domain and their parsers. The parsers check shape only (types,
 * unknown fields, ids, sizes); whether a command makes sense against the current state (does the
 * class exist, does the data fit it) is decided by the workers (decide.ts).
 */

/** A problem in a request: a JSON pointer into the body (or `#/path/<param>`) and a message. */
export type FieldProblem = { readonly pointer: string; readonly message: string }

export type Parsed<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly problems: FieldProblem[] }

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

// ---- helpers ----

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** RFC 6901 escaping of one reference token. */
const token = (key: string | number): string => String(key).replace(/~/g, '~0').replace(/\//g, '~1')

const ptr = (base: string, key: string | number): string => `${base}/${token(key)}`

const has = (o: Record<string, unknown>, key: string): boolean =>
  Object.prototype.hasOwnProperty.call(o, key)

/** Collects problems while reading an unknown body. */
type Problems = FieldProblem[]

const done = <T>(problems: Problems, value: () => T): Parsed<T> =>
  problems.length > 0 ? { ok: false, problems } : { ok: true, value: value() }

const shown = (key: string): string => (key.length > 64 ? `${key.slice(0, 64)}…` : key)

const objectBody = (
  body: unknown,
  allowed: readonly string[],
  problems: Problems,
): Record<string, unknown> | null => {
  if (!isRecord(body)) {
    problems.push({
      pointer: '',
      message: `the body must be a JSON object (got ${describe(body)})`,
    })
    return null
  }
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) {
      problems.push({
        pointer: ptr('', key),
        message: `unknown field "${shown(key)}" (allowed: ${allowed.join(', ')})`,
      })
    }
  }
  return body
}

const pathDb = (db: unknown, problems: Problems): db is string => {
  if (isDatabaseName(db)) return true
  problems.push({
    pointer: '#/path/db',
    message: `a database name is 1–63 characters: a lowercase letter, then lowercase letters, digits, "_" or "-" (got ${describe(db)})`,
  })
  return false
}

const classIdProblem = (v: unknown): string =>
  `a class id is 1–128 characters: a letter, then letters, digits or "_" (got ${describe(v)})`

const instanceIdProblem = (v: unknown): string =>
  `an instance id is 1–128 characters: a letter or digit, then letters, digits, "_", "." or "-" (got ${describe(v)})`

const pathClass = (classId: unknown, problems: Problems): classId is string => {
  if (isClassId(classId)) return true
  problems.push({ pointer: '#/path/class_id', message: classIdProblem(classId) })
  return false
}

const pathInstance = (instanceId: unknown, problems: Problems): instanceId is string => {
  if (isInstanceId(instanceId)) return true
  problems.push({ pointer: '#/path/instance_id', message: instanceIdProblem(instanceId) })
  return false
}

/** An optional text field that may be null; returns undefined when absent. */
const optionalText = (
  o: Record<string, unknown>,
  key: string,
  max: number,
  problems: Problems,
): string | null | undefined => {
  if (!has(o, key)) return undefined
  const v = o[key]
  if (v === null) return null
  if (typeof v !== 'string') {
    problems.push({
      pointer: ptr('', key),
      message: `must be a string or null (got ${describe(v)})`,
    })
    return undefined
  }
  if (v.length > max) {
    problems.push({
      pointer: ptr('', key),
      message: `must be at most ${max} characters (got ${v.length})`,
    })
    return undefined
  }
  return v
}

const PROPERTY_FIELDS = ['name', 'type', 'required', 'target_class', 'description'] as const

const parseProperties = (
  value: unknown,
  base: string,
  problems: Problems,
): PropertyDef[] | undefined => {
  if (!Array.isArray(value)) {
    problems.push({
      pointer: base,
      message: `must be an array of properties (got ${describe(value)})`,
    })
    return undefined
  }
  if (value.length > LIMITS.maxProperties) {
    problems.push({
      pointer: base,
      message: `at most ${LIMITS.maxProperties} properties (got ${value.length})`,
    })
    return undefined
  }
  const out: PropertyDef[] = []
  const seen = new Set<string>()
  value.forEach((item: unknown, i) => {
    const at = ptr(base, i)
    if (!isRecord(item)) {
      problems.push({
        pointer: at,
        message: `a property must be an object (got ${describe(item)})`,
      })
      return
    }
    const before = problems.length
    for (const key of Object.keys(item)) {
      if (!(PROPERTY_FIELDS as readonly string[]).includes(key)) {
        problems.push({
          pointer: ptr(at, key),
          message: `unknown field "${shown(key)}" (allowed: ${PROPERTY_FIELDS.join(', ')})`,
        })
      }
    }
    const { name, type, required, target_class: target, description } = item
    if (!isPropertyName(name)) {
      problems.push({
        pointer: ptr(at, 'name'),
        message: `a property name is 1–128 characters: a letter or "_", then letters, digits or "_" (got ${describe(name)})`,
      })
    } else if (seen.has(name)) {
      problems.push({ pointer: ptr(at, 'name'), message: `duplicate property name "${name}"` })
    } else {
      seen.add(name)
    }
    if (!isPropertyType(type)) {
      problems.push({
        pointer: ptr(at, 'type'),
        message: `must be one of ${PROPERTY_TYPES.join(', ')} (got ${describe(type)})`,
      })
    }
    if (has(item, 'required') && typeof required !== 'boolean') {
      problems.push({
        pointer: ptr(at, 'required'),
        message: `must be a boolean (got ${describe(required)})`,
      })
    }
    if (type === 'reference') {
      if (!isClassId(target)) {
        problems.push({
          pointer: ptr(at, 'target_class'),
          message: `a reference property needs target_class, the id of a class in the same database: ${classIdProblem(target)}`,
        })
      }
    } else if (has(item, 'target_class')) {
      problems.push({
        pointer: ptr(at, 'target_class'),
        message: 'target_class is only allowed on properties of type reference',
      })
    }
    if (
      has(item, 'description') &&
      !(typeof description === 'string' && description.length <= LIMITS.maxDescription)
    ) {
      problems.push({
        pointer: ptr(at, 'description'),
        message: `must be a string of at most ${LIMITS.maxDescription} characters`,
      })
    }
    if (problems.length > before) return
    out.push({
      name: name as string,
      type: type as PropertyDef['type'],
      required: required === true,
      ...(type === 'reference' ? { target_class: target as string } : {}),
      ...(typeof description === 'string' ? { description } : {}),
    })
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

const parseData = (
  value: unknown,
  problems: Problems,
  mode: 'create' | 'patch',
): InstanceData | undefined => {
  if (!isRecord(value)) {
    problems.push({ pointer: '/data', message: `must be a JSON object (got ${describe(value)})` })
    return undefined
  }
  const before = problems.length
  const keys = Object.keys(value)
  if (keys.length > LIMITS.maxProperties) {
    problems.push({
      pointer: '/data',
      message: `at most ${LIMITS.maxProperties} properties (got ${keys.length})`,
    })
    return undefined
  }
  for (const key of keys) {
    if (!isPropertyName(key)) {
      problems.push({
        pointer: ptr('/data', key),
        message: `"${shown(key)}" is not a valid property name (a letter or "_", then letters, digits or "_")`,
      })
    } else if (value[key] === null && mode === 'create') {
      problems.push({
        pointer: ptr('/data', key),
        message: 'null is only allowed in an update, where it removes the property; leave it out',
      })
    }
  }
  if (mode === 'patch' && keys.length === 0) {
    problems.push({ pointer: '/data', message: 'an update must change at least one property' })
  }
  if (tooDeep(value, LIMITS.maxDataDepth)) {
    problems.push({ pointer: '/data', message: `nested deeper than ${LIMITS.maxDataDepth} levels` })
  } else {
    let size = Infinity
    try {
      size = new TextEncoder().encode(JSON.stringify(value)).length
    } catch {
      // not representable as JSON: reported below as too large
    }
    if (size > LIMITS.maxDataBytes) {
      problems.push({
        pointer: '/data',
        message: `at most ${LIMITS.maxDataBytes} bytes of JSON (got ${Number.isFinite(size) ? size : 'more'})`,
      })
    }
  }
  return problems.length > before ? undefined : value
}

// ---- parsers ----

export const parseCreateDatabase = (body: unknown): Parsed<DomainCommand> => {
  const problems: Problems = []
  const o = objectBody(body, ['name', 'description'], problems)
  if (o === null) return { ok: false, problems }
  const name = o.name
  if (!isDatabaseName(name)) {
    problems.push({
      pointer: '/name',
      message: `a database name is 1–63 characters: a lowercase letter, then lowercase letters, digits, "_" or "-" (got ${describe(name)})`,
    })
  }
  const description = optionalText(o, 'description', LIMITS.maxDescription, problems)
  return done(problems, () => ({
    type: 'CREATE_DATABASE' as const,
    db: name as string,
    payload: { name: name as string, description: description ?? null },
  }))
}

export const parseDeleteDatabase = (db: unknown): Parsed<DomainCommand> => {
  const problems: Problems = []
  pathDb(db, problems)
  return done(problems, () => ({ type: 'DELETE_DATABASE' as const, db: db as string }))
}

export const parseCreateClass = (db: unknown, body: unknown): Parsed<DomainCommand> => {
  const problems: Problems = []
  pathDb(db, problems)
  const o = objectBody(body, ['id', 'label', 'description', 'properties'], problems)
  if (o === null) return { ok: false, problems }
  if (!isClassId(o.id)) problems.push({ pointer: '/id', message: classIdProblem(o.id) })
  const label = optionalText(o, 'label', LIMITS.maxLabel, problems)
  const description = optionalText(o, 'description', LIMITS.maxDescription, problems)
  const properties = has(o, 'properties')
    ? parseProperties(o.properties, '/properties', problems)
    : []
  return done(problems, () => ({
    type: 'CREATE_ONTOLOGY_CLASS' as const,
    db: db as string,
    classId: o.id as string,
    payload: {
      id: o.id as string,
      label: label ?? null,
      description: description ?? null,
      properties: properties ?? [],
    },
  }))
}

export const parseUpdateClass = (
  db: unknown,
  classId: unknown,
  body: unknown,
): Parsed<DomainCommand> => {
  const problems: Problems = []
  pathDb(db, problems)
  pathClass(classId, problems)
  const o = objectBody(body, ['label', 'description', 'properties'], problems)
  if (o === null) return { ok: false, problems }
  const label = optionalText(o, 'label', LIMITS.maxLabel, problems)
  const description = optionalText(o, 'description', LIMITS.maxDescription, problems)
  const properties = has(o, 'properties')
    ? parseProperties(o.properties, '/properties', problems)
    : undefined
  if (!has(o, 'label') && !has(o, 'description') && !has(o, 'properties')) {
    problems.push({
      pointer: '',
      message: 'an update must give at least one of label, description, properties',
    })
  }
  return done(problems, () => ({
    type: 'UPDATE_ONTOLOGY_CLASS' as const,
    db: db as string,
    classId: classId as string,
    payload: {
      ...(label !== undefined ? { label } : {}),
      ...(description !== undefined ? { description } : {}),
      ...(properties !== undefined ? { properties } : {}),
    },
  }))
}

export const parseDeleteClass = (db: unknown, classId: unknown): Parsed<DomainCommand> => {
  const problems: Problems = []
  pathDb(db, problems)
  pathClass(classId, problems)
  return done(problems, () => ({
    type: 'DELETE_ONTOLOGY_CLASS' as const,
    db: db as string,
    classId: classId as string,
  }))
}

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
  const problems: Problems = []
  pathDb(db, problems)
  pathClass(classId, problems)
  const o = objectBody(body, ['id', 'data'], problems)
  if (o === null) return { ok: false, problems }
  if (has(o, 'id') && !isInstanceId(o.id)) {
    problems.push({ pointer: '/id', message: instanceIdProblem(o.id) })
  }
  if (!has(o, 'data')) problems.push({ pointer: '/data', message: 'data is required' })
  const data = has(o, 'data') ? parseData(o.data, problems, 'create') : undefined
  return done(problems, () => ({
    type: 'CREATE_INSTANCE' as const,
    db: db as string,
    classId: classId as string,
    instanceId: has(o, 'id') ? (o.id as string) : derivedInstanceId(String(commandId)),
    payload: { data: data ?? {} },
  }))
}

export const parseUpdateInstance = (
  db: unknown,
  classId: unknown,
  instanceId: unknown,
  body: unknown,
): Parsed<DomainCommand> => {
  const problems: Problems = []
  pathDb(db, problems)
  pathClass(classId, problems)
  pathInstance(instanceId, problems)
  const o = objectBody(body, ['data'], problems)
  if (o === null) return { ok: false, problems }
  if (!has(o, 'data')) problems.push({ pointer: '/data', message: 'data is required' })
  const data = has(o, 'data') ? parseData(o.data, problems, 'patch') : undefined
  return done(problems, () => ({
    type: 'UPDATE_INSTANCE' as const,
    db: db as string,
    classId: classId as string,
    instanceId: instanceId as string,
    payload: { data: data ?? {} },
  }))
}

export const parseDeleteInstance = (
  db: unknown,
  classId: unknown,
  instanceId: unknown,
): Parsed<DomainCommand> => {
  const problems: Problems = []
  pathDb(db, problems)
  pathClass(classId, problems)
  pathInstance(instanceId, problems)
  return done(problems, () => ({
    type: 'DELETE_INSTANCE' as const,
    db: db as string,
    classId: classId as string,
    instanceId: instanceId as string,
  }))
}

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
