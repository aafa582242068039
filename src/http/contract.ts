import Type from 'typebox'
import type { Static, TObject, TSchema } from 'typebox'
import type { Scope } from './scopes.ts'
import { problemsOf } from './validate.ts'
import type { FieldProblem } from './validate.ts'

/**
 * An HTTP contract as data: each operation's path, query, headers, body and responses as TypeBox
 * schemas. The server validates requests with it (`requestProblems`), the OpenAPI 3.1 document is
 * built from it (`openApiOf`), and the typed client (`cairn/client`) takes its types from it, so
 * the three cannot disagree.
 */

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE'

export type HeaderSpec = {
  readonly name: string
  readonly schema: TSchema
  readonly description?: string
  readonly required?: boolean
}

export type ResponseSpec = {
  readonly description: string
  /** The JSON body; a problem response's is always the Problem schema. */
  readonly schema?: TSchema
  readonly problem?: boolean
  readonly headers?: readonly HeaderSpec[]
  /** OpenAPI links, e.g. from a 202 to its command status. */
  readonly links?: Readonly<Record<string, unknown>>
  /** The body is not JSON (e.g. Prometheus text). */
  readonly mediaType?: string
}

export type Operation = {
  readonly operationId: string
  readonly method: Method
  /** OpenAPI style: `/api/v1/databases/{db}`. */
  readonly path: string
  readonly summary: string
  readonly description?: string
  readonly params?: TObject
  readonly query?: TObject
  readonly headers?: readonly HeaderSpec[]
  readonly body?: TSchema
  readonly bodyRequired?: boolean
  readonly responses: Readonly<Record<string, ResponseSpec>>
  /** Under the bearer tokens when they are configured (the /api routes). */
  readonly secured: boolean
  /** What the token must allow (default: `read` for a GET, `write` otherwise). */
  readonly scope?: Scope
}

/** Keeps an operation's literal types (for the client's inference). */
export const defineOperation = <const O extends Operation>(o: O): O => o

// ---- shared schemas ----

export const ProblemSchema = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({ description: 'stable, machine-readable' }),
    detail: Type.Optional(Type.String()),
    request_id: Type.Optional(Type.String()),
    problems: Type.Optional(
      Type.Array(
        Type.Object({
          pointer: Type.String({
            description:
              'RFC 6901 pointer into the body, or #/path/<name>, #/query/<name>, #/header/<name>',
          }),
          message: Type.String(),
        }),
      ),
    ),
  },
  { description: 'RFC 9457 problem details' },
)
export type Problem = Static<typeof ProblemSchema>

/** `Idempotency-Key`: 1–255 visible ASCII characters; a UUID is the command id itself. */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x21-\\x7e]{1,255}$'
/** `If-Match`: the ETag "N" of the sequence the client read (its bare digits accepted too). */
export const IF_MATCH_PATTERN = '^\\s*(?:(?:W/)?"(\\d{1,15})"|(\\d{1,15}))\\s*$'
export const UUID_PATTERN =
  '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
export const MAX_SEQ = 999_999_999_999_999

export const Uuid = Type.String({ pattern: UUID_PATTERN, description: 'a UUID' })

export const IdempotencyKeyHeader: HeaderSpec = {
  name: 'Idempotency-Key',
  schema: Type.String({ pattern: IDEMPOTENCY_KEY_PATTERN }),
  description:
    'Names the command: the same request again (a retry after a lost answer) returns the same answer and stores nothing; another request under the same key is 422',
}
export const IfMatchHeader: HeaderSpec = {
  name: 'If-Match',
  schema: Type.String({ pattern: IF_MATCH_PATTERN }),
  description:
    'The ETag "N" of what you read: the command applies only if the aggregate is still at N (409 otherwise); same as expected_seq',
}
export const PreferHeader: HeaderSpec = {
  name: 'Prefer',
  schema: Type.String(),
  description:
    'wait=N (RFC 7240, N ≤ 60): answer once the command is COMPLETED or FAILED (200, with Preference-Applied), or 202 after N seconds; other preferences are ignored',
}

