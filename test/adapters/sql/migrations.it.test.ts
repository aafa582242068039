import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { migrate } from '../../../src/adapters/sql/migrations.ts'
import { createPgSql } from '../../../src/adapters/sql/pg.ts'
import { ErrorCode, isCairnError } from '../../../src/core/errors.ts'
import { databaseUrl, uniqueName } from '../../support/services.ts'

const schemas: string[] = []
const fresh = (): string => {
  const schema = uniqueName('cairn_mig').replace(/-/g, '_')
  schemas.push(schema)
  return schema
}
after(async () => {
  const sql = createPgSql({ connectionString: databaseUrl() })
  for (const s of schemas) await sql.exec(`DROP SCHEMA IF EXISTS ${s} CASCADE`)
  await sql.close()
})

test('six processes migrating one fresh schema at once take turns: each version applied once', async () => {
  const schema = fresh()
  // One pool each, as separate processes have.
  const pools = Array.from({ length: 6 }, () =>
    createPgSql({ connectionString: databaseUrl(), max: 1 }),
  )
  try {
    const applied = await Promise.all(pools.map((sql) => migrate(sql, schema)))
    const versions = (
      await (pools[0] as (typeof pools)[0]).query<{ version: string }>(
        `SELECT version FROM ${schema}.schema_migrations ORDER BY version`,
      )
    ).map((r) => r.version)
    assert.ok(versions.length > 0)
    assert.deepEqual(applied.flat().sort(), versions, 'every version applied by exactly one')
    assert.equal(applied.filter((a) => a.length > 0).length, 1, 'the first one applies them all')
  } finally {
    await Promise.all(pools.map((sql) => sql.close()))
  }
})

test('a schema migrated by a newer cairn is refused (SCHEMA_TOO_NEW), and left as it is', async () => {
  const schema = fresh()
  const sql = createPgSql({ connectionString: databaseUrl() })
  try {
    const known = await migrate(sql, schema)
    await sql.query(`INSERT INTO ${schema}.schema_migrations (version) VALUES ($1)`, [
      '999_from_a_newer_cairn',
    ])
    await assert.rejects(
      migrate(sql, schema),
      (e) =>
        isCairnError(e, ErrorCode.SCHEMA_TOO_NEW) &&
        /999_from_a_newer_cairn/.test(e.message) &&
        !e.retryable,
    )
    const rows = await sql.query(`SELECT 1 FROM ${schema}.schema_migrations`)
    assert.equal(rows.length, known.length + 1)
  } finally {
    await sql.close()
  }
})
