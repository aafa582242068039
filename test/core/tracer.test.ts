import assert from 'node:assert/strict'
import { test } from 'node:test'
import { inSpan, noopTracer } from '../../src/core/ports/tracer.ts'

const PARENT = `00-${'4bf92f3577b34da6'.repeat(2)}-00f067aa0ba902b7-01`

test('the no-op tracer is off and hands the parent on as the span traceparent', () => {
  assert.equal(noopTracer.enabled, false)
  const span = noopTracer.startSpan('x', { kind: 'server', parent: PARENT, attributes: { a: 1 } })
  assert.equal(span.traceparent, PARENT)
  span.setAttributes({ b: 'c', d: undefined })
  span.rename('y')
  span.fail(new Error('boom'))
  span.end()
  span.end()
  assert.equal(noopTracer.startSpan('root').traceparent, undefined)
})

test('inSpan returns what its function returns and rethrows what it throws', async () => {
  assert.equal(
    await inSpan(noopTracer, 'ok', { parent: PARENT }, async (s) => s.traceparent),
    PARENT,
  )
  await assert.rejects(
    inSpan(noopTracer, 'fails', {}, async () => {
      throw new Error('boom')
    }),
    /boom/,
  )
})
