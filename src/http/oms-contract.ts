import Type from 'typebox'
import type { TObject, TSchema } from 'typebox'
import {
  ClassId,
  CreateClassBody,
  CreateDatabaseBody,
  CreateInstanceBody,
  DatabaseName,
  InstanceId,
  UpdateClassBody,
  UpdateInstanceBody,
} from '../domain/requests.ts'
import {
  ETagHeader,
  IdempotencyKeyHeader,
  IfMatchHeader,
  MAX_SEQ,
  PreferHeader,
  Uuid,
  defineOperation,
  problem,
} from './contract.ts'
import type { HeaderSpec } from './contract.ts'

/**
 * The OMS's HTTP contract: every route, with its path, query, headers, body and answers, as
 * schemas. The OMS (app.ts) validates with it, /openapi.json is built from it, and the typed
 * client (client/) takes its types from it.
 */

export const MAX_PAGE = 500
export const DEFAULT_PAGE = 50

// ---- answers ----

const Text = Type.String()
const NullableText = Type.Union([Type.String(), Type.Null()])

export const AcceptedSchema = Type.Object({
  command_id: Uuid,
  status: Type.Literal('PENDING'),
  aggregate_type: Text,
  aggregate_id: Text,
  sequence_number: Type.Integer({ minimum: 1 }),
  status_url: Type.String({ description: 'GET it for the outcome' }),
})

export const CommandStatusSchema = Type.Object({
  command_id: Uuid,
  command_type: Type.Optional(Type.Unknown()),
  aggregate_type: Text,
  aggregate_id: Text,
  sequence_number: Type.Integer(),
  submitted_at: Text,
  status: Type.Union([
    Type.Literal('PENDING'),
    Type.Literal('PROCESSING'),
    Type.Literal('COMPLETED'),
    Type.Literal('FAILED'),
  ]),
  attempts: Type.Optional(Type.Integer()),
  updated_at: Type.Optional(Type.Unknown()),
  detail: Type.Optional(Text),
  error: Type.Optional(Type.Object({ code: Text, message: Text })),
  result: Type.Optional(Type.Object({ events: Type.Array(Type.Unknown()) })),
})

const Timestamps = { seq: Type.Integer({ minimum: 1 }), created_at: Text, updated_at: Text }

export const PropertyView = Type.Object({
  name: Text,
  type: Text,
  required: Type.Boolean(),
  target_class: Type.Optional(Text),
  description: Type.Optional(Text),
})

export const DatabaseViewSchema = Type.Object({
  name: Text,
  description: NullableText,
  ...Timestamps,
})
export const ClassViewSchema = Type.Object({
  db: Text,
  id: Text,
  label: NullableText,
  description: NullableText,
  properties: Type.Array(PropertyView),
  ...Timestamps,
})
export const InstanceViewSchema = Type.Object({
  db: Text,
  class_id: Text,
  id: Text,
  data: Type.Record(Type.String(), Type.Unknown()),
  ...Timestamps,
})

const pageOf = <T extends TSchema>(item: T) =>
  Type.Object({
    items: Type.Array(item),
    next: Type.Union([Type.String(), Type.Null()], {
      description: 'the last id of this page, to give as `after` for the next; null on the last',
    }),
  })

export const EnvelopeSchema = Type.Object({
  event_id: Text,
  event_type: Text,
  aggregate_type: Text,
  aggregate_id: Text,
  sequence_number: Type.Integer({ minimum: 1 }),
  occurred_at: Text,
  actor: NullableText,
  data: Type.Record(Type.String(), Type.Unknown()),
  metadata: Type.Record(Type.String(), Type.Unknown()),
  schema_version: Text,
})

export const HistorySchema = Type.Object({
  aggregate_type: Text,
  aggregate_id: Text,
  events: Type.Array(EnvelopeSchema),
  next_from_seq: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
})

// ---- parameters ----

/** No control characters (an envelope's ids never hold one). */
const NO_CONTROL = '^[^\\u0000-\\u001f\\u007f]+$'

