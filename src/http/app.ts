import { ErrorCode, isCairnError } from '../core/errors.ts'
import { silentLogger } from '../core/ports/logger.ts'
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
import type { DomainCommand, Parsed } from '../domain/commands.ts'
import { expectedSeqForCreate } from '../domain/command-handler.ts'
import { HANDLERS, commandHandlerFor } from '../domain/model.ts'
import {
  getClass,
  getDatabase,
  getInstance,
  listClasses,
  listDatabases,
  listInstances,
  parseInstanceFilter,
} from '../domain/read-model.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { RegistryRow } from '../registry/processed-events.ts'
import { openApiOf } from './contract.ts'
import type { Operation, ValidRequest } from './contract.ts'
import * as oms from './oms-contract.ts'
import {
  RequestProblem,
  addOperation,
  acceptedOrOutcome,
  correlationIdOf,
  idempotencyKeyReused,
  sameCommand,
  bodyJson,
  commandIdOf,
  commandStatus,
  createHttpPipeline,
  expectedSeqOf,
  json,
  notFound,
  validationFailed,
} from './pipeline.ts'
import type {
  CommandStatusOptions,
  Ctx,
  HttpApp,
  RouteHandler,
  ServingOptions,
} from './pipeline.ts'
import { addConsoleRoutes } from './console.ts'
import type { ConsoleAssets } from './console.ts'
import { OPERATOR_OPERATIONS } from './operator-contract.ts'
import { addOperatorRoutes } from './operator-routes.ts'
import type { OperatorOptions } from './operator-routes.ts'
import { problem } from './problem.ts'
import type { HttpResponse } from './problem.ts'
import { createRouter } from './router.ts'

export type { HttpResponse } from './problem.ts'
export type { HttpApp, HttpObserver, HttpRequest, ReadyReport } from './pipeline.ts'

export type OmsAppOptions = ServingOptions & {
  readonly eventStore: EventStore
  /** The read model's database (the projection writes it). */
  readonly readModel: SqlQueryable
  readonly schema: string
  /** The registry's records of one event, per handler (command status). */
  readonly commandRecords: (eventId: string) => Promise<readonly RegistryRow[]>
  /** The operator's API under /api/v1/ops (src/http/operator-contract.ts); absent: not served. */
  readonly operator?: OperatorOptions
  /** The console's static files, served under /console; absent: not served. */
  readonly console?: ConsoleAssets
}

/**
 * The OMS: a function from a request to a response (it never listens by itself; the CLI serves
 * it). Commands are answered 202 only once the bucket holds them (W1); a wrong `expected_seq` is a
 * 409 with nothing stored (W5); reads come from the read model, history from the bucket, command
 * status from the bucket plus the registry. Every failure is problem+json; malformed input is a
 * 4xx, never a 5xx.
 */
export type OmsApp = HttpApp

