import { randomBytes, randomUUID, timingSafeEqual, createHash } from 'node:crypto'
import { canonicalJson, uuidV5 } from '../core/envelope.ts'
import type { EventEnvelope, StoredEnvelope } from '../core/envelope.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import { noopTracer } from '../core/ports/tracer.ts'
import type { Tracer } from '../core/ports/tracer.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { RegistryRow } from '../registry/processed-events.ts'
import { IF_MATCH_PATTERN, parameterProblemCode, requestProblems, routerPath } from './contract.ts'
import type { Operation, ValidRequest } from './contract.ts'
import { problem, problemForError } from './problem.ts'
import type { HttpResponse } from './problem.ts'
import type { Router } from './router.ts'
import { SCOPES, apiTokenOf, scopeOf } from './scopes.ts'
import type { ApiToken, Scope } from './scopes.ts'

/**
 * The generic request pipeline: what every API on this backbone shares (request ids, tracing,
 * authentication, limits, problem+json, metrics, the operations routes, command status). A domain
 * adds its routes to a router and hands it to `createHttpPipeline`; nothing here knows a domain.
 */

/** A request as the app sees it: header names in lower case, the body read (or too large). */
export type HttpRequest = {
  readonly method: string
  /** Path and query, e.g. `/api/v1/databases?limit=10`. */
  readonly url: string
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly body: Uint8Array | null | 'too_large'
}

export type ReadyReport = {
  readonly ready: boolean
  readonly checks: Readonly<Record<string, string>>
}

/** What the app reports to metrics; the composition root turns it into Prometheus series. */
export type HttpObserver = {
  observe(route: string, method: string, status: number, seconds: number): void
  render(): Promise<{ readonly contentType: string; readonly body: string }>
}

/** An HTTP app: a function from a request to a response (it never listens by itself; the CLI serves it). */
export type HttpApp = {
  handle(req: HttpRequest): Promise<HttpResponse>
  /** Bodies above this are not read: the app answers 413. */
  readonly maxBodyBytes: number
}

/** One request as a route handler sees it: authenticated, its path parsed. */
export type Ctx = {
  readonly req: HttpRequest
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  readonly requestId: string
  readonly actor: string | null
  /** What the token may do (every scope where no token is asked for). */
  readonly scopes: readonly Scope[]
  readonly traceparent: string
}

export type RouteHandler = (ctx: Ctx) => Promise<HttpResponse>

/** One invalid field of a request, as a JSON pointer into it. */
export type FieldProblem = { readonly pointer: string; readonly message: string }

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
const IF_MATCH = new RegExp(IF_MATCH_PATTERN)
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/

/** A JSON response. */
export const json = (
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): HttpResponse => ({
  status,
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
})

/** A 400 problem with a stable code and, optionally, the fields at fault. */
export const badRequest = (
  requestId: string,
  code: string,
  detail: string,
  problems?: readonly FieldProblem[],
): HttpResponse =>
  problem({
    status: 400,
    code,
    title: 'Bad request',
    detail,
    ...(problems === undefined ? {} : { problems }),
    request_id: requestId,
  })

/** A 404 problem. */
export const notFound = (requestId: string, detail: string): HttpResponse =>
  problem({ status: 404, code: 'not_found', title: 'Not found', detail, request_id: requestId })

/** Thrown by the request helpers: the pipeline answers its response as is, without logging. */
export class RequestProblem extends Error {
  readonly response: HttpResponse
  constructor(response: HttpResponse) {
    super('request problem')
    this.response = response
  }
}

