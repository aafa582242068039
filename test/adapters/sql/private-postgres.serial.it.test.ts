import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import { createPgSql } from '../../../src/adapters/sql/pg.ts'
import { ErrorCode, isCairnError } from '../../../src/core/errors.ts'
import type { Sql } from '../../../src/core/ports/sql.ts'
import { startPrivatePostgres, type PrivatePostgres } from '../../support/private-postgres.ts'

/**
 * The private cluster that serial tests stop and restore under a running system: a restore puts
 * the copy's rows back and nothing later, the adapter's pool rides it out (the call in flight
 * fails as retryable, the next ones work), and close() leaves nothing behind.
 */

const unavailable = (error: unknown): boolean =>
  isCairnError(error, ErrorCode.SQL_UNAVAILABLE) && error.retryable

const ids = async (sql: Sql): Promise<number[]> =>
  (await sql.query<{ id: number }>('SELECT id FROM t ORDER BY id')).map((r) => r.id)

/** Runs `fn`, returning its result and how long it took. */
const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
  const t0 = performance.now()
  const result = await fn()
  return [result, Math.round(performance.now() - t0)]
}

describe('private PostgreSQL', () => {
  let pg: PrivatePostgres | undefined
  let sql: Sql | undefined

  before(async (t) => {
    let ms: number
    ;[pg, ms] = await timed(() => startPrivatePostgres())
    t.diagnostic(`started in ${ms} ms on port ${pg.port}`)
    sql = createPgSql({ connectionString: pg.url, connectTimeoutMs: 2_000 })
  })
  after(async () => {
    await sql?.close()
    await pg?.close()
  })

  test('restore puts a copy back under an open pool: the call in flight fails, the next ones work', async (t) => {
    assert.ok(pg !== undefined && sql !== undefined)
    await sql.exec('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)')
    const [copy, backupMs] = await timed(() => pg!.backup())
    await sql.query('INSERT INTO t VALUES (2)')
    assert.deepEqual(await ids(sql), [1, 2])

    // A statement running on a pooled connection when the server stops.
    const inFlight = sql.query('SELECT pg_sleep(30)').then(
      () => assert.fail('the statement outlived the restore'),
      (error: unknown) => error,
    )
    const [, restoreMs] = await timed(() => pg!.restore(copy))
    t.diagnostic(`backup ${backupMs} ms, restore ${restoreMs} ms`)
    const error = await inFlight
    assert.ok(unavailable(error), `expected a retryable SQL_UNAVAILABLE, got ${String(error)}`)

    // The pool dropped its ended connections; the same pool sees the copy, and can write.
    assert.deepEqual(await ids(sql), [1])
    await sql.query('INSERT INTO t VALUES (3)')
    assert.deepEqual(await ids(sql), [1, 3])

    // The copy is unchanged by its use: it can be put back again.
    await pg.restore(copy)
    assert.deepEqual(await ids(sql), [1])
  })

  test('stop and start keep the url: calls fail while it is stopped and work after', async (t) => {
    assert.ok(pg !== undefined && sql !== undefined)
    const [, stopMs] = await timed(() => pg!.stop())
    await assert.rejects(sql.query('SELECT 1'), unavailable)
    const [, startMs] = await timed(() => pg!.start())
    t.diagnostic(`stop ${stopMs} ms, start ${startMs} ms`)
    assert.deepEqual(await ids(sql), [1])
  })

  test('close stops the server and deletes everything it made; twice is fine', async () => {
    assert.ok(pg !== undefined && sql !== undefined)
    assert.ok(existsSync(pg.dir))
    await pg.close()
    await pg.close()
    assert.equal(existsSync(pg.dir), false)
    await assert.rejects(sql.query('SELECT 1'), unavailable)
    await assert.rejects(pg.start(), /after close\(\)/)
  })
})
