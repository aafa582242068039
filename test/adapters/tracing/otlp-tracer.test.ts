import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createOtlpTracer } from '../../../src/adapters/tracing/otlp-tracer.ts'
import { loadConfig } from '../../../src/config/env.ts'
import { openTracer } from '../../../src/config/tracing.ts'
import { silentLogger } from '../../../src/core/ports/logger.ts'
import { noopTracer } from '../../../src/core/ports/tracer.ts'
import { SPAN_KIND, startOtlpReceiver } from '../../support/otlp-receiver.ts'
import type { OtlpReceiver } from '../../support/otlp-receiver.ts'

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const PARENT = `00-${TRACE}-00f067aa0ba902b7-01`

let receiver: OtlpReceiver
before(async () => {
  receiver = await startOtlpReceiver()
})
after(() => receiver.close())

test('spans reach an OTLP/HTTP receiver on close, parented by the traceparents given', async () => {
  const before = receiver.spans.length
  const tracer = createOtlpTracer({ url: `${receiver.url}/v1/traces`, serviceName: 'cairn-test' })
  assert.equal(tracer.enabled, true)
  const server = tracer.startSpan('POST /things', {
    kind: 'server',
    parent: PARENT,
    attributes: { 'http.request.method': 'POST', skipped: undefined },
  })
  const tp = server.traceparent ?? ''
  assert.match(tp, new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`))
  assert.notEqual(tp, PARENT)
  const producer = tracer.startSpan('send things', {
    kind: 'producer',
    parent: tp,
    links: [PARENT],
  })
  producer.fail(Object.assign(new Error('no broker'), { code: 'BUS_UNAVAILABLE' }))
  producer.end()
  server.rename('POST /things/{id}')
  server.end()
  server.end()
  const root = tracer.startSpan('fresh', { parent: 'not-a-traceparent' })
  root.end()
  await tracer.close()
  await tracer.close()

  const got = receiver.spans.slice(before)
  assert.equal(got.length, 3)
  const s = got.find((x) => x.name === 'POST /things/{id}')
  const p = got.find((x) => x.name === 'send things')
  const r = got.find((x) => x.name === 'fresh')
  assert.ok(s !== undefined && p !== undefined && r !== undefined)
  assert.equal(s.service, 'cairn-test')
  assert.equal(s.traceId, TRACE)
  assert.equal(s.parentSpanId, '00f067aa0ba902b7')
  assert.equal(s.kind, SPAN_KIND.server)
  assert.equal(s.attributes['http.request.method'], 'POST')
  assert.ok(!('skipped' in s.attributes))
  assert.equal(p.traceId, TRACE)
  assert.equal(p.parentSpanId, s.spanId)
  assert.equal(p.kind, SPAN_KIND.producer)
  assert.equal(p.statusCode, 2)
  assert.equal(p.attributes['error.type'], 'BUS_UNAVAILABLE')
  assert.deepEqual(p.links, [{ traceId: TRACE, spanId: '00f067aa0ba902b7' }])
  // A malformed parent is no error: the span starts a trace of its own.
  assert.notEqual(r.traceId, TRACE)
  assert.equal(r.parentSpanId, '')
})

test('a ratio of 0 samples nothing new but still hands a traceparent on (flags 00)', async () => {
  const before = receiver.spans.length
  const tracer = createOtlpTracer({
    url: `${receiver.url}/v1/traces`,
    serviceName: 'cairn-test',
    sampler: { ratio: 0, parentBased: true },
  })
  const span = tracer.startSpan('unsampled')
  assert.match(span.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
  span.end()
  // Parent-based: a sampled parent's decision is followed.
  tracer.startSpan('sampled', { parent: PARENT }).end()
  await tracer.close()
  assert.deepEqual(
    receiver.spans.slice(before).map((x) => x.name),
    ['sampled'],
  )
})

test('without an OTLP endpoint no exporter is made: the no-op tracer', async () => {
  const off = openTracer(loadConfig({}), 'oms', silentLogger)
  assert.equal(off.tracer, noopTracer)
  await off.close()
  const disabled = openTracer(
    loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SDK_DISABLED: 'true' }),
    'oms',
    silentLogger,
  )
  assert.equal(disabled.tracer, noopTracer)
  const on = openTracer(
    loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }),
    'oms',
    silentLogger,
  )
  assert.equal(on.tracer.enabled, true)
  const before = receiver.spans.length
  on.tracer.startSpan('named').end()
  await on.close()
  assert.equal(receiver.spans.slice(before)[0]?.service, 'cairn-oms')
})