/** The body as JSON; a wrong media type (415), no body or malformed JSON (400) are thrown. */
export const bodyJson = (ctx: Ctx): unknown => {
  const { body } = ctx.req
  const type = ctx.req.headers['content-type']
  if (type !== undefined && !/^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/i.test(type)) {
    throw new RequestProblem(
      problem({
        status: 415,
        code: 'unsupported_media_type',
        title: 'Unsupported media type',
        detail: `send application/json, not ${type.slice(0, 100)}`,
        request_id: ctx.requestId,
      }),
    )
  }
  if (body === null || body === 'too_large' || body.length === 0) {
    throw new RequestProblem(badRequest(ctx.requestId, 'body_required', 'a JSON body is required'))
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body)
  } catch {
    throw new RequestProblem(
      badRequest(ctx.requestId, 'malformed_json', 'the body is not valid UTF-8'),
    )
  }
  try {
    return JSON.parse(text) as unknown
  } catch (error) {
    throw new RequestProblem(
      badRequest(
        ctx.requestId,
        'malformed_json',
        `the body is not valid JSON: ${(error as Error).message.slice(0, 200)}`,
      ),
    )
  }
}

/**
 * `expected_seq` from the query or `If-Match: "N"`, as the route's operation validated them
 * (`addOperation`); both given must agree.
 */
export const expectedSeqOf = (ctx: Ctx, valid: ValidRequest): number | undefined => {
  const fromQuery = valid.query['expected_seq'] as number | undefined
  const m = IF_MATCH.exec(ctx.req.headers['if-match'] ?? '')
  const fromHeader = m === null ? undefined : Number(m[1] ?? m[2])
  if (fromQuery !== undefined && fromHeader !== undefined && fromQuery !== fromHeader) {
    // They cannot both be the aggregate's sequence: the request conflicts with its state.
    throw new RequestProblem(
      problem({
        status: 409,
        code: 'conflicting_expected_seq',
        title: 'Conflict',
        detail: `expected_seq ${fromQuery} and If-Match "${fromHeader}" disagree: they cannot both be the aggregate's sequence`,
        request_id: ctx.requestId,
      }),
    )
  }
  return fromQuery ?? fromHeader
}

/**
 * The command id a write names: its `Idempotency-Key` (validated by the route's operation) as
 * it is when it is a UUID, else a UUID derived from it; a fresh one without a key.
 */
export const commandIdOf = (ctx: Ctx): { commandId: string; key: string | undefined } => {
  const key = ctx.req.headers['idempotency-key']
  const commandId =
    key === undefined
      ? randomUUID()
      : UUID.test(key)
        ? key.toLowerCase()
        : uuidV5(`cairn:idempotency-key:${key}`)
  return { commandId, key }
}

/** The request's `X-Correlation-Id` when it is well formed, else `fallback` (the command id). */
export const correlationIdOf = (ctx: Ctx, fallback: string): string => {
  const given = ctx.req.headers['x-correlation-id']
  return given !== undefined && REQUEST_ID.test(given) ? given : fallback
}

/** Whether a stored command is the one a retried request would store (W3: same answer). */
export const sameCommand = (stored: StoredEnvelope, again: EventEnvelope): boolean =>
  canonicalJson([
    stored.event_type,
    stored.aggregate_type,
    stored.aggregate_id,
    stored.actor,
    stored.data,
  ]) ===
  canonicalJson([
    again.event_type,
    again.aggregate_type,
    again.aggregate_id,
    again.actor,
    again.data,
  ])

/** The 422 of an Idempotency-Key used before for another request. */
export const idempotencyKeyReused = (ctx: Ctx, key: string, commandId: string): HttpResponse =>
  problem({
    status: 422,
    code: 'idempotency_key_reused',
    title: 'Idempotency key reused with a different request',
    detail: `Idempotency-Key ${JSON.stringify(key)} was used for another request (command ${commandId}); use a new key`,
    command_id: commandId,
    request_id: ctx.requestId,
  })

/** The 202 of a stored command, pointing at its status. */
export const accepted = (stored: StoredEnvelope): HttpResponse => {
  const statusUrl = `/api/v1/commands/${stored.event_id}`
  return json(
    202,
    {
      command_id: stored.event_id,
      status: 'PENDING',
      aggregate_type: stored.aggregate_type,
      aggregate_id: stored.aggregate_id,
      sequence_number: stored.sequence_number,
      status_url: statusUrl,
    },
    { location: statusUrl },
  )
}

/**
 * The 400 of invalid input (or the 422 of input that fits its schema but breaks a rule stated in
 * words): the first few problems in `detail`, up to 100 listed.
 */
