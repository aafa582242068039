import Type from 'typebox'
import { Uuid, defineOperation, problem } from './contract.ts'
import { CommandStatusSchema, EnvelopeSchema } from './oms-contract.ts'

/**
 * The operator's API (the console's data): the pipeline's overview, once or as a stream of
 * server-sent events, parked and dead-lettered events with retry and skip, and one command's
 * path through the pipeline. Reads ask for the `read` scope, retry and skip for `operate`.
 */

const Text = Type.String()
const NullableText = Type.Union([Type.String(), Type.Null()])
const Count = Type.Integer({ minimum: 0 })

/** No control characters (an envelope's ids never hold one). */
const NO_CONTROL = '^[^\\u0000-\\u001f\\u007f]+$'

const HandlerName = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: '^[A-Za-z0-9_.:@-]+$',
  description: 'a registry handler, e.g. projection_worker',
})
const EventId = Type.String({ minLength: 1, maxLength: 1024, pattern: NO_CONTROL })

export const OverviewSchema = Type.Object({
  at: Type.String({ description: 'when it was taken, on the database clock' }),
  publisher: Type.Object({
    checkpoint: NullableText,
    settled_up_to: NullableText,
    lag_seconds: Count,
    unpublished_segments: Type.Integer({
      minimum: 0,
      description: 'segments (commits of one or more events) stored after the checkpoint',
    }),
    unpublished_capped: Type.Boolean({ description: 'true: there are more than counted' }),
    owner: Type.Union([Type.String(), Type.Null()], {
      description: 'the active publisher (owner of the checkpoint)',
    }),
    updated_at: NullableText,
    settling: Type.Union([Type.Boolean(), Type.Null()]),
    not_settling_because: Type.Optional(NullableText),
    clock_offset_ms: Type.Union([Type.Number(), Type.Null()]),
    quarantined: Count,
    this_process: Type.Union([Type.String(), Type.Null()], {
      description: 'the role of the publisher in this process (active, standby), if one runs here',
    }),
    publishers: Type.Array(
      Type.Object({
        id: Text,
        role: Text,
        position: NullableText,
        host: Text,
        seen_seconds_ago: Count,
      }),
      {
        description:
          'every publisher heard from in the last 10 minutes (active and standbys, each says where it stands every 5 s), active first',
      },
    ),
  }),
  handlers: Type.Record(Type.String(), Type.Record(Type.String(), Count), {
    description: 'per handler, records per status; lease_expired: processing past its lease',
  }),
  consumers: Type.Union(
    [Type.Array(Type.Object({ group: Text, topic: Text, lag: Count })), Type.Literal('unknown')],
    { description: 'consumer lag per group and topic; unknown where the bus cannot tell' },
  ),
})

export const RecordSchema = Type.Object({
  handler: Text,
  event_id: Text,
  aggregate_type: Text,
  aggregate_id: Text,
  sequence_number: Type.Integer(),
  status: Text,
  attempts: Count,
  last_error: NullableText,
  updated_at: Text,
  resolved_by: Type.Union([Type.String(), Type.Null()], {
    description: 'who last retried or skipped it by hand',
  }),
  resolved_at: NullableText,
})

const ParkedPath = Type.Object({ handler: HandlerName, event_id: EventId })

export const getOverview = defineOperation({
  operationId: 'getOverview',
  method: 'GET',
  path: '/api/v1/ops/overview',
  summary: 'The pipeline at a glance: publisher, handlers, consumer lag (as `cairn status`)',
  responses: {
    '200': { description: 'The overview', schema: OverviewSchema },
  },
  secured: true,
  scope: 'read',
})

export const streamOverview = defineOperation({
  operationId: 'streamOverview',
  method: 'GET',
  path: '/api/v1/ops/stream',
  summary: 'The overview as server-sent events (`event: overview`), one every interval',
  description:
    'text/event-stream; read it with fetch() and a streaming body (EventSource cannot send the Authorization header). It ends after `seconds`; reconnect.',
  query: Type.Object({
    seconds: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3600,
        description: 'how long the stream lasts (default 300)',
      }),
    ),
  }),
  responses: {
    '200': {
      description: 'An `overview` event (its data the overview as JSON) every 2 s',
      schema: Type.String(),
      mediaType: 'text/event-stream',
    },
    '400': problem('Invalid parameters'),
  },
  secured: true,
  scope: 'read',
})

