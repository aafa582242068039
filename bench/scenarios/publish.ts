import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { databaseClock } from '../../src/sequencing/allocator.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import { closedLoop, openLoop, rowBetween } from '../lib/harness.ts'
import type { BenchContext } from '../lib/harness.ts'
import { kafkaBrokers, payloads, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { createLatencyRecorder, nowNs, sleep } from '../lib/stats.ts'
import { benchEnvelope, openBenchWriteSide } from '../lib/write-side.ts'
import type { BenchWriteSide } from '../lib/write-side.ts'

/** The append ceiling this run measured (append-lib at 64 clients), or a short measurement. */
const appendCeiling = async (
  ctx: BenchContext,
  ws: BenchWriteSide,
): Promise<{ rate: number; source: string }> => {
  const row = ctx.rows.find((r) => r.scenario === 'append-lib' && r.variant === 'c=64')
  if (row !== undefined && row.throughput > 0)
    return { rate: row.throughput, source: 'append-lib c=64' }
  const next = payloads(ctx, 6)
  let n = 0
  const r = await closedLoop(ctx, {
    concurrency: 64,
    warmupMs: 1_000,
    measureMs: 3_000,
    op: async () => {
      const i = n++
      await ws.eventStore.append({ envelopes: [benchEnvelope('BenchCeiling', i, next())] })
    },
  })
  return { rate: r.events / 3, source: 'a 3 s closed loop at 64 clients (append-lib not run)' }
}

/**
 * At half the append ceiling (an open loop), the time from an append's acknowledgement to its
 * record being readable in Kafka: the publisher runs in the writer's process (woken by each commit,
 * as `cairn start` wires it) and a consumer on the topic matches records by their `event_id`.
 */
export const publish: Scenario = {
  name: 'publish',
  kind: 'scenario',
  summary:
    'at 50 % of the append ceiling (open loop), append acknowledgement → record fetched by a Kafka consumer; publisher in the writer process, woken by commits',
  async run(ctx) {
    const ws = await openBenchWriteSide(ctx, 'publish')
    const topic = runName(ctx, 'cairn-bench-publish')
    const groupId = runName(ctx, 'cairn-bench-publish-reader')
    ctx.track({ kind: 'topics', topics: [topic], groups: [groupId] })
    const bus = createKafkaBus({
      brokers: kafkaBrokers(),
      clientId: 'cairn-bench',
      logger: ctx.logger,
      // The reading consumer's longest wait at the broker; data ends a fetch at once.
      fetchWaitMs: 50,
    })
    const abort = new AbortController()
    try {
      const ceiling = await appendCeiling(ctx, ws)
      const rate = Math.max(1, Math.round(ceiling.rate / 2))
      ctx.log(
        `  rate ${rate} appends/s (half of ${Math.round(ceiling.rate)} from ${ceiling.source})`,
      )
      await bus.ensureTopics([{ name: topic, partitions: 3 }])
      const publisher = createPublisher({
        objectStore: ws.store,
        keyClock: databaseClock(ws.sql),
        bus,
        logger: ctx.logger,
        defaultTopic: topic,
        partitions: 3,
      })
      ws.eventStore.onCommit((notice) => publisher.noteCommit(notice))
      const running = publisher.run(abort.signal)
      const consumer = await bus.consumer({ groupId, topics: [topic], start: 'latest' })

      const recorder = createLatencyRecorder()
      const acked = new Map<string, number>()
      const early = new Map<string, number>()
      let received = 0
      let reading = true
      const reader = (async () => {
        while (reading) {
          const messages = await consumer.poll(100)
          const t = nowNs()
          for (const m of messages) {
            const id = m.headers.event_id ?? ''
            const at = acked.get(id)
            if (at === undefined) {
              early.set(id, t)
              continue
            }
            acked.delete(id)
            recorder.record(t - at)
            received++
          }
        }
      })()

      const next = payloads(ctx, 7)
      let expected = 0
      const r = await openLoop(ctx, {
        rate,
        warmupMs: ctx.warmupMs,
        measureMs: ctx.measureMs,
        maxInFlight: 1_024,
        store: ws.store,
        op: async (i, measured) => {
          // Aggregates in turn: at most 1,024 in flight never share one, so the expected
          // sequence is known without a read.
          const index = (i - 1) % ctx.aggregates
          const seq = Math.floor((i - 1) / ctx.aggregates)
          const res = await ws.eventStore.append({
            envelopes: [benchEnvelope('BenchPublish', index, next())],
            expectedSeq: seq,
          })
          if (!measured) return
          const id = res.envelopes[0]?.event_id ?? ''
          const t = nowNs()
          expected++
          const arrived = early.get(id)
          if (arrived !== undefined) {
            // Read before the acknowledgement's continuation ran: zero latency.
            early.delete(id)
            recorder.record(Math.max(1, arrived - t))
            received++
          } else {
            acked.set(id, t)
          }
        },
      })
      const deadline = Date.now() + 30_000
      while (received < expected && Date.now() < deadline) await sleep(20)
      reading = false
      await reader
      await consumer.close()
      const m = publisher.metrics()
      abort.abort()
      await running
      await publisher.close()
      return [
        rowBetween(r.before, r.after, {
          scenario: 'publish',
          variant: `${rate}/s`,
          kind: 'scenario',
          events: r.started,
          latency: recorder.summary(),
          compareTo: ['append-lib c=64'],
          notes: [
            'throughput is the offered load; latency is acknowledgement → fetched by a consumer (fetch wait 50 ms)',
            ...(received < expected ? [`${expected - received} records not seen within 30 s`] : []),
            ...(r.skipped > 0 ? [`${r.skipped} starts skipped (1,024 in flight)`] : []),
          ],
          extra: {
            targetRate: rate,
            ceiling,
            received,
            expected,
            publisher: { published: m.published, flushes: m.flushes, flushMsTotal: m.flushMsTotal },
          },
        }),
      ]
    } finally {
      abort.abort()
      await bus.close()
      await ws.close()
    }
  },
}