export const validationFailed = (
  ctx: Ctx,
  problems: readonly FieldProblem[],
  code = 'validation_failed',
  status: 400 | 422 = 400,
): HttpResponse =>
  problem({
    status,
    code,
    title: status === 422 ? 'Unprocessable content' : 'Invalid request',
    detail: problems
      .slice(0, 5)
      .map((p) => `${p.pointer}: ${p.message}`)
      .join('; '),
    problems: problems.slice(0, 100),
    request_id: ctx.requestId,
  })

/**
 * The scopes of the routes added from a contract's operations. A route added otherwise (a
 * declared domain's) asks for the default of its method, so that no /api route goes unchecked.
 */
const declaredScopes = new WeakMap<RouteHandler, Scope>()

/** The 403 of a token that lacks the scope of the route. */
const forbidden = (requestId: string, scope: Scope): HttpResponse =>
  problem({
    status: 403,
    code: 'forbidden',
    title: 'Forbidden',
    detail: `this token lacks the scope ${scope}`,
    missing_scope: scope,
    request_id: requestId,
  })

/**
 * Adds an operation of a contract to a router: its path, query and headers are validated against
 * the operation's schemas before `handler` runs, which gets them converted (`"5"` → 5).
 */
export const addOperation = (
  router: Router<RouteHandler>,
  op: Operation,
  handler: (ctx: Ctx, valid: ValidRequest) => Promise<HttpResponse>,
): void => {
  const route: RouteHandler = async (ctx) => {
    const { problems, valid } = requestProblems(op, {
      params: ctx.params,
      query: ctx.query,
      headers: ctx.req.headers,
    })
    if (problems.length === 0) return handler(ctx, valid)
    return validationFailed(ctx, problems, parameterProblemCode(problems))
  }
  declaredScopes.set(route, scopeOf(op))
  router.add(op.method, routerPath(op.path), route)
}

export type CommandStatusOptions = {
  readonly eventStore: EventStore
  /** The registry's records of one event, per handler. */
  readonly commandRecords: (eventId: string) => Promise<readonly RegistryRow[]>
  /** registry handler name that decides this stored command */
  readonly handlerOf: (command: StoredEnvelope) => string
  /** registry handler name whose record of each decided event means "visible in the read model"; null = do not wait for any projection */
  readonly projectionHandler: string | null
}

/** The command's status as the status route shows it: the bucket says it exists, the registry how far it got. */
export const commandView = async (
  options: CommandStatusOptions,
  command: StoredEnvelope,
): Promise<Record<string, unknown>> => {
  const { commandRecords, projectionHandler } = options
  const handler = options.handlerOf(command)
  const row = (await commandRecords(command.event_id)).find((r) => r.handler === handler)
  const base = {
    command_id: command.event_id,
    command_type: command.data['command_type'] ?? command.event_type.replace(/_REQUESTED$/, ''),
    aggregate_type: command.aggregate_type,
    aggregate_id: command.aggregate_id,
    sequence_number: command.sequence_number,
    submitted_at: command.occurred_at,
  }
  if (row === undefined) return { ...base, status: 'PENDING' }
  const meta = { attempts: row.attempts, updated_at: row.updatedAt }
  switch (row.status) {
    case 'done': {
      const result = (row.result ?? {}) as {
        outcome?: string
        code?: string
        reason?: string
        events?: unknown
      }
      // Terminal once the read model shows it too: a client reading after COMPLETED sees the
      // new state and the seq to send next.
      const events = Array.isArray(result.events) ? (result.events as { event_id?: unknown }[]) : []
      const projected =
        projectionHandler === null
          ? []
          : await Promise.all(
              events.map(async (e) =>
                typeof e.event_id !== 'string'
                  ? true
                  : (await commandRecords(e.event_id)).some(
                      (r) => r.handler === projectionHandler && r.status !== 'processing',
                    ),
              ),
            )
      if (!projected.every(Boolean)) {
        return {
          ...base,
          ...meta,
          status: 'PROCESSING',
          detail: 'decided; the read model is catching up',
        }
      }
      if (result.outcome === 'rejected') {
        return {
          ...base,
          ...meta,
          status: 'FAILED',
          error: { code: result.code ?? 'rejected', message: result.reason ?? 'rejected' },
          result: { events: result.events ?? [] },
        }
      }
      return {
        ...base,
        ...meta,
        status: 'COMPLETED',
        result: { events: result.events ?? [] },
      }
    }
    case 'failed':
      return {
        ...base,
        ...meta,
        status: 'FAILED',
        error: { code: 'dead_lettered', message: row.lastError ?? 'failed after retries' },
      }
    case 'skipped_stale':
      return {
        ...base,
        ...meta,
        status: 'FAILED',
        error: {
          code: 'stale_event',
          message: 'a newer command of this aggregate was applied first',
        },
      }
    case 'skipped':
      return {
        ...base,
        ...meta,
        status: 'FAILED',
        error: { code: 'skipped', message: row.lastError ?? 'skipped by an operator' },
      }
    case 'parked':
      return {
        ...base,
        ...meta,
        status: 'PENDING',
        detail:
          'parked behind a failed command of the same aggregate; an operator retries or skips it',
      }
    default:
      return { ...base, ...meta, status: 'PROCESSING' }
  }
}

