import assert from 'node:assert/strict'
import { test } from 'node:test'
import { servingUrlOf } from '../../src/cli/service.ts'

test('the serving line of a cairn process gives its URL; other lines give nothing', () => {
  const line = JSON.stringify({ msg: 'oms is running', http: 'http://127.0.0.1:4100', pid: 1 })
  assert.equal(servingUrlOf(line), 'http://127.0.0.1:4100')
  assert.equal(servingUrlOf(JSON.stringify({ msg: 'oms is running' })), null)
  assert.equal(servingUrlOf(JSON.stringify({ msg: 'stopping', http: 'http://x' })), null)
  assert.equal(servingUrlOf('{not json'), null)
  assert.equal(servingUrlOf('cairn is running at http://127.0.0.1:8000'), null)
})
