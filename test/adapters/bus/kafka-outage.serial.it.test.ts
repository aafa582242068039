import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { createKafkaBus } from '../../../src/adapters/bus/kafka-bus.ts'
import { ErrorCode, isCairnError } from '../../../src/core/errors.ts'
import type { BusConsumer, BusProducer, DeliveredMessage } from '../../../src/core/ports/bus.ts'
import { freeze, restoreAll, stop } from '../../support/service-control.ts'
import { kafkaBrokers, uniqueName } from '../../support/services.ts'

/**
 * The Kafka bus's error paths against the real broker, frozen (SIGSTOP: it keeps its connections
 * and answers nothing) and stopped: the consumer's poll and the producer's send fail with a
 * retryable BUS_UNAVAILABLE within a bounded time, and so does a commit (a hung broker does not pass for an idle
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

/**
 * Polls (again after failures) until every id was delivered; commits what it got unless told
 * not to. Returns the messages.
 */
const receive = async (
  consumer: BusConsumer,
  ids: readonly string[],
  commit = true,
): Promise<DeliveredMessage[]> => {
  const want = new Set(ids)
  const got: DeliveredMessage[] = []
  const until = Date.now() + 120_000
  while (want.size > 0) {
    assert.ok(Date.now() < until, `not delivered: ${[...want].join(', ')}`)
    try {
      const batch = await consumer.poll(500)
      for (const m of batch) want.delete(new TextDecoder().decode(m.value))
      got.push(...batch)
      if (batch.length > 0 && commit) await consumer.commit(batch)
    } catch (error) {
      assert.ok(unavailable(error), String(error))
      await sleep(500)
    }
  }
  return got
}

/** The error `p` rejects with (null if it resolves), or an Error when still pending after `ms`. */
const failure = async (p: Promise<unknown>, ms: number, what: string): Promise<unknown> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([
      p.then(
        () => null,
        (error: unknown) => error,
      ),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(new Error(`${what} still pending after ${ms} ms`)), ms)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

for (const kind of ['frozen', 'stopped'] as const) {
  test(
    `Kafka ${kind}: poll, commit and send fail retryably within bounds, nothing crashes, all work again`,
    { timeout: 300_000 },
    async () => {
      const bus = createKafkaBus({ brokers: kafkaBrokers() })
      const topic = uniqueName(`bus-${kind}`)
      try {
        await bus.ensureTopics([{ name: topic, partitions: 2 }])
        const producer = bus.producer()
        const consumer = await bus.consumer({ groupId: `g-${topic}`, topics: [topic] })
        await sendWhenBack(producer, topic, 'before')
        // Received, not committed yet: committed while Kafka is away.
        const before = await receive(consumer, ['before'], false)
        const back = kind === 'frozen' ? await freeze('kafka') : await stop('kafka')
        try {
          // The request timeout (5 s, 2 s of grace) and the client's retries bound each call: a
          // few request times, not the client's default of 30 s a try.
          const polled = await firstFailure(consumer, 40_000)
          assert.ok(unavailable(polled), `poll while Kafka is ${kind}: ${String(polled)}`)
          const committed = await failure(consumer.commit(before), 60_000, 'commit')
          assert.ok(unavailable(committed), `commit while Kafka is ${kind}: ${String(committed)}`)
          const sent = await failure(
            producer.send([
              { topic, key: 'k', value: new TextEncoder().encode('during'), headers: {} },
            ]),
            60_000,
            'send',
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
