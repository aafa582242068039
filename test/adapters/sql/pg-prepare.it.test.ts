import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createPgSql } from '../../../src/adapters/sql/pg.ts'
import { databaseUrl } from '../../support/services.ts'

/** The statements prepared in the session of one pooled connection (a transaction holds it). */
const preparedIn = async (prepare: boolean): Promise<{ names: string[]; rows: number[] }> => {
  const sql = createPgSql({ connectionString: databaseUrl(), max: 1, prepare })
  try {
    return await sql.transaction(async (tx) => {
      const rows: number[] = []
      for (const n of [1, 2, 3]) {
        const [row] = await tx.query<{ n: number }>('SELECT $1::int + 1 AS n', [n])
        rows.push(Number(row?.n))
      }
      const prepared = await tx.query<{ name: string; statement: string }>(
        'SELECT name, statement FROM pg_prepared_statements',
      )
      return {
        names: prepared.filter((p) => p.statement.includes('$1::int + 1')).map((p) => p.name),
        rows,
      }
    })
  } finally {
    await sql.close()
  }
}

test('on PostgreSQL a parameterised statement is prepared once per connection and reused; prepare: false leaves it unnamed', async () => {
  const on = await preparedIn(true)
  assert.deepEqual(on.rows, [2, 3, 4])
  assert.equal(on.names.length, 1, 'three calls, one prepared statement')
  assert.match(on.names[0] ?? '', /^cairn_[0-9a-f]{24}$/)
  const off = await preparedIn(false)
  assert.deepEqual(off.rows, [2, 3, 4])
  assert.deepEqual(off.names, [])
})
