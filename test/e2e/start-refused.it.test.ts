import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { startCairn } from '../support/cairn-process.ts'
import { freshDeployment } from '../support/oms-deployment.ts'
import { databaseUrl } from '../support/services.ts'

// Waiting does not fix these: the component exits at once, non-zero, and says why.
const deployment = freshDeployment('refused')
after(() => deployment.cleanup())

const refused = async (
  env: Record<string, string>,
  why: RegExp,
  args: readonly string[] = ['worker', 'projection'],
): Promise<void> => {
  await assert.rejects(startCairn(args, { ...deployment.env, ...env }, 60_000), (e: Error) => {
    assert.match(e.message, /exited early \(code 1, signal null\)/)
    assert.match(e.message, why)
    assert.match(e.message, /cannot start/)
    return true
  })
}

test('wrong S3 credentials: exits 1 with the refusal', async () => {
  await refused({ CAIRN_S3_SECRET_ACCESS_KEY: 'not-the-secret' }, /cairn: HeadBucket .* 403/)
})

test('wrong PostgreSQL password: exits 1 with the refusal', async () => {
  const url = new URL(databaseUrl())
  url.password = 'not-the-password'
  await refused(
    { CAIRN_DATABASE_URL: url.toString() },
    /cairn: postgres \S+ refused: password authentication failed/,
    ['oms'],
  )
})

test('a schema a newer cairn migrated: exits 1, naming the unknown migration', async () => {
  const sql = createPgSql({ connectionString: databaseUrl() })
  try {
    const schema = deployment.env.EVENT_STORE_SEQUENCE_SCHEMA as string
    await migrate(sql, schema)
    await sql.query(`INSERT INTO ${schema}.schema_migrations (version) VALUES ('999_later')`)
  } finally {
    await sql.close()
  }
  await refused(
    {},
    /cairn: schema \S+ has migrations this version of cairn does not know \(999_later\)/,
    ['publisher'],
  )
})
