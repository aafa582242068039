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

test('pg: a listener whose connection is lost listens again, says so, and delivers again', async () => {
  const app = uniqueName('listen-test')
  const sql = createPgSql({ connectionString: databaseUrl(), applicationName: app })
  const other = createPgSql({ connectionString: databaseUrl() })
  try {
    const channel = uniqueName('ch').replace(/-/g, '_')
    const got: string[] = []
    let reconnects = 0
    const stop = await sql.listen?.(
      channel,
      (payload) => got.push(payload),
      () => reconnects++,
    )
    assert.ok(stop)
    assert.equal(reconnects, 0, 'the first connection is not a reconnect')
    // The server ends the listening session (a restart, a failover, an administrator).
    const ended = await other.query<{ ended: boolean }>(
      `SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE application_name = $1`,
      [`${app}-listen`],
    )
    assert.deepEqual(
      ended.map((r) => r.ended),
      [true],
    )
    const deadline = Date.now() + 10_000
    while (reconnects === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(reconnects, 1)
    await other.query('SELECT pg_notify($1, $2)', [channel, 'after the loss'])
    while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.deepEqual(got, ['after the loss'])
    await stop?.()
  } finally {
    await sql.close()
    await other.close()
  }
})
