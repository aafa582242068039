import type { StoredEnvelope } from '../core/envelope.ts'
import { commandIds } from './commands.ts'
import type { ClassPatch, CommandType, DomainCommand, InstanceData } from './commands.ts'
import { isPropertyType, typeProblem } from './model.ts'
import type { ClassDefinition, PropertyDef } from './model.ts'

/**
 * Deciding, purely: the state of an aggregate is the fold of its domain events; a command and the
 * states it depends on give exactly one domain event (its success event or COMMAND_REJECTED).
 *
 * Generations make deletes cascade without touching the children's streams: a database's
 * generation is the sequence number of its DATABASE_CREATED; a class records the database
 * generation it was created under and its own generation (the sequence of its
 * ONTOLOGY_CLASS_CREATED); an instance records its class's generation. A child is live only if its
 * own stream says so and its recorded generation is its live parent's current one, so deleting
 * (or re-creating) a parent makes every child vanish at once.
 */

export type DatabaseState = {
  readonly name: string
  readonly description: string | null
  readonly generation: number
}

export type ClassState = {
  readonly definition: ClassDefinition
  readonly generation: number
  readonly db_generation: number
}

export type InstanceState = {
  readonly data: InstanceData
  readonly class_generation: number
  readonly db_generation: number
}

export const REJECTION = {
  databaseNotFound: 'database_not_found',
  classNotFound: 'class_not_found',
  alreadyExists: 'already_exists',
  notFound: 'not_found',
  validationFailed: 'validation_failed',
  danglingReference: 'dangling_reference',
  invalidCommand: 'invalid_command',
} as const

export type RejectionCode = (typeof REJECTION)[keyof typeof REJECTION]

export const COMMAND_REJECTED = 'COMMAND_REJECTED'

/** The event a command emits when it succeeds. */
export const SUCCESS_EVENT: Readonly<Record<CommandType, string>> = {
  CREATE_DATABASE: 'DATABASE_CREATED',
  DELETE_DATABASE: 'DATABASE_DELETED',
  CREATE_ONTOLOGY_CLASS: 'ONTOLOGY_CLASS_CREATED',
  UPDATE_ONTOLOGY_CLASS: 'ONTOLOGY_CLASS_UPDATED',
  DELETE_ONTOLOGY_CLASS: 'ONTOLOGY_CLASS_DELETED',
  CREATE_INSTANCE: 'INSTANCE_CREATED',
  UPDATE_INSTANCE: 'INSTANCE_UPDATED',
  DELETE_INSTANCE: 'INSTANCE_DELETED',
}

// ---- folding ----

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const text = (v: unknown): string | null => (typeof v === 'string' ? v : null)
const int = (v: unknown): number => (Number.isSafeInteger(v) ? (v as number) : 0)

const propertiesOf = (v: unknown): PropertyDef[] =>
  Array.isArray(v)
    ? v.filter(
        (p): p is PropertyDef =>
          isRecord(p) && typeof p.name === 'string' && isPropertyType(p.type),
      )
    : []

const definitionOf = (data: Readonly<Record<string, unknown>>): ClassDefinition => ({
  id: text(data.class_id) ?? '',
  label: text(data.label),
  description: text(data.description),
  properties: propertiesOf(data.properties),
})

/** An event as `evolve` takes it (application/define.ts), and what it uses of the stored facts. */
type Evolve<S> = (
  state: S,
  event: { readonly type: string; readonly data: Readonly<Record<string, unknown>> },
  meta: { readonly sequence: number },
) => S

const foldWith =
  <S>(evolve: Evolve<S | null>) =>
  (events: readonly StoredEnvelope[]): S | null =>
    events
      .filter((e) => e.metadata.kind === 'domain')
      .reduce<S | null>(
        (s, e) => evolve(s, { type: e.event_type, data: e.data }, { sequence: e.sequence_number }),
        null,
      )

