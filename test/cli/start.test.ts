import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { startCairn } from '../support/cairn-process.ts'
import { FAST_ENV } from '../support/embedded.ts'
import { httpClient } from '../support/oms-client.ts'

test('`cairn start` (the README command) serves the OMS embedded, prints a first curl, and stops cleanly on SIGTERM', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'cairn-start-'))
  try {
    const cairn = await startCairn(['start'], {
      ...FAST_ENV,
      LOG_LEVEL: 'info',
      CAIRN_DATA_DIR: dataDir,
    })
    try {
      assert.match(cairn.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.match(cairn.output(), /curl -s -X POST http:\/\/127\.0\.0\.1:\d+\/api\/v1\/databases/)
      assert.match(cairn.output(), /console: http:\/\/127\.0\.0\.1:\d+\/console/)
      const c = httpClient(cairn.url)
      const r = await c.post('/api/v1/databases', { name: 'first' })
      assert.equal(r.status, 202, r.text)
      assert.equal((await c.settle(r.json.command_id as string)).status, 'COMPLETED')
      const big = await c.request('POST', '/api/v1/databases', {
        raw: `{"name":"x","d":"${'a'.repeat(1_100_000)}"}`,
        headers: { 'content-type': 'application/json' },
      })
      assert.equal(big.status, 413, big.text)
      assert.equal((await c.get('/api/v1/databases/first')).status, 200)
      const page = await fetch(`${cairn.url}/console`)
      assert.equal(page.status, 200)
      assert.match(await page.text(), /<script type="module" src="\/console\/console.js">/)
    } finally {
      const code = await cairn.stop('SIGTERM')
      assert.equal(code, 0, cairn.output().slice(-4000))
      assert.match(cairn.output(), /"msg":"stopped"/)
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
})

test('`cairn oms` refuses embedded mode, and distributed mode without tokens, with a clear message', async () => {
  await assert.rejects(startCairn(['oms'], { CAIRN_MODE: 'embedded' }, 30_000), /use `cairn start`/)
  await assert.rejects(
    startCairn(
      ['oms'],
      {
        CAIRN_MODE: 'distributed',
        CAIRN_S3_ENDPOINT: 'http://127.0.0.1:1',
        CAIRN_S3_ACCESS_KEY_ID: 'a',
        CAIRN_S3_SECRET_ACCESS_KEY: 'b',
        CAIRN_DATABASE_URL: 'postgres://x@127.0.0.1:1/x',
        CAIRN_KAFKA_BROKERS: '127.0.0.1:1',
      },
      30_000,
    ),
    /refuses to start in distributed mode without OMS_API_TOKENS/,
  )
})
