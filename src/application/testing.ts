import { deepStrictEqual, fail } from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Static } from 'typebox'
import { randomUUID } from 'node:crypto'
import { createPgliteSql } from '../adapters/sql/pglite.ts'
import { loadConfig } from '../config/env.ts'
import type { Sql } from '../core/ports/sql.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { HttpResponse } from '../http/problem.ts'
import { foldStream, problemsOf, runDecide } from './decider.ts'
import type { CommandResult, Decision } from './decider.ts'
import type { AggregateEventOf, SomeCommand, DomainDefinition, Rejection } from './define.ts'
import { handlerNames } from './reactions.ts'
import { openService } from './service.ts'
import type { DecideMode, DomainService } from './service.ts'

/**
 * The test kit (`cairn/testing`): the decider's behaviour as given / when / then, without I/O,
 * and a harness that runs a whole domain (OMS, publisher, workers, projections) in this process
 * on the embedded stores.
 */

type ScenarioResult = {
  /** Asserts the decision's events (type and data, in order). */
  then(expected: readonly { readonly type: string; readonly data: unknown }[]): void
  /** Asserts a rejection, by code (and reason when given). */
  thenRejected(code: string, reason?: string): void
  /** The decision itself, for assertions of one's own. */
  readonly decision: Decision
}

/**
 * `given(events).when(command, payload).then(events)`: folds the events with the command's
 * aggregate, decides, and compares. The given events are checked against their schemas, so a
 * test cannot start from a state the aggregate could never be in.
 */
export const given = (
  events: readonly { readonly type: string; readonly data: unknown }[] = [],
) => ({
  when<C extends SomeCommand>(
    command: C,
    payload: Static<C['schema']>,
    ctx: {
      readonly commandId?: string
      readonly actor?: string | null
      readonly at?: string
      /** What the command's `load` would read (for a command that has one). */
      readonly loaded?: unknown
    } = {},
  ): ScenarioResult {
    const aggregate = command.aggregate
    const stored = events.map((e, i) => {
      const def = aggregate.events.find((d) => d.type === e.type)
      if (def === undefined) fail(`given: ${e.type} is not an event of ${aggregate.type}`)
      const problems = problemsOf(def.schema, e.data)
      if (problems.length > 0) {
        fail(
          `given: ${e.type} #${i + 1} does not match its schema: ${problems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`,
        )
      }
      return {
        event_id: `given-${i + 1}`,
        event_type: e.type,
        aggregate_type: aggregate.type,
        aggregate_id: 'given',
        sequence_number: i + 1,
        occurred_at: ctx.at ?? '2026-01-01T00:00:00.000Z',
        actor: ctx.actor ?? null,
        data: e.data as Record<string, unknown>,
        metadata: { kind: 'domain' as const },
        schema_version: String(def.version),
      }
    })
    const commandProblems = problemsOf(command.schema, payload)
    if (commandProblems.length > 0) {
      fail(
        `when: the ${command.type} payload does not match its schema: ${commandProblems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`,
      )
    }
    const state = foldStream(aggregate, aggregate.initialState(), stored)
    const decision = runDecide(command, payload, state, {
      commandId: ctx.commandId ?? '00000000-0000-4000-8000-000000000000',
      actor: ctx.actor ?? null,
      sequence: stored.length,
      submittedAt: ctx.at ?? '2026-01-01T00:00:00.000Z',
      loaded: ctx.loaded,
    })
    return {
      decision,
      then(expected) {
        if (decision.outcome === 'rejected') {
          fail(
            `expected events, got a rejection: ${decision.rejection.code}: ${decision.rejection.reason}`,
          )
        }
        deepStrictEqual(
          decision.events.map((e) => ({ type: e.type, data: e.data })),
          expected.map((e) => ({ type: e.type, data: e.data })),
        )
      },
      thenRejected(code, reason) {
        if (decision.outcome !== 'rejected') {
          fail(
            `expected a rejection ${code}, got events ${decision.events.map((e) => e.type).join(', ') || '(none)'}`,
          )
        }
        deepStrictEqual(decision.rejection.code, code)
        if (reason !== undefined) deepStrictEqual(decision.rejection.reason, reason)
      },
    }
  },
})

/** Typed events for `given`, e.g. `eventsOf(Deposit, { type: 'Deposited', data: … })`. */
export const eventsOf = <C extends SomeCommand>(
  _command: C,
  ...list: AggregateEventOf<C['aggregate']>[]
): readonly AggregateEventOf<C['aggregate']>[] => list

export type { Rejection }

// ---- the in-process harness ----

/** Settings that make an embedded service react within milliseconds. */
const FAST: Readonly<Record<string, string>> = {
  LOG_LEVEL: 'silent',
  EVENT_PUBLISHER_POLL_INTERVAL_SECONDS: '1',
  PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS: '2',
  PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS: '30',
  EVENT_STORE_MAX_INDEX_DELAY_SECONDS: '2',
  EVENT_STORE_MAX_CLOCK_SKEW_SECONDS: '1',
  WORKER_COMMIT_INTERVAL_MS: '0',
}

