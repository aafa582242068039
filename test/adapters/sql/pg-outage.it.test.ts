import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createPgSql } from '../../../src/adapters/sql/pg.ts'
import { ErrorCode, isCairnError } from '../../../src/core/errors.ts'
import { eventually } from '../../support/collect.ts'
import { startFreezeProxy, viaProxy } from '../../support/freeze-proxy.ts'
import { databaseUrl, uniqueName } from '../../support/services.ts'

/**
 * The pg adapter's error paths against the real server: sessions ended by the server (what a
 * restart or a crash does to them) and a server that stops answering (a relay that freezes, as
 * SIGSTOP would), without stopping the shared PostgreSQL. Each must fail the call with a
 * retryable SQL_UNAVAILABLE, never crash the process, and work again afterwards.
 */

const target = () => {
  const u = new URL(databaseUrl())
  return { host: u.hostname, port: Number(u.port) }
}

const unavailable = (error: unknown): boolean =>
  isCairnError(error, ErrorCode.SQL_UNAVAILABLE) && error.retryable

/** Ends every session of an application name from another connection, as a server restart would. */
const terminate = async (app: string): Promise<number> => {
  const admin = createPgSql({ connectionString: databaseUrl() })
  try {
    const rows = await admin.query<{ ended: boolean }>(
      'SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE application_name = $1',
      [app],
    )
    return rows.filter((r) => r.ended).length
  } finally {
    await admin.close()
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('pg adapter: outages', () => {
  test('idle pooled connections whose sessions end do not crash the process; the next query reconnects', async () => {
    const app = uniqueName('pg-idle')
    await using sql = createPgSql({ connectionString: databaseUrl(), applicationName: app })
    // Several idle connections in the pool.
    await Promise.all(Array.from({ length: 4 }, () => sql.query('SELECT pg_sleep(0.05)')))
    assert.ok((await terminate(app)) >= 1)
    await sleep(200)
    assert.deepEqual(await sql.query('SELECT 1 AS one'), [{ one: 1 }])
  })

  test('a transaction whose session ends while it waits between statements fails retryably; no crash, the pool works', async () => {
    const app = uniqueName('pg-tx-idle')
    await using sql = createPgSql({ connectionString: databaseUrl(), applicationName: app })
    const table = `t_${uniqueName('x').replace(/-/g, '_')}`
    await sql.exec(`CREATE TABLE ${table} (n int)`)
    try {
      const failed = sql.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} VALUES (1)`)
        // Idle in transaction while the server ends the session.
        assert.equal(await terminate(app), 1)
        await sleep(300)
        await tx.query(`INSERT INTO ${table} VALUES (2)`)
      })
      await assert.rejects(failed, unavailable)
      await sleep(100)
      assert.deepEqual(await sql.query(`SELECT count(*)::int AS n FROM ${table}`), [{ n: 0 }])
      await sql.transaction(async (tx) => tx.query(`INSERT INTO ${table} VALUES (3)`))
      assert.deepEqual(await sql.query(`SELECT n FROM ${table}`), [{ n: 3 }])
    } finally {
      await sql.exec(`DROP TABLE ${table}`)
    }
  })

  test('a transaction whose session ends mid-statement fails retryably without a crash', async () => {
    const app = uniqueName('pg-tx-busy')
    await using sql = createPgSql({ connectionString: databaseUrl(), applicationName: app })
    const failed = sql
      .transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock(42424242)')
        await tx.query('SELECT pg_sleep(5)')
      })
      .then(
        () => assert.fail('the transaction went through'),
        (error: unknown) => error,
      )
    await sleep(500)
    assert.equal(await terminate(app), 1)
    const error = await failed
    assert.ok(unavailable(error), String(error))
    // The advisory lock goes with the session (once the server has ended it).
    await eventually(async () => {
      const [row] = await sql.query<{ got: boolean }>(
        'SELECT pg_try_advisory_xact_lock(42424242) AS got',
      )
      return row?.got === true
    }, 'the lock released')
  })

  test('a server that stops answering: statements and transactions fail within the query timeout, then work again', async () => {
    await using proxy = await startFreezeProxy(target())
    await using sql = createPgSql({
      connectionString: viaProxy(databaseUrl(), proxy),
      queryTimeoutMs: 1_000,
      connectTimeoutMs: 1_000,
      max: 2,
    })
    assert.deepEqual(await sql.query('SELECT 1 AS one'), [{ one: 1 }])
    proxy.freeze()
    const started = Date.now()
    const outcomes = await Promise.allSettled([
      sql.query('SELECT 1'),
      sql.transaction(async (tx) => tx.query('SELECT 1')),
      sql.query('SELECT 2'),
      sql.query('SELECT 3'),
    ])
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected')
      assert.ok(unavailable(o.reason), String(o.reason))
    }
    // Bounded: a timeout each, at most a connect timeout and a query timeout in a row.
    assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started} ms`)
    proxy.restore()
    assert.deepEqual(await sql.query('SELECT 1 AS one'), [{ one: 1 }])
    assert.deepEqual(await sql.transaction(async (tx) => tx.query('SELECT 2 AS two')), [{ two: 2 }])
  })

  test('a server that is gone: calls fail retryably at once, and work again when it is back', async () => {
    await using proxy = await startFreezeProxy(target())
    await using sql = createPgSql({ connectionString: viaProxy(databaseUrl(), proxy) })
    await sql.query('SELECT 1')
    proxy.cut()
    await assert.rejects(sql.query('SELECT 1'), unavailable)
    await assert.rejects(
      sql.transaction(async (tx) => tx.query('SELECT 1')),
      unavailable,
    )
    proxy.restore()
    assert.deepEqual(await sql.query('SELECT 1 AS one'), [{ one: 1 }])
  })

  test('server errors keep their SQLSTATE and are not taken for an outage', async () => {
    await using sql = createPgSql({ connectionString: databaseUrl() })
    await assert.rejects(sql.query('SELECT * FROM no_such_table_here'), (error: unknown) => {
      assert.equal((error as { code?: unknown }).code, '42P01')
      assert.ok(!isCairnError(error))
      return true
    })
  })

  test('a listener whose server is away for a while listens again once, on one connection', async () => {
    const app = uniqueName('pg-listen-away')
    await using proxy = await startFreezeProxy(target())
    await using sql = createPgSql({
      connectionString: viaProxy(databaseUrl(), proxy),
      applicationName: app,
      connectTimeoutMs: 500,
      queryTimeoutMs: 500,
    })
    await using other = createPgSql({ connectionString: databaseUrl() })
    const channel = uniqueName('ch').replace(/-/g, '_')
    const got: string[] = []
    let reconnects = 0
    const stop = await sql.listen?.(
      channel,
      (p) => got.push(p),
      () => reconnects++,
    )
    assert.ok(stop)
    proxy.cut()
    await sleep(2_500)
    // Hung while it tries again (connects that never answer), then back.
    proxy.freeze()
    await sleep(2_500)
    proxy.restore()
    const deadline = Date.now() + 10_000
    while (reconnects === 0 && Date.now() < deadline) await sleep(50)
    assert.equal(reconnects, 1)
    await other.query('SELECT pg_notify($1, $2)', [channel, 'back'])
    while (got.length === 0 && Date.now() < deadline) await sleep(50)
    assert.deepEqual(got, ['back'])
    await sleep(1_500)
    assert.equal(reconnects, 1, 'one reconnect, not one per failed attempt')
    const sessions = await other.query(
      'SELECT 1 FROM pg_stat_activity WHERE application_name = $1',
      [`${app}-listen`],
    )
    assert.equal(sessions.length, 1, 'one listening session')
    await stop()
  })

  test('a listener that cannot connect at first rejects and leaves nothing behind', async () => {
    await using proxy = await startFreezeProxy(target())
    await using sql = createPgSql({
      connectionString: viaProxy(databaseUrl(), proxy),
      connectTimeoutMs: 500,
    })
    proxy.cut()
    await assert.rejects(sql.listen?.('cairn_nobody', () => {}) ?? Promise.reject(new Error()))
    proxy.restore()
    await sleep(1_500)
    assert.equal(proxy.connections(), 0, 'no connection attempts after the rejection')
  })
})
