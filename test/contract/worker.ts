import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import { CairnError, ErrorCode } from '../../src/core/errors.ts'
import type { Bus, DeliveredMessage } from '../../src/core/ports/bus.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { CHECKPOINT_KEY } from '../../src/event-store/keys.ts'
import { loadCheckpoint } from '../../src/publisher/checkpoint.ts'
import { databaseClock } from '../../src/sequencing/allocator.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import type { ProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { createWorker } from '../../src/worker/worker.ts'
import type { Handle, Worker, WorkerOptions } from '../../src/worker/worker.ts'
import { collect, eventually } from '../support/collect.ts'
import type { AdapterCase } from '../support/contract.ts'
import type { PublisherWorld } from './publisher.ts'
import { uniqueName } from '../support/services.ts'
import { storedLine } from '../support/stored-bytes.ts'

export type WorkerWorld = {
  readonly bus: Bus
  readonly sql: Sql
  readonly schema: string
  close(): Promise<void>
}

const stored = (
  aggregateId: string,
  seq: number,
  data: Record<string, unknown> = {},
): StoredEnvelope => ({
  ...createEnvelope({
    event_type: 'THING_HAPPENED',
    aggregate_type: 'Thing',
    aggregate_id: aggregateId,
    data,
    metadata: { kind: 'domain' },
  }),
  sequence_number: seq,
})

const publish = async (
  bus: Bus,
  topic: string,
  envelopes: readonly StoredEnvelope[],
): Promise<void> => {
  const producer = bus.producer()
  try {
    await producer.send(
      envelopes.map((e) => ({
        topic,
        key: e.aggregate_id,
        value: new TextEncoder().encode(canonicalJson(e)),
        headers: { event_id: e.event_id },
      })),
    )
  } finally {
    await producer.close()
  }
}

/** A bus whose consumers report each polled batch and each commit's offsets (what a worker does). */
const observedBus = (
  bus: Bus,
  on: {
    readonly polled?: (batch: readonly DeliveredMessage[]) => void
    readonly committed?: (offsets: bigint[]) => void
  },
): Bus => ({
  ...bus,
  consumer: async (o) => {
    const inner = await bus.consumer(o)
    return {
      poll: async (ms, signal) => {
        const batch = await inner.poll(ms, signal)
        on.polled?.(batch)
        return batch
      },
      commit: async (messages) => {
        on.committed?.(messages.map((m) => m.offset))
        await inner.commit(messages)
      },
      close: () => inner.close(),
      [Symbol.asyncDispose]: () => inner.close(),
    }
  },
})

