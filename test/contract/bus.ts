import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isCairnError } from '../../src/core/errors.ts'
import { partitionOf } from '../../src/core/ports/bus.ts'
import type {
  Bus,
  BusConsumer,
  BusMessage,
  ConsumerOptions,
  DeliveredMessage,
} from '../../src/core/ports/bus.ts'
import { contractSuite } from '../support/contract.ts'
import type { AdapterCase } from '../support/contract.ts'
import { uniqueName } from '../support/services.ts'

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (b: Uint8Array): string => new TextDecoder().decode(b)
const idOf = (m: BusMessage): string => m.headers.event_id ?? '<no event_id>'

const message = (
  topic: string,
  key: string,
  id: string,
  extra: Uint8Array = bytes(''),
): BusMessage => ({
  topic,
  key,
  value: new Uint8Array([...bytes(`{"id":"${id}"}`), ...extra]),
  headers: { event_id: id, 'content-type': 'application/json' },
})

/** Polls until `count` messages arrived or `timeoutMs` passed; returns what arrived. */
const pollUntil = async (
  consumer: BusConsumer,
  count: number,
  timeoutMs = 20_000,
): Promise<DeliveredMessage[]> => {
  const got: DeliveredMessage[] = []
  const deadline = Date.now() + timeoutMs
  while (got.length < count && Date.now() < deadline) {
    got.push(...(await consumer.poll(Math.min(500, deadline - Date.now()))))
  }
  return got
}

/** Polls until one poll of `quietMs` brings nothing; returns everything that came. */
const drain = async (consumer: BusConsumer, quietMs = 1_000): Promise<DeliveredMessage[]> => {
  const got: DeliveredMessage[] = []
  for (;;) {
    const batch = await consumer.poll(quietMs)
    if (batch.length === 0) return got
    got.push(...batch)
  }
}

const ids = (messages: readonly BusMessage[]): string[] => messages.map(idOf).sort()

/** Keys spread so that every one of `partitions` partitions gets some. */
const spreadKeys = (count: number, partitions: number): string[] => {
  const keys = Array.from({ length: count }, (_, i) => `aggregate-${i}`)
  const hit = new Set(keys.map((k) => partitionOf(k, partitions)))
  assert.equal(hit.size, partitions, 'test keys must cover every partition')
  return keys
}

// Group joins and rebalances take seconds on Kafka.
const slow = { timeout: 90_000 }

/**
 * The bus port's contract (see its doc comment), for every adapter. Each test makes its own
 * topics and groups.
 */
