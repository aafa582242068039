import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { createInProcessBus } from '../../src/adapters/bus/in-process-bus.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { createOtlpTracer } from '../../src/adapters/tracing/otlp-tracer.ts'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { createWorker } from '../../src/worker/worker.ts'
import type { Handle, HandleBatch, WorkerOptions } from '../../src/worker/worker.ts'
import { eventually } from '../support/collect.ts'
import { SPAN_KIND, startOtlpReceiver } from '../support/otlp-receiver.ts'
import type { OtlpReceiver, ReceivedSpan } from '../support/otlp-receiver.ts'

const TRACE = '8f3c1a2b4d5e6f708192a3b4c5d6e7f8'
const PUBLISHED = '1122334455667788'

let receiver: OtlpReceiver
before(async () => {
  receiver = await startOtlpReceiver()
})
after(() => receiver.close())

const event = (aggregateId: string): StoredEnvelope => ({
  ...createEnvelope({
    event_type: 'THING_HAPPENED',
    aggregate_type: 'Thing',
    aggregate_id: aggregateId,
    metadata: { kind: 'domain', traceparent: `00-${TRACE}-${'9'.repeat(16)}-01` },
  }),
  sequence_number: 1,
})

/** Runs a worker on an in-process bus and PGlite until `done` holds; returns the spans it made. */
const traced = async (
  topic: string,
  events: readonly StoredEnvelope[],
  options: (sql: Sql) => Pick<WorkerOptions, 'handle'> & Partial<WorkerOptions>,
  done: () => boolean,
): Promise<ReceivedSpan[]> => {
  const bus = createInProcessBus()
  const sql = await createPgliteSql()
  const tracer = createOtlpTracer({ url: `${receiver.url}/v1/traces`, serviceName: 'cairn-test' })
  const before = receiver.spans.length
  try {
    await migrate(sql, 'cairn_trace')
    await bus.ensureTopics([{ name: topic, partitions: 1 }])
    const producer = bus.producer()
    await producer.send(
      events.map((e) => ({
        topic,
        key: e.aggregate_id,
        value: new TextEncoder().encode(canonicalJson(e)),
        // As the publisher sends it: the header names the publication's span.
        headers: { event_id: e.event_id, traceparent: `00-${TRACE}-${PUBLISHED}-01` },
      })),
    )
    await producer.close()
    const worker = createWorker({
      bus,
      registry: createProcessedEventRegistry({ sql, schema: 'cairn_trace', member: 'w' }),
      handler: 'h',
      topics: [topic],
      groupId: 'g',
      pollWaitMs: 50,
      backoffBaseMs: 10,
      backoffMaxMs: 20,
      tracer,
      ...options(sql),
    })
    const running = worker.run()
    try {
      await eventually(done, 'the worker to settle the events')
    } finally {
      await worker.close()
      await running
    }
    await tracer.close()
    return receiver.spans.slice(before)
  } finally {
    await tracer.close()
    await bus.close()
    await sql.close()
  }
}

test('a retried side effect: a handle span per attempt under the consumer span, the failed one marked', async () => {
  const seen: (string | undefined)[] = []
  let done = false
  const handle: Handle = async (_envelope, ctx) => {
    seen.push(ctx.traceparent)
    if (ctx.attempt === 1) throw new Error('first try fails')
    done = true
    return null
  }
  const spans = await traced(
    'things',
    [event('a')],
    () => ({ handle }),
    () => done,
  )
  const consumer = spans.find((s) => s.kind === SPAN_KIND.consumer)
  assert.ok(consumer !== undefined, spans.map((s) => s.name).join(', '))
  assert.equal(consumer.name, 'process things')
  assert.equal(consumer.traceId, TRACE)
  assert.equal(consumer.parentSpanId, PUBLISHED, 'the header wins over the envelope')
  const claim = spans.find((s) => s.name === 'cairn.claim')
  assert.equal(claim?.parentSpanId, consumer.spanId)
  assert.equal(claim.attributes['cairn.claim.outcome'], 'claimed')
  const handles = spans.filter((s) => s.name === 'cairn.handle')
  assert.deepEqual(
    handles.map((s) => [s.attributes['cairn.attempt'], s.statusCode, s.parentSpanId]),
    [
      [1, 2, consumer.spanId],
      [2, 0, consumer.spanId],
    ],
  )
  // The handler got its own span's traceparent each time.
  assert.deepEqual(
    seen,
    handles.map((s) => `00-${TRACE}-${s.spanId}-01`),
  )
})

test("a transactional batch: each event's handle span covers the batch statement", async () => {
  let applied = 0
  const handleBatch: HandleBatch = async (envelopes) => {
    applied += envelopes.length
    return envelopes.map(() => null)
  }
  const sqlHandle: Handle = async () => {
    applied++
    return null
  }
  const spans = await traced(
    'projected',
    [event('a'), event('b'), event('c')],
    (sql) => ({ handle: sqlHandle, handleBatch, transactional: sql }),
    () => applied >= 3,
  )
  const consumers = spans.filter((s) => s.kind === SPAN_KIND.consumer)
  assert.equal(consumers.length, 3)
  const handles = spans.filter((s) => s.name === 'cairn.handle')
  assert.equal(handles.length, 3)
  for (const h of handles) {
    assert.equal(h.attributes['cairn.batch'], 3)
    assert.equal(h.attributes['cairn.transactional'], true)
    assert.ok(consumers.some((c) => c.spanId === h.parentSpanId))
  }
  assert.equal(new Set(handles.map((h) => h.parentSpanId)).size, 3)
})