/** The longest `Prefer: wait` honoured, in seconds. */
export const MAX_WAIT_SECONDS = 60

/** `Prefer: wait=N` (RFC 7240), in seconds, at most MAX_WAIT_SECONDS; 0 when not asked. */
export const preferredWait = (ctx: Ctx): number => {
  const prefer = ctx.req.headers['prefer']
  const m = prefer === undefined ? null : /(?:^|[,;\s])wait\s*=\s*"?(\d{1,6})"?/i.exec(prefer)
  return m === null ? 0 : Math.min(Number(m[1]), MAX_WAIT_SECONDS)
}

const TERMINAL: ReadonlySet<unknown> = new Set(['COMPLETED', 'FAILED'])

/**
 * The command's view once it is terminal (COMPLETED or FAILED), or as it is when `seconds` have
 * passed: the server looks again every 10–25 ms for the first 2 s, then at intervals growing to
 * 250 ms, so that a client waits without polling.
 */
export const awaitCommand = async (
  options: CommandStatusOptions,
  command: StoredEnvelope,
  seconds: number,
): Promise<Record<string, unknown>> => {
  const started = performance.now()
  const deadline = started + seconds * 1000
  let pause = 10
  for (;;) {
    const view = await commandView(options, command)
    const left = deadline - performance.now()
    if (TERMINAL.has(view['status']) || left <= 0) return view
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)))
    // Every 25 ms for the first 2 s (most commands finish within it: the answer comes at most
    // 25 ms late), then up to 250 ms (a long wait costs few queries).
    pause = Math.min(pause * 1.5, performance.now() - started < 2_000 ? 25 : 250)
  }
}

/**
 * The answer to a stored command: 202 pointing at its status; with `Prefer: wait=N`, its outcome
 * (200, as the status route shows it) if it completes within N seconds, else the 202.
 */
export const acceptedOrOutcome = async (
  ctx: Ctx,
  stored: StoredEnvelope,
  options: CommandStatusOptions,
): Promise<HttpResponse> => {
  const wait = preferredWait(ctx)
  if (wait === 0) return accepted(stored)
  const applied = { 'preference-applied': `wait=${wait}` }
  const view = await awaitCommand(options, stored, wait)
  if (!TERMINAL.has(view['status'])) {
    const a = accepted(stored)
    return { ...a, headers: { ...a.headers, ...applied } }
  }
  return json(200, view, { 'content-location': `/api/v1/commands/${stored.event_id}`, ...applied })
}

/**
 * The command status route (`:command_id`); with `Prefer: wait=N` it answers once the command is
 * terminal or N seconds passed (a long poll).
 */