export const listParked = defineOperation({
  operationId: 'listParked',
  method: 'GET',
  path: '/api/v1/ops/parked',
  summary: 'Dead-lettered (failed) and parked events, with their reasons (last_error)',
  query: Type.Object({ handler: Type.Optional(HandlerName) }),
  responses: {
    '200': {
      description: 'Every failed or parked record',
      schema: Type.Object({ items: Type.Array(RecordSchema) }),
    },
    '400': problem('Invalid parameters'),
  },
  secured: true,
  scope: 'read',
})

const resolved = (verb: 'retry' | 'skip') =>
  defineOperation({
    operationId: verb === 'retry' ? 'retryParked' : 'skipParked',
    method: 'POST',
    path: `/api/v1/ops/parked/{handler}/{event_id}/${verb}`,
    summary:
      verb === 'retry'
        ? 'Retry a failed or parked event: it is claimable again and redriven from the bucket'
        : 'Skip a failed or parked event: later events of its aggregate flow',
    description: 'Recorded on the event’s record with the actor (the token’s name) and the time.',
    params: ParkedPath,
    responses: {
      '200': {
        description: 'Done: the record as it is now',
        schema: RecordSchema,
      },
      '400': problem('Invalid parameters'),
      '404': problem('The handler has no failed or parked record of this event'),
    },
    secured: true,
    scope: 'operate',
  })

export const retryParked = resolved('retry')
export const skipParked = resolved('skip')

export const getCommandPath = defineOperation({
  operationId: 'getCommandPath',
  method: 'GET',
  path: '/api/v1/ops/commands/{command_id}',
  summary:
    'One command’s path: its status and envelope, its events, and which handler processed each and when',
  params: Type.Object({ command_id: Uuid }),
  responses: {
    '200': {
      description: 'The path',
      schema: Type.Object({
        status: CommandStatusSchema,
        command: EnvelopeSchema,
        records: Type.Array(RecordSchema, { description: 'the handlers’ records of the command' }),
        events: Type.Array(
          Type.Object({
            event_id: Text,
            envelope: Type.Union([EnvelopeSchema, Type.Null()], {
              description: 'null while the bucket does not show it',
            }),
            records: Type.Array(RecordSchema),
          }),
        ),
      }),
    },
    '400': problem('Not a command id'),
    '404': problem('No such command'),
  },
  secured: true,
  scope: 'read',
})

export const ResetCheckpointBody = Type.Object(
  {
    to: Type.String({
      pattern: '^\\d{4}-\\d{2}-\\d{2}T',
      maxLength: 64,
      description: 'an ISO-8601 time, e.g. 2026-11-27T10:00:00Z',
    }),
  },
  { additionalProperties: false },
)

export const resetCheckpoint = defineOperation({
  operationId: 'resetCheckpoint',
  method: 'POST',
  path: '/api/v1/ops/checkpoint/reset',
  summary:
    'Move the publisher’s checkpoint to a time: everything stored after it is published again (consumers deduplicate)',
  description: 'As `cairn checkpoint reset --to <time> --yes`; logged with the actor.',
  body: ResetCheckpointBody,
  responses: {
    '200': {
      description: 'Moved',
      schema: Type.Object({ from: NullableText, to: Text, actor: NullableText }),
    },
    '400': problem('Invalid body'),
    '409': problem('The checkpoint changed while it was reset (the publisher saved); try again'),
    '415': problem('The body is not application/json'),
    '422': problem('`to` is not a time, before 1970 or in the future'),
  },
  secured: true,
  scope: 'operate',
})

export const OPERATOR_OPERATIONS = [
  getOverview,
  streamOverview,
  listParked,
  retryParked,
  skipParked,
  getCommandPath,
  resetCheckpoint,
] as const
