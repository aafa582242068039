import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { createClient } from '../../src/client/index.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { commitChannel, openWriteSide } from '../../src/config/compose.ts'
import { loadConfig } from '../../src/config/env.ts'
import type { CairnConfig } from '../../src/config/env.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import { eventually } from '../support/collect.ts'
import { DEPLOYMENT_TOKEN, freshDeployment } from '../support/oms-deployment.ts'
import { httpClient } from '../support/oms-client.ts'
import { omsFlow } from '../support/oms-flow.ts'
import { databaseUrl, s3Targets } from '../support/services.ts'

const TOKEN = DEPLOYMENT_TOKEN

describe('distributed: oms, publisher and workers as separate processes on MinIO, Kafka and PostgreSQL', () => {
  const deployment = freshDeployment('e2e')
  const env = deployment.env
  const bucketName = env.EVENT_STORE_BUCKET as string
  const minio = s3Targets()[0] as NonNullable<ReturnType<typeof s3Targets>[0]>
  const processes: CairnProcess[] = []
  let bucket: S3ObjectStore

  before(async () => {
    bucket = await createS3ObjectStore({
      endpoint: minio.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
      bucket: bucketName,
    })
    // The components start in any order; each applies the migrations it needs under a lock.
    const started = await Promise.all([
      startCairn(['oms'], env),
      startCairn(['publisher'], env),
      startCairn(['worker', 'ontology', 'instance'], { ...env, CAIRN_MEMBER_NAME: 'commands-1' }),
      startCairn(['worker', 'projection'], { ...env, CAIRN_MEMBER_NAME: 'projection-1' }),
    ])
    processes.push(...started)
  })

  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')))
    await bucket.close()
    await deployment.cleanup()
  })

  test('the whole flow over HTTP, with authentication', async () => {
    const oms = processes[0] as CairnProcess
    const anonymous = httpClient(oms.url)
    assert.equal((await anonymous.get('/api/v1/databases')).status, 401)
    await omsFlow(createClient({ baseUrl: oms.url, token: TOKEN }), bucket)
    const metrics = await anonymous.get('/metrics')
    assert.match(metrics.text, /cairn_http_requests_total/)
    const workerMetrics = await httpClient((processes[3] as CairnProcess).url).get('/metrics')
    assert.match(workerMetrics.text, /cairn_worker_processed\{handler="projection_worker"\} [1-9]/)
    // The operator's overview from the OMS alone: consumer lag per topic read from Kafka.
    const overview = await httpClient(oms.url, TOKEN).get('/api/v1/ops/overview')
    assert.equal(overview.status, 200, overview.text)
    assert.ok(Array.isArray(overview.json.consumers), overview.text)
    assert.ok(
      overview.json.consumers.some(
        (c: { group: string; topic: string; lag: number }) =>
          c.group.endsWith('projection-worker-group') &&
          c.topic.endsWith('instance_events') &&
          c.lag >= 0,
      ),
      overview.text,
    )
    assert.ok(overview.json.handlers.projection_worker.done >= 1, overview.text)
  })

  test("the publisher's commit listener loses its session: it listens again, says so, and publishing goes on", async () => {
    const [oms, publisher] = processes as [CairnProcess, CairnProcess]
    const channel = commitChannel({
      sequencing: { schema: env.EVENT_STORE_SEQUENCE_SCHEMA },
      eventStore: { bucket: bucketName },
    } as unknown as CairnConfig)
    const sql = createPgSql({ connectionString: databaseUrl() })
    try {
      // The server ends the publisher's listening session (a failover, an administrator).
      const ended = await sql.query<{ ended: boolean }>(
        'SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE query = $1',
        [`LISTEN ${channel}`],
      )
      assert.deepEqual(
        ended.map((r) => r.ended),
        [true],
      )
      await eventually(
        () => publisher.output().includes('commit listener reconnected'),
        'the publisher reports the reconnect',
      )
      const c = httpClient(oms.url, TOKEN)
      const created = await c.post('/api/v1/databases', { name: `db-${Date.now()}` })
      assert.equal(created.status, 202, created.text)
      const done = await c.settle(String(created.json['command_id']))
      assert.equal(done.status, 'COMPLETED')
    } finally {
      await sql.close()
    }
  })

  test("another process's large group commit reaches the publisher in its notices: no segment is read", async () => {
    const publisher = processes[1] as CairnProcess
    const metric = async (name: string): Promise<number> => {
      const text = (await httpClient(publisher.url).get('/metrics')).text
      const m = new RegExp(`^cairn_publisher_${name} (\\S+)$`, 'm').exec(text)
      assert.ok(m?.[1] !== undefined, `cairn_publisher_${name} in /metrics`)
      return Number(m[1])
    }
    // A writer of its own (as an OMS or a worker is) appends one group of 40 events of 1 KiB:
    // about eight NOTIFY payloads.
    await using ws = await openWriteSide(loadConfig(env), silentLogger, { probe: false })
    const reads = await metric('segment_reads')
    const published = await metric('published')
    const id = `big-${Date.now()}`
    await ws.eventStore.append({
      envelopes: Array.from({ length: 40 }, (_, i) =>
        createEnvelope({
          event_type: 'THING_HAPPENED',
          aggregate_type: 'Thing',
          aggregate_id: id,
          data: { i, payload: 'x'.repeat(1_024) },
          metadata: { kind: 'domain' },
        }),
      ),
    })
    await eventually(
      async () => (await metric('published')) >= published + 40,
      'the publisher publishes the group',
    )
    assert.equal(await metric('segment_reads'), reads, 'the segment was not read')
  })

  test('SIGTERM drains every component and exits 0', async () => {
    const codes = await Promise.all(processes.map((p) => p.stop('SIGTERM')))
    assert.deepEqual(
      codes,
      processes.map(() => 0),
      processes.map((p) => p.output().slice(-2000)).join('\n-----\n'),
    )
  })
})
