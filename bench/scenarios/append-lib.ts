import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { aggregatePicker, CONCURRENCY, payloads } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { benchEnvelope, openBenchWriteSide } from '../lib/write-side.ts'

/**
 * Single-event appends through the library's event store against MinIO + PostgreSQL: each
 * append carries its expected sequence (OCC), as a command would; 10,000 aggregates.
 */
export const appendLib: Scenario = {
  name: 'append-lib',
  kind: 'scenario',
  summary:
    'single-event appends through the event store (createEventStore as openWriteSide composes it) on MinIO + PostgreSQL, expectedSeq OCC, 10,000 aggregates, closed loop',
  async run(ctx) {
    const ws = await openBenchWriteSide(ctx, 'append')
    const rows: ResultRow[] = []
    try {
      const next = payloads(ctx, 5)
      for (const c of CONCURRENCY) {
        const pick = aggregatePicker(ctx, c, 50 + c)
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
        rows.push(
          rowBetween(r.before, r.after, {
            scenario: 'append-lib',
            variant: `c=${c}`,
            kind: 'scenario',
            events: r.events,
            latency: r.latency,
            compareTo: [`raw-put c=${c}`, `emmett c=${c}`],
          }),
        )
      }
    } finally {
      await ws.close()
    }
    return rows
  },
}
