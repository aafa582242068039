import type { Static, TSchema } from 'typebox'
import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { SqlQueryable } from '../core/ports/sql.ts'

/**
 * Declaring a domain: events, aggregates, commands, process managers, projections and queries,
 * each typed from its TypeBox schema (docs/building-a-service.md). Declarations are plain frozen
 * data plus pure functions; the runtime (service.ts), the HTTP routes (http.ts) and the test kit
 * (testing.ts) are derived from them.
 */

// ---- events ----

/** Turns an event's data of one schema version into the next version's. */
export type Upcaster = (data: Record<string, unknown>) => Record<string, unknown>

export type EventDefinition<Type extends string = string, Schema extends TSchema = TSchema> = {
  readonly kind: 'event'
  readonly type: Type
  readonly schema: Schema
  /** The current `schema_version` (written on new events; older ones are upcast to it). */
  readonly version: number
  /** `upcast[v]` turns data of version v into version v + 1, for every v below `version`. */
  readonly upcast: Readonly<Record<number, Upcaster>>
}

/** An event as a decider emits it and `evolve` receives it. */
export type EventOf<E> =
  E extends EventDefinition<infer T, infer S>
    ? { readonly type: T; readonly data: Static<S> }
    : never

/** Facts of a stored event that `evolve` may use (sequence, time), beside its type and data. */
export type EventMeta = {
  readonly eventId: string
  readonly sequence: number
  readonly occurredAt: string
  readonly actor: string | null
}

const TYPE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,127}$/

const checkName = (what: string, name: string): void => {
  if (!TYPE_NAME.test(name)) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `${what} ${JSON.stringify(name)} must match ${TYPE_NAME.source}`,
    )
  }
}

export const defineEvent = <const Type extends string, Schema extends TSchema>(
  type: Type,
  schema: Schema,
  options: { readonly version?: number; readonly upcast?: Readonly<Record<number, Upcaster>> } = {},
): EventDefinition<Type, Schema> => {
  checkName('event type', type)
  const version = options.version ?? 1
  const upcast = options.upcast ?? {}
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new CairnError(ErrorCode.INVALID_CONFIG, `event ${type}: version must be an integer ≥ 1`)
  }
  for (let v = 1; v < version; v++) {
    if (typeof upcast[v] !== 'function') {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        `event ${type} is at version ${version}: give upcast[${v}] (version ${v} → ${v + 1})`,
      )
    }
  }
  return Object.freeze({
    kind: 'event',
    type,
    schema,
    version,
    upcast: Object.freeze({ ...upcast }),
  })
}

// ---- aggregates ----

export type AggregateDefinition<
  Type extends string = string,
  State = unknown,
  E extends EventDefinition = EventDefinition,
> = {
  readonly kind: 'aggregate'
  readonly type: Type
  readonly events: readonly E[]
  readonly initialState: () => State
  readonly evolve: (state: State, event: EventOf<E>, meta: EventMeta) => State
  /**
   * The version of `evolve` (default 1). A snapshot taken by another version is ignored and
   * replaced: bump it whenever `evolve` or the state's shape changes.
   */
  readonly version: number
  /** Take a snapshot when this many events followed the last one (null: never; default null). */
  readonly snapshotEvery: number | null
  /** Kafka topics of its commands and of its domain events. */
  readonly topics: { readonly commands: string; readonly events: string }
  /**
   * Declares a command of this aggregate. A method of the aggregate (not a free function) so
   * that `decide` is typed by the aggregate's concrete state and events: its event literals keep
   * their types without annotations.
   */
  readonly command: <const CT extends string, S extends TSchema, L = undefined>(
    spec: CommandSpec<CT, S, State, EventOf<E>, L>,
  ) => CommandDefinition<CT, S, AggregateDefinition<Type, State, E>>
}

/**
 * Any aggregate, whatever its state and events: what the runtime handles. A concrete definition
 * is invariant in its state and events (`evolve` takes and returns them), so the runtime's view
 * takes `never` where a concrete one takes its own types; it casts once, where it calls them.
 */
export type SomeAggregate = {
  readonly kind: 'aggregate'
  readonly type: string
  readonly events: readonly EventDefinition[]
  readonly initialState: () => unknown
  readonly evolve: (state: never, event: never, meta: EventMeta) => unknown
  readonly version: number
  readonly snapshotEvery: number | null
  readonly topics: { readonly commands: string; readonly events: string }
}

/** snake_case of a type name, for default topic names: `BankAccount` → `bank_account`. */
export const snakeCase = (name: string): string =>
  name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase()