export const commandStatus =
  (options: CommandStatusOptions): RouteHandler =>
  async (ctx) => {
    // A UUID: the route's operation (getCommand) validated it.
    const id = ctx.params['command_id'] ?? ''
    const command = await options.eventStore.getByEventId(id.toLowerCase())
    if (command === null || command.metadata.kind !== 'command') {
      return notFound(ctx.requestId, `no command ${id}`)
    }
    const wait = preferredWait(ctx)
    const view = await awaitCommand(options, command, wait)
    return json(200, view, wait > 0 ? { 'preference-applied': `wait=${wait}` } : {})
  }

/** How an app serves: authentication, limits, readiness, metrics (the OMS's and a domain's). */
export type ServingOptions = {
  /** Bearer tokens accepted on /api; `disabled`: no authentication (embedded, or explicitly). */
  readonly auth: { readonly tokens: readonly (string | ApiToken)[] } | 'disabled'
  readonly maxBodyBytes?: number
  /**
   * API requests handled at once (default 1,024); beyond, 503 at once. While a dependency hangs,
   * requests wait for it up to its timeout: this bounds what they hold meanwhile.
   */
  readonly maxInFlight?: number
  readonly ready?: () => Promise<ReadyReport>
  readonly metrics?: HttpObserver
  readonly logger?: Logger
  /** A server span per API request; its traceparent is the commands' (default: no tracing). */
  readonly tracer?: Tracer
}

export type PipelineOptions = ServingOptions & {
  /** The OpenAPI document served at /openapi.json */
  readonly openapi: () => unknown
  /** component name for the logger child (default 'oms') */
  readonly component?: string
}

const digest = (token: string): Buffer => createHash('sha256').update(token).digest()