const ExpectedSeq = Type.Integer({
  minimum: 0,
  maximum: MAX_SEQ,
  description: 'the sequence you last read (or If-Match: "N")',
})
const Limit = Type.Integer({
  minimum: 1,
  maximum: MAX_PAGE,
  description: `page size (default ${DEFAULT_PAGE})`,
})
/** A listing's cursor: the last id of the previous page (its `next`). */
const pageQuery = (id: TSchema) =>
  Type.Object({
    limit: Type.Optional(Limit),
    after: Type.Optional(
      Type.Unsafe<string>({
        ...(id as Record<string, unknown>),
        description: 'start after this id: the `next` of the previous page',
      }),
    ),
  })

const DbPath = Type.Object({ db: DatabaseName })
const ClassPath = Type.Object({ db: DatabaseName, class_id: ClassId })
const InstancePath = Type.Object({ db: DatabaseName, class_id: ClassId, instance_id: InstanceId })

const CommandIdPath = Type.Object({ command_id: Uuid })

// ---- responses ----

const PreferenceApplied: HeaderSpec = {
  name: 'Preference-Applied',
  schema: Type.String(),
  description: 'wait=N when Prefer: wait was honoured',
}
const STATUS_LINK = {
  GetCommandStatus: {
    operationId: 'getCommand',
    parameters: { command_id: '$response.body#/command_id' },
    description: 'The command’s status and outcome',
  },
}

const commandAnswers = (occ: 'create' | 'required') => ({
  '200': {
    description:
      'Prefer: wait=N and the command completed or failed within N seconds: its status, as GET status_url shows it',
    schema: CommandStatusSchema,
    headers: [{ name: 'Content-Location', schema: Type.String() }, PreferenceApplied],
  },
  '202': {
    description:
      'The bucket holds the command; workers decide it. Follow Location (or status_url) for the outcome',
    schema: AcceptedSchema,
    headers: [{ name: 'Location', schema: Type.String() }, PreferenceApplied],
    links: STATUS_LINK,
  },
  '400': problem(
    'Invalid request: `problems` point into the body (/…), the path (#/path/…), the query (#/query/…) or a header (#/header/…)',
  ),
  '409': problem(
    'The aggregate is not at expected_seq (optimistic_concurrency_conflict), or a create found it live; nothing is stored',
  ),
  '413': problem('The body is larger than the limit'),
  '415': problem('The body is not application/json'),
  '422': problem(
    'The Idempotency-Key was used for another request (idempotency_key_reused), or the body fits its schema but breaks a rule the schema states in words: unique property names, instance data depth and size (validation_failed)',
  ),
  ...(occ === 'required'
    ? { '428': problem('expected_seq (or If-Match) is required: the sequence you last read') }
    : {}),
})

const readAnswers = <S extends TSchema>(schema: S, etag: boolean) => ({
  '200': { description: 'Found', schema, headers: etag ? [ETagHeader] : [] },
  ...(etag ? { '304': { description: 'Not modified (If-None-Match)' } } : {}),
  '400': problem('Invalid parameters'),
  '404': problem('Not found'),
})

const IfNoneMatch: HeaderSpec = {
  name: 'If-None-Match',
  schema: Type.String(),
  description: 'the ETag you hold: 304 when unchanged',
}

type CommandSpec<Id extends string> = {
  operationId: Id
  method: 'POST' | 'PUT' | 'DELETE'
  path: string
  summary: string
  occ: 'create' | 'required'
}

/** A command route: stored and answered 202 (or its outcome within Prefer: wait). */
const command = <
  const Id extends string,
  P extends TObject | undefined = undefined,
  B extends TSchema | undefined = undefined,
>(
  o: CommandSpec<Id> & { params?: P; body?: B },
) => {
  const base = {
    operationId: o.operationId,
    method: o.method,
    path: o.path,
    summary: o.summary,
    query: Type.Object({ expected_seq: Type.Optional(ExpectedSeq) }),
    headers: [IdempotencyKeyHeader, PreferHeader, IfMatchHeader],
    responses: commandAnswers(o.occ),
    secured: true as const,
  }
  return {
    ...base,
    ...(o.params === undefined ? {} : { params: o.params }),
    ...(o.body === undefined ? {} : { body: o.body }),
  } as typeof base &
    (P extends TObject ? { readonly params: P } : unknown) &
    (B extends TSchema ? { readonly body: B } : unknown)
}