export const defineAggregate = <
  const Type extends string,
  State,
  const Events extends readonly EventDefinition[],
>(spec: {
  readonly type: Type
  readonly events: Events
  readonly initialState: () => State
  readonly evolve: (state: State, event: EventOf<Events[number]>, meta: EventMeta) => State
  readonly version?: number
  readonly snapshotEvery?: number | null
  readonly topics?: { readonly commands?: string; readonly events?: string }
}): AggregateDefinition<Type, State, Events[number]> => {
  checkName('aggregate type', spec.type)
  const seen = new Set<string>()
  for (const e of spec.events) {
    if (seen.has(e.type)) {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        `aggregate ${spec.type} lists event ${e.type} twice`,
      )
    }
    seen.add(e.type)
  }
  const every = spec.snapshotEvery ?? null
  if (every !== null && (!Number.isSafeInteger(every) || every < 1)) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `aggregate ${spec.type}: snapshotEvery must be an integer ≥ 1 or null`,
    )
  }
  const base = snakeCase(spec.type)
  const aggregate: AggregateDefinition<Type, State, Events[number]> = Object.freeze({
    kind: 'aggregate',
    type: spec.type,
    events: spec.events,
    initialState: spec.initialState,
    evolve: spec.evolve,
    version: spec.version ?? 1,
    snapshotEvery: every,
    topics: Object.freeze({
      commands: spec.topics?.commands ?? `${base}_commands`,
      events: spec.topics?.events ?? `${base}_events`,
    }),
    command: (commandSpec) =>
      buildCommand(
        aggregate as unknown as AggregateDefinition,
        commandSpec as CommandSpec<string, TSchema, unknown, unknown, unknown>,
      ) as never,
  })
  return aggregate
}

// Matched structurally: `evolve` makes a definition invariant in its state and events.
export type StateOf<A> = A extends { readonly initialState: () => infer S } ? S : never
export type AggregateEventOf<A> = A extends { readonly events: readonly (infer E)[] }
  ? EventOf<E>
  : never

// ---- commands ----

/** A decision that refuses the command; it is stored as the command's outcome (no state change). */
export type Rejection = {
  readonly rejected: true
  /** Stable and machine-readable, e.g. `INSUFFICIENT_FUNDS`. */
  readonly code: string
  readonly reason: string
  /** Facts stored with the rejection beside its code and reason (e.g. which ids it was about). */
  readonly details?: Readonly<Record<string, unknown>>
}

export const reject = (
  code: string,
  reason: string,
  details?: Readonly<Record<string, unknown>>,
): Rejection =>
  Object.freeze({ rejected: true, code, reason, ...(details === undefined ? {} : { details }) })

export const isRejection = (v: unknown): v is Rejection =>
  typeof v === 'object' && v !== null && (v as { rejected?: unknown }).rejected === true

/** What a command expects of its aggregate's sequence when it is stored (HTTP and `send`). */
export type Expectation =
  /** The aggregate must be new (expected sequence 0) unless the caller gives one. */
  | 'new'
  /** The caller must give `expected_seq` / `If-Match` (428 otherwise). */
  | 'required'
  /** Optional: without one, the command is stored whatever the sequence (the default). */
  | 'any'

export type DecideContext<L = undefined> = {
  readonly commandId: string
  readonly actor: string | null
  /** The aggregate's sequence the decision is based on (0: nothing stored yet). */
  readonly sequence: number
  /** The time the command was stored (ISO-8601): a decision is repeatable, so no clock. */
  readonly submittedAt: string
  /** What the command's `load` read for this decision (undefined for a command without one). */
  readonly loaded: L
}

/**
 * An aggregate's current state, for a command's `load`: from the processor's cache, snapshots
 * and the events after them. The command's own aggregate reads as the decision sees it.
 */
export type ReadState = <A extends SomeAggregate>(
  aggregate: A,
  aggregateId: string,
) => Promise<StateOf<A>>

/**
 * How a command is kept in its envelope, for a domain whose commands have a stored format of
 * their own (without one, the command is `data.payload`).
 */
export type CommandStorage<C> = {
  /** The envelope's data after `command_id`, `command_type` and `expected_seq`. */
  readonly data: (command: C) => Record<string, unknown>
  /** The command back from its envelope (then checked against the schema), or why it cannot be. */
  readonly read: (
    envelope: StoredEnvelope,
  ) => { readonly ok: true; readonly command: C } | { readonly ok: false; readonly reason: string }
}

export type CommandDefinition<
  Type extends string = string,
  Schema extends TSchema = TSchema,
  A extends SomeAggregate = SomeAggregate,
