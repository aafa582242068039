import Type from 'typebox'
import { defineAggregate, defineDomain, defineEvent, reject } from '../application/define.ts'
import type {
  CommandStorage,
  DecideContext,
  EventDefinition,
  ReadState,
  Rejection,
} from '../application/define.ts'
import type { StoredEnvelope } from '../core/envelope.ts'
import {
  commandData,
  commandTarget,
  parseCreateClass,
  parseCreateDatabase,
  parseCreateInstance,
  parseDeleteClass,
  parseDeleteDatabase,
  parseDeleteInstance,
  parseUpdateClass,
  parseUpdateInstance,
} from './commands.ts'
import type { CommandType, DomainCommand, Parsed } from './commands.ts'
import {
  REJECTION,
  decide,
  evolveClass,
  evolveDatabase,
  evolveInstance,
  liveClass,
  liveInstance,
  mergeData,
  patchClass,
  referencedClasses,
  referencesIn,
} from './decide.ts'
import type { ClassState, DatabaseState, InstanceState, World } from './decide.ts'
import { AGGREGATE, TOPICS, classAggregateId, instanceAggregateId } from './model.ts'

/**
 * The ontology declared with the application API (docs/building-a-service.md), so that the
 * generic command processor decides it. What it keeps from before the API: its commands' stored
 * format and parsers (commands.ts), its decisions over the states a command depends on
 * (decide.ts, fed by `load`), and the format of its events (`typed`).
 */

// ---- events (as decide.ts writes them; properties as stored, checked when written) ----

const Text = Type.String()
const MaybeText = Type.Union([Type.String(), Type.Null()])
const Generation = Type.Integer()
const Ids = { command_id: Text, db_name: Text }
const ClassIds = { ...Ids, class_id: Text }
const InstanceIds = { ...ClassIds, instance_id: Text }
const ClassFields = {
  ...ClassIds,
  label: MaybeText,
  description: MaybeText,
  properties: Type.Array(Type.Object({ name: Text, type: Text })),
  db_generation: Generation,
  generation: Generation,
}
const InstanceFields = {
  ...InstanceIds,
  data: Type.Record(Type.String(), Type.Unknown()),
  class_generation: Generation,
  db_generation: Generation,
}

export const DatabaseCreated = defineEvent(
  'DATABASE_CREATED',
  Type.Object({ ...Ids, name: Text, description: MaybeText, generation: Generation }),
)
export const DatabaseDeleted = defineEvent(
  'DATABASE_DELETED',
  Type.Object({ ...Ids, generation: Generation }),
)
export const ClassCreated = defineEvent('ONTOLOGY_CLASS_CREATED', Type.Object(ClassFields))
export const ClassUpdated = defineEvent('ONTOLOGY_CLASS_UPDATED', Type.Object(ClassFields))
export const ClassDeleted = defineEvent(
  'ONTOLOGY_CLASS_DELETED',
  Type.Object({ ...ClassIds, db_generation: Generation, generation: Generation }),
)
export const InstanceCreated = defineEvent('INSTANCE_CREATED', Type.Object(InstanceFields))
export const InstanceUpdated = defineEvent('INSTANCE_UPDATED', Type.Object(InstanceFields))
export const InstanceDeleted = defineEvent(
  'INSTANCE_DELETED',
  Type.Object({ ...InstanceIds, class_generation: Generation, db_generation: Generation }),
)

// ---- aggregates ----

export const Database = defineAggregate({
  type: AGGREGATE.database,
  events: [DatabaseCreated, DatabaseDeleted],
  initialState: (): DatabaseState | null => null,
  evolve: evolveDatabase,
  topics: { commands: TOPICS.databaseCommands, events: TOPICS.ontologyEvents },
})

export const OntologyClass = defineAggregate({
  type: AGGREGATE.ontologyClass,
  events: [ClassCreated, ClassUpdated, ClassDeleted],
  initialState: (): ClassState | null => null,
  evolve: evolveClass,
  topics: { commands: TOPICS.ontologyCommands, events: TOPICS.ontologyEvents },
})

export const Instance = defineAggregate({
  type: AGGREGATE.instance,
  events: [InstanceCreated, InstanceUpdated, InstanceDeleted],
  initialState: (): InstanceState | null => null,
  evolve: evolveInstance,
  topics: { commands: TOPICS.instanceCommands, events: TOPICS.instanceEvents },
})

// ---- commands ----

/** What a decision reads: every state it depends on, live (decide.ts's world, less `nextSeq`). */
type Loaded = Omit<World, 'nextSeq'>