const ETagHeader: HeaderSpec = {
  name: 'ETag',
  schema: Type.String(),
  description: 'the sequence as "N"',
}
export const RetryAfterHeader: HeaderSpec = {
  name: 'Retry-After',
  schema: Type.String(),
  description: 'seconds',
}

export const problem = (description: string, headers?: readonly HeaderSpec[]): ResponseSpec => ({
  description,
  problem: true,
  ...(headers === undefined ? {} : { headers }),
})

/** The answers every /api route can give besides its own. */
export const API_PROBLEMS: Readonly<Record<string, ResponseSpec>> = {
  '401': problem('Missing or unknown bearer token (only when tokens are configured)', [
    { name: 'WWW-Authenticate', schema: Type.String() },
  ]),
  '403': problem(
    'The token lacks the scope this route asks for (forbidden; `missing_scope` names it; only when tokens are configured)',
  ),
  '503': problem(
    'A dependency is unavailable, the service is starting, or too many requests are in progress; retry after Retry-After',
    [RetryAfterHeader],
  ),
}

export { ETagHeader }

// ---- request validation ----

const isJsonObject = (s: TSchema): s is TObject =>
  (s as { type?: unknown }).type === 'object' &&
  typeof (s as { properties?: unknown }).properties === 'object'

const NUMBER_TEXT = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/

/**
 * A parameter's text as its schema's type: "5" for an integer or a number is 5, "true" and
 * "false" for a boolean are booleans. Any other text stays text, so that the schema refuses it
 * ("true" is not an integer; a looser conversion would take it for 1).
 */
export const fromText = (schema: unknown, text: string): unknown => {
  const type = (schema as { type?: unknown } | undefined)?.type
  const types: readonly unknown[] = Array.isArray(type) ? type : [type]
  if ((types.includes('integer') || types.includes('number')) && NUMBER_TEXT.test(text))
    return Number(text)
  if (types.includes('boolean') && (text === 'true' || text === 'false')) return text === 'true'
  return text
}

/** Each property's text as its schema's type (`fromText`); names it does not declare stay text. */
export const converted = (
  schema: TSchema,
  raw: Readonly<Record<string, unknown>>,
): Record<string, unknown> => {
  const props = (schema as { properties?: Readonly<Record<string, unknown>> }).properties ?? {}
  return Object.fromEntries(
    Object.entries(raw).map(([k, v]) => [k, typeof v === 'string' ? fromText(props[k], v) : v]),
  )
}

export type RequestParts = {
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  readonly headers: Readonly<Record<string, string | undefined>>
}

export type ValidRequest = {
  readonly params: Record<string, unknown>
  readonly query: Record<string, unknown>
}

/**
 * The path, query and header problems of a request against its operation (the body is the
 * route's: it may be absent, and it is parsed only when needed). Query parameters the operation
 * does not declare are left to the route (a listing's filters).
 */
export const requestProblems = (
  op: Operation,
  req: RequestParts,
): { readonly problems: FieldProblem[]; readonly valid: ValidRequest } => {
  const problems: FieldProblem[] = []
  let params: Record<string, unknown> = {}
  if (op.params !== undefined) {
    params = converted(op.params, { ...req.params })
    problems.push(...problemsOf(op.params, params, '#/path'))
  }
  let query: Record<string, unknown> = {}
  if (op.query !== undefined && isJsonObject(op.query)) {
    const raw: Record<string, string> = {}
    for (const name of Object.keys(op.query.properties)) {
      const v = req.query.get(name)
      if (v !== null) raw[name] = v
    }
    query = converted(op.query, raw)
    // A query parameter is text: one that does not convert keeps its text, and says so.
    problems.push(...problemsOf(op.query, query, '#/query'))
  }
  for (const h of op.headers ?? []) {
    const v = req.headers[h.name.toLowerCase()]
    if (v === undefined) {
      if (h.required === true)
        problems.push({ pointer: `#/header/${h.name}`, message: 'is required' })
      continue
    }
    problems.push(...problemsOf(h.schema, v, `#/header/${h.name}`))
  }
  return { problems, valid: { params, query } }
}

