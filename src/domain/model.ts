/**
 * The reference domain's vocabulary: aggregates, topics, handler names, id rules and the shape of
 * a class definition (issue 6). Pure data and functions; every other domain file builds on it.
 */
export const AGGREGATE = {
  database: 'Database',
  ontologyClass: 'OntologyClass',
  instance: 'Instance',
} as const

export type AggregateType = (typeof AGGREGATE)[keyof typeof AGGREGATE]

/** Database and class domain events both go to `ontology_events` (as in the original). */
export const TOPICS = {
  databaseCommands: 'database_commands',
  ontologyCommands: 'ontology_commands',
  instanceCommands: 'instance_commands',
  ontologyEvents: 'ontology_events',
  instanceEvents: 'instance_events',
} as const

export const HANDLERS = {
  ontology: 'ontology_worker',
  instance: 'instance_worker',
  projection: 'projection_worker',
} as const

export const GROUPS = {
  ontology: 'ontology-worker-group',
  instance: 'instance-worker-group',
  projection: 'projection-worker-group',
} as const

/** The worker (registry handler name) that decides commands of an aggregate type. */
export const commandHandlerFor = (aggregateType: string): string =>
  aggregateType === AGGREGATE.instance ? HANDLERS.instance : HANDLERS.ontology

/** Id rules. None allows `:`, so the aggregate ids below split unambiguously. */
export const DATABASE_NAME = /^[a-z][a-z0-9_-]{0,62}$/
export const CLASS_ID = /^[A-Za-z][A-Za-z0-9_]{0,127}$/
export const INSTANCE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
export const PROPERTY_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/

export const isDatabaseName = (v: unknown): v is string =>
  typeof v === 'string' && DATABASE_NAME.test(v)
export const isClassId = (v: unknown): v is string => typeof v === 'string' && CLASS_ID.test(v)
export const isInstanceId = (v: unknown): v is string =>
  typeof v === 'string' && INSTANCE_ID.test(v)
/** `__proto__` is refused: data objects are built from these names. */
export const isPropertyName = (v: unknown): v is string =>
  typeof v === 'string' && PROPERTY_NAME.test(v) && v !== '__proto__'

export const databaseAggregateId = (db: string): string => db
export const classAggregateId = (db: string, classId: string): string => `${db}:${classId}`
export const instanceAggregateId = (db: string, classId: string, instanceId: string): string =>
  `${db}:${classId}:${instanceId}`

export const PROPERTY_TYPES = [
  'string',
  'integer',
  'number',
  'boolean',
  'datetime',
  'reference',
] as const

export type PropertyType = (typeof PROPERTY_TYPES)[number]

export const isPropertyType = (v: unknown): v is PropertyType =>
  typeof v === 'string' && (PROPERTY_TYPES as readonly string[]).includes(v)

export type PropertyDef = {
  readonly name: string
  readonly type: PropertyType
  readonly required: boolean
  /** The referenced class (same database); present iff `type` is `reference`. */
  readonly target_class?: string
  readonly description?: string
}

export type ClassDefinition = {
  readonly id: string
  readonly label: string | null
  readonly description: string | null
  readonly properties: readonly PropertyDef[]
}

/** Bounds that keep one command (and its events) small. */
export const LIMITS = {
  maxProperties: 256,
  maxLabel: 256,
  maxDescription: 4096,
  /** Bytes of the JSON of an instance's data. */
  maxDataBytes: 256 * 1024,
  /** Depth of nested JSON inside instance data. */
  maxDataDepth: 32,
} as const

/** ISO-8601 date-time with an explicit offset (`Z` or `±hh:mm`). */
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/

export const isDatetime = (v: unknown): v is string =>
  typeof v === 'string' && DATETIME.test(v) && !Number.isNaN(Date.parse(v))

/** Checks a value against a property type, returning a readable problem or null. */
export const typeProblem = (def: PropertyDef, value: unknown): string | null => {
  switch (def.type) {
    case 'string':
      return typeof value === 'string' ? null : `must be a string (got ${describe(value)})`
    case 'integer':
      return Number.isSafeInteger(value) ? null : `must be an integer (got ${describe(value)})`
    case 'number':
      return typeof value === 'number' && Number.isFinite(value)
        ? null
        : `must be a finite number (got ${describe(value)})`
    case 'boolean':
      return typeof value === 'boolean' ? null : `must be a boolean (got ${describe(value)})`
    case 'datetime':
      return isDatetime(value)
        ? null
        : `must be an ISO-8601 date-time with an offset, e.g. 2026-01-31T12:00:00Z (got ${describe(value)})`
    case 'reference':
      return isInstanceId(value)
        ? null
        : `must be the id of a ${def.target_class ?? ''} instance (got ${describe(value)})`
  }
}

/** A short description of a value for error messages. */
export const describe = (value: unknown): string => {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') {
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value
    return `the string ${JSON.stringify(shown)}`
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${typeof value} ${String(value)}`
  }
  return typeof value
}
