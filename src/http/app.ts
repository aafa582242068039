import { randomBytes, randomUUID, timingSafeEqual, createHash } from 'node:crypto'
import { canonicalJson, uuidV5 } from '../core/envelope.ts'
import { ErrorCode, isCairnError } from '../core/errors.ts'
import type { StoredEnvelope } from '../core/envelope.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { SqlQueryable } from '../core/ports/sql.ts'
import {
  commandEnvelope,
  parseCreateClass,
  parseCreateDatabase,
  parseCreateInstance,
  parseDeleteClass,
  parseDeleteDatabase,
  parseDeleteInstance,
  parseUpdateClass,
  parseUpdateInstance,
} from '../domain/commands.ts'
import type { DomainCommand, FieldProblem, Parsed } from '../domain/commands.ts'
import { expectedSeqForCreate } from '../domain/command-handler.ts'
import {
  HANDLERS,
  commandHandlerFor,
  isClassId,
  isDatabaseName,
  isInstanceId,
} from '../domain/model.ts'
import {
  getClass,
  getDatabase,
  getInstance,
  isValidCursor,
  listClasses,
  listDatabases,
  listInstances,
  parseInstanceFilter,
} from '../domain/read-model.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { RegistryRow } from '../registry/processed-events.ts'
import { openApiDocument } from './openapi.ts'
import { problem, problemForError } from './problem.ts'
import type { HttpResponse } from './problem.ts'
import { createRouter } from './router.ts'

export type { HttpResponse } from './problem.ts'

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

export type OmsAppOptions = {
  readonly eventStore: EventStore
  /** The read model's database (the projection writes it). */
  readonly readModel: SqlQueryable
  readonly schema: string
  /** The registry's records of one event, per handler (command status). */
  readonly commandRecords: (eventId: string) => Promise<readonly RegistryRow[]>
  /** Bearer tokens accepted on /api; `disabled`: no authentication (embedded, or explicitly). */
  readonly auth: { readonly tokens: readonly string[] } | 'disabled'
  readonly maxBodyBytes?: number
  /**
   * API requests handled at once (default 1,024); beyond, 503 at once. While a dependency hangs,
   * requests wait for it up to its timeout: this bounds what they hold meanwhile.
   */
  readonly maxInFlight?: number
  readonly ready?: () => Promise<ReadyReport>
  readonly metrics?: HttpObserver
  readonly logger?: Logger
}

/**
 * The OMS: a function from a request to a response (it never listens by itself; the CLI serves
 * it). Commands are answered 202 only once the bucket holds them (W1); a wrong `expected_seq` is a
 * 409 with nothing stored (W5); reads come from the read model, history from the bucket, command
 * status from the bucket plus the registry. Every failure is problem+json; malformed input is a
 * 4xx, never a 5xx.
 */
export type HttpApp = {
  handle(req: HttpRequest): Promise<HttpResponse>
  /** Bodies above this are not read: the app answers 413. */
  readonly maxBodyBytes: number
}

export type OmsApp = HttpApp

type Ctx = {
  readonly req: HttpRequest
  readonly params: Readonly<Record<string, string>>
  readonly query: URLSearchParams
  readonly requestId: string
  readonly actor: string | null
  readonly traceparent: string
}

type Handler = (ctx: Ctx) => Promise<HttpResponse>

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/
const SEQ = /^\d{1,15}$/
const DEFAULT_LIMIT = 50
const MAX_LIMIT = 500

const json = (
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): HttpResponse => ({
  status,
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
})

