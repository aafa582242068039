import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { openWriteSide } from '../../src/config/compose.ts'
import { loadConfig } from '../../src/config/env.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { childEnv } from '../support/child.ts'
import { FAST_ENV, openEmbedded } from '../support/embedded.ts'
import { inProcessClient } from '../support/oms-client.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

const cairn = (dataDir: string, ...args: string[]) => {
  const r = spawnSync(
    path.join(ROOT, 'node_modules', '.bin', 'node'),
    [path.join(ROOT, 'src', 'cli', 'main.ts'), ...args],
    {
      cwd: ROOT,
      env: childEnv({ ...FAST_ENV, CAIRN_DATA_DIR: dataDir }),
      encoding: 'utf8',
      timeout: 120_000,
    },
  )
  return { code: r.status, out: r.stdout, err: r.stderr }
}

test('operator commands: status, parked list/skip/retry, projection rebuild, checkpoint show/reset', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'cairn-operate-'))
  try {
    // Some traffic, then a dead-lettered event recorded by a worker, with the process stopped.
    const running = await openEmbedded({ dataDir })
    const c = inProcessClient(running.runtime.app)
    const a = await c.post('/api/v1/databases', { name: 'ops' })
    assert.equal((await c.settle(a.json.command_id)).status, 'COMPLETED')
    await running.close()
    const config = loadConfig({ ...FAST_ENV, CAIRN_MODE: 'embedded', CAIRN_DATA_DIR: dataDir })
    {
      await using ws = await openWriteSide(config, silentLogger, { probe: false })
      const registry = createProcessedEventRegistry({
        sql: ws.sql,
        schema: config.sequencing.schema,
        member: 'test-worker',
      })
      await registry.start()
      for (const [id, seq] of [
        ['poison-1', 1],
        ['poison-2', 1],
      ] as const) {
        await registry.claim('mailer', [
          { eventId: id, aggregateType: 'Thing', aggregateId: id, seq },
        ])
        await registry.markFailed('mailer', id, 'SMTP said no', false)
      }
      await registry.stop()
    }

    let r = cairn(dataDir, 'status')
    assert.equal(r.code, 0, r.err)
    // For people: tables; for scripts: --json.
    assert.match(r.out, /^publisher\n/)
    assert.match(r.out, /\n {2}mailer +0 +0 +0 +2 /)
    r = cairn(dataDir, 'status', '--json')
    assert.equal(r.code, 0, r.err)
    const status = JSON.parse(r.out)
    assert.equal(status.handlers.mailer.failed, 2)
    assert.ok(status.handlers.projection_worker.done >= 1, r.out)
    assert.ok(status.publisher.checkpoint !== null, r.out)
    assert.equal(status.publisher.quarantined, 0)

    r = cairn(dataDir, 'parked')
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^handler +event +aggregate/)
    assert.match(r.out, /mailer +poison-1 +Thing\/poison-1 .*SMTP said no/)
    r = cairn(dataDir, 'parked', '--json')
    assert.equal(r.code, 0, r.err)
    const rows = r.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    assert.deepEqual(rows.map((x) => x.eventId).sort(), ['poison-1', 'poison-2'])
    assert.equal(rows[0].lastError, 'SMTP said no')

    r = cairn(dataDir, 'parked', 'skip', 'mailer', 'poison-1', 'nope')
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /skipped 1 of 2/)
    r = cairn(dataDir, 'parked', 'retry', 'mailer', 'poison-2')
    assert.match(r.out, /released 1 of 1/)
    r = cairn(dataDir, 'parked', 'mailer', '--json')
    assert.equal(r.out.trim(), '', 'nothing failed or parked any more')
    assert.equal(cairn(dataDir, 'parked', 'mailer').out, '(none)\n')
    {
      // The operator who released them is recorded on their records.
      await using ws = await openWriteSide(config, silentLogger, { probe: false })
      const registry = createProcessedEventRegistry({
        sql: ws.sql,
        schema: config.sequencing.schema,
        member: 'test-reader',
      })
      for (const id of ['poison-1', 'poison-2']) {
        const [row] = await registry.status(id)
        assert.match(row?.resolvedBy ?? '', /^operator@\S+$/)
      }
    }

    // The read model, rebuilt from the bucket alone after it was lost.
    {
      await using ws = await openWriteSide(config, silentLogger, { probe: false })
      await ws.sql.query(`DELETE FROM ${config.sequencing.schema}.rm_databases`)
    }
    r = cairn(dataDir, 'projection', 'rebuild')
    assert.match(r.out, /add --yes/)
    r = cairn(dataDir, 'projection', 'rebuild', '--yes')
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /read model rebuilt: 1 domain events applied/)
    const back = await openEmbedded({ dataDir })
    try {
      const db = await inProcessClient(back.runtime.app).get('/api/v1/databases/ops')
      assert.equal(db.status, 200, db.text)
      assert.equal(db.json.seq, 2)
    } finally {
      await back.close()
    }

    r = cairn(dataDir, 'checkpoint', 'show')
    assert.equal(r.code, 0, r.err)
    assert.match(r.out, /^last_index_key +indexes\/by-date\//m)
    r = cairn(dataDir, 'checkpoint', 'show', '--json')
    assert.equal(r.code, 0, r.err)
    const cp = JSON.parse(r.out)
    assert.match(cp.last_index_key, /^indexes\/by-date\//)
    assert.equal(typeof cp.recent_event_ids, 'number')

    r = cairn(dataDir, 'checkpoint', 'reset', '--to', '2026-01-01T00:00:00Z')
    assert.match(r.out, /add --yes/)
    assert.equal(
      JSON.parse(cairn(dataDir, 'checkpoint', 'show', '--json').out).last_index_key,
      cp.last_index_key,
    )
    r = cairn(dataDir, 'checkpoint', 'reset', '--to', '2026-01-01T00:00:00Z', '--yes')
    assert.equal(r.code, 0, r.err)
    const after = JSON.parse(cairn(dataDir, 'checkpoint', 'show', '--json').out)
    assert.equal(after.last_index_key, 'indexes/by-date/2026/01/01/1767225600000000')
    assert.equal(after.owner, '')
    r = cairn(dataDir, 'checkpoint', 'reset', '--to', 'yesterday', '--yes')
    assert.equal(r.code, 1)
    assert.match(r.err, /not an ISO-8601 time/)
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
})
