import { getPostgreSQLEventStore } from '@event-driven-io/emmett-postgresql'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import {
  aggregateId,
  aggregatePicker,
  CONCURRENCY,
  databaseUrl,
  payloads,
  pgSql,
  runName,
} from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'

/**
 * The peer: Emmett's PostgreSQL event store on the same server, appending the same workload as
 * `append-lib` (single-event appends to 10,000 streams, expected version carried like a
 * command's), in a database of its own (dropped at the end of the run, unless `--keep`).
 */
export const emmett: Scenario = {
  name: 'emmett',
  kind: 'baseline',
  summary:
    "Emmett's PostgreSQL event store (@event-driven-io/emmett-postgresql, its default pool of 10): single-event appendToStream with expectedStreamVersion to 10,000 streams, closed loop",
  async run(ctx) {
    const database = runName(ctx, 'cairn_bench_emmett', '_')
    ctx.track({ kind: 'database', name: database })
    const admin = pgSql(ctx, 'emmett-admin')
    await admin.exec(`CREATE DATABASE ${database}`).finally(() => admin.close())
    const url = new URL(databaseUrl())
    url.pathname = `/${database}`
    const store = getPostgreSQLEventStore(url.toString())
    const rows: ResultRow[] = []
    try {
      await store.schema.migrate()
      const next = payloads(ctx, 4)
      for (const c of CONCURRENCY) {
        const pick = aggregatePicker(ctx, c, 40 + c)
        const r = await closedLoop(ctx, {
          concurrency: c,
          warmupMs: ctx.warmupMs,
          measureMs: ctx.measureMs,
          op: async (client) => {
            const { index, seq } = pick(client)
            await store.appendToStream(
              `BenchC${c}-${aggregateId(index)}`,
              [{ type: 'BenchEvent', data: { payload: next() } }],
              { expectedStreamVersion: BigInt(seq) },
            )
          },
        })
        rows.push(
          rowBetween(r.before, r.after, {
            scenario: 'emmett',
            variant: `c=${c}`,
            kind: 'baseline',
            events: r.events,
            latency: r.latency,
          }),
        )
      }
    } finally {
      await store.close()
    }
    return rows
  },
}
