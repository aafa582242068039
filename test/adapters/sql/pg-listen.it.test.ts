import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createPgSql } from '../../../src/adapters/sql/pg.ts'
import { databaseUrl, uniqueName } from '../../support/services.ts'

test('pg: listen delivers NOTIFY payloads of its channel only, until stopped', async () => {
  const sql = createPgSql({ connectionString: databaseUrl() })
  const other = createPgSql({ connectionString: databaseUrl() })
  try {
    const channel = uniqueName('ch').replace(/-/g, '_')
    const got: string[] = []
    let arrived: () => void = () => {}
    const stop = await sql.listen?.(channel, (payload) => {
      got.push(payload)
      arrived()
    })
    assert.ok(stop, 'the pg adapter supports listen')
    const wait = new Promise<void>((resolve) => {
      arrived = resolve
    })
    await other.query('SELECT pg_notify($1, $2)', [`${channel}_x`, 'not mine'])
    await other.query('SELECT pg_notify($1, $2)', [channel, 'manifest-1'])
    await Promise.race([
      wait,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no notification')), 5_000)),
    ])
    assert.deepEqual(got, ['manifest-1'])
    await stop()
    await other.query('SELECT pg_notify($1, $2)', [channel, 'after stop'])
    await new Promise((r) => setTimeout(r, 300))
    assert.deepEqual(got, ['manifest-1'])
    await assert.rejects(sql.listen?.('Bad-Channel', () => {}) ?? Promise.resolve(), /identifier/)
  } finally {
    await sql.close()
    await other.close()
  }
})
