import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import { databaseClock } from '../../src/sequencing/allocator.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import { eventually } from '../support/collect.ts'
import { storedLine } from '../support/stored-bytes.ts'
import { kafkaBrokers, uniqueName } from '../support/services.ts'
import { distributedWorld } from '../support/publisher-world.ts'

const run = promisify(execFile)

test('the bytes an independent client (kcat) reads from Kafka are exactly the stored envelopes', async () => {
  const world = await distributedWorld().create()
  const topic = uniqueName('kcat')
  const publisher = createPublisher({
    objectStore: world.ws.objectStore,
    bus: world.bus,
    keyClock: databaseClock(world.ws.sql),
    pollIntervalMs: 100,
    settleMs: 400,
    metricsLogIntervalMs: 60_000,
  })
  const running = publisher.run()
  try {
    const store = world.ws.store()
    const envs = Array.from({ length: 20 }, (_, i) =>
      createEnvelope({
        event_type: 'THING_HAPPENED',
        aggregate_type: 'Thing',
        aggregate_id: `kcat-${randomUUID()}`,
        // Unicode, escapes and nesting: the bytes must survive as they are.
        data: { i, text: 'ünïcødé "quoted"\nline', nested: { list: [1, 2.5, null, true] } },
        metadata: { kind: 'domain', kafka_topic: topic },
      }),
    )
    await Promise.all(envs.map((e) => store.append({ envelopes: [e] })))
    await eventually(() => publisher.metrics().published >= 20, 'publication')

    const { stdout } = await run(
      'kcat',
      ['-b', kafkaBrokers().join(','), '-C', '-t', topic, '-e', '-q', '-f', '%k\t%s\n'],
      {
        maxBuffer: 16 * 1024 * 1024,
      },
    )
    const lines = stdout.split('\n').filter((l) => l !== '')
    assert.equal(lines.length, 20)
    for (const line of lines) {
      const tab = line.indexOf('\t')
      const key = line.slice(0, tab)
      const value = line.slice(tab + 1)
      const envelope = JSON.parse(value) as StoredEnvelope
      assert.equal(key, envelope.aggregate_id)
      const stored = await storedLine(world.ws, envelope.event_id)
      assert.ok(stored !== null, `event ${envelope.event_id} is in its segment`)
      assert.equal(value, stored, 'byte-identical to its line of the stored segment')
    }
  } finally {
    await publisher.close()
    await running
    await world.close()
  }
})