export type TestService = DomainService & {
  readonly dataDir: string
  /** The database schema of this service's registry, read model and snapshots. */
  readonly schema: string
  /** Waits for a command's outcome (default bound 10 s). */
  waitForCommand(commandId: string, timeoutMs?: number): Promise<CommandResult>
  /**
   * Waits until every stored command and event has been handled by every worker that takes it
   * (commands decided, reactions sent, projections applied): the domain is at rest.
   */
  settle(timeoutMs?: number): Promise<void>
  /** Sends a request to the HTTP API in-process; the body is parsed when it is JSON. */
  request<T = unknown>(
    method: string,
    url: string,
    body?: unknown,
    headers?: Readonly<Record<string, string>>,
  ): Promise<{
    readonly status: number
    readonly headers: HttpResponse['headers']
    readonly body: T
  }>
  /** Closes and removes the data directory. */
  destroy(): Promise<void>
}

/**
 * A whole domain in this process on the embedded stores (filesystem bucket in a temporary
 * directory, PGlite, the in-process bus): for integration tests. `destroy()` when done.
 */
/**
 * One in-memory PGlite for the test services of a process, each in a schema of its own: starting
 * PGlite takes seconds, a schema a few milliseconds.
 */
let shared: Promise<Sql> | undefined
const sharedSql = (): Promise<Sql> => (shared ??= createPgliteSql())

export const createTestService = async (
  domain: DomainDefinition,
  options: {
    readonly decide?: DecideMode
    readonly env?: Readonly<Record<string, string>>
    readonly logger?: Logger
  } = {},
): Promise<TestService> => {
  const dataDir = await mkdtemp(path.join(tmpdir(), `cairn-${domain.name}-`))
  const config = loadConfig({
    ...FAST,
    CAIRN_MODE: 'embedded',
    CAIRN_DATA_DIR: dataDir,
    EVENT_STORE_SEQUENCE_SCHEMA: `test_${randomUUID().replace(/-/g, '').slice(0, 16)}`,
    ...options.env,
  })
  const sql =
    options.env?.['EVENT_STORE_SEQUENCE_SCHEMA'] === undefined ? await sharedSql() : undefined
  const dropSchema = async () => {
    if (sql !== undefined)
      await sql.exec(`DROP SCHEMA IF EXISTS ${config.sequencing.schema} CASCADE`)
  }
  let service: DomainService
  try {
    service = await openService({
      domain,
      config,
      logger: options.logger ?? silentLogger,
      ...(options.decide === undefined ? {} : { decide: options.decide }),
      ...(sql === undefined ? {} : { sql }),
    })
  } catch (error) {
    await dropSchema().catch(() => undefined)
    await rm(dataDir, { recursive: true, force: true })
    throw error
  }
  const names = handlerNames(domain)
  const schema = config.sequencing.schema
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

  /** The handlers that take a stored envelope. */
  const takers = (e: {
    event_type: string
    aggregate_type: string
    metadata: { kind: string }
  }) => {
    if (e.metadata.kind === 'command') return [names.commands]
    const owner = domain.aggregates.find((a) => a.type === e.aggregate_type)
    const def = owner?.events.find((d) => d.type === e.event_type)
    if (def === undefined) return []
    return [
      ...domain.processManagers
        .filter((p) => p.events.includes(def))
        .map((p) => names.processManager(p.name)),
      ...domain.projections
        .filter((p) => p.events.includes(def))
        .map((p) => names.projection(p.name)),
    ]
  }

  const settle = async (timeoutMs = 10_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const open: string[] = []
      // The records first, then the events: a handler stores what it leads to before it records
      // its event done, so an event it stored after this read shows up below with no record.
      const rows = await service.ws.sql.query<{
        handler: string
        event_id: string
        status: string
      }>(`SELECT handler, event_id, status FROM ${schema}.processed_events`)
      const wanted: { handler: string; eventId: string }[] = []
      for await (const e of service.ws.eventStore.readByDate(0, Number.POSITIVE_INFINITY)) {
        for (const handler of takers(e)) wanted.push({ handler, eventId: e.event_id })
      }
      const status = new Map(rows.map((r) => [`${r.handler}\u0000${r.event_id}`, r.status]))
      for (const w of wanted) {
        const s = status.get(`${w.handler}\u0000${w.eventId}`)
        if (s === undefined || s === 'processing' || s === 'released')
          open.push(`${w.handler} ${w.eventId}`)
      }
      if (open.length === 0) return
      if (Date.now() > deadline) {
        throw new Error(`not settled after ${timeoutMs} ms: ${open.slice(0, 5).join(', ')} …`)
      }
      await sleep(20)
    }
  }

  const waitForCommand = async (commandId: string, timeoutMs = 10_000): Promise<CommandResult> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const result = await service.outcome(commandId)
      if (result !== null) return result
      if (Date.now() > deadline)
        throw new Error(`command ${commandId}: no outcome after ${timeoutMs} ms`)
      await sleep(10)
    }
  }

  const request = async <T>(
    method: string,
    url: string,
    body?: unknown,
    headers: Readonly<Record<string, string>> = {},
  ): Promise<{ status: number; headers: HttpResponse['headers']; body: T }> => {
    const response = await service.app.handle({
      method,
      url,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])),
      },
      body: body === undefined ? null : new TextEncoder().encode(JSON.stringify(body)),
    })
    const type = response.headers['content-type'] ?? ''
    return {
      status: response.status,
      headers: response.headers,
      body: (/json/.test(type) && response.body !== ''
        ? JSON.parse(response.body)
        : response.body) as never,
    }
  }

  return Object.assign(service, {
    dataDir,
    schema,
    waitForCommand,
    settle,
    request,
    async destroy() {
      await service.close()
      await dropSchema()
      await rm(dataDir, { recursive: true, force: true })
    },
  })
}