/** A database's state by its own stream (null: never created, or deleted). */
export const evolveDatabase: Evolve<DatabaseState | null> = (state, { type, data }, meta) => {
  if (type === 'DATABASE_CREATED') {
    return {
      name: text(data.name) ?? text(data.db_name) ?? '',
      description: text(data.description),
      generation: meta.sequence,
    }
  }
  return type === 'DATABASE_DELETED' ? null : state
}

/** A class's state by its own stream; whether it is live also depends on its database. */
export const evolveClass: Evolve<ClassState | null> = (state, { type, data }, meta) => {
  if (type === 'ONTOLOGY_CLASS_CREATED') {
    return {
      definition: definitionOf(data),
      generation: meta.sequence,
      db_generation: int(data.db_generation),
    }
  }
  if (type === 'ONTOLOGY_CLASS_UPDATED' && state !== null) {
    return { ...state, definition: definitionOf(data) }
  }
  return type === 'ONTOLOGY_CLASS_DELETED' ? null : state
}

/** An instance's state by its own stream; whether it is live also depends on its class. */
export const evolveInstance: Evolve<InstanceState | null> = (state, { type, data }) => {
  if (type === 'INSTANCE_CREATED' || type === 'INSTANCE_UPDATED') {
    return {
      data: isRecord(data.data) ? data.data : {},
      class_generation: int(data.class_generation),
      db_generation: int(data.db_generation),
    }
  }
  return type === 'INSTANCE_DELETED' ? null : state
}

export const foldDatabase = foldWith(evolveDatabase)
export const foldClass = foldWith(evolveClass)
export const foldInstance = foldWith(evolveInstance)

/** The class if it is live under this (live) database. */
export const liveClass = (cls: ClassState | null, db: DatabaseState | null): ClassState | null =>
  cls !== null && db !== null && cls.db_generation === db.generation ? cls : null

/** The instance if it is live under this (live) class. */
export const liveInstance = (
  inst: InstanceState | null,
  cls: ClassState | null,
): InstanceState | null =>
  inst !== null && cls !== null && inst.class_generation === cls.generation ? inst : null

// ---- deciding ----

/**
 * What a decision sees: the live states (already checked against their parents' generations) and
 * the sequence number its event will get (the aggregate's current sequence + 1).
 */
export type World = {
  readonly nextSeq: number
  readonly database: DatabaseState | null
  /** For class and instance commands: the command's class, if live. */
  readonly cls?: ClassState | null
  /** For instance commands: the instance, if live. */
  readonly instance?: InstanceState | null
  /** Live classes of the database by id (the ones a command refers to; missing = not live). */
  readonly classes?: ReadonlyMap<string, ClassState>
  /** Live instances by `${classId}:${instanceId}` (the ones referenced; missing = not live). */
  readonly instances?: ReadonlySet<string>
}

export type Decision =
  | {
      readonly outcome: 'completed'
      readonly eventType: string
      readonly data: Record<string, unknown>
    }
  | {
      readonly outcome: 'rejected'
      readonly eventType: typeof COMMAND_REJECTED
      readonly code: RejectionCode
      readonly reason: string
      readonly data: Record<string, unknown>
    }

const reject = (
  cmd: DomainCommand,
  commandId: string,
  code: RejectionCode,
  reason: string,
  aggregateExists: boolean,
): Decision => ({
  outcome: 'rejected',
  eventType: COMMAND_REJECTED,
  code,
  reason,
  data: {
    command_id: commandId,
    command_type: cmd.type,
    code,
    reason,
    aggregate_exists: aggregateExists,
    ...commandIds(cmd),
  },
})

const complete = (
  cmd: DomainCommand,
  commandId: string,
  data: Record<string, unknown>,
): Decision => ({
  outcome: 'completed',
  eventType: SUCCESS_EVENT[cmd.type],
  data: { command_id: commandId, ...commandIds(cmd), ...data },
})

/** JSON merge patch at the top level: `null` removes a property, anything else replaces it. */
export const mergeData = (base: InstanceData, patch: InstanceData): Record<string, unknown> =>
  Object.fromEntries(
    [...Object.entries(base).filter(([k]) => !Object.hasOwn(patch, k)), ...Object.entries(patch)]
      .filter(([, v]) => v !== null)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  )

