import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { CairnError, ErrorCode } from '../../src/core/errors.ts'
import type { SqlQueryable } from '../../src/core/ports/sql.ts'
import { createOmsApp } from '../../src/http/app.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'
import { inProcessClient } from '../support/oms-client.ts'

/**
 * The OMS while its database hangs or is away: answers are 503 with Retry-After (never another
 * 5xx), and requests beyond `maxInFlight` are refused at once instead of piling up.
 */
describe('OMS during a dependency outage', () => {
  let cairn: Embedded
  before(async () => {
    cairn = await openEmbedded()
  })
  after(async () => {
    await cairn.destroy()
  })

  const appOver = (readModel: SqlQueryable, maxInFlight?: number) =>
    createOmsApp({
      eventStore: cairn.runtime.ws.eventStore,
      readModel,
      schema: 'spice_event_registry',
      commandRecords: async () => [],
      auth: 'disabled',
      ...(maxInFlight === undefined ? {} : { maxInFlight }),
    })

  test('a read model that is away is a 503 with Retry-After', async () => {
    const away: SqlQueryable = {
      query: () =>
        Promise.reject(
          new CairnError(ErrorCode.SQL_UNAVAILABLE, 'connection refused', { retryable: true }),
        ),
      exec: () => Promise.reject(new Error('unused')),
    }
    const r = await inProcessClient(appOver(away)).get('/api/v1/databases')
    assert.equal(r.status, 503)
    assert.equal(r.headers['retry-after'], '1')
    assert.equal(r.json.code, 'sql_unavailable')
  })

  test('requests beyond maxInFlight are 503 at once while the others wait for a hung database; then all is served', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const inner = cairn.runtime.ws.sql
    let held = 0
    const hung: SqlQueryable = {
      query: async (text, params) => {
        held++
        await gate
        return inner.query(text, params)
      },
      exec: (script) => inner.exec(script),
    }
    const c = inProcessClient(appOver(hung, 2))
    const waiting = [c.get('/api/v1/databases'), c.get('/api/v1/databases')]
    while (held < 2) await new Promise((r) => setTimeout(r, 5))
    const refused = await c.get('/api/v1/databases')
    assert.equal(refused.status, 503)
    assert.equal(refused.json.code, 'overloaded')
    assert.equal(refused.headers['retry-after'], '1')
    // Operations endpoints are not counted.
    assert.equal((await c.get('/healthz')).status, 200)
    release()
    for (const r of await Promise.all(waiting)) assert.equal(r.status, 200)
    assert.equal((await c.get('/api/v1/databases')).status, 200)
  })
})
