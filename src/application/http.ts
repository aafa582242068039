import Type from 'typebox'
import type { TObject, TSchema } from 'typebox'
import type { StoredEnvelope } from '../core/envelope.ts'
import type { SqlQueryable } from '../core/ports/sql.ts'
import type { EventStore } from '../event-store/event-store.ts'
import {
  acceptedOrOutcome,
  addOperation,
  correlationIdOf,
  idempotencyKeyReused,
  sameCommand,
  badRequest,
  bodyJson,
  commandIdOf,
  commandStatus,
  createHttpPipeline,
  expectedSeqOf,
  json,
  notFound,
  validationFailed,
} from '../http/pipeline.ts'
import type {
  CommandStatusOptions,
  Ctx,
  FieldProblem,
  HttpApp,
  RouteHandler,
  ServingOptions,
} from '../http/pipeline.ts'
import {
  IdempotencyKeyHeader,
  IfMatchHeader,
  MAX_SEQ,
  PreferHeader,
  openApiOf,
  problem as problemAnswer,
} from '../http/contract.ts'
import type { Method, Operation, ValidRequest } from '../http/contract.ts'
import { AcceptedSchema, getCommand } from '../http/oms-contract.ts'
import { problem } from '../http/problem.ts'
import type { HttpResponse } from '../http/problem.ts'
import { createRouter } from '../http/router.ts'
import type { RegistryRow } from '../registry/processed-events.ts'
import { commandEnvelope, problemsOf } from './decider.ts'
import type { CommandResult } from './decider.ts'
import { commandRoute } from './define.ts'
import type { SomeCommand, DomainDefinition, SomeQuery } from './define.ts'
import { handlerNames, projectionContext } from './reactions.ts'

/**
 * A declared domain's HTTP API, generated from its declaration: one route per command (its schema
 * is the request: path parameters and body together), one per query, the command status, and the
 * OpenAPI document of exactly these. The request pipeline (authentication, limits, problem+json,
 * request ids, metrics) is the OMS's own (http/pipeline.ts).
 */
export type DomainAppOptions = ServingOptions & {
  readonly domain: DomainDefinition
  readonly eventStore: EventStore
  /** The database of the projections (and the registry). */
  readonly sql: SqlQueryable
  readonly schema: string
  readonly commandRecords: (eventId: string) => Promise<readonly RegistryRow[]>
  /** Decides a stored command in this process (inline mode): its outcome, or null to leave it. */
  readonly decideNow?: (stored: StoredEnvelope) => Promise<CommandResult | null>
}

const pathParams = (path: string): string[] =>
  path
    .split('/')
    .filter((s) => s.startsWith(':'))
    .map((s) => s.slice(1))

/** A schema problem's pointer: into the path for a path parameter, else into the body. */
const located = (problems: readonly FieldProblem[], params: readonly string[]): FieldProblem[] =>
  problems.map((p) => {
    const first = p.pointer.split('/')[1] ?? ''
    return params.includes(first) ? { ...p, pointer: `#/path${p.pointer}` } : p
  })

