import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { serveHttp } from '../../src/cli/serve.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { HANDLERS } from '../../src/domain/model.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'
import { SPAN_KIND, startOtlpReceiver } from '../support/otlp-receiver.ts'
import type { OtlpReceiver, ReceivedSpan } from '../support/otlp-receiver.ts'

const TRACE = '0af7651916cd43dd8448eb211c80319c'
const CLIENT_SPAN = 'b7ad6b7169203331'

let receiver: OtlpReceiver
let cairn: Embedded | undefined
before(async () => {
  receiver = await startOtlpReceiver()
})
after(async () => {
  await cairn?.destroy()
  await receiver.close()
})

test('one command over HTTP is one trace: request, append, publication, claim, handler, projection', async () => {
  cairn = await openEmbedded({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url } })
  const served = await serveHttp(cairn.runtime.app, '127.0.0.1', 0, silentLogger)
  let status: number
  try {
    const response = await fetch(`${served.url}/api/v1/databases`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        // The client's own trace: cairn's spans continue it.
        traceparent: `00-${TRACE}-${CLIENT_SPAN}-01`,
        // Answered once the command is decided and projected: every span is there.
        prefer: 'wait=30',
      },
      body: JSON.stringify({ name: 'traced' }),
    })
    status = response.status
    assert.equal(((await response.json()) as { status?: unknown }).status, 'COMPLETED')
  } finally {
    await served.close()
  }
  assert.equal(status, 200)
  // Closing exports what is left.
  await cairn.close()

  const spans = receiver.spans
  assert.deepEqual([...new Set(spans.map((s) => s.traceId))], [TRACE], 'one trace')
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const one = (what: string, pick: (s: ReceivedSpan) => boolean): ReceivedSpan => {
    const found = spans.filter(pick)
    assert.equal(
      found.length,
      1,
      `${what}: ${found.length} spans in ${spans.map((s) => s.name).join(', ')}`,
    )
    return found[0] as ReceivedSpan
  }
  const parentOf = (s: ReceivedSpan): ReceivedSpan | undefined => byId.get(s.parentSpanId)

  const request = one('request', (s) => s.kind === SPAN_KIND.server)
  assert.equal(request.name, 'POST /api/v1/databases')
  assert.equal(request.parentSpanId, CLIENT_SPAN)
  assert.equal(request.attributes['http.route'], '/api/v1/databases')
  assert.equal(request.attributes['http.response.status_code'], 200)
  assert.equal(request.service, 'cairn-all')

  const appends = spans.filter((s) => s.name === 'cairn.append')
  assert.equal(appends.length, 2, 'the command and its event')
  const commandAppend = one(
    'command append',
    (s) => s.name === 'cairn.append' && parentOf(s) === request,
  )
  assert.equal(commandAppend.attributes['cairn.outcome'], 'appended')
  assert.equal(commandAppend.attributes['cairn.event.type'], 'CREATE_DATABASE_REQUESTED')

  const sends = spans.filter((s) => s.kind === SPAN_KIND.producer)
  assert.equal(sends.length, 2)
  const commandSend = one(
    'command publication',
    (s) => s.kind === SPAN_KIND.producer && parentOf(s) === request,
  )
  assert.equal(commandSend.attributes['messaging.destination.name'], 'database_commands')
  assert.equal(commandSend.attributes['messaging.operation.type'], 'send')

  const commandProcess = one(
    'command consumption',
    (s) => s.kind === SPAN_KIND.consumer && parentOf(s) === commandSend,
  )
  assert.equal(commandProcess.attributes['cairn.handler'], HANDLERS.ontology)
  assert.equal(commandProcess.attributes['messaging.destination.name'], 'database_commands')
  const commandClaim = one(
    'command claim',
    (s) => s.name === 'cairn.claim' && parentOf(s) === commandProcess,
  )
  assert.equal(commandClaim.attributes['cairn.claim.outcome'], 'claimed')
  const handle = one(
    'command handler',
    (s) => s.name === 'cairn.handle' && parentOf(s) === commandProcess,
  )
  assert.equal(handle.attributes['cairn.handler'], HANDLERS.ontology)

  // The worker's events are children of its side effect.
  const eventAppend = one(
    'event append',
    (s) => s.name === 'cairn.append' && parentOf(s) === handle,
  )
  assert.equal(eventAppend.attributes['cairn.event.type'], 'DATABASE_CREATED')
  const eventSend = one(
    'event publication',
    (s) => s.kind === SPAN_KIND.producer && parentOf(s) === handle,
  )
  assert.equal(eventSend.attributes['messaging.destination.name'], 'ontology_events')

  const projection = one(
    'projection consumption',
    (s) => s.kind === SPAN_KIND.consumer && parentOf(s) === eventSend,
  )
  assert.equal(projection.attributes['cairn.handler'], HANDLERS.projection)
  one('projection claim', (s) => s.name === 'cairn.claim' && parentOf(s) === projection)
  const project = one(
    'projection handler',
    (s) => s.name === 'cairn.handle' && parentOf(s) === projection,
  )
  assert.equal(project.attributes['cairn.transactional'], true)
  assert.equal(project.statusCode, 0)
  assert.equal(spans.length, 11, spans.map((s) => s.name).join(', '))
})