// ---- the OpenAPI document ----

export type OpenApiOptions = {
  readonly title: string
  readonly description?: string
  readonly version?: string
  /** Bearer tokens are configured: secured operations declare the scheme (and their 401). */
  readonly authenticated: boolean
}

const json = (schema: TSchema): unknown => JSON.parse(JSON.stringify(schema)) as unknown

const PROBLEM_REF = { $ref: '#/components/schemas/Problem' }

const headerObject = (h: HeaderSpec) => ({
  schema: json(h.schema),
  ...(h.description === undefined ? {} : { description: h.description }),
})

/** OpenAPI 3.1 of these operations, every schema as declared. */
export const openApiOf = (
  operations: readonly Operation[],
  options: OpenApiOptions,
): Record<string, unknown> => {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const op of operations) {
    const parameters: unknown[] = []
    const pathProps = op.params?.properties ?? {}
    for (const [name, schema] of Object.entries(pathProps)) {
      parameters.push({ name, in: 'path', required: true, schema: json(schema) })
    }
    if (op.query !== undefined) {
      const required = new Set(op.query.required ?? [])
      for (const [name, schema] of Object.entries(op.query.properties)) {
        const s = schema as TSchema & { description?: string }
        parameters.push({
          name,
          in: 'query',
          required: required.has(name),
          schema: json(s),
          ...(s.description === undefined ? {} : { description: s.description }),
        })
      }
    }
    for (const h of op.headers ?? []) {
      parameters.push({
        name: h.name,
        in: 'header',
        required: h.required === true,
        ...headerObject(h),
      })
    }
    const responses: Record<string, unknown> = {}
    const all = op.secured ? { ...op.responses, ...API_PROBLEMS } : op.responses
    for (const [status, r] of Object.entries(all)) {
      if ((status === '401' || status === '403') && !options.authenticated) continue
      const content =
        r.problem === true
          ? { 'application/problem+json': { schema: PROBLEM_REF } }
          : r.schema !== undefined
            ? { [r.mediaType ?? 'application/json']: { schema: json(r.schema) } }
            : undefined
      responses[status] = {
        description: r.description,
        ...(r.headers === undefined || r.headers.length === 0
          ? {}
          : { headers: Object.fromEntries(r.headers.map((h) => [h.name, headerObject(h)])) }),
        ...(content === undefined ? {} : { content }),
        ...(r.links === undefined ? {} : { links: r.links }),
      }
    }
    const item = (paths[op.path] ??= {})
    item[op.method.toLowerCase()] = {
      operationId: op.operationId,
      summary: op.summary,
      ...(op.description === undefined ? {} : { description: op.description }),
      ...(parameters.length === 0 ? {} : { parameters }),
      ...(op.body === undefined
        ? {}
        : {
            requestBody: {
              required: op.bodyRequired !== false,
              content: { 'application/json': { schema: json(op.body) } },
            },
          }),
      responses,
      // Declared only where the server asks for a token.
      ...(op.secured && options.authenticated ? { security: [{ bearer: [] }] } : {}),
    }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: options.title,
      version: options.version ?? '1',
      ...(options.description === undefined ? {} : { description: options.description }),
    },
    paths,
    components: {
      schemas: { Problem: json(ProblemSchema) },
      ...(options.authenticated
        ? { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } }
        : {}),
    },
  }
}

/** `/api/v1/x/{id}` as the router's `/api/v1/x/:id`. */
export const routerPath = (path: string): string => path.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1')

/**
 * The 400 of a request whose path, query or headers break the contract: `invalid_<name>` when one
 * parameter is at fault (`invalid_expected_seq`, `invalid_if_match`, …), else `validation_failed`.
 */
export const parameterProblemCode = (problems: readonly FieldProblem[]): string => {
  const names = new Set(
    problems.map((p) => /^#\/(?:path|query|header)\/([^/]+)/.exec(p.pointer)?.[1]),
  )
  const [only] = names
  return names.size === 1 && only !== undefined
    ? `invalid_${only.toLowerCase().replace(/-/g, '_')}`
    : 'validation_failed'
}
