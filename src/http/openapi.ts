/**
 * The OMS's OpenAPI 3.1 document, served at /openapi.json. The request schemas here are the ones
 * the fuzz tests generate inputs from; the parsers in src/domain/commands.ts are the authority.
 */
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` })

const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: ref('Problem') } },
})

const pathParam = (name: string, pattern: string) => ({
  name,
  in: 'path',
  required: true,
  schema: { type: 'string', pattern },
})

const DB = pathParam('db', '^[a-z][a-z0-9_-]{0,62}$')
const CLASS = pathParam('class_id', '^[A-Za-z][A-Za-z0-9_]{0,127}$')
const INSTANCE = pathParam('instance_id', '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')
const EXPECTED_SEQ = {
  name: 'expected_seq',
  in: 'query',
  required: false,
  description: 'The seq you last read (or send If-Match: "N"); required for updates and deletes.',
  schema: { type: 'integer', minimum: 0 },
}
const IF_MATCH = { name: 'If-Match', in: 'header', required: false, schema: { type: 'string' } }
const IDEMPOTENCY_KEY = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Becomes the command id: the same request again returns the same 202 and appends nothing.',
  schema: { type: 'string', minLength: 1, maxLength: 255 },
}
const PREFER = {
  name: 'Prefer',
  in: 'header',
  required: false,
  description:
    'wait=N (RFC 7240, N ≤ 60): hold the answer until the command is COMPLETED or FAILED, at most N seconds; answered with Preference-Applied',
  schema: { type: 'string', pattern: '(^|[,;\\s])wait\\s*=\\s*\\d{1,6}' },
}
const PAGE = [
  {
    name: 'limit',
    in: 'query',
    required: false,
    schema: { type: 'integer', minimum: 1, maximum: 500 },
  },
  { name: 'after', in: 'query', required: false, schema: { type: 'string' } },
]

const commandResponses = {
  '200': {
    description: 'Prefer: wait=N: the command completed (or failed) within N seconds; its status',
    content: { 'application/json': { schema: ref('CommandStatus') } },
  },
  '202': {
    description: 'The bucket holds the command',
    content: { 'application/json': { schema: ref('Accepted') } },
  },
  '400': problemResponse('Malformed or invalid request'),
  '401': problemResponse('Missing or unknown bearer token'),
  '409': problemResponse(
    'expected_seq does not match the aggregate (optimistic_concurrency_conflict)',
  ),
  '413': problemResponse('Body too large'),
  '415': problemResponse('Not JSON'),
  '422': problemResponse('Idempotency-Key reused for a different request'),
  '428': problemResponse('expected_seq required'),
  '503': problemResponse('A dependency is unavailable; retry'),
}

const command = (summary: string, params: unknown[], body?: string) => ({
  summary,
  parameters: [...params, IDEMPOTENCY_KEY, PREFER],
  ...(body === undefined
    ? {}
    : { requestBody: { required: true, content: { 'application/json': { schema: ref(body) } } } }),
  responses: commandResponses,
  security: [{ bearer: [] }],
})

const read = (summary: string, params: unknown[], schema: string) => ({
  summary,
  parameters: params,
  responses: {
    '200': { description: 'Found', content: { 'application/json': { schema: ref(schema) } } },
    '400': problemResponse('Invalid parameters'),
    '401': problemResponse('Missing or unknown bearer token'),
    '404': problemResponse('Not found'),
  },
  security: [{ bearer: [] }],
})

const property = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'type'],
  properties: {
    name: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' },
    type: { enum: ['string', 'integer', 'number', 'boolean', 'datetime', 'reference'] },
    required: { type: 'boolean' },
    target_class: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_]{0,127}$' },
    description: { type: 'string', maxLength: 4096 },
  },
}

export const openApiDocument = () => ({
  openapi: '3.1.0',
  info: {
    title: 'cairn OMS',
    version: '1',
    description:
      'Commands are stored in the bucket and answered 202; workers apply them; reads come from the read model. ' +
      'Errors are application/problem+json with a stable `code`.',
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    schemas: {
      Problem: {
        type: 'object',
        required: ['type', 'title', 'status', 'code'],
        properties: {
          type: { type: 'string' },
          title: { type: 'string' },
          status: { type: 'integer' },
          code: { type: 'string' },
          detail: { type: 'string' },
          error: { type: 'string' },
          aggregate_id: { type: 'string' },
          expected_seq: { type: 'integer' },
          actual_seq: { type: 'integer' },
          problems: {
            type: 'array',
            items: {
              type: 'object',
              properties: { pointer: { type: 'string' }, message: { type: 'string' } },
            },
          },
        },
      },
      Accepted: {
        type: 'object',
        required: [
          'command_id',
          'status',
          'aggregate_type',
          'aggregate_id',
          'sequence_number',
          'status_url',
        ],
        properties: {
          command_id: { type: 'string', format: 'uuid' },
          status: { const: 'PENDING' },
          aggregate_type: { type: 'string' },
          aggregate_id: { type: 'string' },
          sequence_number: { type: 'integer' },
          status_url: { type: 'string' },
        },
      },
      CommandStatus: {
        type: 'object',
        required: ['command_id', 'status'],
        properties: {
          command_id: { type: 'string' },
          status: { enum: ['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED'] },
          result: { type: 'object' },
          error: {
            type: 'object',
            properties: { code: { type: 'string' }, message: { type: 'string' } },
          },
        },
      },
      CreateDatabase: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          name: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,62}$' },
          description: { type: 'string', maxLength: 4096 },
        },
      },
      CreateClass: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'properties'],
        properties: {
          id: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_]{0,127}$' },
          label: { type: 'string', maxLength: 512 },
          description: { type: 'string', maxLength: 4096 },
          properties: { type: 'array', maxItems: 256, items: property },
        },
      },
      UpdateClass: {
        type: 'object',
        additionalProperties: false,
        properties: {
          label: { type: 'string', maxLength: 512 },
          description: { type: 'string', maxLength: 4096 },
          properties: { type: 'array', maxItems: 256, items: property },
        },
      },
      CreateInstance: {
        type: 'object',
        additionalProperties: false,
        required: ['data'],
        properties: {
          id: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$' },
          data: { type: 'object' },
        },
      },
      UpdateInstance: {
        type: 'object',
        additionalProperties: false,
        required: ['data'],
        properties: {
          data: { type: 'object', description: 'JSON merge patch: null removes a property' },
        },
      },
      Page: {
        type: 'object',
        properties: { items: { type: 'array' }, next: { type: ['string', 'null'] } },
      },
      Resource: { type: 'object', required: ['seq'], properties: { seq: { type: 'integer' } } },
      History: {
        type: 'object',
        properties: {
          aggregate_type: { type: 'string' },
          aggregate_id: { type: 'string' },
          events: { type: 'array' },
          next_from_seq: { type: ['integer', 'null'] },
        },
      },
    },
  },
  paths: {
    '/api/v1/databases': {
      post: command('Create a database', [], 'CreateDatabase'),
      get: read('List databases', PAGE, 'Page'),
    },
    '/api/v1/databases/{db}': {
      get: read('Read a database', [DB], 'Resource'),
      delete: command('Delete a database', [DB, EXPECTED_SEQ, IF_MATCH]),
    },
    '/api/v1/databases/{db}/classes': {
      post: command('Create a class', [DB], 'CreateClass'),
      get: read('List classes', [DB, ...PAGE], 'Page'),
    },
    '/api/v1/databases/{db}/classes/{class_id}': {
      get: read('Read a class', [DB, CLASS], 'Resource'),
      put: command('Update a class (partial)', [DB, CLASS, EXPECTED_SEQ, IF_MATCH], 'UpdateClass'),
      delete: command('Delete a class', [DB, CLASS, EXPECTED_SEQ, IF_MATCH]),
    },
    '/api/v1/databases/{db}/classes/{class_id}/instances': {
      post: command('Create an instance', [DB, CLASS], 'CreateInstance'),
      get: read(
        'List instances; any other query parameter filters by that property value',
        [DB, CLASS, ...PAGE],
        'Page',
      ),
    },
    '/api/v1/databases/{db}/classes/{class_id}/instances/{instance_id}': {
      get: read('Read an instance', [DB, CLASS, INSTANCE], 'Resource'),
      put: command(
        'Update an instance (merge patch)',
        [DB, CLASS, INSTANCE, EXPECTED_SEQ, IF_MATCH],
        'UpdateInstance',
      ),
      delete: command('Delete an instance', [DB, CLASS, INSTANCE, EXPECTED_SEQ, IF_MATCH]),
    },
    '/api/v1/commands/{command_id}': {
      get: read(
        'Command status: PENDING, PROCESSING, COMPLETED or FAILED',
        [
          {
            name: 'command_id',
            in: 'path',
            required: true,
            schema: { type: 'string', format: 'uuid' },
          },
          PREFER,
        ],
        'CommandStatus',
      ),
    },
    '/api/v1/aggregates/{aggregate_type}/{aggregate_id}/events': {
      get: read(
        "An aggregate's history from the bucket, in sequence order",
        [
          { name: 'aggregate_type', in: 'path', required: true, schema: { type: 'string' } },
          { name: 'aggregate_id', in: 'path', required: true, schema: { type: 'string' } },
          {
            name: 'from_seq',
            in: 'query',
            required: false,
            schema: { type: 'integer', minimum: 1 },
          },
          PAGE[0],
        ],
        'History',
      ),
    },
    '/healthz': { get: { summary: 'Liveness', responses: { '200': { description: 'Alive' } } } },
    '/readyz': {
      get: {
        summary: 'Readiness (dependencies reachable)',
        responses: { '200': { description: 'Ready' }, '503': { description: 'Not ready' } },
      },
    },
    '/metrics': {
      get: { summary: 'Prometheus metrics', responses: { '200': { description: 'Metrics' } } },
    },
  },
})