export const createDomainApp = (options: DomainAppOptions): HttpApp => {
  const { domain, eventStore } = options
  const names = handlerNames(domain)
  const router = createRouter<RouteHandler>()
  const statusOptions: CommandStatusOptions = {
    eventStore,
    commandRecords: options.commandRecords,
    handlerOf: () => names.commands,
    projectionHandler: null,
  }

  const submit =
    (command: SomeCommand, params: readonly string[]) =>
    async (ctx: Ctx, valid: ValidRequest): Promise<HttpResponse> => {
      const { commandId, key } = commandIdOf(ctx)
      const hasBody =
        ctx.req.body !== null && ctx.req.body !== 'too_large' && ctx.req.body.length > 0
      const body = hasBody || ctx.req.method !== 'DELETE' ? bodyJson(ctx) : {}
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        return validationFailed(ctx, [{ pointer: '', message: 'the body must be a JSON object' }])
      }
      // The path parameters as the operation validated them (text converted to an integer id).
      const fromPath = valid.params
      const clash = params.filter(
        (n) => Object.hasOwn(body, n) && (body as Record<string, unknown>)[n] !== fromPath[n],
      )
      if (clash.length > 0) {
        return validationFailed(
          ctx,
          clash.map((n) => ({ pointer: `/${n}`, message: 'differs from the path' })),
        )
      }
      const payload: Record<string, unknown> = { ...(body as Record<string, unknown>) }
      for (const n of params) payload[n] = fromPath[n]
      const problems = located(problemsOf(command.schema, payload), params)
      if (problems.length > 0) return validationFailed(ctx, problems)
      const explicit = expectedSeqOf(ctx, valid)
      if (explicit === undefined && command.expect === 'required') {
        return problem({
          status: 428,
          code: 'expected_seq_required',
          title: 'Precondition required',
          detail:
            'give expected_seq (query) or If-Match: "N" — the sequence you last read of this aggregate',
          request_id: ctx.requestId,
        })
      }
      const expectedSeq = explicit ?? (command.expect === 'new' ? 0 : null)
      const envelope = commandEnvelope(command, payload, {
        commandId,
        expectedSeq,
        actor: ctx.actor,
        correlationId: correlationIdOf(ctx, commandId),
        traceparent: ctx.traceparent,
      })
      if (key !== undefined) {
        // A retried request answers from the stored command, whenever it comes (W3).
        const stored = await eventStore.getByEventId(commandId)
        if (stored !== null) {
          if (sameCommand(stored, envelope)) return answer(ctx, stored)
          return idempotencyKeyReused(ctx, key, commandId)
        }
      }
      const result = await eventStore.append({ envelopes: [envelope], expectedSeq })
      const stored = result.envelopes[0]
      if (stored === undefined) throw new Error('the event store returned no envelope')
      return answer(ctx, stored)
    }

  /**
   * 202 with the status link, or the outcome within `Prefer: wait`; inline, the outcome itself
   * when it could be decided here.
   */
  const answer = async (ctx: Ctx, stored: StoredEnvelope): Promise<HttpResponse> => {
    if (options.decideNow === undefined) return acceptedOrOutcome(ctx, stored, statusOptions)
    const result = await options.decideNow(stored)
    if (result === null) return acceptedOrOutcome(ctx, stored, statusOptions)
    const statusUrl = `/api/v1/commands/${stored.event_id}`
    return json(
      200,
      {
        command_id: stored.event_id,
        status: result.outcome === 'rejected' ? 'FAILED' : 'COMPLETED',
        aggregate_type: stored.aggregate_type,
        aggregate_id: stored.aggregate_id,
        ...(result.outcome === 'rejected'
          ? { error: { code: result.code ?? 'rejected', message: result.reason ?? 'rejected' } }
          : {}),
        result: { events: result.events },
        status_url: statusUrl,
      },
      { 'content-location': statusUrl },
    )
  }

  // Every route through its operation, as the OpenAPI document describes it: path, query and
  // headers are validated by the contract before the handler runs.
  const inline = options.decideNow !== undefined
  const operations = new Map(domainOperations(domain, { inline }).map((o) => [o.operationId, o]))
  const operation = (id: string): Operation => {
    const op = operations.get(id)
    if (op === undefined) throw new Error(`no operation ${id}`)
    return op
  }

  for (const command of domain.commands) {
    const route = commandRoute(domain.name, command)
    if (route !== null) {
      addOperation(router, operation(command.type), submit(command, pathParams(route.path)))
    }
  }

  addOperation(router, getCommand, commandStatus(statusOptions))

  const runQuery = (query: SomeQuery) => async (ctx: Ctx, valid: ValidRequest) => {
    // Declared parameters as the operation converted them; the others as text, so that the
    // query's own schema (additionalProperties, say) judges the whole.
    const input: Record<string, unknown> = {}
    for (const [k, v] of ctx.query) input[k] = v
    Object.assign(input, valid.query, valid.params)
    const problems = located(problemsOf(query.schema, input), pathParams(query.path))
    if (problems.length > 0) {
      return badRequest(
        ctx.requestId,
        'invalid_query',
        problems
          .slice(0, 5)
          .map((p) => `${p.pointer}: ${p.message}`)
          .join('; '),
        problems
          .slice(0, 100)
          .map((p) =>
            p.pointer.startsWith('#/path') ? p : { ...p, pointer: `#/query${p.pointer}` },
          ),
      )
    }
    const table = projectionContext(options.sql, options.schema).table
    const out = await query.run(input as never, {
      sql: options.sql,
      schema: options.schema,
      table,
    })
    return out === null || out === undefined
      ? notFound(ctx.requestId, `${query.name}: nothing found`)
      : json(200, out)
  }
  for (const query of domain.queries) addOperation(router, operation(query.name), runQuery(query))

  const document = openApiOf([...operations.values()], {
    title: `${domain.name} (cairn)`,
    authenticated: options.auth !== 'disabled',
  })
  return createHttpPipeline(router, {
    ...options,
    openapi: () => document,
    component: domain.name,
  })
}

// ---- the OpenAPI document, from the same schemas ----

type JsonSchema = {
  readonly properties?: Readonly<Record<string, unknown>>
  readonly required?: readonly string[]
  readonly [k: string]: unknown
}

