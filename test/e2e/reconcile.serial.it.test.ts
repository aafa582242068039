import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import { isCairnError } from '../../src/core/errors.ts'
import { listAll } from '../../src/core/ports/object-store.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { createEventStore } from '../../src/event-store/event-store.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { BY_DATE_PREFIX } from '../../src/event-store/keys.ts'
import { parseSegment } from '../../src/event-store/segment.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import { dropBucket } from '../support/adapters.ts'
import { childEnv } from '../support/child.ts'
import { startPrivatePostgres } from '../support/private-postgres.ts'
import { s3Targets, uniqueName } from '../support/services.ts'

/**
 * W2 when PostgreSQL and the bucket disagree (DESIGN.md sections 3 and 4): PostgreSQL's data is
 * restored to an older copy under running writers while the bucket holds newer segments. No
 * sequence is ever stored twice; appends are refused with the command that reconciles; after
 * `cairn reconcile --yes` (its own process) they continue from the bucket's truth.
 */
const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node')
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')
const SCHEMA = 'cairn_reconcile'
const BOUND_S = 2
const AGGREGATES = Array.from({ length: 5 }, (_, i) => `agg-${i}`)

const event = (aggregateId: string): ReturnType<typeof createEnvelope> =>
  createEnvelope({
    event_id: randomUUID(),
    event_type: 'THING_HAPPENED',
    aggregate_type: 'Thing',
    aggregate_id: aggregateId,
    data: {},
    metadata: { kind: 'domain' },
  })

/** Every (aggregate, sequence) stored in the bucket, with how many distinct events hold it. */
const storedSequences = async (store: ObjectStore): Promise<Map<string, Set<string>>> => {
  const out = new Map<string, Set<string>>()
  for await (const key of listAll(store, BY_DATE_PREFIX)) {
    const got = await store.get(key)
    if (got === null) continue
    const parsed = parseSegment(got.body)
    if (parsed.kind === 'gap') continue
    for (const line of parsed.lines) {
      const e = JSON.parse(line) as {
        aggregate_id: string
        sequence_number: number
        event_id: string
      }
      const k = `${e.aggregate_id}#${e.sequence_number}`
      const ids = out.get(k) ?? new Set<string>()
      ids.add(e.event_id)
      out.set(k, ids)
    }
  }
  return out
}

const maxSeqOf = (stored: Map<string, Set<string>>, agg: string): number => {
  let max = 0
  for (const k of stored.keys()) {
    const [a, seq] = k.split('#')
    if (a === agg) max = Math.max(max, Number(seq))
  }
  return max
}

