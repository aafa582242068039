import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig, redactedConfig } from '../../src/config/env.ts'
import { ErrorCode, isCairnError } from '../../src/core/errors.ts'
import { createHttpPipeline, json } from '../../src/http/pipeline.ts'
import type { RouteHandler } from '../../src/http/pipeline.ts'
import { createRouter } from '../../src/http/router.ts'
import { parseApiToken } from '../../src/http/scopes.ts'

test('a token entry: bare (every scope), with scopes after its last colon, with a name', () => {
  assert.deepEqual(parseApiToken('plain-token-0123456789'), {
    token: 'plain-token-0123456789',
    scopes: ['read', 'write', 'operate'],
  })
  assert.deepEqual(parseApiToken('reader-token-0123456789:read'), {
    token: 'reader-token-0123456789',
    scopes: ['read'],
  })
  assert.deepEqual(parseApiToken('ops=a:b:ops-token-0123456789:operate+read'), {
    token: 'a:b:ops-token-0123456789',
    scopes: ['read', 'operate'],
    name: 'ops',
  })
  // A suffix that is no scope list is part of the token (a token may hold colons).
  assert.deepEqual(parseApiToken('abc:DEF-0123456789xyz'), {
    token: 'abc:DEF-0123456789xyz',
    scopes: ['read', 'write', 'operate'],
  })
  // Base64 padding is no name.
  assert.equal(
    (parseApiToken('QUJDREVGR0hJSktMTU5PUA==') as { token: string }).token,
    'QUJDREVGR0hJSktMTU5PUA==',
  )
  assert.deepEqual(parseApiToken('x-token-0123456789abc:read+admin'), {
    problem: 'unknown scope admin (use read, write, operate, joined by +)',
  })
  assert.deepEqual(parseApiToken('short:read'), {
    problem: 'every token must have at least 16 characters',
  })
})

test('OMS_API_TOKENS: an unknown scope is a configuration error that never shows the token', () => {
  let problems: string[] = []
  try {
    loadConfig({ OMS_API_TOKENS: 'good-token-0123456789:read,secret-token-0123456789:reed' })
  } catch (error) {
    assert.ok(isCairnError(error, ErrorCode.INVALID_CONFIG))
    problems = error.details.problems as string[]
  }
  assert.deepEqual(problems, [
    'OMS_API_TOKENS, entry 2: unknown scope reed (use read, write, operate, joined by +)',
  ])
  const config = loadConfig({ OMS_API_TOKENS: 'ci=good-token-0123456789:read+write' })
  assert.deepEqual(config.oms.tokens, [
    { token: 'good-token-0123456789', scopes: ['read', 'write'], name: 'ci' },
  ])
  assert.ok(!JSON.stringify(redactedConfig(config)).includes('good-token'))
})

test('a route added without a contract operation (a declared domain) asks for its method’s default scope', async () => {
  const router = createRouter<RouteHandler>()
  router.add('GET', '/api/things', async () => json(200, { ok: true }))
  router.add('POST', '/api/things', async (ctx) => json(201, { by: ctx.actor }))
  const app = createHttpPipeline(router, {
    auth: { tokens: [{ token: 'reader-token-0123456789', scopes: ['read'], name: 'r' }] },
    openapi: () => ({}),
  })
  const call = (method: string) =>
    app.handle({
      method,
      url: '/api/things',
      headers: { authorization: 'Bearer reader-token-0123456789' },
      body: null,
    })
  assert.equal((await call('GET')).status, 200)
  assert.equal((await call('HEAD')).status, 200)
  const refused = await call('POST')
  assert.equal(refused.status, 403)
  assert.equal(JSON.parse(refused.body).missing_scope, 'write')
})
