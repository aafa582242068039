import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { canonicalJson } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import type { BusMessage } from '../../src/core/ports/bus.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { createWorker } from '../../src/worker/worker.ts'
import { rowBetween, snapshot } from '../lib/harness.ts'
import type { BenchContext, ResultRow, Snapshot } from '../lib/harness.ts'
import { kafkaBrokers, payloads, pgSql, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { sleep } from '../lib/stats.ts'
import { benchEnvelope } from '../lib/write-side.ts'

const encoder = new TextEncoder()
const BATCH = 1_000

/**
 * A backlog of stored envelopes on a Kafka topic (10,000 aggregates, sequences in order),
 * drained by one worker of cairn's runtime with a transactional projection: a fetched batch is
 * claimed, its projection rows written in one statement (the handler's batch form) and marked
 * done in one transaction. The window runs from 5 % of the backlog (after the group join and the
 * first batches) to the last event.
 */
export const consume: Scenario = {
  name: 'consume',
  kind: 'scenario',
  summary:
    'a backlog on Kafka drained by one createWorker (exactly-once: a batch claimed, projected in one INSERT and marked done in one transaction); events/s from 5 % to 100 % of the backlog',
  async run(ctx) {
    // The default batch (WORKER_BATCH_SIZE), then a larger one: statements per batch, so the
    // per-event cost falls as the batch grows.
    const rows: ResultRow[] = []
    for (const batchSize of [500, 2_000]) rows.push(await drain(ctx, batchSize))
    return rows
  },
}

/** One backlog, drained by one worker taking `batchSize` messages per poll. */
const drain = async (ctx: BenchContext, batchSize: number): Promise<ResultRow> => {
  const backlog = ctx.quick ? 20_000 : 100_000
  const topic = runName(ctx, `cairn-bench-consume-${batchSize}`)
  const groupId = runName(ctx, `cairn-bench-consume-worker-${batchSize}`)
  ctx.track({ kind: 'topics', topics: [topic, `${topic}-dlq`], groups: [groupId] })
  const bus = createKafkaBus({
    brokers: kafkaBrokers(),
    clientId: 'cairn-bench',
    logger: ctx.logger,
  })
  const sql = pgSql(ctx, 'consume')
  const schema = runName(ctx, `bench_consume_${batchSize}`, '_')
  ctx.track({ kind: 'schema', name: schema })
  const abort = new AbortController()
  try {
    await bus.ensureTopics([
      { name: topic, partitions: 3 },
      { name: `${topic}-dlq`, partitions: 1 },
    ])
    const producer = bus.producer({ clientId: 'cairn-bench-backlog' })
    const next = payloads(ctx, 8)
    const t0 = Date.now()
    for (let start = 0; start < backlog; start += BATCH) {
      const messages: BusMessage[] = []
      for (let i = start; i < Math.min(backlog, start + BATCH); i++) {
        const index = i % ctx.aggregates
        const envelope: StoredEnvelope = {
          ...benchEnvelope('BenchConsume', index, next()),
          sequence_number: Math.floor(i / ctx.aggregates) + 1,
        }
        messages.push({
          topic,
          key: envelope.aggregate_id,
          value: encoder.encode(canonicalJson(envelope)),
          headers: { event_id: envelope.event_id },
        })
      }
      await producer.send(messages)
    }
    await producer.close()
    ctx.log(`  backlog of ${backlog} events produced in ${((Date.now() - t0) / 1000).toFixed(1)} s`)

    await migrate(sql, schema)
    await sql.exec(
      `CREATE TABLE ${schema}.projection (event_id text PRIMARY KEY, aggregate_id text NOT NULL, seq bigint NOT NULL, bytes int NOT NULL)`,
    )
    const registry = createProcessedEventRegistry({ sql, schema, member: 'bench-consume' })
    const worker = createWorker({
      bus,
      registry,
      handler: 'projection:bench',
      topics: [topic],
      groupId,
      transactional: sql,
      batchSize,
      logger: ctx.logger,
      handle: async (e, hctx) => {
        if (hctx.tx === undefined) throw new Error('the projection needs the transaction')
        const payload = e.data.payload
        await hctx.tx.query(
          `INSERT INTO ${schema}.projection (event_id, aggregate_id, seq, bytes) VALUES ($1, $2, $3, $4)`,
          [
            e.event_id,
            e.aggregate_id,
            e.sequence_number,
            typeof payload === 'string' ? payload.length : 0,
          ],
        )
      },
      // The batch form: a batch's rows in one statement (retries go one by one through `handle`).
      handleBatch: async (events, hctx) => {
        if (hctx.tx === undefined) throw new Error('the projection needs the transaction')
        const rows = await hctx.tx.query(
          `INSERT INTO ${schema}.projection (event_id, aggregate_id, seq, bytes)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[]) RETURNING 1`,
          [
            events.map((e) => e.event_id),
            events.map((e) => e.aggregate_id),
            events.map((e) => e.sequence_number),
            events.map((e) => (typeof e.data.payload === 'string' ? e.data.payload.length : 0)),
          ],
        )
        return rows.map(() => undefined)
      },
    })
    const running = worker.run(abort.signal)
    const from = Math.ceil(backlog * 0.05)
    const deadline = Date.now() + (ctx.quick ? 90_000 : 300_000)
    let before: { snap: Snapshot; processed: number } | undefined
    let after: { snap: Snapshot; processed: number } | undefined
    while (Date.now() < deadline) {
      const processed = worker.metrics().processed
      if (before === undefined && processed >= from)
        before = { snap: await snapshot(ctx), processed }
      if (processed >= backlog) {
        after = { snap: await snapshot(ctx), processed }
        break
      }
      await sleep(10)
    }
    abort.abort()
    await running
    const m = worker.metrics()
    await worker.close()
    if (before === undefined || after === undefined) {
      throw new Error(
        `the worker processed ${m.processed} of ${backlog} events before the deadline`,
      )
    }
    const [counts] = await sql.query<{ rows: string; ids: string }>(
      `SELECT count(*) AS rows, count(DISTINCT event_id) AS ids FROM ${schema}.projection`,
    )
    const rows = Number(counts?.rows ?? 0)
    const ids = Number(counts?.ids ?? 0)
    return rowBetween(before.snap, after.snap, {
      scenario: 'consume',
      variant: `${backlog} backlog, batch ${batchSize}`,
      kind: 'scenario',
      events: after.processed - before.processed,
      latency: null,
      compareTo: ['claim-done c=1', 'claim-done c=64'],
      notes: [
        rows === backlog && ids === backlog
          ? `exactly once: ${rows} projection rows, one per event`
          : `NOT exactly once: ${rows} projection rows, ${ids} distinct events, ${backlog} produced`,
      ],
      extra: { backlog, batchSize, projectionRows: rows, distinctEvents: ids, worker: m },
    })
  } finally {
    abort.abort()
    await bus.close()
    await sql.close()
  }
}
