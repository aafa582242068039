import { getPostgreSQLEventStore } from '@event-driven-io/emmett-postgresql'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { BenchContext, ResultRow } from '../lib/harness.ts'
import type { CountingStore } from '../lib/counting-store.ts'
import { databaseUrl, payloads, pgSql, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { benchEnvelope, openBenchWriteSide } from '../lib/write-side.ts'

/** Events in the stream read back. */
const STREAM_EVENTS = 1_000
/** The first page read. */
const PAGE = 100
/** Events per append while the stream is seeded (the seeding is not measured). */
const SEED_GROUP = 50

/**
 * Reads the first page, then the whole stream, one client back to back; `read(count)` returns how
 * many events it got. One row per read size; an event is one event read.
 */
const measureReads = async (
  ctx: BenchContext,
  row: { readonly scenario: string; readonly kind: 'scenario' | 'baseline' },
  read: (count: number) => Promise<number>,
  store?: CountingStore,
): Promise<ResultRow[]> => {
  const rows: ResultRow[] = []
  for (const [variant, count] of [
    [`first ${PAGE}`, PAGE],
    [`all ${STREAM_EVENTS}`, STREAM_EVENTS],
  ] as const) {
    const r = await closedLoop(ctx, {
      concurrency: 1,
      warmupMs: ctx.warmupMs,
      measureMs: ctx.measureMs,
      ...(store === undefined ? {} : { store }),
      op: async () => {
        const got = await read(count)
        if (got !== count) throw new Error(`${row.scenario} read ${got} of ${count} events`)
      },
    })
    rows.push(
      rowBetween(r.before, r.after, {
        ...row,
        variant,
        events: r.events * count,
        latency: r.latency,
        ...(row.kind === 'scenario' ? { compareTo: [`emmett-history ${variant}`] } : {}),
      }),
    )
  }
  return rows
}

/**
 * Reading one aggregate's history of 1,000 events of 1 KiB: its first page of 100 and the whole
 * stream, one client reading back to back, through the event store (`readStream`, no cache of its
 * own) and through Emmett's PostgreSQL `readStream` on the same server, side by side. An event is
 * one event read, so events/s is read throughput and the latency is one whole read.
 */
export const history: Scenario = {
  name: 'history',
  kind: 'scenario',
  summary: `one aggregate of ${STREAM_EVENTS} events of 1 KiB read back: first page of ${PAGE}, and whole (readStream), one client, side by side with Emmett's PostgreSQL readStream of the same stream`,
  async run(ctx) {
    const rows: ResultRow[] = []
    const next = payloads(ctx, 9)
    const streamId = 0

    // Emmett, in a database of its own (dropped at the end of the run, unless --keep).
    const database = runName(ctx, 'cairn_bench_emmett_history', '_')
    ctx.track({ kind: 'database', name: database })
    const admin = pgSql(ctx, 'emmett-history-admin')
    await admin.exec(`CREATE DATABASE ${database}`).finally(() => admin.close())
    const url = new URL(databaseUrl())
    url.pathname = `/${database}`
    const emmett = getPostgreSQLEventStore(url.toString())
    const streamName = `BenchHistory-${streamId}`
    try {
      await emmett.schema.migrate()
      for (let n = 0; n < STREAM_EVENTS; n += SEED_GROUP) {
        await emmett.appendToStream(
          streamName,
          Array.from({ length: SEED_GROUP }, () => ({
            type: 'BenchEvent',
            data: { payload: next() },
          })),
          { expectedStreamVersion: BigInt(n) },
        )
      }
      rows.push(
        ...(await measureReads(ctx, { scenario: 'emmett-history', kind: 'baseline' }, async (n) => {
          const read = await emmett.readStream(streamName, { to: BigInt(n) })
          return read.events.length
        })),
      )
    } finally {
      await emmett.close()
    }

    const ws = await openBenchWriteSide(ctx, 'history')
    try {
      for (let n = 0; n < STREAM_EVENTS; n += SEED_GROUP) {
        await ws.eventStore.append({
          envelopes: Array.from({ length: SEED_GROUP }, () =>
            benchEnvelope('BenchHistory', streamId, next()),
          ),
          expectedSeq: n,
        })
      }
      const aggregateId = benchEnvelope('BenchHistory', streamId, '').aggregate_id
      rows.push(
        ...(await measureReads(
          ctx,
          { scenario: 'history', kind: 'scenario' },
          async (n) =>
            (await ws.eventStore.readStream('BenchHistory', aggregateId, { toSeq: n })).length,
          ws.store,
        )),
      )
    } finally {
      await ws.close()
    }
    return rows
  },
}
