import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { openService } from '../../src/application/service.ts'
import { createTestService } from '../../src/application/testing.ts'
import { loadConfig } from '../../src/config/env.ts'
import { shop } from './fixtures.ts'

type Answer = { status: string; command_id: string }

test('Prefer: wait on a domain route: 200 with the outcome once decided', async (t) => {
  const svc = await createTestService(shop)
  t.after(() => svc.destroy())
  const r = await svc.request<Answer>(
    'POST',
    '/api/v1/carts',
    { cart_id: 'w1', customer: 'Wendy' },
    { prefer: 'wait=20' },
  )
  assert.equal(r.status, 200, JSON.stringify(r.body))
  assert.equal(r.body.status, 'COMPLETED')
  assert.equal(r.headers['preference-applied'], 'wait=20')
})

test('Prefer: wait=1 with no command worker running: 202 after about a second, not an error', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'cairn-prefer-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    CAIRN_MODE: 'embedded',
    CAIRN_DATA_DIR: dataDir,
  })
  const svc = await openService({
    domain: shop,
    config,
    components: { oms: true, publisher: false, workers: false },
  })
  t.after(() => svc.close())
  const started = performance.now()
  const r = await svc.app.handle({
    method: 'POST',
    url: '/api/v1/carts',
    headers: { 'content-type': 'application/json', prefer: 'wait=1' },
    body: new TextEncoder().encode(JSON.stringify({ cart_id: 'w2', customer: 'Will' })),
  })
  const waited = performance.now() - started
  assert.equal(r.status, 202, r.body)
  assert.equal(r.headers['preference-applied'], 'wait=1')
  assert.ok(waited >= 900, `answered after ${Math.round(waited)} ms, before the wait was up`)
  const body = JSON.parse(r.body) as Answer
  assert.equal(body.status, 'PENDING')
})
