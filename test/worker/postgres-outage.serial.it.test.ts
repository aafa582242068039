import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { createWorker } from '../../src/worker/worker.ts'
import { eventually } from '../support/collect.ts'
import { databaseUrl, kafkaBrokers, uniqueName } from '../support/services.ts'

const run = promisify(execFile)
const services = fileURLToPath(new URL('../../scripts/services.sh', import.meta.url))

// Stops the shared PostgreSQL: runs alone (serial phase of scripts/test.sh).
test('PostgreSQL stopped for 20 s: consumption pauses, nothing is acknowledged unprocessed, then resumes', async () => {
  const sql = createPgSql({ connectionString: databaseUrl() })
  const bus = createKafkaBus({ brokers: kafkaBrokers() })
  const schema = uniqueName('cairn_pgout').replace(/-/g, '_')
  const topic = uniqueName('pgout')
  let pgDown = false
  const worker = createWorker({
    bus,
    registry: createProcessedEventRegistry({ sql, schema, member: 'pg-outage', leaseMs: 10_000 }),
    handler: 'projection',
    topics: [topic],
    groupId: `g-${topic}`,
    transactional: sql,
    pollWaitMs: 100,
    heartbeatMs: 1_000,
    handle: async (e, ctx) => {
      await ctx.tx?.query(`INSERT INTO ${schema}.effects VALUES ($1)`, [e.event_id])
    },
  })
  try {
    await migrate(sql, schema)
    await sql.exec(`CREATE TABLE ${schema}.effects (event_id text NOT NULL)`)
    await bus.ensureTopics([{ name: topic, partitions: 1 }])
    const producer = bus.producer()
    const send = async (from: number, n: number) => {
      const envs = Array.from({ length: n }, (_, i) => ({
        ...createEnvelope({
          event_type: 'X',
          aggregate_type: 'Thing',
          aggregate_id: `pg-${from + i}`,
          metadata: { kind: 'domain' },
        }),
        sequence_number: 1,
      }))
      await producer.send(
        envs.map((e) => ({
          topic,
          key: e.aggregate_id,
          value: new TextEncoder().encode(canonicalJson(e)),
          headers: {},
        })),
      )
    }
    const running = worker.run()
    await send(0, 10)
    await eventually(
      async () => (await sql.query(`SELECT 1 FROM ${schema}.effects`)).length === 10,
      'before the outage',
      30_000,
    )

    await run('bash', [services, 'down', 'postgres'])
    pgDown = true
    await send(10, 10)
    await eventually(() => worker.metrics().pauses >= 2, 'the worker paused', 30_000)
    await new Promise((r) => setTimeout(r, 20_000))
    const processedWhileDown = worker.metrics().processed
    assert.equal(processedWhileDown, 10, 'nothing processed while the registry was down')

    await run('bash', [services, 'up', 'postgres'])
    pgDown = false
    await eventually(
      async () => (await sql.query(`SELECT 1 FROM ${schema}.effects`).catch(() => [])).length >= 20,
      'resumed after the outage',
      60_000,
    )
    await new Promise((r) => setTimeout(r, 500))
    const rows = await sql.query<{ event_id: string }>(`SELECT event_id FROM ${schema}.effects`)
    assert.equal(rows.length, 20, 'every effect exactly once')
    assert.equal(new Set(rows.map((r) => r.event_id)).size, 20)
    await worker.close()
    await running
    await producer.close()
  } finally {
    if (pgDown) await run('bash', [services, 'up', 'postgres'])
    await worker.close()
    await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {})
    await sql.close()
    await bus.close()
  }
})
