import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { databaseClock } from '../../src/sequencing/allocator.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import { rowBetween, snapshot } from '../lib/harness.ts'
import { kafkaBrokers, payloads, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { sleep } from '../lib/stats.ts'
import { benchEnvelope, openBenchWriteSide } from '../lib/write-side.ts'

const SEED_EVENTS = 100

/**
 * An idle publisher: after it has published a few events, nothing is appended for N poll
 * intervals; object-store requests per poll interval, by kind (the checkpoint's heartbeat PUTs
 * included).
 */
export const idle: Scenario = {
  name: 'idle',
  kind: 'scenario',
  summary:
    'an idle publisher (nothing appended) for N poll intervals: object-store requests per poll interval by kind; throughput column = poll intervals/s',
  async run(ctx) {
    const pollIntervalMs = ctx.quick ? 1_000 : 3_000
    const polls = ctx.quick ? 10 : 20
    const ws = await openBenchWriteSide(ctx, 'idle')
    const topic = runName(ctx, 'cairn-bench-idle')
    ctx.track({ kind: 'topics', topics: [topic], groups: [] })
    const bus = createKafkaBus({
      brokers: kafkaBrokers(),
      clientId: 'cairn-bench',
      logger: ctx.logger,
    })
    const abort = new AbortController()
    try {
      const next = payloads(ctx, 9)
      for (let i = 0; i < SEED_EVENTS; i++) {
        await ws.eventStore.append({
          envelopes: [benchEnvelope('BenchIdle', i, next())],
          expectedSeq: 0,
        })
      }
      // A publisher in another process than the writer: no commit wakes it, only its polls.
      const publisher = createPublisher({
        objectStore: ws.store,
        keyClock: databaseClock(ws.sql),
        bus,
        logger: ctx.logger,
        defaultTopic: topic,
        partitions: 3,
        pollIntervalMs,
      })
      const running = publisher.run(abort.signal)
      const deadline = Date.now() + 60_000
      while (publisher.metrics().published < SEED_EVENTS && Date.now() < deadline) await sleep(50)
      await sleep(pollIntervalMs * 2)
      const before = await snapshot(ctx, ws.store)
      await sleep(pollIntervalMs * polls)
      const after = await snapshot(ctx, ws.store)
      abort.abort()
      await running
      const m = publisher.metrics()
      await publisher.close()
      const row = rowBetween(before, after, {
        scenario: 'idle',
        variant: `${polls}×${pollIntervalMs / 1000} s`,
        kind: 'scenario',
        events: polls,
        latency: null,
        notes: [
          'per-event columns are per poll interval; CPU includes whatever else the services did meanwhile',
        ],
        extra: {
          pollIntervalMs,
          polls,
          published: m.published,
          role: m.role,
          checkpointSaves: m.checkpointSaves,
        },
      })
      const perMinute = (n: number | undefined): number =>
        Math.round((((n ?? 0) * 60_000) / pollIntervalMs) * 10) / 10
      return [
        {
          ...row,
          extra: {
            ...row.extra,
            requestsPerMinute: {
              list: perMinute(row.objectStorePerEvent?.list),
              get: perMinute(row.objectStorePerEvent?.get),
              put: perMinute(row.objectStorePerEvent?.put),
              putIfMatch: perMinute(row.objectStorePerEvent?.putIfMatch),
            },
          },
        },
      ]
    } finally {
      abort.abort()
      await bus.close()
      await ws.close()
    }
  },
}
