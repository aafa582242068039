import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { CairnProblem, createClient } from '../../src/client/index.ts'
import type { CairnClient } from '../../src/client/index.ts'
import { serveHttp } from '../../src/cli/serve.ts'
import type { Served } from '../../src/cli/serve.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'

const TOKEN = 'client-test-token-0123456789'

describe('cairn/client against an embedded OMS over HTTP', () => {
  let cairn: Embedded
  let served: Served
  let client: CairnClient

  before(async () => {
    cairn = await openEmbedded({ env: { OMS_API_TOKENS: TOKEN } })
    served = await serveHttp(cairn.runtime.app, '127.0.0.1', 0, silentLogger)
    client = createClient({ baseUrl: served.url, token: TOKEN })
  })
  after(async () => {
    await served.close()
    await cairn.destroy()
  })

  test('a command, typed from the contract: 202, then its outcome with waitForCommand', async () => {
    const accepted = await client.createDatabase({ body: { name: 'shop' } })
    assert.equal(accepted.status, 202)
    assert.ok('command_id' in accepted.body)
    const done = await client.waitForCommand(accepted.body.command_id, { timeoutMs: 20_000 })
    assert.equal(done.status, 'COMPLETED')
    const db = await client.getDatabase({ params: { db: 'shop' } })
    assert.equal(db.body.name, 'shop')
    assert.equal(db.headers.get('etag'), `"${db.body.seq}"`)
  })

  test('waitSeconds (Prefer: wait) answers 200 with the outcome', async () => {
    const r = await client.createClass({
      params: { db: 'shop' },
      body: { id: 'Product', properties: [{ name: 'sku', type: 'string', required: true }] },
      waitSeconds: 20,
    })
    assert.equal(r.status, 200)
    assert.equal(r.headers.get('preference-applied'), 'wait=20')
    assert.equal((r.body as { status: string }).status, 'COMPLETED', JSON.stringify(r.body))
  })

  test('writes carry an Idempotency-Key: the same key again is the same command', async () => {
    const key = 'client-test-key-1'
    const body = { id: 'p1', data: { sku: 'a' } }
    const params = { db: 'shop', class_id: 'Product' }
    const first = await client.createInstance({ params, body, idempotencyKey: key })
    const again = await client.createInstance({ params, body, idempotencyKey: key })
    assert.ok('command_id' in first.body && 'command_id' in again.body)
    assert.equal(again.body.command_id, first.body.command_id)
    // Without a key of its own, each call gets a fresh one.
    const sent: string[] = []
    const spy = createClient({
      baseUrl: served.url,
      token: TOKEN,
      fetch: (input, init) => {
        sent.push(new Headers(init?.headers).get('idempotency-key') ?? '')
        return fetch(input, init)
      },
    })
    await spy.createDatabase({ body: { name: 'keyed' } })
    await spy.createDatabase({ body: { name: 'keyed' } }).catch(() => undefined)
    assert.equal(sent.length, 2)
    assert.ok(
      sent.every((k) => /^[0-9a-f-]{36}$/.test(k)),
      sent.join(','),
    )
    assert.notEqual(sent[0], sent[1])
    await client.waitForCommand(first.body.command_id, { timeoutMs: 20_000 })
  })

  test('problem+json is thrown as a typed CairnProblem with its pointers', async () => {
    await assert.rejects(
      client.createDatabase({ body: { name: 'Bad Name' } }),
      (e: unknown) =>
        e instanceof CairnProblem &&
        e.status === 400 &&
        e.code === 'validation_failed' &&
        e.problem.problems?.[0]?.pointer === '/name',
    )
    // Fits the schema, breaks a rule it states in words (unique property names): 422.
    await assert.rejects(
      client.createClass({
        params: { db: 'shop' },
        body: {
          id: 'Twice',
          properties: [
            { name: 'a', type: 'string' },
            { name: 'a', type: 'integer' },
          ],
        },
      }),
      (e: unknown) =>
        e instanceof CairnProblem &&
        e.status === 422 &&
        e.code === 'validation_failed' &&
        e.problem.problems?.[0]?.pointer === '/properties/1/name',
    )
    await assert.rejects(
      client.deleteDatabase({ params: { db: 'shop' } }),
      (e: unknown) => e instanceof CairnProblem && e.status === 428,
    )
    await assert.rejects(
      client.getDatabase({ params: { db: 'absent' } }),
      (e: unknown) => e instanceof CairnProblem && e.status === 404 && e.code === 'not_found',
    )
    const anonymous = createClient({ baseUrl: served.url })
    await assert.rejects(
      anonymous.listDatabases({}),
      (e: unknown) => e instanceof CairnProblem && e.status === 401,
    )
  })

  test('pages walks a listing to its end', async () => {
    const params = { db: 'shop', class_id: 'Product' }
    const ids = ['p2', 'p3', 'p4', 'p5']
    const sent = await Promise.all(
      ids.map((id) => client.createInstance({ params, body: { id, data: { sku: id } } })),
    )
    for (const s of sent) {
      assert.ok('command_id' in s.body)
      await client.waitForCommand(s.body.command_id, { timeoutMs: 20_000 })
    }
    const seen: string[] = []
    for await (const item of client.pages('listInstances', { params, query: { limit: 2 } })) {
      seen.push(item.id)
    }
    assert.deepEqual(seen, ['p1', 'p2', 'p3', 'p4', 'p5'])
  })

  test('a write is retried after a lost answer, under the same key: stored once', async () => {
    let calls = 0
    const keys: string[] = []
    const flaky = createClient({
      baseUrl: served.url,
      token: TOKEN,
      fetch: async (input, init) => {
        calls++
        keys.push(new Headers(init?.headers).get('idempotency-key') ?? '')
        const response = await fetch(input, init)
        // The first answer is lost on the way back (the command is stored nonetheless).
        if (calls === 1) throw new TypeError('fetch failed: connection reset')
        return response
      },
    })
    const r = await flaky.createDatabase({ body: { name: 'retried' } })
    assert.equal(calls, 2)
    assert.equal(keys[0], keys[1])
    assert.ok('command_id' in r.body)
    const history = await client.getHistory({
      params: { aggregate_type: 'Database', aggregate_id: 'retried' },
    })
    assert.equal(
      history.body.events.filter((e) => e.metadata['kind'] === 'command').length,
      1,
      'one command stored',
    )
  })
})