// ---- the operations ----

export const createDatabase = defineOperation({
  ...command({
    operationId: 'createDatabase',
    method: 'POST',
    path: '/api/v1/databases',
    summary: 'Create a database',
    body: CreateDatabaseBody,
    occ: 'create',
  }),
})
export const deleteDatabase = defineOperation({
  ...command({
    operationId: 'deleteDatabase',
    method: 'DELETE',
    path: '/api/v1/databases/{db}',
    summary: 'Delete a database (its classes and instances go with it)',
    params: DbPath,
    occ: 'required',
  }),
})
export const createClass = defineOperation({
  ...command({
    operationId: 'createClass',
    method: 'POST',
    path: '/api/v1/databases/{db}/classes',
    summary: 'Create a class',
    params: DbPath,
    body: CreateClassBody,
    occ: 'create',
  }),
})
export const updateClass = defineOperation({
  ...command({
    operationId: 'updateClass',
    method: 'PUT',
    path: '/api/v1/databases/{db}/classes/{class_id}',
    summary: 'Update a class (partial: label, description, properties)',
    params: ClassPath,
    body: UpdateClassBody,
    occ: 'required',
  }),
})
export const deleteClass = defineOperation({
  ...command({
    operationId: 'deleteClass',
    method: 'DELETE',
    path: '/api/v1/databases/{db}/classes/{class_id}',
    summary: 'Delete a class',
    params: ClassPath,
    occ: 'required',
  }),
})
export const createInstance = defineOperation({
  ...command({
    operationId: 'createInstance',
    method: 'POST',
    path: '/api/v1/databases/{db}/classes/{class_id}/instances',
    summary: 'Create an instance (its id given, or derived from the command id)',
    params: ClassPath,
    body: CreateInstanceBody,
    occ: 'create',
  }),
})
export const updateInstance = defineOperation({
  ...command({
    operationId: 'updateInstance',
    method: 'PUT',
    path: '/api/v1/databases/{db}/classes/{class_id}/instances/{instance_id}',
    summary: 'Update an instance (a JSON merge patch of its data)',
    params: InstancePath,
    body: UpdateInstanceBody,
    occ: 'required',
  }),
})
export const deleteInstance = defineOperation({
  ...command({
    operationId: 'deleteInstance',
    method: 'DELETE',
    path: '/api/v1/databases/{db}/classes/{class_id}/instances/{instance_id}',
    summary: 'Delete an instance',
    params: InstancePath,
    occ: 'required',
  }),
})

export const getCommand = defineOperation({
  operationId: 'getCommand',
  method: 'GET',
  path: '/api/v1/commands/{command_id}',
  summary: 'A command’s status: PENDING, PROCESSING, COMPLETED (with its events) or FAILED',
  description:
    'With Prefer: wait=N, answered once the command is COMPLETED or FAILED, or after N seconds (a long poll).',
  params: CommandIdPath,
  headers: [PreferHeader],
  responses: {
    '200': {
      description: 'The status',
      schema: CommandStatusSchema,
      headers: [PreferenceApplied],
    },
    '400': problem('Not a command id'),
    '404': problem('No such command'),
  },
  secured: true,
})

