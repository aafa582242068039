import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createPgSql } from '../../../src/adapters/sql/pg.ts'
import { createPgliteSql } from '../../../src/adapters/sql/pglite.ts'
import type { Sql } from '../../../src/core/ports/sql.ts'
import { contractSuite } from '../../support/contract.ts'
import { databaseUrl, uniqueName } from '../../support/services.ts'

const schema = uniqueName('cairn_test').replace(/-/g, '_')

contractSuite<Sql>(
  'sql',
  [
    {
      name: 'PostgreSQL',
      create: () => Promise.resolve(createPgSql({ connectionString: databaseUrl() })),
      async cleanup() {
        const sql = createPgSql({ connectionString: databaseUrl() })
        await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
        await sql.close()
      },
    },
    { name: 'PGlite', create: () => createPgliteSql() },
  ],
  (sql) => {
    test('the same SQL round trips: schema, insert … returning, upsert, select', async () => {
      await sql().exec(`
        CREATE SCHEMA IF NOT EXISTS ${schema};
        CREATE TABLE ${schema}.seq (name text PRIMARY KEY, last bigint NOT NULL);
      `)
      const inserted = await sql().query<{ last: string }>(
        `INSERT INTO ${schema}.seq (name, last) VALUES ($1, 1)
         ON CONFLICT (name) DO UPDATE SET last = ${schema}.seq.last + 1 RETURNING last`,
        ['a'],
      )
      assert.equal(Number(inserted[0]?.last), 1)
      const again = await sql().query<{ last: string }>(
        `INSERT INTO ${schema}.seq (name, last) VALUES ($1, 1)
         ON CONFLICT (name) DO UPDATE SET last = ${schema}.seq.last + 1 RETURNING last`,
        ['a'],
      )
      assert.equal(Number(again[0]?.last), 2)
      const rows = await sql().query(
        `SELECT name, last FROM ${schema}.seq WHERE name = ANY($1::text[])`,
        [['a', 'b']],
      )
      assert.equal(rows.length, 1)
    })

    test('a transaction that throws is rolled back', async () => {
      await assert.rejects(
        sql().transaction(async (tx) => {
          await tx.query(`INSERT INTO ${schema}.seq (name, last) VALUES ('tx', 1)`)
          throw new Error('boom')
        }),
        /boom/,
      )
      const rows = await sql().query(`SELECT 1 FROM ${schema}.seq WHERE name = 'tx'`)
      assert.equal(rows.length, 0)
      const committed = await sql().transaction(async (tx) => {
        await tx.query(`INSERT INTO ${schema}.seq (name, last) VALUES ('tx', 7)`)
        return 'ok'
      })
      assert.equal(committed, 'ok')
      assert.equal((await sql().query(`SELECT 1 FROM ${schema}.seq WHERE name = 'tx'`)).length, 1)
    })
  },
)
