import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { serveHttp } from '../../src/cli/serve.ts'
import { openApiOf } from '../../src/http/contract.ts'
import { OPERATOR_OPERATIONS } from '../../src/http/operator-contract.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'
import { inProcessClient } from '../support/oms-client.ts'

const READER = 'reader-token-0123456789'
const OPS = 'ops-token-0123456789abc'
const ALL = 'all-scopes-token-0123456789'

describe('the operator API and the console, embedded, with scoped tokens', () => {
  let cairn: Embedded
  before(async () => {
    cairn = await openEmbedded({
      env: { OMS_API_TOKENS: `reader=${READER}:read,ops=${OPS}:read+operate,${ALL}` },
    })
  })
  after(async () => {
    await cairn.destroy()
  })

  test('no token is 401; a token without the scope is 403 naming it; all scopes pass', async () => {
    const app = cairn.runtime.app
    const anonymous = inProcessClient(app)
    assert.equal((await anonymous.get('/api/v1/ops/overview')).status, 401)
    const reader = inProcessClient(app, READER)
    assert.equal((await reader.get('/api/v1/ops/overview')).status, 200)
    let r = await reader.post('/api/v1/databases', { name: 'nope' })
    assert.equal(r.status, 403, r.text)
    assert.equal(r.headers['content-type'], 'application/problem+json')
    assert.equal(r.json.code, 'forbidden')
    assert.equal(r.json.missing_scope, 'write')
    assert.match(r.json.detail, /lacks the scope write/)
    r = await reader.post('/api/v1/ops/parked/h/e/retry', {})
    assert.equal(r.status, 403)
    assert.equal(r.json.missing_scope, 'operate')
    // The scope is checked before anything else of the request (nothing is learnt without it).
    r = await inProcessClient(app, OPS).post('/api/v1/databases', { name: 'nope' })
    assert.equal(r.status, 403)
    r = await inProcessClient(app, ALL).post('/api/v1/databases', { name: 'scoped' })
    assert.equal(r.status, 202, r.text)
    // The console's files are not under /api: served without a token.
    assert.equal((await anonymous.get('/console')).status, 200)
  })

  test('OpenAPI declares the operator routes, and 403 only where tokens are configured', async () => {
    const spec = (await inProcessClient(cairn.runtime.app).get('/openapi.json')).json
    const retry = spec.paths['/api/v1/ops/parked/{handler}/{event_id}/retry'].post
    assert.ok(retry.responses['403'])
    assert.ok(retry.responses['401'])
    assert.ok(spec.paths['/api/v1/ops/stream'].get.responses['200'].content['text/event-stream'])
    const open = openApiOf(OPERATOR_OPERATIONS, { title: 't', authenticated: false }) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>
    }
    const openRetry = open.paths['/api/v1/ops/parked/{handler}/{event_id}/retry']?.['post']
    assert.equal(openRetry?.responses['403'], undefined)
    assert.equal(openRetry?.responses['401'], undefined)
  })

  test("overview and a command's path: the command, its events, each handler's record", async () => {
    const c = inProcessClient(cairn.runtime.app, ALL)
    const a = await c.post('/api/v1/databases', { name: 'path' })
    assert.equal((await c.settle(a.json.command_id)).status, 'COMPLETED')
    const reader = inProcessClient(cairn.runtime.app, READER)
    const o = await reader.get('/api/v1/ops/overview')
    assert.equal(o.status, 200, o.text)
    assert.ok(o.json.handlers.ontology_worker.done >= 1, o.text)
    assert.equal(o.json.publisher.this_process, 'active')
    // Embedded: the in-process bus tells each group's lag per topic.
    assert.ok(
      o.json.consumers.some(
        (c: { group: string; topic: string; lag: number }) =>
          c.group === 'projection-worker-group' && c.topic === 'ontology_events' && c.lag >= 0,
      ),
      o.text,
    )
    const p = await reader.get(`/api/v1/ops/commands/${a.json.command_id}`)
    assert.equal(p.status, 200, p.text)
    assert.equal(p.json.status.status, 'COMPLETED')
    assert.equal(p.json.command.event_id, a.json.command_id)
    assert.equal(p.json.command.actor, `token:${p.json.command.actor.slice(6)}`)
    assert.deepEqual(
      p.json.records.map((r: { handler: string; status: string }) => [r.handler, r.status]),
      [['ontology_worker', 'done']],
    )
    assert.equal(p.json.events.length, 1)
    assert.equal(p.json.events[0].envelope.event_type, 'DATABASE_CREATED')
    assert.deepEqual(
      p.json.events[0].records.map((r: { handler: string; status: string }) => [
        r.handler,
        r.status,
      ]),
      [['projection_worker', 'done']],
    )
    const missing = await reader.get('/api/v1/ops/commands/6f1c2b55-1f7e-4a0e-9a57-1a2b3c4d5e6f')
    assert.equal(missing.status, 404)
    assert.equal((await reader.get('/api/v1/ops/commands/nope')).status, 400)
  })

  test('parked events: listed with their reason; retry and skip record the actor; twice is 404', async () => {
    const registry = createProcessedEventRegistry({
      sql: cairn.runtime.ws.sql,
      schema: 'spice_event_registry',
      member: 'test-mailer',
    })
    await registry.start()
    for (const id of ['poison-a', 'poison-b']) {
      await registry.claim('mailer', [
        { eventId: id, aggregateType: 'Thing', aggregateId: id, seq: 1 },
      ])
      await registry.markFailed('mailer', id, '<img src=x onerror=alert(1)> said no', false)
    }
    await registry.stop()
    const reader = inProcessClient(cairn.runtime.app, READER)
    const list = await reader.get('/api/v1/ops/parked?handler=mailer')
    assert.equal(list.status, 200, list.text)
    assert.deepEqual(
      list.json.items.map((r: { event_id: string; status: string }) => [r.event_id, r.status]),
      [
        ['poison-a', 'failed'],
        ['poison-b', 'failed'],
      ],
    )
    assert.equal(list.json.items[0].last_error, '<img src=x onerror=alert(1)> said no')
    const ops = inProcessClient(cairn.runtime.app, OPS)
    let r = await ops.post('/api/v1/ops/parked/mailer/poison-a/retry', undefined)
    assert.equal(r.status, 200, r.text)
    assert.equal(r.json.status, 'retrying')
    assert.equal(r.json.resolved_by, 'token:ops')
    assert.ok(!Number.isNaN(Date.parse(r.json.resolved_at)))
    r = await ops.post('/api/v1/ops/parked/mailer/poison-b/skip', undefined)
    assert.equal(r.status, 200, r.text)
    assert.equal(r.json.status, 'skipped')
    r = await ops.post('/api/v1/ops/parked/mailer/poison-b/skip', undefined)
    assert.equal(r.status, 404)
    assert.equal((await reader.get('/api/v1/ops/parked?handler=mailer')).json.items.length, 0)
    assert.equal((await reader.get('/api/v1/ops/parked?handler=bad%20name')).status, 400)
  })

  test('checkpoint reset: operate scope, a time, logged with the actor', async () => {
    const reader = inProcessClient(cairn.runtime.app, READER)
    const ops = inProcessClient(cairn.runtime.app, OPS)
    const to = new Date().toISOString()
    let r = await reader.post('/api/v1/ops/checkpoint/reset', { to })
    assert.equal(r.status, 403)
    assert.equal(r.json.missing_scope, 'operate')
    r = await ops.post('/api/v1/ops/checkpoint/reset', { to: '2026-13-45T00:00:00Z' })
    assert.equal(r.status, 422, r.text)
    r = await ops.post('/api/v1/ops/checkpoint/reset', { to: 'yesterday' })
    assert.equal(r.status, 400, r.text)
    // A day that is not in the calendar, before 1970, or in the future: refused, nothing moved.
    for (const [time, why] of [
      ['2026-02-30T10:00:00Z', /calendar/],
      ['1969-12-31T23:59:59Z', /1970/],
      ['9999-12-31T23:59:59Z', /future/],
    ] as const) {
      r = await ops.post('/api/v1/ops/checkpoint/reset', { to: time })
      assert.equal(r.status, 422, r.text)
      assert.match(r.json.problems[0].message, why)
    }
    r = await ops.post('/api/v1/ops/checkpoint/reset', { to })
    assert.equal(r.status, 200, r.text)
    assert.equal(r.json.actor, 'token:ops')
    assert.match(r.json.to, /^indexes\/by-date\//)
  })

  test('the stream: server-sent overviews, ending after `seconds`', async () => {
    const r = await cairn.runtime.app.handle({
      method: 'GET',
      url: '/api/v1/ops/stream?seconds=1',
      headers: { authorization: `Bearer ${READER}` },
      body: null,
    })
    assert.equal(r.status, 200)
    assert.equal(r.headers['content-type'], 'text/event-stream; charset=utf-8')
    assert.match(r.body, /^retry: 2000\n\nevent: overview\ndata: \{.*"handlers"/)
    assert.ok(r.stream !== undefined)
    const started = Date.now()
    const chunks: string[] = []
    for await (const chunk of r.stream(new AbortController().signal)) chunks.push(chunk)
    assert.ok(Date.now() - started < 3_000, 'it ended after about a second')
  })

  test('over a real port: the stream flows, and closing the server ends it at once', async () => {
    const served = await serveHttp(cairn.runtime.app, '127.0.0.1', 0, silentLogger)
    try {
      const res = await fetch(`${served.url}/api/v1/ops/stream`, {
        headers: { authorization: `Bearer ${READER}` },
      })
      assert.equal(res.status, 200)
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
      let text = ''
      while (!/event: overview[\s\S]*event: overview/.test(text)) {
        const { value, done } = await reader.read()
        assert.ok(!done, 'the stream went on')
        text += value
      }
      const started = Date.now()
      await served.close(10_000)
      assert.ok(Date.now() - started < 5_000, 'the open stream did not hold the close up')
      for (;;) if ((await reader.read().catch(() => ({ done: true }))).done) break
    } finally {
      await served.close(1_000)
    }
  })

  test('the console: its files under a strict policy, no inline script, no innerHTML', async () => {
    const c = inProcessClient(cairn.runtime.app)
    const page = await c.get('/console')
    assert.equal(page.status, 200)
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8')
    assert.match(page.headers['content-security-policy'] ?? '', /^default-src 'self'/)
    assert.equal(page.headers['x-content-type-options'], 'nosniff')
    assert.equal(page.headers['cache-control'], 'no-cache')
    assert.doesNotMatch(page.text, /<script>|<script [^>]*>[^<]/, 'no inline script')
    const script = await c.get('/console/console.js')
    assert.equal(script.headers['content-type'], 'text/javascript; charset=utf-8')
    assert.doesNotMatch(script.text, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/)
    assert.doesNotMatch(script.text, /document\.cookie/)
    assert.equal((await c.get('/console/console.css')).status, 200)
  })
})

test('without tokens (embedded), the operator API and the console ask for none', async () => {
  const cairn = await openEmbedded()
  try {
    const c = inProcessClient(cairn.runtime.app)
    const o = await c.get('/api/v1/ops/overview')
    assert.equal(o.status, 200, o.text)
    const r = await c.post('/api/v1/ops/parked/mailer/nothing/retry', undefined)
    assert.equal(r.status, 404, 'allowed, and nothing to retry')
    const spec = (await c.get('/openapi.json')).json
    assert.equal(spec.paths['/api/v1/ops/overview'].get.responses['403'], undefined)
    assert.equal((await c.get('/console')).status, 200)
  } finally {
    await cairn.destroy()
  }
})
