import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { createEnvelope } from '../../src/core/envelope.ts'
import { loadCheckpoint } from '../../src/publisher/checkpoint.ts'
import { databaseClock } from '../../src/sequencing/allocator.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import { collectDistinct, eventually } from '../support/collect.ts'
import { uniqueName } from '../support/services.ts'
import { distributedWorld } from '../support/publisher-world.ts'

const run = promisify(execFile)
const services = fileURLToPath(new URL('../../scripts/services.sh', import.meta.url))

// Stops the shared Kafka: runs alone (serial phase of scripts/test.sh).
test('Kafka stopped for 30 s during writes: nothing lost once it returns; the checkpoint never passed undelivered events', async () => {
  const world = await distributedWorld().create()
  const topic = uniqueName('outage')
  const publisher = createPublisher({
    objectStore: world.ws.objectStore,
    bus: world.bus,
    keyClock: databaseClock(world.ws.sql),
    pollIntervalMs: 200,
    settleMs: 500,
    heartbeatMs: 500,
    flushTimeoutMs: 2_000,
    metricsLogIntervalMs: 60_000,
  })
  const running = publisher.run()
  const store = world.ws.store()
  const event = (i: number) =>
    createEnvelope({
      event_type: 'THING_HAPPENED',
      aggregate_type: 'Thing',
      aggregate_id: `outage-${i % 5}`,
      data: { i },
      metadata: { kind: 'domain', kafka_topic: topic },
    })
  let kafkaDown = false
  try {
    for (let i = 0; i < 10; i++) await store.append({ envelopes: [event(i)] })
    await eventually(() => publisher.metrics().published >= 10, 'publication before the outage')

    await run('bash', [services, 'down', 'kafka'])
    kafkaDown = true
    let firstOutageKey: string | undefined
    const unsubscribe = store.onCommit((n) => (firstOutageKey ??= n.segmentKey))
    const started = Date.now()
    let i = 10
    while (Date.now() - started < 30_000) {
      await store.append({ envelopes: [event(i++)] })
      const { checkpoint } = await loadCheckpoint(world.ws.objectStore)
      if (firstOutageKey !== undefined && checkpoint?.last_index_key != null) {
        assert.ok(
          checkpoint.last_index_key < firstOutageKey,
          'the checkpoint moved past an undelivered event',
        )
      }
      await new Promise((r) => setTimeout(r, 1_000))
    }
    unsubscribe()
    const written = i
    assert.ok(publisher.metrics().deliveryFailures > 0, 'deliveries failed while Kafka was down')

    await run('bash', [services, 'up', 'kafka'])
    kafkaDown = false
    await eventually(
      () => publisher.metrics().published >= written,
      'publication after the outage',
      120_000,
    )
    const got = await collectDistinct(world.bus, topic, written, 60_000)
    assert.equal(new Set(got.map((m) => m.headers.event_id)).size, written)
  } finally {
    if (kafkaDown) await run('bash', [services, 'up', 'kafka'])
    await publisher.close()
    await running
    await world.close()
  }
})