/** The class definition after a partial update (given fields replace). */
export const patchClass = (def: ClassDefinition, patch: ClassPatch): ClassDefinition => ({
  id: def.id,
  label: patch.label !== undefined ? patch.label : def.label,
  description: patch.description !== undefined ? patch.description : def.description,
  properties: patch.properties ?? def.properties,
})

/** The class ids a class definition refers to (other than itself). */
export const referencedClasses = (def: ClassDefinition): string[] => [
  ...new Set(
    def.properties.flatMap((p) =>
      p.type === 'reference' && p.target_class !== undefined && p.target_class !== def.id
        ? [p.target_class]
        : [],
    ),
  ),
]

/** The references in instance data that are well-typed: `{ classId, instanceId }` per property. */
export const referencesIn = (
  def: ClassDefinition,
  data: InstanceData,
): { readonly property: string; readonly classId: string; readonly instanceId: string }[] =>
  def.properties.flatMap((p) => {
    const v = data[p.name]
    return p.type === 'reference' &&
      p.target_class !== undefined &&
      typeof v === 'string' &&
      typeProblem(p, v) === null
      ? [{ property: p.name, classId: p.target_class, instanceId: v }]
      : []
  })

const classDefinitionProblems = (
  def: ClassDefinition,
  db: string,
  classes: ReadonlyMap<string, ClassState>,
): string[] =>
  def.properties.flatMap((p) =>
    p.type === 'reference' &&
    p.target_class !== undefined &&
    p.target_class !== def.id &&
    !classes.has(p.target_class)
      ? [
          `property "${p.name}" refers to class "${p.target_class}", which does not exist in database "${db}"`,
        ]
      : [],
  )

/**
 * Problems of instance data against its class: unknown properties, missing required ones, wrong
 * types, and references to instances that do not exist (reported separately).
 */
export const validateInstanceData = (
  def: ClassDefinition,
  data: InstanceData,
  liveInstances: ReadonlySet<string>,
): { readonly invalid: string[]; readonly dangling: string[] } => {
  const invalid: string[] = []
  const dangling: string[] = []
  const byName = new Map(def.properties.map((p) => [p.name, p]))
  for (const [key, value] of Object.entries(data)) {
    const prop = byName.get(key)
    if (prop === undefined) {
      const known = def.properties.map((p) => p.name)
      invalid.push(
        `unknown property "${key}" (class "${def.id}" has ${known.length === 0 ? 'no properties' : known.map((n) => `"${n}"`).join(', ')})`,
      )
      continue
    }
    const problem = typeProblem(prop, value)
    if (problem !== null) invalid.push(`property "${key}" ${problem}`)
  }
  for (const p of def.properties) {
    if (p.required && !Object.hasOwn(data, p.name)) {
      invalid.push(`missing required property "${p.name}" (${p.type})`)
    }
  }
  for (const ref of referencesIn(def, data)) {
    if (!liveInstances.has(`${ref.classId}:${ref.instanceId}`)) {
      dangling.push(
        `property "${ref.property}" refers to ${ref.classId} "${ref.instanceId}", which does not exist`,
      )
    }
  }
  return { invalid, dangling }
}

const classData = (def: ClassDefinition): Record<string, unknown> => ({
  label: def.label,
  description: def.description,
  properties: def.properties,
})

/**
 * Decides one command against the world. Pure: the same command and world give the same
 * decision. Every rejection names what is wrong in `reason`, readably.
 */
