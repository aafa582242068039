import assert from 'node:assert/strict'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { createFsObjectStore } from '../../src/adapters/object-store/fs/fs-object-store.ts'
import { createOmsApp } from '../../src/http/app.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'
import { createClient } from '../../src/client/index.ts'
import { appFetch, inProcessClient } from '../support/oms-client.ts'
import { omsFlow } from '../support/oms-flow.ts'

describe('OMS, embedded (filesystem bucket, PGlite, in-process bus)', () => {
  let cairn: Embedded
  before(async () => {
    cairn = await openEmbedded()
  })
  after(async () => {
    await cairn.destroy()
  })

  test('the whole flow: create, read with seq, update, 409 with nothing stored, idempotency, history, validation failures', async () => {
    const bucket = await createFsObjectStore({
      root: path.join(cairn.dataDir, 'bucket', 'spice-event-store'),
    })
    const client = createClient({
      baseUrl: 'http://oms.test',
      fetch: appFetch(cairn.runtime.app) as typeof fetch,
    })
    await omsFlow(client, bucket)
  })

  test('malformed input is a 4xx problem+json, never a 5xx', async () => {
    const c = inProcessClient(cairn.runtime.app)
    const cases: [
      string,
      string,
      Record<string, string> | undefined,
      string | undefined,
      number,
      string,
    ][] = [
      ['POST', '/api/v1/databases', undefined, '{"name":', 400, 'malformed_json'],
      ['POST', '/api/v1/databases', undefined, '', 400, 'body_required'],
      [
        'POST',
        '/api/v1/databases',
        { 'content-type': 'text/plain' },
        'hi',
        415,
        'unsupported_media_type',
      ],
      ['POST', '/api/v1/databases', undefined, '{"name":"Bad Name"}', 400, 'validation_failed'],
      ['POST', '/api/v1/databases', undefined, '{"name":"ok","extra":1}', 400, 'validation_failed'],
      ['POST', '/api/v1/databases', undefined, '[1,2]', 400, 'validation_failed'],
      ['GET', '/api/v1/commands/not-a-uuid', undefined, undefined, 400, 'invalid_command_id'],
      [
        'GET',
        '/api/v1/commands/6f1c2b55-1f7e-4a0e-9a57-1a2b3c4d5e6f',
        undefined,
        undefined,
        404,
        'not_found',
      ],
      ['PUT', '/api/v1/databases', undefined, '{}', 405, 'method_not_allowed'],
      ['GET', '/api/v1/nothing', undefined, undefined, 404, 'not_found'],
      ['GET', '/api/v1/databases/%E0%A4%A', undefined, undefined, 404, 'not_found'],
      ['GET', '/api/v1/databases?limit=0', undefined, undefined, 400, 'invalid_limit'],
      // Text that is not a number is not taken for one ("true" would convert to 1).
      ['GET', '/api/v1/databases?limit=true', undefined, undefined, 400, 'invalid_limit'],
      ['GET', '/api/v1/databases?limit=5.5', undefined, undefined, 400, 'invalid_limit'],
      [
        'DELETE',
        '/api/v1/databases/x?expected_seq=-1',
        undefined,
        undefined,
        400,
        'invalid_expected_seq',
      ],
      [
        'DELETE',
        '/api/v1/databases/x',
        { 'if-match': 'nonsense' },
        undefined,
        400,
        'invalid_if_match',
      ],
      [
        'DELETE',
        '/api/v1/databases/x?expected_seq=1',
        { 'if-match': '"2"' },
        undefined,
        409,
        'conflicting_expected_seq',
      ],
      [
        'POST',
        '/api/v1/databases',
        { 'idempotency-key': 'has space' },
        '{"name":"x"}',
        400,
        'invalid_idempotency_key',
      ],
    ]
    for (const [method, url, headers, raw, status, code] of cases) {
      const r = await c.request(method, url, {
        ...(raw === undefined ? {} : { raw }),
        headers: {
          ...(raw === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
      })
      assert.equal(r.status, status, `${method} ${url}: ${r.text}`)
      assert.match(
        r.headers['content-type'] ?? '',
        /application\/problem\+json/,
        `${method} ${url}`,
      )
      assert.equal(r.json.code, code, `${method} ${url}: ${r.text}`)
      assert.equal(r.json.status, status)
    }
    const big = await c.request('POST', '/api/v1/databases', {
      raw: `{"name":"x","description":"${'a'.repeat(2 * 1024 * 1024)}"}`,
      headers: { 'content-type': 'application/json' },
    })
    assert.equal(big.status, 413, big.text)
    assert.equal(big.json.code, 'body_too_large')
  })

  test('with OMS_API_TOKENS, /api needs a known bearer token; health does not', async () => {
    const token = 'tok-0123456789abcdef'
    const ws = cairn.runtime.ws
    const app = createOmsApp({
      eventStore: ws.eventStore,
      readModel: ws.sql,
      schema: 'spice_event_registry',
      commandRecords: async () => [],
      auth: { tokens: ['other-token-xxxxxxxx', token] },
    })
    const anonymous = inProcessClient(app)
    let r = await anonymous.get('/api/v1/databases')
    assert.equal(r.status, 401, r.text)
    assert.equal(r.json.code, 'unauthorized')
    assert.equal(r.headers['www-authenticate'], 'Bearer')
    r = await inProcessClient(app, 'wrong-token-0000000000').get('/api/v1/databases')
    assert.equal(r.status, 401)
    assert.equal((await anonymous.get('/healthz')).status, 200)
    const c = inProcessClient(app, token)
    r = await c.post('/api/v1/databases', { name: 'authed' })
    assert.equal(r.status, 202, r.text)
    const history = await c.get('/api/v1/aggregates/Database/authed/events')
    assert.match(
      String(history.json.events[0].actor),
      /^token:[0-9a-f]{12}$/,
      'the actor names the token, not the secret',
    )
    assert.ok(!history.text.includes(token))
  })

  test('OpenAPI, health, readiness and metrics are served', async () => {
    const c = inProcessClient(cairn.runtime.app)
    const spec = await c.get('/openapi.json')
    assert.equal(spec.status, 200)
    assert.equal(spec.json.openapi, '3.1.0')
    assert.ok(spec.json.paths['/api/v1/databases/{db}/classes/{class_id}/instances/{instance_id}'])
    assert.equal((await c.get('/healthz')).status, 200)
    const ready = await c.get('/readyz')
    assert.equal(ready.status, 200, ready.text)
    assert.deepEqual(ready.json.checks, {
      database: 'ok',
      bucket: 'ok',
      publisher: 'ok',
      'ontology worker': 'ok',
      'instance worker': 'ok',
      'projection worker': 'ok',
      appends: 'ok',
    })
    const metrics = await c.get('/metrics')
    assert.equal(metrics.status, 200)
    assert.match(
      metrics.text,
      /cairn_http_requests_total\{route="\/readyz",method="GET",status="200"\} \d+/,
    )
    assert.match(metrics.text, /cairn_publisher_published \d+/)
    assert.match(metrics.text, /cairn_worker_processed\{handler="projection_worker"\} \d+/)
    assert.match(metrics.text, /cairn_worker_paused\{handler="projection_worker"\} 0/)
    assert.match(metrics.text, /cairn_publisher_failing 0/)
  })
})

describe('OMS, embedded restart', () => {
  test('all state is still there after the process restarts on the same data directory', async () => {
    const first = await openEmbedded()
    let dataDir = first.dataDir
    try {
      const c = inProcessClient(first.runtime.app)
      const a = await c.post('/api/v1/databases', { name: 'kept', description: 'before restart' })
      assert.equal(a.status, 202, a.text)
      assert.equal((await c.settle(a.json.command_id)).status, 'COMPLETED')
      const cls = await c.post('/api/v1/databases/kept/classes', {
        id: 'Thing',
        properties: [{ name: 'n', type: 'integer', required: true }],
      })
      assert.equal((await c.settle(cls.json.command_id)).status, 'COMPLETED')
      const inst = await c.post('/api/v1/databases/kept/classes/Thing/instances', {
        id: 't1',
        data: { n: 7 },
      })
      assert.equal((await c.settle(inst.json.command_id)).status, 'COMPLETED')
      await first.close()

      const second = await openEmbedded({ dataDir })
      dataDir = second.dataDir
      try {
        const c2 = inProcessClient(second.runtime.app)
        const db = await c2.get('/api/v1/databases/kept')
        assert.equal(db.status, 200, db.text)
        assert.equal(db.json.description, 'before restart')
        const t1 = await c2.get('/api/v1/databases/kept/classes/Thing/instances/t1')
        assert.equal(t1.status, 200, t1.text)
        assert.deepEqual(t1.json.data, { n: 7 })
        assert.equal(
          (await c2.get(`/api/v1/commands/${String(inst.json.command_id)}`)).json.status,
          'COMPLETED',
        )
        // And it keeps working: the next change takes the seq read after the restart.
        const up = await c2.put(
          `/api/v1/databases/kept/classes/Thing/instances/t1?expected_seq=${String(t1.json.seq)}`,
          {
            data: { n: 8 },
          },
        )
        assert.equal(up.status, 202, up.text)
        assert.equal((await c2.settle(up.json.command_id)).status, 'COMPLETED')
        assert.equal(
          (await c2.get('/api/v1/databases/kept/classes/Thing/instances/t1')).json.data.n,
          8,
        )
      } finally {
        await second.close()
      }
    } finally {
      const { rm } = await import('node:fs/promises')
      await rm(dataDir, { recursive: true, force: true })
    }
  })
})