/** The worker runtime's contract (DESIGN.md C1–C6) on each bus + registry pair. */
export const workerContract = (
  cases: readonly (AdapterCase<WorkerWorld> & {
    /** Transactions of different connections run side by side (not PGlite's single session). */
    readonly concurrentTransactions?: boolean
  })[],
): void => {
  for (const c of cases) {
    void describe(`worker on ${c.name}`, () => {
      const withWorld = (
        name: string,
        fn: (
          w: WorkerWorld,
          start: (o: Partial<WorkerOptions>, mode?: 'transactional' | 'external') => Worker,
        ) => Promise<void>,
      ): void =>
        void test(name, async () => {
          const w = await c.create()
          const workers: Worker[] = []
          await migrate(w.sql, w.schema)
          await w.sql.exec(
            `CREATE TABLE ${w.schema}.effects (event_id text NOT NULL, aggregate_id text, seq bigint)`,
          )
          const start = (
            o: Partial<WorkerOptions>,
            mode: 'transactional' | 'external' = 'transactional',
          ): Worker => {
            const registry = createProcessedEventRegistry({
              sql: w.sql,
              schema: w.schema,
              member: o.groupId ?? 'w',
              leaseMs: 5_000,
            })
            const worker = createWorker({
              bus: w.bus,
              registry,
              handler: 'projection',
              topics: [],
              groupId: 'g',
              ...(mode === 'transactional' ? { transactional: w.sql } : {}),
              handle: project(w),
              heartbeatMs: 1_000,
              pollWaitMs: 100,
              backoffBaseMs: 20,
              backoffMaxMs: 100,
              ...o,
            })
            workers.push(worker)
            void worker.run()
            return worker
          }
          try {
            await fn(w, start)
          } finally {
            for (const worker of workers) await worker.close()
            await w.close()
          }
        })

      const project =
        (w: WorkerWorld): Handle =>
        async (e, ctx) => {
          assert.ok(ctx.tx, 'transactional handlers get the transaction')
          await ctx.tx.query(`INSERT INTO ${w.schema}.effects VALUES ($1, $2, $3)`, [
            e.event_id,
            e.aggregate_id,
            e.sequence_number,
          ])
          return { applied: e.sequence_number }
        }

      const effects = async (w: WorkerWorld) =>
        w.sql.query<{ event_id: string; aggregate_id: string; seq: string }>(
          `SELECT event_id, aggregate_id, seq FROM ${w.schema}.effects`,
        )

      withWorld(
        'duplicate publishes and redeliveries: every side effect happens exactly once (C1)',
        async (w, start) => {
          const topic = uniqueName('dup')
          await w.bus.ensureTopics([{ name: topic, partitions: 3 }])
          const envs = ['a', 'b', 'c'].flatMap((a) =>
            Array.from({ length: 10 }, (_, i) => stored(`${a}-${topic}`, i + 1)),
          )
          await publish(w.bus, topic, envs)
          await publish(w.bus, topic, envs) // the publisher republished (checkpoint rollback)
          const worker = start({ topics: [topic] })
          await eventually(
            async () => (await effects(w)).length >= 30 && worker.metrics().duplicates >= 30,
            'all processed',
            30_000,
          )
          await publish(w.bus, topic, envs.slice(0, 5)) // and once more, later
          await eventually(
            () => worker.metrics().duplicates >= 35,
            'late duplicates acknowledged',
            30_000,
          )
          const rows = await effects(w)
          assert.equal(rows.length, 30)
          assert.equal(new Set(rows.map((r) => r.event_id)).size, 30)
          for (const a of ['a', 'b', 'c']) {
            const seqs = rows
              .filter((r) => r.aggregate_id === `${a}-${topic}`)
              .map((r) => Number(r.seq))
            assert.deepEqual(
              seqs,
              Array.from({ length: 10 }, (_, i) => i + 1),
              'applied in sequence order',
            )
          }
        },
      )

      withWorld(
        'two consumers receiving the same events at once: one claim wins, one effect (C4)',
        async (w, start) => {
          const topic = uniqueName('c4')
          await w.bus.ensureTopics([{ name: topic, partitions: 2 }])
          const envs = Array.from({ length: 20 }, (_, i) => stored(`c4-${i}`, 1))
          // Two groups: both receive every event, the registry lets one of them apply it.
          start({ topics: [topic], groupId: 'group-1' })
          start({ topics: [topic], groupId: 'group-2' })
          await publish(w.bus, topic, envs)
          await eventually(async () => (await effects(w)).length >= 20, 'applied', 30_000)
          await new Promise((r) => setTimeout(r, 500))
          const rows = await effects(w)
          assert.equal(rows.length, 20)
          assert.equal(new Set(rows.map((r) => r.event_id)).size, 20)
        },
      )

      withWorld('older sequences after newer ones are stale and skipped (C3)', async (w, start) => {
        const topic = uniqueName('stale')
        await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
        const agg = `st-${topic}`
        const worker = start({ topics: [topic] })
        await publish(w.bus, topic, [stored(agg, 1), stored(agg, 2)])
        await eventually(async () => (await effects(w)).length >= 2, 'in order', 30_000)
        await publish(w.bus, topic, [stored(agg, 1, { replayed: true })])
        await eventually(() => worker.metrics().stale >= 1, 'stale one skipped', 30_000)
        assert.equal((await effects(w)).length, 2)
      })

      withWorld(
        'a poison event: retried, dead-lettered with its reason, its aggregate parked, others flow; retry applies in order (C5)',
        async (w, start) => {
          const topic = uniqueName('poison')
          const dlq = `${topic}-dlq`
          await w.bus.ensureTopics([{ name: topic, partitions: 2 }])
          const agg = `p-${topic}`
          const envs = [
            stored(agg, 1),
            stored(agg, 2, { poison: true }),
            stored(agg, 3),
            stored(`other-${topic}`, 1),
          ]
          const byId = new Map(envs.map((e) => [e.event_id, e]))
          let healed = false
          let poisonAttempts = 0
          const worker = start({
            topics: [topic],
            dlqTopic: dlq,
            maxAttempts: 3,
            loadEnvelope: (id) => Promise.resolve(byId.get(id) ?? null),
            handle: async (e, ctx) => {
              if (e.data.poison === true && !healed) {
                poisonAttempts++
                throw new Error('cannot apply this one')
              }
              await project(w)(e, ctx)
            },
          })
          await publish(w.bus, topic, envs)
          await eventually(
            () => worker.metrics().deadLettered >= 1 && worker.metrics().parked >= 1,
            'dead-lettered and parked',
            30_000,
          )
          await eventually(async () => (await effects(w)).length >= 2, 'the others flowed', 30_000)
          assert.equal(poisonAttempts, 3)
          assert.deepEqual(
            (await effects(w)).map((r) => [r.aggregate_id, Number(r.seq)]).sort(),
            [
              [agg, 1],
              [`other-${topic}`, 1],
            ].sort(),
          )
          const dead = await collect(w.bus, dlq, (ms) => ms.length >= 1, 10_000)
          assert.equal(dead[0]?.headers.event_id, envs[1]?.event_id)
          assert.match(dead[0]?.headers.dlq_reason ?? '', /failed 3 times: cannot apply this one/)
          assert.equal(new TextDecoder().decode(dead[0]?.value), canonicalJson(envs[1]))

          // The operator fixes the cause and retries: applied in sequence order.
          healed = true
          const registry = createProcessedEventRegistry({
            sql: w.sql,
            schema: w.schema,
            member: 'operator',
          })
          const parked = await registry.listParked('projection')
          assert.deepEqual(
            parked.map((p) => [p.seq, p.status]),
            [
              [2, 'failed'],
              [3, 'parked'],
            ],
          )
          await registry.retryParked(
            'projection',
            parked.map((p) => p.eventId),
            'tester',
          )
          await eventually(
            async () => (await effects(w)).length >= 4,
            'retried events applied',
            30_000,
          )
          const seqs = (
            await w.sql.query<{ seq: string }>(
              `SELECT seq FROM ${w.schema}.effects WHERE aggregate_id = $1`,
              [agg],
            )
          ).map((r) => Number(r.seq))
          assert.deepEqual(seqs, [1, 2, 3])
        },
      )

      /** The world's SQL, refusing every query and transaction while `isDown()` says so. */
      const failingSql = (w: WorkerWorld, isDown: () => boolean): Sql => ({
        ...w.sql,
        query: (text, params) =>
          isDown()
            ? Promise.reject(new CairnError(ErrorCode.SQL_ERROR, 'injected: connection refused'))
            : w.sql.query(text, params),
        transaction: (fn) =>
          isDown()
            ? Promise.reject(new Error('injected: connection refused'))
            : w.sql.transaction(fn),
      })

      /** A registry (5 s leases) over `failingSql`: down while `isDown()`. */
      const failingRegistry = (w: WorkerWorld, isDown: () => boolean, member: string) => {
        const failing = failingSql(w, isDown)
        const registry = createProcessedEventRegistry({
          sql: failing,
          schema: w.schema,
          member,
          leaseMs: 5_000,
        })
        return { failing, registry }
      }

      /**
       * A registry whose completion statements are recorded (ids per statement): markDone, and
       * recordDone (deferred claims recorded done), also counted in `recorded`.
       */
      const countingRegistry = (w: WorkerWorld, member: string) => {
        const inner = createProcessedEventRegistry({
          sql: w.sql,
          schema: w.schema,
          member,
          leaseMs: 5_000,
        })
        const calls: number[] = []
        let recorded = 0
        const registry: ProcessedEventRegistry = {
          ...inner,
          markDone: (handler, events, tx, result) => {
            if (events.length > 0) calls.push(events.length)
            return inner.markDone(handler, events, tx, result)
          },
          recordDone: (handler, events, tx) => {
            if (events.length > 0) calls.push(events.length)
            recorded += events.length
            return inner.recordDone(handler, events, tx)
          },
        }
        return { registry, calls, recorded: () => recorded }
      }

      const statuses = async (w: WorkerWorld): Promise<Record<string, number>> => {
        const rows = await w.sql.query<{ status: string; n: string }>(
          `SELECT status, count(*) AS n FROM ${w.schema}.processed_events
            WHERE handler = 'projection' GROUP BY status`,
        )
        return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]))
      }

      withWorld(
        'a fetched batch is applied in one transaction and marked done with one statement, each event with its own result, in per-aggregate order',
        async (w, start) => {
          const topic = uniqueName('batch')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          // 60 aggregates, 2 events each, published sequence-major (as a backlog arrives).
          const envs = [1, 2].flatMap((seq) =>
            Array.from({ length: 60 }, (_, a) => stored(`bt-${a}-${topic}`, seq)),
          )
          await publish(w.bus, topic, envs)
          const { registry, calls, recorded } = countingRegistry(w, 'batch')
          const worker = start({ topics: [topic], registry })
          await eventually(async () => (await effects(w)).length >= 120, 'all applied', 30_000)
          await new Promise((r) => setTimeout(r, 300))
          const rows = await effects(w)
          assert.equal(rows.length, 120)
          assert.equal(new Set(rows.map((r) => r.event_id)).size, 120, 'each effect once')
          assert.deepEqual(await statuses(w), { done: 120 })
          assert.equal(worker.metrics().processed, 120)
          // Batched: far fewer completion statements than events.
          assert.ok(calls.length < 120, `${calls.length} completion statements for 120 events`)
          assert.ok(Math.max(...calls) > 1, `largest completion ${Math.max(...calls)}`)
          // Claims in the applying transaction wrote their rows once, done (claim_batch_in_tx).
          assert.ok(recorded() >= 60, `${recorded()} recorded done without a claim row first`)
          for (let a = 0; a < 60; a++) {
            const seqs = rows
              .filter((r) => r.aggregate_id === `bt-${a}-${topic}`)
              .map((r) => Number(r.seq))
            assert.deepEqual(seqs, [1, 2], 'applied in sequence order')
          }
          for (const e of [envs[0], envs[61], envs[119]]) {
            assert.ok(e)
            const [row] = await registry.status(e.event_id)
            assert.deepEqual(row?.result, { applied: e.sequence_number }, 'its own result')
          }
        },
      )

      withWorld(
        'a transactional batch is claimed, applied by the batch form and marked done in one transaction; a failing batch is applied one by one, each effect once',
        async (w, start) => {
          const topic = uniqueName('hbatch')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          const envs = Array.from({ length: 50 }, (_, a) => stored(`hb-${a}-${topic}`, 1))
          await publish(w.bus, topic, envs)
          const inner = createProcessedEventRegistry({
            sql: w.sql,
            schema: w.schema,
            member: 'hbatch',
            leaseMs: 5_000,
          })
          let claimsInTx = 0
          let claimsAlone = 0
          const registry: ProcessedEventRegistry = {
            ...inner,
            claim: (handler, events, tx) => {
              if (tx === undefined) claimsAlone++
              else claimsInTx++
              return inner.claim(handler, events, tx)
            },
            claimInTransaction: (handler, events, tx) => {
              claimsInTx++
              return inner.claimInTransaction(handler, events, tx)
            },
          }
          const batchSizes: number[] = []
          let failOnce = true
          const single = project(w)
          const worker = start({
            topics: [topic],
            registry,
            batchSize: 20,
            handleBatch: async (batch, ctx) => {
              assert.ok(ctx.tx)
              batchSizes.push(batch.length)
              await ctx.tx.query(
                `INSERT INTO ${w.schema}.effects
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])`,
                [
                  batch.map((e) => e.event_id),
                  batch.map((e) => e.aggregate_id),
                  batch.map((e) => e.sequence_number),
                ],
              )
              if (failOnce) {
                failOnce = false
                throw new Error('the whole batch fails once')
              }
              return batch.map((e) => ({ applied: e.sequence_number, batch: true }))
            },
            handle: single,
          })
          await eventually(async () => (await effects(w)).length >= 50, 'all applied', 30_000)
          await new Promise((r) => setTimeout(r, 300))
          const rows = await effects(w)
          assert.equal(rows.length, 50)
          assert.equal(new Set(rows.map((r) => r.event_id)).size, 50, 'each effect once')
          assert.deepEqual(await statuses(w), { done: 50 })
          assert.equal(worker.metrics().processed, 50)
          assert.ok(batchSizes[0] !== undefined && batchSizes[0] > 1, 'the batch form ran')
          assert.ok(
            Math.max(...batchSizes) <= 20,
            `batches of at most batchSize: ${batchSizes.join(', ')}`,
          )
          assert.ok(claimsInTx >= 1, 'claimed inside the transaction')
          assert.ok(claimsAlone >= 1, 'after the rollback, claimed again on its own')

          // Without failures: one call of the batch form per batch, its results recorded.
          const more = Array.from({ length: 30 }, (_, a) => stored(`hb2-${a}-${topic}`, 1))
          const alone = claimsAlone
          await publish(w.bus, topic, more)
          await eventually(async () => (await effects(w)).length >= 80, 'all applied', 30_000)
          assert.equal(claimsAlone, alone, 'no claim outside a transaction')
          const [row] = await inner.status((more[3] as (typeof more)[number]).event_id)
          assert.deepEqual(row?.result, { applied: 1, batch: true })
        },
      )

      withWorld(
        'a poison event in a batch rolls the batch back; it gets exactly its retries and dead letter, the others commit once',
        async (w, start) => {
          const topic = uniqueName('bpoison')
          const dlq = `${topic}-dlq`
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          const envs = Array.from({ length: 40 }, (_, i) =>
            stored(`bp-${i}-${topic}`, 1, i === 10 ? { poison: true } : {}),
          )
          await publish(w.bus, topic, envs)
          let poisonAttempts = 0
          const tries = new Map<string, number>()
          const worker = start({
            topics: [topic],
            dlqTopic: dlq,
            maxAttempts: 3,
            handle: async (e, ctx) => {
              tries.set(e.event_id, (tries.get(e.event_id) ?? 0) + 1)
              if (e.data.poison === true) {
                poisonAttempts++
                assert.equal(ctx.attempt, poisonAttempts, 'attempts are numbered across the batch')
                throw new Error('cannot apply this one')
              }
              await project(w)(e, ctx)
            },
          })
          await eventually(
            async () => worker.metrics().deadLettered >= 1 && (await effects(w)).length >= 39,
            'dead-lettered, others applied',
            30_000,
          )
          await new Promise((r) => setTimeout(r, 300))
          assert.equal(poisonAttempts, 3, 'maxAttempts tries, no more')
          const rows = await effects(w)
          assert.equal(rows.length, 39)
          assert.equal(new Set(rows.map((r) => r.event_id)).size, 39, 'each effect once')
          assert.ok(!rows.some((r) => r.event_id === envs[10]?.event_id))
          assert.deepEqual(await statuses(w), { done: 39, failed: 1 })
          assert.ok(
            [...tries.values()].some((n) => n > 1),
            'the batch ran once, was rolled back and ran again one by one',
          )
          const dead = await collect(w.bus, dlq, (ms) => ms.length >= 1, 10_000)
          assert.equal(dead[0]?.headers.event_id, envs[10]?.event_id)
          assert.match(dead[0]?.headers.dlq_reason ?? '', /failed 3 times: cannot apply this one/)
        },
      )

      withWorld(
        'a non-transactional handler: side effects one by one with the idempotency key, successes marked done together, a failing one retried alone',
        async (w, start) => {
          const topic = uniqueName('external')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          const envs = Array.from({ length: 30 }, (_, i) => stored(`ex-${i}-${topic}`, 1, { i }))
          await publish(w.bus, topic, envs)
          // The outside system: records each idempotency key once, counts calls.
          const outside = new Map<string, number>()
          let flaky = 2
          const { registry, calls } = countingRegistry(w, 'external')
          const worker = start(
            {
              topics: [topic],
              registry,
              handle: (e, ctx) => {
                assert.equal(ctx.tx, undefined)
                if (e.data.i === 7 && flaky-- > 0) return Promise.reject(new Error('timeout'))
                outside.set(e.event_id, (outside.get(e.event_id) ?? 0) + 1)
                return Promise.resolve({ sent: e.data.i })
              },
            },
            'external',
          )
          await eventually(async () => ((await statuses(w)).done ?? 0) >= 30, 'all done', 30_000)
          assert.equal(outside.size, 30)
          assert.ok(
            [...outside.values()].every((n) => n === 1),
            'each effect once',
          )
          assert.equal(worker.metrics().retries, 2)
          assert.equal(worker.metrics().processed, 30)
          assert.ok(calls.length < 30, `${calls.length} mark_done calls for 30 events`)
          const [row] = await registry.status(envs[29]?.event_id ?? '')
          assert.deepEqual(row?.result, { sent: 29 })
        },
      )

      withWorld(
        'a non-transactional handler runs events of different aggregates side by side, each aggregate in sequence order',
        async (w, start) => {
          const topic = uniqueName('parallel')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          // 8 aggregates × 4 events, published interleaved in sequence order.
          const envs = Array.from({ length: 4 }, (_, k) =>
            Array.from({ length: 8 }, (_, a) => stored(`par-${a}-${topic}`, k + 1, { a, k })),
          ).flat()
          await publish(w.bus, topic, envs)
          let running = 0
          let most = 0
          const applied = new Map<string, number[]>()
          start(
            {
              topics: [topic],
              concurrency: 4,
              handle: async (e) => {
                running++
                most = Math.max(most, running)
                await new Promise((r) => setTimeout(r, 30))
                applied.set(e.aggregate_id, [
                  ...(applied.get(e.aggregate_id) ?? []),
                  e.sequence_number,
                ])
                running--
              },
            },
            'external',
          )
          await eventually(async () => ((await statuses(w)).done ?? 0) >= 32, 'all done', 30_000)
          assert.ok(most > 1, `side effects overlapped (at most ${most} at once)`)
          assert.ok(most <= 4, `at most the concurrency (${most})`)
          assert.equal(applied.size, 8)
          for (const [agg, seqs] of applied) assert.deepEqual(seqs, [1, 2, 3, 4], agg)
        },
      )

      withWorld(
        'a non-transactional worker polls on while a batch settles: a slow side effect holds back neither other aggregates nor the concurrency limit, and offsets are committed in order',
        async (w, start) => {
          const topic = uniqueName('pipe')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          // The offsets the worker commits, as the group would hold them.
          const committed: bigint[] = []
          const bus = observedBus(w.bus, { committed: (offsets) => committed.push(...offsets) })
          const slow = stored(`pipe-slow-${topic}`, 1)
          let release = (): void => {}
          const gate = new Promise<void>((r) => (release = r))
          let slowStarted = false
          let running = 0
          let most = 0
          const applied: string[] = []
          start(
            {
              bus,
              topics: [topic],
              concurrency: 2,
              handle: async (e) => {
                running++
                most = Math.max(most, running)
                if (e.event_id === slow.event_id) {
                  slowStarted = true
                  await gate
                } else {
                  await new Promise((r) => setTimeout(r, 20))
                }
                applied.push(e.aggregate_id)
                running--
              },
            },
            'external',
          )
          try {
            await publish(w.bus, topic, [slow])
            await eventually(() => slowStarted, 'the slow effect started')
            const others = Array.from({ length: 6 }, (_, a) => stored(`pipe-${a}-${topic}`, 1))
            await publish(w.bus, topic, others)
            await eventually(() => applied.length >= 6, 'the later batch applied meanwhile', 15_000)
            assert.ok(!applied.includes(slow.aggregate_id), 'the slow one is still running')
            assert.ok(most <= 2, `at most the concurrency over both batches (${most})`)
            await new Promise((r) => setTimeout(r, 300))
            assert.equal(committed.length, 0, 'nothing committed past the unsettled first batch')
          } finally {
            release()
          }
          await eventually(async () => ((await statuses(w)).done ?? 0) >= 7, 'all done', 15_000)
          await eventually(() => committed.includes(6n), 'every offset committed', 15_000)
          assert.deepEqual(
            committed,
            [...committed].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
            'in order',
          )
          assert.equal(committed.at(-1), 6n, 'up to the last offset')
        },
      )

      if (c.concurrentTransactions === true) {
        withWorld(
          'a transactional worker commits later batches of other aggregates while an earlier batch is still in its transaction; offsets in order',
          async (w, start) => {
            const topic = uniqueName('txpipe')
            await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
            const committed: bigint[] = []
            const commits: bigint[][] = []
            const bus = observedBus(w.bus, {
              committed: (offsets) => {
                committed.push(...offsets)
                commits.push(offsets)
              },
            })
            const slow = stored(`txpipe-slow-${topic}`, 1)
            let release = (): void => {}
            const gate = new Promise<void>((r) => (release = r))
            let slowStarted = false
            const apply = project(w)
            start({
              bus,
              topics: [topic],
              handle: async (e, ctx) => {
                if (e.event_id === slow.event_id) {
                  slowStarted = true
                  await gate
                }
                return apply(e, ctx)
              },
            })
            try {
              await publish(w.bus, topic, [slow])
              await eventually(() => slowStarted, 'the slow transaction started')
              const others = Array.from({ length: 6 }, (_, a) => stored(`txpipe-${a}-${topic}`, 1))
              await publish(w.bus, topic, others)
              await eventually(
                async () => (await effects(w)).length >= 6,
                'the later batch committed meanwhile',
                15_000,
              )
              assert.ok(
                !(await effects(w)).some((e) => e.event_id === slow.event_id),
                'the slow one is still in its transaction',
              )
              await new Promise((r) => setTimeout(r, 300))
              assert.equal(committed.length, 0, 'nothing committed past the unsettled first batch')
            } finally {
              release()
            }
            await eventually(async () => ((await statuses(w)).done ?? 0) >= 7, 'all done', 15_000)
            await eventually(() => committed.includes(6n), 'every offset committed', 15_000)
            assert.equal(committed.at(-1), 6n, 'up to the last offset')
            assert.deepEqual(
              committed,
              [...committed].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
              'in order',
            )
            assert.ok(
              commits[0]?.includes(6n),
              `the batches settled behind the slow one are committed with it, in one request (${JSON.stringify(commits.map((c) => c.map(Number)))})`,
            )
            assert.equal((await effects(w)).length, 7)
          },
        )
      }

      withWorld(
        'offsets are committed at most every commitIntervalMs, all at once, and when the worker stops: a new member of the group gets nothing again',
        async (w, start) => {
          const topic = uniqueName('commits')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          const commits: bigint[][] = []
          const bus = observedBus(w.bus, { committed: (offsets) => commits.push(offsets) })
          const worker = start({ bus, topics: [topic], commitIntervalMs: 60_000 })
          // Five batches, one after the other.
          for (let i = 0; i < 5; i++) {
            await publish(w.bus, topic, [stored(`c-${i}-${topic}`, 1)])
            await eventually(async () => ((await statuses(w)).done ?? 0) >= i + 1, `event ${i}`)
          }
          await new Promise((r) => setTimeout(r, 300))
          // The first batch finds no commit before it (the interval starts then).
          assert.ok(
            commits.length <= 1,
            `at most one commit so far: ${JSON.stringify(commits.map((c) => c.map(Number)))}`,
          )
          await worker.close()
          assert.equal(commits.at(-1)?.at(-1), 4n, 'the settled offsets committed at stop')
          const again = start({ topics: [topic], groupId: 'g' })
          await new Promise((r) => setTimeout(r, 1_500))
          assert.equal(again.metrics().processed + again.metrics().duplicates, 0, 'nothing again')
          assert.equal((await effects(w)).length, 5)
        },
      )

      withWorld(
        'a batch whose earlier batch of the same aggregate failed is not settled before it: both are settled again, in order (C3, C6)',
        async (w, start) => {
          const topic = uniqueName('order-fail')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          const first = stored(`of-${topic}`, 1)
          const second = stored(`of-${topic}`, 2)
          // The first event's completion fails once (a registry hiccup); nothing else does.
          let failOnce = false
          const flaky: Sql = {
            ...w.sql,
            query: (text, params) => {
              const mine = (params ?? []).some(
                (p) => Array.isArray(p) && p.includes(first.event_id),
              )
              if (failOnce && mine && text.includes("'done'")) {
                failOnce = false
                return Promise.reject(
                  new CairnError(ErrorCode.SQL_ERROR, 'injected: connection reset'),
                )
              }
              return w.sql.query(text, params)
            },
          }
          const registry = createProcessedEventRegistry({
            sql: flaky,
            schema: w.schema,
            member: 'order-fail',
            leaseMs: 5_000,
          })
          const polled: string[] = []
          const bus = observedBus(w.bus, {
            polled: (batch) => polled.push(...batch.map((m) => m.headers.event_id ?? '')),
          })
          let release = (): void => {}
          const gate = new Promise<void>((r) => (release = r))
          const applied: number[] = []
          const worker = start(
            {
              bus,
              topics: [topic],
              registry,
              handle: async (e) => {
                if (e.event_id === first.event_id && applied.length === 0) await gate
                applied.push(e.sequence_number)
              },
            },
            'external',
          )
          try {
            await publish(w.bus, topic, [first])
            await eventually(() => polled.includes(first.event_id), 'the first batch polled')
            await publish(w.bus, topic, [second])
            await eventually(() => polled.includes(second.event_id), 'the second batch polled')
            failOnce = true
          } finally {
            release()
          }
          // Before, the second was claimed at once and waited on the first's open claim, which
          // could not be settled again until the second ended: the worker hung.
          await eventually(async () => ((await statuses(w)).done ?? 0) >= 2, 'both done', 15_000)
          assert.equal(failOnce, false, 'the failure was injected')
          assert.deepEqual(
            applied,
            [1, 1, 2],
            'the first again (its completion failed), then the second',
          )
          assert.equal(worker.metrics().stale, 0)
        },
      )

      withWorld(
        'anything but an EventEnvelope is dead-lettered with the reason; the rest flows',
        async (w, start) => {
          const topic = uniqueName('bad')
          const dlq = `${topic}-dlq`
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          const producer = w.bus.producer()
          await producer.send([
            {
              topic,
              key: 'x',
              value: new TextEncoder().encode(JSON.stringify({ message_type: 'X', payload: {} })),
              headers: {},
            },
            { topic, key: 'y', value: new TextEncoder().encode('not json'), headers: {} },
          ])
          await producer.close()
          await publish(w.bus, topic, [stored(`good-${topic}`, 1)])
          const worker = start({ topics: [topic], dlqTopic: dlq })
          await eventually(
            async () => (await effects(w)).length >= 1,
            'the good one applied',
            30_000,
          )
          assert.equal(worker.metrics().deadLettered, 2)
          const dead = await collect(w.bus, dlq, (ms) => ms.length >= 2, 10_000)
          assert.match(
            dead.map((d) => d.headers.dlq_reason).join('\n'),
            /legacy wrapper[\s\S]*not JSON/,
          )
        },
      )

      withWorld(
        'registry unreachable: consumption pauses, nothing is acknowledged unprocessed, then resumes (C6)',
        async (w, start) => {
          const topic = uniqueName('outage')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          let down = true
          const { failing, registry } = failingRegistry(w, () => down, 'outage')
          const envs = Array.from({ length: 5 }, (_, i) => stored(`o-${topic}`, i + 1))
          await publish(w.bus, topic, envs)
          const worker = start({ topics: [topic], registry, transactional: failing })
          await eventually(() => worker.metrics().pauses >= 2, 'paused', 30_000)
          assert.equal((await effects(w)).length, 0)
          down = false
          await eventually(async () => (await effects(w)).length >= 5, 'resumed', 30_000)
          await new Promise((r) => setTimeout(r, 300))
          assert.equal((await effects(w)).length, 5)
        },
      )

      withWorld(
        'registry unreachable with batches in flight (a non-transactional worker): it pauses, commits nothing unsettled, then settles them again in order, each effect once (C6)',
        async (w, start) => {
          const topic = uniqueName('outage-ext')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          let down = false
          const { registry } = failingRegistry(w, () => down, 'outage-ext')
          const sent = new Map<string, number>()
          let release = (): void => {}
          const gate = new Promise<void>((r) => (release = r))
          const first = stored(`oe-first-${topic}`, 1)
          const worker = start(
            {
              topics: [topic],
              registry,
              handle: async (e) => {
                sent.set(e.event_id, (sent.get(e.event_id) ?? 0) + 1)
                // The first batch is still settling when the registry goes away.
                if (e.event_id === first.event_id) await gate
              },
            },
            'external',
          )
          try {
            await publish(w.bus, topic, [first])
            await eventually(() => sent.has(first.event_id), 'the first batch started')
            const later = Array.from({ length: 5 }, (_, a) => stored(`oe-${a}-${topic}`, 1))
            await publish(w.bus, topic, later)
            await eventually(() => later.every((e) => sent.has(e.event_id)), 'the second batch ran')
            down = true
            release()
            await eventually(() => worker.metrics().pauses >= 2, 'paused', 30_000)
            const firstRow = await w.sql.query<{ status: string }>(
              `SELECT status FROM ${w.schema}.processed_events WHERE event_id = $1`,
              [first.event_id],
            )
            assert.equal(firstRow[0]?.status, 'processing', 'the first not done while it is away')
            down = false
            await eventually(async () => ((await statuses(w)).done ?? 0) >= 6, 'resumed', 30_000)
          } finally {
            release()
          }
          // Effects ran again only where mark_done had not landed (the idempotency key's case),
          // and every event ends done once.
          assert.deepEqual(await statuses(w), { done: 6 })
          assert.equal(sent.size, 6)
        },
      )

      withWorld(
        'a side effect whose dependency is away (the bucket) pauses the worker: no try counted, nothing dead-lettered, each event done once when it is back (C6)',
        async (w, start) => {
          const topic = uniqueName('dep-away')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          let down = true
          const envs = Array.from({ length: 3 }, (_, i) => stored(`da-${i}-${topic}`, 1))
          await publish(w.bus, topic, envs)
          const worker = start(
            {
              topics: [topic],
              maxAttempts: 2,
              handle: async () => {
                if (down) {
                  throw new CairnError(
                    ErrorCode.APPEND_FAILED,
                    'append failed',
                    // As the event store reports a bucket that does not answer.
                    {
                      retryable: true,
                      cause: new CairnError(ErrorCode.OBJECT_STORE_UNAVAILABLE, 'bucket away', {
                        retryable: true,
                      }),
                    },
                  )
                }
              },
            },
            'external',
          )
          await eventually(() => worker.metrics().pauses >= 4, 'paused', 30_000)
          assert.equal(worker.metrics().paused, 1)
          assert.match(worker.pausedBy() ?? '', /append failed/)
          assert.equal(worker.metrics().deadLettered, 0)
          assert.equal(worker.metrics().retries, 0, 'an outage is not a failed try')
          down = false
          await eventually(async () => ((await statuses(w)).done ?? 0) >= 3, 'resumed', 30_000)
          assert.deepEqual(await statuses(w), { done: 3 })
          assert.equal(worker.metrics().deadLettered, 0)
          await eventually(() => worker.pausedBy() === null, 'no longer paused')
          assert.equal(worker.metrics().paused, 0)
        },
      )

      withWorld(
        'a transactional batch whose database goes away mid-way pauses the worker and is settled again whole: each effect once, nothing dead-lettered (C6)',
        async (w, start) => {
          const topic = uniqueName('tx-away')
          await w.bus.ensureTopics([{ name: topic, partitions: 1 }])
          let down = true
          const envs = Array.from({ length: 4 }, (_, i) => stored(`ta-${i}-${topic}`, 1))
          await publish(w.bus, topic, envs)
          const worker = start({
            topics: [topic],
            maxAttempts: 2,
            handle: async (e, ctx) => {
              // The connection breaks under the handler's statement.
              if (down) {
                throw new CairnError(ErrorCode.SQL_UNAVAILABLE, 'connection terminated', {
                  retryable: true,
                })
              }
              await project(w)(e, ctx)
            },
          })
          await eventually(() => worker.metrics().pauses >= 4, 'paused', 30_000)
          assert.equal(worker.metrics().deadLettered, 0)
          assert.equal((await effects(w)).length, 0)
          down = false
          await eventually(async () => (await effects(w)).length >= 4, 'resumed', 30_000)
          await new Promise((r) => setTimeout(r, 300))
          assert.equal((await effects(w)).length, 4)
          assert.deepEqual(await statuses(w), { done: 4 })
          assert.equal(worker.metrics().deadLettered, 0)
        },
      )
    })
  }
}

