import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { createKafkaBus } from '../../../src/adapters/bus/kafka-bus.ts'
import { ErrorCode, isCairnError } from '../../../src/core/errors.ts'
import type { BusConsumer, BusProducer } from '../../../src/core/ports/bus.ts'
import { freeze, restoreAll, stop } from '../../support/service-control.ts'
import { kafkaBrokers, uniqueName } from '../../support/services.ts'

/**
 * The Kafka bus's error paths against the real broker, frozen (SIGSTOP: it keeps its connections
 * and answers nothing) and stopped: the consumer's poll and the producer's send fail with a
 * retryable BUS_UNAVAILABLE within a bounded time (a hung broker does not pass for an idle
 * topic), no client error event crashes the process, and both work again once it is back.
 *
 * Freezes and stops the services' Kafka: runs alone (serial phase).
 */

after(restoreAll)

const unavailable = (error: unknown): boolean =>
  isCairnError(error, ErrorCode.BUS_UNAVAILABLE) && error.retryable

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls until a poll fails (returns its error) or `ms` pass (returns null). */
const firstFailure = async (consumer: BusConsumer, ms: number): Promise<unknown> => {
  const until = Date.now() + ms
  while (Date.now() < until) {
    try {
      await consumer.poll(200)
    } catch (error) {
      return error
    }
  }
  return null
}

/** Sends until it works (the broker is back): rejections meanwhile are outages. */
const sendWhenBack = async (producer: BusProducer, topic: string, id: string): Promise<void> => {
  const until = Date.now() + 120_000
  for (;;) {
    try {
      await producer.send([{ topic, key: id, value: new TextEncoder().encode(id), headers: {} }])
      return
    } catch (error) {
      assert.ok(unavailable(error), String(error))
      if (Date.now() > until) throw error
      await sleep(500)
    }
  }
}

/** Polls (again after failures) until every id was delivered; commits what it got. */
const receive = async (consumer: BusConsumer, ids: readonly string[]): Promise<void> => {
  const want = new Set(ids)
  const until = Date.now() + 120_000
  while (want.size > 0) {
    assert.ok(Date.now() < until, `not delivered: ${[...want].join(', ')}`)
    try {
      const batch = await consumer.poll(500)
      for (const m of batch) want.delete(new TextDecoder().decode(m.value))
      if (batch.length > 0) await consumer.commit(batch)
    } catch (error) {
      assert.ok(unavailable(error), String(error))
      await sleep(500)
    }
  }
}

for (const kind of ['frozen', 'stopped'] as const) {
  test(
    `Kafka ${kind}: poll and send fail retryably within bounds, nothing crashes, both work again`,
    {
      timeout: 300_000,
    },
    async () => {
      const bus = createKafkaBus({ brokers: kafkaBrokers() })
      const topic = uniqueName(`bus-${kind}`)
      try {
        await bus.ensureTopics([{ name: topic, partitions: 2 }])
        const producer = bus.producer()
        const consumer = await bus.consumer({ groupId: `g-${topic}`, topics: [topic] })
        await sendWhenBack(producer, topic, 'before')
        await receive(consumer, ['before'])
        const back = kind === 'frozen' ? await freeze('kafka') : await stop('kafka')
        try {
          // The request timeout (5 s) and the client's retries bound both.
          const polled = await firstFailure(consumer, 40_000)
          assert.ok(unavailable(polled), `poll while Kafka is ${kind}: ${String(polled)}`)
          const sent = await producer
            .send([{ topic, key: 'k', value: new TextEncoder().encode('during'), headers: {} }])
            .then(
              () => null,
              (error: unknown) => error,
            )
          assert.ok(unavailable(sent), `send while Kafka is ${kind}: ${String(sent)}`)
        } finally {
          await back()
        }
        await sendWhenBack(producer, topic, 'after')
        // 'during' may or may not have landed before the broker went away: not awaited.
        await receive(consumer, ['after'])
        await consumer.close()
        await producer.close()
      } finally {
        await bus.close()
      }
    },
  )
}