> = {
  readonly kind: 'command'
  readonly type: Type
  readonly schema: Schema
  readonly aggregate: A
  readonly aggregateId: (command: Static<Schema>) => string
  readonly decide: (
    command: Static<Schema>,
    state: StateOf<A>,
    ctx: DecideContext<never>,
  ) => readonly AggregateEventOf<A>[] | Rejection
  readonly load: ((command: Static<Schema>, read: ReadState) => Promise<unknown>) | null
  readonly emits: readonly EventDefinition[]
  readonly storage: CommandStorage<Static<Schema>> | null
  readonly expect: Expectation
  /**
   * Its route (default `POST /api/v1/<domain>/<command-type>`; path params join the body), or
   * null: no route (a command only reactions send).
   */
  readonly http: CommandHttp | null
  readonly description?: string
}

export type CommandHttp = {
  readonly method: 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  readonly path?: string
}

/** Any command, whatever its aggregate and schema (the runtime's view, as `SomeAggregate`). */
export type SomeCommand = {
  readonly kind: 'command'
  readonly type: string
  readonly schema: TSchema
  readonly aggregate: SomeAggregate
  readonly aggregateId: (command: never) => string
  readonly decide: (command: never, state: never, ctx: DecideContext<never>) => unknown
  readonly load: ((command: never, read: ReadState) => Promise<unknown>) | null
  readonly emits: readonly EventDefinition[]
  readonly storage: {
    readonly data: CommandStorage<never>['data']
    readonly read: CommandStorage<unknown>['read']
  } | null
  readonly expect: Expectation
  readonly http: CommandHttp | null
  readonly description?: string
}

/** What a command declaration gives (see `AggregateDefinition.command`). */
export type CommandSpec<CT extends string, S extends TSchema, State, Ev, L = undefined> = {
  readonly type: CT
  readonly schema: S
  /** The id of the aggregate the command targets, from the command. */
  readonly aggregateId: (command: Static<S>) => string
  /** Pure: the events the command leads to, or `reject(code, reason)`. */
  readonly decide: (
    command: Static<S>,
    state: State,
    ctx: DecideContext<L>,
  ) => readonly Ev[] | Rejection
  /**
   * Reads what the decision depends on beyond its aggregate's state (other aggregates, through
   * `read`), before each try of the decision; `decide` finds it as `ctx.loaded`.
   */
  readonly load?: (command: Static<S>, read: ReadState) => Promise<L>
  /** The events the command may emit (default: all of its aggregate's); `decide` is held to it. */
  readonly emits?: readonly EventDefinition[]
  /** Its stored format, when it has one of its own (see `CommandStorage`). */
  readonly storage?: CommandStorage<Static<S>>
  readonly expect?: Expectation
  /** Its route; `false`: none (a command only process managers send, e.g. a transfer's credit). */
  readonly http?: { readonly method?: CommandHttp['method']; readonly path?: string } | false
  readonly description?: string
}

const buildCommand = (
  aggregate: AggregateDefinition,
  spec: CommandSpec<string, TSchema, unknown, unknown, unknown>,
): CommandDefinition => {
  checkName('command type', spec.type)
  for (const e of spec.emits ?? []) {
    if (!aggregate.events.includes(e)) {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        `command ${spec.type} emits ${e.type}, not an event of ${aggregate.type}`,
      )
    }
  }
  return Object.freeze({
    kind: 'command',
    type: spec.type,
    schema: spec.schema,
    aggregate,
    aggregateId: spec.aggregateId,
    decide: spec.decide as CommandDefinition['decide'],
    load: spec.load ?? null,
    emits: spec.emits ?? aggregate.events,
    storage: spec.storage ?? null,
    expect: spec.expect ?? 'any',
    http:
      spec.http === false
        ? null
        : Object.freeze({
            method: spec.http?.method ?? 'POST',
            ...(spec.http?.path === undefined ? {} : { path: spec.http.path }),
          }),
    ...(spec.description === undefined ? {} : { description: spec.description }),
  })
}

/** A command to send, as a process manager or a test builds it. */
export type CommandRequest = {
  readonly command: SomeCommand
  readonly payload: Readonly<Record<string, unknown>>
}

export const send = <C extends SomeCommand>(
  command: C,
  payload: Static<C['schema']>,
): CommandRequest => ({ command, payload })

// ---- reactions, projections, queries ----

