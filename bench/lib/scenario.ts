import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import type { BenchContext, ResultRow } from './harness.ts'
import { env } from './services.ts'
import { createRandom, randomText } from './stats.ts'

/** A scenario or baseline module: measures and returns its rows. */
export type Scenario = {
  readonly name: string
  readonly kind: 'scenario' | 'baseline'
  /** One line for the report: what is measured. */
  readonly summary: string
  run(ctx: BenchContext): Promise<ResultRow[]>
}

/** Concurrency settings of the closed-loop scenarios (issue 7: 1 and 64 clients). */
export const CONCURRENCY = [1, 64] as const

export const s3Store = (bucket: string): Promise<S3ObjectStore> =>
  createS3ObjectStore({
    endpoint: env('CAIRN_S3_ENDPOINT'),
    region: process.env.CAIRN_S3_REGION ?? 'us-east-1',
    credentials: {
      accessKeyId: env('CAIRN_S3_ACCESS_KEY_ID'),
      secretAccessKey: env('CAIRN_S3_SECRET_ACCESS_KEY'),
    },
    bucket,
  })

export const databaseUrl = (): string => env('CAIRN_DATABASE_URL')

export const kafkaBrokers = (): string[] => env('CAIRN_KAFKA_BROKERS').split(',')

/** cairn's default pool size (10), the same as Emmett's (pg.Pool's default). */
export const pgSql = (ctx: BenchContext, name: string): Sql =>
  createPgSql({
    connectionString: databaseUrl(),
    applicationName: `cairn-bench-${name}-${ctx.runId}`,
  })

/** A lower-case name unique to this run, usable as a bucket, topic or schema name. */
export const runName = (ctx: BenchContext, stem: string, sep = '-'): string =>
  `${stem}${sep}${ctx.runId}`.replace(/[^a-z0-9]+/g, sep)

/** 1 KiB payloads drawn from the run's seed (a pool, reused round robin: generation is not measured). */
export const payloads = (ctx: BenchContext, salt: number, count = 256): (() => string) => {
  const random = createRandom(ctx.seed + salt)
  const pool = Array.from({ length: count }, () => randomText(random, ctx.payloadBytes))
  let i = 0
  return () => pool[i++ % pool.length] ?? ''
}

/**
 * Aggregates for closed-loop clients: client `k` of `n` owns the aggregates `a ≡ k (mod n)`, so
 * clients never race on one aggregate and every append's expected sequence is known (OCC as a
 * command would carry it). Picks are drawn from the run's seed.
 */
export const aggregatePicker = (
  ctx: BenchContext,
  concurrency: number,
  salt: number,
): ((client: number) => { readonly index: number; readonly seq: number }) => {
  const random = createRandom(ctx.seed + salt)
  const seqs = new Map<number, number>()
  return (client) => {
    const slots = Math.ceil((ctx.aggregates - client) / concurrency)
    const index = client + concurrency * Math.floor(random() * slots)
    const seq = seqs.get(index) ?? 0
    seqs.set(index, seq + 1)
    return { index, seq }
  }
}

export const aggregateId = (index: number): string => `agg-${String(index).padStart(5, '0')}`
