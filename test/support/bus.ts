import { Admin } from '@platformatic/kafka'
import { createInProcessBus } from '../../src/adapters/bus/in-process-bus.ts'
import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import type { KafkaBusOptions } from '../../src/adapters/bus/kafka-bus.ts'
import type { Bus, ConsumerOptions, TopicSpec } from '../../src/core/ports/bus.ts'
import type { AdapterCase } from './contract.ts'
import { kafkaBrokers } from './services.ts'

export const inProcessBusCase = (): AdapterCase<Bus> => ({
  name: 'in-process',
  create: async () => createInProcessBus(),
})

/**
 * Kafka tuned for tests: short sessions and heartbeats so that rebalances take a second, not
 * ten (the broker runs with `group.initial.rebalance.delay.ms=0`).
 */
export const testKafkaBusOptions = (): KafkaBusOptions => ({
  brokers: kafkaBrokers(),
  clientId: 'cairn-test',
  sessionTimeoutMs: 6_000,
  heartbeatIntervalMs: 500,
  rebalanceTimeoutMs: 10_000,
})

/**
 * The Kafka bus, recording the topics and groups its tests make so that cleanup deletes them.
 */
export const kafkaBusCase = (): AdapterCase<Bus> => {
  const topics = new Set<string>()
  const groups = new Set<string>()
  return {
    name: 'Kafka',
    async create() {
      const bus = createKafkaBus(testKafkaBusOptions())
      return {
        ...bus,
        describe: bus.describe,
        ensureTopics: (specs: readonly TopicSpec[]) => {
          for (const s of specs) topics.add(s.name)
          return bus.ensureTopics(specs)
        },
        consumer: (options: ConsumerOptions) => {
          groups.add(options.groupId)
          return bus.consumer(options)
        },
      }
    },
    async cleanup() {
      const admin = new Admin({ clientId: 'cairn-test-cleanup', bootstrapBrokers: kafkaBrokers() })
      try {
        if (groups.size > 0) await admin.deleteGroups({ groups: [...groups] }).catch(() => {})
        if (topics.size > 0) await admin.deleteTopics({ topics: [...topics] }).catch(() => {})
      } finally {
        await admin.close()
      }
    },
  }
}