const badRequest = (
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

const notFound = (requestId: string, detail: string): HttpResponse =>
  problem({ status: 404, code: 'not_found', title: 'Not found', detail, request_id: requestId })

class RequestProblem extends Error {
  readonly response: HttpResponse
  constructor(response: HttpResponse) {
    super('request problem')
    this.response = response
  }
}

const digest = (token: string): Buffer => createHash('sha256').update(token).digest()

export const createOmsApp = (options: OmsAppOptions): OmsApp => {
  const { eventStore, readModel, schema } = options
  const log = (options.logger ?? silentLogger).child({ component: 'oms' })
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
  const maxInFlight = options.maxInFlight ?? 1024
  let inFlight = 0
  const tokenDigests =
    options.auth === 'disabled' ? null : options.auth.tokens.map((t) => digest(t))
  const router = createRouter<Handler>()

  // ---- helpers over the request ----

  const bodyJson = (ctx: Ctx): unknown => {
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
      throw new RequestProblem(
        badRequest(ctx.requestId, 'body_required', 'a JSON body is required'),
      )
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

  /** `expected_seq` from the query or `If-Match: "N"`; both given must agree. */
  const expectedSeqOf = (ctx: Ctx): number | undefined => {
    const q = ctx.query.get('expected_seq')
    const ifMatch = ctx.req.headers['if-match']
    let fromQuery: number | undefined
    let fromHeader: number | undefined
    if (q !== null) {
      if (!SEQ.test(q))
        throw new RequestProblem(
          badRequest(ctx.requestId, 'invalid_expected_seq', 'expected_seq must be an integer ≥ 0', [
            { pointer: '#/query/expected_seq', message: 'must be an integer ≥ 0' },
          ]),
        )
      fromQuery = Number(q)
    }
    if (ifMatch !== undefined) {
      const m = /^\s*(?:W\/)?"(\d{1,15})"\s*$/.exec(ifMatch)
      if (m === null)
        throw new RequestProblem(
          badRequest(
            ctx.requestId,
            'invalid_if_match',
            'If-Match must be an ETag "N" (the sequence you read)',
          ),
        )
      fromHeader = Number(m[1])
    }
    if (fromQuery !== undefined && fromHeader !== undefined && fromQuery !== fromHeader) {
      throw new RequestProblem(
        badRequest(ctx.requestId, 'conflicting_expected_seq', 'expected_seq and If-Match disagree'),
      )
    }
    return fromQuery ?? fromHeader
  }

  const pageOf = (ctx: Ctx): { limit: number; after?: string } => {
    const l = ctx.query.get('limit')
    const after = ctx.query.get('after')
    let limit = DEFAULT_LIMIT
    if (l !== null) {
      if (!/^\d{1,4}$/.test(l) || Number(l) < 1 || Number(l) > MAX_LIMIT)
        throw new RequestProblem(
          badRequest(
            ctx.requestId,
            'invalid_limit',
            `limit must be an integer from 1 to ${MAX_LIMIT}`,
          ),
        )
      limit = Number(l)
    }
    if (after !== null && (after.length > 512 || !isValidCursor(after)))
      throw new RequestProblem(
        badRequest(ctx.requestId, 'invalid_cursor', 'after must be a cursor from a previous page'),
      )
    return after === null ? { limit } : { limit, after }
  }

  const parsedOrThrow = <T>(ctx: Ctx, parsed: Parsed<T>): T => {
    if (parsed.ok) return parsed.value
    throw new RequestProblem(
      problem({
        status: 400,
        code: 'validation_failed',
        title: 'Invalid request',
        detail: parsed.problems
          .slice(0, 5)
          .map((p) => `${p.pointer}: ${p.message}`)
          .join('; '),
        problems: parsed.problems.slice(0, 100),
        request_id: ctx.requestId,
      }),
    )
  }

  // ---- commands ----

  const accepted = (stored: StoredEnvelope): HttpResponse => {
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

  const sameCommand = (a: StoredEnvelope, b: ReturnType<typeof commandEnvelope>): boolean =>
    canonicalJson([a.event_type, a.aggregate_type, a.aggregate_id, a.actor, a.data]) ===
    canonicalJson([b.event_type, b.aggregate_type, b.aggregate_id, b.actor, b.data])

  const submit = async (
    ctx: Ctx,
    build: (commandId: string) => Parsed<DomainCommand>,
    occ: 'create' | 'required',
  ): Promise<HttpResponse> => {
    const key = ctx.req.headers['idempotency-key']
    if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
      return badRequest(
        ctx.requestId,
        'invalid_idempotency_key',
        'Idempotency-Key must be 1–255 visible ASCII characters',
      )
    }
    const commandId =
      key === undefined
        ? randomUUID()
        : UUID.test(key)
          ? key.toLowerCase()
          : uuidV5(`cairn:idempotency-key:${key}`)
    const cmd = parsedOrThrow(ctx, build(commandId))
    const explicit = expectedSeqOf(ctx)
    // A retried request answers from the stored command, whenever it comes (W3).
    const correlationId = ctx.req.headers['x-correlation-id']
    const envelopeFor = (expectedSeq: number) =>
      commandEnvelope(cmd, {
        commandId,
        expectedSeq,
        actor: ctx.actor,
        correlationId:
          correlationId !== undefined && REQUEST_ID.test(correlationId) ? correlationId : commandId,
        traceparent: ctx.traceparent,
      })
    if (key !== undefined) {
      const stored = await eventStore.getByEventId(commandId)
      if (stored !== null) {
        const storedExpected = stored.data['expected_seq']
        const again = envelopeFor(typeof storedExpected === 'number' ? storedExpected : 0)
        if (sameCommand(stored, again)) return accepted(stored)
        return problem({
          status: 422,
          code: 'idempotency_key_reused',
          title: 'Idempotency key reused with a different request',
          detail: `Idempotency-Key ${JSON.stringify(key)} was used for another request (command ${commandId}); use a new key`,
          command_id: commandId,
          request_id: ctx.requestId,
        })
      }
    }
    if (explicit === undefined && occ === 'required') {
      return problem({
        status: 428,
        code: 'expected_seq_required',
        title: 'Precondition required',
        detail:
          'give expected_seq (query) or If-Match: "N" — the seq you last read of this resource',
        request_id: ctx.requestId,
      })
    }
    const append = (expectedSeq: number) =>
      eventStore.append({ envelopes: [envelopeFor(expectedSeq)], expectedSeq })
    let result: Awaited<ReturnType<typeof append>>
    try {
      // A create expects a new aggregate (0) unless told otherwise.
      result = await append(explicit ?? 0)
    } catch (error) {
      // The aggregate exists: it may still be re-created if it (or its parent) was deleted or
      // its create rejected; the rules follow the generations of the domain.
      if (explicit !== undefined || !isCairnError(error, ErrorCode.SEQUENCE_CONFLICT)) throw error
      const expected = await expectedSeqForCreate(eventStore, cmd)
      if (expected === 0) throw error
      result = await append(expected)
    }
    const stored = result.envelopes[0]
    if (stored === undefined) throw new Error('the event store returned no envelope')
    log.debug(
      {
        request_id: ctx.requestId,
        command_id: commandId,
        outcome: result.outcome,
        seq: stored.sequence_number,
      },
      'command stored',
    )
    return accepted(stored)
  }

  const p = (ctx: Ctx, name: string): string => ctx.params[name] ?? ''

  /** Ids in the path, checked by the domain's rules before anything reads or writes with them. */
  const ID_RULES: Readonly<Record<string, (v: unknown) => boolean>> = {
    db: isDatabaseName,
    class_id: isClassId,
    instance_id: isInstanceId,
  }
  const invalidIds = (ctx: Ctx): HttpResponse | null => {
    const problems: FieldProblem[] = []
    for (const [name, value] of Object.entries(ctx.params)) {
      const rule = ID_RULES[name]
      if (rule !== undefined && !rule(value)) {
        problems.push({ pointer: `#/path/${name}`, message: `not a valid ${name}` })
      }
    }
    return problems.length === 0
      ? null
      : badRequest(ctx.requestId, 'invalid_id', problems.map((x) => x.message).join('; '), problems)
  }

  router.add('POST', '/api/v1/databases', (ctx) =>
    submit(ctx, () => parseCreateDatabase(bodyJson(ctx)), 'create'),
  )
  router.add('DELETE', '/api/v1/databases/:db', (ctx) =>
    submit(ctx, () => parseDeleteDatabase(p(ctx, 'db')), 'required'),
  )
  router.add('POST', '/api/v1/databases/:db/classes', (ctx) =>
    submit(ctx, () => parseCreateClass(p(ctx, 'db'), bodyJson(ctx)), 'create'),
  )
  router.add('PUT', '/api/v1/databases/:db/classes/:class_id', (ctx) =>
    submit(
      ctx,
      () => parseUpdateClass(p(ctx, 'db'), p(ctx, 'class_id'), bodyJson(ctx)),
      'required',
    ),
  )
  router.add('DELETE', '/api/v1/databases/:db/classes/:class_id', (ctx) =>
    submit(ctx, () => parseDeleteClass(p(ctx, 'db'), p(ctx, 'class_id')), 'required'),
  )
  router.add('POST', '/api/v1/databases/:db/classes/:class_id/instances', (ctx) =>
    submit(
      ctx,
      (commandId) =>
        parseCreateInstance(p(ctx, 'db'), p(ctx, 'class_id'), bodyJson(ctx), commandId),
      'create',
    ),
  )
  router.add('PUT', '/api/v1/databases/:db/classes/:class_id/instances/:instance_id', (ctx) =>
    submit(
      ctx,
      () =>
        parseUpdateInstance(p(ctx, 'db'), p(ctx, 'class_id'), p(ctx, 'instance_id'), bodyJson(ctx)),
      'required',
    ),
  )
  router.add('DELETE', '/api/v1/databases/:db/classes/:class_id/instances/:instance_id', (ctx) =>
    submit(
      ctx,
      () => parseDeleteInstance(p(ctx, 'db'), p(ctx, 'class_id'), p(ctx, 'instance_id')),
      'required',
    ),
  )

  // ---- command status: the bucket says the command exists, the registry how far it got ----

  router.add('GET', '/api/v1/commands/:command_id', async (ctx) => {
    const id = p(ctx, 'command_id')
    if (!UUID.test(id)) {
      return badRequest(ctx.requestId, 'invalid_command_id', 'a command id is a UUID', [
        { pointer: '#/path/command_id', message: 'must be a UUID' },
      ])
    }
    const command = await eventStore.getByEventId(id.toLowerCase())
    if (command === null || command.metadata.kind !== 'command') {
      return notFound(ctx.requestId, `no command ${id}`)
    }
    const handler = commandHandlerFor(command.aggregate_type)
    const row = (await options.commandRecords(command.event_id)).find((r) => r.handler === handler)
    const base = {
      command_id: command.event_id,
      command_type: command.data['command_type'] ?? command.event_type.replace(/_REQUESTED$/, ''),
      aggregate_type: command.aggregate_type,
      aggregate_id: command.aggregate_id,
      sequence_number: command.sequence_number,
      submitted_at: command.occurred_at,
    }
    if (row === undefined) return json(200, { ...base, status: 'PENDING' })
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
        const events = Array.isArray(result.events)
          ? (result.events as { event_id?: unknown }[])
          : []
        const projected = await Promise.all(
          events.map(async (e) =>
            typeof e.event_id !== 'string'
              ? true
              : (await options.commandRecords(e.event_id)).some(
                  (r) => r.handler === HANDLERS.projection && r.status !== 'processing',
                ),
          ),
        )
        if (!projected.every(Boolean)) {
          return json(200, {
            ...base,
            ...meta,
            status: 'PROCESSING',
            detail: 'decided; the read model is catching up',
          })
        }
        if (result.outcome === 'rejected') {
          return json(200, {
            ...base,
            ...meta,
            status: 'FAILED',
            error: { code: result.code ?? 'rejected', message: result.reason ?? 'rejected' },
            result: { events: result.events ?? [] },
          })
        }
        return json(200, {
          ...base,
          ...meta,
          status: 'COMPLETED',
          result: { events: result.events ?? [] },
        })
      }
      case 'failed':
        return json(200, {
          ...base,
          ...meta,
          status: 'FAILED',
          error: { code: 'dead_lettered', message: row.lastError ?? 'failed after retries' },
        })
      case 'skipped_stale':
        return json(200, {
          ...base,
          ...meta,
          status: 'FAILED',
          error: {
            code: 'stale_event',
            message: 'a newer command of this aggregate was applied first',
          },
        })
      case 'skipped':
        return json(200, {
          ...base,
          ...meta,
          status: 'FAILED',
          error: { code: 'skipped', message: row.lastError ?? 'skipped by an operator' },
        })
      case 'parked':
        return json(200, {
          ...base,
          ...meta,
          status: 'PENDING',
          detail:
            'parked behind a failed command of the same aggregate; an operator retries or skips it',
        })
      default:
        return json(200, { ...base, ...meta, status: 'PROCESSING' })
    }
  })

  // ---- reads (the read model) ----

  const withEtag = (ctx: Ctx, view: { seq: number }): HttpResponse => {
    const etag = `"${view.seq}"`
    if (ctx.req.headers['if-none-match'] === etag) {
      return { status: 304, headers: { etag }, body: '' }
    }
    return json(200, view, { etag })
  }

  router.add('GET', '/api/v1/databases', async (ctx) =>
    json(200, await listDatabases(readModel, schema, pageOf(ctx))),
  )
  router.add('GET', '/api/v1/databases/:db', async (ctx) => {
    const view = await getDatabase(readModel, schema, p(ctx, 'db'))
    return view === null
      ? notFound(ctx.requestId, `no database ${p(ctx, 'db')}`)
      : withEtag(ctx, view)
  })
  router.add('GET', '/api/v1/databases/:db/classes', async (ctx) =>
    json(200, await listClasses(readModel, schema, p(ctx, 'db'), pageOf(ctx))),
  )
  router.add('GET', '/api/v1/databases/:db/classes/:class_id', async (ctx) => {
    const view = await getClass(readModel, schema, p(ctx, 'db'), p(ctx, 'class_id'))
    return view === null
      ? notFound(ctx.requestId, `no class ${p(ctx, 'class_id')} in database ${p(ctx, 'db')}`)
      : withEtag(ctx, view)
  })
  router.add('GET', '/api/v1/databases/:db/classes/:class_id/instances', async (ctx) => {
    const cls = await getClass(readModel, schema, p(ctx, 'db'), p(ctx, 'class_id'))
    if (cls === null)
      return notFound(ctx.requestId, `no class ${p(ctx, 'class_id')} in database ${p(ctx, 'db')}`)
    const page = pageOf(ctx)
    const raw: Record<string, string> = {}
    for (const [k, v] of ctx.query) if (k !== 'limit' && k !== 'after') raw[k] = v
    const filter = parsedOrThrow(ctx, parseInstanceFilter(cls, raw))
    return json(
      200,
      await listInstances(readModel, schema, p(ctx, 'db'), p(ctx, 'class_id'), { ...page, filter }),
    )
  })
  router.add(
    'GET',
    '/api/v1/databases/:db/classes/:class_id/instances/:instance_id',
    async (ctx) => {
      const view = await getInstance(
        readModel,
        schema,
        p(ctx, 'db'),
        p(ctx, 'class_id'),
        p(ctx, 'instance_id'),
      )
      return view === null
        ? notFound(ctx.requestId, `no instance ${p(ctx, 'instance_id')}`)
        : withEtag(ctx, view)
    },
  )

  // ---- history (the bucket) ----

  router.add('GET', '/api/v1/aggregates/:aggregate_type/:aggregate_id/events', async (ctx) => {
    const type = p(ctx, 'aggregate_type')
    const id = p(ctx, 'aggregate_id')
    if (
      type.length === 0 ||
      type.length > 256 ||
      id.length === 0 ||
      id.length > 1024 ||
      /[\u0000-\u001f\u007f]/.test(type + id)
    ) {
      return badRequest(
        ctx.requestId,
        'invalid_aggregate',
        'aggregate type (≤ 256) and id (≤ 1024) are required',
      )
    }
    const from = ctx.query.get('from_seq') ?? '1'
    if (!SEQ.test(from) || Number(from) < 1) {
      return badRequest(ctx.requestId, 'invalid_from_seq', 'from_seq must be an integer ≥ 1')
    }
    const fromSeq = Number(from)
    const { limit } = pageOf(ctx)
    const events = await eventStore.readStream(type, id, { fromSeq, toSeq: fromSeq + limit - 1 })
    if (events.length === 0 && fromSeq === 1)
      return notFound(ctx.requestId, `no events for ${type} ${id}`)
    const last = events.at(-1)
    const current = await eventStore.currentSequence(type, id)
    const next =
      last !== undefined && last.sequence_number < current ? last.sequence_number + 1 : null
    return json(200, { aggregate_type: type, aggregate_id: id, events, next_from_seq: next })
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
  const openapi = JSON.stringify(openApiDocument())
  router.add('GET', '/openapi.json', async () => ({
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: openapi,
  }))

  // ---- the request pipeline ----

  const authenticate = (req: HttpRequest): string | null | undefined => {
    if (tokenDigests === null) return null
    const h = req.headers['authorization']
    const m = h === undefined ? null : /^Bearer\s+(\S{1,4096})\s*$/i.exec(h)
    if (m === null) return undefined
    const d = digest(m[1] as string)
    const i = tokenDigests.findIndex((t) => timingSafeEqual(t, d))
    // The actor is a stable, non-secret name of the token.
    return i < 0 ? undefined : `token:${d.subarray(0, 6).toString('hex')}`
  }

  const handle = async (req: HttpRequest): Promise<HttpResponse> => {
    const started = performance.now()
    const given = req.headers['x-request-id']
    const requestId = given !== undefined && REQUEST_ID.test(given) ? given : randomUUID()
    const tp = req.headers['traceparent']
    const traceparent =
      tp !== undefined && TRACEPARENT.test(tp)
        ? tp
        : `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`
    let route = 'unmatched'
    let response: HttpResponse
    const api = req.url.startsWith('/api/')
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
        const actor = isApi ? authenticate(req) : null
        if (actor === undefined) {
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
        } else {
          const ctx: Ctx = {
            req,
            params: match.found.params,
            query,
            requestId,
            actor,
            traceparent,
          }
          response = invalidIds(ctx) ?? (await match.found.handler(ctx))
        }
      }
    } catch (error) {
      if (error instanceof RequestProblem) {
        response = error.response
      } else {
        response = problemForError(error, requestId)
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
    return {
      status: response.status,
      headers: { ...response.headers, 'x-request-id': requestId },
      body: req.method === 'HEAD' ? '' : response.body,
    }
  }

  return { handle, maxBodyBytes }
}