/** An event as a process manager or a projection receives it: typed data plus the envelope facts. */
export type Delivered<E> = E extends EventDefinition
  ? EventOf<E> & {
      readonly aggregateType: string
      readonly aggregateId: string
      readonly meta: EventMeta
      readonly commandId: string | null
    }
  : never

export type ProcessManagerDefinition<E extends EventDefinition = EventDefinition> = {
  readonly kind: 'process-manager'
  readonly name: string
  readonly events: readonly E[]
  /**
   * The commands an event leads to. Each gets a command id derived from the event's id and its
   * place in the list, so a redelivered event sends the same commands, stored once (W3).
   */
  readonly react: (event: Delivered<E>) => readonly CommandRequest[]
}

export const defineProcessManager = <const Events extends readonly EventDefinition[]>(spec: {
  readonly name: string
  readonly events: Events
  readonly react: (event: Delivered<Events[number]>) => readonly CommandRequest[]
}): ProcessManagerDefinition<Events[number]> => {
  checkName('process manager', spec.name)
  return Object.freeze({ kind: 'process-manager', ...spec })
}

export type ProjectionContext = {
  /** The transaction that commits with the registry's record of these events. */
  readonly tx: SqlQueryable
  /** The schema the projection's tables live in (quote names with `table`). */
  readonly schema: string
  /** `"<schema>"."<name>"`. */
  readonly table: (name: string) => string
}

export type ProjectionDefinition<E extends EventDefinition = EventDefinition> = {
  readonly kind: 'projection'
  readonly name: string
  readonly events: readonly E[]
  /** Creates its tables if missing (idempotent SQL; run at start). */
  readonly setup: (ctx: {
    readonly schema: string
    readonly table: (name: string) => string
  }) => string
  /** Empties its tables (before a rebuild). */
  readonly reset: (ctx: ProjectionContext) => Promise<void>
  /**
   * Applies events (of several aggregates; per aggregate in sequence order) in the transaction
   * that records them done: exactly once, without being idempotent itself.
   */
  readonly apply: (events: readonly Delivered<E>[], ctx: ProjectionContext) => Promise<void>
}

export const defineProjection = <const Events extends readonly EventDefinition[]>(spec: {
  readonly name: string
  readonly events: Events
  readonly setup: ProjectionDefinition['setup']
  readonly reset: ProjectionDefinition['reset']
  readonly apply: (
    events: readonly Delivered<Events[number]>[],
    ctx: ProjectionContext,
  ) => Promise<void>
}): ProjectionDefinition<Events[number]> => {
  checkName('projection', spec.name)
  return Object.freeze({ kind: 'projection', ...spec })
}

export type QueryContext = {
  readonly sql: SqlQueryable
  readonly schema: string
  readonly table: (name: string) => string
}

export type QueryDefinition<Schema extends TSchema = TSchema> = {
  readonly kind: 'query'
  readonly name: string
  /** `GET` path, e.g. `/api/v1/accounts/:account_id`; path and query parameters form the input. */
  readonly path: string
  readonly schema: Schema
  /** The answer (JSON), or null for a 404. */
  readonly run: (input: Static<Schema>, ctx: QueryContext) => Promise<unknown>
  readonly description?: string
}

export const defineQuery = <Schema extends TSchema>(spec: {
  readonly name: string
  readonly path: string
  readonly schema: Schema
  readonly run: (input: Static<Schema>, ctx: QueryContext) => Promise<unknown>
  readonly description?: string
}): QueryDefinition<Schema> => {
  checkName('query', spec.name)
  return Object.freeze({ kind: 'query', ...spec })
}

/** Any reaction or query (the runtime's view; see `SomeAggregate`). */
export type SomeProcessManager = Omit<ProcessManagerDefinition, 'react'> & {
  readonly react: (event: never) => readonly CommandRequest[]
}
export type SomeProjection = Omit<ProjectionDefinition, 'apply'> & {
  readonly apply: (events: never, ctx: ProjectionContext) => Promise<void>
}
export type SomeQuery = Omit<QueryDefinition, 'run'> & {
  readonly run: (input: never, ctx: QueryContext) => Promise<unknown>
}

// ---- the domain ----

export type DomainDefinition = {
  readonly kind: 'domain'
  readonly name: string
  readonly aggregates: readonly SomeAggregate[]
  readonly commands: readonly SomeCommand[]
  readonly processManagers: readonly SomeProcessManager[]
  readonly projections: readonly SomeProjection[]
  readonly queries: readonly SomeQuery[]
  /**
   * The format of a decision's events. `indexed` (the default): an event's id is fixed by its
   * command, aggregate and place in the decision, and its metadata names the command type.
   * `typed`, the format of events stored before the application API (the ontology's): the id is
   * fixed by command, aggregate and event type (a decision emits each type at most once), and the
   * metadata has no `command_type`.
   */
  readonly eventFormat: 'indexed' | 'typed'
  /** The rejection code of a command that cannot be read back (default `INVALID_COMMAND`). */
  readonly invalidCommandCode: string
}

