import assert from 'node:assert/strict'
import { test } from 'node:test'
import { openWriteSide } from '../../src/config/compose.ts'
import { loadConfig } from '../../src/config/env.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { rebuildProjection } from '../../src/domain/rebuild.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { FAST_ENV, openEmbedded } from '../support/embedded.ts'
import { inProcessClient } from '../support/oms-client.ts'
import type { Reply } from '../support/oms-client.ts'

test('the read model rebuilt from the bucket alone equals the one the projection built', async () => {
  const cairn = await openEmbedded()
  const schema = 'spice_event_registry'
  const tables = ['rm_databases', 'rm_classes', 'rm_instances']
  try {
    const c = inProcessClient(cairn.runtime.app)
    const ok = async (r: Promise<Reply>) => {
      const a = await r
      assert.equal(a.status, 202, a.text)
      const s = (await c.settle(String((a.json as { command_id: string }).command_id))) as {
        status: string
      }
      assert.equal(s.status, 'COMPLETED', JSON.stringify(s))
    }
    await ok(c.post('/api/v1/databases', { name: 'shop' }))
    await ok(c.post('/api/v1/databases', { name: 'gone' }))
    await ok(
      c.post('/api/v1/databases/shop/classes', {
        id: 'Item',
        properties: [{ name: 'n', type: 'integer', required: true }],
      }),
    )
    for (let i = 0; i < 5; i++) {
      await ok(
        c.post('/api/v1/databases/shop/classes/Item/instances', { id: `i${i}`, data: { n: i } }),
      )
    }
    await ok(
      c.put('/api/v1/databases/shop/classes/Item/instances/i1?expected_seq=2', { data: { n: 10 } }),
    )
    await ok(c.del('/api/v1/databases/shop/classes/Item/instances/i2?expected_seq=2'))
    await ok(c.del('/api/v1/databases/gone?expected_seq=2'))
    const snapshot = async () => {
      const out: Record<string, unknown[]> = {}
      for (const t of tables) {
        out[t] = await cairn.runtime.ws.sql.query(`SELECT * FROM ${schema}.${t} ORDER BY 1, 2, 3`)
      }
      return out
    }
    const before = await snapshot()
    assert.equal(before['rm_instances']?.length, 4)
    await cairn.close()

    const config = loadConfig({
      ...FAST_ENV,
      CAIRN_MODE: 'embedded',
      CAIRN_DATA_DIR: cairn.dataDir,
    })
    await using ws = await openWriteSide(config, silentLogger, { probe: false })
    for (const t of tables) await ws.sql.query(`DELETE FROM ${schema}.${t}`)
    const registry = createProcessedEventRegistry({ sql: ws.sql, schema, member: 'rebuild-test' })
    await registry.start()
    const progress: number[] = []
    const applied = await rebuildProjection({
      eventStore: ws.eventStore,
      sql: ws.sql,
      schema,
      registry,
      batchSize: 3,
      onProgress: (n) => progress.push(n),
    })
    assert.equal(applied, 11, 'every domain event once')
    assert.ok(progress.length > 1 && progress.at(-1) === 11, 'progress is reported')
    const after: Record<string, unknown[]> = {}
    for (const t of tables) {
      after[t] = await ws.sql.query(`SELECT * FROM ${schema}.${t} ORDER BY 1, 2, 3`)
    }
    assert.deepEqual(after, before)
    const done = await ws.sql.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${schema}.processed_events WHERE handler = 'projection_worker' AND status = 'done'`,
    )
    assert.equal(Number(done[0]?.n), 11)
    await registry.stop()
  } finally {
    await cairn.destroy()
  }
})
