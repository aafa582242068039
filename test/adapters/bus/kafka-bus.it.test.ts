import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { Admin } from '@platformatic/kafka'
import { createKafkaBus } from '../../../src/adapters/bus/kafka-bus.ts'
import { busContract } from '../../contract/bus.ts'
import { kafkaBusCase, testKafkaBusOptions } from '../../support/bus.ts'
import { kafkaBrokers, uniqueName } from '../../support/services.ts'

busContract([kafkaBusCase()])

const created: string[] = []
after(async () => {
  const admin = new Admin({ clientId: 'cairn-test-cleanup', bootstrapBrokers: kafkaBrokers() })
  try {
    if (created.length > 0) await admin.deleteTopics({ topics: created }).catch(() => {})
  } finally {
    await admin.close()
  }
})

// Processes started together (an OMS, a publisher, several workers) create the same topics in
// the same instant: each must succeed, whoever wins, and see the topics ready. Many partitions
// make the broker's metadata lag the controller's answer, as a loaded machine does: the losers are
// told the topics exist before a listing shows them.
test(
  'several buses (processes) ensuring the same new topics at once all succeed',
  { timeout: 120_000 },
  async () => {
    const buses = Array.from({ length: 8 }, () => createKafkaBus(testKafkaBusOptions()))
    const admin = new Admin({ clientId: 'cairn-test-race', bootstrapBrokers: kafkaBrokers() })
    try {
      for (let round = 0; round < 3; round++) {
        const prefix = `${uniqueName('cairn-race')}.`
        const specs = ['a', 'b', 'c', 'd', 'e'].map((t) => ({ name: prefix + t, partitions: 48 }))
        created.push(...specs.map((s) => s.name))
        const outcomes = await Promise.allSettled(buses.map((bus) => bus.ensureTopics(specs)))
        const failures = outcomes.flatMap((o) =>
          o.status === 'rejected' ? [String(o.reason)] : [],
        )
        assert.deepEqual(failures, [], `round ${round}: every ensureTopics succeeds`)
        // Ready: the cluster lists every topic with all its partitions.
        const metadata = await admin.metadata({ topics: specs.map((s) => s.name) })
        assert.deepEqual(
          specs.map((s) => metadata.topics.get(s.name)?.partitionsCount),
          specs.map((s) => s.partitions),
        )
      }
    } finally {
      await Promise.all(buses.map((bus) => bus.close()))
      await admin.close()
    }
  },
)
