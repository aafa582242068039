import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { HttpApp } from '../../src/http/app.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'

const call = async (
  app: HttpApp,
  method: string,
  url: string,
  headers: Record<string, string> = {},
  body?: unknown,
) => {
  const r = await app.handle({
    method,
    url,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? null : new TextEncoder().encode(JSON.stringify(body)),
  })
  return { ...r, json: JSON.parse(r.body) as Record<string, unknown> }
}

describe('Prefer: wait (RFC 7240): the OMS holds the answer until the command is done', () => {
  let cairn: Embedded
  before(async () => {
    cairn = await openEmbedded()
  })
  after(() => cairn.destroy())

  test('a command with Prefer: wait=N is answered 200 with its outcome once it completed', async () => {
    const r = await call(
      cairn.runtime.app,
      'POST',
      '/api/v1/databases',
      { prefer: 'wait=20' },
      {
        name: 'waited',
      },
    )
    assert.equal(r.status, 200, r.body)
    assert.equal(r.json['status'], 'COMPLETED')
    assert.equal(r.headers['preference-applied'], 'wait=20')
    assert.equal(r.headers['content-location'], `/api/v1/commands/${String(r.json['command_id'])}`)
    // Completed means the read model shows it: the next read sees the database.
    const db = await call(cairn.runtime.app, 'GET', '/api/v1/databases/waited')
    assert.equal(db.status, 200)
  })

  test('a rejected command is answered 200 FAILED with its reason', async () => {
    const r = await call(
      cairn.runtime.app,
      'POST',
      '/api/v1/databases/nowhere/classes',
      { prefer: 'respond-async, wait=20' },
      { id: 'Thing', properties: [] },
    )
    assert.equal(r.status, 200, r.body)
    assert.equal(r.json['status'], 'FAILED')
    assert.ok(typeof (r.json['error'] as { code?: unknown }).code === 'string')
  })

  test('without Prefer the answer is 202 at once; the status route long-polls with it', async () => {
    const r = await call(cairn.runtime.app, 'POST', '/api/v1/databases', {}, { name: 'polled' })
    assert.equal(r.status, 202)
    assert.equal(r.headers['preference-applied'], undefined)
    const status = await call(
      cairn.runtime.app,
      'GET',
      `/api/v1/commands/${String(r.json['command_id'])}`,
      { prefer: 'wait=20' },
    )
    assert.equal(status.status, 200)
    assert.equal(status.json['status'], 'COMPLETED')
    assert.equal(status.headers['preference-applied'], 'wait=20')
  })

  test('a wait beyond 60 s is cut to 60; the OpenAPI document declares Prefer and the 200', async () => {
    const r = await call(
      cairn.runtime.app,
      'POST',
      '/api/v1/databases',
      { prefer: 'wait=99999' },
      {
        name: 'capped',
      },
    )
    assert.equal(r.status, 200)
    assert.equal(r.headers['preference-applied'], 'wait=60')
    const doc = await call(cairn.runtime.app, 'GET', '/openapi.json')
    const post = (doc.json['paths'] as Record<string, Record<string, Record<string, unknown>>>)[
      '/api/v1/databases'
    ]?.['post']
    assert.ok((post?.['responses'] as Record<string, unknown>)['200'])
    assert.ok(
      (post?.['parameters'] as { name?: string }[]).some((p) => p.name === 'Prefer'),
      'Prefer is a parameter of the command routes',
    )
  })
})
