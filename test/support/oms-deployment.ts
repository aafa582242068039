import assert from 'node:assert/strict'
import { Admin } from '@platformatic/kafka'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { eventually } from './collect.ts'
import { FAST_ENV } from './embedded.ts'
import type { OmsClient } from './oms-client.ts'
import { databaseUrl, kafkaBrokers, s3Targets, uniqueName } from './services.ts'

export const DEPLOYMENT_TOKEN = 'deploy-token-0123456789abcdef'

/** A distributed deployment of its own on the real services: fresh bucket, schema and prefix. */
export type Deployment = {
  readonly env: Record<string, string>
  /** Drops its schema and deletes its topics (the bucket stays, as cairn never deletes events). */
  cleanup(): Promise<void>
}

export const freshDeployment = (
  stem: string,
  extra: Readonly<Record<string, string>> = {},
): Deployment => {
  const minio = s3Targets()[0] as NonNullable<ReturnType<typeof s3Targets>[0]>
  const prefix = `${uniqueName(stem)}.`
  const schema = uniqueName(`cairn_${stem}`).replace(/-/g, '_')
  const env: Record<string, string> = {
    ...FAST_ENV,
    LOG_LEVEL: 'info',
    CAIRN_MODE: 'distributed',
    CAIRN_S3_ENDPOINT: minio.endpoint,
    CAIRN_S3_ACCESS_KEY_ID: minio.accessKeyId,
    CAIRN_S3_SECRET_ACCESS_KEY: minio.secretAccessKey,
    CAIRN_DATABASE_URL: databaseUrl(),
    CAIRN_KAFKA_BROKERS: kafkaBrokers().join(','),
    CAIRN_KAFKA_TOPIC_PREFIX: prefix,
    EVENT_STORE_BUCKET: uniqueName(`cairn-${stem}`),
    EVENT_STORE_SEQUENCE_SCHEMA: schema,
    OMS_API_TOKENS: DEPLOYMENT_TOKEN,
    ...extra,
  }
  return {
    env,
    async cleanup() {
      const sql = createPgSql({ connectionString: databaseUrl() })
      try {
        await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      } finally {
        await sql.close()
      }
      const admin = new Admin({ clientId: 'cairn-test-cleanup', bootstrapBrokers: kafkaBrokers() })
      try {
        const topics = (await admin.listTopics()).filter((t) => t.startsWith(prefix))
        if (topics.length > 0) await admin.deleteTopics({ topics })
      } finally {
        await admin.close()
      }
    },
  }
}

/**
 * Every component of the reference domain, each its own process, with replicas of the OMS, the
 * publisher and the instance worker: what an operator starts. The first is an OMS.
 */
export const COMPONENTS: readonly {
  readonly args: readonly string[]
  readonly env?: Readonly<Record<string, string>>
}[] = [
  { args: ['oms'] },
  { args: ['oms'] },
  { args: ['publisher'] },
  { args: ['publisher'] },
  { args: ['worker', 'ontology'], env: { CAIRN_MEMBER_NAME: 'ontology-1' } },
  { args: ['worker', 'instance'], env: { CAIRN_MEMBER_NAME: 'instance-1' } },
  { args: ['worker', 'instance'], env: { CAIRN_MEMBER_NAME: 'instance-2' } },
  { args: ['worker', 'projection'], env: { CAIRN_MEMBER_NAME: 'projection-1' } },
]

/**
 * Commands through every worker complete: a database and a class (ontology worker), an instance
 * (instance worker), each 202 then COMPLETED, and the instance visible in the read model
 * (projection).
 */
export const commandsComplete = async (c: OmsClient, timeoutMs = 60_000): Promise<void> => {
  const db = `db-${uniqueName('s').slice(-8)}`
  const accepted = async (path: string, body: unknown): Promise<void> => {
    const r = await c.post(path, body)
    assert.equal(r.status, 202, `POST ${path}: ${r.text}`)
    const done = await c.settle(String(r.json['command_id']), timeoutMs)
    assert.equal(done.status, 'COMPLETED', `POST ${path}: ${JSON.stringify(done)}`)
  }
  await accepted('/api/v1/databases', { name: db })
  await accepted(`/api/v1/databases/${db}/classes`, {
    id: 'Product',
    properties: [{ name: 'name', type: 'string', required: true }],
  })
  await accepted(`/api/v1/databases/${db}/classes/Product/instances`, {
    id: 'p1',
    data: { name: 'Lamp' },
  })
  await eventually(
    async () => {
      const r = await c.get(`/api/v1/databases/${db}/classes/Product/instances/p1`)
      return r.status === 200 && r.json.data?.name === 'Lamp'
    },
    'the instance in the read model',
    timeoutMs,
  )
}

/** The error, with the last output of each process appended (what a hang or a failure shows). */
export const withOutputs = (error: unknown, processes: readonly { output(): string }[]): Error =>
  new Error(
    `${error instanceof Error ? error.message : String(error)}\n${processes
      .map((p, i) => `--- process ${i} ---\n${p.output().slice(-2_000)}`)
      .join('\n')}`,
    { cause: error },
  )