/**
 * A 100,000-event backlog drained with batch claims and batched completion (issue #5), counted:
 * every event done exactly once, one effect row each, per-aggregate order kept.
 */
export const workerBacklogContract = (
  cases: readonly AdapterCase<WorkerWorld>[],
  options: { readonly events: number; readonly timeoutMs: number },
): void => {
  const PER_AGGREGATE = 5
  for (const c of cases) {
    void test(
      `a ${options.events.toLocaleString('en')}-event backlog on ${c.name} is drained with batch claims: every event done exactly once`,
      { timeout: options.timeoutMs },
      async () => {
        const w = await c.create()
        let worker: Worker | undefined
        try {
          await migrate(w.sql, w.schema)
          await w.sql.exec(
            `CREATE TABLE ${w.schema}.effects (event_id text NOT NULL, aggregate_id text, seq bigint)`,
          )
          const topic = uniqueName('backlog')
          await w.bus.ensureTopics([{ name: topic, partitions: 4 }])
          const aggregates = options.events / PER_AGGREGATE
          // Sequence-major, as a backlog of many aggregates arrives; each level is sent in parallel
          // batches (different aggregates), and awaited before the next keeps per-key order.
          const producer = w.bus.producer()
          const encoder = new TextEncoder()
          try {
            for (let seq = 1; seq <= PER_AGGREGATE; seq++) {
              const level = Array.from({ length: aggregates }, (_, a) => {
                const e = stored(`bl-${a}`, seq, { a })
                return {
                  topic,
                  key: e.aggregate_id,
                  value: encoder.encode(canonicalJson(e)),
                  headers: { event_id: e.event_id },
                }
              })
              const chunks: (typeof level)[] = []
              for (let i = 0; i < level.length; i += 2_000) chunks.push(level.slice(i, i + 2_000))
              await Promise.all(chunks.map((chunk) => producer.send(chunk)))
            }
          } finally {
            await producer.close()
          }

          const inner = createProcessedEventRegistry({
            sql: w.sql,
            schema: w.schema,
            member: 'backlog',
          })
          let claimCalls = 0
          let markDoneCalls = 0
          const registry: ProcessedEventRegistry = {
            ...inner,
            claim: (handler, events) => (claimCalls++, inner.claim(handler, events)),
            markDone: (handler, events, tx, result) => (
              markDoneCalls++,
              inner.markDone(handler, events, tx, result)
            ),
          }
          worker = createWorker({
            bus: w.bus,
            registry,
            handler: 'projection',
            topics: [topic],
            groupId: uniqueName('backlog-group'),
            transactional: w.sql,
            handle: async (e, ctx) => {
              await ctx.tx?.query(`INSERT INTO ${w.schema}.effects VALUES ($1, $2, $3)`, [
                e.event_id,
                e.aggregate_id,
                e.sequence_number,
              ])
            },
            pollWaitMs: 200,
          })
          void worker.run()
          const doneCount = async () =>
            Number(
              (
                await w.sql.query<{ n: string }>(
                  `SELECT count(*) AS n FROM ${w.schema}.processed_events WHERE status = 'done'`,
                )
              )[0]?.n,
            )
          const deadline = Date.now() + options.timeoutMs - 30_000
          let done = 0
          // Counting 100,000 rows is not free: ask once a second.
          while ((done = await doneCount()) < options.events) {
            if (Date.now() > deadline) {
              throw new Error(
                `backlog not drained: ${done} of ${options.events} done, ${JSON.stringify(worker.metrics())}`,
              )
            }
            await new Promise((r) => setTimeout(r, 1_000))
          }
          await worker.close()

          const [effects] = await w.sql.query<{ n: string; distinct: string }>(
            `SELECT count(*) AS n, count(DISTINCT event_id) AS distinct FROM ${w.schema}.effects`,
          )
          assert.equal(Number(effects?.n), options.events, 'one effect row per event')
          assert.equal(Number(effects?.distinct), options.events, 'no duplicate effects')
          const statuses = await w.sql.query<{ status: string; n: string }>(
            `SELECT status, count(*) AS n FROM ${w.schema}.processed_events GROUP BY status`,
          )
          assert.deepEqual(
            statuses.map((s) => [s.status, Number(s.n)]),
            [['done', options.events]],
          )
          const [order] = await w.sql.query<{ n: string }>(
            `SELECT count(*) AS n FROM ${w.schema}.aggregate_versions WHERE last_sequence = $1`,
            [PER_AGGREGATE],
          )
          assert.equal(Number(order?.n), aggregates, 'every aggregate reached its last sequence')
          const m = worker.metrics()
          assert.equal(m.processed, options.events)
          assert.equal(m.retries + m.stale + m.deadLettered + m.parked, 0)
          // Batch claims and batched completion: far fewer statements than events.
          assert.ok(
            claimCalls * 20 < options.events && markDoneCalls * 20 < options.events,
            `${claimCalls} claims and ${markDoneCalls} mark_done for ${options.events} events`,
          )
        } finally {
          await worker?.close()
          await w.close()
          await c.cleanup?.()
        }
      },
    )
  }
}