export const listDatabases = defineOperation({
  operationId: 'listDatabases',
  method: 'GET',
  path: '/api/v1/databases',
  summary: 'List databases',
  query: pageQuery(DatabaseName),
  responses: readAnswers(pageOf(DatabaseViewSchema), false),
  secured: true,
})
export const getDatabase = defineOperation({
  operationId: 'getDatabase',
  method: 'GET',
  path: '/api/v1/databases/{db}',
  summary: 'Read a database',
  params: DbPath,
  headers: [IfNoneMatch],
  responses: readAnswers(DatabaseViewSchema, true),
  secured: true,
})
export const listClasses = defineOperation({
  operationId: 'listClasses',
  method: 'GET',
  path: '/api/v1/databases/{db}/classes',
  summary: 'List the classes of a database',
  params: DbPath,
  query: pageQuery(ClassId),
  responses: readAnswers(pageOf(ClassViewSchema), false),
  secured: true,
})
export const getClass = defineOperation({
  operationId: 'getClass',
  method: 'GET',
  path: '/api/v1/databases/{db}/classes/{class_id}',
  summary: 'Read a class',
  params: ClassPath,
  headers: [IfNoneMatch],
  responses: readAnswers(ClassViewSchema, true),
  secured: true,
})
export const listInstances = defineOperation({
  operationId: 'listInstances',
  method: 'GET',
  path: '/api/v1/databases/{db}/classes/{class_id}/instances',
  summary: 'List the instances of a class',
  description:
    'Any other query parameter is a filter: the name of one of the class’s properties and the value it must have (at most 32).',
  params: ClassPath,
  query: pageQuery(InstanceId),
  responses: readAnswers(pageOf(InstanceViewSchema), false),
  secured: true,
})
export const getInstance = defineOperation({
  operationId: 'getInstance',
  method: 'GET',
  path: '/api/v1/databases/{db}/classes/{class_id}/instances/{instance_id}',
  summary: 'Read an instance',
  params: InstancePath,
  headers: [IfNoneMatch],
  responses: readAnswers(InstanceViewSchema, true),
  secured: true,
})
export const getHistory = defineOperation({
  operationId: 'getHistory',
  method: 'GET',
  path: '/api/v1/aggregates/{aggregate_type}/{aggregate_id}/events',
  summary: 'An aggregate’s history from the bucket, in sequence order',
  params: Type.Object({
    aggregate_type: Type.String({
      minLength: 1,
      maxLength: 256,
      pattern: NO_CONTROL,
    }),
    aggregate_id: Type.String({
      minLength: 1,
      maxLength: 1024,
      pattern: NO_CONTROL,
    }),
  }),
  query: Type.Object({
    from_seq: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SEQ })),
    limit: Type.Optional(Limit),
  }),
  responses: {
    '200': { description: 'Envelopes from from_seq, at most limit', schema: HistorySchema },
    '400': problem('Invalid parameters'),
    '404': problem('No events for this aggregate'),
  },
  secured: true,
})

const ReadySchema = Type.Object({
  status: Type.String(),
  checks: Type.Record(Type.String(), Type.Unknown()),
})

export const healthz = defineOperation({
  operationId: 'healthz',
  method: 'GET',
  path: '/healthz',
  summary: 'Liveness: the process serves',
  responses: { '200': { description: 'Alive', schema: Type.Object({ status: Type.String() }) } },
  secured: false,
})
export const readyz = defineOperation({
  operationId: 'readyz',
  method: 'GET',
  path: '/readyz',
  summary: 'Readiness: every dependency answers',
  responses: {
    '200': { description: 'Ready', schema: ReadySchema },
    '503': { description: 'Not ready: checks say which dependency', schema: ReadySchema },
  },
  secured: false,
})
export const metrics = defineOperation({
  operationId: 'metrics',
  method: 'GET',
  path: '/metrics',
  summary: 'Prometheus metrics',
  responses: {
    '200': {
      description: 'Metrics in the Prometheus text format',
      schema: Type.String(),
      mediaType: 'text/plain',
    },
    '404': { description: 'Metrics are not collected by this process' },
  },
  secured: false,
})

export const openapi = defineOperation({
  operationId: 'openapi',
  method: 'GET',
  path: '/openapi.json',
  summary: 'This document',
  responses: { '200': { description: 'OpenAPI 3.1', schema: Type.Object({}) } },
  secured: false,
})

/** Every operation of the OMS, in the document's order. */
export const OMS_OPERATIONS = [
  createDatabase,
  listDatabases,
  getDatabase,
  deleteDatabase,
  createClass,
  listClasses,
  getClass,
  updateClass,
  deleteClass,
  createInstance,
  listInstances,
  getInstance,
  updateInstance,
  deleteInstance,
  getCommand,
  getHistory,
  healthz,
  readyz,
  metrics,
  openapi,
] as const

export const OMS_DESCRIPTION =
  'Commands are stored in the bucket and answered 202 with a link to their status; workers decide them; reads come from the read model, history from the bucket. ' +
  'Every error is application/problem+json with a stable `code`.'