export const busContract = (cases: readonly AdapterCase<Bus>[]): void =>
  contractSuite<Bus>('bus', cases, (bus) => {
    const topicWith = async (partitions: number): Promise<string> => {
      const name = uniqueName('cairn-bus')
      await bus().ensureTopics([{ name, partitions }])
      return name
    }
    const consumerOf = async (
      topic: string,
      groupId: string,
      extra: Partial<ConsumerOptions> = {},
    ): Promise<BusConsumer> => bus().consumer({ groupId, topics: [topic], ...extra })

    test(
      'send then poll: keys, value bytes and headers intact, per-key order, keyed partitions',
      slow,
      async () => {
        const topic = await topicWith(3)
        const producer = bus().producer()
        const sent = Array.from({ length: 30 }, (_, i) =>
          message(topic, `agg-${i % 5}-é`, `e-${i}`, new Uint8Array([0, 255, i, 10])),
        )
        sent.push({
          topic,
          key: 'empty',
          value: new Uint8Array(),
          headers: { event_id: 'e-empty' },
        })
        await producer.send(sent)
        await producer.close()

        const consumer = await consumerOf(topic, uniqueName('g'))
        const got = await pollUntil(consumer, sent.length)
        await consumer.close()

        assert.deepEqual(ids(got), ids(sent))
        const byId = new Map(got.map((m) => [idOf(m), m]))
        for (const s of sent) {
          const m = byId.get(idOf(s))
          assert.ok(m)
          assert.equal(m.topic, topic)
          assert.equal(m.key, s.key)
          assert.deepEqual([...m.value], [...s.value])
          assert.deepEqual(m.headers, s.headers)
          // Kafka's Java default partitioner, on both adapters.
          assert.equal(m.partition, partitionOf(s.key, 3))
        }
        for (const key of new Set(sent.map((s) => s.key))) {
          const delivered = got.filter((m) => m.key === key)
          assert.deepEqual(delivered.map(idOf), sent.filter((s) => s.key === key).map(idOf))
          assert.equal(new Set(delivered.map((m) => m.partition)).size, 1)
          const offsets = delivered.map((m) => m.offset)
          assert.deepEqual(
            offsets,
            [...offsets].sort((a, b) => (a < b ? -1 : 1)),
          )
        }
        assert.equal(text(byId.get('e-0')!.value.subarray(0, 12)), '{"id":"e-0"}')
      },
    )

    test(
      'under a backlog, consecutive polls begin with different partitions, each in its order',
      slow,
      async () => {
        const topic = await topicWith(3)
        const keys = spreadKeys(30, 3)
        const producer = bus().producer()
        // 20 messages per key: every partition holds more than a batch.
        await producer.send(
          Array.from({ length: 20 }, (_, n) =>
            keys.map((k, i) => message(topic, k, `e-${n}-${i}`)),
          ).flat(),
        )
        await producer.close()
        const consumer = await consumerOf(topic, uniqueName('g'), { maxBatch: 25 })
        try {
          const batches: DeliveredMessage[][] = []
          for (let got = 0; got < 600 && batches.length < 100;) {
            const batch = await consumer.poll(2_000)
            if (batch.length > 0) batches.push(batch)
            got += batch.length
          }
          // While every partition has more than a batch buffered, a batch is one partition's and
          // the next begins with another (a worker can settle them side by side).
          const [a, b, c] = batches
          assert.ok(a && b && c)
          for (const batch of [a, b, c]) {
            assert.equal(new Set(batch.map((m) => m.partition)).size, 1, 'one partition each')
          }
          assert.equal(new Set([a, b, c].map((x) => x[0]?.partition)).size, 3)
          const all = batches.flat()
          assert.equal(new Set(all.map(idOf)).size, 600, 'every message once')
          for (const partition of [0, 1, 2]) {
            const offsets = all.filter((m) => m.partition === partition).map((m) => m.offset)
            assert.deepEqual(
              offsets,
              offsets.map((_, i) => offsets[0]! + BigInt(i)),
              `partition ${partition} in order, no gap`,
            )
          }
        } finally {
          await consumer.close()
        }
      },
    )

    test(
      'lag: what a group has not committed, per topic, from the log start before any commit',
      slow,
      async () => {
        const topic = await topicWith(2)
        const groupId = uniqueName('g')
        const producer = bus().producer()
        await producer.send(spreadKeys(6, 2).map((k, i) => message(topic, k, `l-${i}`)))
        await producer.close()
        assert.deepEqual(await bus().lag(groupId, [topic]), [{ topic, lag: 6 }])
        const consumer = await consumerOf(topic, groupId)
        const got = await pollUntil(consumer, 6)
        assert.equal(got.length, 6)
        // Committing the first message of each partition leaves the others.
        const firsts = [0, 1].flatMap((p) => got.filter((m) => m.partition === p).slice(0, 1))
        await consumer.commit(firsts)
        assert.deepEqual(await bus().lag(groupId, [topic]), [{ topic, lag: 4 }])
        await consumer.commit(got)
        assert.deepEqual(await bus().lag(groupId, [topic]), [{ topic, lag: 0 }])
        await consumer.close()
      },
    )

    test('a committed message is not delivered again; an uncommitted one is', slow, async () => {
      const topic = await topicWith(1)
      const groupId = uniqueName('g')
      const producer = bus().producer()
      const sent = Array.from({ length: 10 }, (_, i) => message(topic, 'one-key', `e-${i}`))
      await producer.send(sent)
      await producer.close()

      const first = await consumerOf(topic, groupId)
      const got = await pollUntil(first, 10)
      assert.equal(got.length, 10)
      await first.commit(got.slice(0, 6))
      await first.close()

      const second = await consumerOf(topic, groupId)
      const again = await drain(second)
      assert.deepEqual(again.map(idOf), ['e-6', 'e-7', 'e-8', 'e-9'])
      assert.deepEqual(
        again.map((m) => m.offset),
        [6n, 7n, 8n, 9n],
      )
      await second.commit(again)
      await second.close()

      const third = await consumerOf(topic, groupId)
      assert.deepEqual(await third.poll(500), [])
      await third.close()
    })

    test(
      'two members split the partitions; a closing member hands its uncommitted messages over',
      slow,
      async () => {
        const topic = await topicWith(4)
        const groupId = uniqueName('g')
        const a = await consumerOf(topic, groupId)
        const b = await consumerOf(topic, groupId)
        // Let both members settle on the assignment of the second join.
        await Promise.all([a.poll(300), b.poll(300)])

        const producer = bus().producer()
        const sent = spreadKeys(40, 4).map((key, i) => message(topic, key, `e-${i}`))
        await producer.send(sent)
        await producer.close()

        const gotA: DeliveredMessage[] = []
        const gotB: DeliveredMessage[] = []
        const deadline = Date.now() + 20_000
        while (gotA.length + gotB.length < sent.length && Date.now() < deadline) {
          const [batchA, batchB] = await Promise.all([a.poll(300), b.poll(300)])
          gotA.push(...batchA)
          gotB.push(...batchB)
          await a.commit(batchA)
        }
        assert.deepEqual(
          [...ids(gotA), ...ids(gotB)].sort(),
          ids(sent),
          'each message exactly once',
        )
        assert.ok(gotA.length > 0 && gotB.length > 0, 'both members own partitions')
        const partitionsA = new Set(gotA.map((m) => m.partition))
        assert.ok(
          gotB.every((m) => !partitionsA.has(m.partition)),
          'a partition has one owner',
        )

        // b never committed: its messages go to a, and a's own committed ones do not come back.
        await b.close()
        const handedOver = await pollUntil(a, gotB.length)
        assert.deepEqual(ids(handedOver), ids(gotB))
        await a.commit(handedOver)
        assert.deepEqual(await drain(a, 500), [])
        await a.close()
      },
    )

    test(
      'a member without partitions waits, and takes over when the owner leaves',
      slow,
      async () => {
        const topic = await topicWith(1)
        const groupId = uniqueName('g')
        const members = [await consumerOf(topic, groupId), await consumerOf(topic, groupId)]
        await Promise.all(members.map((m) => m.poll(300)))
        const producer = bus().producer()
        await producer.send([message(topic, 'k', 'e-0'), message(topic, 'k', 'e-1')])
        await producer.close()

        // Which member owns the one partition is the assignor's choice.
        const got: DeliveredMessage[][] = [[], []]
        const deadline = Date.now() + 10_000
        while (got[0]!.length + got[1]!.length < 2 && Date.now() < deadline) {
          const batches = await Promise.all(members.map((m) => m.poll(300)))
          batches.forEach((batch, i) => got[i]!.push(...batch))
        }
        const ownerIndex = got[0]!.length > 0 ? 0 : 1
        const owner = members[ownerIndex]!
        const idle = members[1 - ownerIndex]!
        assert.deepEqual(ids(got[ownerIndex]!), ['e-0', 'e-1'])
        assert.deepEqual(got[1 - ownerIndex], [])

        await owner.commit(got[ownerIndex]!.slice(0, 1))
        const waiting = pollUntil(idle, 1)
        await owner.close()
        assert.deepEqual(ids(await waiting), ['e-1'])
        await idle.close()
      },
    )

    test('a second group receives every message independently', slow, async () => {
      const topic = await topicWith(2)
      const producer = bus().producer()
      const sent = Array.from({ length: 20 }, (_, i) => message(topic, `k-${i % 4}`, `e-${i}`))
      await producer.send(sent)
      await producer.close()

      const one = await consumerOf(topic, uniqueName('g1'))
      const gotOne = await pollUntil(one, 20)
      await one.commit(gotOne)
      await one.close()
      const two = await consumerOf(topic, uniqueName('g2'))
      const gotTwo = await pollUntil(two, 20)
      await two.close()
      assert.deepEqual(ids(gotOne), ids(sent))
      assert.deepEqual(ids(gotTwo), ids(sent))
    })

    test("start 'latest' skips what was sent before the group existed", slow, async () => {
      const topic = await topicWith(2)
      const producer = bus().producer()
      await producer.send([0, 1, 2].map((i) => message(topic, `k-${i}`, `old-${i}`)))
      const consumer = await consumerOf(topic, uniqueName('g'), { start: 'latest' })
      await producer.send([0, 1, 2].map((i) => message(topic, `k-${i}`, `new-${i}`)))
      await producer.close()
      const got = await drain(consumer)
      await consumer.close()
      assert.deepEqual(ids(got), ['new-0', 'new-1', 'new-2'])
    })

    test(
      'poll: returns [] on timeout and on abort, and wakes as soon as a message arrives',
      slow,
      async () => {
        const topic = await topicWith(1)
        const consumer = await consumerOf(topic, uniqueName('g'))

        let t0 = Date.now()
        assert.deepEqual(await consumer.poll(300), [])
        const waited = Date.now() - t0
        assert.ok(waited >= 250 && waited < 3_000, `timeout honoured (${waited} ms)`)

        const controller = new AbortController()
        setTimeout(() => controller.abort(), 100)
        t0 = Date.now()
        assert.deepEqual(await consumer.poll(10_000, controller.signal), [])
        assert.ok(Date.now() - t0 < 1_000, 'abort ends the wait')
        assert.deepEqual(await consumer.poll(10_000, AbortSignal.abort()), [])

        const producer = bus().producer()
        // The send may be acknowledged after the consumer already has the message: it is awaited
        // before the producer closes, or closing would fail it after the test.
        const sent = new Promise<void>((resolve, reject) => {
          setTimeout(() => {
            producer.send([message(topic, 'k', 'late')]).then(resolve, reject)
          }, 200)
        })
        t0 = Date.now()
        const got = await consumer.poll(10_000)
        const latency = Date.now() - t0
        assert.deepEqual(ids(got), ['late'])
        assert.ok(latency < 2_000, `woken by the message (${latency} ms)`)
        await sent
        await producer.close()
        await consumer.close()
      },
    )

    test(
      'a topic that was never ensured is refused, by producers and consumers',
      slow,
      async () => {
        const missing = uniqueName('cairn-bus-missing')
        const producer = bus().producer()
        await assert.rejects(producer.send([message(missing, 'k', 'e')]), (error: unknown) =>
          isCairnError(error, 'BUS_UNKNOWN_TOPIC'),
        )
        await producer.close()
        await assert.rejects(consumerOf(missing, uniqueName('g')), (error: unknown) =>
          isCairnError(error, 'BUS_UNKNOWN_TOPIC'),
        )
      },
    )

    test('ensureTopics is idempotent and keeps an existing topic as it is', slow, async () => {
      const topic = await topicWith(2)
      await bus().ensureTopics([{ name: topic, partitions: 2 }])
      await bus().ensureTopics([{ name: topic, partitions: 5 }])
      const producer = bus().producer()
      const sent = spreadKeys(8, 2).map((k, i) => message(topic, k, `e-${i}`))
      await producer.send(sent)
      await producer.close()
      const consumer = await consumerOf(topic, uniqueName('g'))
      const got = await pollUntil(consumer, sent.length)
      await consumer.close()
      assert.deepEqual(new Set(got.map((m) => m.partition)), new Set([0, 1]))
    })

    test(
      '1,000 messages in one send all arrive, in batches of at most maxBatch',
      slow,
      async () => {
        const topic = await topicWith(3)
        const producer = bus().producer()
        const filler = new Uint8Array(200).fill(120)
        const sent = Array.from({ length: 1_000 }, (_, i) =>
          message(topic, `agg-${i % 50}`, `e-${String(i).padStart(4, '0')}`, filler),
        )
        await producer.send(sent)
        await producer.close()

        const consumer = await consumerOf(topic, uniqueName('g'), { maxBatch: 300 })
        const got: DeliveredMessage[] = []
        const deadline = Date.now() + 30_000
        while (got.length < sent.length && Date.now() < deadline) {
          const batch = await consumer.poll(500)
          assert.ok(batch.length <= 300, `batch of ${batch.length}`)
          got.push(...batch)
          await consumer.commit(batch)
        }
        await consumer.close()
        assert.deepEqual(ids(got), ids(sent))
        for (const key of ['agg-0', 'agg-49']) {
          assert.deepEqual(
            got.filter((m) => m.key === key).map(idOf),
            sent.filter((m) => m.key === key).map(idOf),
          )
        }
      },
    )

    test('close is safe twice; a closed consumer or producer refuses work', slow, async () => {
      const topic = await topicWith(1)
      const producer = bus().producer()
      await producer.close()
      await producer.close()
      await assert.rejects(producer.send([message(topic, 'k', 'e')]), (error: unknown) =>
        isCairnError(error, 'CLOSED'),
      )
      const consumer = await consumerOf(topic, uniqueName('g'))
      const pending = consumer.poll(10_000)
      const t0 = Date.now()
      await consumer.close()
      assert.deepEqual(await pending, [], 'a poll in progress ends when the consumer closes')
      assert.ok(Date.now() - t0 < 3_000, 'close is prompt')
      await consumer.close()
      await assert.rejects(consumer.poll(10), (error: unknown) => isCairnError(error, 'CLOSED'))

      // The same with a poll that is already waiting at the broker.
      const waiting = await consumerOf(topic, uniqueName('g'))
      const inProgress = waiting.poll(10_000)
      await new Promise((resolve) => setTimeout(resolve, 300))
      const t1 = Date.now()
      await waiting.close()
      assert.deepEqual(await inProgress, [])
      assert.ok(Date.now() - t1 < 3_000, 'close is prompt')
    })
  })
