import type { StoredEnvelope } from '../core/envelope.ts'
import type { PipelineOverview } from '../operate/overview.ts'
import { resetTime } from '../publisher/checkpoint.ts'
import type { ProcessedEventRegistry, RegistryRow } from '../registry/processed-events.ts'
import * as ops from './operator-contract.ts'
import {
  addOperation,
  bodyJson,
  commandView,
  json,
  notFound,
  validationFailed,
} from './pipeline.ts'
import type { CommandStatusOptions, RouteHandler } from './pipeline.ts'
import { problem } from './problem.ts'
import type { Router } from './router.ts'
import { problemsOf } from './validate.ts'
import type { Logger } from '../core/ports/logger.ts'

/** What the operator's routes read and change. */
export type OperatorOptions = {
  /** The pipeline's overview (src/operate/overview.ts, as `cairn status`). */
  readonly overview: () => Promise<PipelineOverview>
  readonly registry: Pick<
    ProcessedEventRegistry,
    'listParked' | 'retryParked' | 'skipParked' | 'status'
  >
  /**
   * Moves the publisher's checkpoint to a time (ms): the keys it moved from and to, or null when
   * it changed meanwhile (src/publisher/checkpoint.ts, `resetCheckpoint`).
   */
  readonly resetCheckpoint: (
    toMs: number,
  ) => Promise<{ readonly from: string | null; readonly to: string } | null>
  /** One overview every this many ms on the stream (default 2,000). */
  readonly streamIntervalMs?: number
  /** Operators' actions are logged here, with their actor. */
  readonly logger?: Logger
}

/** A registry record as the API shows it. */
export const recordView = (r: RegistryRow) => ({
  handler: r.handler,
  event_id: r.eventId,
  aggregate_type: r.aggregateType,
  aggregate_id: r.aggregateId,
  sequence_number: r.seq,
  status: r.status,
  attempts: r.attempts,
  last_error: r.lastError,
  updated_at: r.updatedAt,
  resolved_by: r.resolvedBy,
  resolved_at: r.resolvedAt,
})

/** Waits `ms`, or less when `signal` aborts. */
const pause = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', done)
      resolve()
    }, ms)
    signal.addEventListener('abort', done, { once: true })
  })

/** One server-sent event: its data on `data:` lines (JSON has no raw newlines anyway). */
const sse = (event: string, data: unknown): string =>
  `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

/** The ids of the events a command's handler recorded as its result. */
const decidedEventIds = (rows: readonly RegistryRow[], handler: string): string[] => {
  const result = rows.find((r) => r.handler === handler)?.result as
    { events?: unknown } | null | undefined
  const events: readonly unknown[] = Array.isArray(result?.events) ? result.events : []
  return events.flatMap((e) => {
    const id = (e as { event_id?: unknown } | null)?.event_id
    return typeof id === 'string' ? [id] : []
  })
}

/** Adds the operator's routes (src/http/operator-contract.ts) to a router. */
export const addOperatorRoutes = (
  router: Router<RouteHandler>,
  options: OperatorOptions,
  commands: CommandStatusOptions,
): void => {
  const { registry } = options
  const interval = options.streamIntervalMs ?? 2_000

  addOperation(router, ops.getOverview, async () => json(200, await options.overview()))

  addOperation(router, ops.streamOverview, async (_ctx, valid) => {
    const seconds = typeof valid.query['seconds'] === 'number' ? valid.query['seconds'] : 300
    const first = await options.overview()
    return {
      status: 200,
      headers: {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        // Proxies must not hold the events back (nginx buffers responses by default).
        'x-accel-buffering': 'no',
      },
      // The client reconnects this long after the stream ends.
      body: `retry: ${interval}\n\n${sse('overview', first)}`,
      stream: async function* (signal) {
        const end = Date.now() + seconds * 1000
        for (;;) {
          await pause(Math.min(interval, end - Date.now()), signal)
          if (signal.aborted || Date.now() >= end) return
          try {
            yield sse('overview', await options.overview())
          } catch (error) {
            // A dependency away: say so and go on; the next snapshot may succeed.
            yield sse('unavailable', { detail: String((error as Error).message).slice(0, 300) })
          }
        }
      },
    }
  })

  addOperation(router, ops.listParked, async (_ctx, valid) => {
    const handler = valid.query['handler']
    const rows = await registry.listParked(typeof handler === 'string' ? handler : undefined)
    return json(200, { items: rows.map(recordView) })
  })

  for (const [op, verb] of [
    [ops.retryParked, 'retry'],
    [ops.skipParked, 'skip'],
  ] as const) {
    addOperation(router, op, async (ctx) => {
      const handler = ctx.params['handler'] ?? ''
      const eventId = ctx.params['event_id'] ?? ''
      // Without tokens (embedded) nobody is named: the console says so.
      const actor = ctx.actor ?? 'anonymous'
      const n =
        verb === 'retry'
          ? await registry.retryParked(handler, [eventId], actor)
          : await registry.skipParked(handler, [eventId], actor)
      const row = (await registry.status(eventId)).find((r) => r.handler === handler)
      if (n === 0 || row === undefined) {
        return notFound(ctx.requestId, `${handler} has no failed or parked record of ${eventId}`)
      }
      return json(200, recordView(row))
    })
  }

  addOperation(router, ops.resetCheckpoint, async (ctx) => {
    const body = bodyJson(ctx)
    const problems = problemsOf(ops.ResetCheckpointBody, body)
    if (problems.length > 0) return validationFailed(ctx, problems)
    const time = resetTime((body as { to: string }).to, Date.now())
    if ('problem' in time) {
      return validationFailed(
        ctx,
        [{ pointer: '/to', message: time.problem }],
        'validation_failed',
        422,
      )
    }
    const moved = await options.resetCheckpoint(time.ms)
    if (moved === null) {
      return problem({
        status: 409,
        code: 'checkpoint_changed',
        title: 'Conflict',
        detail:
          'the checkpoint changed while it was reset (the publisher saved meanwhile); try again',
        request_id: ctx.requestId,
      })
    }
    options.logger?.warn(
      { actor: ctx.actor, ...moved, request_id: ctx.requestId },
      'checkpoint reset',
    )
    return json(200, { ...moved, actor: ctx.actor })
  })

  addOperation(router, ops.getCommandPath, async (ctx) => {
    const id = (ctx.params['command_id'] ?? '').toLowerCase()
    const command = await commands.eventStore.getByEventId(id)
    if (command === null || command.metadata.kind !== 'command') {
      return notFound(ctx.requestId, `no command ${id}`)
    }
    const [status, records] = await Promise.all([
      commandView(commands, command),
      registry.status(id),
    ])
    const ids = decidedEventIds(records, commands.handlerOf(command))
    const events = await Promise.all(
      ids.map(async (eventId) => {
        const [envelope, rows]: [StoredEnvelope | null, RegistryRow[]] = await Promise.all([
          commands.eventStore.getByEventId(eventId),
          registry.status(eventId),
        ])
        return { event_id: eventId, envelope, records: rows.map(recordView) }
      }),
    )
    return json(200, { status, command, records: records.map(recordView), events })
  })
}