/**
 * Checklist 1 of issue #5, end to end: events appended through the event store, published by the
 * real publisher, consumed by a projection (transactional) and a mailer (external effect); then
 * the publisher's checkpoint is rolled back to an older one, as an operator would, so it
 * republishes, and some envelopes are published twice more by hand. Every effect happens once and
 * every extra delivery is counted as a duplicate.
 */
export const duplicatePublishContract = (cases: readonly AdapterCase<PublisherWorld>[]): void => {
  for (const c of cases) {
    void test(
      `Duplicate publish and checkpoint rollback → side effects happen once (checklist 1), on ${c.name}`,
      { timeout: 240_000 },
      async () => {
        const w = await c.create()
        const { ws, bus } = w
        const { sql, schema, objectStore } = ws
        const closers: { close(): Promise<void> }[] = []
        try {
          await sql.exec(
            `CREATE TABLE ${schema}.effects (n bigserial, event_id text NOT NULL, aggregate_id text, seq bigint)`,
          )
          const topic = uniqueName('checklist-1')
          await bus.ensureTopics([{ name: topic, partitions: 3 }])
          const store = ws.store()
          const publisher = createPublisher({
            objectStore,
            bus,
            keyClock: databaseClock(sql),
            pollIntervalMs: 100,
            settleMs: 400,
            heartbeatMs: 200,
            takeoverAfterMs: 1_000,
            metricsLogIntervalMs: 60_000,
          })
          closers.push(publisher)
          store.onCommit((n) => publisher.noteCommit(n))
          void publisher.run()

          const mailed = new Map<string, number>()
          const worker = (handler: string, o: Partial<WorkerOptions>): Worker => {
            const wk = createWorker({
              bus,
              registry: createProcessedEventRegistry({ sql, schema, member: handler }),
              handler,
              topics: [topic],
              groupId: uniqueName(handler),
              handle: async () => {},
              heartbeatMs: 1_000,
              pollWaitMs: 100,
              ...o,
            })
            closers.push(wk)
            void wk.run()
            return wk
          }
          const projection = worker('projection', {
            transactional: sql,
            handle: async (e, ctx) => {
              await ctx.tx?.query(
                `INSERT INTO ${schema}.effects (event_id, aggregate_id, seq) VALUES ($1, $2, $3)`,
                [e.event_id, e.aggregate_id, e.sequence_number],
              )
            },
          })
          // An external effect keyed by event_id; counted here, so a second call would show.
          const mailer = worker('mailer', {
            handle: (e) => {
              mailed.set(e.event_id, (mailed.get(e.event_id) ?? 0) + 1)
              return Promise.resolve()
            },
          })

          const aggregates = Array.from({ length: 4 }, (_, a) => `c1-${a}-${topic}`)
          const append = async (round: number): Promise<void> => {
            for (let i = 0; i < 5; i++) {
              await Promise.all(
                aggregates.map((agg) =>
                  store.append({
                    envelopes: [
                      createEnvelope({
                        event_type: 'THING_HAPPENED',
                        aggregate_type: 'Thing',
                        aggregate_id: agg,
                        data: { round, i },
                        metadata: { kind: 'domain', kafka_topic: topic },
                      }),
                    ],
                  }),
                ),
              )
            }
          }
          const effectCount = async () =>
            Number(
              (await sql.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.effects`))[0]?.n,
            )
          const checkpointCovers = async (n: number) => {
            const { checkpoint } = await loadCheckpoint(objectStore)
            return (
              checkpoint !== null &&
              checkpoint.last_index_key !== null &&
              checkpoint.recent_event_ids.length >= n
            )
          }

          // Round 1: 20 events published, applied, and under the checkpoint. Keep that checkpoint.
          await append(1)
          await eventually(async () => (await effectCount()) >= 20, 'round 1 applied', 60_000)
          await eventually(() => checkpointCovers(20), 'round 1 checkpointed', 30_000)
          const older = await objectStore.get(CHECKPOINT_KEY)
          assert.ok(older)
          // Round 2: 20 more, and the checkpoint moves past them.
          await append(2)
          await eventually(async () => (await effectCount()) >= 40, 'round 2 applied', 60_000)
          await eventually(() => checkpointCovers(40), 'round 2 checkpointed', 30_000)
          const publishedBefore = publisher.metrics().published

          // The operator writes the older checkpoint back: round 2 is published again.
          const current = await objectStore.get(CHECKPOINT_KEY)
          const wrote = await objectStore.putIfMatch(
            CHECKPOINT_KEY,
            older.body,
            current?.etag ?? null,
          )
          assert.equal(wrote.outcome, 'written')
          await eventually(
            () => publisher.metrics().published >= publishedBefore + 20,
            'republication after the rollback',
            60_000,
          )
          // And a duplicate publish by hand: the stored bytes of 5 events (their segment lines),
          // twice each.
          const stream = await store.readStream('Thing', aggregates[0] ?? '')
          const again = await Promise.all(
            stream.slice(0, 5).map(async (e) => {
              const line = await storedLine(ws, e.event_id)
              assert.ok(line !== null, `event ${e.event_id} is in its segment`)
              return {
                topic,
                key: e.aggregate_id,
                value: new TextEncoder().encode(line),
                headers: { event_id: e.event_id },
              }
            }),
          )
          const producer = bus.producer()
          await producer.send([...again, ...again])
          await producer.close()
          await publisher.close()

          // Every delivery on the topic, read by an independent group.
          const sent = publisher.metrics().published + again.length * 2
          const deliveries = await collect(bus, topic, (ms) => ms.length >= sent, 30_000)
          assert.equal(deliveries.length, sent)
          assert.equal(new Set(deliveries.map((d) => d.headers.event_id)).size, 40)
          const extra = deliveries.length - 40
          assert.ok(extra >= 20 + 10, `${extra} extra deliveries: the rollback republished`)
          for (const wk of [projection, mailer]) {
            await eventually(
              () => wk.metrics().duplicates >= extra,
              'every extra delivery acknowledged as a duplicate',
              60_000,
            )
          }
          await new Promise((r) => setTimeout(r, 300))

          for (const wk of [projection, mailer]) {
            const m = wk.metrics()
            assert.equal(m.processed, 40)
            assert.equal(m.duplicates, extra, 'each extra delivery counted once as a duplicate')
            assert.equal(m.stale, 0, 'no legitimate event is ever stale')
          }
          // Every effect once, in per-aggregate order.
          const rows = await sql.query<{ event_id: string; aggregate_id: string; seq: string }>(
            `SELECT event_id, aggregate_id, seq FROM ${schema}.effects ORDER BY n`,
          )
          assert.equal(rows.length, 40)
          assert.equal(new Set(rows.map((r) => r.event_id)).size, 40)
          for (const agg of aggregates) {
            assert.deepEqual(
              rows.filter((r) => r.aggregate_id === agg).map((r) => Number(r.seq)),
              Array.from({ length: 10 }, (_, i) => i + 1),
            )
          }
          assert.equal(mailed.size, 40)
          assert.ok(
            [...mailed.values()].every((n) => n === 1),
            'each mail sent once',
          )
          const statuses = await sql.query<{ handler: string; status: string; n: string }>(
            `SELECT handler, status, count(*) AS n FROM ${schema}.processed_events
              GROUP BY handler, status ORDER BY handler`,
          )
          assert.deepEqual(
            statuses.map((s) => [s.handler, s.status, Number(s.n)]),
            [
              ['mailer', 'done', 40],
              ['projection', 'done', 40],
            ],
          )
        } finally {
          for (const x of closers.reverse()) {
            await Promise.race([x.close(), new Promise((r) => setTimeout(r, 5_000))])
          }
          await w.close()
        }
      },
    )
  }
}