const loadWorld = async (cmd: DomainCommand, read: ReadState): Promise<Loaded> => {
  const database = await read(Database, cmd.db)
  if (cmd.type === 'CREATE_DATABASE' || cmd.type === 'DELETE_DATABASE') return { database }
  const classes = new Map<string, ClassState>()
  const classOf = async (classId: string): Promise<ClassState | null> => {
    if (database !== null && !classes.has(classId)) {
      const c = liveClass(await read(OntologyClass, classAggregateId(cmd.db, classId)), database)
      if (c !== null) classes.set(classId, c)
    }
    return classes.get(classId) ?? null
  }
  const instanceOf = async (cls: ClassState | null, classId: string, instanceId: string) =>
    cls === null
      ? null
      : liveInstance(await read(Instance, instanceAggregateId(cmd.db, classId, instanceId)), cls)
  const cls = await classOf(cmd.classId)
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
      return { database, cls, classes }
    }
    case 'DELETE_ONTOLOGY_CLASS':
      return { database, cls, classes }
    case 'CREATE_INSTANCE':
    case 'UPDATE_INSTANCE':
    case 'DELETE_INSTANCE': {
      const instance = await instanceOf(cls, cmd.classId, cmd.instanceId)
      const instances = new Set<string>()
      if (cls !== null && cmd.type !== 'DELETE_INSTANCE') {
        const data =
          cmd.type === 'CREATE_INSTANCE'
            ? cmd.payload.data
            : mergeData(instance?.data ?? {}, cmd.payload.data)
        for (const ref of referencesIn(cls.definition, data)) {
          const found = await instanceOf(await classOf(ref.classId), ref.classId, ref.instanceId)
          if (found !== null) instances.add(`${ref.classId}:${ref.instanceId}`)
        }
      }
      return { database, cls, instance, classes, instances }
    }
  }
}

const OWN_FIELDS = new Set(['command_id', 'command_type', 'code', 'reason'])

/** decide.ts's decision as the application API takes it: one event, or a rejection. */
const decideLoaded = (
  cmd: DomainCommand,
  _state: unknown,
  ctx: DecideContext<Loaded>,
): never[] | Rejection => {
  const d = decide(cmd, ctx.commandId, { ...ctx.loaded, nextSeq: ctx.sequence + 1 })
  if (d.outcome === 'completed') return [{ type: d.eventType, data: d.data } as never]
  // The processor stores command_id, command_type, code and reason itself; the rest are details.
  const details = Object.entries(d.data).filter(([k]) => !OWN_FIELDS.has(k))
  return reject(d.code, d.reason, Object.fromEntries(details))
}

type Stored = Readonly<Record<string, unknown>>

/** An ontology command: stored and read as the OMS stores it, decided on what `load` reads. */
const spec = <T extends CommandType>(
  type: T,
  emits: EventDefinition,
  parse: (data: Stored, payload: Stored, commandId: string) => Parsed<DomainCommand>,
) => {
  const storage: CommandStorage<DomainCommand> = {
    data: commandData,
    read: (envelope: StoredEnvelope) => {
      const d = envelope.data
      const payload =
        typeof d.payload === 'object' && d.payload !== null && !Array.isArray(d.payload)
          ? (d.payload as Stored)
          : {}
      const commandId = typeof d.command_id === 'string' ? d.command_id : envelope.event_id
      const parsed = parse(d, payload, commandId)
      return parsed.ok
        ? { ok: true, command: parsed.value }
        : { ok: false, reason: parsed.problems.map((p) => `${p.pointer}: ${p.message}`).join('; ') }
    },
  }
  return {
    type,
    // The parsers check each field with the OMS's messages; the schema names the command.
    schema: Type.Unsafe<Extract<DomainCommand, { type: T }>>(
      Type.Object({ type: Type.Literal(type) }),
    ),
    aggregateId: (c: DomainCommand) => commandTarget(c).aggregateId,
    emits: [emits],
    storage: storage as unknown as CommandStorage<Extract<DomainCommand, { type: T }>>,
    load: loadWorld,
    decide: decideLoaded,
    http: false as const,
  }
}

export const CreateDatabase = Database.command(
  spec('CREATE_DATABASE', DatabaseCreated, (_d, p) => parseCreateDatabase(p)),
)
export const DeleteDatabase = Database.command(
  spec('DELETE_DATABASE', DatabaseDeleted, (d) => parseDeleteDatabase(d.db_name)),
)
export const CreateClass = OntologyClass.command(
  spec('CREATE_ONTOLOGY_CLASS', ClassCreated, (d, p) => parseCreateClass(d.db_name, p)),
)
export const UpdateClass = OntologyClass.command(
  spec('UPDATE_ONTOLOGY_CLASS', ClassUpdated, (d, p) => parseUpdateClass(d.db_name, d.class_id, p)),
)
export const DeleteClass = OntologyClass.command(
  spec('DELETE_ONTOLOGY_CLASS', ClassDeleted, (d) => parseDeleteClass(d.db_name, d.class_id)),
)
export const CreateInstance = Instance.command(
  spec('CREATE_INSTANCE', InstanceCreated, (d, p, commandId) =>
    parseCreateInstance(d.db_name, d.class_id, { id: d.instance_id, data: p.data }, commandId),
  ),
)
export const UpdateInstance = Instance.command(
  spec('UPDATE_INSTANCE', InstanceUpdated, (d, p) =>
    parseUpdateInstance(d.db_name, d.class_id, d.instance_id, p),
  ),
)
export const DeleteInstance = Instance.command(
  spec('DELETE_INSTANCE', InstanceDeleted, (d) =>
    parseDeleteInstance(d.db_name, d.class_id, d.instance_id),
  ),
)

/** The reference domain; its workers and routes are wired in config/runtime.ts and http/app.ts. */
export const ontology = defineDomain({
  name: 'ontology',
  aggregates: [Database, OntologyClass, Instance],
  commands: [
    CreateDatabase,
    DeleteDatabase,
    CreateClass,
    UpdateClass,
    DeleteClass,
    CreateInstance,
    UpdateInstance,
    DeleteInstance,
  ],
  eventFormat: 'typed',
  invalidCommandCode: REJECTION.invalidCommand,
})
