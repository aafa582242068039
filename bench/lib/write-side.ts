import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { EventEnvelope } from '../../src/core/envelope.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import type { Tracer } from '../../src/core/ports/tracer.ts'
import { createEventStore } from '../../src/event-store/event-store.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import { countingStore } from './counting-store.ts'
import type { CountingStore } from './counting-store.ts'
import type { BenchContext } from './harness.ts'
import { aggregateId, pgSql, runName, s3Store } from './scenario.ts'

export type BenchWriteSide = {
  readonly store: CountingStore
  readonly sql: Sql
  readonly schema: string
  readonly eventStore: EventStore
  close(): Promise<void>
}

/**
 * The write side as `openWriteSide` composes it (S3 object store, pg registry, migrations,
 * allocator, event store with its defaults), over a bucket and a registry schema of this run, with
 * the object store wrapped in the counting decorator. The bucket and schema are removed at the end
 * of the run (unless `--keep`). The conformance probe is left out (it runs once at start and is
 * not part of the measurement).
 */
export const openBenchWriteSide = async (
  ctx: BenchContext,
  name: string,
  options: { readonly tracer?: Tracer } = {},
): Promise<BenchWriteSide> => {
  const bucket = runName(ctx, `cairn-bench-${name}`)
  const schema = runName(ctx, `bench_${name}`, '_')
  ctx.track({ kind: 'bucket', name: bucket })
  ctx.track({ kind: 'schema', name: schema })
  const store = countingStore(await s3Store(bucket))
  const sql = pgSql(ctx, name)
  await migrate(sql, schema)
  const eventStore = createEventStore({
    objectStore: store,
    allocator: createSequenceAllocator({ sql, schema }),
    logger: ctx.logger,
    ...(options.tracer === undefined ? {} : { tracer: options.tracer }),
  })
  return {
    store,
    sql,
    schema,
    eventStore,
    async close() {
      await eventStore.close()
      await sql.close()
      await store.close()
    },
  }
}

/** A single-event command's envelope with a 1 KiB payload. */
export const benchEnvelope = (
  aggregateType: string,
  index: number,
  payload: string,
): EventEnvelope =>
  createEnvelope({
    event_type: 'BenchEvent',
    aggregate_type: aggregateType,
    aggregate_id: aggregateId(index),
    data: { payload },
    metadata: { kind: 'domain' },
  })
