import { createOtlpTracer } from '../../src/adapters/tracing/otlp-tracer.ts'
import type { OtlpTracer } from '../../src/adapters/tracing/otlp-tracer.ts'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { BenchContext, ResultRow } from '../lib/harness.ts'
import { startOtlpSink } from '../lib/otlp-sink.ts'
import { aggregatePicker, CONCURRENCY, payloads } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { benchEnvelope, openBenchWriteSide } from '../lib/write-side.ts'

/**
 * The closed loops of one write side, at each concurrency; `traced`: its appends make spans that
 * the OTLP exporter sends to a sink on 127.0.0.1 (the rows named `… traced`).
 */
const loops = async (
  ctx: BenchContext,
  traced:
    | {
        readonly tracer: OtlpTracer
        readonly sent: () => { readonly requests: number; readonly bytes: number }
      }
    | undefined,
): Promise<ResultRow[]> => {
  const ws = await openBenchWriteSide(
    ctx,
    traced === undefined ? 'append' : 'append-traced',
    traced === undefined ? {} : { tracer: traced.tracer },
  )
  const rows: ResultRow[] = []
  try {
    const next = payloads(ctx, 5)
    for (const c of CONCURRENCY) {
      const pick = aggregatePicker(ctx, c, 50 + c)
      const sentBefore = traced?.sent()
      const r = await closedLoop(ctx, {
        concurrency: c,
        warmupMs: ctx.warmupMs,
        measureMs: ctx.measureMs,
        store: ws.store,
        op: async (client) => {
          const { index, seq } = pick(client)
          await ws.eventStore.append({
            envelopes: [benchEnvelope(`BenchC${c}`, index, next())],
            expectedSeq: seq,
          })
        },
      })
      // What the window's spans cost includes exporting them.
      await traced?.tracer.flush()
      const sent = traced?.sent()
      rows.push(
        rowBetween(r.before, r.after, {
          scenario: 'append-lib',
          variant: traced === undefined ? `c=${c}` : `c=${c} traced`,
          kind: 'scenario',
          events: r.events,
          latency: r.latency,
          compareTo:
            traced === undefined
              ? [`raw-put c=${c}`, `emmett c=${c}`]
              : [`append-lib c=${c}`, `raw-put c=${c}`],
          ...(traced === undefined
            ? {}
            : {
                notes: [
                  'tracing on: a span per append, exported over OTLP/HTTP (JSON) to a sink on 127.0.0.1 that answers at once; the CPU of exporting is in `bench`',
                ],
                extra: {
                  otlpRequests: (sent?.requests ?? 0) - (sentBefore?.requests ?? 0),
                  otlpBytes: (sent?.bytes ?? 0) - (sentBefore?.bytes ?? 0),
                },
              }),
        }),
      )
    }
  } finally {
    await ws.close()
  }
  return rows
}

/**
 * Single-event appends through the library's event store against MinIO + PostgreSQL: each
 * append carries its expected sequence (OCC), as a command would; 10,000 aggregates. Then the
 * same with tracing on, to show what it costs.
 */
export const appendLib: Scenario = {
  name: 'append-lib',
  kind: 'scenario',
  summary:
    'single-event appends through the event store (createEventStore as openWriteSide composes it) on MinIO + PostgreSQL, expectedSeq OCC, 10,000 aggregates, closed loop; again with tracing on (OTLP to a sink on 127.0.0.1)',
  async run(ctx) {
    const rows = await loops(ctx, undefined)
    const sink = await startOtlpSink()
    const tracer = createOtlpTracer({
      url: sink.url,
      serviceName: 'cairn-bench',
      logger: ctx.logger,
    })
    try {
      rows.push(...(await loops(ctx, { tracer, sent: () => sink.stats() })))
    } finally {
      await tracer.close()
      await sink.close()
    }
    return rows
  },
}
