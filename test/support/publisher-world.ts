import { createInProcessBus } from '../../src/adapters/bus/in-process-bus.ts'
import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import type { PublisherWorld } from '../contract/publisher.ts'
import { fsStoreCase, s3StoreCases } from './adapters.ts'
import type { AdapterCase } from './contract.ts'
import { kafkaBrokers } from './services.ts'
import { makeWriteSide } from './write-side.ts'

/** A fresh bucket, registry schema and bus for each test. */
export const embeddedWorld = (): AdapterCase<PublisherWorld> => ({
  name: 'filesystem + PGlite + in-process bus',
  async create() {
    const ws = await makeWriteSide(fsStoreCase(), 'pglite')
    const bus = createInProcessBus()
    return {
      ws,
      bus,
      async close() {
        await bus.close()
        await ws.close()
      },
    }
  },
})

export const distributedWorld = (): AdapterCase<PublisherWorld> => ({
  name: 'MinIO + PostgreSQL + Kafka',
  async create() {
    const minio = s3StoreCases()[0]
    if (minio === undefined) throw new Error('no MinIO target')
    const ws = await makeWriteSide(minio, 'pg')
    const bus = createKafkaBus({ brokers: kafkaBrokers() })
    return {
      ws,
      bus,
      async close() {
        await bus.close()
        await ws.close()
      },
    }
  },
})