/** The schema without the properties that travel in the path. */
const withoutParams = (schema: TSchema, params: readonly string[]): TSchema => {
  const s = JSON.parse(JSON.stringify(schema)) as JsonSchema
  if (s.properties === undefined || params.length === 0) return s
  const properties = Object.fromEntries(
    Object.entries(s.properties).filter(([k]) => !params.includes(k)),
  )
  const required = (s.required ?? []).filter((k) => !params.includes(k))
  const rest = Object.fromEntries(Object.entries(s).filter(([k]) => k !== 'required'))
  return { ...rest, properties, ...(required.length > 0 ? { required } : {}) }
}

/** An object schema of some of `schema`'s properties (a path parameter without one is text). */
const pick = (schema: TSchema, names: readonly string[], required: boolean): TObject => {
  const props = (schema as JsonSchema).properties ?? {}
  const requiredNames = new Set((schema as JsonSchema).required ?? [])
  return Type.Object(
    Object.fromEntries(
      names.map((n) => {
        const s = (props[n] as TSchema | undefined) ?? Type.String()
        return [n, required || requiredNames.has(n) ? s : Type.Optional(s)]
      }),
    ),
  )
}

const openApiPath = (path: string): string => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')

const ExpectedSeqQuery = Type.Object({
  expected_seq: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_SEQ })),
})

/** A decision made here (inline mode) or within Prefer: wait: its outcome and events. */
const OutcomeSchema = Type.Object({
  command_id: Type.String(),
  status: Type.String(),
  result: Type.Optional(Type.Object({ events: Type.Array(Type.Unknown()) })),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
})

/** A domain's routes as contract operations: every command's, every query's, command status. */
export const domainOperations = (
  domain: DomainDefinition,
  options: { readonly inline?: boolean } = {},
): Operation[] => {
  const ops: Operation[] = []
  for (const command of domain.commands) {
    const route = commandRoute(domain.name, command)
    if (route === null) continue
    const params = pathParams(route.path)
    ops.push({
      operationId: command.type,
      method: route.method as Method,
      path: openApiPath(route.path),
      summary: command.description ?? `${command.type} (${command.aggregate.type})`,
      ...(params.length > 0 ? { params: pick(command.schema, params, true) } : {}),
      query: ExpectedSeqQuery,
      headers: [IdempotencyKeyHeader, PreferHeader, IfMatchHeader],
      body: withoutParams(command.schema, params),
      bodyRequired: route.method !== 'DELETE',
      responses: {
        '200': {
          description:
            options.inline === true
              ? 'Decided here (inline mode), or decided within Prefer: wait=N: COMPLETED or FAILED, with the events'
              : 'Prefer: wait=N: the command completed or failed within N seconds',
          schema: OutcomeSchema,
          headers: [{ name: 'Content-Location', schema: Type.String() }],
        },
        '202': {
          description: 'Stored; decided asynchronously (follow Location)',
          schema: AcceptedSchema,
          headers: [{ name: 'Location', schema: Type.String() }],
          links: {
            GetCommandStatus: {
              operationId: 'getCommand',
              parameters: { command_id: '$response.body#/command_id' },
            },
          },
        },
        '400': problemAnswer('Invalid request (problems point into the body or the path)'),
        '409': problemAnswer('expected_seq is not the aggregate’s sequence'),
        '413': problemAnswer('Body too large'),
        '415': problemAnswer('Not JSON'),
        '422': problemAnswer('Idempotency-Key reused for another request'),
        ...(command.expect === 'required'
          ? { '428': problemAnswer('expected_seq or If-Match required') }
          : {}),
      },
      secured: true,
    })
  }
  for (const query of domain.queries) {
    const params = pathParams(query.path)
    const names = Object.keys((query.schema as JsonSchema).properties ?? {})
    const rest = names.filter((n) => !params.includes(n))
    ops.push({
      operationId: query.name,
      method: 'GET',
      path: openApiPath(query.path),
      summary: query.description ?? query.name,
      ...(params.length > 0 ? { params: pick(query.schema, params, true) } : {}),
      ...(rest.length > 0 ? { query: pick(query.schema, rest, false) } : {}),
      responses: {
        '200': { description: 'The answer', schema: Type.Unknown() },
        '400': problemAnswer('Invalid parameters'),
        '404': problemAnswer('Nothing found'),
      },
      secured: true,
    })
  }
  ops.push(getCommand)
  return ops
}

/** OpenAPI 3.1 of a domain's routes, its JSON Schemas taken as they are declared. */
export const domainOpenApi = (
  domain: DomainDefinition,
  options: { readonly authenticated: boolean; readonly inline?: boolean } = {
    authenticated: false,
  },
): Record<string, unknown> =>
  openApiOf(domainOperations(domain, options), {
    title: `${domain.name} (cairn)`,
    authenticated: options.authenticated,
  })