const DOMAIN_NAME = /^[a-z][a-z0-9_]{0,62}$/

/** A command's route: declared, `POST /api/v1/<domain>/<command-type>` by default, or none. */
export const commandRoute = (
  domainName: string,
  command: SomeCommand,
): { readonly method: string; readonly path: string } | null =>
  command.http === null
    ? null
    : {
        method: command.http.method,
        path:
          command.http.path ??
          `/api/v1/${domainName}/${command.type.toLowerCase().replace(/_/g, '-')}`,
      }

/**
 * A domain: its aggregates, commands and reactions. Checks that the pieces fit (unique names,
 * every command's and reaction's aggregate and events declared) and fails at start otherwise.
 */
export const defineDomain = (spec: {
  readonly name: string
  readonly aggregates: readonly SomeAggregate[]
  readonly commands: readonly SomeCommand[]
  readonly processManagers?: readonly SomeProcessManager[]
  readonly projections?: readonly SomeProjection[]
  readonly queries?: readonly SomeQuery[]
  readonly eventFormat?: 'indexed' | 'typed'
  readonly invalidCommandCode?: string
}): DomainDefinition => {
  const fail = (message: string): never => {
    throw new CairnError(ErrorCode.INVALID_CONFIG, `domain ${spec.name}: ${message}`)
  }
  if (!DOMAIN_NAME.test(spec.name)) fail(`the name must match ${DOMAIN_NAME.source}`)
  const unique = (what: string, names: readonly string[]) => {
    const seen = new Set<string>()
    for (const n of names) {
      if (seen.has(n)) fail(`${what} ${n} is declared twice`)
      seen.add(n)
    }
  }
  const aggregates = spec.aggregates
  const commands = spec.commands
  const processManagers = spec.processManagers ?? []
  const projections = spec.projections ?? []
  const queries = spec.queries ?? []
  unique(
    'aggregate',
    aggregates.map((a) => a.type),
  )
  unique(
    'command',
    commands.map((c) => c.type),
  )
  unique(
    'event type',
    aggregates.flatMap((a) => a.events.map((e) => e.type)),
  )
  unique(
    'process manager',
    processManagers.map((p) => p.name),
  )
  unique(
    'projection',
    projections.map((p) => p.name),
  )
  unique(
    'query',
    queries.map((q) => q.name),
  )
  const declared = new Set(aggregates)
  const events = new Set(aggregates.flatMap((a) => a.events))
  for (const c of commands) {
    if (!declared.has(c.aggregate))
      fail(`command ${c.type}: aggregate ${c.aggregate.type} is not in the domain`)
  }
  for (const r of [...processManagers, ...projections]) {
    for (const e of r.events) {
      if (!events.has(e)) fail(`${r.kind} ${r.name}: event ${e.type} is no aggregate's event`)
    }
  }
  for (const p of processManagers) {
    if (p.events.length === 0) fail(`process manager ${p.name} reacts to no event`)
  }
  // Routes: under /api/ (where the bearer tokens are asked for), and one handler per route.
  const routes = new Map<string, string>([['GET /api/v1/commands/:', 'the command status']])
  const route = (what: string, method: string, path: string) => {
    if (!/^\/api\/[A-Za-z0-9_\-/:.]*$/.test(path) || path.includes('//')) {
      fail(
        `${what}: path ${JSON.stringify(path)} must start with /api/ and hold only URL-safe segments`,
      )
    }
    const key = `${method} ${path.replace(/:[^/]*/g, ':')}`
    const taken = routes.get(key)
    if (taken !== undefined) fail(`${what}: ${method} ${path} is also the route of ${taken}`)
    routes.set(key, what)
  }
  for (const c of commands) {
    const r = commandRoute(spec.name, c)
    if (r !== null) route(`command ${c.type}`, r.method, r.path)
  }
  for (const q of queries) route(`query ${q.name}`, 'GET', q.path)
  return Object.freeze({
    kind: 'domain',
    name: spec.name,
    aggregates,
    commands,
    processManagers,
    projections,
    queries,
    eventFormat: spec.eventFormat ?? 'indexed',
    invalidCommandCode: spec.invalidCommandCode ?? 'INVALID_COMMAND',
  })
}
