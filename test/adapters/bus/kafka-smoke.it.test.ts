import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import {
  Admin,
  Consumer,
  Producer,
  ProduceAcks,
  stringDeserializers,
  stringSerializers,
} from '@platformatic/kafka'
import { kafkaBrokers, uniqueName } from '../../support/services.ts'

const topic = uniqueName('cairn-smoke')
const admin = new Admin({ clientId: 'cairn-test-admin', bootstrapBrokers: kafkaBrokers() })

after(async () => {
  await admin.deleteTopics({ topics: [topic] }).catch(() => {})
  await admin.close()
})

test('Kafka: an idempotent acks=all producer and a consumer group round trip, keyed and ordered', async () => {
  await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
  const producer = new Producer({
    clientId: 'cairn-test-producer',
    bootstrapBrokers: kafkaBrokers(),
    serializers: stringSerializers,
    idempotent: true,
    acks: ProduceAcks.ALL,
  })
  const sent = Array.from({ length: 30 }, (_, i) => ({ key: `agg-${i % 3}`, value: `event-${i}` }))
  try {
    await producer.send({
      messages: sent.map((m) => ({ topic, ...m, headers: { event_id: m.value } })),
    })
  } finally {
    await producer.close()
  }

  const consumer = new Consumer({
    clientId: 'cairn-test-consumer',
    groupId: uniqueName('cairn-smoke-group'),
    bootstrapBrokers: kafkaBrokers(),
    deserializers: stringDeserializers,
  })
  const received: { key: string; value: string; header: string | undefined }[] = []
  try {
    const stream = await consumer.consume({
      topics: [topic],
      mode: 'earliest',
      autocommit: false,
      maxWaitTime: 200,
    })
    for await (const message of stream) {
      received.push({
        key: message.key,
        value: message.value,
        header: message.headers.get('event_id'),
      })
      await message.commit()
      if (received.length === sent.length) break
    }
    await stream.close()
  } finally {
    await consumer.close(true)
  }
  assert.equal(received.length, sent.length)
  assert.deepEqual(received.map((r) => r.value).sort(), sent.map((m) => m.value).sort())
  assert.ok(received.every((r) => r.header === r.value))
  // Per key, the order of production is kept.
  for (const key of ['agg-0', 'agg-1', 'agg-2']) {
    assert.deepEqual(
      received.filter((r) => r.key === key).map((r) => r.value),
      sent.filter((m) => m.key === key).map((m) => m.value),
    )
  }
})