test('PostgreSQL restored to an older copy under running writers: no sequence stored twice; reconciled, appends continue from the bucket', async () => {
  const pg = await startPrivatePostgres()
  const target = s3Targets()[0]
  assert.ok(target !== undefined)
  const bucket = uniqueName('cairn-reconcile')
  const objectStore = await createS3ObjectStore({
    endpoint: target.endpoint,
    region: target.region,
    credentials: { accessKeyId: target.accessKeyId, secretAccessKey: target.secretAccessKey },
    bucket,
  })
  const pools = [
    createPgSql({ connectionString: pg.url }),
    createPgSql({ connectionString: pg.url }),
  ]
  const writers: EventStore[] = []
  let loading = false
  try {
    await migrate(pools[0] as NonNullable<(typeof pools)[0]>, SCHEMA)
    // Two writers with their own pools, as two OMS processes have.
    for (const sql of pools) {
      writers.push(
        createEventStore({
          objectStore,
          allocator: createSequenceAllocator({ sql, schema: SCHEMA }),
          maxSegmentDelayMs: BOUND_S * 1000,
          repairIntervalMs: 0,
        }),
      )
    }
    const [a, b] = writers as [EventStore, EventStore]
    const appendRound = async (): Promise<void> => {
      await Promise.all(
        AGGREGATES.map((agg, i) => (i % 2 === 0 ? a : b).append({ envelopes: [event(agg)] })),
      )
    }
    for (let i = 0; i < 3; i++) await appendRound()
    const copy = await pg.backup()
    // Newer segments the copy does not know.
    for (let i = 0; i < 3; i++) await appendRound()

    // Running writers: appends go on, one after another per aggregate, through the restore.
    loading = true
    const outcomes: { at: number; agg: string; seq?: number; code?: string }[] = []
    const load = Promise.all(
      AGGREGATES.map(async (agg, i) => {
        const w = i % 2 === 0 ? a : b
        while (loading) {
          try {
            const r = await w.append({ envelopes: [event(agg)] })
            outcomes.push({ at: Date.now(), agg, seq: r.envelopes[0]?.sequence_number ?? 0 })
          } catch (error) {
            outcomes.push({
              at: Date.now(),
              agg,
              code: isCairnError(error) ? error.code : String(error),
            })
            await new Promise((r) => setTimeout(r, 50))
          }
        }
      }),
    )
    await new Promise((r) => setTimeout(r, 500))
    const restoredAt = Date.now()
    await pg.restore(copy)
    // Long enough for every writer to notice (after the bound since the server's start).
    await new Promise((r) => setTimeout(r, (BOUND_S + 3) * 1000))
    const beforeReconcile = await storedSequences(objectStore)
    for (const [k, ids] of beforeReconcile)
      assert.equal(ids.size, 1, `sequence ${k} stored ${ids.size} times: ${[...ids].join(', ')}`)
    const refused = outcomes.filter((o) => o.at > restoredAt && o.code === 'REGISTRY_BEHIND_BUCKET')
    assert.ok(refused.length > 0, `no append was refused: ${JSON.stringify(outcomes.slice(-10))}`)

    // The operator runs the command the refusal names, as its own process.
    const env = childEnv({
      CAIRN_MODE: 'distributed',
      CAIRN_S3_ENDPOINT: target.endpoint,
      CAIRN_S3_ACCESS_KEY_ID: target.accessKeyId,
      CAIRN_S3_SECRET_ACCESS_KEY: target.secretAccessKey,
      CAIRN_DATABASE_URL: pg.url,
      EVENT_STORE_BUCKET: bucket,
      EVENT_STORE_SEQUENCE_SCHEMA: SCHEMA,
      EVENT_STORE_MAX_INDEX_DELAY_SECONDS: String(BOUND_S),
      LOG_LEVEL: 'warn',
    })
    const check = await run(NODE, [MAIN, 'reconcile', '--check'], { env, timeout: 60_000 }).then(
      () => null,
      (error: { code?: number; stderr?: string }) => error,
    )
    assert.ok(check !== null && check.code !== 0, 'the check reports the disagreement')
    assert.match(check.stderr ?? '', /cairn reconcile --yes/)
    const reconciled = await run(NODE, [MAIN, 'reconcile', '--yes', '--json'], {
      env,
      timeout: 120_000,
    })
    assert.match(reconciled.stderr, /segments read/)
    const summary = JSON.parse(reconciled.stdout.trim().split('\n').at(-1) ?? '{}') as {
      events: number
      clashes: string[]
    }
    assert.deepEqual(summary.clashes, [])
    const reconciledAt = Date.now()

    // Appends resume on the bucket's truth.
    const deadline = Date.now() + 30_000
    while (
      outcomes.filter((o) => o.at > reconciledAt && o.seq !== undefined).length < 20 &&
      Date.now() < deadline
    )
      await new Promise((r) => setTimeout(r, 100))
    loading = false
    await load
    const resumed = outcomes.filter((o) => o.at > reconciledAt && o.seq !== undefined)
    assert.ok(resumed.length >= 20, `only ${resumed.length} appends after reconciling`)
    for (const agg of AGGREGATES) {
      const first = resumed.find((o) => o.agg === agg)
      if (first?.seq !== undefined)
        assert.ok(
          first.seq > maxSeqOf(beforeReconcile, agg),
          `${agg} resumed at ${first.seq}, the bucket held ${maxSeqOf(beforeReconcile, agg)}`,
        )
    }
    const after = await storedSequences(objectStore)
    for (const [k, ids] of after)
      assert.equal(ids.size, 1, `sequence ${k} stored ${ids.size} times: ${[...ids].join(', ')}`)
    // Reads go through the rebuilt index and agree with the bucket.
    for (const agg of AGGREGATES) {
      const stream = await a.readStream('Thing', agg)
      const seqs = stream.map((e) => e.sequence_number)
      assert.deepEqual(
        seqs,
        [...seqs].sort((x, y) => x - y),
      )
      assert.equal(new Set(seqs).size, seqs.length)
      assert.equal(Math.max(...seqs), maxSeqOf(after, agg))
      assert.equal(await a.currentSequence('Thing', agg), maxSeqOf(after, agg))
    }
  } finally {
    loading = false
    for (const w of writers) await w.close().catch(() => {})
    for (const sql of pools) await sql.close().catch(() => {})
    await pg.close()
    await dropBucket(objectStore).catch(() => {})
    await objectStore.close()
  }
})
