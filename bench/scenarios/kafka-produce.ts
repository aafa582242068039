import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import type { BusMessage } from '../../src/core/ports/bus.ts'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { aggregateId, kafkaBrokers, payloads, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'

const encoder = new TextEncoder()

/** Sends of one message at 1 and 64 in flight, and sends of 500 (the publisher's batch) at 1. */
const SETTINGS = [
  { concurrency: 1, batch: 1 },
  { concurrency: 64, batch: 1 },
  { concurrency: 1, batch: 500 },
] as const

/** Kafka's ceiling through cairn's bus adapter: idempotent producer, acks=all. */
export const kafkaProduce: Scenario = {
  name: 'kafka-produce',
  kind: 'baseline',
  summary:
    '1 KiB messages through src/adapters/bus/kafka-bus.ts (idempotent producer, acks=all), 3 partitions; throughput in messages/s, latency per send',
  async run(ctx) {
    const bus = createKafkaBus({
      brokers: kafkaBrokers(),
      clientId: 'cairn-bench',
      logger: ctx.logger,
    })
    const topic = runName(ctx, 'cairn-bench-produce')
    ctx.track({ kind: 'topics', topics: [topic], groups: [] })
    const rows: ResultRow[] = []
    try {
      await bus.ensureTopics([{ name: topic, partitions: 3 }])
      const producer = bus.producer({ clientId: 'cairn-bench-produce' })
      const next = payloads(ctx, 3)
      let n = 0
      const message = (): BusMessage => ({
        topic,
        key: aggregateId(n++ % ctx.aggregates),
        value: encoder.encode(next()),
        headers: {},
      })
      for (const s of SETTINGS) {
        const r = await closedLoop(ctx, {
          concurrency: s.concurrency,
          warmupMs: ctx.warmupMs,
          measureMs: ctx.measureMs,
          op: () => producer.send(Array.from({ length: s.batch }, message)),
        })
        rows.push(
          rowBetween(r.before, r.after, {
            scenario: 'kafka-produce',
            variant: s.batch === 1 ? `c=${s.concurrency}` : `c=${s.concurrency} batch=${s.batch}`,
            kind: 'baseline',
            events: r.events * s.batch,
            latency: r.latency,
            ...(s.batch === 1 ? {} : { notes: ['latency is per send of the whole batch'] }),
          }),
        )
      }
      await producer.close()
    } finally {
      await bus.close()
    }
    return rows
  },
}