export const decide = (cmd: DomainCommand, commandId: string, world: World): Decision => {
  const db = world.database
  const noDb = (): Decision =>
    reject(cmd, commandId, REJECTION.databaseNotFound, `database "${cmd.db}" does not exist`, false)
  switch (cmd.type) {
    case 'CREATE_DATABASE':
      if (db !== null) {
        return reject(
          cmd,
          commandId,
          REJECTION.alreadyExists,
          `database "${cmd.db}" already exists`,
          true,
        )
      }
      return complete(cmd, commandId, {
        name: cmd.payload.name,
        description: cmd.payload.description,
        generation: world.nextSeq,
      })
    case 'DELETE_DATABASE':
      if (db === null) {
        return reject(
          cmd,
          commandId,
          REJECTION.notFound,
          `database "${cmd.db}" does not exist`,
          false,
        )
      }
      return complete(cmd, commandId, { generation: db.generation })
    case 'CREATE_ONTOLOGY_CLASS': {
      if (db === null) return noDb()
      if (world.cls != null) {
        return reject(
          cmd,
          commandId,
          REJECTION.alreadyExists,
          `class "${cmd.classId}" already exists in database "${cmd.db}"`,
          true,
        )
      }
      const problems = classDefinitionProblems(cmd.payload, cmd.db, world.classes ?? new Map())
      if (problems.length > 0) {
        return reject(cmd, commandId, REJECTION.danglingReference, problems.join('; '), false)
      }
      return complete(cmd, commandId, {
        ...classData(cmd.payload),
        db_generation: db.generation,
        generation: world.nextSeq,
      })
    }
    case 'UPDATE_ONTOLOGY_CLASS':
    case 'DELETE_ONTOLOGY_CLASS': {
      const cls = world.cls
      if (db === null || cls == null) {
        return reject(
          cmd,
          commandId,
          REJECTION.notFound,
          `class "${cmd.classId}" does not exist in database "${cmd.db}"`,
          false,
        )
      }
      const gens = { db_generation: cls.db_generation, generation: cls.generation }
      if (cmd.type === 'DELETE_ONTOLOGY_CLASS') return complete(cmd, commandId, gens)
      const next = patchClass(cls.definition, cmd.payload)
      const problems = classDefinitionProblems(next, cmd.db, world.classes ?? new Map())
      if (problems.length > 0) {
        return reject(cmd, commandId, REJECTION.danglingReference, problems.join('; '), true)
      }
      return complete(cmd, commandId, { ...classData(next), ...gens })
    }
    case 'CREATE_INSTANCE':
    case 'UPDATE_INSTANCE':
    case 'DELETE_INSTANCE': {
      const cls = world.cls
      const inst = world.instance
      const name = `instance "${cmd.instanceId}" of class "${cmd.classId}"`
      if (cmd.type === 'CREATE_INSTANCE') {
        if (db === null) return noDb()
        if (cls == null) {
          return reject(
            cmd,
            commandId,
            REJECTION.classNotFound,
            `class "${cmd.classId}" does not exist in database "${cmd.db}"`,
            false,
          )
        }
        if (inst != null) {
          return reject(cmd, commandId, REJECTION.alreadyExists, `${name} already exists`, true)
        }
      } else if (db === null || cls == null || inst == null) {
        return reject(
          cmd,
          commandId,
          REJECTION.notFound,
          `${name} does not exist in database "${cmd.db}"`,
          false,
        )
      }
      const gens = { class_generation: cls.generation, db_generation: cls.db_generation }
      if (cmd.type === 'DELETE_INSTANCE') return complete(cmd, commandId, gens)
      const data =
        cmd.type === 'CREATE_INSTANCE'
          ? mergeData({}, cmd.payload.data)
          : mergeData(inst?.data ?? {}, cmd.payload.data)
      const { invalid, dangling } = validateInstanceData(
        cls.definition,
        data,
        world.instances ?? new Set(),
      )
      const exists = cmd.type === 'UPDATE_INSTANCE'
      if (invalid.length > 0) {
        return reject(
          cmd,
          commandId,
          REJECTION.validationFailed,
          [...invalid, ...dangling].join('; '),
          exists,
        )
      }
      if (dangling.length > 0) {
        return reject(cmd, commandId, REJECTION.danglingReference, dangling.join('; '), exists)
      }
      return complete(cmd, commandId, { data, ...gens })
    }
  }
}