/** The ontology domain's routes (commands, reads, history) on the generic pipeline. */
export const createOmsApp = (options: OmsAppOptions): OmsApp => {
  const { eventStore, readModel, schema } = options
  const log = (options.logger ?? silentLogger).child({ component: 'oms' })
  const router = createRouter<RouteHandler>()
  const statusOptions: CommandStatusOptions = {
    eventStore,
    commandRecords: options.commandRecords,
    handlerOf: (command) => commandHandlerFor(command.aggregate_type),
    projectionHandler: HANDLERS.projection,
  }

  const parsedOrThrow = <T>(ctx: Ctx, parsed: Parsed<T>): T => {
    if (parsed.ok) return parsed.value
    // Schema-valid, but against a rule the schema states in words: unprocessable content.
    throw new RequestProblem(
      validationFailed(
        ctx,
        parsed.problems,
        'validation_failed',
        parsed.beyondSchema === true ? 422 : 400,
      ),
    )
  }

  /** A listing's page, from the query the contract validated (`after` is an id). */
  const listPage = (valid: ValidRequest): { limit: number; after?: string } => {
    const { limit, after } = valid.query as { limit?: number; after?: string }
    return { limit: limit ?? oms.DEFAULT_PAGE, ...(after === undefined ? {} : { after }) }
  }

  // ---- commands ----

  const submit = async (
    ctx: Ctx,
    valid: ValidRequest,
    build: (commandId: string) => Parsed<DomainCommand>,
    occ: 'create' | 'required',
  ): Promise<HttpResponse> => {
    const { commandId, key } = commandIdOf(ctx)
    const cmd = parsedOrThrow(ctx, build(commandId))
    const explicit = expectedSeqOf(ctx, valid)
    // A retried request answers from the stored command, whenever it comes (W3).
    const envelopeFor = (expectedSeq: number) =>
      commandEnvelope(cmd, {
        commandId,
        expectedSeq,
        actor: ctx.actor,
        correlationId: correlationIdOf(ctx, commandId),
        traceparent: ctx.traceparent,
      })
    if (key !== undefined) {
      const stored = await eventStore.getByEventId(commandId)
      if (stored !== null) {
        const storedExpected = stored.data['expected_seq']
        const again = envelopeFor(typeof storedExpected === 'number' ? storedExpected : 0)
        if (sameCommand(stored, again)) return acceptedOrOutcome(ctx, stored, statusOptions)
        return idempotencyKeyReused(ctx, key, commandId)
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
    return acceptedOrOutcome(ctx, stored, statusOptions)
  }

  const p = (ctx: Ctx, name: string): string => ctx.params[name] ?? ''

  const route = (
    op: Operation,
    handler: (ctx: Ctx, valid: ValidRequest) => Promise<HttpResponse>,
  ): void => addOperation(router, op, handler)

  route(oms.createDatabase, (ctx, valid) =>
    submit(ctx, valid, () => parseCreateDatabase(bodyJson(ctx)), 'create'),
  )
  route(oms.deleteDatabase, (ctx, valid) =>
    submit(ctx, valid, () => parseDeleteDatabase(p(ctx, 'db')), 'required'),
  )
  route(oms.createClass, (ctx, valid) =>
    submit(ctx, valid, () => parseCreateClass(p(ctx, 'db'), bodyJson(ctx)), 'create'),
  )
  route(oms.updateClass, (ctx, valid) =>
    submit(
      ctx,
      valid,
      () => parseUpdateClass(p(ctx, 'db'), p(ctx, 'class_id'), bodyJson(ctx)),
      'required',
    ),
  )
  route(oms.deleteClass, (ctx, valid) =>
    submit(ctx, valid, () => parseDeleteClass(p(ctx, 'db'), p(ctx, 'class_id')), 'required'),
  )
  route(oms.createInstance, (ctx, valid) =>
    submit(
      ctx,
      valid,
      (commandId) =>
        parseCreateInstance(p(ctx, 'db'), p(ctx, 'class_id'), bodyJson(ctx), commandId),
      'create',
    ),
  )
  route(oms.updateInstance, (ctx, valid) =>
    submit(
      ctx,
      valid,
      () =>
        parseUpdateInstance(p(ctx, 'db'), p(ctx, 'class_id'), p(ctx, 'instance_id'), bodyJson(ctx)),
      'required',
    ),
  )
  route(oms.deleteInstance, (ctx, valid) =>
    submit(
      ctx,
      valid,
      () => parseDeleteInstance(p(ctx, 'db'), p(ctx, 'class_id'), p(ctx, 'instance_id')),
      'required',
    ),
  )

  // ---- command status: the bucket says the command exists, the registry how far it got ----

  const status = commandStatus(statusOptions)
  route(oms.getCommand, (ctx) => status(ctx))

  // ---- reads (the read model) ----

  const withEtag = (ctx: Ctx, view: { seq: number }): HttpResponse => {
    const etag = `"${view.seq}"`
    if (ctx.req.headers['if-none-match'] === etag) {
      return { status: 304, headers: { etag }, body: '' }
    }
    return json(200, view, { etag })
  }

  route(oms.listDatabases, async (_ctx, valid) =>
    json(200, await listDatabases(readModel, schema, listPage(valid))),
  )
  route(oms.getDatabase, async (ctx) => {
    const view = await getDatabase(readModel, schema, p(ctx, 'db'))
    return view === null
      ? notFound(ctx.requestId, `no database ${p(ctx, 'db')}`)
      : withEtag(ctx, view)
  })
  route(oms.listClasses, async (ctx, valid) =>
    json(200, await listClasses(readModel, schema, p(ctx, 'db'), listPage(valid))),
  )
  route(oms.getClass, async (ctx) => {
    const view = await getClass(readModel, schema, p(ctx, 'db'), p(ctx, 'class_id'))
    return view === null
      ? notFound(ctx.requestId, `no class ${p(ctx, 'class_id')} in database ${p(ctx, 'db')}`)
      : withEtag(ctx, view)
  })
  route(oms.listInstances, async (ctx, valid) => {
    const cls = await getClass(readModel, schema, p(ctx, 'db'), p(ctx, 'class_id'))
    if (cls === null)
      return notFound(ctx.requestId, `no class ${p(ctx, 'class_id')} in database ${p(ctx, 'db')}`)
    const page = listPage(valid)
    const raw: Record<string, string> = {}
    for (const [k, v] of ctx.query) if (k !== 'limit' && k !== 'after') raw[k] = v
    const filter = parsedOrThrow(ctx, parseInstanceFilter(cls, raw))
    return json(
      200,
      await listInstances(readModel, schema, p(ctx, 'db'), p(ctx, 'class_id'), { ...page, filter }),
    )
  })
  route(oms.getInstance, async (ctx) => {
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
  })

  // ---- history (the bucket) ----

  route(oms.getHistory, async (ctx, valid) => {
    const type = p(ctx, 'aggregate_type')
    const id = p(ctx, 'aggregate_id')
    const from = valid.query['from_seq']
    const fromSeq = typeof from === 'number' ? from : 1
    const { limit } = listPage(valid)
    const events = await eventStore.readStream(type, id, { fromSeq, toSeq: fromSeq + limit - 1 })
    if (events.length === 0 && fromSeq === 1)
      return notFound(ctx.requestId, `no events for ${type} ${id}`)
    const last = events.at(-1)
    const current = await eventStore.currentSequence(type, id)
    const next =
      last !== undefined && last.sequence_number < current ? last.sequence_number + 1 : null
    return json(200, { aggregate_type: type, aggregate_id: id, events, next_from_seq: next })
  })

  // ---- the operator's API and the console ----

  if (options.operator !== undefined) addOperatorRoutes(router, options.operator, statusOptions)
  if (options.console !== undefined) addConsoleRoutes(router, options.console)

  return createHttpPipeline(router, {
    auth: options.auth,
    ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
    ...(options.maxInFlight === undefined ? {} : { maxInFlight: options.maxInFlight }),
    ...(options.ready === undefined ? {} : { ready: options.ready }),
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.tracer === undefined ? {} : { tracer: options.tracer }),
    openapi: () =>
      openApiOf(
        options.operator === undefined
          ? oms.OMS_OPERATIONS
          : [...oms.OMS_OPERATIONS, ...OPERATOR_OPERATIONS],
        {
          title: 'cairn OMS',
          description: oms.OMS_DESCRIPTION,
          authenticated: options.auth !== 'disabled',
        },
      ),
    component: 'oms',
  })
}