/** Adds /healthz, /readyz, /metrics, /openapi.json to the router; returns the app over it. */
export const createHttpPipeline = (
  router: Router<RouteHandler>,
  options: PipelineOptions,
): HttpApp => {
  const log = (options.logger ?? silentLogger).child({ component: options.component ?? 'oms' })
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
  const maxInFlight = options.maxInFlight ?? 1024
  const tracer = options.tracer ?? noopTracer
  let inFlight = 0
  const tokens =
    options.auth === 'disabled'
      ? null
      : options.auth.tokens.map((t) => {
          const parsed = apiTokenOf(t)
          return { ...parsed, digest: digest(parsed.token) }
        })

  // ---- operations ----

  router.add('GET', '/healthz', async () => json(200, { status: 'ok' }))
  router.add('GET', '/readyz', async () => {
    const report = options.ready === undefined ? { ready: true, checks: {} } : await options.ready()
    return json(report.ready ? 200 : 503, {
      status: report.ready ? 'ready' : 'not ready',
      checks: report.checks,
    })
  })
  router.add('GET', '/metrics', async () => {
    if (options.metrics === undefined) return { status: 404, headers: {}, body: '' }
    const m = await options.metrics.render()
    return { status: 200, headers: { 'content-type': m.contentType }, body: m.body }
  })
  const openapi = JSON.stringify(options.openapi())
  router.add('GET', '/openapi.json', async () => ({
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: openapi,
  }))

  // ---- the request pipeline ----

  const everything = { actor: null, scopes: SCOPES }
  const authenticate = (
    req: HttpRequest,
  ): { actor: string | null; scopes: readonly Scope[] } | undefined => {
    if (tokens === null) return everything
    const h = req.headers['authorization']
    const m = h === undefined ? null : /^Bearer\s+(\S{1,4096})\s*$/i.exec(h)
    if (m === null) return undefined
    const d = digest(m[1] as string)
    const t = tokens.find((t) => timingSafeEqual(t.digest, d))
    if (t === undefined) return undefined
    // The actor is a stable, non-secret name of the token.
    return { actor: `token:${t.name ?? d.subarray(0, 6).toString('hex')}`, scopes: t.scopes }
  }

  const handle = async (req: HttpRequest): Promise<HttpResponse> => {
    const started = performance.now()
    const given = req.headers['x-request-id']
    const requestId = given !== undefined && REQUEST_ID.test(given) ? given : randomUUID()
    const tp = req.headers['traceparent']
    const api = req.url.startsWith('/api/')
    // API requests only: probes and scrapes would be traces of their own.
    const span = api
      ? tracer.startSpan(req.method, {
          kind: 'server',
          parent: tp !== undefined && TRACEPARENT.test(tp) ? tp : undefined,
          attributes: { 'http.request.method': req.method, 'cairn.request_id': requestId },
        })
      : undefined
    const traceparent =
      span?.traceparent ??
      (tp !== undefined && TRACEPARENT.test(tp)
        ? tp
        : `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`)
    let route = 'unmatched'
    let response: HttpResponse
    let failure: unknown
    if (api) inFlight++
    try {
      const q = req.url.indexOf('?')
      const path = q < 0 ? req.url : req.url.slice(0, q)
      const query = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1))
      const match = router.match(req.method === 'HEAD' ? 'GET' : req.method, path)
      if (match === null) {
        response = notFound(requestId, `no route for ${req.method} ${path.slice(0, 200)}`)
      } else if ('allowed' in match) {
        response = problem(
          {
            status: 405,
            code: 'method_not_allowed',
            title: 'Method not allowed',
            detail: `allowed: ${match.allowed.join(', ')}`,
            request_id: requestId,
          },
          { allow: match.allowed.join(', ') },
        )
      } else if (api && inFlight > maxInFlight) {
        route = match.found.pattern
        response = problem(
          {
            status: 503,
            code: 'overloaded',
            title: 'Too many requests in progress',
            detail: `more than ${maxInFlight} requests are in progress (a dependency may be slow); retry later`,
            request_id: requestId,
          },
          { 'retry-after': '1' },
        )
      } else if (req.body === 'too_large') {
        route = match.found.pattern
        response = problem({
          status: 413,
          code: 'body_too_large',
          title: 'Payload too large',
          detail: `the body exceeds ${maxBodyBytes} bytes`,
          request_id: requestId,
        })
      } else {
        route = match.found.pattern
        const isApi = path.startsWith('/api/')
        const who = isApi ? authenticate(req) : everything
        const scope = declaredScopes.get(match.found.handler) ?? scopeOf({ method: req.method })
        if (who === undefined) {
          response = problem(
            {
              status: 401,
              code: 'unauthorized',
              title: 'Unauthorized',
              detail: 'send Authorization: Bearer <token> (one of OMS_API_TOKENS)',
              request_id: requestId,
            },
            { 'www-authenticate': 'Bearer' },
          )
        } else if (!who.scopes.includes(scope)) {
          response = forbidden(requestId, scope)
        } else {
          const ctx: Ctx = {
            req,
            params: match.found.params,
            query,
            requestId,
            actor: who.actor,
            scopes: who.scopes,
            traceparent,
          }
          response = await match.found.handler(ctx)
        }
      }
    } catch (error) {
      if (error instanceof RequestProblem) {
        response = error.response
      } else {
        response = problemForError(error, requestId)
        failure = error
        const level = response.status >= 500 && response.status !== 503 ? 'error' : 'warn'
        log[level](
          {
            request_id: requestId,
            method: req.method,
            route,
            err: String(error),
            stack: (error as Error).stack,
          },
          'request failed',
        )
      }
    } finally {
      if (api) inFlight--
    }
    const seconds = (performance.now() - started) / 1000
    options.metrics?.observe(route, req.method, response.status, seconds)
    if (span !== undefined) {
      span.rename(`${req.method} ${route}`)
      span.setAttributes({ 'http.route': route, 'http.response.status_code': response.status })
      // Failed on a 5xx only (a 4xx is the client's), with the error when one was thrown.
      if (response.status >= 500) span.fail(failure ?? `HTTP ${response.status}`)
      span.end()
    }
    return {
      status: response.status,
      headers: { ...response.headers, 'x-request-id': requestId },
      body: req.method === 'HEAD' ? '' : response.body,
      ...(response.stream === undefined || req.method === 'HEAD'
        ? {}
        : { stream: response.stream }),
    }
  }

  return { handle, maxBodyBytes }
}
